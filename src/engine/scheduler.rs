//! One worker's scheduler: continuous batching over the sequences it runs.
//!
//! Each iteration admits queued requests while fewer than `max_sequences` run, prefills at most
//! one chunk of one new prompt, and then runs one decode step for every running sequence.
//! Sequences join and leave between steps. In shared-buffer models (GroupQueryAttention, whose
//! int8 matmuls quantize activations per row) the decode step is a single ONNX Runtime call over
//! all running sequences; concatenating models are stepped one sequence per call, because their
//! per-tensor dynamic activation quantization would make one request's output depend on which
//! other requests share its batch.
//!
//! A long prompt is prefilled in chunks of `prefill_chunk_tokens` while others are decoding, so
//! a new arrival delays running streams by one chunk per step rather than by its whole prompt;
//! with nobody else running it is prefilled in one call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::error::InferenceError;
use super::generate::{store_blocks, Outbox, Progress, SeqKv, Sequence};
use super::kv::KvData;
use super::runner::Runner;
use super::slots::SlotPool;
use super::tokenizer::TextTokenizer;
use super::worker::{GenerationEvent, GenerationRequest};
use crate::cache::PrefixCache;
use crate::telemetry::metrics;

/// How often a worker with nothing running but undelivered events checks its clients.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// Scheduling limits of one worker.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerLimits {
    pub max_sequences: usize,
    pub prefill_chunk: usize,
    /// KV positions per sequence (the effective context length).
    pub capacity: usize,
}

/// Runs until the job queue is closed and every running sequence has finished.
pub(super) struct Scheduler<'t> {
    runner: Runner,
    /// Present when the model decodes batched.
    pool: Option<SlotPool>,
    tokenizer: &'t TextTokenizer,
    cache: Option<&'t PrefixCache>,
    eos_ids: &'t [u32],
    limits: SchedulerLimits,
    logits: Vec<f32>,
}

impl<'t> Scheduler<'t> {
    pub fn new(
        runner: Runner,
        tokenizer: &'t TextTokenizer,
        cache: Option<&'t PrefixCache>,
        eos_ids: &'t [u32],
        limits: SchedulerLimits,
    ) -> Self {
        let pool = runner
            .supports_batching()
            .then(|| SlotPool::new(runner.layout(), limits.max_sequences, limits.capacity));
        Self {
            runner,
            pool,
            tokenizer,
            cache: cache.filter(|c| c.enabled()),
            eos_ids,
            limits,
            logits: Vec::new(),
        }
    }

    /// The worker loop.
    pub fn run(mut self, jobs: &Receiver<GenerationRequest>, queued: &Arc<AtomicUsize>) {
        let mut running: Vec<Sequence<'t>> = Vec::new();
        let mut draining: Vec<Outbox> = Vec::new();
        loop {
            draining.retain_mut(|o| o.flush() && !o.is_empty());
            // Admit while there is room; block only when there is nothing else to do.
            while running.len() < self.limits.max_sequences {
                let job = if !running.is_empty() {
                    match jobs.try_recv() {
                        Ok(job) => job,
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                } else if !draining.is_empty() {
                    match jobs.recv_timeout(DRAIN_POLL) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                } else {
                    match jobs.recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    }
                };
                let depth = queued.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
                metrics::set_queue_depth(depth);
                metrics::record_queue_wait(job.enqueued_at.elapsed());
                if job.events.is_closed() {
                    continue;
                }
                let slot = running.len();
                if let Some(sequence) = self.admit(job, slot) {
                    running.push(sequence);
                }
            }
            if running.is_empty() {
                continue;
            }
            // A panic inside a step must not take the worker (and its session) down; the
            // sequences of that step fail, later requests are served normally.
            let step =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step(&mut running)));
            if step.is_err() {
                for sequence in &mut running {
                    sequence.fail(InferenceError::Output("generation panicked".into()));
                }
                for slot in 0..running.len() {
                    self.reset_slot(slot);
                }
                draining.extend(running.drain(..).map(|s| s.outbox));
            }
            self.retire(&mut running, &mut draining);
            metrics::set_batch_kv_bytes(self.kv_bytes(&running));
        }
    }

    /// Prepares a sequence in `slot` (restoring its cached prefix, if any); a failure is
    /// reported to that request's client.
    fn admit(&mut self, request: GenerationRequest, slot: usize) -> Option<Sequence<'t>> {
        match self.prepare_kv(&request, slot) {
            Ok((kv, restored)) => Some(Sequence::new(request, kv, restored, self.tokenizer)),
            Err(e) => {
                tracing::error!(error = %e, "cannot start generation");
                metrics::record_error("inference");
                let _ = request.events.try_send(GenerationEvent::Error(e));
                None
            }
        }
    }

    fn prepare_kv(
        &mut self,
        request: &GenerationRequest,
        slot: usize,
    ) -> Result<(SeqKv, usize), InferenceError> {
        let use_cache = request.params.use_cache && !request.params.pin_prefix;
        let hit = match self.cache {
            Some(c) if use_cache => Some(c.lookup(&request.prompt_ids)),
            _ => None,
        };
        let restored = hit.as_ref().map_or(0, |h| h.tokens);
        let kv = match &mut self.pool {
            Some(pool) => {
                pool.reset(slot);
                if let (Some(hit), Some(c)) = (&hit, self.cache) {
                    if hit.tokens > 0 {
                        let blocks: Vec<&KvData> = hit.blocks.iter().map(|b| b.data()).collect();
                        pool.import_blocks(slot, &blocks, c.block_tokens())?;
                    }
                }
                SeqKv::Slot
            }
            None => {
                let capacity = request.prompt_ids.len() + request.params.max_tokens;
                let mut state = self.runner.new_state(capacity)?;
                if let (Some(hit), Some(c)) = (&hit, self.cache) {
                    if hit.tokens > 0 {
                        let blocks: Vec<&KvData> = hit.blocks.iter().map(|b| b.data()).collect();
                        self.runner
                            .import_blocks(&mut state, &blocks, c.block_tokens())?;
                    }
                }
                SeqKv::Own(state)
            }
        };
        Ok((kv, restored))
    }

    /// One iteration: a prefill chunk for the oldest unprefilled sequence, then a decode step
    /// for every sequence that has a token to feed.
    fn step(&mut self, running: &mut [Sequence<'t>]) {
        for sequence in running.iter_mut() {
            if !is_done(sequence) && sequence.is_cancelled() {
                sequence.cancel();
                mark_done(sequence);
            }
        }
        let decoding = running.iter().filter(|s| s.is_decoding()).count();
        // Oldest first: slots are reordered when sequences leave, arrival order is not.
        if let Some(i) = running
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_decoding() && !s.prompt_remaining().is_empty())
            .min_by_key(|(_, s)| s.request.enqueued_at)
            .map(|(i, _)| i)
        {
            let limit = if decoding > 0 {
                self.limits.prefill_chunk
            } else {
                usize::MAX
            };
            self.prefill(&mut running[i], i, limit);
        }
        if decoding == 0 {
            return;
        }
        if self.pool.is_some() {
            self.decode_batched(running);
        } else {
            for sequence in running.iter_mut().filter(|s| s.is_decoding()) {
                self.decode_one(sequence);
            }
        }
    }

    fn prefill(&mut self, sequence: &mut Sequence<'t>, slot: usize, limit: usize) {
        let remaining = sequence.prompt_remaining();
        let take = remaining.len().min(limit);
        let chunk = remaining[..take].to_vec();
        let result = match (&mut sequence.kv, &mut self.pool) {
            (SeqKv::Slot, Some(pool)) => {
                self.runner
                    .prefill_slot(pool, slot, &chunk, &mut self.logits)
            }
            (SeqKv::Own(state), _) => self.runner.forward(state, &chunk, &mut self.logits),
            (SeqKv::Slot, None) => Err(InferenceError::Output("slot without a pool".into())),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "prefill failed");
            fail_now(sequence, e);
            return;
        }
        sequence.prefilled += take;
        if !sequence.prompt_remaining().is_empty() {
            return;
        }
        if sequence.request.params.pin_prefix {
            if let Err(e) = self.store(sequence, slot, true) {
                sequence.fail(e);
            } else {
                sequence.finish_pinned();
            }
            mark_done(sequence);
            return;
        }
        let logits = std::mem::take(&mut self.logits);
        self.accept(sequence, &logits);
        self.logits = logits;
    }

    /// One batched call over slots `0..running.len()`. Rows still prefilling (or cancelled)
    /// ride along with a placeholder token whose KV write lands at their own next position and
    /// is overwritten when they continue; their logits are ignored.
    fn decode_batched(&mut self, running: &mut [Sequence<'t>]) {
        let Some(pool) = &mut self.pool else { return };
        let tokens: Vec<u32> = running.iter().map(|s| s.next_token.unwrap_or(0)).collect();
        let lens: Vec<usize> = (0..running.len()).map(|i| pool.len(i)).collect();
        metrics::record_batch_size(running.iter().filter(|s| s.is_decoding()).count());
        let result = self.runner.decode_slots(pool, &tokens, &mut self.logits);
        for (i, sequence) in running.iter().enumerate() {
            if !sequence.is_decoding() {
                pool.set_len(i, lens[i]);
            }
        }
        if let Err(e) = result {
            // One row's input can fail the whole call (ONNX Runtime reports one status for the
            // batch). Step each sequence alone, so only the one that fails on its own fails.
            tracing::warn!(error = %e, "batched decode step failed; stepping each sequence alone");
            self.decode_slots_one_by_one(running, &tokens);
            return;
        }
        let vocab = self.logits.len() / running.len().max(1);
        let logits = std::mem::take(&mut self.logits);
        for (i, sequence) in running.iter_mut().enumerate() {
            if sequence.is_decoding() {
                self.accept(sequence, &logits[i * vocab..(i + 1) * vocab]);
            }
        }
        self.logits = logits;
    }

    /// The fallback of a failed batched step: each decoding sequence's token run alone on its
    /// slot (a one-token prefill at its next position, which the failed call may have written
    /// and this run overwrites). Lengths of the slots are unchanged by the failed call.
    fn decode_slots_one_by_one(&mut self, running: &mut [Sequence<'t>], tokens: &[u32]) {
        for (slot, sequence) in running.iter_mut().enumerate() {
            if !sequence.is_decoding() {
                continue;
            }
            let Some(pool) = self.pool.as_mut() else {
                return;
            };
            let token = std::slice::from_ref(&tokens[slot]);
            let result = self
                .runner
                .prefill_slot(pool, slot, token, &mut self.logits);
            self.after_own_step(sequence, result);
        }
    }

    fn decode_one(&mut self, sequence: &mut Sequence<'t>) {
        let Some(token) = sequence.next_token else {
            return;
        };
        metrics::record_batch_size(1);
        let SeqKv::Own(state) = &mut sequence.kv else {
            return;
        };
        let result = self.runner.forward(state, &[token], &mut self.logits);
        self.after_own_step(sequence, result);
    }

    /// After a decode run of `sequence` alone: a failure ends that sequence only; otherwise
    /// the logits the run left in `self.logits` give its next token.
    fn after_own_step(&mut self, sequence: &mut Sequence<'t>, result: Result<(), InferenceError>) {
        if let Err(e) = result {
            tracing::error!(error = %e, "decode step failed");
            fail_now(sequence, e);
            return;
        }
        let logits = std::mem::take(&mut self.logits);
        self.accept(sequence, &logits);
        self.logits = logits;
    }

    fn accept(&mut self, sequence: &mut Sequence<'t>, logits: &[f32]) {
        match sequence.accept(logits, self.eos_ids) {
            Ok(Progress::Continue) => {}
            Ok(Progress::Finished) => mark_done(sequence),
            Err(e) => fail_now(sequence, e),
        }
    }

    /// Removes finished sequences, storing their KV in the prefix cache first, and keeps the
    /// running slots contiguous (the last slot moves into a freed one).
    fn retire(&mut self, running: &mut Vec<Sequence<'t>>, draining: &mut Vec<Outbox>) {
        let mut i = 0;
        while i < running.len() {
            if !is_done(&running[i]) {
                i += 1;
                continue;
            }
            let finished_normally = running[i].completed
                && running[i].request.params.use_cache
                && !running[i].request.params.pin_prefix;
            if finished_normally {
                // After the client has its answer: keep this conversation's KV for the next turn.
                if let Err(e) = self.store(&running[i], i, false) {
                    tracing::warn!(error = %e, "could not store the prefix in the cache");
                }
            }
            let last = running.len() - 1;
            let sequence = running.swap_remove(i);
            if let Some(pool) = &mut self.pool {
                pool.move_slot(last, i);
                if last == i {
                    pool.reset(i);
                }
            }
            if !sequence.outbox.is_empty() {
                draining.push(sequence.outbox);
            }
        }
    }

    fn store(&self, sequence: &Sequence<'t>, slot: usize, pin: bool) -> Result<(), InferenceError> {
        let Some(cache) = self.cache else {
            return Ok(());
        };
        let context = sequence.context();
        match (&sequence.kv, &self.pool) {
            (SeqKv::Slot, Some(pool)) => {
                store_blocks(cache, pool.len(slot), &context, pin, |start, count, bt| {
                    pool.export_blocks(slot, start, count, bt)
                })
            }
            (SeqKv::Own(state), _) => {
                store_blocks(cache, state.len(), &context, pin, |start, count, bt| {
                    self.runner.export_blocks(state, start, count, bt)
                })
            }
            (SeqKv::Slot, None) => Ok(()),
        }
    }

    fn reset_slot(&mut self, slot: usize) {
        if let Some(pool) = &mut self.pool {
            pool.reset(slot);
        }
    }

    fn kv_bytes(&self, running: &[Sequence<'t>]) -> usize {
        match &self.pool {
            Some(pool) => pool.bytes_in_use(running.len()),
            None => running
                .iter()
                .map(|s| match &s.kv {
                    SeqKv::Own(state) => state.len() * self.runner.layout().kv_bytes_per_token(),
                    SeqKv::Slot => 0,
                })
                .sum(),
        }
    }
}

/// A sequence is done when it has nothing to feed and nothing left to prefill.
fn is_done(sequence: &Sequence<'_>) -> bool {
    !sequence.is_decoding() && sequence.prompt_remaining().is_empty()
}

/// Ends `sequence` with `error`: no further token, removed at the end of this step.
fn fail_now(sequence: &mut Sequence<'_>, error: InferenceError) {
    sequence.fail(error);
    mark_done(sequence);
}

/// Marks a sequence as done (no token to feed, prompt consumed).
fn mark_done(sequence: &mut Sequence<'_>) {
    sequence.next_token = None;
    sequence.prefilled = sequence.request.prompt_ids.len();
}
