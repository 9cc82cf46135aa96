//! The audit writer: requests hand records to a bounded queue and move on; one thread assigns
//! sequence numbers, chains and appends them, and fsyncs each batch (group commit), so the
//! request path never waits for the disk. A write that fails (disk full, read-only) keeps the
//! batch in memory and retries; the queue then fills and, with `fail_closed`, new requests are
//! refused rather than served unaudited.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use serde_json::Value;

use super::chain::{self, ChainKey};
use super::metrics_names as m;
use super::segments::{self, io_err, AuditError, ChainHead};
use super::AuditSettings;

/// Most records written by one `write` + fsync.
const MAX_BATCH: usize = 4096;
/// Retry delay after a failed write, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The record could not be queued: the writer is behind (disk trouble) and the queue is full.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the audit log cannot accept records now (its queue is full; see edge_gateway_audit_write_errors_total)")]
pub struct AuditUnavailable;

struct Entry {
    at: SystemTime,
    kind: &'static str,
    data: Value,
}

/// Where committed (fsynced) records end; the sink ships up to here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Committed {
    pub segment: u64,
    pub len: u64,
    pub seq: u64,
}

pub(super) struct Shared {
    pub(super) committed: Mutex<Committed>,
    pub(super) committed_seq: AtomicU64,
    pub(super) healthy: AtomicBool,
}

/// Handle to the audit log; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: Sender<Entry>,
    fail_closed: bool,
    pub(super) shared: Arc<Shared>,
    pub(super) dir: PathBuf,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or creates) the log in `settings.dir`: repairs a last line cut short by a crash,
    /// verifies the open segment's chain, and starts the writer thread.
    pub fn open(settings: &AuditSettings) -> Result<Self, AuditError> {
        std::fs::create_dir_all(&settings.dir).map_err(|e| io_err(&settings.dir, e))?;
        // One writer per directory: a second gateway appending to the same chain would fork it.
        let lock_path = settings.dir.join(".lock");
        let lock = open_append(&lock_path)?;
        lock.try_lock().map_err(|e| {
            AuditError::Invalid(
                settings.dir.clone(),
                format!(
                    "in use by another gateway process ({e}); give each process its own audit.dir"
                ),
            )
        })?;
        let (segment, head, len) = recover(&settings.dir, settings.key.as_ref())?;
        let file = open_append(&segments::segment_path(&settings.dir, segment))?;
        let shared = Arc::new(Shared {
            committed: Mutex::new(Committed {
                segment,
                len,
                seq: head.seq,
            }),
            committed_seq: AtomicU64::new(head.seq),
            healthy: AtomicBool::new(true),
        });
        metrics::gauge!(m::AUDIT_COMMITTED_SEQ).set(head.seq as f64);
        metrics::gauge!(m::AUDIT_HEALTHY).set(1.0);
        let (tx, rx) = bounded(settings.queue_capacity);
        let writer = Writer {
            dir: settings.dir.clone(),
            key: settings.key.clone(),
            segment_max_bytes: settings.segment_max_bytes,
            commit_interval: settings.commit_interval,
            segment,
            file,
            len,
            head,
            shared: Arc::clone(&shared),
            _lock: lock,
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| io_err(&settings.dir, e))?;
        Ok(Self {
            tx,
            fail_closed: settings.fail_closed,
            shared,
            dir: settings.dir.clone(),
        })
    }

    /// Queues a record without waiting for the disk. With `fail_closed`, a full queue is an
    /// error the caller must refuse the request for; otherwise the record is counted as
    /// dropped and `Ok` returned.
    pub fn record(&self, kind: &'static str, data: Value) -> Result<(), AuditUnavailable> {
        let entry = Entry {
            at: SystemTime::now(),
            kind,
            data,
        };
        match self.tx.try_send(entry) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                metrics::counter!(m::AUDIT_REJECTED_TOTAL, "kind" => kind).increment(1);
                if self.fail_closed {
                    Err(AuditUnavailable)
                } else {
                    tracing::error!(
                        kind,
                        "audit queue full; record dropped (audit.fail_closed is false)"
                    );
                    Ok(())
                }
            }
        }
    }

    /// Seq of the last record known to be on disk.
    pub fn committed_seq(&self) -> u64 {
        self.shared.committed_seq.load(Ordering::Acquire)
    }

    /// False while writes are failing.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn committed(&self) -> Committed {
        self.shared
            .committed
            .lock()
            .map_or_else(|p| *p.into_inner(), |c| *c)
    }
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_err(path, e))
}

/// Finds the open segment, drops an incomplete last line and verifies that segment's chain
/// from the head of the one before. Returns (segment, head, committed length).
fn recover(dir: &Path, key: Option<&ChainKey>) -> Result<(u64, ChainHead, u64), AuditError> {
    let list = segments::list_segments(dir)?;
    let Some(&last) = list.last() else {
        return Ok((1, ChainHead::genesis(), 0));
    };
    let mut from = ChainHead::genesis();
    // The previous non-empty segment's last record anchors the open one.
    for n in list.iter().rev().skip(1) {
        if let Some(h) = segments::last_head(&segments::segment_path(dir, *n))? {
            from = h;
            break;
        }
    }
    let path = segments::segment_path(dir, last);
    let scan = segments::scan_segment(&path, key, &from)?;
    if scan.complete_len < scan.total_len {
        let cut = scan.total_len - scan.complete_len;
        tracing::warn!(file = %path.display(), bytes = cut, "audit log: dropping a last line cut short by a crash");
        metrics::counter!(m::AUDIT_REPAIRS_TOTAL).increment(1);
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        f.set_len(scan.complete_len).map_err(|e| io_err(&path, e))?;
        f.sync_all().map_err(|e| io_err(&path, e))?;
    }
    Ok((last, scan.head, scan.complete_len))
}

struct Writer {
    dir: PathBuf,
    key: Option<ChainKey>,
    segment_max_bytes: u64,
    commit_interval: Duration,
    segment: u64,
    file: File,
    len: u64,
    head: ChainHead,
    shared: Arc<Shared>,
    /// Held (locked) for the life of the writer.
    _lock: File,
}

impl Writer {
    fn run(mut self, rx: &Receiver<Entry>) {
        let mut pending: Vec<u8> = Vec::new();
        let mut pending_head = self.head.clone();
        let mut backoff = FIRST_BACKOFF;
        loop {
            if pending.is_empty() {
                let Ok(first) = rx.recv() else { return };
                // Group commit: what arrives within the interval joins this batch, one fsync
                // for all of it. Requests never wait for the fsync, so the interval costs them
                // nothing, while at a thousand decisions a second it saves most fsyncs (each
                // is a disk flush and kernel work on a core the requests need).
                // Sleeping through the interval, rather than waiting on the queue, matters as
                // much: a sender that finds the writer waiting must wake it, a syscall and
                // often a cross-CPU interrupt on the request's own path, once per record.
                std::thread::sleep(self.commit_interval);
                self.encode(&mut pending, &mut pending_head, first);
                for entry in rx.try_iter().take(MAX_BATCH - 1) {
                    self.encode(&mut pending, &mut pending_head, entry);
                }
            } else {
                // A failed batch is retried as is; new records wait in the bounded queue, so
                // memory stays bounded by the queue plus one batch.
                std::thread::sleep(backoff);
            }

            match self.commit(&pending) {
                Ok(()) => {
                    self.head = pending_head.clone();
                    pending.clear();
                    backoff = FIRST_BACKOFF;
                    self.publish();
                    if !self.shared.healthy.swap(true, Ordering::AcqRel) {
                        tracing::info!(dir = %self.dir.display(), "audit log writable again");
                        metrics::gauge!(m::AUDIT_HEALTHY).set(1.0);
                    }
                    if self.len >= self.segment_max_bytes {
                        if let Err(e) = self.rotate() {
                            tracing::error!(error = %e, "audit log: cannot start a new segment; continuing in the current one");
                        }
                    }
                }
                Err(e) => {
                    metrics::counter!(m::AUDIT_WRITE_ERRORS_TOTAL).increment(1);
                    if self.shared.healthy.swap(false, Ordering::AcqRel) {
                        metrics::gauge!(m::AUDIT_HEALTHY).set(0.0);
                    }
                    tracing::error!(error = %e, dir = %self.dir.display(), retry_in_ms = backoff.as_millis() as u64, "audit log write failed; records kept in memory and retried");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Chains `entry` after `head` and appends its line to `batch`.
    fn encode(&self, batch: &mut Vec<u8>, head: &mut ChainHead, entry: Entry) {
        let ts = humantime::format_rfc3339_millis(entry.at).to_string();
        let seq = head.seq + 1;
        let (line, hash) = chain::encode(
            self.key.as_ref(),
            seq,
            &ts,
            entry.kind,
            &entry.data,
            &head.hash,
        );
        batch.extend_from_slice(&line);
        *head = ChainHead { seq, hash };
        metrics::counter!(m::AUDIT_RECORDS_TOTAL, "kind" => entry.kind).increment(1);
    }

    /// Appends `bytes` and fsyncs. On failure the file is cut back to the last committed
    /// length, so a partial write never stays in the chain.
    fn commit(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let result = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    fn publish(&self) {
        let c = Committed {
            segment: self.segment,
            len: self.len,
            seq: self.head.seq,
        };
        if let Ok(mut guard) = self.shared.committed.lock() {
            *guard = c;
        }
        self.shared
            .committed_seq
            .store(self.head.seq, Ordering::Release);
        metrics::gauge!(m::AUDIT_COMMITTED_SEQ).set(self.head.seq as f64);
    }

    fn rotate(&mut self) -> Result<(), AuditError> {
        let next = self.segment + 1;
        let path = segments::segment_path(&self.dir, next);
        let file = open_append(&path)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(&self.dir, e))?;
        self.file = file;
        self.segment = next;
        self.len = 0;
        self.publish();
        Ok(())
    }
}
