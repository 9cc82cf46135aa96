//! Faults the gateway must survive, each failing only the request it affects, counted in a
//! metric and logged, with the process staying up and nothing it accepted lost:
//! - ONNX Runtime failing a run: a model whose graph fails for some inputs
//!   (`tests/fixtures/edge-tiny-genai-faulty.onnx`, built by `onnx/build_fault_model.sh`), in a
//!   prefill and in a batched decode step shared with a healthy sequence;
//! - the review store's disk full: `RLIMIT_FSIZE` set on the running gateway with `prlimit`
//!   (writes past the limit fail with EFBIG, what a full disk gives SQLite; tests run as root,
//!   so permission tricks would not be enforced), then lifted;
//! - the model file replaced while the model loads.

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on unexpected responses"
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{sse_data, Gateway, Launch, GENAI_MODEL};
use edge_gateway::config::Settings;
use edge_gateway::engine::package::ModelPackage;
use edge_gateway::engine::{runtime, Engine, EngineOptions, ModelError};
use serde_json::{json, Value};

/// Token id that fails any run containing it (`<pad>`; see `onnx/build_fault_model.py`).
const POISON_TOKEN: u32 = 3;
/// A run fails when a row's attention mask sums to this (a decode step at this position).
const POISON_LENGTH: usize = 200;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("edge-gateway-faults-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies the committed genai package into `dir`, with `model_onnx` as its graph if given. The
/// manifest stays behind: its digests would refuse the swapped graph before these faults.
fn copy_package(dir: &Path, model_onnx: Option<&Path>) {
    let src = common::repo_path(GENAI_MODEL);
    for entry in std::fs::read_dir(&src).expect("package dir") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n == "manifest.json") {
            continue;
        }
        std::fs::copy(&path, dir.join(path.file_name().expect("name"))).expect("copy");
    }
    if let Some(graph) = model_onnx {
        std::fs::copy(graph, dir.join("model.onnx")).expect("copy graph");
    }
}

fn faulty_package(scratch: &Scratch) -> PathBuf {
    let dir = scratch.0.join("edge-tiny-genai-faulty");
    std::fs::create_dir_all(&dir).expect("dir");
    copy_package(
        &dir,
        Some(&common::repo_path(
            "tests/fixtures/edge-tiny-genai-faulty.onnx",
        )),
    );
    dir
}

/// Streams a token-id completion and returns its SSE `data:` payloads.
async fn stream_completion(
    gw: &Gateway,
    model: &str,
    prompt: &[u32],
    max_tokens: usize,
) -> Vec<String> {
    let body = json!({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true},
        "return_token_ids": true});
    let response = gw.post("/v1/completions", &body).await;
    assert_eq!(response.status(), 200);
    sse_data(&response.text().await.expect("body"))
}

/// The generated token ids of a stream, and its error event if it ended with one.
fn stream_tokens(events: &[String]) -> (Vec<u64>, Option<Value>) {
    let mut ids = Vec::new();
    let mut error = None;
    for event in events.iter().filter(|e| e.as_str() != "[DONE]") {
        let v: Value = serde_json::from_str(event).expect("event is JSON");
        if v.get("error").is_some() {
            error = Some(v);
            continue;
        }
        if let Some(chunk) = v["choices"][0]["token_ids"].as_array() {
            ids.extend(chunk.iter().filter_map(Value::as_u64));
        }
    }
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "stream ends with [DONE]"
    );
    (ids, error)
}

/// The gateway on the faulty package (laid out in `scratch`), output collected.
async fn start_faulty(scratch: &Scratch) -> Gateway {
    let dir = faulty_package(scratch);
    let env = [
        ("EDGE_GATEWAY__EMBEDDINGS__ENABLED", "false"),
        ("EDGE_GATEWAY__CACHE__OPTIMIZED_GRAPH_DIR", ""),
        ("EDGE_GATEWAY__CACHE__ENABLED", "false"),
    ];
    let launch = Launch {
        pipe_output: true,
        ..Launch::default()
    };
    Gateway::launch(dir.to_str().expect("utf-8"), None, &env, launch).await
}

#[tokio::test]
async fn a_failing_prefill_fails_only_its_request() {
    let scratch = Scratch::new("prefill");
    let gw = start_faulty(&scratch).await;
    let model = gw.model_id().await;
    let healthy: Vec<u32> = (100..140).collect();

    let (solo, error) = stream_tokens(&stream_completion(&gw, &model, &healthy, 60).await);
    assert!(error.is_none() && solo.len() == 60, "{error:?}");

    // A healthy stream and a poisoned request at the same time.
    let poisoned =
        json!({"model": model, "prompt": [100, 101, POISON_TOKEN, 102], "max_tokens": 8});
    let (stream, failed) = tokio::join!(
        stream_completion(&gw, &model, &healthy, 60),
        gw.post_json("/v1/completions", &poisoned)
    );
    let (status, body) = failed;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "internal_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.contains("Gather")),
        "no ORT internals for clients: {body}"
    );
    let (tokens, error) = stream_tokens(&stream);
    assert!(
        error.is_none(),
        "the healthy stream is unaffected: {error:?}"
    );
    assert_eq!(tokens, solo, "and produces what it produces alone");

    assert!(
        gw.metric("edge_gateway_errors_total{type=\"inference\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(gw.output().contains("prefill failed"), "logged");
    let (status, _) = gw.get_json("/readyz").await;
    assert_eq!(status, 200, "still up and ready");
}

#[tokio::test]
async fn a_failing_batched_decode_step_fails_only_the_sequence_that_caused_it() {
    let scratch = Scratch::new("decode");
    let gw = start_faulty(&scratch).await;
    let model = gw.model_id().await;
    // A reaches position POISON_LENGTH while decoding; B, shorter, stays below it throughout
    // but is still running when A gets there, so both share the failing batched step.
    let a_prompt: Vec<u32> = (100..250).collect();
    let b_prompt: Vec<u32> = (300..310).collect();
    let b_tokens = 150;
    assert!(b_prompt.len() + b_tokens < POISON_LENGTH);
    assert!(b_tokens > POISON_LENGTH - a_prompt.len());
    let (b_solo, error) = stream_tokens(&stream_completion(&gw, &model, &b_prompt, b_tokens).await);
    assert!(error.is_none() && b_solo.len() == b_tokens, "{error:?}");

    let (a, b) = tokio::join!(
        stream_completion(&gw, &model, &a_prompt, 120),
        stream_completion(&gw, &model, &b_prompt, b_tokens)
    );
    let (a_ids, a_error) = stream_tokens(&a);
    let a_error = a_error.expect("A fails at its poisoned position");
    assert_eq!(a_error["error"]["code"], "internal_error", "{a_error}");
    assert_eq!(
        a_ids.len(),
        POISON_LENGTH - a_prompt.len(),
        "A streamed up to the failing step"
    );
    let (b_ids, b_error) = stream_tokens(&b);
    assert!(
        b_error.is_none(),
        "B is unaffected by A's failure: {b_error:?}"
    );
    assert_eq!(b_ids, b_solo, "B's tokens are what it produces alone");

    let out = gw.output();
    assert!(
        out.contains("batched decode step failed; stepping each sequence alone"),
        "logged"
    );
    assert!(
        gw.metric("edge_gateway_generations_total{outcome=\"error\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    let (status, _) = gw.get_json("/readyz").await;
    assert_eq!(status, 200);
}

/// Largest size of the review database's files (the WAL grows with each commit).
fn db_files_size(db: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", db.display())).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

/// Sets the soft file-size limit of `pid` (the hard one stays unlimited, so it can be lifted
/// again without CAP_SYS_RESOURCE).
fn prlimit_fsize(pid: u32, limit: &str) {
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--fsize={limit}:unlimited"),
        ])
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success(), "prlimit --fsize={limit}");
}

async fn submit_review(gw: &Gateway, n: usize) -> reqwest::Response {
    gw.client
        .post(gw.url("/v1/chat/completions"))
        .header("x-risk-score", "95")
        .json(&json!({"model": "edge-tiny-genai", "max_tokens": 4,
            "messages": [{"role": "user", "content": format!("hold request {n} for a reviewer")}]}))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn full_review_disk_fails_only_new_reviews_and_loses_nothing_accepted() {
    let scratch = Scratch::new("disk");
    let db = scratch.0.join("reviews.db");
    let db_env = db.display().to_string();
    let env = [
        ("EDGE_GATEWAY__REVIEW__DB_PATH", db_env.as_str()),
        ("EDGE_GATEWAY__EMBEDDINGS__ENABLED", "false"),
    ];
    let gw = Gateway::launch(
        GENAI_MODEL,
        None,
        &env,
        Launch {
            pipe_output: true,
            ..Launch::default()
        },
    )
    .await;
    let mut accepted = Vec::new();
    for n in 0..3 {
        let r = submit_review(&gw, n).await;
        assert_eq!(r.status(), 202);
        let body: Value = r.json().await.expect("json");
        accepted.push(body["id"].as_str().expect("id").to_string());
    }

    // From now on no file of the process may grow: the next commit cannot extend the WAL.
    prlimit_fsize(gw.pid(), &db_files_size(&db).to_string());
    let r = submit_review(&gw, 3).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "review_store_unavailable", "{body}");

    // Only that request: the process is up, reads work, the edge still answers.
    for id in &accepted {
        let (status, review) = gw.get_json(&format!("/v1/reviews/{id}")).await;
        assert_eq!(
            (status, review["state"].as_str()),
            (200, Some("pending")),
            "{review}"
        );
    }
    let (status, body) = gw
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "edge-tiny-genai", "max_tokens": 4, "temperature": 0,
                    "messages": [{"role": "user", "content": "hello"}], "metadata": {"risk_score": 0, "complexity_score": 0.1}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        gw.metric("edge_gateway_errors_total{type=\"review_store\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        gw.output().contains("review store failed"),
        "logged:\n{}",
        gw.output()
    );

    // Space again: the same process accepts reviews again.
    prlimit_fsize(gw.pid(), "unlimited");
    let r = submit_review(&gw, 4).await;
    assert_eq!(r.status(), 202, "the store recovers without a restart");
    let body: Value = r.json().await.expect("json");
    accepted.push(body["id"].as_str().expect("id").to_string());

    // kill -9 and restart on the same file: everything acknowledged is there.
    let pid = gw.pid();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    drop(gw);
    let gw = Gateway::launch(GENAI_MODEL, None, &env, Launch::default()).await;
    for id in &accepted {
        let (status, review) = gw.get_json(&format!("/v1/reviews/{id}")).await;
        assert_eq!(status, 200, "review {id} survived: {review}");
    }
}

fn engine_options() -> EngineOptions {
    let mut settings = Settings::load_with_env(None, false).expect("defaults");
    settings.cache.optimized_graph_dir = None;
    settings.runtime.intra_threads = 1;
    EngineOptions::from_settings(&settings)
}

fn load_after(change: impl FnOnce(&Path)) -> Result<std::sync::Arc<Engine>, ModelError> {
    let scratch = Scratch::new("replaced");
    copy_package(&scratch.0, None);
    let env = runtime::environment(None).expect("ONNX Runtime (run `make ort`)");
    let package = ModelPackage::load(&scratch.0, None).expect("package reads");
    change(&scratch.0);
    Engine::start(env, package, &engine_options())
}

fn changed_message(result: Result<std::sync::Arc<Engine>, ModelError>) -> String {
    match result {
        Err(e @ ModelError::ChangedWhileLoading { .. }) => e.to_string(),
        Err(other) => panic!("expected ChangedWhileLoading, got {other}"),
        Ok(_) => panic!("a package changed mid-load must not load"),
    }
}

#[test]
fn model_file_replaced_while_loading_fails_the_load_naming_the_file() {
    // Replaced by rename (how a careful copy lands): same bytes, new inode.
    let message = changed_message(load_after(|dir| {
        let tmp = dir.join("model.onnx.new");
        std::fs::copy(dir.join("model.onnx"), &tmp).expect("copy");
        std::fs::rename(&tmp, dir.join("model.onnx")).expect("rename");
    }));
    assert!(
        message.contains("model.onnx:") && message.contains("replaced"),
        "{message}"
    );

    // The weights grown in place while loading (a copy still in progress).
    let message = changed_message(load_after(|dir| {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("model.onnx.data"))
            .expect("open");
        f.write_all(&[0u8; 4096]).expect("append");
    }));
    assert!(
        message.contains("model.onnx.data") && message.contains("size"),
        "{message}"
    );

    // Truncated mid-copy: ONNX Runtime cannot parse it, and the error says why it happened.
    let message = changed_message(load_after(|dir| {
        let bytes = std::fs::read(dir.join("model.onnx")).expect("read");
        std::fs::write(dir.join("model.onnx"), &bytes[..bytes.len() / 2]).expect("truncate");
    }));
    assert!(
        message.contains("changed while the model was loading"),
        "{message}"
    );
}

#[test]
fn unchanged_package_loads() {
    let engine = load_after(|_| {}).expect("an untouched package loads");
    assert!(engine.context_length() > 0);
}
