//! Governed model artifacts: package manifests and ed25519 signatures, versioned prompts,
//! evaluation-based quality gates and the tamper-evident audit log.

pub mod audit;
pub mod commands;
pub mod config;
pub mod error;
pub mod eval;
pub mod files;
pub mod manifest;
pub mod package;
pub mod prompts;
pub mod signing;

pub use error::GovernanceError;
