//! One reqwest connection pool per thread that calls an upstream.
//!
//! hyper drives each pooled connection from a task on the runtime that opened it, and
//! actix-web runs one single-threaded runtime per worker. With one pool shared by every
//! worker, a request on worker B often borrows a connection worker A opened: B hands the
//! request to A's task and A hands the answer back, two cross-thread wake-ups per request,
//! and whenever A is busy (or its vCPU is descheduled) B's upstream calls wait for it. A pool
//! per thread keeps each connection on the thread whose requests use it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's pools, by [`Connections::id`]; a handful at most (one per upstream).
    static POOLS: RefCell<Vec<(u64, reqwest::Client)>> = const { RefCell::new(Vec::new()) };
}

/// How to build an upstream's clients, and the pools built so far (one per thread).
pub(super) struct Connections {
    id: u64,
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    /// Built at startup, so a setting reqwest refuses fails there; also the fallback should a
    /// later build on some thread fail after all.
    first: reqwest::Client,
}

impl Connections {
    pub(super) fn new(
        connect_timeout: Duration,
        pool_idle_timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            connect_timeout,
            pool_idle_timeout,
            first: build(connect_timeout, pool_idle_timeout)?,
        })
    }

    /// The calling thread's client (cheap: a reference-counted handle).
    pub(super) fn client(&self) -> reqwest::Client {
        POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            if let Some((_, client)) = pools.iter().find(|(id, _)| *id == self.id) {
                return client.clone();
            }
            let client = match build(self.connect_timeout, self.pool_idle_timeout) {
                Ok(client) => client,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot build a per-thread upstream client; sharing the first one");
                    self.first.clone()
                }
            };
            pools.push((self.id, client.clone()));
            client
        })
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        // Other threads' pools for this upstream go when those threads end (actix workers end
        // with their server); this one's can go now.
        let _ = POOLS.try_with(|pools| pools.borrow_mut().retain(|(id, _)| *id != self.id));
    }
}

fn build(
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(pool_idle_timeout)
        .tcp_nodelay(true)
        // A redirected POST would be replayed as GET or to another host; treat as an error.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("edge-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_per_thread_and_upstream() {
        let a = Connections::new(Duration::from_secs(1), Duration::from_secs(5)).unwrap();
        let b = Connections::new(Duration::from_secs(1), Duration::from_secs(5)).unwrap();
        let count = || POOLS.with(|p| p.borrow().len());
        let before = count();
        let _ = a.client();
        let _ = a.client();
        assert_eq!(
            count(),
            before + 1,
            "a second call reuses this thread's pool"
        );
        let _ = b.client();
        assert_eq!(count(), before + 2, "each upstream has its own pool");
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ = a.client();
                assert_eq!(
                    POOLS.with(|p| p.borrow().len()),
                    1,
                    "a new thread builds its own"
                );
            });
        });
        drop(a);
        assert_eq!(
            count(),
            before + 1,
            "dropping an upstream frees this thread's pool"
        );
    }
}
