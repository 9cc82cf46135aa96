//! The decode loop for one sequence: prefill, then sample / stop-check / stream one token per
//! step until EOS, a stop sequence, `max_tokens`, or the client goes away.

use std::time::Instant;

use tokio::sync::mpsc::Sender;

use super::error::InferenceError;
use super::runner::{KvState, Runner};
use super::sampling::{Sampler, SamplingParams};
use super::tokenizer::TextTokenizer;
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
struct StopMatcher<'a> {
    stops: &'a [String],
    text: String,
    emitted: usize,
}

impl<'a> StopMatcher<'a> {
    fn new(stops: &'a [String]) -> Self {
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
        for stop in self.stops {
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

/// Runs one generation to completion, sending events to `events`. Returns early (without an
/// event) when the receiver is dropped, which is how a client disconnect stops the work.
#[expect(
    clippy::too_many_arguments,
    reason = "the worker's per-request context, passed once"
)]
pub fn generate(
    runner: &mut Runner,
    tokenizer: &TextTokenizer,
    cache: Option<&PrefixCache>,
    eos_ids: &[u32],
    prompt_ids: &[u32],
    params: &GenerationParams,
    events: &Sender<GenerationEvent>,
    logits: &mut Vec<f32>,
) -> Result<(), InferenceError> {
    let started = Instant::now();
    let cache = cache.filter(|c| c.enabled() && (params.use_cache || params.pin_prefix));
    let mut state = runner.new_state(prompt_ids.len() + params.max_tokens)?;
    let restored = match cache {
        Some(c) if !params.pin_prefix => {
            let hit = c.lookup(prompt_ids);
            if hit.tokens > 0 {
                let blocks: Vec<&[f32]> = hit.blocks.iter().map(|b| b.data()).collect();
                runner.import_blocks(&mut state, &blocks, c.block_tokens())?;
            }
            hit.tokens
        }
        _ => 0,
    };
    runner.forward(&mut state, &prompt_ids[restored..], logits)?;
    metrics::record_cached_prompt_tokens(restored);
    // Tokens whose KV is in `state`, for storing blocks in the cache when we finish.
    let mut context: Vec<u32> = prompt_ids.to_vec();
    if params.pin_prefix {
        if let Some(c) = cache {
            store_blocks(runner, c, &state, &context, true)?;
        }
        let _ = events.blocking_send(GenerationEvent::Done {
            finish_reason: FinishReason::Length,
            prompt_tokens: prompt_ids.len(),
            completion_tokens: 0,
        });
        return Ok(());
    }
    let mut sampler = Sampler::new(params.sampling.clone());
    let mut detok = tokenizer.stream();
    let mut stops = StopMatcher::new(&params.stop);
    let mut pending_ids = Vec::new();
    let mut completion_tokens = 0usize;
    let mut last_token_at: Option<Instant> = None;
    let finish_reason = loop {
        let token = sampler.sample(logits);
        if !params.ignore_eos && eos_ids.contains(&token) {
            break FinishReason::Stop;
        }
        completion_tokens += 1;
        pending_ids.push(token);
        let now = Instant::now();
        match last_token_at {
            None => metrics::record_ttft(now.duration_since(started)),
            Some(prev) => metrics::record_inter_token(now.duration_since(prev)),
        }
        last_token_at = Some(now);
        let piece = detok.step(token)?.unwrap_or_default();
        let (text, stopped) = stops.push(&piece);
        if !text.is_empty() || stopped {
            let delta = GenerationEvent::Delta {
                text,
                token_ids: std::mem::take(&mut pending_ids),
            };
            if events.blocking_send(delta).is_err() {
                metrics::record_generation("cancelled", prompt_ids.len(), completion_tokens);
                return Ok(());
            }
        }
        if stopped {
            break FinishReason::Stop;
        }
        if completion_tokens >= params.max_tokens {
            break FinishReason::Length;
        }
        if events.is_closed() {
            metrics::record_generation("cancelled", prompt_ids.len(), completion_tokens);
            return Ok(());
        }
        runner.forward(&mut state, &[token], logits)?;
        context.push(token);
    };
    let held_back = stops.flush();
    if !held_back.is_empty() || !pending_ids.is_empty() {
        // Text withheld as a possible stop-sequence prefix that never completed is released.
        let delta = GenerationEvent::Delta {
            text: held_back,
            token_ids: pending_ids,
        };
        if events.blocking_send(delta).is_err() {
            metrics::record_generation("cancelled", prompt_ids.len(), completion_tokens);
            return Ok(());
        }
    }
    metrics::record_generation(finish_reason.as_str(), prompt_ids.len(), completion_tokens);
    let _ = events.blocking_send(GenerationEvent::Done {
        finish_reason,
        prompt_tokens: prompt_ids.len(),
        completion_tokens,
    });
    // After the client has its answer: keep this conversation's KV for the next turn.
    if let Some(c) = cache {
        store_blocks(runner, c, &state, &context, false)?;
    }
    Ok(())
}

/// Copies the not-yet-cached full blocks of `context` out of `state` into the cache.
fn store_blocks(
    runner: &Runner,
    cache: &PrefixCache,
    state: &KvState,
    context: &[u32],
    pin: bool,
) -> Result<(), InferenceError> {
    let bt = cache.block_tokens();
    let full = state.len().min(context.len()) / bt;
    let first = if pin {
        0
    } else {
        cache.first_missing_block(&context[..full * bt])
    };
    if first < full {
        let data = runner.export_blocks(state, first * bt, full - first, bt)?;
        cache.insert(&context[..full * bt], first, data, pin);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
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
