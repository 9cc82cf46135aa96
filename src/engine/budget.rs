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

/// Shared KV accounting of one engine.
#[derive(Debug)]
pub struct KvBudget {
    budget_bytes: usize,
    bytes_per_token: usize,
    reserved: AtomicUsize,
}

/// A sequence's reservation; released when dropped (finished, failed, cancelled or never
/// queued).
#[derive(Debug)]
pub struct KvReservation {
    budget: Arc<KvBudget>,
    bytes: usize,
}

impl Drop for KvReservation {
    fn drop(&mut self) {
        let left = self.budget.reserved.fetch_sub(self.bytes, Ordering::AcqRel) - self.bytes;
        metrics::set_kv_reserved(left, self.budget.budget_bytes);
    }
}

impl KvBudget {
    pub fn new(budget_bytes: usize, bytes_per_token: usize) -> Arc<Self> {
        metrics::set_kv_reserved(0, budget_bytes);
        Arc::new(Self {
            budget_bytes,
            bytes_per_token: bytes_per_token.max(1),
            reserved: AtomicUsize::new(0),
        })
    }

    /// Reserves KV for `tokens` positions, or `None` when they do not fit now.
    pub fn reserve(self: &Arc<Self>, tokens: usize) -> Option<KvReservation> {
        let bytes = tokens.saturating_mul(self.bytes_per_token);
        let mut current = self.reserved.load(Ordering::Acquire);
        loop {
            let next = current.checked_add(bytes)?;
            if next > self.budget_bytes {
                return None;
            }
            match self.reserved.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    metrics::set_kv_reserved(next, self.budget_bytes);
                    return Some(KvReservation {
                        budget: Arc::clone(self),
                        bytes,
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Positions the whole budget holds: no single request can be longer.
    pub fn capacity_tokens(&self) -> usize {
        self.budget_bytes / self.bytes_per_token
    }

    /// Positions a request arriving now could reserve.
    pub fn free_tokens(&self) -> usize {
        self.budget_bytes
            .saturating_sub(self.reserved.load(Ordering::Acquire))
            / self.bytes_per_token
    }

    /// Reserved share of the budget, 0–1 (the `memory_pressure` routing signal).
    pub fn pressure(&self) -> f64 {
        if self.budget_bytes == 0 {
            return 1.0;
        }
        (self.reserved.load(Ordering::Acquire) as f64 / self.budget_bytes as f64).min(1.0)
    }

    pub fn budget_bytes(&self) -> usize {
        self.budget_bytes
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
    fn reservations_fit_the_budget_and_are_released_on_drop() {
        let budget = KvBudget::new(1000, 10);
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
