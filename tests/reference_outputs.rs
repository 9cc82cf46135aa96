//! Greedy generation through the HTTP API reproduces, token for token, the ids that
//! onnxruntime-genai / a plain ONNX Runtime loop produced in Python for the committed models.

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on unexpected responses"
)]

mod common;

use common::{repo_path, Gateway, GENAI_MODEL, OPTIMUM_MODEL};
use serde_json::{json, Value};

fn fixtures() -> Value {
    let text = std::fs::read_to_string(repo_path("tests/fixtures/reference_greedy.json"))
        .expect("fixture file");
    serde_json::from_str(&text).expect("fixture JSON")
}

async fn check_model(model_dir: &str) {
    let fx = fixtures();
    let max_new = fx["max_new_tokens"].as_u64().expect("max_new_tokens");
    let gw = Gateway::start(model_dir, &[]).await;
    let id = gw.model_id().await;
    let cases: Vec<&Value> = fx["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["model"] == id.as_str())
        .collect();
    assert!(
        cases.len() >= 3,
        "expected reference cases for {id}, found {}",
        cases.len()
    );
    for case in cases {
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
}

#[tokio::test]
async fn genai_layout_greedy_ids_match_reference() {
    check_model(GENAI_MODEL).await;
}

#[tokio::test]
async fn optimum_layout_greedy_ids_match_reference() {
    check_model(OPTIMUM_MODEL).await;
}
