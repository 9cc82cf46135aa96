//! Execution-provider selection on a CPU-only machine (the CPU `onnxruntime` wheel has no CUDA,
//! TensorRT or OpenVINO): `require_accelerator` stops startup with the documented message;
//! without it the gateway falls back down the list and reports the provider that really runs;
//! bad provider lists are refused by `check-config` naming the key.

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on unexpected results"
)]

mod common;

use std::process::Command;

use common::{Gateway, GENAI_MODEL};

fn write_config(yaml: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("edge-gateway-ep-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&path, yaml).expect("write config");
    path
}

/// Runs `edge-gateway <args> --config <yaml>` to completion: (exit code, stderr + stdout).
fn run(args: &[&str], yaml: &str) -> (i32, String) {
    let config = write_config(yaml);
    let review_dir = std::env::temp_dir().join(format!("edge-gateway-ep-{}", uuid::Uuid::new_v4()));
    let out = Command::new(env!("CARGO_BIN_EXE_edge-gateway"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .arg("--config")
        .arg(&config)
        .env("EDGE_GATEWAY__SERVER__LISTEN", "127.0.0.1:0")
        .env("EDGE_GATEWAY__REVIEW__DB_PATH", review_dir.join("r.db"))
        .output()
        .expect("run edge-gateway");
    common::remove_path(&config);
    common::remove_path(&review_dir);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ),
    )
}

#[test]
fn required_cuda_without_a_gpu_stops_startup_with_the_reason() {
    let (code, err) = run(
        &["serve"],
        "model:\n  execution_providers: [cuda, cpu]\n  require_accelerator: true\n",
    );
    assert_ne!(code, 0, "started without the required accelerator: {err}");
    assert!(
        err.contains("execution provider cuda is required (model.require_accelerator: true) but did not attach"),
        "{err}"
    );
    assert!(
        err.contains("onnxruntime-gpu"),
        "no hint at the library: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn unavailable_accelerators_fall_back_to_cpu_and_cpu_is_reported() {
    let gw = Gateway::start_with_config(
        GENAI_MODEL,
        Some(
            "model:\n  execution_providers:\n    - {kind: tensorrt, fp16: true, engine_cache_dir: /tmp/trt}\n    - kind: cuda\n      device_id: 0\n    - {kind: cpu, spinning: true}\n",
        ),
        &[],
    )
    .await;
    let (_, ready) = gw.get_json("/readyz").await;
    assert_eq!(ready["execution_provider"], "cpu", "{ready}");
    let (_, models) = gw.get_json("/v1/models").await;
    assert_eq!(
        models["data"][0]["metadata"]["execution_provider"], "cpu",
        "{models}"
    );
    let info = gw
        .metric("edge_gateway_model_info{model=\"edge-tiny-genai\",layout=\"onnxruntime-genai (shared KV buffer)\",execution_provider=\"cpu\"}")
        .await;
    assert_eq!(info, Some(1.0));
    // And it serves.
    let (s, _) = gw
        .post_json(
            "/v1/completions",
            &serde_json::json!({"model": "edge-tiny-genai", "prompt": "The pump", "max_tokens": 4}),
        )
        .await;
    assert_eq!(s, 200);
}

#[test]
fn bad_provider_lists_are_refused_naming_the_key() {
    let cases = [
        (
            "model:\n  execution_providers: [cpu, cuda]\n",
            "put it last",
        ),
        ("model:\n  execution_providers: [tpu]\n", "tpu"),
        ("model:\n  execution_providers: []\n", "at least one"),
        (
            "model:\n  execution_providers: [{kind: openvino, device_type: FPGA}]\n",
            "device_type",
        ),
        (
            "model:\n  execution_providers: [{kind: openvino, precision: INT4}]\n",
            "precision",
        ),
        (
            "model:\n  execution_providers: [{kind: tensorrt, int8: yes, engine_cache: true}]\n",
            "engine_cache",
        ),
        (
            "model:\n  execution_providers: [cpu]\n  require_accelerator: true\n",
            "model.require_accelerator",
        ),
    ];
    for (yaml, needle) in cases {
        let (code, err) = run(&["check-config"], yaml);
        assert_ne!(code, 0, "{yaml} was accepted");
        assert!(
            err.contains("model.execution_providers") || err.contains("model.require_accelerator"),
            "{yaml}: {err}"
        );
        assert!(err.contains(needle), "{yaml}: {err}");
    }
    let (code, out) = run(
        &["check-config"],
        "model:\n  execution_providers:\n    - {kind: openvino, device_type: GPU.0, precision: FP16, cache_dir: /var/cache/ov}\n    - cpu\n",
    );
    assert_eq!(code, 0, "{out}");
}
