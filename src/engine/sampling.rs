//! Next-token selection: greedy, temperature, top-k, top-p, with a seedable RNG so a given seed
//! reproduces the same tokens.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Temperatures at or below this are treated as greedy decoding.
const GREEDY_EPSILON: f32 = 1e-5;

/// Per-request sampling settings, already validated by the API layer.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 1.0 disables nucleus sampling.
    pub top_p: f32,
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// True when the choice is the argmax and needs no randomness.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= GREEDY_EPSILON || self.top_k == 1
    }
}

/// Stateful sampler; scratch buffers are reused across steps so decoding does not allocate.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    /// Creates a sampler; without a seed the RNG is seeded from the OS.
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self {
            params,
            rng,
            candidates: Vec::new(),
        }
    }

    /// Picks the next token id from the last position's logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.is_greedy() {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.params.temperature;
        self.candidates.clear();
        self.candidates.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, l * inv_t)),
        );
        let by_logit_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
        let k = self.params.top_k;
        if k > 0 && k < self.candidates.len() {
            self.candidates.select_nth_unstable_by(k - 1, by_logit_desc);
            self.candidates.truncate(k);
        }
        self.candidates.sort_unstable_by(by_logit_desc);
        let max = self.candidates.first().map_or(0.0, |c| c.1);
        let mut total = 0.0f32;
        for c in &mut self.candidates {
            c.1 = (c.1 - max).exp();
            total += c.1;
        }
        if self.params.top_p < 1.0 {
            let cutoff = self.params.top_p * total;
            let mut cumulative = 0.0;
            let mut keep = self.candidates.len();
            for (i, c) in self.candidates.iter().enumerate() {
                cumulative += c.1;
                if cumulative >= cutoff {
                    keep = i + 1;
                    break;
                }
            }
            self.candidates.truncate(keep);
            total = self.candidates.iter().map(|c| c.1).sum();
        }
        let mut target = self.rng.random::<f32>() * total;
        for c in &self.candidates {
            target -= c.1;
            if target <= 0.0 {
                return c.0;
            }
        }
        self.candidates
            .last()
            .map_or_else(|| argmax(logits), |c| c.0)
    }
}

/// Index of the largest logit; the first one wins ties, as in numpy/torch argmax.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            seed: Some(seed),
        }
    }

    #[test]
    fn greedy_takes_first_maximum() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
        let mut s = Sampler::new(params(0.0, 0, 1.0, 1));
        assert_eq!(s.sample(&[0.0, 0.5, 2.0]), 2);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(params(1.0, 0, 1.0, seed));
            (0..32).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(params(5.0, 1, 1.0, 7));
        for _ in 0..20 {
            assert_eq!(s.sample(&[1.0, 4.0, 2.0]), 1);
        }
    }

    #[test]
    fn top_k_limits_choices() {
        let logits = [5.0, 4.9, 4.8, -10.0, 4.7];
        let mut s = Sampler::new(params(1.0, 2, 1.0, 3));
        for _ in 0..200 {
            let t = s.sample(&logits);
            assert!(t == 0 || t == 1, "picked {t}");
        }
    }

    #[test]
    fn small_top_p_keeps_only_the_head() {
        let logits = [10.0, 0.0, 0.0, 0.0];
        let mut s = Sampler::new(params(1.0, 0, 0.5, 9));
        for _ in 0..100 {
            assert_eq!(s.sample(&logits), 0);
        }
    }

    #[test]
    fn sampling_spreads_over_equal_logits() {
        let logits = [1.0; 4];
        let mut s = Sampler::new(params(1.0, 0, 1.0, 11));
        let mut seen = [false; 4];
        for _ in 0..200 {
            seen[s.sample(&logits) as usize] = true;
        }
        assert!(seen.iter().all(|&x| x), "{seen:?}");
    }
}
