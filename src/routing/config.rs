//! Settings of the routing section (`routing.*`): the serde shape read from config files, and
//! its validation into [`RoutingSettings`]. `config.rs` embeds [`RawRouting`] and calls
//! [`RawRouting::validate`], as it does for upstreams.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Shortest polling interval accepted: a policy file changes by hand, and a tighter loop would
/// only burn CPU re-hashing it.
const MIN_RELOAD_INTERVAL_MS: u64 = 100;

/// A routing setting that cannot be used; `key` is the full path (`routing.policy`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration key {key}: {message}")]
pub struct RoutingConfigError {
    pub key: &'static str,
    pub message: String,
}

/// `routing` as written in the config file; every key has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    #[serde(default = "defaults::policy")]
    pub policy: String,
    #[serde(default = "defaults::reload_interval_ms")]
    pub reload_interval_ms: u64,
}

impl Default for RawRouting {
    fn default() -> Self {
        Self {
            policy: defaults::policy(),
            reload_interval_ms: defaults::reload_interval_ms(),
        }
    }
}

/// Defaults of `routing.*`.
pub mod defaults {
    /// The shipped policy, relative to the working directory.
    pub fn policy() -> String {
        "policies/default.yaml".to_owned()
    }
    /// How often the policy file is checked for changes.
    pub fn reload_interval_ms() -> u64 {
        2_000
    }
}

/// Validated `routing.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingSettings {
    /// The policy file to load (and watch).
    pub policy: PathBuf,
    /// Polling interval of the policy watcher; `None` when hot reload is off
    /// (`reload_interval_ms: 0`).
    pub reload_interval: Option<Duration>,
}

impl RawRouting {
    /// Checks the values; the policy file itself is compiled by `PolicyStore::load`, which
    /// needs the validated upstream names.
    pub fn validate(self) -> Result<RoutingSettings, RoutingConfigError> {
        if self.policy.trim().is_empty() {
            return Err(RoutingConfigError {
                key: "routing.policy",
                message: "must name a policy file".to_owned(),
            });
        }
        let reload_interval = match self.reload_interval_ms {
            0 => None,
            ms if ms < MIN_RELOAD_INTERVAL_MS => {
                return Err(RoutingConfigError {
                    key: "routing.reload_interval_ms",
                    message: format!(
                        "must be 0 (no hot reload) or at least {MIN_RELOAD_INTERVAL_MS}"
                    ),
                })
            }
            ms => Some(Duration::from_millis(ms)),
        };
        Ok(RoutingSettings {
            policy: PathBuf::from(self.policy),
            reload_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_to_the_shipped_policy_with_hot_reload() {
        let s = RawRouting::default().validate().expect("valid");
        assert_eq!(s.policy, PathBuf::from("policies/default.yaml"));
        assert_eq!(s.reload_interval, Some(Duration::from_secs(2)));
    }

    #[test]
    fn zero_interval_disables_reload_and_tiny_ones_are_refused() {
        let raw = |ms| RawRouting {
            reload_interval_ms: ms,
            ..RawRouting::default()
        };
        assert_eq!(raw(0).validate().expect("valid").reload_interval, None);
        let err = raw(5).validate().expect_err("too small");
        assert_eq!(err.key, "routing.reload_interval_ms");
        let err = RawRouting {
            policy: " ".into(),
            ..RawRouting::default()
        }
        .validate()
        .expect_err("empty");
        assert_eq!(err.key, "routing.policy");
    }
}
