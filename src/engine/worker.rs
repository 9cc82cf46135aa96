//! The engine: a bounded queue in front of dedicated worker threads, each owning its own ONNX
//! Runtime session (`Session::run` needs `&mut`, and ORT must never run on the async executor).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use super::budget::{FixedReservation, KvBudget, KvReservation, MemoryPool};
use super::chat_template::{ChatTemplate, TemplateMessage};
use super::error::{InferenceError, ModelError};
pub use super::generate::{FinishReason, GenerationEvent, GenerationParams};
use super::package::ModelPackage;
use super::runner::{Runner, RunnerOptions};
use super::scheduler::{Scheduler, SchedulerLimits};
use super::tokenizer::TextTokenizer;
use crate::cache::{PrefixCache, PrefixCacheSettings};
use crate::telemetry::metrics;

/// Capacity of each request's event channel: a slow reader blocks its own worker briefly
/// rather than buffering a whole generation in memory.
const EVENT_CHANNEL_CAPACITY: usize = 64;

/// Settings for starting the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub workers: usize,
    pub max_queue: usize,
    /// Sequences each worker runs at once.
    pub max_sequences: usize,
    /// Prompt tokens prefilled per step while other sequences decode.
    pub prefill_chunk: usize,
    pub runner: RunnerOptions,
    /// Caps the package's context length (never raises it).
    pub context_length: Option<usize>,
    /// KV prefix cache; `None` disables it.
    pub prefix_cache: Option<PrefixCacheSettings>,
    /// System prompts prefilled and pinned in the prefix cache before the engine is ready.
    pub pinned_system_prompts: Vec<String>,
    /// Memory the process may use; `None` detects it (cgroup limit, else RAM).
    pub memory_budget_bytes: Option<usize>,
    /// Memory kept for ONNX Runtime arenas and everything else outside weights and KV.
    pub runtime_overhead_bytes: usize,
    /// Memory shared with the other engines of the process; `None`: this engine gets a pool
    /// of its own from `memory_budget_bytes` (what one-off tools such as `eval` use).
    pub memory_pool: Option<Arc<MemoryPool>>,
}

impl EngineOptions {
    /// Engine options from validated settings.
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        let c = &settings.cache;
        Self {
            workers: settings.engine.workers,
            max_queue: settings.engine.max_queue,
            max_sequences: settings.engine.max_concurrent_sequences,
            prefill_chunk: settings.engine.prefill_chunk_tokens,
            runner: RunnerOptions {
                intra_threads: settings.runtime.intra_threads,
                optimized_graph_dir: c.optimized_graph_dir.clone(),
                providers: settings.model.execution_providers.clone(),
                require_accelerator: settings.model.require_accelerator,
                fuse_int8_matmul: settings.runtime.fused_int8_matmul,
                // Set per engine in `Engine::start`, from the effective limits.
                ..RunnerOptions::default()
            },
            context_length: settings.model.context_length,
            prefix_cache: c.enabled.then(|| PrefixCacheSettings {
                enabled: true,
                block_tokens: c.block_tokens,
                max_bytes: c.max_bytes,
                ttl: std::time::Duration::from_secs(c.ttl_secs),
                idle: std::time::Duration::from_secs(c.idle_secs),
            }),
            pinned_system_prompts: c.pinned_system_prompts.clone(),
            memory_budget_bytes: settings
                .engine
                .memory_budget_bytes
                .map(|b| usize::try_from(b).unwrap_or(usize::MAX)),
            runtime_overhead_bytes: usize::try_from(settings.engine.runtime_overhead_bytes)
                .unwrap_or(usize::MAX),
            memory_pool: None,
        }
    }

    /// A memory pool from `memory_budget_bytes` (else the cgroup limit, else RAM) less the
    /// runtime overhead.
    pub fn new_memory_pool(&self) -> Result<Arc<MemoryPool>, String> {
        let limit = self
            .memory_budget_bytes
            .or_else(super::budget::detected_memory_limit)
            .ok_or("cannot detect the memory limit; set engine.memory_budget_bytes")?;
        Ok(MemoryPool::new(limit, self.runtime_overhead_bytes))
    }
}

/// A queued generation.
pub struct GenerationRequest {
    pub prompt_ids: Vec<u32>,
    pub params: GenerationParams,
    pub events: tokio::sync::mpsc::Sender<GenerationEvent>,
    pub enqueued_at: Instant,
    /// KV reserved for this request by [`Engine::submit`]; released when it is dropped.
    pub reservation: Option<KvReservation>,
}

/// A generation run to completion by [`Engine::generate_blocking`].
#[derive(Debug, Clone)]
pub struct CompletedGeneration {
    pub text: String,
    pub completion_tokens: usize,
    pub finish_reason: FinishReason,
}

/// Why a request could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the generation queue is full")]
    QueueFull,
    #[error("the KV cache budget cannot hold this request now")]
    MemoryFull,
    #[error("the engine has stopped")]
    Stopped,
}

/// Shared handle to the loaded model and its workers.
pub struct Engine {
    package: ModelPackage,
    tokenizer: Arc<TextTokenizer>,
    template: Option<ChatTemplate>,
    context_length: usize,
    queue: Sender<GenerationRequest>,
    queued: Arc<AtomicUsize>,
    ready: AtomicBool,
    prefix_cache: Option<Arc<PrefixCache>>,
    budget: Arc<KvBudget>,
    /// This engine's weights and prefix cache in the memory pool, returned when it drops.
    _memory: FixedReservation,
    execution_provider: &'static str,
}

impl Engine {
    /// Loads the package, starts the workers (each opens its own session) and waits until all
    /// have loaded and run a warm-up generation.
    pub fn start(
        env: &'static ort::environment::Environment,
        package: ModelPackage,
        options: &EngineOptions,
    ) -> Result<Arc<Self>, ModelError> {
        let tokenizer = Arc::new(TextTokenizer::load(&package.tokenizer_file)?);
        let template = match &package.chat_template {
            Some(source) => Some(
                ChatTemplate::compile(
                    source,
                    package.bos_token.as_deref(),
                    package.eos_token.as_deref(),
                )
                .map_err(|e| {
                    super::package::file_err(
                        &package.dir.join("tokenizer_config.json"),
                        format!("chat_template: {e}"),
                    )
                })?,
            ),
            None => None,
        };
        let context_length = options
            .context_length
            .map_or(package.context_length, |c| c.min(package.context_length));
        let prefix_cache = options
            .prefix_cache
            .clone()
            .filter(|c| c.enabled)
            .map(|settings| Arc::new(PrefixCache::new(settings, &package.version_key())));
        let (queue, jobs) = bounded::<GenerationRequest>(options.max_queue);
        let queued = Arc::new(AtomicUsize::new(0));
        let (loaded_tx, loaded_rx) =
            std::sync::mpsc::channel::<Result<(usize, &'static str), ModelError>>();
        for index in 0..options.workers {
            let worker = Worker {
                jobs: jobs.clone(),
                tokenizer: Arc::clone(&tokenizer),
                eos_ids: package.eos_token_ids.clone(),
                queued: Arc::clone(&queued),
                prefix_cache: prefix_cache.clone(),
                limits: SchedulerLimits {
                    max_sequences: options.max_sequences.max(1),
                    prefill_chunk: options.prefill_chunk.max(1),
                    capacity: context_length,
                },
            };
            let worker_package = package.clone();
            let runner_options = RunnerOptions {
                max_batch: options.max_sequences.max(1),
                context_length,
                ..options.runner.clone()
            };
            let loaded_tx = loaded_tx.clone();
            thread::Builder::new()
                .name(format!("engine-worker-{index}"))
                .spawn(move || worker.run(env, &worker_package, &runner_options, loaded_tx))
                .map_err(|e| ModelError::Package {
                    dir: package.dir.clone(),
                    message: format!("cannot spawn worker thread: {e}"),
                })?;
        }
        drop(loaded_tx);
        let mut kv_bytes_per_token = 0;
        let mut execution_provider = "cpu";
        for _ in 0..options.workers {
            match loaded_rx.recv() {
                Ok(Ok((bytes, provider))) => {
                    kv_bytes_per_token = bytes;
                    execution_provider = provider;
                }
                Ok(Err(e)) => {
                    // A file swapped mid-load often shows as a parse error: name the cause.
                    package.files.check_unchanged(&package.dir)?;
                    return Err(e);
                }
                Err(_) => {
                    return Err(ModelError::Package {
                        dir: package.dir.clone(),
                        message: "a worker exited while loading".into(),
                    })
                }
            }
        }
        // The sessions read model.onnx (and its external data) after the package was read: a
        // copy landing in between would give a session of one version with the other's config.
        package.files.check_unchanged(&package.dir)?;
        let (budget, memory) = kv_budget(&package, options, kv_bytes_per_token)?;
        let engine = Arc::new(Self {
            package,
            tokenizer,
            template,
            context_length,
            queue,
            queued,
            ready: AtomicBool::new(false),
            prefix_cache,
            budget,
            _memory: memory,
            execution_provider,
        });
        metrics::set_effective_context(engine.effective_context());
        engine.warm_up()?;
        for prompt in &options.pinned_system_prompts {
            engine.pin_system_prompt(prompt)?;
        }
        engine.ready.store(true, Ordering::Release);
        Ok(engine)
    }

    /// Runs one short generation so the first real request does not pay for lazy init.
    fn warm_up(&self) -> Result<(), ModelError> {
        let prompt_ids = self
            .tokenizer
            .encode("Hello", true)
            .map_err(|e| self.startup_error("warm-up", e.to_string()))?;
        self.run_to_completion("warm-up", prompt_ids, 2, false)
    }

    /// Prefills a system prompt (as the chat template renders it) and pins its KV blocks.
    fn pin_system_prompt(&self, prompt: &str) -> Result<(), ModelError> {
        if self.prefix_cache.is_none() {
            return Ok(());
        }
        let template = self.template.as_ref().ok_or_else(|| {
            self.startup_error("pinned prompt", "the model has no chat template".into())
        })?;
        let message = TemplateMessage {
            role: "system".into(),
            content: prompt.to_string(),
        };
        let text = template
            .render(&[message], false)
            .map_err(|e| self.startup_error("pinned prompt", e.to_string()))?;
        let ids = self
            .tokenizer
            .encode(&text, false)
            .map_err(|e| self.startup_error("pinned prompt", e.to_string()))?;
        self.run_to_completion("pinned prompt", ids, 1, true)
    }

    fn startup_error(&self, what: &str, message: String) -> ModelError {
        ModelError::Package {
            dir: self.package.dir.clone(),
            message: format!("{what} failed: {message}"),
        }
    }

    /// Submits an internal generation and blocks until it finishes.
    fn run_to_completion(
        &self,
        what: &str,
        prompt_ids: Vec<u32>,
        max_tokens: usize,
        pin: bool,
    ) -> Result<(), ModelError> {
        let params = GenerationParams {
            pin_prefix: pin,
            ..GenerationParams::greedy(max_tokens, true)
        };
        self.generate_blocking(prompt_ids, params)
            .map(|_| ())
            .map_err(|e| self.startup_error(what, e.to_string()))
    }

    /// Runs one generation to completion and returns its text. Blocking: for batch jobs
    /// (warm-up, `edge-gateway eval`) on plain threads, never the async executor.
    pub fn generate_blocking(
        &self,
        prompt_ids: Vec<u32>,
        params: GenerationParams,
    ) -> Result<CompletedGeneration, InferenceError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(EVENT_CHANNEL_CAPACITY);
        self.submit(GenerationRequest {
            prompt_ids,
            params,
            events: tx,
            enqueued_at: Instant::now(),
            reservation: None,
        })
        .map_err(|e| InferenceError::Runtime(e.to_string()))?;
        let mut text = String::new();
        while let Some(event) = rx.blocking_recv() {
            match event {
                GenerationEvent::Delta { text: t, .. } => text.push_str(&t),
                GenerationEvent::Done {
                    finish_reason,
                    completion_tokens,
                    ..
                } => {
                    return Ok(CompletedGeneration {
                        text,
                        completion_tokens,
                        finish_reason,
                    })
                }
                GenerationEvent::Error(e) => return Err(e),
            }
        }
        Err(InferenceError::Output(
            "the worker dropped the request".into(),
        ))
    }

    /// Reserves the request's KV (prompt plus `max_tokens`) and queues it; fails fast when the
    /// budget or the queue is full.
    pub fn submit(&self, mut request: GenerationRequest) -> Result<(), SubmitError> {
        let tokens = request.prompt_ids.len() + request.params.max_tokens;
        request.reservation = Some(self.budget.reserve(tokens).ok_or(SubmitError::MemoryFull)?);
        metrics::set_effective_context(self.effective_context());
        self.queued.fetch_add(1, Ordering::AcqRel);
        match self.queue.try_send(request) {
            Ok(()) => {
                metrics::set_queue_depth(self.queued.load(Ordering::Acquire));
                Ok(())
            }
            Err(e) => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                match e {
                    TrySendError::Full(_) => Err(SubmitError::QueueFull),
                    TrySendError::Disconnected(_) => Err(SubmitError::Stopped),
                }
            }
        }
    }

    /// Applies the chat template and tokenizes (blocking: call from a blocking pool).
    pub fn encode_chat(&self, messages: &[TemplateMessage]) -> Result<Vec<u32>, InferenceError> {
        let template = self.template.as_ref().ok_or_else(|| {
            InferenceError::Template(format!(
                "model '{}' has no chat template; use /v1/completions",
                self.package.id
            ))
        })?;
        let text = template.render(messages, true)?;
        // The template already places BOS; the post-processor must not add a second one.
        self.tokenizer.encode(&text, false)
    }

    /// Tokenizes a raw completion prompt, adding BOS as the tokenizer's post-processor does.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, InferenceError> {
        self.tokenizer.encode(prompt, true)
    }

    /// The served package.
    pub fn package(&self) -> &ModelPackage {
        &self.package
    }

    /// Longest prompt plus completion this engine serves: the model's context, capped by what
    /// the whole KV budget holds.
    pub fn context_length(&self) -> usize {
        self.context_length.min(self.budget.capacity_tokens())
    }

    /// What a request arriving now could get: shrinks while KV is reserved by running and
    /// queued requests (the dynamic context limit).
    pub fn effective_context(&self) -> usize {
        self.context_length().min(self.budget.free_tokens())
    }

    /// Reserved share of the KV budget, 0–1.
    pub fn memory_pressure(&self) -> f64 {
        self.budget.pressure()
    }

    /// The KV budget in bytes.
    pub fn kv_budget_bytes(&self) -> usize {
        self.budget.budget_bytes()
    }

    /// The execution provider that actually runs the model.
    pub fn execution_provider(&self) -> &'static str {
        self.execution_provider
    }

    /// The process memory budget (configured or detected).
    pub fn memory_limit(&self) -> usize {
        self.budget.pool().limit()
    }

    /// Vocabulary size, for validating token-id prompts.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.vocab_size().max(self.package.vocab_size)
    }

    /// True once loaded and warmed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The prefix cache, when enabled.
    pub fn prefix_cache(&self) -> Option<&PrefixCache> {
        self.prefix_cache.as_deref()
    }

    /// Requests waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

struct Worker {
    jobs: Receiver<GenerationRequest>,
    tokenizer: Arc<TextTokenizer>,
    eos_ids: Vec<u32>,
    queued: Arc<AtomicUsize>,
    prefix_cache: Option<Arc<PrefixCache>>,
    limits: SchedulerLimits,
}

impl Worker {
    fn run(
        self,
        env: &ort::environment::Environment,
        package: &ModelPackage,
        options: &RunnerOptions,
        loaded: std::sync::mpsc::Sender<Result<(usize, &'static str), ModelError>>,
    ) {
        let runner = match Runner::load(env, package, options) {
            Ok(runner) => {
                let _ = loaded.send(Ok((
                    runner.layout().kv_bytes_per_token(),
                    runner.execution_provider(),
                )));
                runner
            }
            Err(e) => {
                let _ = loaded.send(Err(e));
                return;
            }
        };
        drop(loaded);
        Scheduler::new(
            runner,
            &self.tokenizer,
            self.prefix_cache.as_deref(),
            &self.eos_ids,
            self.limits,
        )
        .run(&self.jobs, &self.queued);
    }
}

/// Reserves this engine's weights (each worker session maps them) and prefix cache in the
/// memory pool — shared with the other loaded engines when `options.memory_pool` is set — and
/// returns its KV budget over the pool with the reservation the engine keeps while it lives.
fn kv_budget(
    package: &ModelPackage,
    options: &EngineOptions,
    kv_bytes_per_token: usize,
) -> Result<(Arc<KvBudget>, FixedReservation), ModelError> {
    let pool = match &options.memory_pool {
        Some(pool) => Arc::clone(pool),
        None => options.new_memory_pool().map_err(ModelError::Memory)?,
    };
    let weights = super::budget::weights_bytes(&package.onnx_file) * options.workers;
    let prefix_cache = options
        .prefix_cache
        .as_ref()
        .map_or(0, |c| usize::try_from(c.max_bytes).unwrap_or(usize::MAX));
    // At least 64 positions must stay free for sequences, or the edge could serve nothing.
    let minimum = kv_bytes_per_token.saturating_mul(64);
    let fixed = pool
        .reserve_fixed(weights.saturating_add(prefix_cache), minimum)
        .map_err(|available| ModelError::Package {
            dir: package.dir.clone(),
            message: format!(
                "engine.memory_budget_bytes: {} bytes, of which {available} are free (other loaded models and versions, the runtime overhead and running sequences hold the rest), cannot hold this model's weights ({weights}) and prefix cache ({prefix_cache}) plus {minimum} bytes of KV cache",
                pool.limit()
            ),
        })?;
    tracing::info!(
        memory_budget = pool.limit(),
        weights,
        prefix_cache,
        kv_budget = pool.kv_capacity(),
        kv_bytes_per_token,
        "KV budget"
    );
    Ok((KvBudget::new(pool, kv_bytes_per_token), fixed))
}
