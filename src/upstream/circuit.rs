//! Per-upstream circuit breaker: after N consecutive failed attempts, reject calls without
//! touching the network for a while, then let one trial request decide whether to close again.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::config::CircuitSettings;

/// What the breaker currently does with a new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Requests flow.
    Closed,
    /// The open period is over: the next request is a trial (one at a time).
    HalfOpen,
    /// Requests are rejected until the open period ends.
    Open,
}

impl CircuitState {
    /// Gauge value exported as `edge_gateway_upstream_circuit_state`.
    pub fn gauge_value(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
        }
    }
}

/// Permission to send one attempt; report its outcome with [`CircuitBreaker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Circuit closed: an ordinary request.
    Normal,
    /// Circuit half-open: this request is the single trial.
    Trial,
}

/// The breaker refused the request; retry after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub retry_after: Duration,
}

#[derive(Debug)]
enum Inner {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

/// A breaker shared by every request to one upstream. The mutex is held only for a few field
/// updates, never across an await, so contention is negligible next to a network call.
#[derive(Debug)]
pub struct CircuitBreaker {
    settings: CircuitSettings,
    inner: Mutex<Inner>,
}

/// What [`CircuitBreaker::record`] changed, so the caller can update the state gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: CircuitState,
    pub to: CircuitState,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(settings: CircuitSettings) -> Self {
        Self {
            settings,
            inner: Mutex::new(Inner::Closed {
                consecutive_failures: 0,
            }),
        }
    }

    /// The state a request arriving now would meet.
    pub fn state(&self) -> CircuitState {
        self.state_at(Instant::now())
    }

    /// [`CircuitBreaker::state`] at a given instant.
    pub fn state_at(&self, now: Instant) -> CircuitState {
        match *self.lock() {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { until } if now < until => CircuitState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Admits or rejects one attempt.
    pub fn try_acquire(&self) -> Result<Admission, Rejected> {
        self.try_acquire_at(Instant::now())
    }

    /// [`CircuitBreaker::try_acquire`] at a given instant.
    pub fn try_acquire_at(&self, now: Instant) -> Result<Admission, Rejected> {
        let mut inner = self.lock();
        match *inner {
            Inner::Closed { .. } => Ok(Admission::Normal),
            Inner::Open { until } if now < until => Err(Rejected {
                retry_after: until - now,
            }),
            Inner::Open { .. }
            | Inner::HalfOpen {
                trial_in_flight: false,
            } => {
                *inner = Inner::HalfOpen {
                    trial_in_flight: true,
                };
                Ok(Admission::Trial)
            }
            // Another request is the trial; its outcome is known within one timeout.
            Inner::HalfOpen {
                trial_in_flight: true,
            } => Err(Rejected {
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    /// Reports the outcome of an admitted attempt. `failure` means an upstream fault (connect
    /// error, timeout, 5xx, broken stream); client errors count as success for the breaker.
    pub fn record(&self, admission: Admission, failure: bool) -> Option<Transition> {
        self.record_at(admission, failure, Instant::now())
    }

    /// [`CircuitBreaker::record`] at a given instant.
    pub fn record_at(
        &self,
        admission: Admission,
        failure: bool,
        now: Instant,
    ) -> Option<Transition> {
        let mut inner = self.lock();
        let from = public_state(&inner, now);
        let next = match (&*inner, admission, failure) {
            (Inner::Closed { .. }, _, false) => Inner::Closed {
                consecutive_failures: 0,
            },
            (
                Inner::Closed {
                    consecutive_failures,
                },
                _,
                true,
            ) => {
                let failures = consecutive_failures.saturating_add(1);
                if failures >= self.settings.failure_threshold {
                    self.open_until(now)
                } else {
                    Inner::Closed {
                        consecutive_failures: failures,
                    }
                }
            }
            (Inner::HalfOpen { .. }, Admission::Trial, false) => Inner::Closed {
                consecutive_failures: 0,
            },
            (Inner::HalfOpen { .. }, Admission::Trial, true) => self.open_until(now),
            // A request admitted while closed finished after the circuit had moved on; the
            // trial (or the open period) decides, not this late result.
            (Inner::HalfOpen { .. } | Inner::Open { .. }, Admission::Normal, _)
            | (Inner::Open { .. }, Admission::Trial, _) => return None,
        };
        *inner = next;
        let to = public_state(&inner, now);
        (from != to).then_some(Transition { from, to })
    }

    /// A trial that ended without an outcome (the caller went away): let the next request try.
    pub fn abandon_trial(&self) {
        let mut inner = self.lock();
        if let Inner::HalfOpen {
            trial_in_flight: true,
        } = *inner
        {
            *inner = Inner::HalfOpen {
                trial_in_flight: false,
            };
        }
    }

    fn open_until(&self, now: Instant) -> Inner {
        Inner::Open {
            until: now + self.settings.open,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state is valid after any panic (each update is one assignment), so poison is moot.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn public_state(inner: &Inner, now: Instant) -> CircuitState {
    match inner {
        Inner::Closed { .. } => CircuitState::Closed,
        Inner::Open { until } if now < *until => CircuitState::Open,
        Inner::Open { .. } | Inner::HalfOpen { .. } => CircuitState::HalfOpen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, open_ms: u64) -> CircuitBreaker {
        CircuitBreaker::new(CircuitSettings {
            failure_threshold: threshold,
            open: Duration::from_millis(open_ms),
        })
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let b = breaker(3, 1000);
        let t0 = Instant::now();
        for _ in 0..2 {
            let a = b.try_acquire_at(t0).expect("closed");
            assert_eq!(b.record_at(a, true, t0), None);
        }
        let a = b.try_acquire_at(t0).expect("closed");
        let t = b.record_at(a, true, t0).expect("transition");
        assert_eq!((t.from, t.to), (CircuitState::Closed, CircuitState::Open));
        let rejected = b.try_acquire_at(t0).expect_err("open");
        assert_eq!(rejected.retry_after, Duration::from_millis(1000));
    }

    #[test]
    fn success_resets_the_failure_count() {
        let b = breaker(2, 1000);
        let t0 = Instant::now();
        b.record_at(Admission::Normal, true, t0);
        b.record_at(Admission::Normal, false, t0);
        b.record_at(Admission::Normal, true, t0);
        assert_eq!(b.state_at(t0), CircuitState::Closed);
    }

    #[test]
    fn half_open_admits_exactly_one_trial() {
        let b = breaker(1, 100);
        let t0 = Instant::now();
        b.record_at(Admission::Normal, true, t0);
        let later = t0 + Duration::from_millis(100);
        assert_eq!(b.state_at(later), CircuitState::HalfOpen);
        assert_eq!(b.try_acquire_at(later), Ok(Admission::Trial));
        assert!(b.try_acquire_at(later).is_err(), "second caller waits");
        let t = b.record_at(Admission::Trial, false, later).expect("closes");
        assert_eq!(t.to, CircuitState::Closed);
        assert_eq!(b.try_acquire_at(later), Ok(Admission::Normal));
    }

    #[test]
    fn failed_trial_reopens_for_a_full_period() {
        let b = breaker(1, 100);
        let t0 = Instant::now();
        b.record_at(Admission::Normal, true, t0);
        let t1 = t0 + Duration::from_millis(150);
        let trial = b.try_acquire_at(t1).expect("trial");
        let t = b.record_at(trial, true, t1).expect("reopens");
        assert_eq!(t.to, CircuitState::Open);
        assert_eq!(
            b.try_acquire_at(t1 + Duration::from_millis(50))
                .expect_err("open")
                .retry_after,
            Duration::from_millis(50)
        );
    }

    #[test]
    fn abandoned_trial_lets_the_next_request_try() {
        let b = breaker(1, 10);
        let t0 = Instant::now();
        b.record_at(Admission::Normal, true, t0);
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(b.try_acquire_at(t1), Ok(Admission::Trial));
        b.abandon_trial();
        assert_eq!(b.try_acquire_at(t1), Ok(Admission::Trial));
    }

    #[test]
    fn late_results_of_normal_requests_do_not_override_the_trial() {
        let b = breaker(1, 10);
        let t0 = Instant::now();
        b.record_at(Admission::Normal, true, t0);
        assert_eq!(b.record_at(Admission::Normal, false, t0), None);
        assert_eq!(b.state_at(t0), CircuitState::Open);
    }

    #[test]
    fn gauge_values_follow_the_documented_encoding() {
        assert_eq!(CircuitState::Closed.gauge_value(), 0.0);
        assert_eq!(CircuitState::HalfOpen.gauge_value(), 1.0);
        assert_eq!(CircuitState::Open.gauge_value(), 2.0);
    }
}
