//! Memory admission through the real binary: the KV budget (memory budget minus weights) caps
//! the context, refuses a request whose KV does not fit while others hold it (429 with
//! Retry-After), sheds non-restricted requests to the cloud instead when the policy has that
//! fallback, and reports itself in /readyz and /metrics.

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on unexpected responses"
)]

mod common;

use common::fake_cloud::{FaultyCloud, Mode};
use common::{Gateway, GENAI_MODEL};
use serde_json::{json, Value};

/// KV positions the budget holds in these tests.
const BUDGET_TOKENS: u64 = 400;

async fn gateway(cloud: &FaultyCloud) -> Gateway {
    let budget = common::tiny_memory_budget(BUDGET_TOKENS);
    Gateway::start(
        GENAI_MODEL,
        &[
            ("EDGE_GATEWAY__ENGINE__MEMORY_BUDGET_BYTES", budget.as_str()),
            ("EDGE_GATEWAY__ENGINE__RUNTIME_OVERHEAD_BYTES", "0"),
            ("EDGE_GATEWAY__CACHE__ENABLED", "false"),
            (
                "EDGE_GATEWAY__UPSTREAMS__CLOUD__BASE_URL",
                cloud.base.as_str(),
            ),
        ],
    )
    .await
}

/// About 300 positions: one fits the 400-position budget, two do not.
fn big(restricted: bool) -> (Value, Vec<(&'static str, &'static str)>) {
    let body = json!({"model": "edge-tiny-genai", "prompt": "The shift report for line four",
        "max_tokens": 290, "ignore_eos": true, "temperature": 0});
    let headers = if restricted {
        vec![("x-data-classification", "restricted")]
    } else {
        vec![]
    };
    (body, headers)
}

async fn send(gw: &Gateway, body: &Value, headers: &[(&str, &str)]) -> (u16, Value, bool) {
    let mut req = gw.client.post(gw.url("/v1/completions")).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let retry_after = r.headers().contains_key("retry-after");
    (status, r.json().await.expect("json"), retry_after)
}

#[tokio::test]
async fn budget_caps_context_and_refuses_what_does_not_fit_now() {
    let cloud = FaultyCloud::start(Mode::Ok).await;
    let gw = gateway(&cloud).await;
    let (s, ready) = gw.get_json("/readyz").await;
    assert_eq!(s, 200);
    assert_eq!(ready["context_length"], BUDGET_TOKENS, "{ready}");
    assert_eq!(ready["effective_context"], BUDGET_TOKENS, "{ready}");
    // Never fits the budget: restricted data cannot go elsewhere, so it is too long.
    let (mut body, headers) = big(true);
    body["max_tokens"] = json!(450);
    let (s, r, _) = send(&gw, &body, &headers).await;
    assert_eq!(s, 400, "{r}");
    assert_eq!(r["error"]["code"], "context_length_exceeded");
    // Four at once, each needing most of the budget: one runs, the others are refused.
    let (body, headers) = big(true);
    let results = futures_util::future::join_all((0..4).map(|_| send(&gw, &body, &headers))).await;
    let ok = results.iter().filter(|(s, _, _)| *s == 200).count();
    let refused: Vec<&(u16, Value, bool)> = results.iter().filter(|(s, _, _)| *s == 429).collect();
    assert!(ok >= 1, "{results:?}");
    assert!(
        !refused.is_empty(),
        "the budget admitted everything: {results:?}"
    );
    assert_eq!(ok + refused.len(), 4, "{results:?}");
    for (_, r, retry_after) in &refused {
        assert_eq!(r["error"]["code"], "kv_budget_exhausted", "{r}");
        assert_eq!(r["error"]["type"], "rate_limit_error");
        assert!(retry_after, "429 without Retry-After");
    }
    assert_eq!(cloud.hits(), 0, "restricted data reached the cloud");
    // Everything released (the worker retires a sequence just after its last event): the full
    // budget is available again and reported.
    let mut ready = Value::Null;
    for _ in 0..40 {
        ready = gw.get_json("/readyz").await.1;
        if ready["effective_context"] == BUDGET_TOKENS {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(ready["effective_context"], BUDGET_TOKENS, "{ready}");
    assert_eq!(ready["memory_pressure"], 0.0, "{ready}");
    let budget = gw.metric("edge_gateway_kv_budget_bytes").await;
    assert!(budget.is_some_and(|b| b > 0.0));
    assert_eq!(gw.metric("edge_gateway_kv_reserved_bytes").await, Some(0.0));
    let rss = gw
        .metric("edge_gateway_process_resident_memory_bytes")
        .await;
    assert!(rss.is_some_and(|b| b > 1e6), "{rss:?}");
}

#[tokio::test]
async fn a_full_edge_sheds_non_restricted_requests_to_the_cloud() {
    let cloud = FaultyCloud::start(Mode::Ok).await;
    let gw = gateway(&cloud).await;
    let (body, headers) = big(false);
    let results = futures_util::future::join_all((0..4).map(|_| send(&gw, &body, &headers))).await;
    assert!(
        results.iter().all(|(s, _, _)| *s == 200),
        "a request was refused instead of shed: {results:?}"
    );
    let on_edge = results
        .iter()
        .filter(|(_, r, _)| r["model"] == "edge-tiny-genai")
        .count();
    let on_cloud = results
        .iter()
        .filter(|(_, r, _)| r["model"] == "cloud-model")
        .count();
    assert!(on_edge >= 1 && on_cloud >= 1, "{results:?}");
    assert_eq!(cloud.hits(), on_cloud);
    let shed = gw
        .metric("edge_gateway_routing_fallbacks_total{from=\"edge\",reason=\"kv_budget_full\"}")
        .await;
    assert_eq!(shed, Some(on_cloud as f64));
}
