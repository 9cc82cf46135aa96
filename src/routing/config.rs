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
    #[serde(default = "defaults::scorer")]
    pub scorer: String,
    #[serde(default = "defaults::exemplars")]
    pub exemplars: String,
    #[serde(default = "defaults::exemplar_cache_dir")]
    pub exemplar_cache_dir: String,
}

impl Default for RawRouting {
    fn default() -> Self {
        Self {
            policy: defaults::policy(),
            reload_interval_ms: defaults::reload_interval_ms(),
            scorer: defaults::scorer(),
            exemplars: defaults::exemplars(),
            exemplar_cache_dir: defaults::exemplar_cache_dir(),
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
    /// Semantic scorers when the embedding model is enabled, heuristics otherwise.
    pub fn scorer() -> String {
        "auto".to_owned()
    }
    /// The shipped exemplar files, relative to the working directory.
    pub fn exemplars() -> String {
        "policies/exemplars".to_owned()
    }
    /// Where trained scorer heads are kept for fast restarts, beside ORT's optimized graphs.
    pub fn exemplar_cache_dir() -> String {
        ".cache/exemplars".to_owned()
    }
}

/// Which scorers compute `risk_score` and `complexity_score` when a request sends neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScorerMode {
    /// Nearest labelled exemplars in the embedding space (`routing::semantic`) when
    /// `embeddings.enabled`, else the keyword heuristics.
    Auto,
    /// Always the keyword heuristics (`routing::heuristics`).
    Heuristic,
}

/// Validated `routing.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingSettings {
    /// The policy file to load (and watch).
    pub policy: PathBuf,
    /// Polling interval of the policy watcher; `None` when hot reload is off
    /// (`reload_interval_ms: 0`).
    pub reload_interval: Option<Duration>,
    /// Semantic or heuristic scorers.
    pub scorer: ScorerMode,
    /// Directory of `complexity.yaml`, `risk.yaml` and `pii.yaml`.
    pub exemplars: PathBuf,
    /// Cache of embedded exemplars and trained heads; `None` disables it.
    pub exemplar_cache_dir: Option<PathBuf>,
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
        let scorer = match self.scorer.as_str() {
            "auto" => ScorerMode::Auto,
            "heuristic" => ScorerMode::Heuristic,
            other => {
                return Err(RoutingConfigError {
                    key: "routing.scorer",
                    message: format!("`{other}` is not one of auto, heuristic"),
                })
            }
        };
        if self.exemplars.trim().is_empty() {
            return Err(RoutingConfigError {
                key: "routing.exemplars",
                message: "must name the exemplar directory".to_owned(),
            });
        }
        Ok(RoutingSettings {
            policy: PathBuf::from(self.policy),
            reload_interval,
            scorer,
            exemplars: PathBuf::from(self.exemplars),
            exemplar_cache_dir: Some(self.exemplar_cache_dir)
                .filter(|d| !d.trim().is_empty())
                .map(PathBuf::from),
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
        let err = RawRouting {
            scorer: "magic".into(),
            ..RawRouting::default()
        }
        .validate()
        .expect_err("unknown scorer");
        assert_eq!(err.key, "routing.scorer");
        assert_eq!(
            RawRouting::default().validate().expect("valid").scorer,
            ScorerMode::Auto
        );
    }
}
