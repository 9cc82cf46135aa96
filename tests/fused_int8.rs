//! The fused per-row int8 operator (`engine::rowquant`) against ONNX Runtime's own ops on the
//! committed dynamic-int8 model: every chain is fused, and prefill and decode logits are equal
//! bit for bit, so fusing changes speed and nothing else. (The HTTP reference tests then check
//! the fused gateway's greedy ids against onnxruntime-genai's.)

#![expect(clippy::expect_used, reason = "tests fail loudly")]

mod common;

use edge_gateway::engine::package::{GraphOps, ModelPackage};
use edge_gateway::engine::rowquant;
use edge_gateway::engine::runner::{Runner, RunnerOptions};
use edge_gateway::engine::runtime;
use edge_gateway::engine::sampling::argmax;

fn load(fuse: bool) -> Runner {
    let env = runtime::environment(None).expect("ONNX Runtime");
    let package =
        ModelPackage::load(&common::repo_path(common::GENAI_DQ_MODEL), None).expect("package");
    Runner::load(
        env,
        &package,
        &RunnerOptions {
            fuse_int8_matmul: fuse,
            ..RunnerOptions::default()
        },
    )
    .expect("session")
}

/// Greedy logits of a 37-token prompt (six-row tiles plus a remainder) and 12 decode steps.
fn logits(runner: &mut Runner) -> Vec<Vec<u32>> {
    let prompt: Vec<u32> = (0..37).map(|i| (i * 53 + 7) % 300 + 3).collect();
    let mut state = runner.new_state(64).expect("state");
    let mut out = Vec::new();
    let mut logits = Vec::new();
    runner
        .forward(&mut state, &prompt, &mut logits)
        .expect("prefill");
    for _ in 0..12 {
        out.push(logits.iter().map(|v| v.to_bits()).collect());
        let token = argmax(&logits);
        runner
            .forward(&mut state, &[token], &mut logits)
            .expect("decode");
    }
    out
}

#[test]
fn fused_operator_gives_onnx_runtimes_logits_bit_for_bit() {
    let mut plain = load(false);
    assert_eq!(plain.fused_matmuls(), 0, "fusing was off");
    if !rowquant::available() {
        eprintln!("SKIPPED: this CPU lacks AVX-512 VNNI, so the gateway does not fuse here");
        return;
    }
    let mut fused = load(true);
    let model = common::repo_path(common::GENAI_DQ_MODEL).join("model.onnx");
    assert!(GraphOps::read(&model).expect("graph").uses("MatMulInteger"));
    // 4 layers × (qkv, o, gate, up, down) + lm_head, as onnx/requantize_dynamic.py wrote them.
    assert_eq!(fused.fused_matmuls(), 21, "every exporter chain is fused");
    let (a, b) = (logits(&mut plain), logits(&mut fused));
    for (step, (a, b)) in a.iter().zip(&b).enumerate() {
        assert!(a == b, "logits differ at step {step}");
    }
}
