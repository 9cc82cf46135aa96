//! edge-gateway: an OpenAI-compatible gateway that serves INT8 ONNX language models locally.
//!
//! The binary in `main.rs` only parses the CLI and wires these modules together, so tests and
//! benches exercise the same code paths as production.

pub mod api;
pub mod auth;
pub mod cache;
pub mod config;
pub mod cpu_pool;
pub mod embeddings;
pub mod engine;
pub mod governance;
pub mod loadtest;
pub mod models;
pub mod review;
pub mod routing;
pub mod telemetry;
pub mod tls;
pub mod upstream;
