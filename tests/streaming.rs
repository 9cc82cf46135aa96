//! Streaming over SSE: same text as non-streaming, OpenAI chunk shapes, usage chunk, `[DONE]`
//! last, and a client disconnect stopping the generation and freeing the worker.

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on unexpected responses"
)]

mod common;

use std::time::{Duration, Instant};

use common::{sse_data, Gateway, GENAI_MODEL, OPTIMUM_MODEL};
use futures_util::StreamExt;
use serde_json::{json, Value};

async fn stream_text(gw: &Gateway, path: &str, body: &Value) -> (String, Vec<Value>) {
    let r = gw
        .client
        .post(gw.url(path))
        .json(body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/event-stream"));
    let text = r.text().await.expect("body");
    let data = sse_data(&text);
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "stream must end with [DONE]: {text}"
    );
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk JSON"))
        .collect();
    let mut out = String::new();
    for c in &chunks {
        if let Some(choice) = c["choices"].get(0) {
            out.push_str(
                choice["delta"]["content"]
                    .as_str()
                    .or(choice["text"].as_str())
                    .unwrap_or(""),
            );
        }
    }
    (out, chunks)
}

async fn same_text_both_ways(model: &str) {
    let gw = Gateway::start(model, &[]).await;
    let id = gw.model_id().await;
    let body = json!({"model": id, "temperature": 0, "max_tokens": 40,
        "messages": [{"role": "user", "content": "What does the clinic do on Monday?"}]});
    let (status, full) = gw.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200);
    let expected = full["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    assert!(!expected.is_empty());

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let (streamed, chunks) = stream_text(&gw, "/v1/chat/completions", &sbody).await;
    assert_eq!(streamed, expected);
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .filter_map(|c| c["finish_reason"].as_str())
        .collect::<Vec<_>>();
    assert_eq!(
        finish,
        vec![full["choices"][0]["finish_reason"]
            .as_str()
            .expect("finish")]
    );
    let usage = chunks.last().expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], full["usage"]);

    // Text completions stream the same way.
    let cbody =
        json!({"model": id, "prompt": "The machine on line 3", "temperature": 0, "max_tokens": 20});
    let (_, cfull) = gw.post_json("/v1/completions", &cbody).await;
    let mut cs = cbody.clone();
    cs["stream"] = json!(true);
    let (ctext, cchunks) = stream_text(&gw, "/v1/completions", &cs).await;
    assert_eq!(ctext, cfull["choices"][0]["text"].as_str().expect("text"));
    assert!(cchunks.iter().all(|c| c["object"] == "text_completion"));
}

#[tokio::test]
async fn streaming_and_non_streaming_give_same_text_genai() {
    same_text_both_ways(GENAI_MODEL).await;
}

#[tokio::test]
async fn streaming_and_non_streaming_give_same_text_optimum() {
    same_text_both_ways(OPTIMUM_MODEL).await;
}

#[tokio::test]
async fn seeded_sampling_is_reproducible() {
    let gw = Gateway::start(GENAI_MODEL, &[]).await;
    let id = gw.model_id().await;
    let body = json!({"model": id, "prompt": "The weather today", "temperature": 1.0, "top_p": 0.9, "top_k": 40, "seed": 1234, "max_tokens": 24, "return_token_ids": true});
    let (_, a) = gw.post_json("/v1/completions", &body).await;
    let (_, b) = gw.post_json("/v1/completions", &body).await;
    assert_eq!(a["choices"][0]["token_ids"], b["choices"][0]["token_ids"]);
}

#[tokio::test]
async fn stop_sequence_truncates_output() {
    let gw = Gateway::start(GENAI_MODEL, &[]).await;
    let id = gw.model_id().await;
    let base =
        json!({"model": id, "prompt": "The machine on line 3", "temperature": 0, "max_tokens": 30});
    let (_, full) = gw.post_json("/v1/completions", &base).await;
    let text = full["choices"][0]["text"]
        .as_str()
        .expect("text")
        .to_string();
    // Stop on a piece from the middle of the greedy output.
    let chars: Vec<char> = text.chars().collect();
    assert!(
        chars.len() > 8,
        "greedy output too short to test stop: {text:?}"
    );
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    let mut body = base.clone();
    body["stop"] = json!([stop]);
    let (status, cut) = gw.post_json("/v1/completions", &body).await;
    assert_eq!(status, 200);
    let cut_text = cut["choices"][0]["text"].as_str().expect("text");
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    assert_eq!(cut_text, &text[..text.find(&stop).expect("stop in text")]);
}

#[tokio::test]
async fn ignore_eos_generates_exactly_max_tokens() {
    let gw = Gateway::start(GENAI_MODEL, &[]).await;
    let id = gw.model_id().await;
    let body = json!({"model": id, "messages": [{"role": "user", "content": "Hi"}], "temperature": 0, "max_tokens": 60, "ignore_eos": true});
    let (status, r) = gw.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200);
    assert_eq!(r["usage"]["completion_tokens"], 60);
    assert_eq!(r["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn client_disconnect_stops_generation_and_frees_worker() {
    let gw = Gateway::start(GENAI_MODEL, &[("EDGE_GATEWAY__ENGINE__WORKERS", "1")]).await;
    let id = gw.model_id().await;
    let max_tokens = 480;
    let body = json!({"model": id, "prompt": "The", "temperature": 0, "max_tokens": max_tokens, "ignore_eos": true, "stream": true});
    let r = gw
        .client
        .post(gw.url("/v1/completions"))
        .json(&body)
        .send()
        .await
        .expect("request");
    let mut stream = r.bytes_stream();
    let first = stream.next().await.expect("first chunk").expect("bytes");
    assert!(!first.is_empty());
    drop(stream);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cancelled = gw
            .metric("edge_gateway_generations_total{outcome=\"cancelled\"}")
            .await
            .unwrap_or(0.0);
        if cancelled >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "generation was not cancelled after disconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let generated = gw
        .metric("edge_gateway_generated_tokens_total")
        .await
        .unwrap_or(0.0);
    assert!(
        generated < f64::from(max_tokens),
        "worker kept generating: {generated} tokens"
    );
    assert_eq!(gw.metric("edge_gateway_running_sequences").await, Some(0.0));
    // The single worker is free for the next request.
    let (status, _) = gw
        .post_json(
            "/v1/completions",
            &json!({"model": id, "prompt": "Hello", "max_tokens": 4, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200);
}
