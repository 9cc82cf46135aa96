//! Configuration of governance: signature trust, the promotion gate, canary keys, prompts, the
//! audit log, and additional served models. Raw sections as written, validated into typed
//! settings with errors naming the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::audit::{AuditSettings, ChainKey, SinkSettings};
use super::manifest::is_label;
use super::package::Trust;
use super::signing::{KeySource, PublicKey};

/// A governance setting is unusable.
#[derive(Debug, thiserror::Error)]
#[error("configuration key {key}: {message}")]
pub struct GovernanceConfigError {
    pub key: String,
    pub message: String,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> GovernanceConfigError {
    GovernanceConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// `governance:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGovernance {
    require_signed: bool,
    trusted_keys: Vec<String>,
    trusted_keys_env: Option<String>,
    min_quality_score: f64,
    canary_key: String,
    model_state_path: Option<String>,
}

/// `prompts:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrompts {
    dir: String,
    #[serde(default)]
    defaults: BTreeMap<String, String>,
}

/// `audit:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    enabled: bool,
    dir: Option<String>,
    queue_capacity: usize,
    segment_max_bytes: u64,
    commit_interval_ms: u64,
    fail_closed: bool,
    key_env: Option<String>,
    #[serde(default)]
    sink: Option<RawSink>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    url: String,
    token_env: Option<String>,
    #[serde(default = "default_batch")]
    batch_records: usize,
    #[serde(default = "default_sink_timeout")]
    timeout_ms: u64,
}

fn default_batch() -> usize {
    512
}

fn default_sink_timeout() -> u64 {
    5000
}

/// One entry of `models:` (served beside `model`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExtraModel {
    path: String,
    id: Option<String>,
    context_length: Option<usize>,
}

/// Which request attribute places it in or out of a canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryKey {
    /// `x-request-id` (or the generated id): an even split over requests.
    RequestId,
    /// The API key's name (falls back to the request id without keys): each client sticks to
    /// one version.
    ApiKey,
}

/// Validated `governance`.
#[derive(Debug, Clone)]
pub struct GovernanceSettings {
    pub trust: Trust,
    pub min_quality_score: f64,
    pub canary_key: CanaryKey,
    pub model_state_path: PathBuf,
}

/// Validated `prompts`.
#[derive(Debug, Clone)]
pub struct PromptSettings {
    pub dir: PathBuf,
    pub defaults: BTreeMap<String, String>,
}

/// Validated `models[]` entry.
#[derive(Debug, Clone)]
pub struct ExtraModelSettings {
    pub path: PathBuf,
    pub id: Option<String>,
    pub context_length: Option<usize>,
}

impl RawGovernance {
    /// Validates, reading the trusted public keys. `state_dir` holds state by default.
    pub fn validate(self, state_dir: &Path) -> Result<GovernanceSettings, GovernanceConfigError> {
        let mut keys = Vec::new();
        for (i, file) in self.trusted_keys.iter().enumerate() {
            let loaded = PublicKey::load_all(&KeySource::File(PathBuf::from(file)))
                .map_err(|e| invalid(format!("governance.trusted_keys[{i}]"), e.to_string()))?;
            keys.extend(loaded);
        }
        if let Some(var) = self.trusted_keys_env.as_deref().filter(|v| !v.is_empty()) {
            // An unset variable is no keys (e.g. a chart without a key Secret); a set one
            // must parse.
            if std::env::var_os(var).is_some() {
                let loaded = PublicKey::load_all(&KeySource::Env(var.to_string()))
                    .map_err(|e| invalid("governance.trusted_keys_env", e.to_string()))?;
                keys.extend(loaded);
            }
        }
        if self.require_signed && keys.is_empty() {
            return Err(invalid(
                "governance.require_signed",
                "is true but no trusted key is configured (governance.trusted_keys or governance.trusted_keys_env)",
            ));
        }
        if !(0.0..=1.0).contains(&self.min_quality_score) {
            return Err(invalid("governance.min_quality_score", "must be 0..=1"));
        }
        let canary_key = match self.canary_key.as_str() {
            "request_id" => CanaryKey::RequestId,
            "api_key" => CanaryKey::ApiKey,
            other => {
                return Err(invalid(
                    "governance.canary_key",
                    format!("'{other}' is not one of request_id, api_key"),
                ))
            }
        };
        Ok(GovernanceSettings {
            trust: Trust {
                keys,
                require_signed: self.require_signed,
            },
            min_quality_score: self.min_quality_score,
            canary_key,
            model_state_path: self
                .model_state_path
                .filter(|p| !p.is_empty())
                .map_or_else(|| state_dir.join("model-state.json"), PathBuf::from),
        })
    }
}

impl RawPrompts {
    pub fn validate(self) -> Result<PromptSettings, GovernanceConfigError> {
        for (name, version) in &self.defaults {
            if !is_label(name) || !is_label(version) {
                return Err(invalid(
                    format!("prompts.defaults.{name}"),
                    "names and versions are 1-64 characters of A-Z a-z 0-9 . _ - +",
                ));
            }
        }
        Ok(PromptSettings {
            dir: PathBuf::from(self.dir),
            defaults: self.defaults,
        })
    }
}

impl RawAudit {
    /// `None` when the audit log is disabled. `state_dir` holds it by default.
    pub fn validate(
        self,
        state_dir: &Path,
    ) -> Result<Option<AuditSettings>, GovernanceConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        if !(16..=1 << 24).contains(&self.queue_capacity) {
            return Err(invalid("audit.queue_capacity", "must be 16..=16777216"));
        }
        if self.segment_max_bytes < 4096 {
            return Err(invalid("audit.segment_max_bytes", "must be at least 4096"));
        }
        if self.commit_interval_ms > 1000 {
            return Err(invalid("audit.commit_interval_ms", "must be 0..=1000"));
        }
        let key = match self.key_env.as_deref().filter(|v| !v.is_empty()) {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(secret) if secret.len() >= 16 => Some(ChainKey::new(secret.as_bytes())),
                Ok(_) => {
                    return Err(invalid(
                        "audit.key_env",
                        format!("{var} holds fewer than 16 bytes; use a long random secret"),
                    ))
                }
                Err(_) => None,
            },
        };
        let sink = match self.sink.filter(|s| !s.url.is_empty()) {
            None => None,
            Some(s) => {
                let url = reqwest::Url::parse(&s.url)
                    .map_err(|e| invalid("audit.sink.url", format!("'{}': {e}", s.url)))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(invalid("audit.sink.url", "must be http or https"));
                }
                if !(1..=100_000).contains(&s.batch_records) {
                    return Err(invalid("audit.sink.batch_records", "must be 1..=100000"));
                }
                if s.timeout_ms == 0 {
                    return Err(invalid("audit.sink.timeout_ms", "must be greater than 0"));
                }
                Some(SinkSettings {
                    url: s.url,
                    token: s
                        .token_env
                        .as_deref()
                        .filter(|v| !v.is_empty())
                        .and_then(|v| std::env::var(v).ok()),
                    batch_records: s.batch_records,
                    timeout: Duration::from_millis(s.timeout_ms),
                })
            }
        };
        Ok(Some(AuditSettings {
            dir: self
                .dir
                .filter(|d| !d.is_empty())
                .map_or_else(|| state_dir.join("audit"), PathBuf::from),
            queue_capacity: self.queue_capacity,
            segment_max_bytes: self.segment_max_bytes,
            commit_interval: Duration::from_millis(self.commit_interval_ms),
            fail_closed: self.fail_closed,
            key,
            sink,
        }))
    }
}

/// Validates `models:`.
pub fn validate_extra_models(
    raw: Vec<RawExtraModel>,
) -> Result<Vec<ExtraModelSettings>, GovernanceConfigError> {
    raw.into_iter()
        .enumerate()
        .map(|(i, m)| {
            if m.path.trim().is_empty() {
                return Err(invalid(format!("models[{i}].path"), "must not be empty"));
            }
            if m.id.as_deref().is_some_and(|id| id.trim().is_empty()) {
                return Err(invalid(
                    format!("models[{i}].id"),
                    "must not be empty when set",
                ));
            }
            if m.context_length == Some(0) {
                return Err(invalid(
                    format!("models[{i}].context_length"),
                    "must be at least 1",
                ));
            }
            Ok(ExtraModelSettings {
                path: PathBuf::from(m.path),
                id: m.id,
                context_length: m.context_length,
            })
        })
        .collect()
}
