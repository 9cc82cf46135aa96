//! `ai.edge_gateway:RowQuantMatMul`, the ONNX Runtime custom operator the rewrite puts in place
//! of each per-row int8 matmul chain: `Y = RowQuantMatMul(A float[..., K], w_scale float[N])`
//! with integer attributes `weights` (the key of the packed `[K, N]` weights, see
//! [`super::Registered`]), `k` and `n`; computed by [`super::kernel`].
//!
//! One kernel call replaces twelve ops, and streams weights packed for `vpdpbusd`.

use std::sync::Arc;

use ort::operator::{
    ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput,
};
use ort::value::{TensorElementType, ValueType};

use super::kernel::{self, Operands, PackedWeights, BLOCK_COLS};

pub const DOMAIN: &str = "ai.edge_gateway";
pub const OP_TYPE: &str = "RowQuantMatMul";

/// Rows quantized per parallel task, so a 512-token prefill spreads over the intra-op threads.
const QUANTIZE_ROWS_PER_TASK: usize = 16;

pub struct RowQuantMatMul;

impl Operator for RowQuantMatMul {
    type Kernel<'attr> = RowQuantKernel;

    fn name(&self) -> &str {
        OP_TYPE
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Float32),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn infer_shape(&self, ctx: &mut ort::operator::ShapeInferenceContext) -> ort::Result<()> {
        let n = ctx.attr::<i64>("n")?;
        let inputs = ctx.inputs();
        let Some(ValueType::Tensor {
            shape,
            dimension_symbols,
            ..
        }) = inputs.first()
        else {
            return Ok(());
        };
        let mut shape: Vec<i64> = shape.to_vec();
        let mut symbols: Vec<String> = dimension_symbols.to_vec();
        if let (Some(dim), Some(symbol)) = (shape.last_mut(), symbols.last_mut()) {
            *dim = n;
            symbol.clear();
        }
        ctx.set_output(
            0,
            &ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape: shape.into(),
                dimension_symbols: symbols.into_iter().collect(),
            },
        )
    }

    fn create_kernel<'attr>(&self, info: &KernelContext<'attr>) -> ort::Result<RowQuantKernel> {
        let key = info
            .get::<i64>("weights")
            .ok_or_else(|| ort::Error::new(format!("{OP_TYPE}: no `weights` attribute")))?;
        // Only the rewrite that built this graph registers the key, and only while its
        // session is being created: a saved copy of the graph cannot be loaded on its own.
        let weights = super::packed(key as u64).ok_or_else(|| {
            ort::Error::new(format!(
                "{OP_TYPE}: packed weights {key} are not registered (this graph can only be built by the gateway's rewrite)"
            ))
        })?;
        Ok(RowQuantKernel {
            weights,
            vector: kernel::vector_kernel_available(),
            scratch: Scratch::default(),
        })
    }
}

pub struct RowQuantKernel {
    weights: Arc<PackedWeights>,
    vector: bool,
    scratch: Scratch,
}

/// Quantized activations and their scales, kept by each kernel between decode steps so a step
/// allocates nothing, but released after a call bigger than [`KEEP_SCRATCH_BYTES`]: 81 kernels
/// each holding a buffer sized for a 512-row prefill would pin tens of megabytes.
#[derive(Default)]
struct Scratch {
    q: Vec<u8>,
    scales: Vec<f32>,
}

/// Enough for a batch of 8 rows of the widest layer of a few-billion-parameter model.
const KEEP_SCRATCH_BYTES: usize = 64 << 10;

/// A pointer the parallel tasks share; each writes a disjoint part of what it points to.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: the tasks write disjoint rows or columns (see the call sites).
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    // A method, not field access, so closures capture the whole (Sync) wrapper.
    fn get(self) -> *mut T {
        self.0
    }
}

impl Kernel for RowQuantKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = ctx
            .input(0)?
            .ok_or_else(|| ort::Error::new(format!("{OP_TYPE}: missing input A")))?;
        let (a_shape, a) = input.try_extract_tensor::<f32>()?;
        let w_scale = ctx
            .input(1)?
            .ok_or_else(|| ort::Error::new(format!("{OP_TYPE}: missing input w_scale")))?;
        let (_, w_scale) = w_scale.try_extract_tensor::<f32>()?;
        let (k, n) = (self.weights.k, self.weights.n);
        if a_shape.last().copied() != Some(k as i64) || w_scale.len() != n {
            return Err(ort::Error::new(format!(
                "{OP_TYPE}: A {a_shape:?} and w_scale [{}] do not fit weights [{k}, {n}]",
                w_scale.len()
            )));
        }
        let rows = a.len() / k.max(1);
        let mut out_shape: Vec<i64> = a_shape.to_vec();
        if let Some(last) = out_shape.last_mut() {
            *last = n as i64;
        }
        let mut output = ctx
            .output(0, out_shape)?
            .ok_or_else(|| ort::Error::new(format!("{OP_TYPE}: no output")))?;
        let (_, y) = output.try_extract_tensor_mut::<f32>()?;
        if rows == 0 || n == 0 {
            return Ok(());
        }

        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.multiply(ctx, &mut scratch, a, rows, w_scale, y);
        if scratch.q.capacity() <= KEEP_SCRATCH_BYTES {
            self.scratch = scratch;
        }
        result
    }
}

impl RowQuantKernel {
    fn multiply(
        &self,
        ctx: &ComputeContext,
        scratch: &mut Scratch,
        a: &[f32],
        rows: usize,
        w_scale: &[f32],
        y: &mut [f32],
    ) -> ort::Result<()> {
        let k = self.weights.k;
        let n = self.weights.n;
        let stride = kernel::padded_k(k);
        scratch.q.resize(rows * stride, 0);
        scratch.scales.resize(rows, 0.0);
        let (q, scales) = (
            Shared(scratch.q.as_mut_ptr()),
            Shared(scratch.scales.as_mut_ptr()),
        );
        let quantize = |task: usize| {
            let first = task * QUANTIZE_ROWS_PER_TASK;
            for m in first..rows.min(first + QUANTIZE_ROWS_PER_TASK) {
                // SAFETY: task `task` alone writes rows first.. of `q` and `scales`.
                unsafe {
                    let q = std::slice::from_raw_parts_mut(q.get().add(m * stride), stride);
                    *scales.get().add(m) = kernel::quantize_row(&a[m * k..][..k], q);
                }
            }
        };
        let tasks = rows.div_ceil(QUANTIZE_ROWS_PER_TASK);
        if tasks > 1 {
            ctx.par_for(tasks, tasks, quantize)?;
        } else {
            quantize(0);
        }

        let ops = Operands {
            q: &scratch.q[..rows * stride],
            scales: &scratch.scales[..rows],
            w: &self.weights,
            w_scale,
        };
        let y = Shared(y.as_mut_ptr());
        let vector = self.vector;
        // SAFETY (both calls): each block writes only its own 64 columns of `y`.
        let block = |b: usize| unsafe { kernel::matmul_block(&ops, b, y.get(), vector) };
        let blocks = n.div_ceil(BLOCK_COLS);
        if blocks > 1 {
            ctx.par_for(blocks, blocks, block)?;
        } else {
            block(0);
        }
        Ok(())
    }
}
