//! The KV prefix cache changes speed, never output: greedy ids with a cache hit equal the ids
//! computed cold, for exact, longest-prefix and multi-turn hits in both layouts; the byte budget
//! holds under many distinct prompts; concurrent requests share a prefix safely; pinned system
//! prompts survive eviction pressure.

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on unexpected responses"
)]

mod common;

use common::{Gateway, GENAI_MODEL, OPTIMUM_MODEL};
use serde_json::{json, Value};

const SYSTEM: &str = "You are the maintenance assistant of the factory in Zürich. Answer briefly. \
    Report the state of the machines on every line, the weather, and the deliveries for the branch office.";

fn chat_body(model: &str, messages: Value) -> Value {
    json!({"model": model, "messages": messages, "temperature": 0, "max_tokens": 24, "return_token_ids": true})
}

/// Runs `body` with the cache bypassed, then through the cache, and returns (cold, cached) ids
/// along with how many prompt tokens the cached run restored.
async fn cold_and_cached(gw: &Gateway, body: &Value) -> (Value, Value, f64) {
    let cold = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .header("x-edge-cache", "off")
        .json(body)
        .send()
        .await
        .expect("request")
        .json::<Value>()
        .await
        .expect("json");
    let before = gw
        .metric("edge_gateway_prompt_tokens_cached_total")
        .await
        .unwrap_or(0.0);
    let (status, cached) = gw.post_json("/v1/chat/completions", body).await;
    assert_eq!(status, 200, "{cached}");
    let after = gw
        .metric("edge_gateway_prompt_tokens_cached_total")
        .await
        .unwrap_or(0.0);
    (
        cold["choices"][0]["token_ids"].clone(),
        cached["choices"][0]["token_ids"].clone(),
        after - before,
    )
}

async fn hits_match_cold_output(model_dir: &str) {
    let gw = Gateway::start(model_dir, &[]).await;
    let id = gw.model_id().await;
    let sys = json!({"role": "system", "content": SYSTEM});

    // Exact: the same request twice; the second restores everything but the last block.
    let first = chat_body(
        &id,
        json!([sys, {"role": "user", "content": "What is the status of the press on line 4?"}]),
    );
    let (status, warm) = gw.post_json("/v1/chat/completions", &first).await;
    assert_eq!(status, 200);
    let (cold, cached, restored) = cold_and_cached(&gw, &first).await;
    assert!(
        restored >= 32.0,
        "exact repeat restored only {restored} tokens"
    );
    assert_eq!(cached, cold, "exact hit changed the output");
    assert_eq!(warm["choices"][0]["token_ids"], cold);

    // Longest prefix: same system prompt, different question.
    let other = chat_body(
        &id,
        json!([sys, {"role": "user", "content": "What is the weather in Málaga?"}]),
    );
    let (cold, cached, restored) = cold_and_cached(&gw, &other).await;
    assert!(
        restored >= 32.0,
        "shared system prompt restored only {restored} tokens"
    );
    assert_eq!(cached, cold, "longest-prefix hit changed the output");

    // Multi-turn: the follow-up reuses the first turn's state.
    let (_, turn1) = gw.post_json("/v1/chat/completions", &first).await;
    let reply = turn1["choices"][0]["message"]["content"]
        .as_str()
        .expect("reply")
        .to_string();
    let follow = chat_body(
        &id,
        json!([sys,
            {"role": "user", "content": "What is the status of the press on line 4?"},
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "Thank you."}]),
    );
    let (cold, cached, restored) = cold_and_cached(&gw, &follow).await;
    assert!(
        restored >= 48.0,
        "follow-up turn restored only {restored} tokens"
    );
    assert_eq!(cached, cold, "multi-turn hit changed the output");
}

#[tokio::test]
async fn cache_hits_give_identical_greedy_ids_genai() {
    hits_match_cold_output(GENAI_MODEL).await;
}

#[tokio::test]
async fn cache_hits_give_identical_greedy_ids_optimum() {
    hits_match_cold_output(OPTIMUM_MODEL).await;
}

#[tokio::test]
async fn byte_budget_holds_and_pinned_prompt_survives_pressure() {
    let budget = 64 * 1024;
    let config = format!(
        "cache:\n  max_bytes: {budget}\n  pinned_system_prompts:\n    - {}\n",
        serde_json::to_string(SYSTEM).expect("json")
    );
    let gw = Gateway::start_with_config(GENAI_MODEL, Some(&config), &[]).await;
    let id = gw.model_id().await;
    let pinned = gw
        .metric("edge_gateway_prefix_cache_pinned_bytes")
        .await
        .unwrap_or(0.0);
    assert!(
        pinned > 0.0,
        "pinned system prompt was not prefilled at startup"
    );
    for i in 0..40 {
        let prompt = format!("Delivery note {i}: the van from the branch office number {i} brings valves and pumps for line {i}.");
        let (s, _) = gw
            .post_json(
                "/v1/completions",
                &json!({"model": id, "prompt": prompt, "max_tokens": 4, "temperature": 0}),
            )
            .await;
        assert_eq!(s, 200);
    }
    let bytes = gw
        .metric("edge_gateway_prefix_cache_bytes")
        .await
        .expect("cache bytes gauge");
    assert!(
        bytes <= f64::from(budget),
        "cache holds {bytes} bytes, budget {budget}"
    );
    assert!(
        gw.metric("edge_gateway_prefix_cache_evictions_total")
            .await
            .unwrap_or(0.0)
            > 0.0
    );
    // The pinned system prompt is still restored after all that pressure.
    let body = chat_body(
        &id,
        json!([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello!"}]),
    );
    let (cold, cached, restored) = cold_and_cached(&gw, &body).await;
    assert!(
        restored >= 32.0,
        "pinned prompt restored only {restored} tokens"
    );
    assert_eq!(cached, cold);
}

#[tokio::test]
async fn concurrent_requests_sharing_a_prefix_agree() {
    let gw = Gateway::start(GENAI_MODEL, &[("EDGE_GATEWAY__ENGINE__WORKERS", "2")]).await;
    let id = gw.model_id().await;
    let body = chat_body(
        &id,
        json!([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello!"}]),
    );
    let (_, reference) = gw.post_json("/v1/chat/completions", &body).await;
    let tasks = (0..6).map(|_| {
        let client = gw.client.clone();
        let url = gw.url("/v1/chat/completions");
        let body = body.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("request")
                .json::<Value>()
                .await
                .expect("json")
        })
    });
    for r in futures_util::future::join_all(tasks).await {
        let r = r.expect("join");
        assert_eq!(
            r["choices"][0]["token_ids"],
            reference["choices"][0]["token_ids"]
        );
    }
    assert!(
        gw.metric("edge_gateway_prefix_cache_hits_total")
            .await
            .unwrap_or(0.0)
            >= 6.0
    );
}
