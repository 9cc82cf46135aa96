//! A fixed set of dedicated threads for a request's short CPU work (chat template rendering,
//! tokenization, signal scoring), fed through a bounded queue.
//!
//! Why not the async runtime's blocking pool: it grows a thread per concurrent task (hundreds
//! under a burst, each created and torn down), and its queue has no bound. Here the thread count
//! is fixed, the threads stay warm, and a full queue is refused at once — the caller answers 429
//! instead of letting the backlog grow.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use metrics::{counter, describe_counter, describe_gauge, gauge, Counter, Gauge, Unit};

/// Jobs waiting for a thread of the pool, by pool.
pub const CPU_POOL_QUEUE_DEPTH: &str = "edge_gateway_cpu_pool_queue_depth";
/// Jobs refused because the pool's queue was full, by pool.
pub const CPU_POOL_REJECTED_TOTAL: &str = "edge_gateway_cpu_pool_rejected_total";

/// Registers units and help text; call once after installing the recorder.
pub fn describe() {
    describe_gauge!(
        CPU_POOL_QUEUE_DEPTH,
        Unit::Count,
        "Jobs queued for a request CPU pool (template rendering, tokenization, scoring)"
    );
    describe_counter!(
        CPU_POOL_REJECTED_TOTAL,
        Unit::Count,
        "Jobs refused because a request CPU pool's queue was full"
    );
}

type Job = Box<dyn FnOnce() + Send>;

/// Why a job did not produce its value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuPoolError {
    #[error("the {0} pool's queue is full")]
    Busy(&'static str),
    #[error("a job on the {0} pool panicked")]
    Panicked(&'static str),
    #[error("the {0} pool has stopped")]
    Stopped(&'static str),
}

/// Handle to the pool; cheap to clone. The threads exit once every handle is dropped.
#[derive(Clone)]
pub struct CpuPool {
    name: &'static str,
    tx: Sender<Job>,
    /// Metric handles looked up once, not per job.
    queued: Gauge,
    rejected: Counter,
    threads: usize,
}

impl std::fmt::Debug for CpuPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuPool")
            .field("name", &self.name)
            .field("threads", &self.threads)
            .field("capacity", &self.tx.capacity())
            .finish_non_exhaustive()
    }
}

impl CpuPool {
    /// Starts `threads` threads named `<name>-<i>` behind a queue of `capacity` jobs.
    pub fn new(name: &'static str, threads: usize, capacity: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (tx, rx) = bounded::<Job>(capacity.max(1));
        let queued = gauge!(CPU_POOL_QUEUE_DEPTH, "pool" => name);
        for i in 0..threads {
            let rx: Receiver<Job> = rx.clone();
            let queued = queued.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    for job in rx {
                        queued.decrement(1.0);
                        job();
                    }
                })?;
        }
        Ok(Self {
            name,
            tx,
            queued,
            rejected: counter!(CPU_POOL_REJECTED_TOTAL, "pool" => name),
            threads,
        })
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on a pool thread and waits for its value without blocking the caller's
    /// executor. Refused at once when the queue is full. A panic in `f` is caught and reported;
    /// the thread keeps serving.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CpuPoolError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The waiter may have gone (client disconnected): nothing to do then.
            let _ = reply.send(catch_unwind(AssertUnwindSafe(f)));
        });
        // Counted before the send, so a thread that takes the job at once never shows -1.
        self.queued.increment(1.0);
        if let Err(e) = self.tx.try_send(job) {
            self.queued.decrement(1.0);
            return Err(match e {
                TrySendError::Full(_) => {
                    self.rejected.increment(1);
                    CpuPoolError::Busy(self.name)
                }
                TrySendError::Disconnected(_) => CpuPoolError::Stopped(self.name),
            });
        }
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_panic)) => Err(CpuPoolError::Panicked(self.name)),
            Err(_) => Err(CpuPoolError::Stopped(self.name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn runs_jobs_on_its_own_named_threads() {
        let pool = CpuPool::new("test-prep", 2, 8).expect("pool");
        let name = block_on(pool.run(|| std::thread::current().name().map(String::from)));
        let name = name.expect("job ran").expect("named thread");
        assert!(name.starts_with("test-prep-"), "{name}");
        assert_eq!(pool.threads(), 2);
    }

    #[test]
    fn a_full_queue_is_refused_at_once_and_then_drains() {
        let pool = CpuPool::new("test-full", 1, 1).expect("pool");
        // Hold the only thread so the next job waits in the queue.
        let started = Arc::new(Barrier::new(2));
        let (release, hold) = crossbeam_channel::bounded::<()>(0);
        let s = Arc::clone(&started);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let p = pool.clone();
            let busy = tokio::spawn(async move {
                p.run(move || {
                    s.wait();
                    let _ = hold.recv();
                    1
                })
                .await
            });
            // Let the spawned task submit its job, then wait until the thread runs it.
            tokio::task::yield_now().await;
            tokio::task::spawn_blocking({
                let started = Arc::clone(&started);
                move || started.wait()
            })
            .await
            .expect("barrier");
            let p = pool.clone();
            let queued = tokio::spawn(async move { p.run(|| 2).await });
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Thread busy, queue (capacity 1) holding `queued`: a third job is refused.
            assert_eq!(pool.run(|| 3).await, Err(CpuPoolError::Busy("test-full")));
            release.send(()).expect("release");
            assert_eq!(busy.await.expect("task"), Ok(1));
            assert_eq!(queued.await.expect("task"), Ok(2));
            // Drained: new work is accepted again.
            assert_eq!(pool.run(|| 4).await, Ok(4));
        });
    }

    #[test]
    fn a_panicking_job_is_reported_and_the_thread_survives() {
        let pool = CpuPool::new("test-panic", 1, 4).expect("pool");
        let r: Result<(), _> = block_on(pool.run(|| panic!("boom")));
        assert_eq!(r, Err(CpuPoolError::Panicked("test-panic")));
        assert_eq!(block_on(pool.run(|| 5)), Ok(5));
    }
}
