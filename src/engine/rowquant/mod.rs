//! Fused per-row int8 matmuls for CPU decoding: the model's dynamic-quantization chains
//! (`onnx/requantize_dynamic.py`) become one custom ONNX Runtime operator each, computed by an
//! AVX-512 VNNI kernel that gives the same bits as the chain (see `kernel.rs`).
//!
//! Why: a one-row decode step runs 81 matmuls, each wrapped in eleven small ops whose dispatch
//! costs about as much as their arithmetic, and ONNX Runtime's integer GEMM is tuned for many
//! rows. Prefill (many rows) goes through the same kernel, tiled six rows at a time.

pub mod kernel;
pub mod op;
pub mod proto;
pub mod rewrite;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ort::operator::OperatorDomain;

use kernel::PackedWeights;

/// The operator domain to register on a session that may contain fused nodes (also a cached
/// optimized graph written by such a session); the session builder keeps it alive.
pub fn operators() -> Result<OperatorDomain, String> {
    OperatorDomain::new(op::DOMAIN)
        .and_then(|d| d.add(op::RowQuantMatMul))
        .map_err(|e| e.to_string())
}

/// Whether fusing can help on this machine: the kernel needs AVX-512 VNNI.
pub fn available() -> bool {
    kernel::vector_kernel_available()
}

/// Whether `model.onnx` may hold chains to fuse on this machine (a cheap byte search; the
/// rewrite itself decides).
pub fn worthwhile(file: &Path) -> bool {
    available()
        && crate::engine::package::GraphOps::read(file).is_ok_and(|g| g.uses("MatMulInteger"))
}

/// The fused form of the model in `file`, or `None` when it has no chain to fuse. The result
/// still refers to the package's other external data by relative names, so it must be loaded
/// with the package directory as the external-data folder, while the returned value (which
/// holds the packed weights) is alive.
pub fn fuse_file(file: &Path) -> Result<Option<rewrite::Fused>, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let dir = file.parent().unwrap_or(Path::new("."));
    rewrite::fuse(&bytes, dir).map_err(|e| format!("{}: {e}", file.display()))
}

/// Packed weights waiting for the kernels of the session being built. The fused nodes name
/// them by key (attribute `weights`) instead of holding them as initializers: ONNX Runtime
/// would otherwise keep the graph's unpacked copy alive next to the packed one.
static PACKED: Mutex<BTreeMap<u64, Arc<PackedWeights>>> = Mutex::new(BTreeMap::new());
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// Keys registered for one rewrite; dropping it (after the session is built, when every kernel
/// holds its own reference) unregisters them.
#[derive(Default)]
pub struct Registered(Vec<u64>);

impl Registered {
    pub fn add(&mut self, weights: PackedWeights) -> u64 {
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        PACKED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, Arc::new(weights));
        self.0.push(key);
        key
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut map = PACKED.lock().unwrap_or_else(PoisonError::into_inner);
        for key in &self.0 {
            map.remove(key);
        }
    }
}

fn packed(key: u64) -> Option<Arc<PackedWeights>> {
    PACKED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
        .cloned()
}
