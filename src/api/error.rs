//! The one HTTP error type: every failure leaves the gateway as OpenAI's
//! `{"error": {"message", "type", "param", "code"}}` with the matching status code.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// An API failure, mapped explicitly to a status and an OpenAI error body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Body is not JSON.
    #[error("{0}")]
    MalformedJson(String),
    /// A field is missing or has a bad value.
    #[error("{message}")]
    InvalidField { param: String, message: String },
    /// A request the gateway understands but does not support.
    #[error("{message}")]
    Unsupported { param: String, message: String },
    /// Prompt plus completion do not fit the context window.
    #[error("{0}")]
    ContextLengthExceeded(String),
    /// One input of a request is longer than the endpoint accepts (`param` names it).
    #[error("{message}")]
    InputTooLong { param: String, message: String },
    #[error("The model '{0}' does not exist")]
    ModelNotFound(String),
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The client did not finish sending its body in time.
    #[error("the request body was not received within {after_ms} ms")]
    RequestTimeout { after_ms: u64 },
    #[error("the server is at capacity; retry shortly")]
    QueueFull { retry_after_secs: u64 },
    #[error("the edge model's KV cache budget is fully reserved; retry shortly")]
    MemoryFull { retry_after_secs: u64 },
    #[error("the model is still loading; retry shortly")]
    NotReady { retry_after_secs: u64 },
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("method {0} is not allowed on this endpoint")]
    MethodNotAllowed(String),
    /// Unexpected server-side failure; the message is already sanitized for clients.
    #[error("{0}")]
    Internal(String),
    /// The routing policy rejected the request.
    #[error("{message}")]
    PolicyRejected { rule_id: String, message: String },
    /// No allowed route can serve the request right now (e.g. restricted data, edge down).
    #[error("{0}")]
    RouteUnavailable(String),
    /// Missing, invalid, under-scoped or rate-limited API key.
    #[error("{}", .0.openai_parts().3)]
    Auth(crate::auth::AuthError),
    /// The review store failed or the review was not found; message already client-safe.
    #[error("{}", .0.openai_parts().3)]
    Review(crate::review::ReviewError),
    /// A cloud upstream failed; already mapped to a client-facing status and message.
    #[error("{}", .0.message)]
    Upstream(crate::upstream::ClientError),
    /// The audit log cannot take the request's decision record (fail closed).
    #[error("{0}")]
    AuditUnavailable(crate::governance::audit::AuditUnavailable),
    /// A model lifecycle operation (stage, canary, promote, rollback) was refused or failed.
    #[error("{0}")]
    Model(crate::models::RegistryError),
}

impl From<crate::models::RegistryError> for ApiError {
    fn from(e: crate::models::RegistryError) -> Self {
        use crate::models::RegistryError as R;
        match e {
            R::UnknownModel(id) => ApiError::ModelNotFound(id),
            R::Audit(a) => ApiError::AuditUnavailable(a),
            other => ApiError::Model(other),
        }
    }
}

/// Status, type, param and code of a model operation failure.
fn model_parts(
    e: &crate::models::RegistryError,
) -> (StatusCode, &'static str, Option<&'static str>, &'static str) {
    use crate::models::RegistryError as R;
    match e {
        R::UnknownModel(_) => (
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model"),
            "model_not_found",
        ),
        R::Loading(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            None,
            "model_loading",
        ),
        R::Busy { .. } => (
            StatusCode::CONFLICT,
            "invalid_request_error",
            None,
            "model_busy",
        ),
        R::NoCandidate(_) => (
            StatusCode::CONFLICT,
            "invalid_request_error",
            None,
            "no_candidate",
        ),
        R::NothingToRollBack(_) => (
            StatusCode::CONFLICT,
            "invalid_request_error",
            None,
            "nothing_to_roll_back",
        ),
        R::QualityGate { .. } => (
            StatusCode::CONFLICT,
            "invalid_request_error",
            None,
            "quality_gate_failed",
        ),
        R::InvalidPercent(_) => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("canary_percent"),
            "invalid_value",
        ),
        R::Load { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_error",
            Some("path"),
            "model_load_failed",
        ),
        R::Audit(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            None,
            "audit_unavailable",
        ),
    }
}

impl From<crate::review::ReviewError> for ApiError {
    fn from(e: crate::review::ReviewError) -> Self {
        if e.openai_parts().0 >= 500 {
            tracing::error!(error = %e, "review store failed");
            crate::telemetry::metrics::record_error("review_store");
        }
        ApiError::Review(e)
    }
}

impl From<crate::upstream::UpstreamError> for ApiError {
    fn from(e: crate::upstream::UpstreamError) -> Self {
        ApiError::Upstream(e.to_client())
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

/// OpenAI's error object.
#[derive(Serialize)]
pub struct ErrorDetail<'a> {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}

impl ApiError {
    /// Shorthand for a bad field.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidField {
            param: param.into(),
            message: message.into(),
        }
    }

    /// Shorthand for an unsupported option.
    pub fn unsupported(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Unsupported {
            param: param.into(),
            message: message.into(),
        }
    }

    /// The error object, also used for SSE error events.
    pub fn detail(&self) -> ErrorDetail<'_> {
        let (kind, param, code) = match self {
            ApiError::MalformedJson(_) => ("invalid_request_error", None, Some("invalid_json")),
            ApiError::InvalidField { param, .. } => (
                "invalid_request_error",
                Some(param.as_str()),
                Some("invalid_value"),
            ),
            ApiError::Unsupported { param, .. } => (
                "invalid_request_error",
                Some(param.as_str()),
                Some("unsupported_parameter"),
            ),
            ApiError::ContextLengthExceeded(_) => (
                "invalid_request_error",
                Some("messages"),
                Some("context_length_exceeded"),
            ),
            ApiError::InputTooLong { param, .. } => (
                "invalid_request_error",
                Some(param.as_str()),
                Some("context_length_exceeded"),
            ),
            ApiError::ModelNotFound(_) => (
                "invalid_request_error",
                Some("model"),
                Some("model_not_found"),
            ),
            ApiError::PayloadTooLarge { .. } => {
                ("invalid_request_error", None, Some("request_too_large"))
            }
            ApiError::RequestTimeout { .. } => {
                ("invalid_request_error", None, Some("request_timeout"))
            }
            ApiError::QueueFull { .. } => ("rate_limit_error", None, Some("queue_full")),
            ApiError::MemoryFull { .. } => ("rate_limit_error", None, Some("kv_budget_exhausted")),
            ApiError::NotReady { .. } => ("server_error", None, Some("model_loading")),
            ApiError::RouteNotFound { .. } => ("invalid_request_error", None, Some("unknown_url")),
            ApiError::MethodNotAllowed(_) => {
                ("invalid_request_error", None, Some("method_not_allowed"))
            }
            ApiError::Internal(_) => ("server_error", None, Some("internal_error")),
            ApiError::Upstream(c) => (c.kind, c.param.as_deref(), Some(c.code.as_str())),
            ApiError::PolicyRejected { .. } => {
                ("invalid_request_error", None, Some("policy_rejected"))
            }
            ApiError::RouteUnavailable(_) => ("server_error", None, Some("route_unavailable")),
            ApiError::Review(e) => {
                let (_, kind, code, _, _) = e.openai_parts();
                (kind, None, Some(code))
            }
            ApiError::Auth(e) => {
                let (_, kind, code, _, _) = e.openai_parts();
                (kind, None, Some(code))
            }
            ApiError::AuditUnavailable(_) => ("server_error", None, Some("audit_unavailable")),
            ApiError::Model(e) => {
                let (_, kind, param, code) = model_parts(e);
                (kind, param, Some(code))
            }
        };
        ErrorDetail {
            message: self.to_string(),
            kind,
            param,
            code,
        }
    }

    /// `{"error": {...}}` as JSON text (for SSE error events).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&ErrorBody { error: self.detail() })
            .unwrap_or_else(|_| r#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#.into())
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::QueueFull { retry_after_secs }
            | ApiError::MemoryFull { retry_after_secs }
            | ApiError::NotReady { retry_after_secs } => Some(*retry_after_secs),
            ApiError::Upstream(c) => c.retry_after_secs,
            ApiError::RouteUnavailable(_) | ApiError::AuditUnavailable(_) => Some(5),
            ApiError::Model(e) if model_parts(e).0 == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            ApiError::Review(e) => e.openai_parts().4,
            ApiError::Auth(e) => e.openai_parts().4,
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_)
            | ApiError::InvalidField { .. }
            | ApiError::Unsupported { .. }
            | ApiError::ContextLengthExceeded(_)
            | ApiError::InputTooLong { .. } => StatusCode::BAD_REQUEST,
            ApiError::ModelNotFound(_) | ApiError::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::QueueFull { .. } | ApiError::MemoryFull { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Upstream(c) => {
                StatusCode::from_u16(c.status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            ApiError::PolicyRejected { .. } => StatusCode::FORBIDDEN,
            ApiError::RouteUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Review(e) => StatusCode::from_u16(e.openai_parts().0)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            ApiError::Auth(e) => {
                StatusCode::from_u16(e.openai_parts().0).unwrap_or(StatusCode::UNAUTHORIZED)
            }
            ApiError::AuditUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Model(e) => model_parts(e).0,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response
            .content_type("application/json")
            .body(self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_field_names_param() {
        let e = ApiError::invalid("temperature", "must be between 0 and 2");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).expect("json");
        assert_eq!(v["error"]["param"], "temperature");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(e.status_code(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn queue_full_carries_retry_after() {
        let e = ApiError::QueueFull {
            retry_after_secs: 2,
        };
        let r = e.error_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            r.headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("2")
        );
    }
}
