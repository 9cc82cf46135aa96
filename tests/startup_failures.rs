//! Startup refuses bad inputs with one clear message (naming the file or key) and a non-zero
//! exit, never a panic: missing ONNX Runtime, broken model packages, invalid configuration.

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on unexpected results"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{repo_path, GENAI_MODEL, OPTIMUM_MODEL};

/// Runs `edge-gateway args...` to completion and returns (exit code, stderr).
fn run_gateway(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let review_dir =
        std::env::temp_dir().join(format!("edge-gateway-startup-{}", uuid::Uuid::new_v4()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-gateway"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .env("EDGE_GATEWAY__SERVER__LISTEN", "127.0.0.1:0")
        // Broken copies live in temp dirs; keep their optimized graphs out of the repo cache.
        .env("EDGE_GATEWAY__CACHE__OPTIMIZED_GRAPH_DIR", "")
        .env(
            "EDGE_GATEWAY__REVIEW__DB_PATH",
            review_dir.join("reviews.db"),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run edge-gateway");
    common::remove_path(&review_dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Copies a committed model package into a fresh temp dir so a test can break it.
/// A copy of a committed package without its manifest: these tests break files on purpose
/// to see the parser name them, which the manifest's digests would otherwise catch first
/// (tests/governance.rs covers that).
fn copy_package(src: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("edge-gateway-pkg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dst).expect("mkdir");
    for entry in std::fs::read_dir(repo_path(src)).expect("read package") {
        let entry = entry.expect("entry");
        if entry.file_name() == "manifest.json" {
            continue;
        }
        std::fs::copy(entry.path(), dst.join(entry.file_name())).expect("copy");
    }
    dst
}

fn serve(dir: &Path) -> (i32, String) {
    run_gateway(&["serve", "--model", dir.to_str().expect("utf8 path")], &[])
}

#[test]
fn missing_onnx_runtime_is_one_clear_message() {
    let (code, err) = run_gateway(
        &["serve"],
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("/nonexistent/libonnxruntime.so") && err.contains("make ort"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn corrupt_model_file_is_named() {
    let dir = copy_package(GENAI_MODEL);
    std::fs::write(dir.join("model.onnx"), b"this is not an onnx graph").expect("corrupt");
    let (code, err) = serve(&dir);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("model.onnx"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn missing_tokenizer_is_named() {
    let dir = copy_package(OPTIMUM_MODEL);
    std::fs::remove_file(dir.join("tokenizer.json")).expect("remove");
    let (code, err) = serve(&dir);
    assert_eq!(code, 1);
    assert!(
        err.contains("tokenizer.json") && err.contains("missing"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn invalid_genai_config_is_named() {
    let dir = copy_package(GENAI_MODEL);
    std::fs::write(dir.join("genai_config.json"), b"{\"model\": {").expect("break");
    let (code, err) = serve(&dir);
    assert_eq!(code, 1);
    assert!(
        err.contains("genai_config.json") && err.contains("invalid JSON"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn config_disagreeing_with_graph_is_named() {
    let dir = copy_package(OPTIMUM_MODEL);
    let cfg_path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).expect("read")).expect("json");
    cfg["num_hidden_layers"] = serde_json::json!(99);
    std::fs::write(&cfg_path, cfg.to_string()).expect("write");
    let (code, err) = serve(&dir);
    assert_eq!(code, 1);
    assert!(
        err.contains("model.onnx") && err.contains("num_hidden_layers"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_config_rejects_bad_values_with_key_path() {
    let (code, err) = run_gateway(
        &["check-config"],
        &[("EDGE_GATEWAY__ENGINE__MAX_QUEUE", "0")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("engine.max_queue"), "{err}");
    let (code, _) = run_gateway(&["check-config"], &[]);
    assert_eq!(code, 0);
}

#[test]
fn broken_exemplars_or_embedding_package_stop_startup_and_check_config() {
    let dir = std::env::temp_dir().join(format!("edge-gateway-exemplars-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    for f in ["complexity.yaml", "risk.yaml", "pii.yaml"] {
        std::fs::copy(repo_path(&format!("policies/exemplars/{f}")), dir.join(f)).expect("copy");
    }
    let risk = dir.join("risk.yaml");
    let text = std::fs::read_to_string(&risk).expect("read");
    std::fs::write(&risk, text.replacen("score: 80", "score: 800", 1)).expect("write");
    let env = [(
        "EDGE_GATEWAY__ROUTING__EXEMPLARS",
        dir.to_str().expect("utf8"),
    )];
    for args in [&["check-config"][..], &["serve"][..]] {
        let (code, err) = run_gateway(args, &env);
        assert_ne!(code, 0, "{args:?}: {err}");
        assert!(
            err.contains("risk.yaml") && err.contains("score"),
            "{args:?}: {err}"
        );
    }
    // The heuristics need no exemplars.
    let (code, err) = run_gateway(
        &["check-config"],
        &[env[0], ("EDGE_GATEWAY__ROUTING__SCORER", "heuristic")],
    );
    assert_eq!(code, 0, "{err}");
    let _ = std::fs::remove_dir_all(dir);

    let pkg = copy_package("onnx/models/all-minilm-l6-v2-int8");
    std::fs::remove_file(pkg.join("embedding_config.json")).expect("rm");
    let (code, err) = run_gateway(
        &["serve"],
        &[(
            "EDGE_GATEWAY__EMBEDDINGS__PATH",
            pkg.to_str().expect("utf8"),
        )],
    );
    assert_ne!(code, 0);
    assert!(err.contains("embedding_config.json"), "{err}");
    let _ = std::fs::remove_dir_all(pkg);
}
