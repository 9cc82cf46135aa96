//! Cloud upstreams: OpenAI-compatible APIs the gateway escalates requests to. Model mapping,
//! authentication, timeouts, retries with backoff, a circuit breaker per upstream, SSE relay,
//! and the mapping of upstream failures to our own OpenAI errors.

pub mod circuit;
pub mod client;
pub mod config;
mod connections;
pub mod error;
pub mod metrics_names;
pub mod retry;
pub mod sse;

pub use circuit::CircuitState;
pub use client::{error_event, Endpoint, UpstreamClient, UpstreamResponse, UpstreamStream};
pub use config::{
    validate_upstreams, validate_upstreams_with_env, ApiKey, CircuitSettings, RawCircuit,
    RawUpstream, UpstreamConfigError, UpstreamSettings,
};
pub use error::{ClientError, TimeoutStage, UpstreamError};
