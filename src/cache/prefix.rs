//! KV prefix cache on moka. Prompts are cut into fixed-size token blocks; block `i` is keyed by
//! a hash chained over the model key and every token of blocks `0..=i`, so walking a new
//! prompt's chain finds the **longest** cached prefix, not only exact matches. Each entry holds
//! only its own block's KV (no duplication between prefixes that share a start), weighted by
//! bytes against a budget, with TTL and idle expiry. Running requests hold `Arc`s to the blocks
//! they restored, so eviction never frees state in use. Pinned blocks (system prompts declared in
//! config) live outside moka and are never evicted.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use metrics::{counter, gauge};

use crate::engine::kv::KvData;
use crate::telemetry::metrics as names;

/// Cache sizing and behaviour, validated in `config`.
#[derive(Debug, Clone)]
pub struct PrefixCacheSettings {
    pub enabled: bool,
    pub block_tokens: usize,
    pub max_bytes: u64,
    pub ttl: Duration,
    pub idle: Duration,
}

/// One block of cached KV state and the exact tokens it was computed for.
pub struct KvBlock {
    /// Chain hash of the preceding block (0 for the first), checked on lookup.
    parent: u64,
    tokens: Box<[u32]>,
    data: KvData,
}

impl KvBlock {
    /// The block's KV in the model's element type, laid out as `Runner::export_blocks`
    /// produces it.
    pub fn data(&self) -> &KvData {
        &self.data
    }

    /// Weighed against `cache.max_bytes`: the real element size (2 bytes for float16 KV).
    fn bytes(&self) -> usize {
        self.data.bytes() + self.tokens.len() * std::mem::size_of::<u32>()
    }
}

/// Blocks restored for a prompt; holding it keeps them alive while the request runs.
pub struct PrefixMatch {
    pub blocks: Vec<Arc<KvBlock>>,
    pub tokens: usize,
}

/// The shared prefix cache of one model.
pub struct PrefixCache {
    settings: PrefixCacheSettings,
    model_key: u64,
    blocks: moka::sync::Cache<u64, Arc<KvBlock>>,
    pinned: RwLock<HashMap<u64, Arc<KvBlock>>>,
}

impl PrefixCache {
    /// Creates an empty cache for the model identified by `model_key` (id + version).
    pub fn new(settings: PrefixCacheSettings, model_key: &str) -> Self {
        let mut h = DefaultHasher::new();
        model_key.hash(&mut h);
        let blocks = moka::sync::Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|_k: &u64, v: &Arc<KvBlock>| u32::try_from(v.bytes()).unwrap_or(u32::MAX))
            .time_to_live(settings.ttl)
            .time_to_idle(settings.idle)
            .eviction_listener(|_k, _v, cause| {
                if cause.was_evicted() {
                    counter!(names::PREFIX_CACHE_EVICTIONS_TOTAL).increment(1);
                }
            })
            .build();
        Self {
            settings,
            model_key: h.finish(),
            blocks,
            pinned: RwLock::new(HashMap::new()),
        }
    }

    /// Tokens per block.
    pub fn block_tokens(&self) -> usize {
        self.settings.block_tokens
    }

    /// Whether the cache is switched on globally.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Chain hashes of every full block of `tokens`.
    fn chain(&self, tokens: &[u32]) -> Vec<u64> {
        let mut parent = self.model_key;
        tokens
            .chunks_exact(self.settings.block_tokens)
            .map(|block| {
                let mut h = DefaultHasher::new();
                parent.hash(&mut h);
                block.hash(&mut h);
                parent = h.finish();
                parent
            })
            .collect()
    }

    fn get(&self, key: u64) -> Option<Arc<KvBlock>> {
        if let Some(b) = self.pinned.read().ok().and_then(|p| p.get(&key).cloned()) {
            return Some(b);
        }
        self.blocks.get(&key)
    }

    /// Longest cached prefix of `prompt`, leaving at least one token to prefill (its logits
    /// pick the first generated token).
    pub fn lookup(&self, prompt: &[u32]) -> PrefixMatch {
        counter!(names::PREFIX_CACHE_LOOKUPS_TOTAL).increment(1);
        let bt = self.settings.block_tokens;
        let usable = prompt.len().saturating_sub(1) / bt;
        let chain = self.chain(&prompt[..usable * bt]);
        let mut blocks = Vec::new();
        let mut parent = 0u64;
        for (i, key) in chain.iter().enumerate() {
            let Some(block) = self.get(*key) else { break };
            // A hash collision must never splice foreign KV into a prompt: compare exactly.
            if block.parent != parent || block.tokens[..] != prompt[i * bt..(i + 1) * bt] {
                break;
            }
            parent = *key;
            blocks.push(block);
        }
        let tokens = blocks.len() * bt;
        if tokens > 0 {
            counter!(names::PREFIX_CACHE_HITS_TOTAL).increment(1);
            counter!(names::PREFIX_CACHE_HIT_TOKENS_TOTAL).increment(tokens as u64);
        }
        PrefixMatch { blocks, tokens }
    }

    /// Index of the first full block of `tokens` that is not cached.
    pub fn first_missing_block(&self, tokens: &[u32]) -> usize {
        let chain = self.chain(tokens);
        chain
            .iter()
            .position(|k| self.get(*k).is_none())
            .unwrap_or(chain.len())
    }

    /// Stores blocks `first..first + data.len()` of `tokens`; `pin` keeps them forever.
    pub fn insert(&self, tokens: &[u32], first: usize, data: Vec<KvData>, pin: bool) {
        let bt = self.settings.block_tokens;
        let chain = self.chain(tokens);
        for (offset, kv) in data.into_iter().enumerate() {
            let i = first + offset;
            let Some(&key) = chain.get(i) else { break };
            let parent = if i == 0 { 0 } else { chain[i - 1] };
            let block = Arc::new(KvBlock {
                parent,
                tokens: tokens[i * bt..(i + 1) * bt].into(),
                data: kv,
            });
            if pin {
                if let Ok(mut p) = self.pinned.write() {
                    gauge!(names::PREFIX_CACHE_PINNED_BYTES).increment(block.bytes() as f64);
                    p.insert(key, block);
                }
            } else {
                self.blocks.insert(key, block);
            }
        }
        self.blocks.run_pending_tasks();
        gauge!(names::PREFIX_CACHE_BYTES).set(self.blocks.weighted_size() as f64);
    }

    /// Bytes held by evictable blocks (after pending maintenance).
    pub fn evictable_bytes(&self) -> u64 {
        self.blocks.run_pending_tasks();
        self.blocks.weighted_size()
    }

    /// Number of pinned blocks.
    pub fn pinned_blocks(&self) -> usize {
        self.pinned.read().map_or(0, |p| p.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max_bytes: u64) -> PrefixCache {
        PrefixCache::new(
            PrefixCacheSettings {
                enabled: true,
                block_tokens: 4,
                max_bytes,
                ttl: Duration::from_secs(60),
                idle: Duration::from_secs(60),
            },
            "model@1",
        )
    }

    fn fake_blocks(n: usize, tag: f32) -> Vec<KvData> {
        (0..n)
            .map(|i| KvData::F32(vec![tag + i as f32; 8]))
            .collect()
    }

    #[test]
    fn finds_longest_prefix_not_only_exact() {
        let c = cache(1 << 20);
        let prompt: Vec<u32> = (0..13).collect();
        c.insert(&prompt, 0, fake_blocks(3, 0.0), false);
        // Same first 9 tokens, then different: two full blocks match.
        let mut other: Vec<u32> = (0..9).collect();
        other.extend([100, 101, 102, 103, 104]);
        let m = c.lookup(&other);
        assert_eq!(m.tokens, 8);
        assert_eq!(m.blocks[1].data(), &KvData::F32(vec![1.0; 8]));
    }

    #[test]
    fn leaves_one_token_to_prefill() {
        let c = cache(1 << 20);
        let prompt: Vec<u32> = (0..8).collect();
        c.insert(&prompt, 0, fake_blocks(2, 0.0), false);
        assert_eq!(c.lookup(&prompt).tokens, 4);
        let longer: Vec<u32> = (0..9).collect();
        assert_eq!(c.lookup(&longer).tokens, 8);
    }

    #[test]
    fn different_model_key_never_matches() {
        let a = cache(1 << 20);
        let prompt: Vec<u32> = (0..9).collect();
        a.insert(&prompt, 0, fake_blocks(2, 0.0), false);
        let chain_a = a.chain(&prompt);
        let b = PrefixCache::new(a.settings.clone(), "model@2");
        assert_ne!(chain_a, b.chain(&prompt));
    }

    #[test]
    fn byte_budget_is_respected_and_pinned_survive() {
        let c = cache(2_000);
        let pinned: Vec<u32> = (1000..1009).collect();
        c.insert(&pinned, 0, vec![KvData::F32(vec![0.5; 100]); 2], true);
        for p in 0..50u32 {
            let prompt: Vec<u32> = (p * 100..p * 100 + 9).collect();
            c.insert(&prompt, 0, vec![KvData::F32(vec![0.0; 100]); 2], false);
        }
        assert!(c.evictable_bytes() <= 2_000, "{}", c.evictable_bytes());
        assert_eq!(c.lookup(&pinned).tokens, 8);
    }

    #[test]
    fn float16_blocks_weigh_their_real_size() {
        // 100 f16 elements + 4 tokens = 216 bytes: nine fit under 2000 where f32 fit four.
        let c = cache(2_000);
        for p in 0..9u32 {
            let prompt: Vec<u32> = (p * 100..p * 100 + 5).collect();
            let block = KvData::F16(vec![half::f16::from_f32(0.25); 100]);
            c.insert(&prompt, 0, vec![block], false);
        }
        assert_eq!(c.evictable_bytes(), 9 * 216);
    }

    #[test]
    fn first_missing_block_skips_cached_ones() {
        let c = cache(1 << 20);
        let prompt: Vec<u32> = (0..12).collect();
        c.insert(&prompt, 0, fake_blocks(1, 0.0), false);
        assert_eq!(c.first_missing_block(&prompt), 1);
    }
}
