//! API keys: who may call the gateway, with which scopes (`inference`, `admin`), and how often
//! (a per-key rate limit). Keys come from the environment, only their SHA-256 digests are kept,
//! and presented keys are compared in constant time.
//!
//! Without configured keys the gateway runs open, which [`check_open_mode_bind`] allows on
//! loopback addresses only.

pub mod authenticator;
pub mod config;
pub mod error;
pub mod metrics_names;
pub mod rate_limit;

pub use authenticator::{check_open_mode_bind, Authenticator, Principal, OPEN_MODE_PRINCIPAL};
pub use config::{
    validate_api_keys, validate_api_keys_with_env, ApiKeySettings, AuthConfigError, AuthSettings,
    KeyDigest, RawApiKey, RawAuth, Scope, ScopeSet, MIN_KEY_CHARS,
};
pub use error::AuthError;
