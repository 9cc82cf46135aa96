//! Why a request was refused by authentication, and how it leaves the gateway (status, OpenAI
//! error type and code, `Retry-After`).

use super::Scope;

/// A refused request. Messages never contain the presented key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header, or one without a key.
    #[error("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")]
    Missing,
    /// Not a bearer token, or not a configured key.
    #[error("Incorrect API key provided.")]
    Invalid,
    /// A valid key without the scope this endpoint needs.
    #[error("This API key does not have the '{scope}' scope needed for this endpoint.")]
    Forbidden { scope: Scope },
    /// The key used up its requests per minute.
    #[error("Rate limit reached for this API key; retry in {retry_after_secs} s.")]
    RateLimited { retry_after_secs: u64 },
}

impl AuthError {
    /// `(status, type, code, message, retry_after_secs)` for the gateway's OpenAI error body.
    /// The types and codes are the ones OpenAI clients already handle.
    pub fn openai_parts(&self) -> (u16, &'static str, &'static str, String, Option<u64>) {
        let message = self.to_string();
        match self {
            AuthError::Missing => (
                401,
                "invalid_request_error",
                "missing_api_key",
                message,
                None,
            ),
            AuthError::Invalid => (
                401,
                "invalid_request_error",
                "invalid_api_key",
                message,
                None,
            ),
            AuthError::Forbidden { .. } => (
                403,
                "invalid_request_error",
                "insufficient_permissions",
                message,
                None,
            ),
            AuthError::RateLimited { retry_after_secs } => (
                429,
                "rate_limit_error",
                "rate_limit_exceeded",
                message,
                Some(*retry_after_secs),
            ),
        }
    }

    /// Low-cardinality label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_key",
            AuthError::Invalid => "invalid_key",
            AuthError::Forbidden { .. } => "forbidden",
            AuthError::RateLimited { .. } => "rate_limited",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_openai() {
        assert_eq!(AuthError::Missing.openai_parts().0, 401);
        assert_eq!(AuthError::Invalid.openai_parts().0, 401);
        let forbidden = AuthError::Forbidden {
            scope: Scope::Admin,
        };
        let (status, _, code, message, retry) = forbidden.openai_parts();
        assert_eq!(
            (status, code, retry),
            (403, "insufficient_permissions", None)
        );
        assert!(message.contains("'admin'"), "{message}");
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let (status, kind, code, _, retry) = AuthError::RateLimited {
            retry_after_secs: 7,
        }
        .openai_parts();
        assert_eq!(
            (status, kind, code, retry),
            (429, "rate_limit_error", "rate_limit_exceeded", Some(7))
        );
    }
}
