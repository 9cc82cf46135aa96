//! `UpstreamClient` against a real fake upstream: a hand-written HTTP/1.1 server on 127.0.0.1
//! that records every request and can stall, fail, stream slowly, truncate or reset.

// The fake upstream's helpers are not `#[test]` functions, so clippy.toml's test allowance
// does not reach them.
#![expect(
    clippy::expect_used,
    reason = "a broken fake upstream should fail the test loudly"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use edge_gateway::upstream::{
    CircuitState, RawUpstream, TimeoutStage, UpstreamClient, UpstreamError, UpstreamResponse,
    UpstreamStream,
};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const KEY: &str = "sk-test-VERY-SECRET-4242";
/// Bound on every wait in these tests, so a regression fails instead of hanging.
const TEST_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Fake upstream
// ---------------------------------------------------------------------------------------------

/// A request as the fake upstream received it.
#[derive(Debug, Clone)]
struct Recorded {
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One step of a chunked SSE response.
#[derive(Clone)]
enum Part {
    /// One HTTP chunk.
    Chunk(String),
    Sleep(Duration),
    /// Wait until the test says to go on.
    Gate(Arc<Notify>),
    /// The terminating zero-length chunk: a clean end of the body.
    End,
    /// Abort the connection with a TCP RST.
    Reset,
}

/// What the fake answers to one request.
#[derive(Clone)]
enum Reply {
    Json {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    Sse(Vec<Part>),
    /// Read the request, never answer.
    Hang,
    /// Read the request, then reset the connection without a response.
    Reset,
}

fn ok_json(body: Value) -> Reply {
    Reply::Json {
        status: 200,
        headers: vec![],
        body: body.to_string(),
    }
}

fn error_json(status: u16, message: &str, code: Option<&str>, param: Option<&str>) -> Reply {
    Reply::Json {
        status,
        headers: vec![],
        body: json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}})
            .to_string(),
    }
}

type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

struct FakeUpstream {
    base_url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<Script>>,
}

impl FakeUpstream {
    /// Starts serving; `script(n)` decides the reply to the n-th request (0-based).
    async fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Mutex<Script>> = Arc::new(Mutex::new(Arc::new(script)));
        let (reqs, scr) = (Arc::clone(&requests), Arc::clone(&script));
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (reqs, scr) = (Arc::clone(&reqs), Arc::clone(&scr));
                tokio::spawn(serve_connection(socket, reqs, scr));
            }
        });
        Self {
            base_url: format!("http://{addr}/v1"),
            requests,
            script,
        }
    }

    fn set_script(&self, script: impl Fn(usize) -> Reply + Send + Sync + 'static) {
        *self.script.lock().expect("script lock") = Arc::new(script);
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("requests lock").clone()
    }

    fn count(&self) -> usize {
        self.requests.lock().expect("requests lock").len()
    }
}

async fn serve_connection(
    mut socket: TcpStream,
    requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<Script>>,
) {
    let Some(recorded) = read_request(&mut socket).await else {
        return;
    };
    let index = {
        let mut all = requests.lock().expect("requests lock");
        all.push(recorded);
        all.len() - 1
    };
    let script = Arc::clone(&script.lock().expect("script lock"));
    match script(index) {
        Reply::Json {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
        Reply::Sse(parts) => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\nx-request-id: req-123\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for part in parts {
                match part {
                    Part::Chunk(data) => {
                        let frame = format!("{:x}\r\n{data}\r\n", data.len());
                        if socket.write_all(frame.as_bytes()).await.is_err() {
                            return;
                        }
                        let _ = socket.flush().await;
                    }
                    Part::Sleep(d) => tokio::time::sleep(d).await,
                    Part::Gate(gate) => {
                        let _ = tokio::time::timeout(TEST_WAIT, gate.notified()).await;
                    }
                    Part::End => {
                        let _ = socket.write_all(b"0\r\n\r\n").await;
                        let _ = socket.shutdown().await;
                        return;
                    }
                    Part::Reset => {
                        reset(socket);
                        return;
                    }
                }
            }
        }
        Reply::Hang => tokio::time::sleep(Duration::from_secs(30)).await,
        Reply::Reset => reset(socket),
    }
}

/// Closes with RST instead of FIN, as a crashed peer or a middlebox would.
fn reset(socket: TcpStream) {
    socket.set_zero_linger().expect("SO_LINGER");
    drop(socket);
}

async fn read_request(socket: &mut TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Recorded {
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A client with fast test timings; `overrides` replaces any setting.
fn client(base_url: &str, overrides: Value) -> UpstreamClient {
    let mut raw = json!({
        "base_url": base_url,
        "api_key_env": "TEST_CLOUD_KEY",
        "model_map": {"edge-tiny": "gpt-4o-mini"},
        "connect_timeout_ms": 500,
        "first_byte_timeout_ms": 1000,
        "total_timeout_ms": 4000,
        "idle_timeout_ms": 1000,
        "max_retries": 2,
        "retry_base_ms": 1,
        "retry_max_backoff_ms": 5,
        "retry_after_max_ms": 500,
        "circuit": {"failure_threshold": 100, "open_ms": 200},
    });
    for (k, v) in overrides.as_object().expect("object").clone() {
        raw[k] = v;
    }
    let raw: RawUpstream = serde_json::from_value(raw).expect("raw settings");
    let settings = raw
        .validate_with_env("cloud", |var| {
            (var == "TEST_CLOUD_KEY").then(|| KEY.to_owned())
        })
        .expect("valid settings");
    UpstreamClient::new(settings).expect("client")
}

fn chat_body() -> Value {
    json!({"model": "edge-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
}

fn completion_json() -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
    })
}

async fn expect_err(client: &UpstreamClient, stream: bool) -> UpstreamError {
    let result = tokio::time::timeout(TEST_WAIT, client.chat_completions(chat_body(), stream))
        .await
        .expect("call finishes");
    match result {
        Ok(response) => panic!("expected an error, got {response:?}"),
        Err(e) => e,
    }
}

async fn expect_stream(client: &UpstreamClient) -> UpstreamStream {
    let result = tokio::time::timeout(TEST_WAIT, client.chat_completions(chat_body(), true))
        .await
        .expect("call finishes");
    match result.expect("stream opens") {
        UpstreamResponse::Stream(stream) => stream,
        other => panic!("expected a stream, got {other:?}"),
    }
}

/// Drains a stream: the relayed text, and the error item if one came (always the last).
async fn drain(mut stream: UpstreamStream) -> (String, Option<UpstreamError>) {
    let mut text = String::new();
    loop {
        match tokio::time::timeout(TEST_WAIT, stream.next())
            .await
            .expect("stream makes progress")
        {
            None => return (text, None),
            Some(Ok(bytes)) => text.push_str(std::str::from_utf8(&bytes).expect("utf-8")),
            Some(Err(e)) => {
                assert!(stream.next().await.is_none(), "nothing follows an error");
                return (text, Some(e));
            }
        }
    }
}

/// Compile-time check: calls and streams can move to another task (`tokio::spawn`).
fn assert_send<T: Send>(_: &T) {}

/// The `data:` payloads of SSE text.
fn data_payloads(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("data event").to_owned())
        .collect()
}

const EVENT_1: &str = r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#;
const EVENT_2: &str = r#"{"choices":[{"index":0,"delta":{"content":"lo"}}]}"#;

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn non_streaming_call_maps_model_and_sends_bearer_key() {
    let fake = FakeUpstream::start(|_| ok_json(completion_json())).await;
    let client = client(&fake.base_url, json!({}));
    let call = client.chat_completions(chat_body(), false);
    assert_send(&call);
    let response = call.await.expect("success");
    let UpstreamResponse::Json { status, body, .. } = response else {
        panic!("expected JSON");
    };
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "hello");

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.body["model"], "gpt-4o-mini", "edge id mapped");
    assert_eq!(sent.body["stream"], false);
    assert_eq!(
        sent.body["messages"][0]["content"], "hi",
        "rest passed through"
    );
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(sent.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn completions_endpoint_uses_its_own_path_and_wildcard_mapping() {
    let fake = FakeUpstream::start(|_| ok_json(json!({"choices": [{"text": "x"}]}))).await;
    let client = client(
        &fake.base_url,
        json!({"model_map": {"*": "gpt-3.5-turbo-instruct"}}),
    );
    client
        .completions(json!({"model": "anything", "prompt": "p"}), false)
        .await
        .expect("success");
    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v1/completions");
    assert_eq!(sent.body["model"], "gpt-3.5-turbo-instruct");
}

#[tokio::test]
async fn unmapped_model_is_rejected_without_contacting_the_upstream() {
    let fake = FakeUpstream::start(|_| ok_json(completion_json())).await;
    let client = client(&fake.base_url, json!({}));
    let err = client
        .chat_completions(json!({"model": "other", "messages": []}), false)
        .await
        .expect_err("not mapped");
    assert!(
        matches!(err, UpstreamError::ModelNotMapped { .. }),
        "{err:?}"
    );
    assert_eq!(err.to_client().status, 404);
    assert_eq!(fake.count(), 0);
}

#[tokio::test]
async fn streaming_relay_delivers_first_event_before_upstream_sends_the_rest() {
    let gate = Arc::new(Notify::new());
    let parts = vec![
        Part::Chunk(format!("data: {EVENT_1}\n\n")),
        Part::Gate(Arc::clone(&gate)),
        Part::Chunk(format!("data: {EVENT_2}\n\ndata: [DONE]\n\n")),
        Part::End,
    ];
    let fake = FakeUpstream::start(move |_| Reply::Sse(parts.clone())).await;
    let client = client(&fake.base_url, json!({}));
    let mut stream = expect_stream(&client).await;
    assert_send(&stream);
    assert_eq!(stream.request_id(), Some("req-123"));

    // The upstream holds back everything after the first event until we open the gate, so
    // this only passes if the relay forwards events as they arrive.
    let first = tokio::time::timeout(Duration::from_secs(2), stream.next())
        .await
        .expect("first event relayed before the upstream finished")
        .expect("an item")
        .expect("not an error");
    assert_eq!(first, Bytes::from(format!("data: {EVENT_1}\n\n")));
    gate.notify_one();

    let (rest, error) = drain(stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(data_payloads(&rest), [EVENT_2, "[DONE]"]);
    assert_eq!(fake.requests()[0].body["stream"], true);
    assert_eq!(
        fake.requests()[0].header("accept"),
        Some("text/event-stream")
    );
}

#[tokio::test]
async fn stream_events_split_across_chunks_with_crlf_and_keepalives_are_reframed() {
    let fake = FakeUpstream::start(|_| {
        Reply::Sse(vec![
            Part::Chunk(": keepalive\r\n\r\ndata: {\"choices\":[{\"del".into()),
            Part::Chunk("ta\":{\"content\":\"a\"}}]}\r\n".into()),
            Part::Chunk("\r\ndata: {\"n\":2}\r\n\r\ndata: {\"n\":3}\r\n\r\ndata: [DO".into()),
            Part::Chunk("NE]\r\n\r\n".into()),
            Part::End,
        ])
    })
    .await;
    let client = client(&fake.base_url, json!({}));
    let (text, error) = drain(expect_stream(&client).await).await;
    assert!(error.is_none(), "{error:?}");
    let payloads = data_payloads(&text);
    assert_eq!(
        payloads,
        [
            r#"{"choices":[{"delta":{"content":"a"}}]}"#,
            r#"{"n":2}"#,
            r#"{"n":3}"#,
            "[DONE]"
        ]
    );
    for payload in &payloads[..3] {
        serde_json::from_str::<Value>(payload).expect("each event is whole JSON");
    }
}

#[tokio::test]
async fn stream_without_done_marker_ends_with_a_truncation_error() {
    let fake = FakeUpstream::start(|_| {
        Reply::Sse(vec![Part::Chunk("data: {\"n\":1}\n\n".into()), Part::End])
    })
    .await;
    let client = client(&fake.base_url, json!({}));
    let (text, error) = drain(expect_stream(&client).await).await;
    assert_eq!(data_payloads(&text), [r#"{"n":1}"#]);
    let error = error.expect("truncation surfaces as an error item");
    assert!(
        matches!(error, UpstreamError::StreamTruncated { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn sse_body_for_clients_ends_with_error_event_then_done() {
    let fake = FakeUpstream::start(|_| {
        Reply::Sse(vec![Part::Chunk("data: {\"n\":1}\n\n".into()), Part::End])
    })
    .await;
    let client = client(&fake.base_url, json!({}));
    let body: Vec<Bytes> = expect_stream(&client).await.into_sse_body().collect().await;
    let text: String = body
        .iter()
        .map(|b| std::str::from_utf8(b).expect("utf-8"))
        .collect();
    let payloads = data_payloads(&text);
    assert_eq!(payloads.len(), 3, "{text}");
    let error: Value = serde_json::from_str(&payloads[1]).expect("error event is JSON");
    assert_eq!(error["error"]["code"], "upstream_stream_truncated");
    assert_eq!(error["error"]["type"], "server_error");
    assert_eq!(payloads[2], "[DONE]");
}

#[tokio::test]
async fn connection_reset_mid_stream_is_an_error_item_not_a_silent_end() {
    let fake = FakeUpstream::start(|_| {
        Reply::Sse(vec![
            Part::Chunk("data: {\"n\":1}\n\n".into()),
            Part::Sleep(Duration::from_millis(50)),
            Part::Reset,
        ])
    })
    .await;
    let client = client(&fake.base_url, json!({}));
    let (text, error) = drain(expect_stream(&client).await).await;
    assert_eq!(data_payloads(&text), [r#"{"n":1}"#]);
    let error = error.expect("reset surfaces as an error item");
    assert!(
        matches!(error, UpstreamError::StreamInterrupted { .. }),
        "{error:?}"
    );
    assert_eq!(fake.count(), 1, "a started stream is never retried");
}

#[tokio::test]
async fn silent_stream_hits_the_idle_timeout() {
    let fake = FakeUpstream::start(|_| {
        Reply::Sse(vec![
            Part::Chunk("data: {\"n\":1}\n\n".into()),
            Part::Sleep(Duration::from_secs(10)),
        ])
    })
    .await;
    let client = client(&fake.base_url, json!({"idle_timeout_ms": 150}));
    let (_, error) = drain(expect_stream(&client).await).await;
    assert!(
        matches!(
            error,
            Some(UpstreamError::Timeout {
                stage: TimeoutStage::Idle,
                ..
            })
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn upstream_that_never_answers_gives_a_first_byte_timeout() {
    let fake = FakeUpstream::start(|_| Reply::Hang).await;
    let client = client(
        &fake.base_url,
        json!({"first_byte_timeout_ms": 150, "max_retries": 1}),
    );
    let started = std::time::Instant::now();
    let err = expect_err(&client, false).await;
    assert!(
        matches!(
            err,
            UpstreamError::Timeout {
                stage: TimeoutStage::FirstByte,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_client().status, 504);
    assert_eq!(fake.count(), 2, "a timeout before any response is retried");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn total_timeout_bounds_the_call_including_retries() {
    let fake = FakeUpstream::start(|_| Reply::Hang).await;
    let client = client(
        &fake.base_url,
        json!({"first_byte_timeout_ms": 1000, "total_timeout_ms": 200, "max_retries": 5}),
    );
    let err = expect_err(&client, false).await;
    assert!(
        matches!(
            err,
            UpstreamError::Timeout {
                stage: TimeoutStage::Total,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fake.count(), 1);
}

#[tokio::test]
async fn server_error_then_success_is_retried_with_the_same_body() {
    let fake = FakeUpstream::start(|n| {
        if n == 0 {
            error_json(500, "boom", None, None)
        } else {
            ok_json(completion_json())
        }
    })
    .await;
    let client = client(&fake.base_url, json!({}));
    client
        .chat_completions(chat_body(), false)
        .await
        .expect("second attempt succeeds");
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body);
    assert_eq!(requests[1].body["model"], "gpt-4o-mini");
}

#[tokio::test]
async fn connection_reset_before_headers_is_retried() {
    let fake = FakeUpstream::start(|n| {
        if n == 0 {
            Reply::Reset
        } else {
            ok_json(completion_json())
        }
    })
    .await;
    let client = client(&fake.base_url, json!({}));
    client
        .chat_completions(chat_body(), false)
        .await
        .expect("retry succeeds");
    assert_eq!(fake.count(), 2);
}

#[tokio::test]
async fn persistent_server_errors_exhaust_retries_then_open_the_circuit() {
    let fake = FakeUpstream::start(|_| error_json(503, "overloaded", None, None)).await;
    let client = client(
        &fake.base_url,
        json!({"max_retries": 2, "circuit": {"failure_threshold": 3, "open_ms": 60000}}),
    );
    let err = expect_err(&client, false).await;
    assert!(
        matches!(err, UpstreamError::Status { code: 503, .. }),
        "{err:?}"
    );
    let client_error = err.to_client();
    assert_eq!(client_error.status, 502);
    assert!(!client_error.message.contains("overloaded"), "sanitized");
    assert_eq!(fake.count(), 3, "first attempt plus max_retries");
    assert_eq!(client.circuit_state(), CircuitState::Open);

    for _ in 0..3 {
        let err = expect_err(&client, true).await;
        assert!(matches!(err, UpstreamError::CircuitOpen { .. }), "{err:?}");
        let c = err.to_client();
        assert_eq!(c.status, 503);
        assert!(c.retry_after_secs.is_some_and(|s| s >= 59), "{c:?}");
    }
    assert_eq!(
        fake.count(),
        3,
        "an open circuit never reaches the upstream"
    );
}

#[tokio::test]
async fn half_open_trial_reopens_on_failure_and_closes_on_success() {
    let fake = FakeUpstream::start(|_| error_json(500, "down", None, None)).await;
    let client = client(
        &fake.base_url,
        json!({"max_retries": 1, "circuit": {"failure_threshold": 2, "open_ms": 200}}),
    );
    expect_err(&client, false).await;
    assert_eq!(fake.count(), 2);
    assert_eq!(client.circuit_state(), CircuitState::Open);

    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(client.circuit_state(), CircuitState::HalfOpen);
    let err = expect_err(&client, false).await;
    assert!(
        matches!(err, UpstreamError::Status { code: 500, .. }),
        "{err:?}"
    );
    assert_eq!(
        fake.count(),
        3,
        "one trial, no retry into a reopened circuit"
    );
    assert_eq!(client.circuit_state(), CircuitState::Open);

    fake.set_script(|_| ok_json(completion_json()));
    tokio::time::sleep(Duration::from_millis(250)).await;
    client
        .chat_completions(chat_body(), false)
        .await
        .expect("trial succeeds");
    assert_eq!(client.circuit_state(), CircuitState::Closed);
    assert_eq!(fake.count(), 4);
}

#[tokio::test]
async fn bad_request_passes_the_upstream_message_and_is_not_retried() {
    let fake = FakeUpstream::start(|_| {
        error_json(
            400,
            "max_tokens is too large: 999999",
            Some("invalid_value"),
            Some("max_tokens"),
        )
    })
    .await;
    let client = client(
        &fake.base_url,
        json!({"circuit": {"failure_threshold": 1, "open_ms": 60000}}),
    );
    let err = expect_err(&client, false).await;
    assert!(
        matches!(err, UpstreamError::Status { code: 400, .. }),
        "{err:?}"
    );
    let c = err.to_client();
    assert_eq!(c.status, 400);
    assert_eq!(c.message, "max_tokens is too large: 999999");
    assert_eq!(c.param.as_deref(), Some("max_tokens"));
    assert_eq!(c.to_json()["error"]["type"], "invalid_request_error");
    assert_eq!(fake.count(), 1, "client errors are not retried");
    assert_eq!(
        client.circuit_state(),
        CircuitState::Closed,
        "client errors do not trip the breaker"
    );
}

#[tokio::test]
async fn short_retry_after_is_honoured_and_long_one_goes_to_the_client() {
    let fake = FakeUpstream::start(|n| {
        if n == 0 {
            Reply::Json {
                status: 429,
                headers: vec![("retry-after-ms", "100".into())],
                body: json!({"error": {"message": "slow down", "code": "rate_limit_exceeded"}})
                    .to_string(),
            }
        } else {
            ok_json(completion_json())
        }
    })
    .await;
    let client = client(&fake.base_url, json!({}));
    let started = std::time::Instant::now();
    client
        .chat_completions(chat_body(), false)
        .await
        .expect("retried after the pause");
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "waited as asked"
    );
    assert_eq!(fake.count(), 2);

    fake.set_script(|_| Reply::Json {
        status: 429,
        headers: vec![("retry-after", "30".into())],
        body: json!({"error": {"message": "slow down"}}).to_string(),
    });
    let err = expect_err(&client, false).await;
    assert_eq!(fake.count(), 3, "a long Retry-After is not waited out");
    let c = err.to_client();
    assert_eq!((c.status, c.retry_after_secs), (429, Some(30)));
}

#[tokio::test]
async fn unreachable_upstream_is_a_connect_error_after_retries() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let client = client(&format!("http://127.0.0.1:{port}/v1"), json!({}));
    let err = expect_err(&client, false).await;
    assert!(matches!(err, UpstreamError::Connect { .. }), "{err:?}");
    assert_eq!(err.to_client().status, 502);
}

#[tokio::test]
async fn api_key_never_appears_in_debug_output_or_errors() {
    let fake = FakeUpstream::start(|_| {
        error_json(
            401,
            &format!("Incorrect API key provided: {KEY}"),
            Some("invalid_api_key"),
            None,
        )
    })
    .await;
    let client = client(&fake.base_url, json!({}));
    assert!(!format!("{client:?}").contains(KEY));
    assert!(!format!("{:?}", client.settings()).contains(KEY));

    let err = expect_err(&client, false).await;
    assert!(
        matches!(err, UpstreamError::Status { code: 401, .. }),
        "{err:?}"
    );
    let c = err.to_client();
    assert_eq!(c.status, 502, "our credentials, not the client's problem");
    for text in [
        err.to_string(),
        format!("{err:?}"),
        c.to_json_string(),
        format!("{c:?}"),
    ] {
        assert!(!text.contains(KEY), "key leaked: {text}");
    }
    assert!(err.to_string().contains("[REDACTED]"));
    assert_eq!(fake.count(), 1, "auth failures are not retried");
}
