//! The state of one generation as the scheduler steps it: sample / stop-check / stream one
//! token per step until EOS, a stop sequence, `max_tokens`, or the client goes away.

use std::time::Instant;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

use super::error::InferenceError;
use super::kv::KvData;
use super::runner::KvState;
use super::sampling::{Sampler, SamplingParams};
use super::tokenizer::{TextTokenizer, TokenStream};
use super::worker::GenerationRequest;
use crate::cache::PrefixCache;
use crate::telemetry::metrics;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS or a stop sequence.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    /// OpenAI's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What a generation needs besides the prompt ids.
#[derive(Debug, Clone)]
pub struct GenerationParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    /// Use (and feed) the prefix cache for this request.
    pub use_cache: bool,
    /// Prefill the prompt, pin its blocks in the prefix cache, and generate nothing.
    pub pin_prefix: bool,
}

impl GenerationParams {
    /// Greedy decoding of up to `max_tokens`, no stop sequences, no prefix cache: what
    /// internal generations (warm-up, evaluation) use.
    pub fn greedy(max_tokens: usize, ignore_eos: bool) -> Self {
        Self {
            max_tokens,
            sampling: SamplingParams {
                temperature: 0.0,
                ..SamplingParams::default()
            },
            stop: Vec::new(),
            ignore_eos,
            use_cache: false,
            pin_prefix: false,
        }
    }
}

/// Streamed to the HTTP layer as generation progresses.
#[derive(Debug)]
pub enum GenerationEvent {
    /// New text (complete UTF-8, stop sequences withheld) and the token ids since the last event.
    Delta { text: String, token_ids: Vec<u32> },
    /// Generation finished normally.
    Done {
        finish_reason: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    /// Generation failed; no further events follow.
    Error(InferenceError),
}

/// Tracks generated text and decides what can be released without leaking a stop sequence.
struct StopMatcher {
    stops: Vec<String>,
    text: String,
    emitted: usize,
}

impl StopMatcher {
    fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            text: String::new(),
            emitted: 0,
        }
    }

    /// Appends `piece`; returns (releasable text, whether a stop sequence matched).
    fn push(&mut self, piece: &str) -> (String, bool) {
        let search_from = self.emitted;
        self.text.push_str(piece);
        let earliest_stop = self
            .stops
            .iter()
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|p| p + search_from)
            })
            .min();
        if let Some(end) = earliest_stop {
            let out = self.text[self.emitted..end].to_string();
            // Nothing at or after the stop sequence is ever released.
            self.emitted = self.text.len();
            return (out, true);
        }
        let safe_end = self.text.len() - self.held_back_suffix();
        let out = self.text[self.emitted..safe_end].to_string();
        self.emitted = safe_end;
        (out, false)
    }

    /// Releases whatever is still withheld (generation ended without completing a stop).
    fn flush(&mut self) -> String {
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }

    /// Length of the longest unreleased suffix that could still grow into a stop sequence.
    fn held_back_suffix(&self) -> usize {
        let tail = &self.text[self.emitted..];
        let mut longest = 0;
        for stop in &self.stops {
            for (start, _) in tail.char_indices() {
                let suffix = &tail[start..];
                if suffix.len() <= longest {
                    break;
                }
                if stop.starts_with(suffix) {
                    longest = suffix.len();
                    break;
                }
            }
        }
        longest
    }
}

/// Where a sequence's KV cache lives.
pub(super) enum SeqKv {
    /// A slot of the worker's batched pool (shared-buffer models).
    Slot,
    /// Its own state, run one sequence per call (concatenating models).
    Own(KvState),
}

/// What a sequence needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    /// Feed `next_token` at the next decode step.
    Continue,
    /// Finished or cancelled: free its KV and drop it (after its outbox drains).
    Finished,
}

/// One running generation: its request, sampling, detokenization and stop state, and the
/// events not yet taken by its client. Events go through an unbounded-looking but in fact
/// `max_tokens`-bounded outbox so a slow client never blocks the worker (and with it every
/// other sequence in the batch).
pub(super) struct Sequence<'t> {
    pub request: GenerationRequest,
    pub kv: SeqKv,
    /// Prompt tokens whose KV is in the state (restored from the cache or prefilled).
    pub prefilled: usize,
    /// Generated tokens whose KV is in the state.
    pub fed: Vec<u32>,
    /// The token to feed at the next decode step, once prefill is done.
    pub next_token: Option<u32>,
    pub outbox: Outbox,
    /// Ended normally (EOS, stop sequence or `max_tokens`), so its KV may be cached.
    pub completed: bool,
    started: Instant,
    sampler: Sampler,
    detok: TokenStream<'t>,
    stops: StopMatcher,
    pending_ids: Vec<u32>,
    completion_tokens: usize,
    last_token_at: Option<Instant>,
    _running: metrics::RunningGuard,
}

impl<'t> Sequence<'t> {
    pub fn new(
        request: GenerationRequest,
        kv: SeqKv,
        restored: usize,
        tokenizer: &'t TextTokenizer,
    ) -> Self {
        metrics::record_cached_prompt_tokens(restored);
        let outbox = Outbox::new(request.events.clone());
        Self {
            sampler: Sampler::new(request.params.sampling.clone()),
            stops: StopMatcher::new(request.params.stop.clone()),
            request,
            kv,
            prefilled: restored,
            fed: Vec::new(),
            next_token: None,
            outbox,
            completed: false,
            started: Instant::now(),
            detok: tokenizer.stream(),
            pending_ids: Vec::new(),
            completion_tokens: 0,
            last_token_at: None,
            _running: metrics::RunningGuard::new(),
        }
    }

    /// Prompt tokens still to prefill.
    pub fn prompt_remaining(&self) -> &[u32] {
        &self.request.prompt_ids[self.prefilled.min(self.request.prompt_ids.len())..]
    }

    /// True once prefill is done and a token waits to be fed.
    pub fn is_decoding(&self) -> bool {
        self.next_token.is_some()
    }

    /// Tokens whose KV is in the state, in order (prompt, then generated).
    pub fn context(&self) -> Vec<u32> {
        let mut c = self.request.prompt_ids[..self.prefilled].to_vec();
        c.extend_from_slice(&self.fed);
        c
    }

    /// The client went away.
    pub fn is_cancelled(&self) -> bool {
        self.request.events.is_closed()
    }

    /// Samples from the logits that followed the last fed token and streams the result.
    pub fn accept(&mut self, logits: &[f32], eos_ids: &[u32]) -> Result<Progress, InferenceError> {
        if let Some(fed) = self.next_token.take() {
            self.fed.push(fed);
        }
        let token = self.sampler.sample(logits);
        let params = &self.request.params;
        if !params.ignore_eos && eos_ids.contains(&token) {
            self.finish(FinishReason::Stop);
            return Ok(Progress::Finished);
        }
        self.completion_tokens += 1;
        self.pending_ids.push(token);
        let now = Instant::now();
        match self.last_token_at {
            None => metrics::record_ttft(now.duration_since(self.started)),
            Some(prev) => metrics::record_inter_token(now.duration_since(prev)),
        }
        self.last_token_at = Some(now);
        let piece = self.detok.step(token)?.unwrap_or_default();
        let (text, stopped) = self.stops.push(&piece);
        if !text.is_empty() || stopped {
            self.outbox.push(GenerationEvent::Delta {
                text,
                token_ids: std::mem::take(&mut self.pending_ids),
            });
        }
        if stopped {
            self.finish(FinishReason::Stop);
            return Ok(Progress::Finished);
        }
        if self.completion_tokens >= self.request.params.max_tokens {
            self.finish(FinishReason::Length);
            return Ok(Progress::Finished);
        }
        if !self.outbox.flush() {
            self.cancel();
            return Ok(Progress::Finished);
        }
        self.next_token = Some(token);
        Ok(Progress::Continue)
    }

    /// Releases withheld text and queues the final event.
    fn finish(&mut self, finish_reason: FinishReason) {
        self.completed = true;
        let held_back = self.stops.flush();
        if !held_back.is_empty() || !self.pending_ids.is_empty() {
            // Text withheld as a possible stop-sequence prefix that never completed is released.
            self.outbox.push(GenerationEvent::Delta {
                text: held_back,
                token_ids: std::mem::take(&mut self.pending_ids),
            });
        }
        let prompt_tokens = self.request.prompt_ids.len();
        metrics::record_generation(
            finish_reason.as_str(),
            prompt_tokens,
            self.completion_tokens,
        );
        self.outbox.push(GenerationEvent::Done {
            finish_reason,
            prompt_tokens,
            completion_tokens: self.completion_tokens,
        });
        self.outbox.flush();
    }

    /// The client disconnected: counted, nothing more is sent.
    pub fn cancel(&mut self) {
        metrics::record_generation(
            "cancelled",
            self.request.prompt_ids.len(),
            self.completion_tokens,
        );
        self.outbox.clear();
    }

    /// Reports a failure to this sequence's client only.
    pub fn fail(&mut self, error: InferenceError) {
        metrics::record_error("inference");
        metrics::record_generation(
            "error",
            self.request.prompt_ids.len(),
            self.completion_tokens,
        );
        self.outbox.push(GenerationEvent::Error(error));
        self.outbox.flush();
    }

    /// A prefill-only request (`pin_prefix`) is done.
    pub fn finish_pinned(&mut self) {
        self.outbox.push(GenerationEvent::Done {
            finish_reason: FinishReason::Length,
            prompt_tokens: self.request.prompt_ids.len(),
            completion_tokens: 0,
        });
        self.outbox.flush();
    }
}

/// Events waiting for a client whose channel is full. Bounded by the request's `max_tokens`.
pub(super) struct Outbox {
    events: std::collections::VecDeque<GenerationEvent>,
    sender: Sender<GenerationEvent>,
}

impl Outbox {
    fn new(sender: Sender<GenerationEvent>) -> Self {
        Self {
            events: std::collections::VecDeque::new(),
            sender,
        }
    }

    fn push(&mut self, event: GenerationEvent) {
        self.events.push_back(event);
    }

    fn clear(&mut self) {
        self.events.clear();
    }

    /// Sends what the channel takes without blocking; false when the client has gone.
    pub fn flush(&mut self) -> bool {
        while let Some(event) = self.events.pop_front() {
            match self.sender.try_send(event) {
                Ok(()) => {}
                Err(TrySendError::Full(event)) => {
                    self.events.push_front(event);
                    return true;
                }
                Err(TrySendError::Closed(_)) => {
                    self.events.clear();
                    return false;
                }
            }
        }
        true
    }

    /// Nothing left to deliver.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// Copies the not-yet-cached full blocks of `context` out of `export` into the cache.
pub(super) fn store_blocks(
    cache: &PrefixCache,
    kv_len: usize,
    context: &[u32],
    pin: bool,
    export: impl FnOnce(usize, usize, usize) -> Result<Vec<KvData>, InferenceError>,
) -> Result<(), InferenceError> {
    let bt = cache.block_tokens();
    let full = kv_len.min(context.len()) / bt;
    let first = if pin {
        0
    } else {
        cache.first_missing_block(&context[..full * bt])
    };
    if first < full {
        let data = export(first * bt, full - first, bt)?;
        cache.insert(&context[..full * bt], first, data, pin);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(stops);
        let mut out = Vec::new();
        for p in pieces {
            let (t, stopped) = m.push(p);
            out.push(t);
            if stopped {
                return (out, true);
            }
        }
        (out, false)
    }

    #[test]
    fn stop_sequence_across_pieces_is_withheld() {
        let (out, stopped) = run(&["END"], &["hello E", "N", "D more"]);
        assert!(stopped);
        assert_eq!(out.concat(), "hello ");
    }

    #[test]
    fn partial_prefix_is_released_when_it_diverges() {
        let (out, stopped) = run(&["END"], &["a E", "x"]);
        assert!(!stopped);
        assert_eq!(out, vec!["a ".to_string(), "Ex".to_string()]);
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (out, stopped) = run(&["world", "lo"], &["hello world"]);
        assert!(stopped);
        assert_eq!(out.concat(), "hel");
    }

    #[test]
    fn multibyte_text_is_split_on_char_boundaries() {
        let (out, stopped) = run(&["€x"], &["prix 5€", "!"]);
        assert!(!stopped);
        assert_eq!(out.concat(), "prix 5€!");
        assert_eq!(out[0], "prix 5");
    }

    #[test]
    fn no_stops_releases_everything() {
        let (out, stopped) = run(&[], &["a", "b"]);
        assert!(!stopped);
        assert_eq!(out, vec!["a", "b"]);
    }
}
