//! API keys through the public surface: missing, invalid, forbidden and rate-limited requests,
//! the constant-time lookup, loading secrets from the environment, and redaction.

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on unexpected results"
)]

use std::time::{Duration, Instant};

use edge_gateway::auth::{
    check_open_mode_bind, validate_api_keys, validate_api_keys_with_env, AuthError, Authenticator,
    RawApiKey, RawAuth, Scope, OPEN_MODE_PRINCIPAL,
};

const CI_KEY: &str = "sk-ci-6f1d2a9b8c7e4f30a1b2c3d4e5f60718";
const OPS_KEY: &str = "sk-ops-0a9b8c7d6e5f40312233445566778899";

fn env(var: &str) -> Option<String> {
    match var {
        "CI_KEY" => Some(CI_KEY.into()),
        "OPS_KEY" => Some(OPS_KEY.into()),
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

/// `ci` may run inference (limited to `ci_rpm`); `ops` may do both, unlimited.
fn authenticator(ci_rpm: Option<u32>) -> Authenticator {
    let keys = validate_api_keys_with_env(
        vec![
            raw("ci", "CI_KEY", &["inference"], ci_rpm),
            raw("ops", "OPS_KEY", &["inference", "admin"], None),
        ],
        env,
    )
    .expect("valid keys");
    Authenticator::new(keys)
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[test]
fn valid_key_is_authorized_as_its_name() {
    let auth = authenticator(None);
    assert!(!auth.is_open());
    let principal = auth
        .authorize(Some(&bearer(CI_KEY)), Scope::Inference)
        .expect("authorized");
    assert_eq!(&*principal.key_name, "ci");
    let principal = auth
        .authorize(Some(&format!("bearer {OPS_KEY}")), Scope::Admin)
        .expect("scheme is case-insensitive");
    assert_eq!(&*principal.key_name, "ops");
}

#[test]
fn missing_key_is_401() {
    let auth = authenticator(None);
    for header in [None, Some(""), Some("Bearer "), Some("Bearer")] {
        let err = auth
            .authorize(header, Scope::Inference)
            .expect_err("no key");
        assert_eq!(err, AuthError::Missing, "{header:?}");
        let (status, kind, code, _, retry_after) = err.openai_parts();
        assert_eq!(
            (status, kind, code, retry_after),
            (401, "invalid_request_error", "missing_api_key", None)
        );
    }
}

#[test]
fn wrong_key_or_scheme_is_401_invalid() {
    let auth = authenticator(None);
    for header in [
        bearer("sk-nope"),
        format!("Basic {CI_KEY}"),
        CI_KEY.to_owned(),
        bearer(&CI_KEY.to_uppercase()),
    ] {
        let err = auth
            .authorize(Some(&header), Scope::Inference)
            .expect_err(&header);
        assert_eq!(err, AuthError::Invalid, "{header}");
        let (status, _, code, message, _) = err.openai_parts();
        assert_eq!((status, code), (401, "invalid_api_key"));
        assert!(!message.contains("sk-"), "never echoes the key: {message}");
    }
}

#[test]
fn near_miss_keys_are_rejected_through_the_digest_compare() {
    // Keys that share a prefix or suffix with a real one, or differ in length, must all fail:
    // lookup compares SHA-256 digests in constant time, never the raw bytes up to a mismatch.
    let auth = authenticator(None);
    let last_flipped = format!("{}9", &CI_KEY[..CI_KEY.len() - 1]);
    let first_flipped = format!("S{}", &CI_KEY[1..]);
    let near_misses = [
        last_flipped,
        first_flipped,
        CI_KEY[..CI_KEY.len() - 1].to_owned(),
        format!("{CI_KEY}0"),
        format!("{CI_KEY}{OPS_KEY}"),
    ];
    for key in &near_misses {
        assert_eq!(
            auth.authorize(Some(&bearer(key)), Scope::Inference),
            Err(AuthError::Invalid),
            "{key}"
        );
    }
    // And the real keys still resolve to the right principal, whichever position they hold.
    for (key, name) in [(CI_KEY, "ci"), (OPS_KEY, "ops")] {
        let principal = auth
            .authorize(Some(&bearer(key)), Scope::Inference)
            .expect(name);
        assert_eq!(&*principal.key_name, name);
    }
}

#[test]
fn key_without_the_scope_is_403() {
    let auth = authenticator(None);
    let err = auth
        .authorize(Some(&bearer(CI_KEY)), Scope::Admin)
        .expect_err("inference-only key on admin");
    assert_eq!(
        err,
        AuthError::Forbidden {
            scope: Scope::Admin
        }
    );
    let (status, _, code, message, _) = err.openai_parts();
    assert_eq!((status, code), (403, "insufficient_permissions"));
    assert!(message.contains("admin"), "{message}");
}

#[test]
fn exhausted_key_is_429_with_retry_after_in_whole_seconds() {
    let auth = authenticator(Some(2));
    let header = bearer(CI_KEY);
    auth.authorize(Some(&header), Scope::Inference)
        .expect("first");
    auth.authorize(Some(&header), Scope::Inference)
        .expect("second: burst equals the per-minute limit");
    let err = auth
        .authorize(Some(&header), Scope::Inference)
        .expect_err("third within the minute");
    let AuthError::RateLimited { retry_after_secs } = err else {
        panic!("expected RateLimited, got {err:?}");
    };
    // 60 s / 2 per interval, rounded up; a little time has passed since the burst.
    assert!((29..=30).contains(&retry_after_secs), "{retry_after_secs}");
    let (status, kind, code, _, retry_after) = err.openai_parts();
    assert_eq!(
        (status, kind, code, retry_after),
        (
            429,
            "rate_limit_error",
            "rate_limit_exceeded",
            Some(retry_after_secs)
        )
    );
    // Other keys have their own budget.
    auth.authorize(Some(&bearer(OPS_KEY)), Scope::Inference)
        .expect("ops is not limited by ci's budget");
}

#[test]
fn limit_refills_with_time() {
    let auth = authenticator(Some(1));
    let header = bearer(CI_KEY);
    let t0 = Instant::now();
    auth.authorize_at(Some(&header), Scope::Inference, t0)
        .expect("first");
    assert_eq!(
        auth.authorize_at(Some(&header), Scope::Inference, t0 + Duration::from_secs(1)),
        Err(AuthError::RateLimited {
            retry_after_secs: 59
        })
    );
    auth.authorize_at(
        Some(&header),
        Scope::Inference,
        t0 + Duration::from_secs(60),
    )
    .expect("a minute later");
}

#[test]
fn no_keys_means_open_mode_on_loopback_only() {
    let auth = Authenticator::new(Vec::new());
    assert!(auth.is_open());
    for header in [None, Some("Bearer whatever")] {
        let principal = auth.authorize(header, Scope::Admin).expect("open");
        assert_eq!(&*principal.key_name, OPEN_MODE_PRINCIPAL);
    }
    assert!(check_open_mode_bind("127.0.0.1:8080".parse().expect("addr"), false).is_ok());
    let err = check_open_mode_bind("0.0.0.0:8080".parse().expect("addr"), false)
        .expect_err("public bind without keys");
    assert!(
        err.contains("0.0.0.0:8080") && err.contains("auth.keys"),
        "{err}"
    );
    assert!(check_open_mode_bind("0.0.0.0:8080".parse().expect("addr"), true).is_ok());
}

#[test]
fn unset_key_variable_fails_loading_naming_the_path() {
    // A name no environment has; the real process environment is read.
    let var = format!("EDGE_GATEWAY_TEST_UNSET_{}", uuid::Uuid::new_v4().simple());
    let err = validate_api_keys(vec![raw("ops", &var, &["admin"], None)]).expect_err("unset");
    assert_eq!(err.key, "auth.keys[0].key_env");
    assert!(err.message.contains(&var), "{err}");
    assert!(err.message.contains("not set"), "{err}");
}

#[test]
fn unknown_scope_names_the_path() {
    let err = validate_api_keys_with_env(
        vec![
            raw("ci", "CI_KEY", &["inference"], None),
            raw("ops", "OPS_KEY", &["root"], None),
        ],
        env,
    )
    .expect_err("root scope");
    assert_eq!(
        err.to_string(),
        "configuration key auth.keys[1].scopes: unknown scope 'root' (expected inference or admin)"
    );
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let keys = validate_api_keys_with_env(
        vec![
            raw("ci", "CI_KEY", &["inference"], Some(5)),
            raw("ops", "OPS_KEY", &["inference", "admin"], None),
        ],
        env,
    )
    .expect("valid");
    let auth = Authenticator::new(keys.clone());
    let principal = auth
        .authorize(Some(&bearer(CI_KEY)), Scope::Inference)
        .expect("ok");
    let raw_auth = RawAuth {
        keys: vec![raw("ci", "CI_KEY", &["inference"], None)],
    };
    let outputs = [
        format!("{keys:?}"),
        format!("{keys:#?}"),
        format!("{auth:?}"),
        format!("{principal:?}"),
        format!("{raw_auth:?}"),
        format!("{:?}", AuthError::Invalid),
    ];
    let digest_hex: String = {
        use sha2::{Digest, Sha256};
        Sha256::digest(CI_KEY.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    for output in &outputs {
        for secret in [CI_KEY, OPS_KEY, &CI_KEY[6..], digest_hex.as_str()] {
            assert!(!output.contains(secret), "{output}");
        }
    }
    assert!(outputs[0].contains("REDACTED"), "{}", outputs[0]);
    assert!(
        outputs[0].contains("CI_KEY"),
        "names the variable: {}",
        outputs[0]
    );
}
