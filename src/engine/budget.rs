//! Memory admission: the KV cache of every admitted sequence is reserved up front (prompt plus
//! `max_tokens` positions) against a budget derived from the process memory limit, so the edge
//! refuses work — 429, or a policy fallback to the cloud — before it runs out of memory instead
//! of being killed mid-stream.
//!
//! budget (config, else the cgroup limit, else physical RAM)
//!   − model weights (per worker session) − runtime overhead − prefix cache
//!   = KV budget; a request fits when its reservation fits in what is not reserved.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::telemetry::metrics;

/// Process-wide memory accounting, shared by every loaded engine (several models, and a
/// candidate version beside the stable one during a canary): weights, prefix caches and the
/// runtime overhead are *fixed* reservations made when an engine loads; what remains is the
/// KV budget that admitted sequences of all engines reserve from.
#[derive(Debug)]
pub struct MemoryPool {
    limit: usize,
    fixed: AtomicUsize,
    kv_reserved: AtomicUsize,
}

/// Memory held by one loaded engine (its weights and prefix cache); returned when dropped,
/// i.e. when the engine's last request has finished.
#[derive(Debug)]
pub struct FixedReservation {
    pool: Arc<MemoryPool>,
    bytes: usize,
}

impl Drop for FixedReservation {
    fn drop(&mut self) {
        self.pool.fixed.fetch_sub(self.bytes, Ordering::AcqRel);
        self.pool.publish();
    }
}

impl MemoryPool {
    /// A pool of `limit` bytes of which `runtime_overhead` (ORT arenas, HTTP, the rest of the
    /// process) is set aside once.
    pub fn new(limit: usize, runtime_overhead: usize) -> Arc<Self> {
        let pool = Arc::new(Self {
            limit,
            fixed: AtomicUsize::new(runtime_overhead.min(limit)),
            kv_reserved: AtomicUsize::new(0),
        });
        pool.publish();
        pool
    }

    /// The memory budget of the process.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held by weights, prefix caches and the runtime overhead.
    pub fn fixed_bytes(&self) -> usize {
        self.fixed.load(Ordering::Acquire)
    }

    /// What the KV caches of all engines may use: the limit less the fixed reservations.
    pub fn kv_capacity(&self) -> usize {
        self.limit.saturating_sub(self.fixed_bytes())
    }

    /// Sets `bytes` aside for a loading engine, leaving at least `keep_for_kv` bytes of KV
    /// budget beyond what running sequences hold; `Err` with the bytes available otherwise.
    pub fn reserve_fixed(
        self: &Arc<Self>,
        bytes: usize,
        keep_for_kv: usize,
    ) -> Result<FixedReservation, usize> {
        let mut current = self.fixed.load(Ordering::Acquire);
        loop {
            let in_use = current.saturating_add(self.kv_reserved.load(Ordering::Acquire));
            let available = self.limit.saturating_sub(in_use);
            if bytes.saturating_add(keep_for_kv) > available {
                return Err(available);
            }
            match self.fixed.compare_exchange_weak(
                current,
                current + bytes,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.publish();
                    return Ok(FixedReservation {
                        pool: Arc::clone(self),
                        bytes,
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    fn publish(&self) {
        metrics::set_kv_reserved(self.kv_reserved.load(Ordering::Acquire), self.kv_capacity());
    }
}

/// KV accounting of one engine: its bytes per token against the shared pool.
#[derive(Debug)]
pub struct KvBudget {
    pool: Arc<MemoryPool>,
    bytes_per_token: usize,
}

/// A sequence's reservation; released when dropped (finished, failed, cancelled or never
/// queued).
#[derive(Debug)]
pub struct KvReservation {
    pool: Arc<MemoryPool>,
    bytes: usize,
}

impl Drop for KvReservation {
    fn drop(&mut self) {
        self.pool
            .kv_reserved
            .fetch_sub(self.bytes, Ordering::AcqRel);
        self.pool.publish();
    }
}

impl KvBudget {
    pub fn new(pool: Arc<MemoryPool>, bytes_per_token: usize) -> Arc<Self> {
        Arc::new(Self {
            pool,
            bytes_per_token: bytes_per_token.max(1),
        })
    }

    /// Reserves KV for `tokens` positions, or `None` when they do not fit now.
    pub fn reserve(self: &Arc<Self>, tokens: usize) -> Option<KvReservation> {
        let bytes = tokens.saturating_mul(self.bytes_per_token);
        let pool = &self.pool;
        let mut current = pool.kv_reserved.load(Ordering::Acquire);
        loop {
            let next = current.checked_add(bytes)?;
            if next > pool.kv_capacity() {
                return None;
            }
            match pool.kv_reserved.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    pool.publish();
                    return Some(KvReservation {
                        pool: Arc::clone(pool),
                        bytes,
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Positions the whole budget holds: no single request can be longer.
    pub fn capacity_tokens(&self) -> usize {
        self.pool.kv_capacity() / self.bytes_per_token
    }

    /// Positions a request arriving now could reserve.
    pub fn free_tokens(&self) -> usize {
        self.pool
            .kv_capacity()
            .saturating_sub(self.pool.kv_reserved.load(Ordering::Acquire))
            / self.bytes_per_token
    }

    /// Reserved share of the budget, 0–1 (the `memory_pressure` routing signal).
    pub fn pressure(&self) -> f64 {
        let capacity = self.pool.kv_capacity();
        if capacity == 0 {
            return 1.0;
        }
        (self.pool.kv_reserved.load(Ordering::Acquire) as f64 / capacity as f64).min(1.0)
    }

    pub fn budget_bytes(&self) -> usize {
        self.pool.kv_capacity()
    }

    /// The pool this budget draws from.
    pub fn pool(&self) -> &MemoryPool {
        &self.pool
    }
}

/// The memory limit the process lives under: the cgroup v2 (or v1) limit when one is set,
/// else physical RAM from `/proc/meminfo`.
pub fn detected_memory_limit() -> Option<usize> {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .or_else(|_| std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        // v1 reports "no limit" as a huge number.
        .filter(|&b| b < (1usize << 60));
    cgroup.or_else(|| {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kb: usize = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    })
}

/// Resident set size of this process, from `/proc/self/statm`.
pub fn process_rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Bytes of a model package's ONNX file and its external data (what one session maps).
pub fn weights_bytes(onnx_file: &Path) -> usize {
    let Some(dir) = onnx_file.parent() else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let stem = onnx_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name == stem
                || name.starts_with(&format!("{stem}.data"))
                || name.ends_with(".onnx.data")
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len() as usize)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_share_one_pool_and_a_second_copy_must_fit_beside_the_first() {
        let pool = MemoryPool::new(10_000, 1_000);
        let first = pool.reserve_fixed(4_000, 500).expect("first engine fits");
        let kv = KvBudget::new(Arc::clone(&pool), 10);
        assert_eq!(kv.capacity_tokens(), 500);
        let running = kv.reserve(300).expect("sequence fits");
        // 10_000 - 5_000 fixed - 3_000 KV in use: a 4_000-byte copy does not fit now.
        assert_eq!(pool.reserve_fixed(4_000, 500).err(), Some(2_000));
        drop(running);
        let second = pool
            .reserve_fixed(4_000, 500)
            .expect("fits once the KV is free");
        let other = KvBudget::new(Arc::clone(&pool), 20);
        assert_eq!((kv.capacity_tokens(), other.capacity_tokens()), (100, 50));
        let a = other.reserve(25).expect("fits");
        assert_eq!(
            kv.free_tokens(),
            50,
            "one engine's sequences shrink the other's budget"
        );
        drop((a, second, first));
        assert_eq!(kv.capacity_tokens(), 900);
    }

    #[test]
    fn reservations_fit_the_budget_and_are_released_on_drop() {
        let budget = KvBudget::new(MemoryPool::new(1000, 0), 10);
        assert_eq!(budget.capacity_tokens(), 100);
        let a = budget.reserve(60);
        assert!(a.is_some());
        assert!(budget.reserve(50).is_none(), "over budget admitted");
        assert_eq!(budget.free_tokens(), 40);
        assert!((budget.pressure() - 0.6).abs() < 1e-9);
        drop(a);
        assert_eq!(budget.free_tokens(), 100);
        assert!(budget.reserve(100).is_some());
    }
}
