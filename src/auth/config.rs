//! Settings of API keys (`auth.keys[i].*`): the serde shape read from config files, and its
//! validation into [`ApiKeySettings`], reading each secret from the environment variable the
//! file names and keeping only its SHA-256 digest.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest key accepted. Keys are bearer secrets: a short one can be guessed online.
pub const MIN_KEY_CHARS: usize = 16;

/// Longest key name, which shows up in logs and as the reviewer of human reviews.
const MAX_NAME_CHARS: usize = 64;

/// An auth setting that cannot be used; `key` is the full path (`auth.keys[1].scopes`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration key {key}: {message}")]
pub struct AuthConfigError {
    pub key: String,
    pub message: String,
}

impl AuthConfigError {
    fn at(index: usize, field: &str, message: impl Into<String>) -> Self {
        Self {
            key: format!("auth.keys[{index}].{field}"),
            message: message.into(),
        }
    }
}

/// What a key may do. Scopes are independent: `admin` does not imply `inference`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The OpenAI surface: `/v1/chat/completions`, `/v1/completions`, `/v1/models`, ...
    Inference,
    /// Operator endpoints: the human-review queue, admin APIs.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 2] = [Scope::Inference, Scope::Admin];

    /// The name used in config files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Inference => "inference",
            Scope::Admin => "admin",
        }
    }

    /// Parses a scope name from a config file.
    pub fn parse(s: &str) -> Option<Self> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Inference => 1,
            Scope::Admin => 2,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scopes of one key; a bit set so checking a request is one AND.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct ScopeSet(u8);

impl ScopeSet {
    /// The set holding `scopes`.
    pub fn of(scopes: &[Scope]) -> Self {
        Self(scopes.iter().fold(0, |bits, scope| bits | scope.bit()))
    }

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(Scope::ALL.into_iter().filter(|s| self.contains(*s)))
            .finish()
    }
}

/// SHA-256 of a key. The gateway keeps only this, so a heap dump or a stray `Debug` holds no
/// usable secret, and comparing digests makes every comparison the same length.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// Digest of a presented or configured key.
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }
}

impl ConstantTimeEq for KeyDigest {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.0[..].ct_eq(&other.0[..])
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDigest([REDACTED])")
    }
}

/// `auth` as written in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// No keys: the gateway runs open (loopback only).
    #[serde(default)]
    pub keys: Vec<RawApiKey>,
}

/// `auth.keys[i]` as written in the config file. The secret itself never appears in a file:
/// `key_env` names the environment variable holding it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    /// Who holds the key (`ci`, `alice`); shown in logs and recorded as the reviewer.
    pub name: String,
    /// Environment variable holding the key.
    pub key_env: String,
    /// `inference` and/or `admin`.
    pub scopes: Vec<String>,
    /// Per-key limit with a burst of the same size; absent: unlimited.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
}

/// Validated `auth` section.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// Empty: open mode.
    pub keys: Vec<ApiKeySettings>,
}

/// One validated key. Its `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct ApiKeySettings {
    pub name: String,
    /// Where the key was read from (kept for messages; not secret).
    pub key_env: String,
    pub digest: KeyDigest,
    pub scopes: ScopeSet,
    pub requests_per_minute: Option<NonZeroU32>,
}

impl RawAuth {
    /// Validates `auth`, reading keys from the process environment.
    pub fn validate(self) -> Result<AuthSettings, AuthConfigError> {
        self.validate_with_env(|var| std::env::var(var).ok())
    }

    /// Like [`RawAuth::validate`] with the environment lookup injected (for tests).
    pub fn validate_with_env(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<AuthSettings, AuthConfigError> {
        Ok(AuthSettings {
            keys: validate_api_keys_with_env(self.keys, env)?,
        })
    }
}

impl RawApiKey {
    /// Validates `auth.keys[index]`, reading its secret from the process environment.
    pub fn validate(self, index: usize) -> Result<ApiKeySettings, AuthConfigError> {
        self.validate_with_env(index, |var| std::env::var(var).ok())
    }

    /// Like [`RawApiKey::validate`] with the environment lookup injected (for tests).
    pub fn validate_with_env(
        self,
        index: usize,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ApiKeySettings, AuthConfigError> {
        let err = |field: &str, message: String| AuthConfigError::at(index, field, message);
        let name = self.name.trim();
        let name_ok = !name.is_empty()
            && name.chars().count() <= MAX_NAME_CHARS
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            return Err(err(
                "name",
                format!("'{name}' must be 1..={MAX_NAME_CHARS} of a-z, A-Z, 0-9, '-', '_', '.'"),
            ));
        }
        let digest = read_key_digest(&self.key_env, &env).map_err(|m| err("key_env", m))?;
        if self.scopes.is_empty() {
            return Err(err(
                "scopes",
                "must list at least one of inference, admin".into(),
            ));
        }
        let mut scopes = Vec::with_capacity(self.scopes.len());
        for scope in &self.scopes {
            let Some(parsed) = Scope::parse(scope) else {
                return Err(err(
                    "scopes",
                    format!("unknown scope '{scope}' (expected inference or admin)"),
                ));
            };
            scopes.push(parsed);
        }
        let requests_per_minute = match self.requests_per_minute {
            None => None,
            Some(n) => Some(NonZeroU32::new(n).ok_or_else(|| {
                err(
                    "requests_per_minute",
                    "must be at least 1 (omit it for no limit)".into(),
                )
            })?),
        };
        Ok(ApiKeySettings {
            name: name.to_owned(),
            key_env: self.key_env,
            digest,
            scopes: ScopeSet::of(&scopes),
            requests_per_minute,
        })
    }
}

/// Validates every `auth.keys[i]`, reading keys from the process environment.
pub fn validate_api_keys(raw: Vec<RawApiKey>) -> Result<Vec<ApiKeySettings>, AuthConfigError> {
    validate_api_keys_with_env(raw, |var| std::env::var(var).ok())
}

/// Like [`validate_api_keys`] with the environment lookup injected (for tests). Besides each
/// key's own checks, names and secrets must be unique: a shared secret would make the caller
/// ambiguous.
pub fn validate_api_keys_with_env(
    raw: Vec<RawApiKey>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<ApiKeySettings>, AuthConfigError> {
    let mut keys: Vec<ApiKeySettings> = Vec::with_capacity(raw.len());
    let mut names: HashMap<String, usize> = HashMap::with_capacity(raw.len());
    for (index, raw_key) in raw.into_iter().enumerate() {
        let key = raw_key.validate_with_env(index, &env)?;
        if let Some(first) = names.insert(key.name.clone(), index) {
            return Err(AuthConfigError::at(
                index,
                "name",
                format!("'{}' is already used by auth.keys[{first}]", key.name),
            ));
        }
        // Load time, not a request: a plain comparison of digests is fine here.
        if let Some(first) = keys.iter().position(|k| k.digest == key.digest) {
            return Err(AuthConfigError::at(
                index,
                "key_env",
                format!("holds the same key as auth.keys[{first}]; every key needs its own secret"),
            ));
        }
        keys.push(key);
    }
    Ok(keys)
}

/// Reads the secret named by `var` and returns its digest. The messages name the variable,
/// never its value.
fn read_key_digest(var: &str, env: &impl Fn(&str) -> Option<String>) -> Result<KeyDigest, String> {
    let var_ok = var
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !var_ok {
        return Err(format!(
            "'{var}' is not an environment variable name (letters, digits, '_')"
        ));
    }
    let Some(secret) = env(var) else {
        return Err(format!("environment variable {var} is not set"));
    };
    // Trailing newlines sneak in from `$(cat keyfile)`; clients never send them.
    let secret = secret.trim();
    if secret.is_empty() {
        return Err(format!("environment variable {var} is empty"));
    }
    // Clients send the key in an HTTP header: visible ASCII only.
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "environment variable {var} holds characters not allowed in an HTTP header"
        ));
    }
    if secret.chars().count() < MIN_KEY_CHARS {
        return Err(format!(
            "environment variable {var} holds a key shorter than {MIN_KEY_CHARS} characters; \
             use a long random one (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(KeyDigest::of(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "sk-test-0123456789abcdef";

    fn env(var: &str) -> Option<String> {
        match var {
            "KEY_A" => Some(SECRET.into()),
            "KEY_B" => Some("sk-other-0123456789abcdef\n".into()),
            "SHORT" => Some("abc".into()),
            "SPACED" => Some("sk-has space-0123456789".into()),
            "EMPTY" => Some("  ".into()),
            _ => None,
        }
    }

    fn raw(name: &str, key_env: &str, scopes: &[&str], rpm: Option<u32>) -> RawApiKey {
        RawApiKey {
            name: name.into(),
            key_env: key_env.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            requests_per_minute: rpm,
        }
    }

    #[test]
    fn valid_key_keeps_only_the_digest() {
        let key = raw("ci", "KEY_A", &["inference", "admin"], Some(60))
            .validate_with_env(0, env)
            .expect("valid");
        assert_eq!(key.name, "ci");
        assert_eq!(key.digest, KeyDigest::of(SECRET));
        assert!(key.scopes.contains(Scope::Inference) && key.scopes.contains(Scope::Admin));
        assert_eq!(key.requests_per_minute.map(NonZeroU32::get), Some(60));
    }

    #[test]
    fn trailing_newline_of_the_variable_is_trimmed() {
        let key = raw("b", "KEY_B", &["inference"], None)
            .validate_with_env(0, env)
            .expect("valid");
        assert_eq!(key.digest, KeyDigest::of("sk-other-0123456789abcdef"));
    }

    #[test]
    fn each_problem_names_its_path() {
        let cases = [
            (raw("", "KEY_A", &["admin"], None), "auth.keys[3].name"),
            (raw("a b", "KEY_A", &["admin"], None), "auth.keys[3].name"),
            (raw("a", "UNSET", &["admin"], None), "auth.keys[3].key_env"),
            (raw("a", "EMPTY", &["admin"], None), "auth.keys[3].key_env"),
            (raw("a", "SHORT", &["admin"], None), "auth.keys[3].key_env"),
            (raw("a", "SPACED", &["admin"], None), "auth.keys[3].key_env"),
            (raw("a", "9BAD", &["admin"], None), "auth.keys[3].key_env"),
            (raw("a", "KEY_A", &[], None), "auth.keys[3].scopes"),
            (raw("a", "KEY_A", &["root"], None), "auth.keys[3].scopes"),
            (
                raw("a", "KEY_A", &["admin"], Some(0)),
                "auth.keys[3].requests_per_minute",
            ),
        ];
        for (raw_key, path) in cases {
            let shown = format!("{raw_key:?}");
            let err = raw_key.validate_with_env(3, env).expect_err(&shown);
            assert_eq!(err.key, path, "{shown}");
            assert!(!err.to_string().contains("0123456789abcdef"), "{err}");
        }
    }

    #[test]
    fn unknown_scope_message_is_exact() {
        let err = raw("a", "KEY_A", &["inference", "root"], None)
            .validate_with_env(1, env)
            .expect_err("root");
        assert!(
            err.to_string()
                .starts_with("configuration key auth.keys[1].scopes: unknown scope 'root'"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_names_and_secrets_are_rejected() {
        let err = validate_api_keys_with_env(
            vec![
                raw("a", "KEY_A", &["admin"], None),
                raw("a", "KEY_B", &["admin"], None),
            ],
            env,
        )
        .expect_err("same name");
        assert_eq!(err.key, "auth.keys[1].name");
        let err = validate_api_keys_with_env(
            vec![
                raw("a", "KEY_A", &["admin"], None),
                raw("b", "KEY_A", &["admin"], None),
            ],
            env,
        )
        .expect_err("same secret");
        assert_eq!(err.key, "auth.keys[1].key_env");
        assert!(err.message.contains("auth.keys[0]"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let result: Result<RawAuth, _> = config::Config::builder()
            .add_source(config::File::from_str(
                "keys:\n  - name: a\n    key_env: KEY_A\n    key: sk-inline-secret\n    scopes: [admin]\n",
                config::FileFormat::Yaml,
            ))
            .build()
            .expect("builds")
            .try_deserialize();
        let err = result.expect_err("inline key is not a field");
        assert!(err.to_string().contains("key"), "{err}");
    }

    #[test]
    fn yaml_shape_parses() {
        let auth: RawAuth = config::Config::builder()
            .add_source(config::File::from_str(
                "keys:\n  - name: ci\n    key_env: KEY_A\n    scopes: [inference]\n    requests_per_minute: 600\n  - name: ops\n    key_env: KEY_B\n    scopes: [admin, inference]\n",
                config::FileFormat::Yaml,
            ))
            .build()
            .expect("builds")
            .try_deserialize()
            .expect("valid shape");
        let settings = auth.validate_with_env(env).expect("valid");
        assert_eq!(settings.keys.len(), 2);
        assert_eq!(settings.keys[1].requests_per_minute, None);
    }

    #[test]
    fn scope_set_debug_lists_names() {
        let set = ScopeSet::of(&[Scope::Admin]);
        assert_eq!(format!("{set:?}"), "{Admin}");
        assert!(!set.contains(Scope::Inference));
    }
}
