//! Greedy generation through the HTTP API reproduces, token for token, the ids that
//! onnxruntime-genai / a plain ONNX Runtime loop produced in Python for the committed models —
//! including the float16 build, whose KV cache, prefix-cache blocks and logits are float16, and
//! the dynamic-int8 rewrite (`MatMulInteger`, per-row activation scales) the benchmark model uses.

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on unexpected responses"
)]

mod common;

use common::{repo_path, Gateway, GENAI_DQ_MODEL, GENAI_FP16_MODEL, GENAI_MODEL, OPTIMUM_MODEL};
use serde_json::{json, Value};

const FIXTURE: &str = "tests/fixtures/reference_greedy.json";
const FP16_FIXTURE: &str = "tests/fixtures/reference_greedy_fp16.json";
const DQ_FIXTURE: &str = "tests/fixtures/reference_greedy_dq.json";

fn fixtures(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_path(path)).expect("fixture file");
    serde_json::from_str(&text).expect("fixture JSON")
}

/// The fixture's cases for the model `gw` serves.
fn cases_for(fx: &Value, id: &str) -> Vec<Value> {
    let cases: Vec<Value> = fx["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["model"] == id)
        .cloned()
        .collect();
    assert!(
        cases.len() >= 3,
        "expected reference cases for {id}, found {}",
        cases.len()
    );
    cases
}

/// Sends one case greedily and checks prompt ids, generated ids, finish reason and usage.
async fn check_case(gw: &Gateway, id: &str, case: &Value, max_new: u64) {
    let (path, mut body) = match case["kind"].as_str() {
        Some("chat") => (
            "/v1/chat/completions",
            json!({"messages": case["messages"]}),
        ),
        _ => ("/v1/completions", json!({"prompt": case["prompt"]})),
    };
    body["model"] = json!(id);
    body["temperature"] = json!(0);
    body["max_tokens"] = case
        .get("max_new_tokens")
        .cloned()
        .unwrap_or(json!(max_new));
    body["return_token_ids"] = json!(true);
    let (status, resp) = gw.post_json(path, &body).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        resp["prompt_token_ids"], case["input_ids"],
        "prompt ids differ for {case}"
    );
    assert_eq!(
        resp["choices"][0]["token_ids"], case["output_ids"],
        "greedy ids differ for {case}"
    );
    assert_eq!(
        resp["choices"][0]["finish_reason"], case["finish_reason"],
        "finish reason for {case}"
    );
    let n_out = case["output_ids"].as_array().expect("ids").len();
    assert_eq!(resp["usage"]["completion_tokens"], json!(n_out));
}

async fn check_model(model_dir: &str, fixture: &str) {
    let fx = fixtures(fixture);
    let max_new = fx["max_new_tokens"].as_u64().expect("max_new_tokens");
    let gw = Gateway::start(model_dir, &[]).await;
    let id = gw.model_id().await;
    for case in cases_for(&fx, &id) {
        check_case(&gw, &id, &case, max_new).await;
    }
}

#[tokio::test]
async fn genai_layout_greedy_ids_match_reference() {
    check_model(GENAI_MODEL, FIXTURE).await;
}

#[tokio::test]
async fn optimum_layout_greedy_ids_match_reference() {
    check_model(OPTIMUM_MODEL, FIXTURE).await;
}

#[tokio::test]
async fn float16_genai_greedy_ids_match_reference() {
    check_model(GENAI_FP16_MODEL, FP16_FIXTURE).await;
}

#[tokio::test]
async fn dynamic_int8_genai_greedy_ids_match_reference() {
    check_model(GENAI_DQ_MODEL, DQ_FIXTURE).await;
}

/// The rewrite runs batched decode steps through other kernels (QGemm with several rows):
/// concurrent chats, restored from the prefix cache, must still give the reference ids.
#[tokio::test]
async fn dynamic_int8_prefix_cache_and_batched_decode_reproduce_reference() {
    let gw = Gateway::start(GENAI_DQ_MODEL, &[]).await;
    concurrent_chats_reproduce_reference(&gw, DQ_FIXTURE).await;
}

/// The float16 package's chats again, all at once (one batched decode over several slots) and
/// after their first run stored their prompts' KV: restored float16 prefix blocks and batched
/// float16 decoding must give the reference ids too, and the cache weighs blocks at 2 bytes
/// per element.
#[tokio::test]
async fn float16_prefix_cache_and_batched_decode_reproduce_reference() {
    let gw = Gateway::start(GENAI_FP16_MODEL, &[]).await;
    concurrent_chats_reproduce_reference(&gw, FP16_FIXTURE).await;
    // One 16-token block: 2 (key, value) x 4 layers x 2 KV heads x 32 x 16 positions x 2 bytes,
    // plus its 16 token ids.
    let block_bytes = 2.0 * 4.0 * 2.0 * 32.0 * 16.0 * 2.0 + 16.0 * 4.0;
    let cached = gw
        .metric("edge_gateway_prefix_cache_bytes")
        .await
        .expect("prefix cache bytes");
    assert!(
        cached > 0.0 && cached % block_bytes == 0.0,
        "{cached} bytes is not a whole number of float16 blocks of {block_bytes}"
    );
}

/// The fixture's chats one by one (storing their prompts' KV), then all at once: the second
/// round must restore cached prefixes and share decode steps, and still give the reference ids.
async fn concurrent_chats_reproduce_reference(gw: &Gateway, fixture: &str) {
    let fx = fixtures(fixture);
    let max_new = fx["max_new_tokens"].as_u64().expect("max_new_tokens");
    let id = gw.model_id().await;
    let chats: Vec<Value> = cases_for(&fx, &id)
        .into_iter()
        .filter(|c| c["kind"] == "chat")
        .collect();
    for case in &chats {
        check_case(gw, &id, case, max_new).await;
    }
    let counter = |name: &'static str| async { gw.metric(name).await.unwrap_or(0.0) };
    let hits_before = counter("edge_gateway_prefix_cache_hits_total").await;
    // Decode steps with more than one sequence = all steps - steps of batch size 1.
    let multi = || async {
        counter("edge_gateway_batch_size_count").await
            - counter("edge_gateway_batch_size_bucket{le=\"1\"}").await
    };
    let multi_before = multi().await;
    let runs = chats.iter().map(|c| check_case(gw, &id, c, max_new));
    futures_util::future::join_all(runs).await;
    let hits = counter("edge_gateway_prefix_cache_hits_total").await;
    assert!(
        hits > hits_before,
        "no cached prefix was restored ({hits_before} -> {hits})"
    );
    let multi_after = multi().await;
    assert!(
        multi_after > multi_before,
        "the concurrent chats never shared a decode step"
    );
}
