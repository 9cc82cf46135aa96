//! Operations through the real binary: the Prometheus exposition passes `promtool check metrics`
//! after real traffic and carries the serving metrics; SIGTERM lets an in-flight stream finish,
//! refuses new connections and exits cleanly.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{repo_path, sse_data, Gateway, GENAI_MODEL};
use futures_util::StreamExt;
use serde_json::json;

/// promtool from `make tools` (Debian's prometheus package), or `PROMTOOL`.
fn promtool() -> std::path::PathBuf {
    let path = std::env::var_os("PROMTOOL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo_path(".cache/deploy/tools/promtool"));
    assert!(
        path.is_file(),
        "promtool not found at {}: run `make tools` (make test does)",
        path.display()
    );
    path
}

#[tokio::test]
async fn metrics_exposition_passes_promtool_after_traffic() {
    let promtool = promtool();
    let gw = Gateway::start(GENAI_MODEL, &[]).await;
    let body = json!({"model": "edge-tiny-genai", "prompt": "The pump", "max_tokens": 8, "temperature": 0});
    let (s, _) = gw.post_json("/v1/completions", &body).await;
    assert_eq!(s, 200);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let text = gw
        .client
        .post(gw.url("/v1/completions"))
        .json(&streamed)
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    assert!(text.contains("[DONE]"));
    let (s, _) = gw
        .post_json("/v1/completions", &json!({"model": "nope", "prompt": "x"}))
        .await;
    assert_eq!(s, 404);
    let exposition = gw
        .client
        .get(gw.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    for name in [
        "edge_gateway_requests_total",
        "edge_gateway_request_duration_seconds_bucket",
        "edge_gateway_time_to_first_token_seconds_bucket",
        "edge_gateway_inter_token_latency_seconds_bucket",
        "edge_gateway_queue_wait_seconds_bucket",
        "edge_gateway_queue_depth",
        "edge_gateway_running_sequences",
        "edge_gateway_batch_size_bucket",
        "edge_gateway_generated_tokens_total",
        "edge_gateway_prompt_tokens_total",
        "edge_gateway_kv_reserved_bytes",
        "edge_gateway_kv_budget_bytes",
        "edge_gateway_memory_pressure_ratio",
        "edge_gateway_process_resident_memory_bytes",
        "edge_gateway_effective_context_tokens",
        "edge_gateway_model_info",
    ] {
        assert!(
            exposition.lines().any(|l| l.starts_with(name)),
            "{name} missing from /metrics"
        );
    }
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write exposition");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sigterm_lets_the_running_stream_finish_and_exits_cleanly() {
    let mut gw = Gateway::start(GENAI_MODEL, &[]).await;
    let body = json!({"model": "edge-tiny-genai", "prompt": "The night crew", "max_tokens": 300,
        "ignore_eos": true, "temperature": 0, "stream": true,
        "stream_options": {"include_usage": true}});
    let response = gw
        .client
        .post(gw.url("/v1/completions"))
        .json(&body)
        .send()
        .await
        .expect("request");
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let first = stream.next().await.expect("first chunk").expect("chunk");
    text.push_str(&String::from_utf8_lossy(&first));
    let status = Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // New connections are refused once shutdown has begun.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = reqwest::Client::new()
        .get(gw.url("/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err(), "accepted a connection after SIGTERM");
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(
            &chunk.expect("stream broke during shutdown"),
        ));
    }
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    let usage: serde_json::Value =
        serde_json::from_str(&data[data.len() - 2]).expect("usage chunk");
    assert_eq!(usage["usage"]["completion_tokens"], 300, "{usage}");
    let exit = gw.wait_exit(Duration::from_secs(30)).expect("did not exit");
    assert!(exit.success(), "exit status {exit:?}");
}
