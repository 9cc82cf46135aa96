//! Cloud faults seen through the gateway, with a fake upstream that is a real HTTP server on
//! 127.0.0.1 whose behaviour each test switches: 500s, a hang, a connection reset in the middle
//! of a stream, and a run of failures that opens the circuit breaker and a recovery that closes
//! it. With a fallback the request degrades to the edge; without one the client gets the
//! upstream failure in OpenAI shape.

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on unexpected responses"
)]

mod common;

use std::time::Duration;

use common::fake_cloud::{FaultyCloud, Mode};
use common::{sse_data, Gateway, GENAI_MODEL};
use serde_json::{json, Value};

/// A gateway on `cloud`, without retries so each request is one upstream attempt.
async fn gateway(cloud: &FaultyCloud, extra: &[(&str, &str)]) -> Gateway {
    let mut env = vec![
        (
            "EDGE_GATEWAY__UPSTREAMS__CLOUD__BASE_URL",
            cloud.base.as_str(),
        ),
        ("EDGE_GATEWAY__UPSTREAMS__CLOUD__MAX_RETRIES", "0"),
        (
            "EDGE_GATEWAY__UPSTREAMS__CLOUD__FIRST_BYTE_TIMEOUT_MS",
            "400",
        ),
        ("EDGE_GATEWAY__UPSTREAMS__CLOUD__IDLE_TIMEOUT_MS", "400"),
    ];
    env.extend_from_slice(extra);
    Gateway::start(GENAI_MODEL, &env).await
}

fn chat(content: &str) -> Value {
    json!({"model": "edge-tiny-genai", "messages": [{"role": "user", "content": content}], "max_tokens": 8, "temperature": 0})
}

/// Routed to the cloud by `complex-to-cloud`, whose fallback is the edge.
async fn complex(gw: &Gateway, body: &Value) -> (u16, Value) {
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .header("x-complexity-score", "0.9")
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

/// Routed to the cloud by `too-long-for-edge`, which has no fallback.
async fn too_long(gw: &Gateway) -> (u16, Value, Option<String>) {
    let mut body = chat("Summarise the shift report");
    body["max_tokens"] = json!(5000);
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, r.json().await.expect("json"), retry_after)
}

fn assert_openai_error(body: &Value, code: &str) {
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(error["type"].is_string(), "{body}");
    assert!(error.get("param").is_some(), "{body}");
}

#[tokio::test]
async fn upstream_500_maps_to_502_without_fallback_and_degrades_to_edge_with_one() {
    let cloud = FaultyCloud::start(Mode::ServerError).await;
    let gw = gateway(&cloud, &[]).await;
    let (s, r, _) = too_long(&gw).await;
    assert_eq!(s, 502, "{r}");
    assert_openai_error(&r, "upstream_error");
    let (s, r) = complex(&gw, &chat("Plan the week")).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["model"], "edge-tiny-genai");
    assert_eq!(cloud.hits(), 2);
    let fallbacks = gw
        .metric("edge_gateway_routing_fallbacks_total{from=\"cloud\",reason=\"server_error\"}")
        .await;
    // Only the request that had a fallback took one.
    assert_eq!(fallbacks, Some(1.0));
    let upstream_500s = gw
        .metric("edge_gateway_upstream_requests_total{upstream=\"cloud\",status=\"500\"}")
        .await;
    assert_eq!(upstream_500s, Some(2.0));
    // A histogram (summable across replicas), with buckets fine enough for a site upstream.
    let calls = gw
        .metric(
            "edge_gateway_upstream_request_duration_seconds_bucket{upstream=\"cloud\",le=\"+Inf\"}",
        )
        .await;
    assert_eq!(calls, Some(2.0));
    assert!(gw
        .metric("edge_gateway_upstream_request_duration_seconds_bucket{upstream=\"cloud\",le=\"0.001\"}")
        .await
        .is_some());
}

#[tokio::test]
async fn hanging_upstream_times_out_as_504_or_falls_back() {
    let cloud = FaultyCloud::start(Mode::Hang).await;
    let gw = gateway(&cloud, &[]).await;
    let started = std::time::Instant::now();
    let (s, r, _) = too_long(&gw).await;
    assert_eq!(s, 504, "{r}");
    assert_openai_error(&r, "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the first-byte timeout did not bound the call"
    );
    let (s, r) = complex(&gw, &chat("Plan the week")).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["model"], "edge-tiny-genai");
    let fallbacks = gw
        .metric(
            "edge_gateway_routing_fallbacks_total{from=\"cloud\",reason=\"timeout_first_byte\"}",
        )
        .await;
    assert_eq!(fallbacks, Some(1.0));
}

#[tokio::test]
async fn reset_mid_stream_ends_the_relay_with_an_error_event_then_done() {
    let cloud = FaultyCloud::start(Mode::ResetMidStream).await;
    let gw = gateway(&cloud, &[]).await;
    let mut body = chat("Plan the week");
    body["stream"] = json!(true);
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .header("x-complexity-score", "0.9")
        .json(&body)
        .send()
        .await
        .expect("request");
    // The relay had started (headers and one event), so no fallback is possible any more: the
    // client gets the cloud's first chunk, then an error event, then the end marker.
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("body");
    let data = sse_data(&text);
    assert_eq!(data.len(), 3, "{text}");
    let first: Value = serde_json::from_str(&data[0]).expect("chunk");
    assert_eq!(first["choices"][0]["delta"]["content"], "from the cloud");
    let error: Value = serde_json::from_str(&data[1]).expect("error event");
    assert_eq!(
        error["error"]["code"], "upstream_stream_interrupted",
        "{text}"
    );
    assert_eq!(data[2], "[DONE]");
    let errors = gw
        .metric(
            "edge_gateway_upstream_errors_total{upstream=\"cloud\",kind=\"stream_interrupted\"}",
        )
        .await;
    assert_eq!(errors, Some(1.0));
    // The gateway is unharmed.
    let (s, _) = gw.get_json("/healthz").await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn circuit_opens_after_failures_and_recovers_when_the_upstream_does() {
    let cloud = FaultyCloud::start(Mode::ServerError).await;
    let gw = gateway(
        &cloud,
        &[
            (
                "EDGE_GATEWAY__UPSTREAMS__CLOUD__CIRCUIT__FAILURE_THRESHOLD",
                "2",
            ),
            ("EDGE_GATEWAY__UPSTREAMS__CLOUD__CIRCUIT__OPEN_MS", "800"),
        ],
    )
    .await;
    let body = chat("Plan the week");
    for _ in 0..2 {
        let (s, r) = complex(&gw, &body).await;
        assert_eq!(s, 200, "{r}");
    }
    assert_eq!(cloud.hits(), 2);
    let state = "edge_gateway_upstream_circuit_state{upstream=\"cloud\"}";
    assert_eq!(gw.metric(state).await, Some(2.0), "circuit should be open");
    // Open: the upstream is not contacted; the edge answers, and a request with no fallback
    // gets 503 with Retry-After.
    let (s, r) = complex(&gw, &body).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["model"], "edge-tiny-genai");
    let (s, r, retry_after) = too_long(&gw).await;
    assert_eq!(s, 503, "{r}");
    // The policy sees the open circuit and does not even try the cloud.
    assert_openai_error(&r, "route_unavailable");
    assert!(retry_after.is_some(), "503 without Retry-After");
    assert_eq!(
        cloud.hits(),
        2,
        "an open circuit still reached the upstream"
    );
    let open_fallbacks = gw
        .metric("edge_gateway_routing_fallbacks_total{from=\"cloud\",reason=\"circuit_open\"}")
        .await;
    assert_eq!(open_fallbacks, Some(1.0));
    // The upstream recovers; after the open period a trial request closes the circuit.
    cloud.set(Mode::Ok);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (s, r) = complex(&gw, &body).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["model"], "cloud-model");
    assert_eq!(
        gw.metric(state).await,
        Some(0.0),
        "circuit should be closed"
    );
    let (s, r) = complex(&gw, &body).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["model"], "cloud-model");
    assert_eq!(cloud.hits(), 4);
}

#[tokio::test]
async fn restricted_requests_stay_off_the_cloud_when_the_edge_is_overloaded() {
    let cloud = FaultyCloud::start(Mode::Ok).await;
    let gw = gateway(
        &cloud,
        &[
            ("EDGE_GATEWAY__ENGINE__MAX_QUEUE", "1"),
            ("EDGE_GATEWAY__ENGINE__MAX_CONCURRENT_SEQUENCES", "1"),
            ("EDGE_GATEWAY__ENGINE__WORKERS", "1"),
        ],
    )
    .await;
    let mut body = chat("Patient record for bed 4");
    body["max_tokens"] = json!(200);
    body["ignore_eos"] = json!(true);
    let requests = (0..8).map(|_| {
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .header("x-data-classification", "restricted")
            .header("x-complexity-score", "0.99")
            .json(&body)
            .send()
    });
    let responses = futures_util::future::join_all(requests).await;
    let statuses: Vec<u16> = responses
        .into_iter()
        .map(|r| r.expect("request").status().as_u16())
        .collect();
    assert!(
        statuses.contains(&429),
        "edge was never overloaded: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(cloud.hits(), 0, "restricted data reached the cloud");
}

#[tokio::test]
async fn requests_the_edge_cannot_serve_are_refused_before_routing() {
    let cloud = FaultyCloud::start(Mode::Ok).await;
    let gw = gateway(&cloud, &[]).await;
    for (field, value) in [("n", json!(2)), ("logprobs", json!(true))] {
        let mut body = chat("Plan the week");
        body[field] = value;
        let (s, r) = complex(&gw, &body).await;
        assert_eq!(s, 400, "{r}");
        assert_eq!(r["error"]["param"], field, "{r}");
    }
    assert_eq!(cloud.hits(), 0, "an invalid request was relayed");
}

/// `Server-Timing` of a response as `(metric, milliseconds)` in header order.
fn server_timing(r: &reqwest::Response) -> Vec<(String, f64)> {
    let value = r
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .expect("server-timing header");
    value
        .split(", ")
        .map(|m| {
            let (name, dur) = m.split_once(";dur=").expect("metric;dur=ms");
            (name.to_string(), dur.parse().expect("milliseconds"))
        })
        .collect()
}

#[tokio::test]
async fn server_timing_tells_the_upstream_wait_from_the_gateway_time() {
    let cloud = FaultyCloud::start(Mode::Slow(Duration::from_millis(150))).await;
    let gw = gateway(&cloud, &[]).await;
    let send = |headers: &'static [(&'static str, &'static str)]| {
        let mut req = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .json(&chat("Plan the week"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };

    // Relayed from a slow upstream: its 150 ms are the upstream's, not the gateway's.
    let r = send(&[("x-complexity-score", "0.9")])
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let t = server_timing(&r);
    let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["route", "upstream", "total"], "{t:?}");
    let (route, upstream, total) = (t[0].1, t[1].1, t[2].1);
    assert!(upstream >= 150.0, "{t:?}");
    assert!(route + upstream <= total + 0.01, "{t:?}");

    // A hanging upstream, then the edge: the wait for the failed attempt is counted.
    cloud.set(Mode::Hang);
    let r = send(&[("x-complexity-score", "0.9")])
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-edge-route"], "edge");
    let t = server_timing(&r);
    assert_eq!(t[1].0, "upstream", "{t:?}");
    assert!(t[1].1 >= 400.0, "first-byte timeout is 400 ms: {t:?}");

    // Served by the edge alone: no upstream metric.
    let r = send(&[]).await.expect("request");
    assert_eq!(r.status(), 200);
    let t = server_timing(&r);
    let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["route", "total"], "{t:?}");
    assert!(t[0].1 <= t[1].1, "{t:?}");
}
