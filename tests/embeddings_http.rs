//! `POST /v1/embeddings` through the real binary, the real INT8 model and ONNX Runtime: OpenAI's
//! response shape, float and base64 encodings, usage, batching, the cache, the model listing,
//! API keys, and every error in OpenAI's shape.

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on unexpected responses"
)]

mod common;

use base64::Engine as _;
use common::{repo_path, Gateway, GENAI_MODEL};
use serde_json::{json, Value};

const MODEL: &str = "all-minilm-l6-v2-int8";

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("embedding array")
        .iter()
        .map(|x| x.as_f64().expect("float") as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    edge_gateway::embeddings::cosine(a, b)
}

/// The fp32 PyTorch reference for `text` from the committed fixture.
fn reference(text: &str) -> Vec<f32> {
    let raw = std::fs::read_to_string(repo_path("tests/fixtures/embeddings_reference.json"))
        .expect("fixture");
    let v: Value = serde_json::from_str(&raw).expect("json");
    let s = v["sentences"]
        .as_array()
        .expect("sentences")
        .iter()
        .find(|s| s["text"] == text)
        .expect("fixture sentence");
    floats(&s["embedding"])
}

#[tokio::test]
async fn embeddings_match_the_reference_in_float_and_base64_with_usage() {
    let gw = Gateway::start(GENAI_MODEL, &[]).await;
    let texts = [
        "The pump on line 3 is vibrating more than usual.",
        "What time does the clinic open on Monday?",
        "工場の機械が停止しました。",
    ];
    let (s, r) = gw
        .post_json("/v1/embeddings", &json!({"model": MODEL, "input": texts}))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["object"], "list");
    assert_eq!(r["model"], MODEL);
    let data = r["data"].as_array().expect("data");
    assert_eq!(data.len(), 3);
    for (i, (d, text)) in data.iter().zip(texts).enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        let v = floats(&d["embedding"]);
        assert_eq!(v.len(), 384);
        let c = cosine(&v, &reference(text));
        assert!(c >= 0.99, "cosine {c} for {text}");
    }
    let usage = r["usage"]["prompt_tokens"].as_u64().expect("usage");
    assert!(usage > 10, "{r}");
    assert_eq!(r["usage"]["total_tokens"], r["usage"]["prompt_tokens"]);

    // One string, base64: little-endian f32 of the same vector.
    let (s, b) = gw
        .post_json(
            "/v1/embeddings",
            &json!({"model": MODEL, "input": texts[0], "encoding_format": "base64", "dimensions": 384}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b["data"][0]["embedding"].as_str().expect("base64 string"))
        .expect("valid base64");
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let batched = floats(&data[0]["embedding"]);
    assert_eq!(decoded.len(), 384);
    assert!(cosine(&decoded, &batched) > 0.9999);

    // Token ids: the same WordPiece ids as the text give the same vector.
    let (s, t) = gw
        .post_json(
            "/v1/embeddings",
            &json!({"model": MODEL, "input": [[7592], [7592, 2088]]}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["usage"]["prompt_tokens"], 3 + 4);
    let (_, h) = gw
        .post_json("/v1/embeddings", &json!({"model": MODEL, "input": "hello"}))
        .await;
    assert!(
        cosine(
            &floats(&t["data"][0]["embedding"]),
            &floats(&h["data"][0]["embedding"])
        ) > 0.9999
    );

    // Repeated inputs are served from the cache.
    let hits = gw
        .metric("edge_gateway_embedding_cache_hits_total")
        .await
        .unwrap_or(0.0);
    assert!(hits >= 1.0, "no cache hit recorded");

    // The model is listed with its size and licence.
    let (_, models) = gw.get_json("/v1/models").await;
    let card = models["data"]
        .as_array()
        .expect("models")
        .iter()
        .find(|m| m["id"] == MODEL)
        .expect("embedding model listed");
    assert_eq!(card["metadata"]["type"], "embedding");
    assert_eq!(card["metadata"]["dimensions"], 384);
    assert_eq!(card["metadata"]["license"], "Apache-2.0");
    let (s, one) = gw.get_json(&format!("/v1/models/{MODEL}")).await;
    assert_eq!(s, 200);
    assert_eq!(one["id"], MODEL);
}

#[tokio::test]
async fn embedding_errors_are_openai_shaped_and_name_the_parameter() {
    let gw = Gateway::start(GENAI_MODEL, &[("EDGE_GATEWAY__EMBEDDINGS__MAX_BATCH", "4")]).await;
    let long = "word ".repeat(300);
    let cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (
            json!({"model": "text-embedding-3-small", "input": "x"}),
            404,
            "model_not_found",
            Some("model"),
        ),
        (
            json!({"model": MODEL, "input": long}),
            400,
            "context_length_exceeded",
            Some("input"),
        ),
        (
            json!({"model": MODEL, "input": ["ok", long]}),
            400,
            "context_length_exceeded",
            Some("input[1]"),
        ),
        (
            json!({"model": MODEL, "input": ["a", "b", "c", "d", "e"]}),
            400,
            "invalid_value",
            Some("input"),
        ),
        (
            json!({"model": MODEL, "input": "x", "dimensions": 128}),
            400,
            "unsupported_parameter",
            Some("dimensions"),
        ),
        (
            json!({"model": MODEL, "input": ""}),
            400,
            "invalid_value",
            Some("input"),
        ),
        (
            json!({"model": MODEL, "input": []}),
            400,
            "invalid_value",
            Some("input"),
        ),
        (
            json!({"model": MODEL, "input": [1, 99999999]}),
            400,
            "invalid_value",
            Some("input"),
        ),
        (
            json!({"model": MODEL, "input": "x", "encoding_format": "int8"}),
            400,
            "invalid_value",
            Some("encoding_format"),
        ),
        (json!({"model": MODEL}), 400, "invalid_value", Some("input")),
    ];
    for (body, status, code, param) in cases {
        let (s, r) = gw.post_json("/v1/embeddings", &body).await;
        assert_eq!(s, status, "{body} -> {r}");
        assert_eq!(r["error"]["code"], code, "{body} -> {r}");
        assert_eq!(r["error"]["param"].as_str(), param, "{body} -> {r}");
        assert!(r["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let r = gw
        .client
        .post(gw.url("/v1/embeddings"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_json");
    let r = gw
        .client
        .get(gw.url("/v1/embeddings"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn disabled_embeddings_answer_404_and_keys_guard_the_endpoint() {
    let gw = Gateway::start(
        GENAI_MODEL,
        &[("EDGE_GATEWAY__EMBEDDINGS__ENABLED", "false")],
    )
    .await;
    let (s, r) = gw
        .post_json("/v1/embeddings", &json!({"model": MODEL, "input": "x"}))
        .await;
    assert_eq!(s, 404, "{r}");
    assert_eq!(r["error"]["code"], "model_not_found");
    let (_, models) = gw.get_json("/v1/models").await;
    assert_eq!(models["data"].as_array().map(Vec::len), Some(1));
    drop(gw);

    let config = "auth:\n  keys:\n    - name: ci\n      key_env: EDGE_TEST_EMBED_KEY\n      scopes: [inference]\n";
    let key = "edge-embed-key-0123456789abcdef";
    let gw = Gateway::start_with_config(GENAI_MODEL, Some(config), &[("EDGE_TEST_EMBED_KEY", key)])
        .await;
    let body = json!({"model": MODEL, "input": "x"});
    let r = gw
        .client
        .post(gw.url("/v1/embeddings"))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    let r = gw
        .client
        .post(gw.url("/v1/embeddings"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
}
