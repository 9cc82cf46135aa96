//! The encoder service: a bounded queue in front of dedicated worker threads (each owning its own
//! ONNX Runtime session, apart from the decoder's), a moka cache of embeddings of repeated
//! inputs, and batching — a worker takes one request and then whatever else is queued, up to
//! `run_batch` inputs, and runs them together, shortest to longest so padding stays small.
//!
//! Tokenization, cache lookups and inference all happen on the worker threads; async callers
//! only await a oneshot reply. A run also ends where padding would exceed a quarter of its real
//! tokens: padded positions cost as much as real ones, and on a small CPU one long sequence in a
//! run of short ones made batch 32 slower than batch 1.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;
use tokio::sync::oneshot;

use super::error::EmbedError;
use super::metrics_names as m;
use super::package::EmbeddingPackage;
use super::session::EncoderSession;
use crate::engine::package::file_err;
use crate::engine::ModelError;

/// Bytes a cache entry costs beyond its vector (key, `Arc`s, moka bookkeeping), so many tiny
/// entries cannot exceed the budget.
const CACHE_ENTRY_OVERHEAD: u32 = 128;
/// Characters kept of a text that will be truncated anyway: enough for `max_seq_length` tokens
/// of any realistic text (WordPiece tokens average ~4 characters), so a megabyte-long prompt
/// is not tokenized in full just to keep its first 256 tokens.
const TRUNCATE_CHARS_PER_TOKEN: usize = 32;

/// Settings for starting the encoder.
#[derive(Debug, Clone)]
pub struct EncoderOptions {
    pub workers: usize,
    /// Requests waiting for a worker before [`EmbedError::QueueFull`].
    pub max_queue: usize,
    /// Most sequences in one ONNX Runtime run.
    pub run_batch: usize,
    /// Longest input accepted without truncation (special tokens included); at most the model's
    /// `max_seq_length`.
    pub max_input_tokens: usize,
    /// Byte budget of the embedding cache; 0 disables it.
    pub cache_max_bytes: u64,
    /// ORT intra-op threads per session; 0 = one per logical CPU.
    pub intra_threads: usize,
}

impl EncoderOptions {
    /// Encoder options from validated settings.
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        let e = &settings.embeddings;
        Self {
            workers: e.workers,
            max_queue: e.max_queue,
            run_batch: e.run_batch,
            max_input_tokens: e.max_input_tokens,
            cache_max_bytes: e.cache_max_bytes,
            intra_threads: settings.runtime.intra_threads,
        }
    }
}

/// One input to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedInput {
    Text(String),
    /// Token ids of the model's vocabulary, without special tokens (they are added, as the
    /// tokenizer's post-processor would).
    Tokens(Vec<u64>),
}

/// One embedding and the number of tokens the model saw for it (special tokens included).
#[derive(Debug, Clone)]
pub struct Embedding {
    pub vector: Arc<[f32]>,
    pub tokens: usize,
}

struct Cached {
    vector: Arc<[f32]>,
    model_tokens: usize,
    /// Tokens before truncation; `usize::MAX` when the text was cut before tokenizing.
    source_tokens: usize,
}

struct Job {
    inputs: Vec<EmbedInput>,
    truncate: bool,
    reply: oneshot::Sender<Result<Vec<Embedding>, EmbedError>>,
    enqueued_at: Instant,
}

/// What the workers share: tokenizer, limits and the cache.
struct Shared {
    tokenizer: Tokenizer,
    /// Special tokens the post-processor puts before and after a sequence (`[CLS]`, `[SEP]`).
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    vocab: usize,
    max_seq_length: usize,
    max_input_tokens: usize,
    run_batch: usize,
    cache: Option<moka::sync::Cache<[u8; 32], Arc<Cached>>>,
    queued: Arc<AtomicUsize>,
}

/// Shared handle to the encoder workers.
pub struct Encoder {
    package: EmbeddingPackage,
    queue: Sender<Job>,
    queued: Arc<AtomicUsize>,
    max_input_tokens: usize,
    shared: Arc<Shared>,
}

impl Encoder {
    /// Loads the tokenizer, starts the workers (each opens its own session) and runs one
    /// warm-up embedding, so the first request does not pay for lazy initialisation.
    pub fn start(
        env: &'static ort::environment::Environment,
        package: EmbeddingPackage,
        options: &EncoderOptions,
    ) -> Result<Arc<Self>, ModelError> {
        if options.max_input_tokens > package.max_seq_length {
            return Err(ModelError::Package {
                dir: package.dir.clone(),
                message: format!(
                    "embeddings.max_input_tokens {} exceeds the model's max_seq_length {}",
                    options.max_input_tokens, package.max_seq_length
                ),
            });
        }
        let shared = Arc::new(Shared::load(&package, options)?);
        let (queue, jobs) = bounded::<Job>(options.max_queue);
        let (loaded_tx, loaded_rx) = std::sync::mpsc::channel::<Result<(), ModelError>>();
        for index in 0..options.workers {
            let jobs = jobs.clone();
            let shared = Arc::clone(&shared);
            let worker_package = package.clone();
            let loaded_tx = loaded_tx.clone();
            let threads = options.intra_threads;
            thread::Builder::new()
                .name(format!("embedding-worker-{index}"))
                .spawn(move || {
                    let session = match EncoderSession::load(env, &worker_package, threads) {
                        Ok(s) => {
                            let _ = loaded_tx.send(Ok(()));
                            s
                        }
                        Err(e) => {
                            let _ = loaded_tx.send(Err(e));
                            return;
                        }
                    };
                    drop(loaded_tx);
                    run_worker(session, &shared, &jobs);
                })
                .map_err(|e| ModelError::Package {
                    dir: package.dir.clone(),
                    message: format!("cannot spawn embedding worker: {e}"),
                })?;
        }
        drop(loaded_tx);
        for _ in 0..options.workers {
            match loaded_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(ModelError::Package {
                        dir: package.dir.clone(),
                        message: "an embedding worker exited while loading".into(),
                    })
                }
            }
        }
        let encoder = Arc::new(Self {
            package,
            queue,
            queued: Arc::clone(&shared.queued),
            shared: Arc::clone(&shared),
            max_input_tokens: options.max_input_tokens,
        });
        encoder
            .embed_blocking(vec![EmbedInput::Text("warm-up".into())], true)
            .map_err(|e| ModelError::Package {
                dir: encoder.package.dir.clone(),
                message: format!("warm-up embedding failed: {e}"),
            })?;
        Ok(encoder)
    }

    /// The served package.
    pub fn package(&self) -> &EmbeddingPackage {
        &self.package
    }

    /// Longest input accepted without truncation, in tokens.
    pub fn max_input_tokens(&self) -> usize {
        self.max_input_tokens
    }

    /// Requests waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Embeds `inputs` (in order). With `truncate`, inputs longer than the model's
    /// `max_seq_length` keep their first tokens (what the routing scorers want); without it,
    /// inputs over `max_input_tokens` are an error (what the API promises its clients).
    pub async fn embed(
        &self,
        inputs: Vec<EmbedInput>,
        truncate: bool,
    ) -> Result<Vec<Embedding>, EmbedError> {
        if let Some(hits) = self.cached(&inputs, truncate) {
            return Ok(hits);
        }
        let rx = self.submit(inputs, truncate)?;
        rx.await.map_err(|_| EmbedError::Stopped)?
    }

    /// Answers from the cache alone when every input is cached, without the round trip to a
    /// worker (which may be busy embedding a long input for someone else) — this is what keeps
    /// the routing scorers cheap for repeated prompts. Only for small inputs: the key is a
    /// SHA-256 computed on the caller's thread.
    fn cached(&self, inputs: &[EmbedInput], truncate: bool) -> Option<Vec<Embedding>> {
        const FAST_PATH_MAX_BYTES: usize = 16 * 1024;
        let cache = self.shared.cache.as_ref()?;
        let bytes: usize = inputs
            .iter()
            .map(|i| match i {
                EmbedInput::Text(t) => t.len(),
                EmbedInput::Tokens(ids) => ids.len() * 4,
            })
            .sum();
        if inputs.is_empty() || bytes > FAST_PATH_MAX_BYTES {
            return None;
        }
        let mut out = Vec::with_capacity(inputs.len());
        for input in inputs {
            let hit = cache.get(&cache_key(input))?;
            // A cached truncated vector must not answer a request that wants the error.
            if !truncate && hit.source_tokens > self.shared.max_input_tokens {
                return None;
            }
            out.push(Embedding {
                vector: Arc::clone(&hit.vector),
                tokens: hit.model_tokens,
            });
        }
        for _ in 0..out.len() {
            m::record_cache_lookup(true);
            m::record_cache_hit();
        }
        Some(out)
    }

    /// [`Encoder::embed`] for threads outside an async runtime (startup, benches, tests).
    pub fn embed_blocking(
        &self,
        inputs: Vec<EmbedInput>,
        truncate: bool,
    ) -> Result<Vec<Embedding>, EmbedError> {
        let rx = self.submit(inputs, truncate)?;
        rx.blocking_recv().map_err(|_| EmbedError::Stopped)?
    }

    fn submit(
        &self,
        inputs: Vec<EmbedInput>,
        truncate: bool,
    ) -> Result<oneshot::Receiver<Result<Vec<Embedding>, EmbedError>>, EmbedError> {
        let (reply, rx) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::AcqRel);
        let job = Job {
            inputs,
            truncate,
            reply,
            enqueued_at: Instant::now(),
        };
        match self.queue.try_send(job) {
            Ok(()) => {
                m::set_queue_depth(self.queued.load(Ordering::Acquire));
                Ok(rx)
            }
            Err(e) => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                Err(match e {
                    TrySendError::Full(_) => EmbedError::QueueFull,
                    TrySendError::Disconnected(_) => EmbedError::Stopped,
                })
            }
        }
    }
}

impl Shared {
    fn load(package: &EmbeddingPackage, options: &EncoderOptions) -> Result<Self, ModelError> {
        let file = &package.tokenizer_file;
        let mut tokenizer = Tokenizer::from_file(file)
            .map_err(|e| file_err(file, format!("cannot load tokenizer: {e}")))?;
        // The shipped tokenizer.json pads to a fixed 128 and truncates at 128; sentence-
        // transformers overrides both (max_seq_length 256, dynamic padding), and so do we:
        // padding is done per batch and truncation by the limits below.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| file_err(file, format!("cannot disable truncation: {e}")))?;
        let specials = tokenizer
            .encode_fast("", true)
            .map_err(|e| file_err(file, format!("cannot encode: {e}")))?
            .get_ids()
            .to_vec();
        // BERT-style: one token before ([CLS]) and the rest after ([SEP]).
        let (prefix, suffix) = match specials.split_first() {
            Some((first, rest)) => (vec![*first], rest.to_vec()),
            None => (Vec::new(), Vec::new()),
        };
        let cache = (options.cache_max_bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(options.cache_max_bytes)
                .weigher(|_k: &[u8; 32], v: &Arc<Cached>| {
                    let bytes = v.vector.len() * std::mem::size_of::<f32>();
                    u32::try_from(bytes)
                        .unwrap_or(u32::MAX)
                        .saturating_add(CACHE_ENTRY_OVERHEAD)
                })
                .build()
        });
        Ok(Self {
            vocab: tokenizer.get_vocab_size(true),
            tokenizer,
            prefix,
            suffix,
            max_seq_length: package.max_seq_length,
            max_input_tokens: options.max_input_tokens,
            run_batch: options.run_batch.max(1),
            cache,
            queued: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Token ids (special tokens included) and the untruncated count for input `index`.
    fn tokenize(
        &self,
        index: usize,
        input: &EmbedInput,
        truncate: bool,
    ) -> Result<(Vec<u32>, usize), EmbedError> {
        let (mut ids, mut source) = match input {
            EmbedInput::Text(text) => {
                if text.is_empty() {
                    return Err(EmbedError::Empty { index });
                }
                let limit = self.max_seq_length * TRUNCATE_CHARS_PER_TOKEN;
                let (text, cut) = match text.char_indices().nth(limit) {
                    Some((at, _)) if truncate => (&text[..at], true),
                    _ => (text.as_str(), false),
                };
                let ids = self
                    .tokenizer
                    .encode_fast(text, true)
                    .map_err(|e| EmbedError::Inference(format!("tokenizer: {e}")))?
                    .get_ids()
                    .to_vec();
                let source = if cut { usize::MAX } else { ids.len() };
                (ids, source)
            }
            EmbedInput::Tokens(tokens) => {
                if tokens.is_empty() {
                    return Err(EmbedError::Empty { index });
                }
                let mut ids = Vec::with_capacity(tokens.len() + 2);
                ids.extend_from_slice(&self.prefix);
                for &t in tokens {
                    match u32::try_from(t) {
                        Ok(id) if (id as usize) < self.vocab => ids.push(id),
                        _ => {
                            return Err(EmbedError::InvalidToken {
                                index,
                                id: t,
                                vocab: self.vocab,
                            })
                        }
                    }
                }
                ids.extend_from_slice(&self.suffix);
                let n = ids.len();
                (ids, n)
            }
        };
        if ids.len() > self.max_input_tokens && !truncate {
            return Err(EmbedError::TooLong {
                index,
                tokens: ids.len(),
                limit: self.max_input_tokens,
            });
        }
        if ids.len() > self.max_seq_length {
            // Same as the tokenizer's own truncation: keep the first tokens, then the closing
            // special tokens.
            let keep = self.max_seq_length.saturating_sub(self.suffix.len());
            ids.truncate(keep);
            ids.extend_from_slice(&self.suffix);
        }
        source = source.max(ids.len());
        Ok((ids, source))
    }
}

/// Cache key: SHA-256 over the input's kind and content, so the cache holds no prompt text.
fn cache_key(input: &EmbedInput) -> [u8; 32] {
    let mut h = Sha256::new();
    match input {
        EmbedInput::Text(t) => {
            h.update(b"t");
            h.update(t.as_bytes());
        }
        EmbedInput::Tokens(ids) => {
            h.update(b"i");
            for id in ids {
                h.update(id.to_le_bytes());
            }
        }
    }
    h.finalize().into()
}

/// One input still to run: which job and slot it answers.
struct Pending {
    job: usize,
    slot: usize,
    key: [u8; 32],
    ids: Vec<u32>,
    source_tokens: usize,
}

fn run_worker(mut session: EncoderSession, shared: &Shared, jobs: &Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        let mut inputs = batch[0].inputs.len();
        // Coalesce queued requests into the same runs, up to one run's worth of inputs.
        while inputs < shared.run_batch {
            let Ok(next) = jobs.try_recv() else { break };
            inputs += next.inputs.len();
            batch.push(next);
        }
        let depth = shared
            .queued
            .fetch_sub(batch.len(), Ordering::AcqRel)
            .saturating_sub(batch.len());
        m::set_queue_depth(depth);
        for job in &batch {
            m::record_queue_wait(job.enqueued_at.elapsed());
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            process(&mut session, shared, &batch)
        }));
        let results = match outcome {
            Ok(results) => results,
            Err(_) => {
                tracing::error!("embedding batch panicked");
                batch
                    .iter()
                    .map(|_| Err(EmbedError::Inference("embedding panicked".into())))
                    .collect()
            }
        };
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

/// Most padding a run may carry, as padded tokens over real tokens: padding is computed like
/// real tokens, so a short sentence batched with a long one costs as much as the long one.
const MAX_PADDING_RATIO: f64 = 1.25;

/// Cuts length-sorted `pending` into runs of at most `run_batch` sequences whose padded size
/// stays within [`MAX_PADDING_RATIO`] of their real size.
fn runs(pending: &[Pending], run_batch: usize) -> Vec<&[Pending]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut real = 0usize;
    for (i, p) in pending.iter().enumerate() {
        let len = p.ids.len();
        let count = i - start + 1;
        // Sorted ascending, so this sequence is the run's longest: the run pads to it.
        let padded = len * count;
        let too_wide = count > 1 && padded as f64 > MAX_PADDING_RATIO * (real + len) as f64;
        if count > run_batch || too_wide {
            out.push(&pending[start..i]);
            start = i;
            real = 0;
        }
        real += len;
    }
    if start < pending.len() {
        out.push(&pending[start..]);
    }
    out
}

/// Serves a group of jobs: cache hits first, then every miss in runs of similar length.
fn process(
    session: &mut EncoderSession,
    shared: &Shared,
    jobs: &[Job],
) -> Vec<Result<Vec<Embedding>, EmbedError>> {
    let mut slots: Vec<Vec<Option<Embedding>>> =
        jobs.iter().map(|j| vec![None; j.inputs.len()]).collect();
    let mut failed: Vec<Option<EmbedError>> = vec![None; jobs.len()];
    let mut pending = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        if job.reply.is_closed() {
            failed[j] = Some(EmbedError::Stopped);
            continue;
        }
        for (i, input) in job.inputs.iter().enumerate() {
            let key = cache_key(input);
            m::record_cache_lookup(shared.cache.is_some());
            if let Some(hit) = shared.cache.as_ref().and_then(|c| c.get(&key)) {
                // A cached truncated vector must not answer a request that wants the error.
                if job.truncate || hit.source_tokens <= shared.max_input_tokens {
                    m::record_cache_hit();
                    slots[j][i] = Some(Embedding {
                        vector: Arc::clone(&hit.vector),
                        tokens: hit.model_tokens,
                    });
                    continue;
                }
            }
            match shared.tokenize(i, input, job.truncate) {
                Ok((ids, source_tokens)) => pending.push(Pending {
                    job: j,
                    slot: i,
                    key,
                    ids,
                    source_tokens,
                }),
                Err(e) => {
                    failed[j] = Some(e);
                    break;
                }
            }
        }
    }
    pending.retain(|p| failed[p.job].is_none());
    pending.sort_by_key(|p| p.ids.len());
    for run in runs(&pending, shared.run_batch) {
        let seqs: Vec<&[u32]> = run.iter().map(|p| p.ids.as_slice()).collect();
        let started = Instant::now();
        let vectors = match session.encode(&seqs) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "embedding run failed");
                for p in run {
                    failed[p.job] = Some(EmbedError::Inference(e.to_string()));
                }
                continue;
            }
        };
        let tokens: usize = seqs.iter().map(|s| s.len()).sum();
        m::record_run(run.len(), tokens, started.elapsed());
        for (p, vector) in run.iter().zip(vectors) {
            let vector: Arc<[f32]> = vector.into();
            if let Some(cache) = &shared.cache {
                cache.insert(
                    p.key,
                    Arc::new(Cached {
                        vector: Arc::clone(&vector),
                        model_tokens: p.ids.len(),
                        source_tokens: p.source_tokens,
                    }),
                );
            }
            if let Some(slot) = slots.get_mut(p.job).and_then(|s| s.get_mut(p.slot)) {
                *slot = Some(Embedding {
                    vector,
                    tokens: p.ids.len(),
                });
            }
        }
    }
    slots
        .into_iter()
        .zip(failed)
        .map(|(slots, failed)| match failed {
            Some(e) => Err(e),
            None => slots
                .into_iter()
                .map(|s| s.ok_or_else(|| EmbedError::Inference("an input was not embedded".into())))
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(lens: &[usize]) -> Vec<Pending> {
        lens.iter()
            .enumerate()
            .map(|(i, &n)| Pending {
                job: 0,
                slot: i,
                key: [0; 32],
                ids: vec![1; n],
                source_tokens: n,
            })
            .collect()
    }

    fn sizes(runs: &[&[Pending]]) -> Vec<usize> {
        runs.iter().map(|r| r.len()).collect()
    }

    #[test]
    fn runs_respect_the_batch_size_and_keep_padding_small() {
        let same = pending(&[10; 70]);
        assert_eq!(sizes(&runs(&same, 32)), vec![32, 32, 6]);
        // A 40-token sequence does not join a run of 5-token ones.
        let mixed = pending(&[5, 5, 5, 6, 40, 41]);
        assert_eq!(sizes(&runs(&mixed, 32)), vec![4, 2]);
        assert!(runs(&pending(&[]), 32).is_empty());
        let total: usize = runs(&pending(&[3, 9, 27, 81, 243]), 2)
            .iter()
            .map(|r| r.len())
            .sum();
        assert_eq!(total, 5);
    }
}
