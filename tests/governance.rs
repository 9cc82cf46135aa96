//! Governed model artifacts through the real binary: sign → verify → load, tampered files
//! refused by name, version swaps under load, rollback (also after a restart), the canary
//! split, the quality gate, `eval` on the committed tiny set, versioned prompts, and the audit
//! log (chain verification, kill -9, buffering while the telemetry sink is down).

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on unexpected responses"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::recorder::Recorder;
use common::{repo_path, sse_data, Gateway, GENAI_MODEL};
use futures_util::StreamExt;
use serde_json::{json, Value};

const PUBKEY_VAR: &str = "EG_TEST_TRUSTED_KEYS";
const EVAL_SET: &str = "onnx/eval/edge-tiny.jsonl";

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("eg-gov-{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).expect("tempdir");
    d
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Runs the CLI; returns (success, stdout, stderr).
fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-gateway"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .env("EDGE_GATEWAY__RUNTIME__INTRA_THREADS", "1")
        .env("EDGE_GATEWAY__LOGGING__LEVEL", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run edge-gateway");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `model verify --pubkey PUBFILE DIR`.
fn verify_cli(pubfile: &Path, dir: &Path) -> (bool, String, String) {
    let (pubfile, dir) = (pubfile.display().to_string(), dir.display().to_string());
    cli(&["model", "verify", "--pubkey", &pubfile, &dir], &[])
}

/// A key pair in `dir`: (private key path, public key PEM).
fn keygen(dir: &Path) -> (String, String) {
    let prefix = dir.join("signing");
    let (ok, _, err) = cli(
        &["model", "keygen", "--out", prefix.to_str().expect("utf8")],
        &[],
    );
    assert!(ok, "keygen: {err}");
    let public = std::fs::read_to_string(prefix.with_extension("pub")).expect("pub");
    (prefix.with_extension("key").display().to_string(), public)
}

/// A signed copy of the tiny genai package at `dir/name`, version `version`.
fn signed_package(dir: &Path, name: &str, version: &str, key: &str) -> PathBuf {
    let pkg = dir.join(name);
    copy_dir(&repo_path(GENAI_MODEL), &pkg);
    let _ = std::fs::remove_file(pkg.join("manifest.json"));
    let _ = std::fs::remove_file(pkg.join("manifest.sig"));
    let (ok, out, err) = cli(
        &[
            "model",
            "sign",
            "--key",
            key,
            "--version",
            version,
            "--name",
            "edge-tiny",
            pkg.to_str().expect("utf8"),
        ],
        &[],
    );
    assert!(ok, "sign: {out} {err}");
    pkg
}

fn flip_byte(file: &Path) {
    let mut bytes = std::fs::read(file).expect("read");
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(file, bytes).expect("write");
}

fn chat(max_tokens: u32) -> Value {
    json!({"model": "edge-tiny", "messages": [{"role": "user", "content": "What is the status of the pump on line 3?"}],
           "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true})
}

/// Sends `body` and returns (status, the version header, parsed body).
async fn chat_version(gw: &Gateway, body: &Value) -> (u16, String, Value) {
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let version = header(&r, "x-edge-model-version");
    (status, version, r.json().await.expect("json"))
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Waits until `GET /admin/models` shows no load in progress for `id`; returns its entry.
async fn settled(gw: &Gateway, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, all) = gw.get_json("/admin/models").await;
        let entry = all["data"]
            .as_array()
            .and_then(|d| d.iter().find(|m| m["id"] == id).cloned())
            .expect("model entry");
        if entry["loading"].is_null() {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "candidate still loading: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stage(gw: &Gateway, pkg: &Path, percent: u8) -> Value {
    let (status, body) = gw
        .post_json(
            "/admin/models/edge-tiny/candidate",
            &json!({"path": pkg.display().to_string(), "canary_percent": percent}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    settled(gw, "edge-tiny").await
}

fn governed_env<'a>(state: &'a str, public_key: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("EDGE_GATEWAY__MODEL__ID", "edge-tiny"),
        ("EDGE_GATEWAY__REVIEW__DB_PATH", state),
        ("EDGE_GATEWAY__GOVERNANCE__REQUIRE_SIGNED", "true"),
        ("EDGE_GATEWAY__GOVERNANCE__TRUSTED_KEYS_ENV", PUBKEY_VAR),
        (PUBKEY_VAR, public_key),
    ]
}

#[tokio::test]
async fn signed_package_loads_and_a_flipped_byte_in_any_file_is_refused_naming_it() {
    let dir = tempdir("sign");
    let (key, public) = keygen(&dir);
    let pkg = signed_package(&dir, "pkg", "1.0.0", &key);
    let pubfile = dir.join("signing.pub");
    let (ok, out, err) = verify_cli(&pubfile, &pkg);
    assert!(
        ok && out.contains("OK: edge-tiny version 1.0.0"),
        "{out} {err}"
    );

    let state = dir.join("state/reviews.db").display().to_string();
    let env = governed_env(&state, &public);
    let gw = Gateway::start(pkg.to_str().expect("utf8"), &env).await;
    let (_, models) = gw.get_json("/v1/models").await;
    assert_eq!(models["data"][0]["metadata"]["version"], "1.0.0");
    let (status, version, _) = chat_version(&gw, &chat(4)).await;
    assert_eq!((status, version.as_str()), (200, "edge-tiny@1.0.0"));
    let (_, admin) = gw.get_json("/admin/models").await;
    assert_eq!(
        admin["data"][0]["state"]["stable"]["signature"]["status"],
        "valid"
    );
    drop(gw);

    let manifest: Value =
        serde_json::from_slice(&std::fs::read(pkg.join("manifest.json")).expect("manifest"))
            .expect("json");
    let mut files: Vec<String> = manifest["files"]
        .as_object()
        .expect("files")
        .keys()
        .cloned()
        .collect();
    files.push("manifest.json".into());
    assert!(files.len() >= 5, "{files:?}");
    for file in &files {
        let tampered = dir.join(format!("tampered-{file}"));
        copy_dir(&pkg, &tampered);
        flip_byte(&tampered.join(file));
        // The signature covers the manifest; every other file is named by its digest.
        let named = if file == "manifest.json" {
            "manifest.sig"
        } else {
            file.as_str()
        };
        let (ok, _, err) = verify_cli(&pubfile, &tampered);
        assert!(
            !ok && err.contains(named),
            "verify of a flipped byte in {file}: {err}"
        );
        let (ok, _, err) = cli(
            &["serve", "--model", tampered.to_str().expect("utf8")],
            &env,
        );
        assert!(
            !ok && err.contains(named),
            "serve of a flipped byte in {file}: {err}"
        );
    }

    let unsigned = dir.join("unsigned");
    copy_dir(&repo_path(GENAI_MODEL), &unsigned);
    let _ = std::fs::remove_file(unsigned.join("manifest.json"));
    let _ = std::fs::remove_file(unsigned.join("manifest.sig"));
    let (ok, _, err) = cli(
        &["serve", "--model", unsigned.to_str().expect("utf8")],
        &env,
    );
    assert!(!ok && err.contains("is not signed"), "{err}");
    // An added file is refused too: the manifest must list everything the package holds.
    let extra = dir.join("extra");
    copy_dir(&pkg, &extra);
    std::fs::write(extra.join("notes.txt"), "added later").expect("write");
    let (ok, _, err) = verify_cli(&pubfile, &extra);
    assert!(
        !ok && err.contains("notes.txt") && err.contains("not listed"),
        "{err}"
    );
}

#[tokio::test]
async fn stream_started_on_v1_finishes_on_v1_while_new_requests_go_to_v2_and_rollback_returns() {
    let dir = tempdir("swap");
    let (key, public) = keygen(&dir);
    let v1 = signed_package(&dir, "v1", "1.0.0", &key);
    let v2 = signed_package(&dir, "v2", "2.0.0", &key);
    let state = dir.join("state/reviews.db").display().to_string();
    let env = governed_env(&state, &public);
    let gw = Gateway::start(v1.to_str().expect("utf8"), &env).await;

    // What v1 answers, greedily, before anything changes.
    let (_, version, reference) = chat_version(&gw, &chat(120)).await;
    assert_eq!(version, "edge-tiny@1.0.0");
    let reference_text = reference["choices"][0]["message"]["content"]
        .as_str()
        .expect("text")
        .to_string();

    let entry = stage(&gw, &v2, 0).await;
    assert_eq!(entry["state"]["candidate"]["version"], "2.0.0", "{entry}");
    assert_eq!(entry["state"]["candidate"]["canary_percent"], 0);

    let mut streamed = chat(120);
    streamed["stream"] = json!(true);
    let response = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .json(&streamed)
        .send()
        .await
        .expect("stream");
    assert_eq!(header(&response, "x-edge-model-version"), "edge-tiny@1.0.0");
    let mut body = response.bytes_stream();
    let mut text = String::from_utf8(
        body.next()
            .await
            .expect("first chunk")
            .expect("bytes")
            .to_vec(),
    )
    .expect("utf8");

    let (status, promoted) = gw
        .post_json("/admin/models/edge-tiny/promote", &json!({}))
        .await;
    assert_eq!(status, 200, "{promoted}");
    assert_eq!(promoted["model"]["state"]["stable"]["version"], "2.0.0");
    let (_, version, _) = chat_version(&gw, &chat(4)).await;
    assert_eq!(
        version, "edge-tiny@2.0.0",
        "new requests go to the promoted version"
    );

    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.expect("bytes")).expect("utf8"));
    }
    let events = sse_data(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut streamed_text = String::new();
    let mut finish = Value::Null;
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).expect("chunk");
        assert!(
            v.get("error").is_none(),
            "stream failed after the swap: {v}"
        );
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            streamed_text.push_str(t);
        }
        if !v["choices"][0]["finish_reason"].is_null() {
            finish = v["choices"][0]["finish_reason"].clone();
        }
    }
    assert_eq!(finish, "length");
    assert_eq!(
        streamed_text, reference_text,
        "the stream finished on v1, unchanged"
    );

    let (status, back) = gw
        .post_json("/admin/models/edge-tiny/rollback", &json!({}))
        .await;
    assert_eq!(status, 200, "{back}");
    let (_, version, _) = chat_version(&gw, &chat(4)).await;
    assert_eq!(version, "edge-tiny@1.0.0");
    let (status, none) = gw
        .post_json("/admin/models/edge-tiny/rollback", &json!({}))
        .await;
    assert_eq!(
        (status, none["error"]["code"].as_str()),
        (409, Some("nothing_to_roll_back"))
    );

    // A promotion survives a restart; so does the way back to the version before it.
    stage(&gw, &v2, 0).await;
    let (status, _) = gw
        .post_json("/admin/models/edge-tiny/promote", &json!({}))
        .await;
    assert_eq!(status, 200);
    drop(gw);
    let gw = Gateway::start(v1.to_str().expect("utf8"), &env).await;
    let (_, version, _) = chat_version(&gw, &chat(4)).await;
    assert_eq!(
        version, "edge-tiny@2.0.0",
        "the promotion was kept across the restart"
    );
    let (status, back) = gw
        .post_json("/admin/models/edge-tiny/rollback", &json!({}))
        .await;
    assert_eq!(status, 200, "{back}");
    let (_, version, _) = chat_version(&gw, &chat(4)).await;
    assert_eq!(version, "edge-tiny@1.0.0");
}

#[tokio::test]
async fn canary_share_is_within_five_points_over_1000_decisions() {
    let dir = tempdir("canary");
    let (key, public) = keygen(&dir);
    let v1 = signed_package(&dir, "v1", "1.0.0", &key);
    let v2 = signed_package(&dir, "v2", "2.0.0", &key);
    let state = dir.join("state/reviews.db").display().to_string();
    let env = governed_env(&state, &public);
    let gw = Gateway::start(v1.to_str().expect("utf8"), &env).await;
    stage(&gw, &v2, 25).await;

    // Explicit signals skip the scorers: 1000 decisions without running inference.
    let decide = |i: usize| {
        let req = gw
            .client
            .post(gw.url("/v1/route/explain"))
            .header("x-request-id", format!("canary-test-{i}"))
            .header("x-data-classification", "internal")
            .header("x-risk-score", "0")
            .header("x-complexity-score", "0.1")
            .json(&chat(4));
        async move {
            let v: Value = req
                .send()
                .await
                .expect("explain")
                .json()
                .await
                .expect("json");
            v["model"]["role"].as_str().expect("role") == "candidate"
        }
    };
    let results: Vec<bool> = futures_util::stream::iter((0..1000).map(decide))
        .buffer_unordered(16)
        .collect()
        .await;
    let candidate = results.iter().filter(|c| **c).count();
    assert!(
        (200..=300).contains(&candidate),
        "{candidate} of 1000 decisions went to the 25% canary"
    );
    // Deterministic by request id: the same id always lands on the same version.
    let first = decide(7).await;
    for _ in 0..5 {
        assert_eq!(decide(7).await, first);
    }
    // Served requests carry the version they ran on.
    let (status, body) = gw
        .post_json(
            "/admin/models/edge-tiny/canary",
            &json!({"canary_percent": 100}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, version, _) = chat_version(&gw, &chat(2)).await;
    assert_eq!(version, "edge-tiny@2.0.0");
    let (status, body) = gw
        .post_json(
            "/admin/models/edge-tiny/canary",
            &json!({"canary_percent": 101}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("canary_percent"))
    );
    let served = gw
        .labelled_metric(
            "edge_gateway_served_version_requests_total",
            &[
                ("model", "edge-tiny"),
                ("version", "2.0.0"),
                ("role", "candidate"),
                ("prompt", "none"),
            ],
        )
        .await;
    assert_eq!(served, Some(1.0));
}

/// Writes `score` into the manifest of `pkg` (as `eval` would) and signs it again.
fn with_quality(pkg: &Path, score: f64, key: &str) {
    let path = pkg.join("manifest.json");
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("manifest")).expect("json");
    m["quality"] = json!({"score": score, "passed": 1, "total": 1, "data": "set.jsonl",
        "data_sha256": "0".repeat(64), "by_check": {}, "evaluated_at": "2026-12-01T00:00:00Z"});
    std::fs::write(&path, serde_json::to_vec_pretty(&m).expect("json")).expect("write");
    let (ok, out, err) = cli(
        &["model", "sign", "--key", key, pkg.to_str().expect("utf8")],
        &[],
    );
    assert!(
        ok && out.contains(&format!("quality {score:.3}")),
        "{out} {err}"
    );
}

#[tokio::test]
async fn promotion_is_refused_below_the_quality_threshold() {
    let dir = tempdir("gate");
    let (key, public) = keygen(&dir);
    let v1 = signed_package(&dir, "v1", "1.0.0", &key);
    let unscored = signed_package(&dir, "v2", "2.0.0", &key);
    let weak = signed_package(&dir, "v3", "3.0.0", &key);
    with_quality(&weak, 0.5, &key);
    let good = signed_package(&dir, "v4", "4.0.0", &key);
    with_quality(&good, 0.9, &key);
    let state = dir.join("state/reviews.db").display().to_string();
    let mut env = governed_env(&state, &public);
    env.push(("EDGE_GATEWAY__GOVERNANCE__MIN_QUALITY_SCORE", "0.8"));
    let gw = Gateway::start(v1.to_str().expect("utf8"), &env).await;

    for (pkg, needle) in [
        (&unscored, "no evaluated quality score"),
        (&weak, "scored 0.500"),
    ] {
        stage(&gw, pkg, 10).await;
        let (status, body) = gw
            .post_json("/admin/models/edge-tiny/promote", &json!({}))
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("quality_gate_failed")),
            "{body}"
        );
        let message = body["error"]["message"].as_str().expect("message");
        assert!(
            message.contains(needle) && message.contains("0.8"),
            "{message}"
        );
    }
    let entry = settled(&gw, "edge-tiny").await;
    assert_eq!(
        entry["state"]["stable"]["version"], "1.0.0",
        "refused promotions change nothing"
    );
    stage(&gw, &good, 10).await;
    let (status, body) = gw
        .post_json("/admin/models/edge-tiny/promote", &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"]["state"]["stable"]["quality_score"], 0.9);
    // A package that does not load is reported on the model, and the stable version stays.
    let (status, _) = gw
        .post_json(
            "/admin/models/edge-tiny/candidate",
            &json!({"path": dir.join("missing").display().to_string()}),
        )
        .await;
    assert_eq!(status, 202);
    let entry = settled(&gw, "edge-tiny").await;
    assert!(
        entry["last_error"]
            .as_str()
            .expect("error")
            .contains("missing"),
        "{entry}"
    );
    assert_eq!(entry["state"]["stable"]["version"], "4.0.0");
}

// Multi-threaded: the fake upstream must answer while this thread waits for the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_scores_the_committed_tiny_set_and_records_them_in_the_manifest() {
    let dir = tempdir("eval");
    let pkg = dir.join("pkg");
    copy_dir(&repo_path(GENAI_MODEL), &pkg);
    let _ = std::fs::remove_file(pkg.join("manifest.json"));
    let cloud = Recorder::start().await;
    let cloud_url = cloud.v1();
    let (ok, out, err) = cli(
        &[
            "eval",
            "--model",
            pkg.to_str().expect("utf8"),
            "--data",
            EVAL_SET,
            "--version",
            "1.0.0",
            "--upstream",
            "cloud",
        ],
        &[("EDGE_GATEWAY__UPSTREAMS__CLOUD__BASE_URL", &cloud_url)],
    );
    assert!(ok, "{out} {err}");
    // Greedy outputs of the tiny model, checked by hand against each item: it knows the
    // facts of its corpus, adds 7 + 5 right but 13 + 6 wrong, writes no JSON, and answers
    // an off-corpus question with a corpus sentence.
    let failed: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("FAIL "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        failed,
        ["arithmetic-2", "json-answer", "unknown-topic"],
        "{out}"
    );
    assert!(out.contains("edge: 9/12 passed, score 0.750"), "{out}");
    assert!(
        out.contains("cloud cloud (model pkg): 0/12 passed"),
        "{out}"
    );
    assert_eq!(
        cloud.received().len(),
        12,
        "every item went to the upstream once"
    );
    let m: Value =
        serde_json::from_slice(&std::fs::read(pkg.join("manifest.json")).expect("manifest"))
            .expect("json");
    let q = &m["quality"];
    assert_eq!(
        (
            q["score"].as_f64(),
            q["passed"].as_u64(),
            q["total"].as_u64()
        ),
        (Some(0.75), Some(9), Some(12))
    );
    assert_eq!(q["by_check"]["regex"], json!({"passed": 2, "total": 2}));
    assert_eq!(
        q["by_check"]["json_valid"],
        json!({"passed": 0, "total": 1})
    );
    assert_eq!(q["data"], "edge-tiny.jsonl");
    assert_eq!(q["cloud"]["score"], 0.0);
    assert_eq!(m["prompts"][0]["name"], "triage");
    assert_eq!(m["prompts"][0]["version"], "1");
    assert_eq!(m["version"], "1.0.0");
    // Signing keeps the scores (the files did not change) and covers them.
    let (key, _) = keygen(&dir);
    let (ok, out, err) = cli(
        &["model", "sign", "--key", &key, pkg.to_str().expect("utf8")],
        &[],
    );
    assert!(ok && out.contains("quality 0.750"), "{out} {err}");
    // A broken set is refused naming the line.
    let bad = dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"id\": \"x\", \"prompt\": \"p\", \"check\": {\"type\": \"fuzzy\"}}\n",
    )
    .expect("write");
    let (ok, _, err) = cli(
        &[
            "eval",
            "--model",
            pkg.to_str().expect("utf8"),
            "--data",
            bad.to_str().expect("utf8"),
        ],
        &[],
    );
    assert!(
        !ok && err.contains("line 1") && err.contains("unknown check type"),
        "{err}"
    );
}

#[tokio::test]
async fn versioned_prompt_is_applied_named_in_headers_and_sent_to_the_cloud_too() {
    let cloud = Recorder::start().await;
    let cloud_url = cloud.v1();
    let gw = Gateway::start(
        GENAI_MODEL,
        &[("EDGE_GATEWAY__UPSTREAMS__CLOUD__BASE_URL", &cloud_url)],
    )
    .await;
    let body = json!({"model": "edge-tiny-genai", "max_tokens": 8,
        "messages": [{"role": "user", "content": "Is the press on line 7 running?"}],
        "metadata": {"prompt": "maintenance", "prompt_variables": {"site": "plant 2"}}});
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("chat");
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-edge-prompt-version"),
        "maintenance@2",
        "the highest version by default"
    );
    assert_eq!(header(&r, "x-edge-route"), "edge");
    assert!(!header(&r, "x-request-id").is_empty());

    let mut pinned = body.clone();
    pinned["metadata"]["prompt"] = json!("maintenance@1");
    let (status, explained) = gw.post_json("/v1/route/explain", &pinned).await;
    assert_eq!(
        (status, explained["prompt"].as_str()),
        (200, Some("maintenance@1"))
    );

    // On the cloud route the upstream gets the same system prompt first.
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .header("x-complexity-score", "0.95")
        .json(&body)
        .send()
        .await
        .expect("chat");
    assert_eq!(header(&r, "x-edge-route"), "cloud:cloud");
    assert_eq!(header(&r, "x-edge-prompt-version"), "maintenance@2");
    let sent = cloud.received();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["messages"][0]["role"], "system");
    let system = sent[0]["messages"][0]["content"]
        .as_str()
        .expect("system prompt");
    assert!(
        system.contains("plant 2") && system.contains("lock out"),
        "{system}"
    );
    assert_eq!(
        sent[0]["messages"][1]["content"],
        "Is the press on line 7 running?"
    );

    for (metadata, param) in [
        (json!({"prompt": "nope"}), "metadata.prompt"),
        (
            json!({"prompt": "maintenance@9", "prompt_variables": {"site": "x"}}),
            "metadata.prompt",
        ),
        (
            json!({"prompt": "maintenance"}),
            "metadata.prompt_variables",
        ),
        (
            json!({"prompt": "maintenance", "prompt_variables": {"site": ["x"]}}),
            "metadata.prompt_variables",
        ),
        (json!({"prompt": 5}), "metadata.prompt"),
    ] {
        let mut bad = body.clone();
        bad["metadata"] = metadata;
        let (status, err) = gw.post_json("/v1/chat/completions", &bad).await;
        assert_eq!(
            (status, err["error"]["param"].as_str()),
            (400, Some(param)),
            "{err}"
        );
    }
    let (status, err) = gw
        .post_json(
            "/v1/completions",
            &json!({"model": "edge-tiny-genai", "prompt": "x", "metadata": {"prompt": "triage"}}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("unsupported_parameter"))
    );
    let (status, prompts) = gw.get_json("/admin/prompts").await;
    assert_eq!(status, 200);
    assert_eq!(prompts["data"].as_array().map(Vec::len), Some(3));
    let served = gw
        .labelled_metric(
            "edge_gateway_served_version_requests_total",
            &[
                ("model", "edge-tiny-genai"),
                ("role", "stable"),
                ("prompt", "maintenance@2"),
            ],
        )
        .await;
    assert_eq!(served, Some(1.0));
}

/// Polls `/readyz` until the audit log has committed at least `seq` records; returns it.
async fn committed_at_least(gw: &Gateway, seq: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, ready) = gw.get_json("/readyz").await;
        let committed = ready["audit"]["committed_seq"].as_u64().unwrap_or(0);
        if committed >= seq {
            return committed;
        }
        assert!(
            Instant::now() < deadline,
            "audit log stuck at {committed}, waiting for {seq}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kill_9(gw: &Gateway) {
    let status = Command::new("kill")
        .args(["-9", &gw.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn audit_records(dir: &Path) -> Vec<Value> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("audit dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    segments.sort();
    segments
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .expect("segment")
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_str::<Value>(l).expect("record"))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn audit_chain_verifies_and_detects_an_edited_line() {
    let dir = tempdir("audit");
    let state = dir.join("reviews.db").display().to_string();
    let env = [("EDGE_GATEWAY__REVIEW__DB_PATH", state.as_str())];
    let gw = Gateway::start(GENAI_MODEL, &env).await;
    for i in 0..4 {
        let body = json!({"model": "edge-tiny-genai", "max_tokens": 2,
            "messages": [{"role": "user", "content": format!("Is the press on line {i} running?")}]});
        let r = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .header("x-request-id", format!("audit-{i}"))
            .header("x-risk-score", "5")
            .header("x-complexity-score", "0.1")
            .json(&body)
            .send()
            .await
            .expect("chat");
        assert_eq!(r.status(), 200);
    }
    // The startup record, the model load, four decisions.
    committed_at_least(&gw, 6).await;
    drop(gw);
    let audit = dir.join("audit");
    let records = audit_records(&audit);
    let decisions: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "routing_decision")
        .collect();
    assert_eq!(decisions.len(), 4);
    assert_eq!(decisions[2]["data"]["request_id"], "audit-2");
    assert_eq!(decisions[2]["data"]["route"], "edge");
    assert!(
        !records
            .iter()
            .any(|r| r.to_string().contains("press on line")),
        "no prompt text in the log"
    );
    let audit_arg = audit.display().to_string();
    let (ok, out, err) = cli(&["audit", "verify", "--dir", &audit_arg], &[]);
    assert!(ok && out.contains("audit log OK: 6 records"), "{out} {err}");

    let segment = audit.join("audit-00000001.jsonl");
    let text = std::fs::read_to_string(&segment).expect("segment");
    let edited: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 2 {
                l.replace("\"route\":\"edge\"", "\"route\":\"cloud:cloud\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_ne!(edited.join("\n") + "\n", text);
    std::fs::write(&segment, edited.join("\n") + "\n").expect("write");
    let (ok, _, err) = cli(&["audit", "verify", "--dir", &audit_arg], &[]);
    assert!(
        !ok && err.contains("line 3") && err.contains("edited"),
        "{err}"
    );
    // The gateway refuses to append to a chain that does not verify.
    let (ok, _, err) = cli(
        &["serve", "--model", GENAI_MODEL],
        &[
            ("EDGE_GATEWAY__REVIEW__DB_PATH", &state),
            ("EDGE_GATEWAY__SERVER__LISTEN", "127.0.0.1:0"),
        ],
    );
    assert!(!ok && err.contains("line 3"), "{err}");
}

#[tokio::test]
async fn audited_decisions_survive_kill_9_during_load() {
    let dir = tempdir("audit-kill");
    let state = dir.join("reviews.db").display().to_string();
    let env = [("EDGE_GATEWAY__REVIEW__DB_PATH", state.as_str())];
    let gw = Gateway::start(GENAI_MODEL, &env).await;
    let load = {
        let client = gw.client.clone();
        let url = gw.url("/v1/chat/completions");
        tokio::spawn(async move {
            let body = json!({"model": "edge-tiny-genai", "max_tokens": 2,
                "messages": [{"role": "user", "content": "Hello!"}]});
            let send = |_| {
                let (client, url, body) = (client.clone(), url.clone(), body.clone());
                async move {
                    let _ = client.post(url).json(&body).send().await;
                }
            };
            futures_util::stream::iter(0..100_000)
                .for_each_concurrent(4, send)
                .await;
        })
    };
    let committed = committed_at_least(&gw, 20).await;
    kill_9(&gw);
    load.abort();
    drop(gw);

    let audit = dir.join("audit");
    let restarted = Gateway::start(GENAI_MODEL, &env).await;
    let (_, ready) = restarted.get_json("/readyz").await;
    let after = ready["audit"]["committed_seq"].as_u64().expect("seq");
    assert!(
        after > committed,
        "records committed before the kill are kept: {after} vs {committed}"
    );
    drop(restarted);
    let (ok, out, err) = cli(
        &["audit", "verify", "--dir", &audit.display().to_string()],
        &[],
    );
    assert!(ok, "the chain verifies after kill -9: {out} {err}");
    let seqs: Vec<u64> = audit_records(&audit)
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seqs.len() as u64 >= committed);
    assert!(
        seqs.iter().enumerate().all(|(i, s)| *s == i as u64 + 1),
        "seqs are contiguous from 1"
    );
}

#[tokio::test]
async fn audit_records_are_buffered_on_disk_while_the_sink_is_down_and_delivered_after_restart() {
    let dir = tempdir("audit-sink");
    let sink = Recorder::start().await;
    sink.set_status(503);
    let state = dir.join("reviews.db").display().to_string();
    let sink_url = format!("{}/ingest", sink.base);
    let env = [
        ("EDGE_GATEWAY__REVIEW__DB_PATH", state.as_str()),
        ("EDGE_GATEWAY__AUDIT__SINK__URL", sink_url.as_str()),
    ];
    let gw = Gateway::start(GENAI_MODEL, &env).await;
    for _ in 0..3 {
        let (status, _) = gw
            .post_json("/v1/chat/completions", &json!({"model": "edge-tiny-genai", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi!"}]}))
            .await;
        assert_eq!(status, 200);
    }
    let committed = committed_at_least(&gw, 4).await;
    // The sink was tried and refused; nothing was acknowledged.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.requests().is_empty() {
        assert!(Instant::now() < deadline, "the sink was never tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sink.requests().iter().all(|r| r.status == 503));
    assert!(
        gw.metric("edge_gateway_audit_sink_lag_records")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    kill_9(&gw);
    drop(gw);

    sink.set_status(200);
    let gw = Gateway::start(GENAI_MODEL, &env).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivered = loop {
        let mut seqs: Vec<u64> = sink
            .requests()
            .iter()
            .filter(|r| r.status == 200)
            .flat_map(|r| {
                String::from_utf8_lossy(&r.body)
                    .lines()
                    .map(|l| {
                        serde_json::from_str::<Value>(l).expect("ndjson")["seq"]
                            .as_u64()
                            .expect("seq")
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        if seqs.len() as u64 > committed {
            break seqs;
        }
        assert!(
            Instant::now() < deadline,
            "sink received {seqs:?}, committed {committed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        delivered[..committed as usize],
        (1..=committed).collect::<Vec<_>>()[..],
        "every record buffered before the restart arrived"
    );
    assert_eq!(
        sink.requests()
            .iter()
            .find(|r| r.status == 200)
            .map(|r| r.path.as_str()),
        Some("/ingest")
    );
    drop(gw);
}

#[tokio::test]
async fn a_policy_rule_applies_its_prompt_unless_the_request_chose_one() {
    let dir = tempdir("policy-prompt");
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        "rules:\n  - id: internal-gets-triage\n    when:\n      data_classification: internal\n    route: edge\n    prompt: triage@1\ndefault: edge\n",
    )
    .expect("policy");
    let policy_path = policy.display().to_string();
    let gw = Gateway::start(
        GENAI_MODEL,
        &[("EDGE_GATEWAY__ROUTING__POLICY", &policy_path)],
    )
    .await;
    let ask = |classification: &'static str, metadata: Value| {
        let req = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .header("x-data-classification", classification)
            .header("x-risk-score", "0")
            .header("x-complexity-score", "0.1")
            .json(
                &json!({"model": "edge-tiny-genai", "max_tokens": 2, "return_token_ids": true,
                "messages": [{"role": "user", "content": "Hello!"}], "metadata": metadata}),
            );
        async move {
            let r = req.send().await.expect("chat");
            assert_eq!(r.status(), 200);
            let prompt = header(&r, "x-edge-prompt-version");
            let v: Value = r.json().await.expect("json");
            (
                prompt,
                v["usage"]["prompt_tokens"].as_u64().expect("tokens"),
            )
        }
    };
    let (prompt, with_rule) = ask("internal", json!({})).await;
    assert_eq!(prompt, "triage@1");
    let (prompt, without) = ask("public", json!({})).await;
    assert_eq!(prompt, "");
    assert!(
        with_rule > without,
        "the rule's system prompt reached the model: {with_rule} vs {without} tokens"
    );
    let (prompt, _) = ask(
        "internal",
        json!({"prompt": "maintenance@1", "prompt_variables": {"site": "x"}}),
    )
    .await;
    assert_eq!(prompt, "maintenance@1", "the request's own choice wins");
    drop(gw);

    std::fs::write(
        &policy,
        "rules:\n  - id: bad-prompt\n    route: edge\n    prompt: nowhere@3\ndefault: edge\n",
    )
    .expect("policy");
    let (ok, _, err) = cli(
        &["check-config"],
        &[("EDGE_GATEWAY__ROUTING__POLICY", &policy_path)],
    );
    assert!(
        !ok && err.contains("rule bad-prompt") && err.contains("nowhere"),
        "{err}"
    );
}

/// A tmpfs of `size` mounted at `dir` for the life of the value (tests run as root here, as in
/// CI; the image-layout check needs the same).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).expect("mkdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    path
}

#[tokio::test]
async fn a_full_audit_disk_refuses_new_requests_and_loses_nothing_once_space_returns() {
    if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
    {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let dir = tempdir("audit-full");
    let audit = dir.join("audit");
    let disk = SmallDisk::mount(&audit, "256k");
    let state = dir.join("reviews.db").display().to_string();
    let audit_arg = audit.display().to_string();
    let env = [
        ("EDGE_GATEWAY__REVIEW__DB_PATH", state.as_str()),
        ("EDGE_GATEWAY__AUDIT__DIR", audit_arg.as_str()),
        ("EDGE_GATEWAY__AUDIT__QUEUE_CAPACITY", "16"),
    ];
    let gw = Gateway::start(GENAI_MODEL, &env).await;
    let before = committed_at_least(&gw, 2).await;
    let filler = fill(&audit);

    let body = json!({"model": "edge-tiny-genai", "max_tokens": 1, "messages": [{"role": "user", "content": "Hi!"}]});
    let ask = || {
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .header("x-risk-score", "0")
            .header("x-complexity-score", "0.1")
            .json(&body)
            .send()
    };
    let mut accepted = 0u64;
    let mut refused = None;
    for _ in 0..200 {
        let r = ask().await.expect("chat");
        match r.status().as_u16() {
            200 => accepted += 1,
            503 => {
                assert!(r.headers().contains_key("retry-after"));
                refused = Some(r.json::<Value>().await.expect("json"));
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let refused = refused.expect("a full queue over a full disk refuses requests");
    assert_eq!(refused["error"]["code"], "audit_unavailable", "{refused}");
    assert!(
        accepted >= 1,
        "requests were served while the writer retried"
    );
    let (_, ready) = gw.get_json("/readyz").await;
    assert_eq!(ready["audit"]["healthy"], false, "{ready}");
    assert!(
        gw.metric("edge_gateway_audit_write_errors_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(gw.get_json("/healthz").await.0, 200, "the process stays up");

    std::fs::remove_file(filler).expect("free the disk");
    // Every accepted request's record is written once the disk has room again.
    let committed = committed_at_least(&gw, before + accepted).await;
    assert_eq!(committed, before + accepted);
    let (_, ready) = gw.get_json("/readyz").await;
    assert_eq!(ready["audit"]["healthy"], true);
    assert_eq!(ask().await.expect("chat").status(), 200);
    committed_at_least(&gw, before + accepted + 1).await;
    drop(gw);
    let (ok, out, err) = cli(&["audit", "verify", "--dir", &audit_arg], &[]);
    assert!(ok, "{out} {err}");
    let decisions = audit_records(&audit)
        .iter()
        .filter(|r| r["kind"] == "routing_decision")
        .count() as u64;
    assert_eq!(
        decisions,
        accepted + 1,
        "one record per accepted request, none for the refused"
    );
    drop(disk);
}

#[tokio::test]
async fn several_packages_are_served_side_by_side_each_under_its_id() {
    let optimum = repo_path(common::OPTIMUM_MODEL).display().to_string();
    let config = format!("models:\n  - path: {optimum}\n    id: tiny-optimum\n");
    let gw = Gateway::start_with_config(GENAI_MODEL, Some(&config), &[]).await;
    let (_, models) = gw.get_json("/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|m| m["metadata"]["type"] != "embedding")
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["edge-tiny-genai", "tiny-optimum"]);
    let mut answers = Vec::new();
    for (id, layout) in [
        ("edge-tiny-genai", "onnxruntime-genai"),
        ("tiny-optimum", "optimum"),
    ] {
        let body = json!({"model": id, "max_tokens": 12, "temperature": 0, "return_token_ids": true,
            "messages": [{"role": "user", "content": "What is the weather in Oslo?"}]});
        let (status, v) = gw.post_json("/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["model"], id);
        let (_, card) = gw.get_json(&format!("/v1/models/{id}")).await;
        assert!(
            card["metadata"]["layout"]
                .as_str()
                .expect("layout")
                .starts_with(layout),
            "{card}"
        );
        answers.push(v["choices"][0]["token_ids"].clone());
    }
    // The same weights in both layouts: the same greedy tokens, from two engines.
    assert_eq!(answers[0], answers[1]);
    let (_, admin) = gw.get_json("/admin/models").await;
    assert_eq!(admin["data"].as_array().map(Vec::len), Some(2));
    let (status, _) = gw.post_json("/admin/models/nope/promote", &json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_candidate_that_does_not_fit_beside_the_stable_version_is_refused_with_the_reason() {
    let dir = tempdir("memory");
    let (key, public) = keygen(&dir);
    let v1 = signed_package(&dir, "v1", "1.0.0", &key);
    let v2 = signed_package(&dir, "v2", "2.0.0", &key);
    let state = dir.join("state/reviews.db").display().to_string();
    // Room for one copy of the weights and 400 KV positions: not for a second copy.
    let budget = common::tiny_memory_budget(400);
    let mut env = governed_env(&state, &public);
    env.extend([
        ("EDGE_GATEWAY__ENGINE__MEMORY_BUDGET_BYTES", budget.as_str()),
        ("EDGE_GATEWAY__ENGINE__RUNTIME_OVERHEAD_BYTES", "0"),
        ("EDGE_GATEWAY__CACHE__ENABLED", "false"),
    ]);
    let gw = Gateway::start(v1.to_str().expect("utf8"), &env).await;
    let entry = stage(&gw, &v2, 50).await;
    let error = entry["last_error"].as_str().expect("error");
    assert!(
        error.contains("engine.memory_budget_bytes")
            && error.contains("cannot hold this model's weights"),
        "{error}"
    );
    assert!(entry["state"]["candidate"].is_null(), "{entry}");
    let (status, version, _) = chat_version(&gw, &chat(4)).await;
    assert_eq!((status, version.as_str()), (200, "edge-tiny@1.0.0"));
}
