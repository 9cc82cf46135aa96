//! Owns one ONNX Runtime session and runs decoder steps over a sequence's KV state.
//!
//! KV handling never copies the cache on our side: in concatenating mode each step's
//! `present.*` values are moved into the next step's `past_*` inputs; in shared-buffer mode one
//! preallocated buffer per layer is bound as both input and output, so GroupQueryAttention
//! writes the new positions in place. KV tensors are float32 or float16, as the graph declares
//! (`ModelLayout::kv_type`); logits of either type are converted to float32 for sampling.

use std::borrow::Cow;
use std::path::Path;

use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::IoBinding;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynTensor, DynValue, Tensor};

use super::error::{InferenceError, ModelError};
use super::kv::{copy_last_logits, typed_blocks, with_float_type, KvData, KvElement};
use super::layout::{DeclaredInputs, IndexType, KvMode, ModelLayout};
use super::package::{GraphOps, ModelPackage};
use super::providers::{ProviderSettings, TrtProfiles};
use super::rowquant;

/// Session options that matter for speed and start-up.
#[derive(Debug, Clone, Default)]
pub struct RunnerOptions {
    /// 0 = one per logical CPU (ORT's own default counts physical cores only, which on
    /// small SMT VMs leaves half the CPU idle during decode).
    pub intra_threads: usize,
    /// Directory for ORT's optimized graph, reused on later starts; `None` disables.
    pub optimized_graph_dir: Option<std::path::PathBuf>,
    /// Execution providers in order of preference; empty means CPU.
    pub providers: Vec<ProviderSettings>,
    /// A failing first provider stops startup instead of falling back.
    pub require_accelerator: bool,
    /// Sequences decoded in one batch (`engine.max_concurrent_sequences`) and the effective
    /// context length: the shape range TensorRT's optimization profile must cover. 0 = 1 and
    /// the package's context length.
    pub max_batch: usize,
    pub context_length: usize,
    /// TensorRT profiles; [`Runner::load`] derives them from the package when TensorRT is listed.
    pub tensorrt_profiles: Option<TrtProfiles>,
    /// On CPU, replace the graph's per-row int8 matmul chains with the fused AVX-512 VNNI
    /// operator (`rowquant`) where the CPU has it; the results are bit-identical.
    pub fuse_int8_matmul: bool,
}

/// A loaded decoder session plus its discovered layout.
pub struct Runner {
    pub(super) session: Session,
    pub(super) layout: ModelLayout,
    pub(super) cpu_output: MemoryInfo<'static>,
    /// Describes KV buffers we own and lend to ORT (see `slots.rs`).
    pub(super) cpu_input: MemoryInfo<'static>,
    /// The execution provider that actually runs the session.
    provider: &'static str,
    /// The graph quantizes activations with one scale per input tensor, so a row's result
    /// would depend on the other rows of a batch (see [`Runner::supports_batching`]).
    per_tensor_activations: bool,
    /// Matmul chains running on the fused `rowquant` operator.
    fused_matmuls: usize,
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
        // The binding references these as both past and present; they are also written
        // directly when a cached prefix is restored. Tensors of the layout's KV type.
        buffers: Vec<DynTensor>,
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
    /// Opens the package's ONNX file (or its cached optimized graph) and discovers its layout.
    pub fn load(
        env: &ort::environment::Environment,
        package: &ModelPackage,
        options: &RunnerOptions,
    ) -> Result<Self, ModelError> {
        let declared = DeclaredInputs::from_package(package);
        let mut options = Cow::Borrowed(options);
        if options
            .providers
            .iter()
            .any(|p| matches!(p, ProviderSettings::Tensorrt { .. }))
        {
            let context = match options.context_length {
                0 => package.context_length,
                c => c.min(package.context_length),
            };
            let profiles = TrtProfiles::for_inputs(&declared, options.max_batch.max(1), context);
            tracing::info!(min = %profiles.min, opt = %profiles.opt, max = %profiles.max, "TensorRT optimization profile");
            options.to_mut().tensorrt_profiles = Some(profiles);
        }
        // A saved optimized graph holds provider-specific fusions: only the CPU path uses it.
        let first_is_cpu = options
            .providers
            .first()
            .is_none_or(|p| !p.is_accelerator());
        // A fused graph's nodes name weights packed in this process, so ORT's optimized copy of
        // it cannot be saved for a later start; fusing takes far less than it saves anyway.
        let fuses =
            first_is_cpu && options.fuse_int8_matmul && rowquant::worthwhile(&package.onnx_file);
        let Opened {
            session,
            provider,
            fused_matmuls,
        } = match &options.optimized_graph_dir {
            Some(dir) if first_is_cpu && !fuses => {
                open_with_graph_cache(env, package, &options, dir)?
            }
            _ => open_session(
                env,
                &package.onnx_file,
                &options,
                GraphOptimizationLevel::All,
                None,
            )?,
        };
        let layout = ModelLayout::discover(&session, package)?;
        if options.tensorrt_profiles.is_some() && DeclaredInputs::of_layout(&layout) != declared {
            tracing::warn!(declared = ?declared, found = ?DeclaredInputs::of_layout(&layout), "the graph's inputs differ from what the package config declares; the TensorRT profile was built for the declared ones");
        }
        tracing::info!(
            kv_type = layout.kv_type.name(),
            logits_type = layout.logits_type.name(),
            kv_bytes_per_token = layout.kv_bytes_per_token(),
            "model layout"
        );
        let per_tensor_activations = quantizes_activations_per_tensor(&package.onnx_file)?;
        if per_tensor_activations && layout.kv_mode == KvMode::SharedBuffer {
            tracing::warn!(file = %package.onnx_file.display(), "the graph quantizes activations with one scale per tensor (DynamicQuantizeLinear / DynamicQuantizeMatMul): decode steps run one sequence per call, since batched rows would change each other's results; onnx/requantize_dynamic.py writes a per-row form that batches");
        }
        let cpu_output = MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::CPUOutput,
        )
        .map_err(|e| ModelError::Session {
            file: package.onnx_file.clone(),
            message: e.to_string(),
        })?;
        let cpu_input = MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(|e| ModelError::Session {
            file: package.onnx_file.clone(),
            message: e.to_string(),
        })?;
        Ok(Self {
            session,
            layout,
            cpu_output,
            cpu_input,
            provider,
            per_tensor_activations,
            fused_matmuls,
        })
    }

    /// How many of the graph's per-row int8 matmul chains run on the fused AVX-512 VNNI
    /// operator (0 when fusing is off, unsupported here, or the graph has none).
    pub fn fused_matmuls(&self) -> usize {
        self.fused_matmuls
    }

    /// Whether decode steps of several sequences can share one call (see `scheduler.rs`):
    /// shared-buffer (GroupQueryAttention) graphs take right-padded batches of slots, unless
    /// their activations are quantized per tensor, which would make a sequence's tokens depend
    /// on what shares its batch.
    pub fn supports_batching(&self) -> bool {
        self.layout.kv_mode == KvMode::SharedBuffer && !self.per_tensor_activations
    }

    /// The execution provider running this session (`cpu`, `cuda`, `tensorrt`, `openvino`).
    pub fn execution_provider(&self) -> &'static str {
        self.provider
    }

    /// The discovered layout.
    pub fn layout(&self) -> &ModelLayout {
        &self.layout
    }

    /// Creates an empty KV state able to hold `capacity` positions.
    pub fn new_state(&mut self, capacity: usize) -> Result<KvState, InferenceError> {
        let storage = with_float_type!(self.layout.kv_type, T => match self.layout.kv_mode {
            KvMode::Concatenate => KvStorage::Concat(self.empty_kv::<T>()?),
            KvMode::SharedBuffer => self.shared_kv::<T>(capacity)?,
        });
        Ok(KvState {
            len: 0,
            capacity,
            storage,
        })
    }

    /// Zero-length past tensors for the first step of a concatenating model.
    fn empty_kv<T: KvElement>(&self) -> Result<Vec<DynValue>, InferenceError> {
        let l = &self.layout;
        (0..2 * l.num_layers())
            .map(|_| {
                let shape = [1usize, l.num_kv_heads, 0, l.head_size];
                Ok(Tensor::<T>::from_array((shape, Vec::<T>::new()))?.into_dyn())
            })
            .collect()
    }

    /// One `[1, heads, capacity, head_size]` buffer per layer and key/value, each bound as both
    /// past input and present output.
    fn shared_kv<T: KvElement>(&mut self, capacity: usize) -> Result<KvStorage, InferenceError> {
        let l = &self.layout;
        let mut binding = Box::new(self.session.create_binding()?);
        let mut buffers = Vec::with_capacity(2 * l.num_layers());
        let shape = [1usize, l.num_kv_heads, capacity, l.head_size];
        for (past, present) in l.past.iter().zip(&l.present) {
            for (input, output) in [(&past.0, &present.0), (&past.1, &present.1)] {
                let mut buffer = Tensor::<T>::new(self.session.allocator(), shape)?.upcast();
                // Positions past the sequence length are masked, but zeroing keeps stale
                // values (possibly NaN) out of any kernel that reads the buffer.
                buffer.try_extract_tensor_mut::<T>()?.1.fill(T::default());
                binding.bind_input(input.as_str(), &buffer)?;
                binding.bind_output(output.as_str(), &mut buffer)?;
                buffers.push(buffer);
            }
        }
        Ok(KvStorage::Shared { buffers, binding })
    }

    /// Runs `tokens` through the model after the state's cached positions and writes the
    /// logits of the last position (as float32) into `logits_out`.
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

impl Runner {
    /// Elements of one cached block: keys and values of `block_tokens` positions, all layers.
    pub fn block_elements(&self, block_tokens: usize) -> usize {
        2 * self.layout.num_layers()
            * self.layout.num_kv_heads
            * block_tokens
            * self.layout.head_size
    }

    /// Copies the KV of positions `[start, start + count * block_tokens)` out of `state`, one
    /// block each, in the model's KV type, laid out `[layer][key|value][head][position][head_size]`.
    pub fn export_blocks(
        &self,
        state: &KvState,
        start: usize,
        count: usize,
        block_tokens: usize,
    ) -> Result<Vec<KvData>, InferenceError> {
        if start + count * block_tokens > state.len {
            return Err(InferenceError::Output(
                "export beyond the cached positions".into(),
            ));
        }
        let blocks = (start..start + count * block_tokens).step_by(block_tokens.max(1));
        with_float_type!(self.layout.kv_type, T => self.export_typed::<T>(state, blocks, block_tokens))
    }

    /// [`Runner::export_blocks`] for element type `T`; `firsts` are the blocks' first positions.
    fn export_typed<T: KvElement>(
        &self,
        state: &KvState,
        firsts: impl ExactSizeIterator<Item = usize>,
        block_tokens: usize,
    ) -> Result<Vec<KvData>, InferenceError> {
        let (heads, dim) = (self.layout.num_kv_heads, self.layout.head_size);
        // (elements, positions per head) of every key/value tensor.
        let tensors: Vec<(&[T], usize)> = match &state.storage {
            KvStorage::Concat(values) => values
                .iter()
                .map(|v| {
                    let (shape, data) = v.try_extract_tensor::<T>()?;
                    Ok((data, usize::try_from(shape[2]).unwrap_or(0)))
                })
                .collect::<Result<_, ort::Error>>()?,
            KvStorage::Shared { buffers, .. } => buffers
                .iter()
                .map(|b| Ok((b.try_extract_tensor::<T>()?.1, state.capacity)))
                .collect::<Result<_, ort::Error>>()?,
        };
        let span = block_tokens * dim;
        let mut blocks = Vec::with_capacity(firsts.len());
        for first in firsts {
            let mut out = Vec::with_capacity(self.block_elements(block_tokens));
            for &(data, positions) in &tensors {
                for head in 0..heads {
                    let at = (head * positions + first) * dim;
                    let src = data.get(at..at + span).ok_or_else(|| {
                        InferenceError::Output("KV tensor smaller than its length".into())
                    })?;
                    out.extend_from_slice(src);
                }
            }
            blocks.push(T::wrap(out));
        }
        Ok(blocks)
    }

    /// Fills a fresh `state` with cached blocks covering positions `[0, blocks * block_tokens)`.
    pub fn import_blocks(
        &self,
        state: &mut KvState,
        blocks: &[&KvData],
        block_tokens: usize,
    ) -> Result<(), InferenceError> {
        let len = blocks.len() * block_tokens;
        if state.len != 0 || len > state.capacity {
            return Err(InferenceError::Output(
                "cached prefix does not fit the KV state".into(),
            ));
        }
        if blocks
            .iter()
            .any(|b| b.len() != self.block_elements(block_tokens))
        {
            return Err(InferenceError::Output(
                "cached block has the wrong size".into(),
            ));
        }
        with_float_type!(self.layout.kv_type, T => {
            self.import_typed::<T>(state, &typed_blocks::<T>(blocks)?, block_tokens)?
        });
        state.len = len;
        Ok(())
    }

    fn import_typed<T: KvElement>(
        &self,
        state: &mut KvState,
        blocks: &[&[T]],
        block_tokens: usize,
    ) -> Result<(), InferenceError> {
        let l = &self.layout;
        let (heads, dim) = (l.num_kv_heads, l.head_size);
        let len = blocks.len() * block_tokens;
        let span = block_tokens * dim;
        // Offset of (tensor, head) inside one block.
        let src_at = |tensor: usize, head: usize| (tensor * heads + head) * span;
        match &mut state.storage {
            KvStorage::Shared { buffers, .. } => {
                let capacity = state.capacity;
                for (t, buffer) in buffers.iter_mut().enumerate() {
                    let data = buffer.try_extract_tensor_mut::<T>()?.1;
                    for (b, block) in blocks.iter().enumerate() {
                        for head in 0..heads {
                            let dst = (head * capacity + b * block_tokens) * dim;
                            data[dst..dst + span]
                                .copy_from_slice(&block[src_at(t, head)..src_at(t, head) + span]);
                        }
                    }
                }
            }
            KvStorage::Concat(values) => {
                for (t, value) in values.iter_mut().enumerate() {
                    let mut data = Vec::with_capacity(heads * len * dim);
                    for head in 0..heads {
                        for block in blocks {
                            data.extend_from_slice(&block[src_at(t, head)..src_at(t, head) + span]);
                        }
                    }
                    *value = Tensor::from_array(([1usize, heads, len, dim], data))?.into_dyn();
                }
            }
        }
        Ok(())
    }
}

/// A created session, the provider that runs it, and how many matmul chains were fused.
pub(crate) struct Opened {
    pub session: Session,
    pub provider: &'static str,
    pub fused_matmuls: usize,
}

/// Creates a session for `file` on the first of `options.providers` that attaches, falling
/// back down the list (loudly) unless `require_accelerator` forbids it. Returns the session and
/// the provider that runs it.
pub(crate) fn open_session(
    env: &ort::environment::Environment,
    file: &Path,
    options: &RunnerOptions,
    level: GraphOptimizationLevel,
    save_optimized: Option<&Path>,
) -> Result<Opened, ModelError> {
    let default = [ProviderSettings::default()];
    let listed: &[ProviderSettings] = if options.providers.is_empty() {
        &default
    } else {
        &options.providers
    };
    let mut failed: Vec<(&'static str, String)> = Vec::new();
    for (i, provider) in listed.iter().enumerate() {
        let profiles = options
            .tensorrt_profiles
            .as_ref()
            .filter(|_| matches!(provider, ProviderSettings::Tensorrt { .. }));
        let mut attempt = open_with_provider(
            env,
            file,
            options,
            level,
            save_optimized,
            provider,
            profiles,
        );
        if let (Err(reason), Some(_)) = (&attempt, profiles) {
            if TrtProfiles::is_partial_coverage_error(reason) {
                tracing::warn!(reason = %reason, "the graph is partitioned between TensorRT and other providers, and explicit profiles must then cover every TensorRT subgraph input; retrying without them (TensorRT then builds engines for the input shapes it meets)");
                attempt =
                    open_with_provider(env, file, options, level, save_optimized, provider, None);
            }
        }
        match attempt {
            Ok((session, fused_matmuls)) => {
                if !failed.is_empty() {
                    tracing::warn!(provider = provider.kind(), skipped = ?failed, "running on a fallback execution provider");
                }
                return Ok(Opened {
                    session,
                    provider: provider.kind(),
                    fused_matmuls,
                });
            }
            Err(reason) if !provider.is_accelerator() => {
                return Err(ModelError::Session {
                    file: file.to_path_buf(),
                    message: reason,
                });
            }
            Err(reason) => {
                let reason = match failure_hint(&reason) {
                    Some(hint) => format!("{} ({hint})", reason.trim_end()),
                    None => reason,
                };
                if i == 0 && options.require_accelerator {
                    return Err(ModelError::ProviderRequired {
                        provider: provider.kind(),
                        reason,
                    });
                }
                tracing::error!(provider = provider.kind(), reason = %reason, "execution provider did not attach; trying the next one");
                failed.push((provider.kind(), reason));
            }
        }
    }
    // Every listed accelerator failed and cpu was not listed: ORT's own CPU provider still works.
    tracing::error!(skipped = ?failed, "no listed execution provider attached; running on cpu");
    open_with_provider(env, file, options, level, save_optimized, &default[0], None)
        .map(|(session, fused_matmuls)| Opened {
            session,
            provider: "cpu",
            fused_matmuls,
        })
        .map_err(|message| ModelError::Session {
            file: file.to_path_buf(),
            message,
        })
}

/// Points at the fix for the accelerator load failures operators meet most: ONNX Runtime's own
/// message names the missing file, not what provides it.
fn failure_hint(reason: &str) -> Option<&'static str> {
    if reason.contains("libcuda.so.1") {
        Some("libcuda.so.1 is part of the NVIDIA driver: install the driver, or give the container the GPU (NVIDIA container toolkit, --gpus)")
    } else if reason.contains("cannot open shared object file") {
        Some("a library this provider needs is not on LD_LIBRARY_PATH; see README, \"Execution providers\", for what each provider needs")
    } else if reason.contains("no CUDA-capable device") {
        Some("no GPU is visible to this process: check CUDA_VISIBLE_DEVICES and the container's GPU access")
    } else {
        None
    }
}

/// Which wheel carries a provider's library.
fn ort_library_hint(provider: &ProviderSettings) -> &'static str {
    match provider {
        ProviderSettings::Cuda { .. } | ProviderSettings::Tensorrt { .. } => {
            "the onnxruntime-gpu wheel provides CUDA and TensorRT"
        }
        ProviderSettings::Openvino { .. } => "the onnxruntime-openvino wheel provides OpenVINO",
        ProviderSettings::Cpu { .. } => "every build has it",
    }
}

/// Creates a session for `file` on `provider`; `save_optimized` makes ORT write its optimized
/// graph there, `profiles` are TensorRT's. Returns the session and the number of fused matmul
/// chains. An accelerator's failure is returned as text so the caller can fall back.
fn open_with_provider(
    env: &ort::environment::Environment,
    file: &Path,
    options: &RunnerOptions,
    level: GraphOptimizationLevel,
    save_optimized: Option<&Path>,
    provider: &ProviderSettings,
    profiles: Option<&TrtProfiles>,
) -> Result<(Session, usize), String> {
    let err = |e: String| e;
    let threads = match options.intra_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut builder = Session::builder(env)
        .map_err(|e| err(e.to_string()))?
        .with_optimization_level(level)
        .map_err(|e| err(e.to_string()))?
        .with_intra_threads(threads)
        .map_err(|e| err(e.to_string()))?;
    match provider {
        ProviderSettings::Cpu {
            arena,
            spinning,
            inter_threads,
        } => {
            builder = builder
                .with_execution_providers([ort::ep::CPU::default()
                    .with_arena_allocator(*arena)
                    .build()
                    .error_on_failure()])
                .map_err(|e| err(e.to_string()))?
                .with_intra_op_spinning(*spinning)
                .map_err(|e| err(e.to_string()))?;
            if *inter_threads > 0 {
                builder = builder
                    .with_inter_threads(*inter_threads)
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        accelerator => {
            if !accelerator.is_compiled_in()? {
                return Err(format!(
                    "the ONNX Runtime library in use does not include it ({}); see README, \"Execution providers\", for the library to install",
                    ort_library_hint(accelerator)
                ));
            }
            if let Some(dispatch) = accelerator.dispatch(profiles) {
                builder = builder
                    .with_execution_providers([dispatch])
                    .map_err(|e| err(e.to_string()))?;
            }
        }
    }
    if let Some(path) = save_optimized {
        // Weights go to a data file beside the optimized graph; otherwise ORT keeps references
        // to the package's external data relative to the wrong directory.
        let data_name = format!(
            "{}.data",
            path.file_name()
                .map_or_else(|| "optimized".into(), |n| n.to_string_lossy().into_owned())
        );
        builder = builder
            .with_optimized_model_path(path)
            .map_err(|e| err(e.to_string()))?
            .with_config_entry(
                "session.optimized_model_external_initializers_file_name",
                data_name,
            )
            .map_err(|e| err(e.to_string()))?;
    }
    // Not when saving ORT's optimized graph: fused nodes name weights packed in this process.
    if matches!(provider, ProviderSettings::Cpu { .. })
        && options.fuse_int8_matmul
        && save_optimized.is_none()
        && rowquant::available()
    {
        if let Some(fused) = rowquant::fuse_file(file)? {
            tracing::info!(
                chains = fused.chains,
                packed_mib = fused.packed_bytes >> 20,
                file = %file.display(),
                "per-row int8 matmuls fused into the AVX-512 VNNI operator"
            );
            // The rewritten graph comes from memory but names its external data files
            // relative to the package directory.
            let dir = file.parent().unwrap_or(Path::new("."));
            // `fused.weights` stays alive until commit returns: the kernels take their packed
            // weights from it while the session is created.
            return builder
                .with_operators(rowquant::operators()?)
                .map_err(|e| err(e.to_string()))?
                .with_config_entry(
                    "session.model_external_initializers_file_folder_path",
                    dir.to_string_lossy(),
                )
                .map_err(|e| err(e.to_string()))?
                .commit_from_memory(&fused.model)
                .map(|s| (s, fused.chains))
                .map_err(|e| err(e.to_string()));
        }
    }
    builder
        .commit_from_file(file)
        .map(|s| (s, 0))
        .map_err(|e| err(e.to_string()))
}

/// Loads the optimized graph saved by an earlier start, or optimizes the package's model and
/// saves the result, so restarts skip graph optimization. The file is written under a unique
/// temporary name and renamed into place, so a crash or a concurrent worker never sees half a
/// file; a cached graph that fails to load is discarded and rebuilt.
fn open_with_graph_cache(
    env: &ort::environment::Environment,
    package: &ModelPackage,
    options: &RunnerOptions,
    dir: &Path,
) -> Result<Opened, ModelError> {
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&package.version_key(), &mut h);
    let cached = dir.join(format!(
        "{}-{:016x}.optimized.onnx",
        sanitize(&package.id),
        std::hash::Hasher::finish(&h)
    ));
    if cached.is_file() {
        match open_session(env, &cached, options, GraphOptimizationLevel::Disable, None) {
            Ok(opened) => {
                tracing::info!(path = %cached.display(), "loaded cached optimized graph");
                return Ok(opened);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cached optimized graph unusable; rebuilding it");
                let _ = std::fs::remove_file(&cached);
            }
        }
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot create the optimized-graph cache directory");
        return open_session(
            env,
            &package.onnx_file,
            options,
            GraphOptimizationLevel::All,
            None,
        );
    }
    // Unique per writer: concurrent workers each write their own graph + data file, and the
    // first to hard-link its graph into place wins; the others delete theirs.
    let tmp = dir.join(format!(
        "{}.{}.{}.tmp",
        sanitize(&package.id),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let opened = open_session(
        env,
        &package.onnx_file,
        options,
        GraphOptimizationLevel::All,
        Some(&tmp),
    )?;
    let data = tmp.with_file_name(format!(
        "{}.data",
        tmp.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    if std::fs::hard_link(&tmp, &cached).is_err() {
        let _ = std::fs::remove_file(&data);
    }
    let _ = std::fs::remove_file(&tmp);
    Ok(opened)
}

/// Whether `model.onnx` uses ONNX Runtime's per-tensor dynamic activation quantization.
fn quantizes_activations_per_tensor(file: &Path) -> Result<bool, ModelError> {
    let graph = GraphOps::read(file).map_err(|e| ModelError::Session {
        file: file.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(graph.uses("DynamicQuantizeLinear") || graph.uses("DynamicQuantizeMatMul"))
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn index_tensor(
    ty: IndexType,
    values: impl Iterator<Item = i64>,
    len: usize,
) -> Result<DynValue, InferenceError> {
    index_tensor_2d(ty, values, 1, len)
}

/// A `[rows, cols]` index tensor (ids, mask or positions) in the graph's integer width.
pub(super) fn index_tensor_2d(
    ty: IndexType,
    values: impl Iterator<Item = i64>,
    rows: usize,
    cols: usize,
) -> Result<DynValue, InferenceError> {
    Ok(match ty {
        IndexType::I64 => {
            Tensor::from_array(([rows, cols], values.collect::<Vec<i64>>()))?.into_dyn()
        }
        IndexType::I32 => {
            Tensor::from_array(([rows, cols], values.map(|v| v as i32).collect::<Vec<i32>>()))?
                .into_dyn()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_tensor_activation_quantization_is_told_apart_from_per_row() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/models");
        let per_tensor = |dir: &str| {
            quantizes_activations_per_tensor(&models.join(dir).join("model.onnx"))
                .expect("readable graph")
        };
        assert!(
            !per_tensor("edge-tiny-genai"),
            "MatMulNBits quantizes per block of a row"
        );
        assert!(
            !per_tensor("edge-tiny-genai-dq"),
            "the rewrite quantizes per row"
        );
        assert!(
            per_tensor("edge-tiny-optimum"),
            "quantize_dynamic's DynamicQuantizeLinear"
        );
    }

    #[test]
    fn load_failures_get_a_hint_at_what_provides_the_missing_piece() {
        let cublas = "Failed to load library libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: No such file or directory";
        assert!(failure_hint(cublas).is_some_and(|h| h.contains("LD_LIBRARY_PATH")));
        let driver = "Failed to load library libonnxruntime_providers_cuda.so with error: libcuda.so.1: cannot open shared object file: No such file or directory";
        assert!(failure_hint(driver).is_some_and(|h| h.contains("NVIDIA driver")));
        let device = "CUDA failure 100: no CUDA-capable device is detected ; GPU=0";
        assert!(failure_hint(device).is_some_and(|h| h.contains("CUDA_VISIBLE_DEVICES")));
        assert_eq!(failure_hint("invalid device_type"), None);
    }
}
