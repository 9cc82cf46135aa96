//! Every error the API can return has OpenAI's shape and the right status code, and the
//! read-only endpoints describe the served model.

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on unexpected responses"
)]

mod common;

use common::{Gateway, GENAI_MODEL};
use serde_json::{json, Value};

fn assert_openai_error(body: &Value, param: Option<&str>) {
    let err = &body["error"];
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(err["type"].is_string(), "{body}");
    assert!(
        err.get("code").is_some() && err.get("param").is_some(),
        "{body}"
    );
    if let Some(p) = param {
        assert_eq!(err["param"], p, "{body}");
    }
}

async fn raw_post(
    gw: &Gateway,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = gw
        .client
        .post(gw.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON ({status}): {text}")),
        headers,
    )
}

#[tokio::test]
async fn error_cases_return_openai_shape_and_status() {
    let gw = Gateway::start(
        GENAI_MODEL,
        &[("EDGE_GATEWAY__SERVER__MAX_BODY_BYTES", "4096")],
    )
    .await;
    let id = gw.model_id().await;
    let chat = "/v1/chat/completions";

    let (s, b, _) = raw_post(&gw, chat, "{\"model\": ").await;
    assert_eq!(s, 400);
    assert_openai_error(&b, None);
    assert_eq!(b["error"]["code"], "invalid_json");

    let (s, b) = gw.post_json(chat, &json!({"model": id})).await;
    assert_eq!(s, 400);
    assert_openai_error(&b, Some("messages"));

    let (s, b) = gw
        .post_json(
            chat,
            &json!({"model": id, "messages": [{"role": "user", "content": 5}]}),
        )
        .await;
    assert_eq!(s, 400);
    assert_openai_error(&b, None);

    let (s, b) = gw
        .post_json(
            chat,
            &json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(s, 404);
    assert_openai_error(&b, Some("model"));
    assert_eq!(b["error"]["code"], "model_not_found");

    let (s, b) = gw
        .post_json(
            chat,
            &json!({"model": id, "messages": [{"role": "user", "content": "hi"}], "n": 2}),
        )
        .await;
    assert_eq!(s, 400);
    assert_openai_error(&b, Some("n"));

    // Restricted data is never escalated: over the edge context it is a 400, not a cloud call.
    let restricted = |body: Value| {
        gw.client
            .post(gw.url(chat))
            .header("x-data-classification", "restricted")
            .json(&body)
            .send()
    };
    let r = restricted(
        json!({"model": id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}),
    )
    .await
    .expect("request");
    let s = r.status().as_u16();
    let b: Value = r.json().await.expect("json");
    assert_eq!(s, 400);
    assert_openai_error(&b, None);
    assert_eq!(b["error"]["code"], "context_length_exceeded");

    let long_prompt = "word ".repeat(700);
    let r = gw
        .client
        .post(gw.url("/v1/completions"))
        .header("x-data-classification", "restricted")
        .json(&json!({"model": id, "prompt": long_prompt, "max_tokens": 1}))
        .send()
        .await
        .expect("request");
    let s = r.status().as_u16();
    let b: Value = r.json().await.expect("json");
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["code"], "context_length_exceeded");

    let big = format!("{{\"model\":\"{id}\",\"prompt\":\"{}\"}}", "x".repeat(8192));
    let (s, b, _) = raw_post(&gw, "/v1/completions", big).await;
    assert_eq!(s, 413);
    assert_openai_error(&b, None);

    let (s, b) = gw
        .post_json(
            "/v1/completions",
            &json!({"model": id, "prompt": [999999], "max_tokens": 2}),
        )
        .await;
    assert_eq!(s, 400);
    assert_openai_error(&b, Some("prompt"));

    let (s, b) = gw.post_json(chat, &json!({"model": id, "messages": [{"role": "user", "content": "hi"}], "temperature": -1})).await;
    assert_eq!(s, 400);
    assert_openai_error(&b, Some("temperature"));

    let r = gw
        .client
        .get(gw.url("/v1/nothing-here"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
    assert_openai_error(&r.json::<Value>().await.expect("json"), None);

    let r = gw.client.get(gw.url(chat)).send().await.expect("request");
    assert_eq!(r.status(), 405);
    assert_openai_error(&r.json::<Value>().await.expect("json"), None);
}

#[tokio::test]
async fn full_queue_answers_429_with_retry_after() {
    let gw = Gateway::start(
        GENAI_MODEL,
        &[
            ("EDGE_GATEWAY__ENGINE__WORKERS", "1"),
            ("EDGE_GATEWAY__ENGINE__MAX_CONCURRENT_SEQUENCES", "1"),
            ("EDGE_GATEWAY__ENGINE__MAX_QUEUE", "1"),
        ],
    )
    .await;
    let id = gw.model_id().await;
    let body = json!({"model": id, "prompt": "The", "max_tokens": 400, "ignore_eos": true, "temperature": 0});
    let requests = (0..6).map(|_| {
        let client = gw.client.clone();
        let url = gw.url("/v1/completions");
        let body = body.clone();
        tokio::spawn(async move {
            // Restricted: no cloud fallback to shed to, so a full edge must answer 429.
            let r = client
                .post(url)
                .header("x-data-classification", "restricted")
                .json(&body)
                .send()
                .await
                .expect("request");
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or("").to_string());
            let json: Value = r.json().await.expect("json");
            (status, retry, json)
        })
    });
    let results: Vec<_> = futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.expect("join"))
        .collect();
    let rejected: Vec<_> = results.iter().filter(|(s, _, _)| *s == 429).collect();
    let ok = results.iter().filter(|(s, _, _)| *s == 200).count();
    assert!(ok >= 1, "{results:?}");
    assert!(!rejected.is_empty(), "no request was rejected: {results:?}");
    for (_, retry, json) in rejected {
        assert!(
            retry.as_deref().is_some_and(|r| r.parse::<u64>().is_ok()),
            "Retry-After missing"
        );
        assert_openai_error(json, None);
        assert_eq!(json["error"]["type"], "rate_limit_error");
    }
}

#[tokio::test]
async fn models_health_and_metrics_endpoints() {
    let gw = Gateway::start(GENAI_MODEL, &[]).await;
    let models: Value = gw
        .client
        .get(gw.url("/v1/models"))
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "edge-tiny-genai");
    assert_eq!(models["data"][0]["metadata"]["execution_provider"], "cpu");
    let one = gw
        .client
        .get(gw.url("/v1/models/edge-tiny-genai"))
        .send()
        .await
        .expect("r");
    assert_eq!(one.status(), 200);
    let missing = gw
        .client
        .get(gw.url("/v1/models/nope"))
        .send()
        .await
        .expect("r");
    assert_eq!(missing.status(), 404);
    assert_eq!(
        gw.client
            .get(gw.url("/healthz"))
            .send()
            .await
            .expect("r")
            .status(),
        200
    );
    let ready: Value = gw
        .client
        .get(gw.url("/readyz"))
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["status"], "ready");

    let (s, _) = gw
        .post_json(
            "/v1/completions",
            &json!({"model": "edge-tiny-genai", "prompt": "Hello", "max_tokens": 3}),
        )
        .await;
    assert_eq!(s, 200);
    let metrics = gw
        .client
        .get(gw.url("/metrics"))
        .send()
        .await
        .expect("r")
        .text()
        .await
        .expect("text");
    for name in [
        "edge_gateway_requests_total",
        "edge_gateway_time_to_first_token_seconds_bucket",
        "edge_gateway_request_duration_seconds_bucket",
        "edge_gateway_generated_tokens_total",
        "edge_gateway_requests_in_flight",
        "edge_gateway_model_info",
    ] {
        assert!(metrics.contains(name), "missing {name} in /metrics");
    }
}
