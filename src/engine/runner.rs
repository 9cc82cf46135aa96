//! Owns one ONNX Runtime session and runs decoder steps over a sequence's KV state.
//!
//! KV handling never copies the cache on our side: in concatenating mode each step's
//! `present.*` values are moved into the next step's `past_*` inputs; in shared-buffer mode one
//! preallocated buffer per layer is bound as both input and output, so GroupQueryAttention
//! writes the new positions in place.

use std::borrow::Cow;
use std::path::Path;

use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::IoBinding;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};

use super::error::{InferenceError, ModelError};
use super::layout::{IndexType, KvMode, ModelLayout};
use super::package::ModelPackage;

/// Session options that matter for speed and start-up.
#[derive(Debug, Clone, Default)]
pub struct RunnerOptions {
    /// 0 = one per logical CPU (ORT's own default counts physical cores only, which on
    /// small SMT VMs leaves half the CPU idle during decode).
    pub intra_threads: usize,
}

/// A loaded decoder session plus its discovered layout.
pub struct Runner {
    session: Session,
    layout: ModelLayout,
    cpu_output: MemoryInfo<'static>,
}

/// The KV cache of one sequence.
pub struct KvState {
    len: usize,
    capacity: usize,
    storage: KvStorage,
}

enum KvStorage {
    /// Per layer: key then value.
    Concat(Vec<DynValue>),
    Shared {
        // Kept alive here; the binding references them as both past and present.
        _buffers: Vec<Tensor<f32>>,
        binding: Box<IoBinding>,
    },
}

impl KvState {
    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first forward pass.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum positions this state can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl Runner {
    /// Opens the package's ONNX file and discovers its layout.
    pub fn load(
        env: &ort::environment::Environment,
        package: &ModelPackage,
        options: &RunnerOptions,
    ) -> Result<Self, ModelError> {
        let file = &package.onnx_file;
        let session_err = |e: String| ModelError::Session {
            file: file.clone(),
            message: e,
        };
        let mut builder = Session::builder(env)
            .map_err(|e| session_err(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| session_err(e.to_string()))?;
        let threads = match options.intra_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        builder = builder
            .with_intra_threads(threads)
            .map_err(|e| session_err(e.to_string()))?;
        let session = builder
            .commit_from_file(file)
            .map_err(|e| session_err(e.to_string()))?;
        let layout = ModelLayout::discover(&session, package)?;
        let cpu_output = MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::CPUOutput,
        )
        .map_err(|e| session_err(e.to_string()))?;
        Ok(Self {
            session,
            layout,
            cpu_output,
        })
    }

    /// The discovered layout.
    pub fn layout(&self) -> &ModelLayout {
        &self.layout
    }

    /// Creates an empty KV state able to hold `capacity` positions.
    pub fn new_state(&mut self, capacity: usize) -> Result<KvState, InferenceError> {
        let l = &self.layout;
        let storage = match l.kv_mode {
            KvMode::Concatenate => {
                let mut values = Vec::with_capacity(2 * l.num_layers());
                for _ in 0..2 * l.num_layers() {
                    let empty = Tensor::<f32>::from_array((
                        [1usize, l.num_kv_heads, 0, l.head_size],
                        Vec::<f32>::new(),
                    ))?;
                    values.push(empty.into_dyn());
                }
                KvStorage::Concat(values)
            }
            KvMode::SharedBuffer => {
                let mut binding = Box::new(self.session.create_binding()?);
                let mut buffers = Vec::with_capacity(2 * l.num_layers());
                let shape = [1usize, l.num_kv_heads, capacity, l.head_size];
                for (past, present) in l.past.iter().zip(&l.present) {
                    for (input, output) in [(&past.0, &present.0), (&past.1, &present.1)] {
                        let mut buffer = Tensor::<f32>::new(self.session.allocator(), shape)?;
                        // Positions past the sequence length are masked, but zeroing keeps
                        // stale floats (possibly NaN) out of any kernel that reads the buffer.
                        buffer.extract_tensor_mut().1.fill(0.0);
                        binding.bind_input(input.as_str(), &buffer)?;
                        binding.bind_output(output.as_str(), &mut buffer)?;
                        buffers.push(buffer);
                    }
                }
                KvStorage::Shared {
                    _buffers: buffers,
                    binding,
                }
            }
        };
        Ok(KvState {
            len: 0,
            capacity,
            storage,
        })
    }

    /// Runs `tokens` through the model after the state's cached positions and writes the
    /// logits of the last position into `logits_out`.
    pub fn forward(
        &mut self,
        state: &mut KvState,
        tokens: &[u32],
        logits_out: &mut Vec<f32>,
    ) -> Result<(), InferenceError> {
        if tokens.is_empty() {
            return Err(InferenceError::Output(
                "forward called with no tokens".into(),
            ));
        }
        let past = state.len;
        let total = past + tokens.len();
        if total > state.capacity {
            return Err(InferenceError::Output(format!(
                "sequence of {total} positions exceeds the KV capacity {}",
                state.capacity
            )));
        }
        let l = &self.layout;
        let ids = index_tensor(
            l.input_ids_type,
            tokens.iter().map(|&t| i64::from(t)),
            tokens.len(),
        )?;
        let mask = match &l.attention_mask {
            Some(_) => Some(index_tensor(
                l.attention_mask_type,
                std::iter::repeat_n(1, total),
                total,
            )?),
            None => None,
        };
        let positions = match &l.position_ids {
            Some(_) => Some(index_tensor(
                l.position_ids_type,
                (past..total).map(|p| p as i64),
                tokens.len(),
            )?),
            None => None,
        };
        match &mut state.storage {
            KvStorage::Concat(values) => {
                let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
                    Vec::with_capacity(3 + values.len());
                inputs.push((Cow::Borrowed(l.input_ids.as_str()), ids.into()));
                if let (Some(name), Some(mask)) = (&l.attention_mask, mask) {
                    inputs.push((Cow::Borrowed(name.as_str()), mask.into()));
                }
                if let (Some(name), Some(pos)) = (&l.position_ids, positions) {
                    inputs.push((Cow::Borrowed(name.as_str()), pos.into()));
                }
                let mut drained = values.drain(..);
                for (k, v) in &l.past {
                    let (Some(kv), Some(vv)) = (drained.next(), drained.next()) else {
                        return Err(InferenceError::Output("KV state lost a layer".into()));
                    };
                    inputs.push((Cow::Borrowed(k.as_str()), kv.into()));
                    inputs.push((Cow::Borrowed(v.as_str()), vv.into()));
                }
                drop(drained);
                let mut outputs = self.session.run(inputs)?;
                copy_last_logits(outputs.get(l.logits.as_str()), logits_out)?;
                for (k, v) in &l.present {
                    let (Some(kv), Some(vv)) =
                        (outputs.remove(k.as_str()), outputs.remove(v.as_str()))
                    else {
                        return Err(InferenceError::Output(format!(
                            "model did not return {k}/{v}"
                        )));
                    };
                    values.push(kv);
                    values.push(vv);
                }
            }
            KvStorage::Shared { binding, .. } => {
                binding.bind_input(l.input_ids.as_str(), &ids)?;
                if let (Some(name), Some(mask)) = (&l.attention_mask, &mask) {
                    binding.bind_input(name.as_str(), mask)?;
                }
                if let (Some(name), Some(pos)) = (&l.position_ids, &positions) {
                    binding.bind_input(name.as_str(), pos)?;
                }
                // Rebound every step: ORT would otherwise reuse the previous step's logits
                // buffer, whose shape differs between prefill and decode.
                binding.bind_output_to_device(l.logits.as_str(), &self.cpu_output)?;
                let outputs = self.session.run_binding(binding)?;
                copy_last_logits(outputs.get(l.logits.as_str()), logits_out)?;
            }
        }
        state.len = total;
        Ok(())
    }
}

fn index_tensor(
    ty: IndexType,
    values: impl Iterator<Item = i64>,
    len: usize,
) -> Result<DynValue, InferenceError> {
    Ok(match ty {
        IndexType::I64 => {
            Tensor::from_array(([1usize, len], values.collect::<Vec<i64>>()))?.into_dyn()
        }
        IndexType::I32 => Tensor::from_array((
            [1usize, len],
            values.map(|v| v as i32).collect::<Vec<i32>>(),
        ))?
        .into_dyn(),
    })
}

fn copy_last_logits(value: Option<&DynValue>, out: &mut Vec<f32>) -> Result<(), InferenceError> {
    let value = value.ok_or_else(|| InferenceError::Output("no logits output".into()))?;
    let (shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|e| InferenceError::Output(format!("logits are not float32: {e}")))?;
    let vocab = shape
        .last()
        .copied()
        .and_then(|v| usize::try_from(v).ok())
        .filter(|v| *v > 0)
        .ok_or_else(|| InferenceError::Output("logits have no vocabulary dimension".into()))?;
    if data.len() < vocab {
        return Err(InferenceError::Output("logits tensor is empty".into()));
    }
    out.clear();
    out.extend_from_slice(&data[data.len() - vocab..]);
    Ok(())
}

/// Convenience for tools: a file's display name in errors.
pub fn display(path: &Path) -> String {
    path.display().to_string()
}
