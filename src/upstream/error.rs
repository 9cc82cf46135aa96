//! Upstream failures ([`UpstreamError`]) and how each one is presented to our own client
//! ([`ClientError`]: HTTP status plus OpenAI error object), with secrets and upstream details
//! kept out of what the client sees.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

/// Longest plain-text excerpt of a non-JSON error body kept (in characters) for logs.
const ERROR_EXCERPT_CHARS: usize = 512;

/// Which deadline expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutStage {
    /// TCP/TLS connection setup.
    Connect,
    /// From sending the request to the response headers.
    FirstByte,
    /// The whole call's budget (`total_timeout_ms`).
    Total,
    /// Silence between two chunks of a stream.
    Idle,
}

impl fmt::Display for TimeoutStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutStage::Connect => "connect",
            TimeoutStage::FirstByte => "first-byte",
            TimeoutStage::Total => "total",
            TimeoutStage::Idle => "stream idle",
        })
    }
}

/// Why a call to a cloud upstream failed. `Display` is for logs: it may carry upstream
/// details but never the API key (upstream text is scrubbed when the error is built).
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {upstream}: cannot connect: {message}")]
    Connect { upstream: Arc<str>, message: String },
    /// The connection broke after it was established but before response headers arrived.
    #[error("upstream {upstream}: connection failed before a response: {message}")]
    Transport { upstream: Arc<str>, message: String },
    #[error("upstream {upstream}: {stage} timeout after {} ms", after.as_millis())]
    Timeout {
        upstream: Arc<str>,
        stage: TimeoutStage,
        after: Duration,
    },
    /// A non-success HTTP status. `body` is the upstream's JSON (normally OpenAI's
    /// `{"error": {...}}`) when it sent JSON; `message` is its error message or a text excerpt.
    #[error("upstream {upstream} answered HTTP {code}: {message}")]
    Status {
        upstream: Arc<str>,
        code: u16,
        message: String,
        body: Option<Value>,
        retry_after: Option<Duration>,
    },
    /// The breaker is open (or a half-open trial is running); nothing was sent.
    #[error("upstream {upstream}: circuit open")]
    CircuitOpen {
        upstream: Arc<str>,
        retry_after: Duration,
    },
    /// A success status with a body that is not what the protocol promises.
    #[error("upstream {upstream}: invalid response: {message}")]
    InvalidResponse { upstream: Arc<str>, message: String },
    /// The stream ended cleanly but without `data: [DONE]`.
    #[error("upstream {upstream}: stream ended without [DONE]")]
    StreamTruncated { upstream: Arc<str> },
    /// The connection failed while a stream was being relayed.
    #[error("upstream {upstream}: stream interrupted: {message}")]
    StreamInterrupted { upstream: Arc<str>, message: String },
    /// The request body cannot be sent (not a JSON object, no `model`).
    #[error("upstream {upstream}: invalid request: {message}")]
    InvalidRequest {
        upstream: Arc<str>,
        param: Option<&'static str>,
        message: String,
    },
    /// `model_map` is set and has neither this model nor `*`.
    #[error("upstream {upstream}: model '{model}' is not mapped")]
    ModelNotMapped { upstream: Arc<str>, model: String },
}

/// What our client receives for an [`UpstreamError`]: status, OpenAI error fields and
/// `Retry-After`. Build the HTTP response (or SSE error event) from this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub status: u16,
    /// OpenAI's `type` (`invalid_request_error`, `rate_limit_error`, `server_error`).
    pub kind: &'static str,
    pub code: String,
    pub param: Option<String>,
    pub message: String,
    /// Seconds for a `Retry-After` header (429 and 503).
    pub retry_after_secs: Option<u64>,
}

impl ClientError {
    /// `{"error": {"message", "type", "param", "code"}}`.
    pub fn to_json(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }

    /// The body as text, also the payload of an SSE error event.
    pub fn to_json_string(&self) -> String {
        self.to_json().to_string()
    }
}

/// An [`UpstreamError`] as a log line shows it: see [`UpstreamError::for_log`].
pub struct LogSafe<'a>(&'a UpstreamError);

impl fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            UpstreamError::Status {
                upstream,
                code,
                message,
                body,
                ..
            } if !crate::telemetry::logging::log_prompts() => {
                // The upstream's type and code are identifiers, safe to keep.
                let field = |name: &str| {
                    body.as_ref()
                        .and_then(|b| b.pointer(&format!("/error/{name}")))
                        .and_then(Value::as_str)
                        .unwrap_or("-")
                        .chars()
                        .take(64)
                        .collect::<String>()
                };
                write!(
                    f,
                    "upstream {upstream} answered HTTP {code} (type {}, code {}); its message ({} bytes) is not logged because it may quote the request (logging.log_prompts)",
                    field("type"),
                    field("code"),
                    message.len()
                )
            }
            other => fmt::Display::fmt(other, f),
        }
    }
}

impl UpstreamError {
    /// The error for a log line: its `Display`, except that an upstream's own error message is
    /// left out unless `logging.log_prompts` is on — validation errors of OpenAI-compatible
    /// servers often quote the offending input, i.e. the user's prompt. (API keys are scrubbed
    /// from upstream text whatever this says.)
    pub fn for_log(&self) -> LogSafe<'_> {
        LogSafe(self)
    }

    /// The upstream this error is about.
    pub fn upstream(&self) -> &str {
        match self {
            UpstreamError::Connect { upstream, .. }
            | UpstreamError::Transport { upstream, .. }
            | UpstreamError::Timeout { upstream, .. }
            | UpstreamError::Status { upstream, .. }
            | UpstreamError::CircuitOpen { upstream, .. }
            | UpstreamError::InvalidResponse { upstream, .. }
            | UpstreamError::StreamTruncated { upstream }
            | UpstreamError::StreamInterrupted { upstream, .. }
            | UpstreamError::InvalidRequest { upstream, .. }
            | UpstreamError::ModelNotMapped { upstream, .. } => upstream,
        }
    }

    /// Low-cardinality label for `edge_gateway_upstream_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::Transport { .. } => "transport",
            UpstreamError::Timeout { stage, .. } => match stage {
                TimeoutStage::Connect => "timeout_connect",
                TimeoutStage::FirstByte => "timeout_first_byte",
                TimeoutStage::Total => "timeout_total",
                TimeoutStage::Idle => "timeout_idle",
            },
            UpstreamError::Status { code: 429, .. } => "rate_limited",
            UpstreamError::Status { code, .. } if *code >= 500 => "server_error",
            UpstreamError::Status { .. } => "client_error",
            UpstreamError::CircuitOpen { .. } => "circuit_open",
            UpstreamError::InvalidResponse { .. } => "invalid_response",
            UpstreamError::StreamTruncated { .. } => "stream_truncated",
            UpstreamError::StreamInterrupted { .. } => "stream_interrupted",
            UpstreamError::InvalidRequest { .. } => "invalid_request",
            UpstreamError::ModelNotMapped { .. } => "model_not_mapped",
        }
    }

    /// Whether another attempt may succeed: connection failures, timeouts before a response,
    /// 429 (except an exhausted quota) and 5xx. Only ever asked before anything was relayed.
    pub fn is_retryable(&self) -> bool {
        match self {
            UpstreamError::Connect { .. } | UpstreamError::Transport { .. } => true,
            UpstreamError::Timeout { stage, .. } => {
                matches!(stage, TimeoutStage::Connect | TimeoutStage::FirstByte)
            }
            UpstreamError::Status { code: 429, .. } => !self.is_quota_exhausted(),
            UpstreamError::Status { code, .. } => *code >= 500,
            UpstreamError::CircuitOpen { .. }
            | UpstreamError::InvalidResponse { .. }
            | UpstreamError::StreamTruncated { .. }
            | UpstreamError::StreamInterrupted { .. }
            | UpstreamError::InvalidRequest { .. }
            | UpstreamError::ModelNotMapped { .. } => false,
        }
    }

    /// Whether this counts against the circuit breaker: faults of the upstream itself, not
    /// requests it rightly refused (4xx) nor failures that never reached it.
    pub fn is_upstream_fault(&self) -> bool {
        match self {
            UpstreamError::Connect { .. }
            | UpstreamError::Transport { .. }
            | UpstreamError::Timeout { .. }
            | UpstreamError::InvalidResponse { .. }
            | UpstreamError::StreamTruncated { .. }
            | UpstreamError::StreamInterrupted { .. } => true,
            UpstreamError::Status { code, .. } => *code >= 500,
            UpstreamError::CircuitOpen { .. }
            | UpstreamError::InvalidRequest { .. }
            | UpstreamError::ModelNotMapped { .. } => false,
        }
    }

    /// The `Status` error for an upstream's non-success answer: `text` is its (scrubbed) body,
    /// kept as JSON when it is JSON, with the error message pulled out of OpenAI's shape or else
    /// a text excerpt. Pure, so the handling of hostile error bodies can be fuzzed.
    pub fn from_status(
        upstream: Arc<str>,
        code: u16,
        text: &str,
        retry_after: Option<Duration>,
    ) -> Self {
        let body: Option<Value> = serde_json::from_str(text).ok();
        let message = body
            .as_ref()
            .and_then(|b| b.pointer("/error/message").or_else(|| b.get("message")))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| text.chars().take(ERROR_EXCERPT_CHARS).collect());
        UpstreamError::Status {
            upstream,
            code,
            message,
            body,
            retry_after,
        }
    }

    /// How long the upstream (or our breaker) asked callers to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Status { retry_after, .. } => *retry_after,
            UpstreamError::CircuitOpen { retry_after, .. } => Some(*retry_after),
            UpstreamError::Connect { .. }
            | UpstreamError::Transport { .. }
            | UpstreamError::Timeout { .. }
            | UpstreamError::InvalidResponse { .. }
            | UpstreamError::StreamTruncated { .. }
            | UpstreamError::StreamInterrupted { .. }
            | UpstreamError::InvalidRequest { .. }
            | UpstreamError::ModelNotMapped { .. } => None,
        }
    }

    /// The status and OpenAI error our client gets. Upstream messages are passed on only for
    /// the client's own mistakes (400/404-model/413/422 and other 4xx); for everything that is
    /// the gateway's or the upstream's problem the message is ours, so upstream internals,
    /// account ids and key fragments stay out.
    pub fn to_client(&self) -> ClientError {
        let name = self.upstream();
        match self {
            UpstreamError::Connect { .. } | UpstreamError::Transport { .. } => server(
                502,
                "upstream_unavailable",
                format!("the upstream '{name}' could not be reached"),
            ),
            UpstreamError::Timeout { stage, .. } => server(
                504,
                "upstream_timeout",
                format!("the upstream '{name}' did not answer in time ({stage} timeout)"),
            ),
            UpstreamError::Status { code, .. } => self.status_to_client(*code),
            UpstreamError::CircuitOpen { retry_after, .. } => ClientError {
                retry_after_secs: Some(ceil_secs(*retry_after)),
                ..server(
                    503,
                    "upstream_circuit_open",
                    format!("the upstream '{name}' is failing; requests to it are paused"),
                )
            },
            UpstreamError::InvalidResponse { .. } => server(
                502,
                "upstream_invalid_response",
                format!("the upstream '{name}' sent an invalid response"),
            ),
            UpstreamError::StreamTruncated { .. } => server(
                502,
                "upstream_stream_truncated",
                format!("the upstream '{name}' ended the stream before it was complete"),
            ),
            UpstreamError::StreamInterrupted { .. } => server(
                502,
                "upstream_stream_interrupted",
                format!("the connection to the upstream '{name}' broke during the stream"),
            ),
            UpstreamError::InvalidRequest { param, message, .. } => ClientError {
                status: 400,
                kind: "invalid_request_error",
                code: "invalid_value".into(),
                param: param.map(str::to_owned),
                message: message.clone(),
                retry_after_secs: None,
            },
            UpstreamError::ModelNotMapped { model, .. } => ClientError {
                status: 404,
                kind: "invalid_request_error",
                code: "model_not_found".into(),
                param: Some("model".into()),
                message: format!("The model '{model}' does not exist"),
                retry_after_secs: None,
            },
        }
    }

    fn status_to_client(&self, code: u16) -> ClientError {
        let name = self.upstream();
        let detail = UpstreamDetail::of(self);
        match code {
            401 | 403 => server(
                502,
                "upstream_auth_failed",
                format!("the upstream '{name}' rejected the gateway's credentials"),
            ),
            402 => server(
                502,
                "upstream_quota_exceeded",
                format!("the gateway's account at the upstream '{name}' cannot pay for requests"),
            ),
            429 if self.is_quota_exhausted() => server(
                502,
                "upstream_quota_exceeded",
                format!("the gateway's quota at the upstream '{name}' is exhausted"),
            ),
            429 => ClientError {
                status: 429,
                kind: "rate_limit_error",
                code: "rate_limit_exceeded".into(),
                param: None,
                message: format!("the upstream '{name}' is rate limiting requests; retry later"),
                retry_after_secs: Some(self.retry_after().map_or(1, ceil_secs)),
            },
            404 if detail.code.as_deref() == Some("model_not_found") => ClientError {
                status: 404,
                kind: "invalid_request_error",
                code: "model_not_found".into(),
                param: Some("model".into()),
                message: detail.message,
                retry_after_secs: None,
            },
            // Any other 404 means base_url points at the wrong place: our configuration.
            404 => server(
                502,
                "upstream_error",
                format!("the upstream '{name}' has no such endpoint (HTTP 404)"),
            ),
            408 => server(
                504,
                "upstream_timeout",
                format!("the upstream '{name}' timed out reading the request"),
            ),
            400..=499 => ClientError {
                // 422 is how some OpenAI-compatible servers say 400.
                status: if code == 422 { 400 } else { code },
                kind: "invalid_request_error",
                code: detail.code.unwrap_or_else(|| "invalid_request".into()),
                param: detail.param,
                message: detail.message,
                retry_after_secs: None,
            },
            500..=599 => server(
                502,
                "upstream_error",
                format!("the upstream '{name}' failed (HTTP {code})"),
            ),
            _ => server(
                502,
                "upstream_invalid_response",
                format!("the upstream '{name}' answered with unexpected HTTP {code}"),
            ),
        }
    }

    /// OpenAI answers 429 with `code: insufficient_quota` when the account is out of credit:
    /// no retry helps, and it is the operator's problem, not the client's.
    fn is_quota_exhausted(&self) -> bool {
        matches!(self, UpstreamError::Status { code: 429, .. })
            && UpstreamDetail::of(self).code.as_deref() == Some("insufficient_quota")
    }
}

/// The fields of an upstream's OpenAI error body worth passing on.
struct UpstreamDetail {
    message: String,
    code: Option<String>,
    param: Option<String>,
}

impl UpstreamDetail {
    fn of(error: &UpstreamError) -> Self {
        let UpstreamError::Status { message, body, .. } = error else {
            return Self {
                message: error.to_string(),
                code: None,
                param: None,
            };
        };
        let object = body.as_ref().and_then(|b| b.get("error"));
        let text = |field: &str| match object.and_then(|o| o.get(field)) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        Self {
            message: message.clone(),
            code: text("code"),
            param: text("param"),
        }
    }
}

fn server(status: u16, code: &str, message: String) -> ClientError {
    ClientError {
        status,
        kind: "server_error",
        code: code.to_owned(),
        param: None,
        message,
        retry_after_secs: None,
    }
}

/// Whole seconds for `Retry-After`, rounded up and at least 1 (0 would invite a hot loop).
fn ceil_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_form_leaves_out_upstream_messages_that_may_quote_the_prompt() {
        let body = r#"{"error":{"message":"bad input: my secret prompt","type":"invalid_request_error","code":"bad"}}"#;
        let e = UpstreamError::from_status("cloud".into(), 400, body, None);
        assert!(
            e.to_string().contains("my secret prompt"),
            "Display keeps it for clients"
        );
        let logged = e.for_log().to_string();
        assert!(!logged.contains("secret prompt"), "{logged}");
        assert!(
            logged.contains("HTTP 400") && logged.contains("invalid_request_error"),
            "{logged}"
        );
        let timeout = UpstreamError::Timeout {
            upstream: "cloud".into(),
            stage: TimeoutStage::FirstByte,
            after: Duration::from_millis(5),
        };
        assert_eq!(timeout.for_log().to_string(), timeout.to_string());
    }

    fn name() -> Arc<str> {
        Arc::from("cloud")
    }

    fn status(code: u16, body: Value) -> UpstreamError {
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_owned();
        UpstreamError::Status {
            upstream: name(),
            code,
            message,
            body: Some(body),
            retry_after: None,
        }
    }

    fn openai_error(message: &str, code: Option<&str>, param: Option<&str>) -> Value {
        json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}})
    }

    #[test]
    fn bad_request_passes_the_upstream_message_param_and_code() {
        let e = status(
            400,
            openai_error(
                "temperature too high",
                Some("invalid_value"),
                Some("temperature"),
            ),
        );
        let c = e.to_client();
        assert_eq!(c.status, 400);
        assert_eq!(c.message, "temperature too high");
        assert_eq!(c.param.as_deref(), Some("temperature"));
        assert_eq!(c.code, "invalid_value");
        assert!(!e.is_retryable());
        assert!(!e.is_upstream_fault());
        let v = c.to_json();
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn auth_failures_are_our_problem_and_hide_the_upstream_message() {
        for code in [401, 403] {
            let e = status(
                code,
                openai_error("Incorrect API key provided: sk-ab***yz", None, None),
            );
            let c = e.to_client();
            assert_eq!(c.status, 502);
            assert_eq!(c.code, "upstream_auth_failed");
            assert!(!c.message.contains("sk-"), "{}", c.message);
        }
    }

    #[test]
    fn rate_limit_is_retryable_and_carries_retry_after() {
        let e = UpstreamError::Status {
            upstream: name(),
            code: 429,
            message: "slow down".into(),
            body: None,
            retry_after: Some(Duration::from_millis(1500)),
        };
        assert!(e.is_retryable());
        assert!(!e.is_upstream_fault());
        let c = e.to_client();
        assert_eq!((c.status, c.retry_after_secs), (429, Some(2)));
        assert_eq!(c.kind, "rate_limit_error");
    }

    #[test]
    fn exhausted_quota_is_not_retried_and_maps_to_502() {
        let e = status(
            429,
            openai_error("You exceeded your quota", Some("insufficient_quota"), None),
        );
        assert!(!e.is_retryable());
        assert_eq!(e.to_client().status, 502);
        assert_eq!(e.to_client().code, "upstream_quota_exceeded");
    }

    #[test]
    fn model_not_found_passes_through_other_404_is_config() {
        let e = status(
            404,
            openai_error(
                "The model 'x' does not exist",
                Some("model_not_found"),
                None,
            ),
        );
        let c = e.to_client();
        assert_eq!((c.status, c.code.as_str()), (404, "model_not_found"));
        let e = status(404, json!({"detail": "Not Found"}));
        assert_eq!(e.to_client().status, 502);
    }

    #[test]
    fn server_errors_are_retryable_faults_with_sanitized_messages() {
        let e = status(503, openai_error("node gpu-17 out of memory", None, None));
        assert!(e.is_retryable());
        assert!(e.is_upstream_fault());
        let c = e.to_client();
        assert_eq!(c.status, 502);
        assert!(!c.message.contains("gpu-17"));
    }

    #[test]
    fn transport_and_timeout_mapping() {
        let connect = UpstreamError::Connect {
            upstream: name(),
            message: "refused".into(),
        };
        assert_eq!(connect.to_client().status, 502);
        assert!(connect.is_retryable());
        let first_byte = UpstreamError::Timeout {
            upstream: name(),
            stage: TimeoutStage::FirstByte,
            after: Duration::from_millis(5),
        };
        assert_eq!(first_byte.to_client().status, 504);
        assert!(first_byte.is_retryable());
        let total = UpstreamError::Timeout {
            upstream: name(),
            stage: TimeoutStage::Total,
            after: Duration::from_millis(5),
        };
        assert!(!total.is_retryable());
        assert!(total.is_upstream_fault());
    }

    #[test]
    fn circuit_open_is_503_with_retry_after_rounded_up() {
        let e = UpstreamError::CircuitOpen {
            upstream: name(),
            retry_after: Duration::from_millis(10),
        };
        let c = e.to_client();
        assert_eq!((c.status, c.retry_after_secs), (503, Some(1)));
        assert!(!e.is_upstream_fault());
    }

    #[test]
    fn stream_failures_are_faults_but_never_retried() {
        for e in [
            UpstreamError::StreamTruncated { upstream: name() },
            UpstreamError::StreamInterrupted {
                upstream: name(),
                message: "reset".into(),
            },
        ] {
            assert!(!e.is_retryable());
            assert!(e.is_upstream_fault());
            assert_eq!(e.to_client().status, 502);
        }
    }

    #[test]
    fn unmapped_model_is_model_not_found() {
        let e = UpstreamError::ModelNotMapped {
            upstream: name(),
            model: "m".into(),
        };
        let c = e.to_client();
        assert_eq!((c.status, c.param.as_deref()), (404, Some("model")));
    }
}
