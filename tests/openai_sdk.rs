//! The official OpenAI Python SDK works against the gateway by changing only `base_url`:
//! models list, chat (plain and streamed with usage), completions, embeddings (the SDK's default
//! base64 encoding and float), and typed errors.
//! `make test` installs the pinned SDK into `.venv/sdk` (see `tests/sdk/requirements.txt`).

mod common;

use std::process::Command;

use common::{repo_path, Gateway, GENAI_MODEL};
use serde_json::Value;

#[tokio::test]
async fn official_openai_sdk_works_unchanged() {
    let python = std::env::var("EDGE_GATEWAY_SDK_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_path(".venv/sdk/bin/python"));
    assert!(
        python.is_file(),
        "OpenAI SDK venv missing at {}: run `make test` (it creates .venv/sdk)",
        python.display()
    );
    let gw = Gateway::start(GENAI_MODEL, &[]).await;
    let script = repo_path("tests/sdk/openai_client.py");
    let base = gw.url("/v1");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(base)
            .arg("edge-tiny-genai")
            .output()
            .expect("run python")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "SDK script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("SDK script JSON");

    assert_eq!(
        v["models"],
        serde_json::json!(["edge-tiny-genai", "all-minilm-l6-v2-int8"])
    );
    assert_eq!(v["embeddings"]["count"], 2);
    assert_eq!(v["embeddings"]["dims"], 384);
    // Equal up to printing f32 as decimal text.
    assert!(
        v["embeddings"]["max_abs_diff_base64_vs_float"]
            .as_f64()
            .is_some_and(|d| d < 1e-6),
        "{}",
        v["embeddings"]
    );
    // [CLS] pump vibration [SEP] + [CLS] hello [SEP].
    assert_eq!(v["embeddings"]["prompt_tokens"], 7);
    let chat = v["chat_text"].as_str().expect("chat text");
    assert!(!chat.is_empty());
    assert_eq!(
        v["stream_text"], v["chat_text"],
        "streamed text must equal the non-streamed text"
    );
    assert_eq!(v["stream_usage"], v["chat_usage"]);
    assert_eq!(v["stream_finishes"], serde_json::json!([v["chat_finish"]]));
    assert!(v["completion_text"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(v["not_found"]["status"], 404);
    assert_eq!(v["not_found"]["code"], "model_not_found");
    assert_eq!(v["bad_request"]["status"], 400);
    assert_eq!(v["bad_request"]["param"], "n");
}
