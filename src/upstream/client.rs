//! [`UpstreamClient`]: one cloud upstream's HTTP client. Rewrites `model`, authenticates,
//! retries with backoff before any byte reaches our client, guards the upstream with a circuit
//! breaker, and relays SSE streams event by event as they arrive.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Url;
use serde_json::Value;

use super::circuit::{Admission, CircuitBreaker, CircuitState, Transition};
use super::config::{UpstreamConfigError, UpstreamSettings, WILDCARD_MODEL};
use super::connections::Connections;
use super::error::{TimeoutStage, UpstreamError};
use super::metrics_names as m;
use super::retry;
use super::sse::{SseEvent, SseParser};

/// Largest non-streaming response body accepted (a completion is far smaller).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Largest error body kept; only its message is used.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Pooled connections are dropped after this idle time, below the usual 60–120 s server and
/// load-balancer idle limits, so we rarely write to a connection the other side has closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// Response header with the upstream's id for the request, kept for log correlation.
const REQUEST_ID_HEADER: &str = "x-request-id";

/// The two OpenAI surfaces an upstream serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST {base_url}/chat/completions`
    ChatCompletions,
    /// `POST {base_url}/completions`
    Completions,
}

/// A successful upstream answer.
#[derive(Debug)]
pub enum UpstreamResponse {
    /// Non-streaming: the upstream's 2xx status and JSON body, as received.
    Json {
        status: u16,
        body: Value,
        /// The upstream's `x-request-id`, for logs.
        request_id: Option<String>,
    },
    /// Streaming: events relayed as they arrive.
    Stream(UpstreamStream),
}

/// A client for one upstream. Cheap to clone; clones share the connection pools and breaker.
#[derive(Clone)]
pub struct UpstreamClient {
    shared: Arc<Shared>,
}

struct Shared {
    name: Arc<str>,
    settings: UpstreamSettings,
    /// A connection pool per calling thread (see `connections`).
    http: Connections,
    chat_url: Url,
    completions_url: Url,
    /// `Bearer <key>`, built once and marked sensitive so HTTP debug logging hides it.
    authorization: Option<HeaderValue>,
    breaker: CircuitBreaker,
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `settings` redacts the key; the prebuilt header is left out entirely.
        f.debug_struct("UpstreamClient")
            .field("settings", &self.shared.settings)
            .field("circuit", &self.shared.breaker.state())
            .finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// Builds the client (connection pool, endpoint URLs, auth header) once at startup.
    pub fn new(settings: UpstreamSettings) -> Result<Self, UpstreamConfigError> {
        let config_error = |field: &str, message: String| UpstreamConfigError {
            key: format!("upstreams.{}.{field}", settings.name),
            message,
        };
        let http = Connections::new(settings.connect_timeout, POOL_IDLE_TIMEOUT)
            .map_err(|e| config_error("base_url", format!("cannot build HTTP client: {e}")))?;
        let endpoint_url = |path: &str| {
            Url::parse(&format!(
                "{}/{path}",
                settings.base_url.as_str().trim_end_matches('/')
            ))
            .map_err(|e| config_error("base_url", format!("cannot form the {path} URL: {e}")))
        };
        let chat_url = endpoint_url("chat/completions")?;
        let completions_url = endpoint_url("completions")?;
        let authorization = match &settings.api_key {
            None => None,
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                    .map_err(|_| {
                        config_error("api_key_env", "key is not a valid header value".into())
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let name: Arc<str> = Arc::from(settings.name.as_str());
        m::set_circuit_state(&name, CircuitState::Closed);
        Ok(Self {
            shared: Arc::new(Shared {
                name,
                breaker: CircuitBreaker::new(settings.circuit),
                settings,
                http,
                chat_url,
                completions_url,
                authorization,
            }),
        })
    }

    /// The upstream's configured name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Its validated settings.
    pub fn settings(&self) -> &UpstreamSettings {
        &self.shared.settings
    }

    /// Breaker state, a routing signal: prefer another target while not `Closed`.
    pub fn circuit_state(&self) -> CircuitState {
        self.shared.breaker.state()
    }

    /// `POST {base_url}/chat/completions` with `body` (an OpenAI request; `model` is mapped
    /// and `stream` set to `stream`).
    pub async fn chat_completions(
        &self,
        body: Value,
        stream: bool,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.call(Endpoint::ChatCompletions, body, stream).await
    }

    /// `POST {base_url}/completions`, as [`UpstreamClient::chat_completions`].
    pub async fn completions(
        &self,
        body: Value,
        stream: bool,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.call(Endpoint::Completions, body, stream).await
    }

    /// Sends `body` to `endpoint`. An `Err` means nothing was relayed yet, so the caller can
    /// still answer with a plain HTTP error; failures after that arrive inside the stream.
    pub async fn call(
        &self,
        endpoint: Endpoint,
        body: Value,
        stream: bool,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let started = Instant::now();
        let result = self
            .call_with_retries(endpoint, body, stream, started)
            .await;
        let shared = &self.shared;
        match &result {
            // A stream records its duration when it ends.
            Ok(UpstreamResponse::Stream(_)) => {}
            Ok(UpstreamResponse::Json { .. }) => {
                m::record_duration(&shared.name, started.elapsed())
            }
            Err(error) => {
                m::record_error(&shared.name, error.kind());
                m::record_duration(&shared.name, started.elapsed());
                // Client mistakes (400, unmapped model) are routine; upstream faults are not.
                if error.is_upstream_fault() {
                    tracing::warn!(upstream = %shared.name, error = %error.for_log(), "upstream call failed");
                } else {
                    tracing::debug!(upstream = %shared.name, error = %error.for_log(), "upstream call failed");
                }
            }
        }
        result
    }

    async fn call_with_retries(
        &self,
        endpoint: Endpoint,
        body: Value,
        stream: bool,
        started: Instant,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let shared = &self.shared;
        let payload = shared.prepare_body(body, stream)?;
        let url = match endpoint {
            Endpoint::ChatCompletions => &shared.chat_url,
            Endpoint::Completions => &shared.completions_url,
        };
        let deadline = started + shared.settings.total_timeout;
        let mut retries = 0;
        let mut last_error = None;
        loop {
            let permit = match shared.breaker.try_acquire() {
                Ok(admission) => Permit::new(shared, admission),
                // Mid-retry, the upstream's own last answer says more than "circuit open".
                Err(rejected) => {
                    return Err(last_error.unwrap_or_else(|| UpstreamError::CircuitOpen {
                        upstream: Arc::clone(&shared.name),
                        retry_after: rejected.retry_after,
                    }))
                }
            };
            let outcome = shared
                .attempt(url, payload.clone(), stream, started, deadline)
                .await;
            permit.settle(matches!(&outcome, Err(e) if e.is_upstream_fault()));
            let error = match outcome {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            if !error.is_retryable() || retries >= shared.settings.max_retries {
                return Err(error);
            }
            let Some(delay) = shared.retry_delay(&error, retries) else {
                return Err(error);
            };
            if Instant::now() + delay >= deadline {
                return Err(error);
            }
            // Once the breaker has opened, further attempts would only be rejected.
            if shared.breaker.state() == CircuitState::Open {
                return Err(error);
            }
            tracing::debug!(upstream = %shared.name, error = %error.for_log(), ?delay, "retrying upstream call");
            tokio::time::sleep(delay).await;
            retries += 1;
            m::record_retry(&shared.name);
            last_error = Some(error);
        }
    }
}

/// One admitted attempt. A half-open trial dropped without an outcome (the caller went away)
/// is handed back, so the breaker does not wait forever for a result.
struct Permit<'a> {
    shared: &'a Shared,
    admission: Admission,
    settled: bool,
}

impl<'a> Permit<'a> {
    fn new(shared: &'a Shared, admission: Admission) -> Self {
        if admission == Admission::Trial {
            m::set_circuit_state(&shared.name, CircuitState::HalfOpen);
        }
        Self {
            shared,
            admission,
            settled: false,
        }
    }

    fn settle(mut self, fault: bool) {
        self.settled = true;
        let transition = self.shared.breaker.record(self.admission, fault);
        self.shared.publish(transition);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled && self.admission == Admission::Trial {
            self.shared.breaker.abandon_trial();
        }
    }
}

impl Shared {
    fn publish(&self, transition: Option<Transition>) {
        let Some(transition) = transition else {
            return;
        };
        m::set_circuit_state(&self.name, transition.to);
        tracing::warn!(
            upstream = %self.name,
            from = ?transition.from,
            to = ?transition.to,
            "upstream circuit changed state"
        );
    }

    /// Maps `model`, forces `stream`, and serializes once so retries resend the same bytes.
    fn prepare_body(&self, mut body: Value, stream: bool) -> Result<Bytes, UpstreamError> {
        let invalid = |param, message: &str| UpstreamError::InvalidRequest {
            upstream: Arc::clone(&self.name),
            param,
            message: message.to_owned(),
        };
        let Some(object) = body.as_object_mut() else {
            return Err(invalid(None, "the request body must be a JSON object"));
        };
        let requested = match object.get("model") {
            Some(Value::String(model)) => Some(model.as_str()),
            None | Some(Value::Null) => None,
            Some(_) => return Err(invalid(Some("model"), "model must be a string")),
        };
        let model = self.map_model(requested)?;
        object.insert("model".into(), Value::String(model));
        object.insert("stream".into(), Value::Bool(stream));
        if !stream {
            // OpenAI rejects stream_options unless stream is true.
            object.remove("stream_options");
        }
        serde_json::to_vec(&body)
            .map(Bytes::from)
            .map_err(|e| invalid(None, &format!("the request cannot be serialized: {e}")))
    }

    /// Edge model id → upstream model. With an empty map the id is sent unchanged; with a
    /// map, ids it does not list (and no `*`) are refused, so clients cannot spend the
    /// gateway's key on arbitrary models.
    fn map_model(&self, requested: Option<&str>) -> Result<String, UpstreamError> {
        let map = &self.settings.model_map;
        if map.is_empty() {
            return requested
                .map(str::to_owned)
                .ok_or_else(|| UpstreamError::InvalidRequest {
                    upstream: Arc::clone(&self.name),
                    param: Some("model"),
                    message: "model is required".into(),
                });
        }
        requested
            .and_then(|model| map.get(model))
            .or_else(|| map.get(WILDCARD_MODEL))
            .cloned()
            .ok_or_else(|| UpstreamError::ModelNotMapped {
                upstream: Arc::clone(&self.name),
                model: requested.unwrap_or_default().to_owned(),
            })
    }

    /// Wait before retry number `retry`, or `None` when the upstream asked for a longer pause
    /// than we hold a client for (the 429 and its `Retry-After` then go to the client).
    fn retry_delay(&self, error: &UpstreamError, retry: u32) -> Option<Duration> {
        let s = &self.settings;
        let backoff = retry::backoff(s.retry_base, s.retry_max_backoff, retry, &mut rand::rng());
        match error.retry_after() {
            Some(asked) if asked > s.retry_after_max => None,
            Some(asked) => Some(asked.max(backoff)),
            None => Some(backoff),
        }
    }

    async fn attempt(
        self: &Arc<Self>,
        url: &Url,
        payload: Bytes,
        stream: bool,
        started: Instant,
        deadline: Instant,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let (limit, stage) = if self.settings.first_byte_timeout <= remaining {
            (self.settings.first_byte_timeout, TimeoutStage::FirstByte)
        } else {
            (remaining, TimeoutStage::Total)
        };
        let mut request = self
            .http
            .client()
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                ACCEPT,
                if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            )
            .body(payload);
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let response = match tokio::time::timeout(limit, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                m::record_attempt(&self.name, None);
                return Err(self.send_error(&e));
            }
            Err(_) => {
                m::record_attempt(&self.name, None);
                return Err(self.timeout(stage, limit));
            }
        };
        let status = response.status();
        m::record_attempt(&self.name, Some(status.as_u16()));
        let request_id = header_text(response.headers(), REQUEST_ID_HEADER);
        if !status.is_success() {
            return Err(self.status_error(response, deadline).await);
        }
        if stream {
            return self.open_stream(response, request_id, started);
        }
        let bytes = read_limited(response, MAX_RESPONSE_BYTES, deadline)
            .await
            .map_err(|failure| match failure {
                ReadFailure::Deadline => {
                    self.timeout(TimeoutStage::Total, self.settings.total_timeout)
                }
                ReadFailure::TooLarge => self.invalid_response(format!(
                    "response body larger than {MAX_RESPONSE_BYTES} bytes"
                )),
                ReadFailure::Body(e) => self.invalid_response(format!(
                    "connection broke while reading the body: {}",
                    self.scrub(&error_chain(&e))
                )),
            })?;
        let body = serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid_response(format!("body is not JSON: {e}")))?;
        Ok(UpstreamResponse::Json {
            status: status.as_u16(),
            body,
            request_id,
        })
    }

    fn open_stream(
        self: &Arc<Self>,
        response: reqwest::Response,
        request_id: Option<String>,
        started: Instant,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let content_type = header_text(response.headers(), CONTENT_TYPE.as_str());
        if let Some(content_type) = content_type {
            if !content_type.starts_with("text/event-stream") {
                return Err(self
                    .invalid_response(format!("expected text/event-stream, got {content_type}")));
            }
        }
        Ok(UpstreamResponse::Stream(UpstreamStream::new(
            Arc::clone(self),
            response,
            request_id,
            started,
        )))
    }

    /// Builds the `Status` error, keeping the upstream's OpenAI error body when it sent one.
    async fn status_error(&self, response: reqwest::Response, deadline: Instant) -> UpstreamError {
        let code = response.status().as_u16();
        let retry_after = retry::retry_after(response.headers());
        let text = match read_limited(response, MAX_ERROR_BODY_BYTES, deadline).await {
            Ok(bytes) => self.scrub(&String::from_utf8_lossy(&bytes)),
            // A truncated or unreadable error body still leaves the status to act on.
            Err(ReadFailure::TooLarge) => String::from("(error body too large)"),
            Err(ReadFailure::Deadline | ReadFailure::Body(_)) => {
                String::from("(error body unreadable)")
            }
        };
        UpstreamError::from_status(Arc::clone(&self.name), code, &text, retry_after)
    }

    fn send_error(&self, e: &reqwest::Error) -> UpstreamError {
        let upstream = Arc::clone(&self.name);
        if e.is_connect() && e.is_timeout() {
            return self.timeout(TimeoutStage::Connect, self.settings.connect_timeout);
        }
        let message = self.scrub(&error_chain(e));
        if e.is_connect() {
            UpstreamError::Connect { upstream, message }
        } else if e.is_timeout() {
            self.timeout(TimeoutStage::FirstByte, self.settings.first_byte_timeout)
        } else {
            UpstreamError::Transport { upstream, message }
        }
    }

    fn timeout(&self, stage: TimeoutStage, after: Duration) -> UpstreamError {
        UpstreamError::Timeout {
            upstream: Arc::clone(&self.name),
            stage,
            after,
        }
    }

    fn invalid_response(&self, message: String) -> UpstreamError {
        UpstreamError::InvalidResponse {
            upstream: Arc::clone(&self.name),
            message,
        }
    }

    /// Removes the API key from upstream text: some APIs echo the key they rejected.
    fn scrub(&self, text: &str) -> String {
        match &self.settings.api_key {
            Some(key) if text.contains(key.expose()) => text.replace(key.expose(), "[REDACTED]"),
            Some(_) | None => text.to_owned(),
        }
    }
}

enum ReadFailure {
    Deadline,
    TooLarge,
    Body(reqwest::Error),
}

/// Reads a whole body, refusing more than `limit` bytes or running past `deadline`.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    deadline: Instant,
) -> Result<Bytes, ReadFailure> {
    let read = async {
        let mut buf = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(ReadFailure::Body)? {
            if buf.len() + chunk.len() > limit {
                return Err(ReadFailure::TooLarge);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout_at(deadline.into(), read)
        .await
        .unwrap_or(Err(ReadFailure::Deadline))
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `reqwest`'s own message is terse ("error sending request"); the causes say what happened.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

type ItemStream = Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>;

/// An upstream SSE stream relayed as it arrives. Each item holds one or more complete events,
/// re-framed as `data: ...\n\n`; the last successful item is `data: [DONE]\n\n`. A stream that
/// breaks, goes silent for `idle_timeout`, or ends without `[DONE]` yields one `Err` and ends,
/// so the caller can send an error event and `[DONE]` (see [`UpstreamStream::into_sse_body`]).
pub struct UpstreamStream {
    inner: ItemStream,
    request_id: Option<String>,
}

impl fmt::Debug for UpstreamStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamStream")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl UpstreamStream {
    /// `started` is when the call began, so the recorded duration covers retries too.
    fn new(
        shared: Arc<Shared>,
        response: reqwest::Response,
        request_id: Option<String>,
        started: Instant,
    ) -> Self {
        let relay = Relay {
            started,
            shared,
            body: Box::pin(response.bytes_stream()),
            parser: SseParser::new(),
            events: Vec::new(),
            finished: false,
        };
        let inner = futures_util::stream::unfold(relay, |mut relay| async move {
            relay.next_item().await.map(|item| (item, relay))
        });
        Self {
            inner: Box::pin(inner),
            request_id,
        }
    }

    /// The upstream's `x-request-id`, for logs.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The body to send our client: events as they come, and on failure one OpenAI error
    /// event followed by `data: [DONE]`, so clients never see a stream just stop.
    pub fn into_sse_body(self) -> impl Stream<Item = Bytes> + Send {
        futures_util::stream::unfold(Some(self.inner), |inner| async move {
            let mut inner = inner?;
            match inner.next().await {
                Some(Ok(bytes)) => Some((bytes, Some(inner))),
                Some(Err(error)) => Some((error_event(&error), None)),
                None => None,
            }
        })
    }
}

impl Stream for UpstreamStream {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// `data: {"error": ...}\n\ndata: [DONE]\n\n` for an error after the stream started.
pub fn error_event(error: &UpstreamError) -> Bytes {
    let mut text = String::new();
    SseEvent {
        event: None,
        data: error.to_client().to_json_string(),
    }
    .encode_data(&mut text);
    text.push_str("data: [DONE]\n\n");
    Bytes::from(text)
}

/// State of one relayed stream; dropping it (end, error, or client gone) records the duration.
struct Relay {
    started: Instant,
    shared: Arc<Shared>,
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    parser: SseParser,
    events: Vec<SseEvent>,
    finished: bool,
}

impl Relay {
    async fn next_item(&mut self) -> Option<Result<Bytes, UpstreamError>> {
        if self.finished {
            return None;
        }
        let idle = self.shared.settings.idle_timeout;
        loop {
            let chunk = match tokio::time::timeout(idle, self.body.next()).await {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(Some(Err(e))) => {
                    let message = self.shared.scrub(&error_chain(&e));
                    return Some(Err(self.fail(UpstreamError::StreamInterrupted {
                        upstream: Arc::clone(&self.shared.name),
                        message,
                    })));
                }
                Ok(None) => {
                    return Some(Err(self.fail(UpstreamError::StreamTruncated {
                        upstream: Arc::clone(&self.shared.name),
                    })))
                }
                Err(_) => {
                    return Some(Err(self.fail(self.shared.timeout(TimeoutStage::Idle, idle))))
                }
            };
            if let Err(e) = self.parser.push(&chunk, &mut self.events) {
                let error = self
                    .shared
                    .invalid_response(format!("bad event stream: {e}"));
                return Some(Err(self.fail(error)));
            }
            let mut out = String::new();
            for event in self.events.drain(..) {
                if event.is_done() {
                    out.push_str("data: [DONE]\n\n");
                    // Anything after [DONE] is not part of the answer.
                    self.finished = true;
                    break;
                }
                event.encode_data(&mut out);
            }
            if !out.is_empty() {
                return Some(Ok(Bytes::from(out)));
            }
        }
    }

    fn fail(&mut self, error: UpstreamError) -> UpstreamError {
        self.finished = true;
        let shared = &self.shared;
        m::record_error(&shared.name, error.kind());
        tracing::warn!(upstream = %shared.name, error = %error.for_log(), "upstream stream failed");
        if error.is_upstream_fault() {
            let transition = shared.breaker.record(Admission::Normal, true);
            shared.publish(transition);
        }
        error
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        m::record_duration(&self.shared.name, self.started.elapsed());
    }
}
