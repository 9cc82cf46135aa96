//! Settings of named cloud upstreams (`upstreams.<name>.*`): the serde shape read from config
//! files, and its validation into [`UpstreamSettings`] with the API key read from the environment.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

/// Model-map key that matches any edge model id without an entry of its own.
pub const WILDCARD_MODEL: &str = "*";

/// An upstream setting that cannot be used; `key` is the full path (`upstreams.cloud.base_url`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration key {key}: {message}")]
pub struct UpstreamConfigError {
    pub key: String,
    pub message: String,
}

impl UpstreamConfigError {
    fn new(upstream: &str, field: &str, message: impl Into<String>) -> Self {
        Self {
            key: format!("upstreams.{upstream}.{field}"),
            message: message.into(),
        }
    }
}

/// `upstreams.<name>` as written in the config file; every key but `base_url` has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub base_url: String,
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub model_map: BTreeMap<String, String>,
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "defaults::first_byte_timeout_ms")]
    pub first_byte_timeout_ms: u64,
    #[serde(default = "defaults::total_timeout_ms")]
    pub total_timeout_ms: u64,
    #[serde(default = "defaults::idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    #[serde(default = "defaults::max_retries")]
    pub max_retries: u32,
    #[serde(default = "defaults::retry_base_ms")]
    pub retry_base_ms: u64,
    #[serde(default = "defaults::retry_max_backoff_ms")]
    pub retry_max_backoff_ms: u64,
    #[serde(default = "defaults::retry_after_max_ms")]
    pub retry_after_max_ms: u64,
    #[serde(default)]
    pub circuit: RawCircuit,
}

/// `upstreams.<name>.circuit` as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCircuit {
    #[serde(default = "defaults::failure_threshold")]
    pub failure_threshold: u32,
    #[serde(default = "defaults::open_ms")]
    pub open_ms: u64,
}

impl Default for RawCircuit {
    fn default() -> Self {
        Self {
            failure_threshold: defaults::failure_threshold(),
            open_ms: defaults::open_ms(),
        }
    }
}

/// Defaults, chosen for a hosted OpenAI-compatible API answering interactive requests.
pub mod defaults {
    /// TCP + TLS handshake.
    pub fn connect_timeout_ms() -> u64 {
        3_000
    }
    /// Until response headers; long prompts make hosted models slow to answer.
    pub fn first_byte_timeout_ms() -> u64 {
        30_000
    }
    /// Whole non-streaming call, retries included.
    pub fn total_timeout_ms() -> u64 {
        120_000
    }
    /// Longest silence between two chunks of a stream.
    pub fn idle_timeout_ms() -> u64 {
        30_000
    }
    /// Extra attempts after the first.
    pub fn max_retries() -> u32 {
        2
    }
    /// Backoff ceiling of the first retry; doubles per retry.
    pub fn retry_base_ms() -> u64 {
        200
    }
    /// Cap of the backoff ceiling.
    pub fn retry_max_backoff_ms() -> u64 {
        5_000
    }
    /// A longer `Retry-After` is passed to the client instead of waited out.
    pub fn retry_after_max_ms() -> u64 {
        5_000
    }
    /// Consecutive failed attempts that open the circuit.
    pub fn failure_threshold() -> u32 {
        5
    }
    /// How long an open circuit rejects before a trial.
    pub fn open_ms() -> u64 {
        30_000
    }
}

/// The secret sent as `Authorization: Bearer`; never printed (its `Debug` is redacted and it
/// has no `Display`).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key read from the environment.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, only for building the request header and scrubbing upstream messages.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

/// Breaker thresholds of one upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitSettings {
    /// Consecutive failed attempts (connect errors, timeouts, 5xx) that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit rejects requests before letting one trial through.
    pub open: Duration,
}

/// One validated upstream; every field is usable as is.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The map key under `upstreams`; used in metrics labels and messages.
    pub name: String,
    /// Base of the OpenAI-compatible API, without trailing slash (`http://host:9000/v1`).
    pub base_url: Url,
    /// Environment variable the key was read from (kept for messages; not secret).
    pub api_key_env: Option<String>,
    pub api_key: Option<ApiKey>,
    /// Edge model id (or [`WILDCARD_MODEL`]) → upstream model name. Empty: `model` is sent as is.
    pub model_map: HashMap<String, String>,
    pub connect_timeout: Duration,
    /// Per attempt, from sending the request to the response headers.
    pub first_byte_timeout: Duration,
    /// Non-streaming: the whole call (attempts, backoff, body). Streaming: until the response
    /// headers, retries included; after that only `idle_timeout` applies.
    pub total_timeout: Duration,
    /// Streaming: the longest silence after the headers, before the first chunk and between
    /// chunks (keepalive comments count). Replaces a total limit, which would cut off long but
    /// healthy generations.
    pub idle_timeout: Duration,
    /// Extra attempts after the first.
    pub max_retries: u32,
    pub retry_base: Duration,
    pub retry_max_backoff: Duration,
    pub retry_after_max: Duration,
    pub circuit: CircuitSettings,
}

impl RawUpstream {
    /// Validates `upstreams.<name>`, reading the API key from the process environment.
    pub fn validate(self, name: &str) -> Result<UpstreamSettings, UpstreamConfigError> {
        self.validate_with_env(name, |var| std::env::var(var).ok())
    }

    /// Like [`RawUpstream::validate`] with the environment lookup injected (for tests).
    pub fn validate_with_env(
        self,
        name: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<UpstreamSettings, UpstreamConfigError> {
        let err = |field: &str, message: String| UpstreamConfigError::new(name, field, message);
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            // Environment overrides lower-case keys, so other names could not be overridden.
            return Err(UpstreamConfigError {
                key: format!("upstreams.{name}"),
                message: "upstream names use only a-z, 0-9, '-' and '_'".into(),
            });
        }
        let base_url = parse_base_url(&self.base_url).map_err(|m| err("base_url", m))?;
        let api_key = match &self.api_key_env {
            None => None,
            Some(var) => read_key(var, &env).map_err(|m| err("api_key_env", m))?,
        };
        for (from, to) in &self.model_map {
            if from.trim().is_empty() || to.trim().is_empty() {
                return Err(err(
                    "model_map",
                    format!("entry '{from}' -> '{to}': model names must not be empty"),
                ));
            }
        }
        let positive = |field: &str, ms: u64| {
            if ms == 0 {
                Err(err(field, "must be greater than 0".into()))
            } else {
                Ok(Duration::from_millis(ms))
            }
        };
        let connect_timeout = positive("connect_timeout_ms", self.connect_timeout_ms)?;
        let first_byte_timeout = positive("first_byte_timeout_ms", self.first_byte_timeout_ms)?;
        let total_timeout = positive("total_timeout_ms", self.total_timeout_ms)?;
        let idle_timeout = positive("idle_timeout_ms", self.idle_timeout_ms)?;
        if self.max_retries > 10 {
            return Err(err("max_retries", "must be 0..=10".into()));
        }
        let retry_base = positive("retry_base_ms", self.retry_base_ms)?;
        let retry_max_backoff = positive("retry_max_backoff_ms", self.retry_max_backoff_ms)?;
        if retry_max_backoff < retry_base {
            return Err(err(
                "retry_max_backoff_ms",
                "must be at least retry_base_ms".into(),
            ));
        }
        if self.circuit.failure_threshold == 0 {
            return Err(err(
                "circuit.failure_threshold",
                "must be at least 1".into(),
            ));
        }
        let open = positive("circuit.open_ms", self.circuit.open_ms)?;
        Ok(UpstreamSettings {
            name: name.to_owned(),
            base_url,
            api_key_env: self.api_key_env,
            api_key,
            model_map: self.model_map.into_iter().collect(),
            connect_timeout,
            first_byte_timeout,
            total_timeout,
            idle_timeout,
            max_retries: self.max_retries,
            retry_base,
            retry_max_backoff,
            retry_after_max: Duration::from_millis(self.retry_after_max_ms),
            circuit: CircuitSettings {
                failure_threshold: self.circuit.failure_threshold,
                open,
            },
        })
    }
}

/// Validates every `upstreams.<name>` (in name order, so the first error is stable), reading
/// API keys from the process environment.
pub fn validate_upstreams(
    raw: BTreeMap<String, RawUpstream>,
) -> Result<Vec<UpstreamSettings>, UpstreamConfigError> {
    validate_upstreams_with_env(raw, |var| std::env::var(var).ok())
}

/// Like [`validate_upstreams`] with the environment lookup injected (for tests).
pub fn validate_upstreams_with_env(
    raw: BTreeMap<String, RawUpstream>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<UpstreamSettings>, UpstreamConfigError> {
    raw.into_iter()
        .map(|(name, upstream)| upstream.validate_with_env(&name, &env))
        .collect()
}

fn parse_base_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("'{raw}' is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("'{raw}' must use http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{raw}' has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("'{raw}' must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in a URL end up in logs; keys belong in api_key_env.
        return Err("must not contain credentials; use api_key_env".into());
    }
    let mut url = url;
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

/// Reads the key from `var`. An unset variable means "no key" (local OpenAI-compatible servers
/// usually need none, and the default config names a variable so operators only have to set
/// it); a variable that is set but empty or malformed is a configuration error.
fn read_key(var: &str, env: &impl Fn(&str) -> Option<String>) -> Result<Option<ApiKey>, String> {
    if var.trim().is_empty() {
        return Err("must name an environment variable when set".into());
    }
    let Some(key) = env(var) else {
        return Ok(None);
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("environment variable {var} is empty"));
    }
    // The key goes into an HTTP header: visible ASCII only. The message must not echo it.
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "environment variable {var} holds characters not allowed in an HTTP header"
        ));
    }
    Ok(Some(ApiKey::new(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-test-SECRET-0123456789";

    fn raw(yaml: &str) -> RawUpstream {
        serde_yaml_via_config(yaml)
    }

    /// Parses through the `config` crate, as `Settings::load` will, so its key handling
    /// (case, dots) is what the tests see.
    fn serde_yaml_via_config<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        config::Config::builder()
            .add_source(config::File::from_str(yaml, config::FileFormat::Yaml))
            .build()
            .expect("config builds")
            .try_deserialize()
            .expect("deserializes")
    }

    fn env(var: &str) -> Option<String> {
        (var == "CLOUD_KEY").then(|| KEY.to_owned())
    }

    #[test]
    fn minimal_upstream_gets_defaults() {
        let s = raw("base_url: http://127.0.0.1:9000/v1/\n")
            .validate_with_env("cloud", env)
            .expect("valid");
        assert_eq!(s.base_url.as_str(), "http://127.0.0.1:9000/v1");
        assert_eq!(s.max_retries, defaults::max_retries());
        assert_eq!(s.circuit.failure_threshold, defaults::failure_threshold());
        assert!(s.api_key.is_none());
        assert!(s.model_map.is_empty());
    }

    #[test]
    fn full_upstream_parses_through_config_crate() {
        let s = raw(concat!(
            "base_url: https://api.example.com/v1\n",
            "api_key_env: CLOUD_KEY\n",
            "model_map:\n  edge-tiny-genai: gpt-4.1-mini\n  Edge-Large: GPT-4o\n  \"*\": gpt-4o-mini\n",
            "connect_timeout_ms: 100\nfirst_byte_timeout_ms: 200\ntotal_timeout_ms: 300\n",
            "idle_timeout_ms: 400\nmax_retries: 3\nretry_base_ms: 5\nretry_max_backoff_ms: 50\n",
            "retry_after_max_ms: 60\ncircuit:\n  failure_threshold: 2\n  open_ms: 70\n",
        ))
        .validate_with_env("cloud", env)
        .expect("valid");
        assert_eq!(s.api_key, Some(ApiKey::new(KEY)));
        assert_eq!(
            s.model_map.get("edge-tiny-genai").map(String::as_str),
            Some("gpt-4.1-mini")
        );
        assert_eq!(
            s.model_map.get("Edge-Large").map(String::as_str),
            Some("GPT-4o")
        );
        assert_eq!(
            s.model_map.get("*").map(String::as_str),
            Some("gpt-4o-mini")
        );
        assert_eq!(s.first_byte_timeout, Duration::from_millis(200));
        assert_eq!(s.circuit.open, Duration::from_millis(70));
    }

    #[test]
    fn unknown_key_is_rejected() {
        let result: Result<RawUpstream, _> = config::Config::builder()
            .add_source(config::File::from_str(
                "base_url: http://h/v1\nretries: 3\n",
                config::FileFormat::Yaml,
            ))
            .build()
            .expect("builds")
            .try_deserialize();
        let err = result.expect_err("unknown key");
        assert!(err.to_string().contains("retries"), "{err}");
    }

    #[test]
    fn bad_base_url_names_the_key_path() {
        for bad in [
            "not a url",
            "ftp://h/v1",
            "http://h/v1?x=1",
            "http://u:p@h/v1",
        ] {
            let err = raw(&format!("base_url: \"{bad}\"\n"))
                .validate_with_env("cloud", env)
                .expect_err(bad);
            assert_eq!(err.key, "upstreams.cloud.base_url", "{bad}");
            assert!(err
                .to_string()
                .starts_with("configuration key upstreams.cloud.base_url: "));
        }
    }

    #[test]
    fn unset_key_variable_means_no_key() {
        let s = raw("base_url: http://h/v1\napi_key_env: NOPE\n")
            .validate_with_env("cloud", env)
            .expect("unset variable is allowed");
        assert!(s.api_key.is_none());
    }

    #[test]
    fn empty_key_variable_is_an_error_naming_it() {
        let err = raw("base_url: http://h/v1\napi_key_env: EMPTY\n")
            .validate_with_env("cloud", |v| (v == "EMPTY").then(String::new))
            .expect_err("empty");
        assert_eq!(err.key, "upstreams.cloud.api_key_env");
        assert!(err.message.contains("EMPTY"));
    }

    #[test]
    fn zero_values_are_rejected_with_their_path() {
        let cases = [
            (
                "connect_timeout_ms: 0",
                "upstreams.cloud.connect_timeout_ms",
            ),
            ("total_timeout_ms: 0", "upstreams.cloud.total_timeout_ms"),
            ("retry_base_ms: 0", "upstreams.cloud.retry_base_ms"),
            ("max_retries: 11", "upstreams.cloud.max_retries"),
            (
                "circuit:\n  failure_threshold: 0",
                "upstreams.cloud.circuit.failure_threshold",
            ),
            ("circuit:\n  open_ms: 0", "upstreams.cloud.circuit.open_ms"),
            ("model_map:\n  a: \"\"", "upstreams.cloud.model_map"),
        ];
        for (line, key) in cases {
            let err = raw(&format!("base_url: http://h/v1\n{line}\n"))
                .validate_with_env("cloud", env)
                .expect_err(line);
            assert_eq!(err.key, key);
        }
    }

    #[test]
    fn upper_case_name_is_rejected() {
        let err = raw("base_url: http://h/v1\n")
            .validate_with_env("Cloud", env)
            .expect_err("upper case");
        assert_eq!(err.key, "upstreams.Cloud");
    }

    #[test]
    fn debug_output_never_contains_the_key() {
        let s = raw("base_url: http://h/v1\napi_key_env: CLOUD_KEY\n")
            .validate_with_env("cloud", env)
            .expect("valid");
        let debug = format!("{s:?}");
        assert!(!debug.contains(KEY), "{debug}");
        assert!(debug.contains("REDACTED"), "{debug}");
    }

    #[test]
    fn several_upstreams_validate_in_name_order() {
        let map: BTreeMap<String, RawUpstream> = serde_yaml_via_config(
            "b:\n  base_url: \"bad\"\na:\n  base_url: http://h/v1\n  max_retries: 99\n",
        );
        let err = validate_upstreams_with_env(map, env).expect_err("both invalid");
        assert_eq!(err.key, "upstreams.a.max_retries");
    }
}
