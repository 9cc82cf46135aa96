//! Checks a request's `Authorization` header against the configured keys: which key (constant
//! time), whether it has the endpoint's scope, and whether its rate limit allows one more.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::config::{ApiKeySettings, KeyDigest, Scope, ScopeSet};
use super::metrics_names::record_rejection;
use super::rate_limit::{retry_after_secs, Gcra};
use super::AuthError;

/// Key name of every request in open mode (no keys configured).
pub const OPEN_MODE_PRINCIPAL: &str = "anonymous";

/// The caller a request was authorized as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `auth.keys[i].name`, or [`OPEN_MODE_PRINCIPAL`]. Shared, so authorizing allocates nothing.
    pub key_name: Arc<str>,
}

struct Entry {
    name: Arc<str>,
    digest: KeyDigest,
    scopes: ScopeSet,
    limiter: Option<Gcra>,
}

/// Authorizes requests. Built once at startup; `Send + Sync`, share it in `Arc` or app data.
pub struct Authenticator {
    keys: Vec<Entry>,
    anonymous: Arc<str>,
    /// Zero of the rate limiters' clocks.
    epoch: Instant,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names and scopes only: digests are not secrets, but there is no reason to print them.
        f.debug_struct("Authenticator")
            .field(
                "keys",
                &self
                    .keys
                    .iter()
                    .map(|k| (&*k.name, k.scopes))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// One entry per configured key; no keys means open mode.
    pub fn new(keys: Vec<ApiKeySettings>) -> Self {
        let keys = keys
            .into_iter()
            .map(|k| Entry {
                name: Arc::from(k.name),
                digest: k.digest,
                scopes: k.scopes,
                limiter: k.requests_per_minute.map(Gcra::per_minute),
            })
            .collect();
        Self {
            keys,
            anonymous: Arc::from(OPEN_MODE_PRINCIPAL),
            epoch: Instant::now(),
        }
    }

    /// No keys are configured: every request is allowed as [`OPEN_MODE_PRINCIPAL`].
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// Authorizes a request needing `scope`, given its `Authorization` header value (`None`
    /// when absent). Takes one request from the key's rate limit when it succeeds.
    pub fn authorize(
        &self,
        authorization_header: Option<&str>,
        scope: Scope,
    ) -> Result<Principal, AuthError> {
        self.authorize_at(authorization_header, scope, Instant::now())
    }

    /// Like [`Authenticator::authorize`] at a given time (tests; `now` must not go backwards
    /// by much, or the limiter treats it as the epoch).
    pub fn authorize_at(
        &self,
        authorization_header: Option<&str>,
        scope: Scope,
        now: Instant,
    ) -> Result<Principal, AuthError> {
        let result = self.check(authorization_header, scope, now);
        if let Err(e) = &result {
            record_rejection(e.reason());
        }
        result
    }

    fn check(
        &self,
        authorization_header: Option<&str>,
        scope: Scope,
        now: Instant,
    ) -> Result<Principal, AuthError> {
        if self.is_open() {
            return Ok(Principal {
                key_name: Arc::clone(&self.anonymous),
            });
        }
        let presented = bearer_token(authorization_header)?;
        let Some(entry) = self.find(&KeyDigest::of(presented)) else {
            return Err(AuthError::Invalid);
        };
        // Scope before the limit: a refused request must not use up the key's budget.
        if !entry.scopes.contains(scope) {
            tracing::debug!(key = %entry.name, %scope, "API key lacks scope");
            return Err(AuthError::Forbidden { scope });
        }
        if let Some(limiter) = &entry.limiter {
            let now_ns = u64::try_from(now.saturating_duration_since(self.epoch).as_nanos())
                .unwrap_or(u64::MAX);
            limiter.check(now_ns).map_err(|wait_ns| {
                tracing::debug!(key = %entry.name, "API key rate limited");
                AuthError::RateLimited {
                    retry_after_secs: retry_after_secs(wait_ns),
                }
            })?;
        }
        Ok(Principal {
            key_name: Arc::clone(&entry.name),
        })
    }

    /// The key whose digest equals `digest`. Every configured digest is compared in full, in
    /// constant time, whichever matches: the time taken depends only on how many keys there
    /// are, never on how close the presented key came to one.
    fn find(&self, digest: &KeyDigest) -> Option<&Entry> {
        // Index + 1 of the match, 0 for none; selected without branching on the comparison.
        let mut found: u32 = 0;
        for (index, entry) in self.keys.iter().enumerate() {
            let candidate = u32::try_from(index + 1).unwrap_or(u32::MAX);
            found.conditional_assign(&candidate, entry.digest.ct_eq(digest));
        }
        let index = usize::try_from(found).ok()?.checked_sub(1)?;
        self.keys.get(index)
    }
}

/// The key of `Authorization: Bearer <key>`; the scheme is case-insensitive (RFC 9110 §11.1).
fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let Some(value) = header.map(str::trim).filter(|v| !v.is_empty()) else {
        return Err(AuthError::Missing);
    };
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Invalid);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

/// Refuses to serve without keys on an address other machines can reach: open mode is for
/// local development and sidecars on loopback only. `Ok` when keys are configured or `listen`
/// is a loopback address.
pub fn check_open_mode_bind(listen: SocketAddr, keys_configured: bool) -> Result<(), String> {
    // `::ffff:127.0.0.1` is loopback too; `to_canonical` unwraps the mapped IPv4 address.
    if keys_configured || listen.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "server.listen is {listen}, which other machines can reach, but no API keys are \
         configured (auth.keys): the gateway would serve anyone. Configure auth.keys, or listen \
         on a loopback address such as 127.0.0.1:{port} or [::1]:{port}",
        port = listen.port()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;
    use std::time::Duration;

    fn key(name: &str, secret: &str, scopes: &[Scope], rpm: Option<u32>) -> ApiKeySettings {
        ApiKeySettings {
            name: name.into(),
            key_env: format!("{}_KEY", name.to_uppercase()),
            digest: KeyDigest::of(secret),
            scopes: ScopeSet::of(scopes),
            requests_per_minute: rpm.and_then(NonZeroU32::new),
        }
    }

    #[test]
    fn authenticator_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Authenticator>();
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_space_tolerant() {
        for header in [
            "Bearer k",
            "bearer k",
            "BEARER k",
            "Bearer   k ",
            "Bearer\tk",
        ] {
            assert_eq!(bearer_token(Some(header)), Ok("k"), "{header:?}");
        }
    }

    #[test]
    fn header_without_a_key_is_missing_and_other_schemes_invalid() {
        for header in [
            None,
            Some(""),
            Some("   "),
            Some("Bearer"),
            Some("Bearer   "),
        ] {
            assert_eq!(bearer_token(header), Err(AuthError::Missing), "{header:?}");
        }
        for header in ["Basic dXNlcjpwYXNz", "Token k", "k"] {
            assert_eq!(
                bearer_token(Some(header)),
                Err(AuthError::Invalid),
                "{header}"
            );
        }
    }

    #[test]
    fn find_picks_the_matching_key_among_many() {
        let auth = Authenticator::new(
            (0..5)
                .map(|i| {
                    key(
                        &format!("k{i}"),
                        &format!("secret-{i}-0123456789"),
                        &[Scope::Inference],
                        None,
                    )
                })
                .collect(),
        );
        for i in 0..5 {
            let found = auth
                .find(&KeyDigest::of(&format!("secret-{i}-0123456789")))
                .expect("found");
            assert_eq!(&*found.name, format!("k{i}"));
        }
        assert!(auth.find(&KeyDigest::of("secret-5-0123456789")).is_none());
    }

    #[test]
    fn rate_limit_refills_over_time() {
        let auth = Authenticator::new(vec![key(
            "ci",
            "sk-ci-0123456789abcdef",
            &[Scope::Inference],
            Some(2),
        )]);
        let header = Some("Bearer sk-ci-0123456789abcdef");
        let t0 = Instant::now();
        auth.authorize_at(header, Scope::Inference, t0)
            .expect("first");
        auth.authorize_at(header, Scope::Inference, t0)
            .expect("second (burst of 2)");
        assert_eq!(
            auth.authorize_at(header, Scope::Inference, t0),
            Err(AuthError::RateLimited {
                retry_after_secs: 30
            })
        );
        let later = t0 + Duration::from_secs(30);
        auth.authorize_at(header, Scope::Inference, later)
            .expect("one refilled after 60/2 s");
    }

    #[test]
    fn forbidden_requests_do_not_use_the_budget() {
        let auth = Authenticator::new(vec![key(
            "ci",
            "sk-ci-0123456789abcdef",
            &[Scope::Inference],
            Some(1),
        )]);
        let header = Some("Bearer sk-ci-0123456789abcdef");
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(
                auth.authorize_at(header, Scope::Admin, t0),
                Err(AuthError::Forbidden {
                    scope: Scope::Admin
                })
            );
        }
        auth.authorize_at(header, Scope::Inference, t0)
            .expect("budget intact");
    }

    #[test]
    fn open_mode_bind_rules() {
        let ok = |s: &str| check_open_mode_bind(s.parse().expect("addr"), false);
        assert!(ok("127.0.0.1:8080").is_ok());
        assert!(ok("127.8.9.10:8080").is_ok());
        assert!(ok("[::1]:8080").is_ok());
        assert!(ok("[::ffff:127.0.0.1]:8080").is_ok());
        for addr in ["0.0.0.0:8080", "[::]:8080", "10.0.0.5:8080"] {
            let err = ok(addr).expect_err(addr);
            assert!(err.contains("auth.keys") && err.contains(addr), "{err}");
        }
        assert!(check_open_mode_bind("0.0.0.0:8080".parse().expect("addr"), true).is_ok());
    }
}
