//! Per-key rate limit: GCRA (the generic cell rate algorithm, a token bucket kept as one
//! timestamp). One atomic per key, O(1) and allocation-free per request.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

const NANOS_PER_MINUTE: u64 = 60_000_000_000;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A limit of `n` requests per minute with a burst of `n`: a key idle for a minute may send `n`
/// at once, then one every `60/n` seconds.
///
/// State is the theoretical arrival time (TAT) of the next request at the steady rate, in
/// nanoseconds since the owner's epoch. A request at `now` is allowed when
/// `now >= TAT - tolerance`, and pushes TAT to `max(TAT, now) + interval`.
#[derive(Debug)]
pub struct Gcra {
    /// Time one request "costs": 60 s / n.
    interval_ns: u64,
    /// How far ahead of `now` TAT may run: `(n - 1)` intervals, i.e. the burst.
    tolerance_ns: u64,
    tat_ns: AtomicU64,
}

impl Gcra {
    /// `per_minute` requests per minute, burst of the same size.
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        let n = u64::from(per_minute.get());
        let interval_ns = (NANOS_PER_MINUTE / n).max(1);
        Self {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(n - 1),
            tat_ns: AtomicU64::new(0),
        }
    }

    /// Takes one request at `now_ns` (nanoseconds since the epoch the caller keeps), or returns
    /// how many nanoseconds to wait until one would be allowed.
    pub fn check(&self, now_ns: u64) -> Result<(), u64> {
        let mut tat = self.tat_ns.load(Ordering::Acquire);
        loop {
            let allowed_from = tat.saturating_sub(self.tolerance_ns);
            if now_ns < allowed_from {
                return Err(allowed_from - now_ns);
            }
            let next = tat.max(now_ns).saturating_add(self.interval_ns);
            // Lock-free: concurrent requests of one key retry with the fresher TAT instead of
            // queueing on a mutex.
            match self
                .tat_ns
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }
}

/// A wait in nanoseconds as `Retry-After` seconds: rounded up (retrying earlier would fail
/// again) and at least 1.
pub fn retry_after_secs(wait_ns: u64) -> u64 {
    wait_ns.div_ceil(NANOS_PER_SEC).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = NANOS_PER_SEC;

    fn limit(n: u32) -> Gcra {
        Gcra::per_minute(NonZeroU32::new(n).expect("non-zero"))
    }

    #[test]
    fn burst_of_n_then_refused() {
        let g = limit(5);
        for i in 0..5 {
            assert!(g.check(0).is_ok(), "request {i}");
        }
        let wait = g.check(0).expect_err("sixth in the same instant");
        assert_eq!(wait, 12 * SEC, "one interval of 60/5 s");
        assert_eq!(retry_after_secs(wait), 12);
    }

    #[test]
    fn refills_at_the_steady_rate() {
        let g = limit(60);
        for _ in 0..60 {
            g.check(0).expect("burst");
        }
        assert!(g.check(SEC / 2).is_err(), "half an interval later");
        assert!(g.check(SEC).is_ok(), "one interval later");
        assert!(g.check(SEC).is_err(), "only one refilled");
        assert!(g.check(61 * SEC).is_ok());
    }

    #[test]
    fn idle_key_gets_its_full_burst_back_but_no_more() {
        let g = limit(3);
        for _ in 0..3 {
            g.check(0).expect("burst");
        }
        let later = 10 * 60 * SEC;
        for _ in 0..3 {
            g.check(later).expect("burst after idling");
        }
        assert!(g.check(later).is_err(), "idling does not bank extra");
    }

    #[test]
    fn one_per_minute_waits_a_minute() {
        let g = limit(1);
        g.check(5 * SEC).expect("first");
        let wait = g.check(5 * SEC).expect_err("second");
        assert_eq!(retry_after_secs(wait), 60);
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(SEC), 1);
        assert_eq!(retry_after_secs(SEC + 1), 2);
        assert_eq!(retry_after_secs(0), 1);
    }

    #[test]
    fn concurrent_requests_never_exceed_the_burst() {
        let g = std::sync::Arc::new(limit(100));
        let allowed: usize = (0..4)
            .map(|_| {
                let g = std::sync::Arc::clone(&g);
                std::thread::spawn(move || (0..100).filter(|_| g.check(0).is_ok()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .sum();
        assert_eq!(allowed, 100);
    }
}
