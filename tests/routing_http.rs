//! Routing through the HTTP API with a fake cloud upstream (a real HTTP server on 127.0.0.1
//! recording every body it receives): each branch of `policies/default.yaml`, restricted data
//! (labelled, or detected by the PII detector) never reaching the upstream, streaming relay,
//! human review, the semantic scorers, and the explain endpoint.

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on unexpected responses"
)]

mod common;

use common::recorder::Recorder as FakeCloud;
use common::{sse_data, Gateway, GENAI_MODEL};
use serde_json::{json, Value};

async fn gateway_with_cloud(cloud: &FakeCloud) -> Gateway {
    Gateway::start(
        GENAI_MODEL,
        &[("EDGE_GATEWAY__UPSTREAMS__CLOUD__BASE_URL", &cloud.v1())],
    )
    .await
}

async fn post_with_headers(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Value) {
    let mut req = gw.client.post(gw.url(path)).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

fn chat(content: &str) -> Value {
    json!({"model": "edge-tiny-genai", "messages": [{"role": "user", "content": content}], "max_tokens": 16, "temperature": 0})
}

#[tokio::test]
async fn default_policy_branches_route_as_written() {
    let cloud = FakeCloud::start().await;
    let gw = gateway_with_cloud(&cloud).await;

    // Otherwise -> edge.
    let (s, r) = post_with_headers(&gw, "/v1/chat/completions", &[], &chat("Hello!")).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["model"], "edge-tiny-genai");
    assert!(cloud.received().is_empty());

    // Complexity above 0.72 -> cloud, body relayed.
    let (s, r) = post_with_headers(
        &gw,
        "/v1/chat/completions",
        &[("x-complexity-score", "0.9")],
        &chat("Plan the week"),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["choices"][0]["message"]["content"], "from the cloud");
    assert_eq!(cloud.received().len(), 1);
    assert_eq!(
        cloud.received()[0]["messages"][0]["content"],
        "Plan the week"
    );

    // Over the edge context -> cloud.
    let mut long = chat("Summarise the shift log");
    long["max_tokens"] = json!(5000);
    let (s, _) = post_with_headers(&gw, "/v1/chat/completions", &[], &long).await;
    assert_eq!(s, 200);
    assert_eq!(cloud.received().len(), 2);

    // Risk >= 80 -> human review: 202 with an id that can be polled.
    let (s, r) = post_with_headers(
        &gw,
        "/v1/chat/completions",
        &[("x-risk-score", "85")],
        &chat("Change the dosage"),
    )
    .await;
    assert_eq!(s, 202, "{r}");
    let id = r["id"].as_str().expect("review id");
    let status: Value = gw
        .client
        .get(gw.url(&format!("/v1/reviews/{id}")))
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert_eq!(status["state"], "pending");
    assert_eq!(
        cloud.received().len(),
        2,
        "review requests must not reach the cloud"
    );
}

#[tokio::test]
async fn restricted_requests_never_reach_the_cloud() {
    let cloud = FakeCloud::start().await;
    let gw = gateway_with_cloud(&cloud).await;
    let restricted = [
        ("x-data-classification", "restricted"),
        ("x-complexity-score", "0.99"),
    ];
    // Complex restricted request: stays on the edge.
    let (s, r) = post_with_headers(
        &gw,
        "/v1/chat/completions",
        &restricted,
        &chat("Patient record"),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["model"], "edge-tiny-genai");
    // Too long for the edge: rejected, never escalated.
    let mut long = chat("Patient record");
    long["max_tokens"] = json!(5000);
    let (s, r) = post_with_headers(&gw, "/v1/chat/completions", &restricted, &long).await;
    assert_eq!(s, 400, "{r}");
    assert_eq!(r["error"]["code"], "context_length_exceeded");
    // Metadata says restricted too.
    let mut meta = chat("Patient record");
    meta["metadata"] = json!({"data_classification": "restricted", "complexity_score": "0.95"});
    let (s, _) = post_with_headers(&gw, "/v1/chat/completions", &[], &meta).await;
    assert_eq!(s, 200);
    assert!(
        cloud.received().is_empty(),
        "restricted data reached the cloud: {:?}",
        cloud.received()
    );
}

#[tokio::test]
async fn cloud_stream_is_relayed_as_sse() {
    let cloud = FakeCloud::start().await;
    let gw = gateway_with_cloud(&cloud).await;
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
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("body");
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    let content: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).expect("chunk"))
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(content, "from the cloud");
    assert_eq!(cloud.received()[0]["stream"], true);
}

#[tokio::test]
async fn unreachable_cloud_degrades_to_edge_and_bad_signals_are_400() {
    let gw = Gateway::start(
        GENAI_MODEL,
        &[(
            "EDGE_GATEWAY__UPSTREAMS__CLOUD__BASE_URL",
            "http://127.0.0.1:9/v1",
        )],
    )
    .await;
    // default.yaml's complexity rule falls back to the edge when the cloud fails.
    let (s, r) = post_with_headers(
        &gw,
        "/v1/chat/completions",
        &[("x-complexity-score", "0.9")],
        &chat("Plan"),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["model"], "edge-tiny-genai");
    let fallbacks = gw
        .metric("edge_gateway_routing_fallbacks_total{from=\"cloud\",reason=\"connect\"}")
        .await;
    assert_eq!(fallbacks, Some(1.0));
    let (s, r) = post_with_headers(
        &gw,
        "/v1/chat/completions",
        &[("x-risk-score", "high")],
        &chat("Plan"),
    )
    .await;
    assert_eq!(s, 400, "{r}");
    assert_eq!(r["error"]["param"], "x-risk-score");
}

#[tokio::test]
async fn explain_shows_decision_signals_and_policy_version() {
    let gw = Gateway::start(GENAI_MODEL, &[]).await;
    let (s, r) = post_with_headers(
        &gw,
        "/v1/route/explain",
        &[("x-risk-score", "90")],
        &chat("Change the dosage"),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["route"], "human_review");
    assert!(
        r["rule_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty() && id != "default"),
        "{r}"
    );
    assert_eq!(r["signals"]["risk_score"], 90.0);
    assert!(
        r["policy_version"].as_str().is_some_and(|v| v.len() == 12),
        "{r}"
    );
    let (_, r) = post_with_headers(&gw, "/v1/route/explain", &[], &chat("Hello!")).await;
    assert_eq!(r["route"], "edge");
}

#[tokio::test]
async fn broken_policy_edit_keeps_the_old_policy_and_a_good_one_is_picked_up() {
    let dir = std::env::temp_dir().join(format!("edge-gateway-policy-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let policy = dir.join("policy.yaml");
    let original = std::fs::read_to_string(common::repo_path("policies/default.yaml"))
        .expect("default policy");
    std::fs::write(&policy, &original).expect("write policy");
    let gw = Gateway::start(
        GENAI_MODEL,
        &[
            (
                "EDGE_GATEWAY__ROUTING__POLICY",
                policy.to_str().expect("utf8"),
            ),
            ("EDGE_GATEWAY__ROUTING__RELOAD_INTERVAL_MS", "100"),
        ],
    )
    .await;
    let version = |r: &Value| r["policy_version"].as_str().expect("version").to_string();
    let (_, before) = post_with_headers(&gw, "/v1/route/explain", &[], &chat("Hello!")).await;

    std::fs::write(
        &policy,
        "rules:\n  - id: broken\n    route: {cloud: nowhere}\n",
    )
    .expect("break policy");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while gw
        .metric("edge_gateway_policy_reloads_total{outcome=\"failed\"}")
        .await
        .unwrap_or(0.0)
        < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "broken policy was never noticed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, during) = post_with_headers(&gw, "/v1/route/explain", &[], &chat("Hello!")).await;
    assert_eq!(
        version(&during),
        version(&before),
        "a broken file replaced the active policy"
    );
    assert_eq!(during["route"], "edge");

    // A valid edit that rejects everything is applied without a restart.
    std::fs::write(
        &policy,
        "rules: []\ndefault: {route: {reject: closed for maintenance}}\n",
    )
    .expect("new policy");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, now) = post_with_headers(&gw, "/v1/route/explain", &[], &chat("Hello!")).await;
        if version(&now) != version(&before) {
            assert!(
                now["route"].as_str().is_some_and(|r| r.contains("reject")),
                "{now}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "valid policy edit was never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (s, r) = post_with_headers(&gw, "/v1/chat/completions", &[], &chat("Hello!")).await;
    assert_eq!(s, 403, "{r}");
    assert_eq!(r["error"]["code"], "policy_rejected");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn review_request_survives_kill_and_restart() {
    let db = std::env::temp_dir().join(format!(
        "edge-gateway-reviews-{}/reviews.db",
        uuid::Uuid::new_v4()
    ));
    let db_env = db.to_str().expect("utf8").to_string();
    let env = [("EDGE_GATEWAY__REVIEW__DB_PATH", db_env.as_str())];
    let first = Gateway::start(GENAI_MODEL, &env).await;
    let (s, r) = post_with_headers(
        &first,
        "/v1/chat/completions",
        &[("x-risk-score", "95")],
        &chat("Change the dosage"),
    )
    .await;
    assert_eq!(s, 202, "{r}");
    let id = r["id"].as_str().expect("id").to_string();
    // Dropping the harness kills the process with SIGKILL: no graceful shutdown.
    drop(first);
    let second = Gateway::start(GENAI_MODEL, &env).await;
    let status: Value = second
        .client
        .get(second.url(&format!("/v1/reviews/{id}")))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(status["state"], "pending", "{status}");
    let missing = second
        .client
        .get(second.url("/v1/reviews/rev_nope"))
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("json");
    assert!(body["error"]["message"].is_string());
    let _ = std::fs::remove_dir_all(db.parent().expect("dir"));
}

#[tokio::test]
async fn reviewer_approves_to_edge_or_rejects_and_the_answer_is_stored() {
    let gw = Gateway::start(GENAI_MODEL, &[]).await;
    let hold = |content: &'static str| {
        let gw = &gw;
        async move {
            let (s, r) = post_with_headers(
                gw,
                "/v1/chat/completions",
                &[("x-risk-score", "90")],
                &chat(content),
            )
            .await;
            assert_eq!(s, 202, "{r}");
            r["id"].as_str().expect("id").to_string()
        }
    };
    let approved = hold("Hello!").await;
    let rejected = hold("Change the dosage").await;

    let list: Value = gw
        .client
        .get(gw.url("/admin/reviews?state=pending"))
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert_eq!(list["data"].as_array().expect("list").len(), 2);

    let r = gw
        .client
        .post(gw.url(&format!("/admin/reviews/{approved}/approve")))
        .json(&json!({"route": "edge", "note": "fine"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let done: Value = r.json().await.expect("json");
    assert_eq!(done["state"], "completed", "{done}");
    assert!(
        done["result_json"]["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{done}"
    );
    let (_, status) = gw.get_json(&format!("/v1/reviews/{approved}")).await;
    assert_eq!(status["state"], "completed");
    assert_eq!(status["approved_route"], "edge");

    let reject = format!("/admin/reviews/{rejected}/reject");
    let (s, _) = gw.post_json(&reject, &json!({"note": "not allowed"})).await;
    assert_eq!(s, 200);
    // A decided review cannot be decided again.
    let approve = format!("/admin/reviews/{rejected}/approve");
    let (s, body) = gw.post_json(&approve, &json!({"route": "edge"})).await;
    assert_eq!(s, 409);
    assert!(body["error"]["message"].is_string());
    // An unknown upstream is an OpenAI-shaped 400.
    let (s, body) = gw
        .post_json(&approve, &json!({"route": "cloud:nowhere"}))
        .await;
    assert_eq!(s, 400);
    assert!(body["error"]["message"].is_string());
    let (s, body) = gw.post_json("/admin/policies/reload", &json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(body["status"], "reloaded");
}

#[tokio::test]
async fn a_valid_card_number_in_a_prompt_never_reaches_the_cloud() {
    let cloud = FakeCloud::start().await;
    let gw = gateway_with_cloud(&cloud).await;
    // Complex enough for the cloud by header; the card number keeps it on the edge.
    let card = chat("Charge the spare parts to card 4242 4242 4242 4242 and confirm");
    let (s, r) = post_with_headers(
        &gw,
        "/v1/chat/completions",
        &[("x-complexity-score", "0.95")],
        &card,
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["model"], "edge-tiny-genai");
    // Even a caller that labels it public cannot lower what the detector found.
    let (s, r) = post_with_headers(
        &gw,
        "/v1/chat/completions",
        &[
            ("x-complexity-score", "0.95"),
            ("x-data-classification", "public"),
        ],
        &card,
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["model"], "edge-tiny-genai");
    let (_, e) = post_with_headers(&gw, "/v1/route/explain", &[], &card).await;
    assert_eq!(e["rule_id"], "restricted-stays-on-edge", "{e}");
    assert_eq!(e["signals"]["data_classification"], "restricted");
    assert_eq!(
        e["signals"]["sources"]["data_classification"],
        "pii_detector"
    );
    assert_eq!(e["signals"]["pii"]["payment_card"], 1);
    assert!(
        !e.to_string().contains("4242"),
        "explain must not echo the identifier: {e}"
    );
    // An invalid checksum is not a card: that request may go to the cloud.
    let (s, _) = post_with_headers(
        &gw,
        "/v1/chat/completions",
        &[("x-complexity-score", "0.95")],
        &chat("Order 4242 4242 4242 4241 shipped"),
    )
    .await;
    assert_eq!(s, 200);
    let received = cloud.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(
        !received
            .iter()
            .any(|b| b.to_string().contains("4242 4242 4242 4242")),
        "the card number reached the cloud: {received:?}"
    );
}

#[tokio::test]
async fn semantic_scorers_route_without_headers_and_explain_says_which_scorer() {
    let gw = Gateway::start(GENAI_MODEL, &[]).await;
    let complex = chat(
        "Design a fault-tolerant replication scheme for our warehouse databases across \
         twelve sites with flaky links, and reason step by step about consistency trade-offs.",
    );
    let (s, e) = post_with_headers(&gw, "/v1/route/explain", &[], &complex).await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["signals"]["scorer"], "semantic", "{e}");
    assert_eq!(e["signals"]["sources"]["complexity_score"], "semantic");
    assert_eq!(e["rule_id"], "complex-to-cloud", "{e}");
    assert_eq!(e["signals"]["semantic"]["complexity"]["label"], "complex");
    let dosage = chat("How many milligrams of morphine can I give a 30 kg child?");
    let (_, e) = post_with_headers(&gw, "/v1/route/explain", &[], &dosage).await;
    assert_eq!(e["route"], "human_review", "{e}");
    assert_eq!(e["signals"]["sources"]["risk_score"], "semantic");
    let (_, e) = post_with_headers(&gw, "/v1/route/explain", &[], &chat("Hello!")).await;
    assert_eq!(e["route"], "edge", "{e}");
    // Explicit signals still win over the scorers.
    let (_, e) = post_with_headers(
        &gw,
        "/v1/route/explain",
        &[("x-complexity-score", "0.1")],
        &complex,
    )
    .await;
    assert_eq!(e["route"], "edge", "{e}");
    assert_eq!(e["signals"]["sources"]["complexity_score"], "header");
    drop(gw);

    // Without the embedding model the heuristics score, and explain says so.
    let gw = Gateway::start(
        GENAI_MODEL,
        &[("EDGE_GATEWAY__EMBEDDINGS__ENABLED", "false")],
    )
    .await;
    let (_, e) = post_with_headers(&gw, "/v1/route/explain", &[], &complex).await;
    assert_eq!(e["signals"]["scorer"], "heuristic", "{e}");
    assert_eq!(e["signals"]["sources"]["complexity_score"], "heuristic");
    assert!(e["signals"]["semantic"].is_null());
    // The pattern detector needs no model.
    let card = chat("Card 5555 5555 5555 4444 please");
    let (_, e) = post_with_headers(&gw, "/v1/route/explain", &[], &card).await;
    assert_eq!(e["signals"]["data_classification"], "restricted", "{e}");
}
