//! Concurrent serving through the real binary: 16 streams at once give each the text it gets
//! alone (greedy), in batched (onnxruntime-genai layout) and interleaved (Optimum layout)
//! scheduling; cancelling one stream leaves the others intact.

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on unexpected responses"
)]

mod common;

use std::time::Duration;

use common::{sse_data, Gateway, GENAI_DQ_MODEL, GENAI_MODEL, OPTIMUM_MODEL};
use futures_util::StreamExt;
use serde_json::{json, Value};

const PROMPTS: [&str; 16] = [
    "The machine on line",
    "Shift report:",
    "Once upon a time",
    "The pump",
    "Safety check",
    "Order 42 was",
    "The operator said",
    "Temperature in zone",
    "Maintenance is",
    "The conveyor",
    "Quality control",
    "Yesterday the",
    "Inventory of parts",
    "The night crew",
    "Error code",
    "Battery level",
];

fn completion(prompt: &str, max_tokens: u32) -> Value {
    json!({"model": "m", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": true})
}

/// Streams one completion and returns its text.
async fn stream_text(gw: &Gateway, model: &str, prompt: &str, max_tokens: u32) -> String {
    let mut body = completion(prompt, max_tokens);
    body["model"] = json!(model);
    // Pinned signals: these tests are about scheduling, not about what the scorers think of the
    // prompts (some would go to review or the cloud).
    let r = gw
        .client
        .post(gw.url("/v1/completions"))
        .header("x-risk-score", "0")
        .header("x-complexity-score", "0")
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("body");
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).expect("chunk"))
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect()
}

async fn sixteen_concurrent_streams_match_their_solo_runs(model_dir: &str) {
    let gw = Gateway::start(
        model_dir,
        &[
            ("EDGE_GATEWAY__ENGINE__MAX_CONCURRENT_SEQUENCES", "16"),
            // Short chunks so prompts are prefilled in pieces between decode steps.
            ("EDGE_GATEWAY__ENGINE__PREFILL_CHUNK_TOKENS", "16"),
            ("EDGE_GATEWAY__CACHE__ENABLED", "false"),
        ],
    )
    .await;
    let model = gw.model_id().await;
    let mut solo = Vec::new();
    for p in PROMPTS {
        solo.push(stream_text(&gw, &model, p, 24).await);
    }
    let together = futures_util::future::join_all(
        PROMPTS
            .iter()
            .map(|p| stream_text(&gw, &model, p, 24))
            .collect::<Vec<_>>(),
    )
    .await;
    for ((prompt, alone), with_others) in PROMPTS.iter().zip(&solo).zip(&together) {
        assert_eq!(
            alone, with_others,
            "{prompt:?} changed when run with 15 others"
        );
    }
    assert!(
        solo.iter().any(|t| !t.is_empty()),
        "the model generated nothing"
    );
    let batches = gw.metric("edge_gateway_batch_size_count").await;
    let rows = gw.metric("edge_gateway_batch_size_sum").await;
    let (Some(batches), Some(rows)) = (batches, rows) else {
        panic!("batch size histogram missing");
    };
    if model_dir != OPTIMUM_MODEL {
        // 16 × 24 tokens decoded one per call would be ~384 calls.
        assert!(
            rows / batches > 1.5,
            "decode steps were not batched: {rows} rows in {batches} calls"
        );
    }
}

#[tokio::test]
async fn batched_streams_match_solo_runs_genai() {
    sixteen_concurrent_streams_match_their_solo_runs(GENAI_MODEL).await;
}

/// The dynamic-int8 rewrite quantizes each row's activations alone (`onnx/requantize_dynamic.py`),
/// so its batched decode steps must not change any stream either.
#[tokio::test]
async fn batched_streams_match_solo_runs_dynamic_int8() {
    sixteen_concurrent_streams_match_their_solo_runs(GENAI_DQ_MODEL).await;
}

#[tokio::test]
async fn interleaved_streams_match_solo_runs_optimum() {
    sixteen_concurrent_streams_match_their_solo_runs(OPTIMUM_MODEL).await;
}

#[tokio::test]
async fn cancelling_one_stream_leaves_the_others_intact() {
    let gw = Gateway::start(
        GENAI_MODEL,
        &[("EDGE_GATEWAY__ENGINE__MAX_CONCURRENT_SEQUENCES", "4")],
    )
    .await;
    let model = gw.model_id().await;
    let long = |prompt: &str| {
        let mut b = completion(prompt, 160);
        b["model"] = json!(model);
        b["ignore_eos"] = json!(true);
        b
    };
    let mut solo = Vec::new();
    for p in &PROMPTS[..3] {
        let r = gw
            .client
            .post(gw.url("/v1/completions"))
            .header("x-risk-score", "0")
            .header("x-complexity-score", "0")
            .json(&long(p))
            .send()
            .await
            .expect("request");
        solo.push(r.text().await.expect("body"));
    }
    // The victim: read two events, then drop the connection.
    let victim = async {
        let r = gw
            .client
            .post(gw.url("/v1/completions"))
            .header("x-risk-score", "0")
            .header("x-complexity-score", "0")
            .json(&long("The victim stream"))
            .send()
            .await
            .expect("request");
        let mut body = r.bytes_stream();
        let mut seen = 0;
        while let Some(chunk) = body.next().await {
            chunk.expect("chunk");
            seen += 1;
            if seen >= 2 {
                break;
            }
        }
    };
    let others = futures_util::future::join_all(PROMPTS[..3].iter().map(|p| {
        let body = long(p);
        let client = gw.client.clone();
        let url = gw.url("/v1/completions");
        async move {
            client
                .post(url)
                .header("x-risk-score", "0")
                .header("x-complexity-score", "0")
                .json(&body)
                .send()
                .await
                .expect("request")
                .text()
                .await
                .expect("body")
        }
    }));
    let (_, others) = tokio::join!(victim, others);
    let texts = |bodies: &[String]| -> Vec<String> {
        bodies
            .iter()
            .map(|b| {
                let data = sse_data(b);
                assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{b}");
                data[..data.len() - 1]
                    .iter()
                    .map(|d| serde_json::from_str::<Value>(d).expect("chunk"))
                    .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
                    .collect()
            })
            .collect()
    };
    assert_eq!(texts(&solo), texts(&others));
    // The worker noticed the disconnect and stopped that sequence early.
    let mut cancelled = None;
    for _ in 0..50 {
        cancelled = gw
            .metric("edge_gateway_generations_total{outcome=\"cancelled\"}")
            .await;
        if cancelled.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cancelled, Some(1.0));
}
