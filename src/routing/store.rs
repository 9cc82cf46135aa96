//! Hot reload of the active policy: [`PolicyStore`] holds the current [`PolicySet`] behind an
//! `ArcSwap` (requests read it without locking), `reload` swaps in a new one only if it
//! compiles, and [`PolicyWatcher`] polls the file and reloads on change.
//!
//! Polling rather than filesystem notifications: it works the same on every filesystem,
//! including the bind mounts and ConfigMap symlink swaps of container deployments where
//! inotify events are unreliable, and a policy file is small enough to hash every tick.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::compile::version_of;
use super::error::PolicyError;
use super::metrics_names::{record_reload, OUTCOME_FAILED, OUTCOME_OK};
use super::policy::{Decision, PolicySet};
use super::signals::Signals;

/// Reload attempts since the store was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadCounts {
    pub ok: u64,
    pub failed: u64,
}

/// The active policy and how to reload it.
#[derive(Debug)]
pub struct PolicyStore {
    path: PathBuf,
    upstreams: Vec<String>,
    current: ArcSwap<PolicySet>,
    /// Serializes reloads so two at once (watcher and an admin call) cannot install an older
    /// file's policy after a newer one.
    reload_lock: Mutex<()>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// Where policy changes are recorded, once the gateway has opened its audit log.
    audit: std::sync::OnceLock<crate::governance::audit::AuditLog>,
}

impl PolicyStore {
    /// Records every later policy change (by the watcher or an admin call) in `audit`.
    pub fn set_audit(&self, audit: crate::governance::audit::AuditLog) {
        let _ = self.audit.set(audit);
    }

    fn audit_change(&self, record: serde_json::Value) {
        if let Some(audit) = self.audit.get() {
            if audit.record("policy_change", record).is_err() {
                tracing::error!("audit log full; policy change not recorded there");
            }
        }
    }

    /// Loads the policy at `path`; a gateway should not start with a broken policy, so this
    /// fails where a later [`PolicyStore::reload`] would keep the old one. Warnings are logged.
    pub fn load(path: &Path, upstreams: &[String]) -> Result<PolicyStore, PolicyError> {
        let policy = PolicySet::load(path, upstreams)?;
        log_loaded(&policy, None);
        Ok(PolicyStore {
            path: path.to_path_buf(),
            upstreams: upstreams.to_vec(),
            current: ArcSwap::from_pointee(policy),
            reload_lock: Mutex::new(()),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            audit: std::sync::OnceLock::new(),
        })
    }

    /// The policy file this store reloads from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The active policy.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// The active policy's version.
    pub fn version(&self) -> String {
        self.current.load().version.clone()
    }

    /// Evaluates the active policy; lock-free, no reference-count traffic.
    pub fn decide(&self, signals: &Signals) -> Decision {
        self.current.load().decide(signals)
    }

    /// Re-reads and recompiles the policy file. On success the new policy is active and its
    /// version returned (an unchanged file keeps the same policy); on failure the previous
    /// policy stays active and the error says why. Counts
    /// `edge_gateway_policy_reloads_total{outcome}` either way.
    pub fn reload(&self) -> Result<String, PolicyError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(source) => {
                let err = PolicyError::Read {
                    path: self.path.clone(),
                    source,
                };
                self.record_failure(&err);
                return Err(err);
            }
        };
        self.apply(&bytes)
    }

    /// Compiles `bytes` (the file's current content) and installs it if it compiles.
    fn apply(&self, bytes: &[u8]) -> Result<String, PolicyError> {
        let _guard = self
            .reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old = self.current.load_full();
        if version_of(bytes) == old.version {
            self.reloads_ok.fetch_add(1, Ordering::Relaxed);
            record_reload(OUTCOME_OK);
            return Ok(old.version.clone());
        }
        match PolicySet::compile(&self.path, bytes, &self.upstreams) {
            Ok(policy) => {
                log_loaded(&policy, Some(&old.version));
                let version = policy.version.clone();
                self.audit_change(serde_json::json!({
                    "operation": "reload",
                    "outcome": "ok",
                    "path": self.path.display().to_string(),
                    "version": version,
                    "previous": old.version,
                }));
                self.current.store(Arc::new(policy));
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                record_reload(OUTCOME_OK);
                Ok(version)
            }
            Err(err) => {
                self.record_failure(&err);
                Err(err)
            }
        }
    }

    fn record_failure(&self, err: &PolicyError) {
        self.audit_change(serde_json::json!({
            "operation": "reload",
            "outcome": "failed",
            "path": self.path.display().to_string(),
            "version": self.current.load().version,
            "error": err.to_string(),
        }));
        self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        record_reload(OUTCOME_FAILED);
        tracing::warn!(
            path = %self.path.display(),
            version = %self.current.load().version,
            error = %err,
            "policy reload failed; keeping the previous policy"
        );
    }

    /// Reload attempts so far, by outcome.
    pub fn reload_counts(&self) -> ReloadCounts {
        ReloadCounts {
            ok: self.reloads_ok.load(Ordering::Relaxed),
            failed: self.reloads_failed.load(Ordering::Relaxed),
        }
    }

    /// Starts a thread that checks the policy file every `interval` and reloads it when its
    /// content has changed and stayed the same for one interval (so a half-written file is not
    /// tried). Content is tried once: a broken file is reported once, not every tick. Stops
    /// when the returned handle drops.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> Result<PolicyWatcher, PolicyError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let store = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("policy-watcher".into())
            .spawn(move || store.poll(interval, &stopped))
            .map_err(PolicyError::Watcher)?;
        Ok(PolicyWatcher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn poll(&self, interval: Duration, stopped: &mpsc::Receiver<()>) {
        let mut last_seen = self.version();
        // Content seen once but not yet applied: a change is applied only when two consecutive
        // polls read the same bytes, so a file caught halfway through being written is not
        // reported (and counted) as a failed reload.
        let mut pending: Option<String> = None;
        let mut unreadable = false;
        // The sender never sends: dropping it (the watcher handle) disconnects and stops us.
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
            let bytes = match std::fs::read(&self.path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    // Editors and ConfigMap updates replace files by rename, so a read can miss
                    // the file for an instant: log once, keep the policy, do not count.
                    if !unreadable {
                        tracing::warn!(path = %self.path.display(), error = %e, "policy file unreadable; keeping the current policy");
                        unreadable = true;
                    }
                    continue;
                }
            };
            unreadable = false;
            let version = version_of(&bytes);
            if version == last_seen {
                pending = None;
                continue;
            }
            if pending.as_deref() != Some(version.as_str()) {
                pending = Some(version);
                continue;
            }
            pending = None;
            last_seen = version;
            if last_seen == self.current.load().version {
                continue;
            }
            // Success and failure are logged and counted inside.
            let _ = self.apply(&bytes);
        }
    }
}

fn log_loaded(policy: &PolicySet, previous: Option<&str>) {
    for w in &policy.warnings {
        tracing::warn!(warning = %w, "policy warning");
    }
    tracing::info!(
        path = %policy.source_path.display(),
        version = %policy.version,
        previous = previous.unwrap_or("none"),
        rules = policy.rule_ids().count(),
        "routing policy loaded"
    );
}

/// Handle of the polling thread started by [`PolicyStore::watch`]; dropping it stops the thread
/// (at once, not after the current interval) and waits for it.
#[derive(Debug)]
pub struct PolicyWatcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A panic in the watcher has already been reported by the panic hook.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_policy(name: &str, content: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("edge-gateway-store-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("policy.yaml");
        std::fs::write(&path, content).expect("write policy");
        path
    }

    const V1: &str = "rules: []\ndefault: edge\n";
    const V2: &str = "rules: []\ndefault: human_review\n";

    #[test]
    fn reload_keeps_the_old_policy_when_the_new_one_is_broken() {
        let path = temp_policy("unit-reload", V1);
        let store = PolicyStore::load(&path, &[]).expect("loads");
        let v1 = store.version();

        std::fs::write(&path, "rules: [\n").expect("write");
        let err = store.reload().expect_err("broken");
        assert!(err.to_string().contains("YAML syntax"), "{err}");
        assert_eq!(store.version(), v1);
        assert_eq!(store.reload_counts(), ReloadCounts { ok: 0, failed: 1 });

        std::fs::write(&path, V2).expect("write");
        let v2 = store.reload().expect("valid");
        assert_ne!(v2, v1);
        assert_eq!(store.version(), v2);
        assert_eq!(store.reload_counts(), ReloadCounts { ok: 1, failed: 1 });

        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(store.reload(), Err(PolicyError::Read { .. })));
        assert_eq!(store.version(), v2);
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }
}
