//! Ships committed audit records to a telemetry sink (HTTP POST of NDJSON batches). The segment
//! files are the buffer: while the sink is unreachable records stay on disk, and a cursor file
//! (replaced atomically after each acknowledged batch) says where shipping resumes after a
//! restart. Delivery is at least once; the sink deduplicates by `seq`.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::metrics_names as m;
use super::segments::{self, AuditError};
use super::writer::{AuditLog, Committed};
use crate::governance::files::write_atomic;

/// Cursor file name inside the audit directory.
pub const CURSOR_FILE: &str = "sink.cursor";
const IDLE_POLL: Duration = Duration::from_millis(200);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where and how records are shipped.
#[derive(Clone)]
pub struct SinkSettings {
    pub url: String,
    /// Bearer token for the sink (from the environment; never logged).
    pub token: Option<String>,
    pub batch_records: usize,
    pub timeout: Duration,
}

impl std::fmt::Debug for SinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSettings")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("batch_records", &self.batch_records)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Next record to ship: segment, byte offset in it, and seq of the last shipped record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cursor {
    pub segment: u64,
    pub offset: u64,
    pub shipped_seq: u64,
}

fn read_cursor(dir: &Path) -> Cursor {
    std::fs::read(dir.join(CURSOR_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Cursor {
            segment: 1,
            offset: 0,
            shipped_seq: 0,
        })
}

/// Starts the shipper thread for `log`.
pub fn start(log: &AuditLog, settings: SinkSettings) -> Result<(), AuditError> {
    let log = log.clone();
    let dir = log.dir().to_path_buf();
    let thread_dir = dir.clone();
    let client = reqwest::Client::builder()
        .timeout(settings.timeout)
        .build()
        .map_err(|e| AuditError::Invalid(dir.clone(), format!("sink client: {e}")))?;
    std::thread::Builder::new()
        .name("audit-sink".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                tracing::error!("audit sink: cannot start its runtime; records stay on disk");
                return;
            };
            rt.block_on(ship_forever(&log, &thread_dir, &client, &settings));
        })
        .map_err(|e| segments::io_err(&dir, e))?;
    Ok(())
}

async fn ship_forever(log: &AuditLog, dir: &Path, client: &reqwest::Client, s: &SinkSettings) {
    let mut cursor = read_cursor(dir);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let committed = log.committed();
        metrics::gauge!(m::AUDIT_SINK_LAG_RECORDS)
            .set(committed.seq.saturating_sub(cursor.shipped_seq) as f64);
        let batch = match next_batch(dir, &cursor, &committed, s.batch_records) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "audit sink: cannot read the log; retrying");
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
        };
        let Some(batch) = batch else {
            tokio::time::sleep(IDLE_POLL).await;
            continue;
        };
        if batch.body.is_empty() {
            // Reached the end of a closed segment: move on without sending anything.
            cursor = batch.next;
            persist(dir, &cursor);
            continue;
        }
        let mut request = client
            .post(&s.url)
            .header("content-type", "application/x-ndjson")
            .body(batch.body);
        if let Some(token) = &s.token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                cursor = batch.next;
                persist(dir, &cursor);
                metrics::gauge!(m::AUDIT_SINK_SHIPPED_SEQ).set(cursor.shipped_seq as f64);
                backoff = FIRST_BACKOFF;
            }
            outcome => {
                let why = match outcome {
                    Ok(r) => format!("HTTP {}", r.status()),
                    Err(e) => e.to_string(),
                };
                metrics::counter!(m::AUDIT_SINK_ERRORS_TOTAL).increment(1);
                tracing::warn!(error = %why, retry_in_ms = backoff.as_millis() as u64, "audit sink unreachable; records stay buffered on disk");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn persist(dir: &Path, cursor: &Cursor) {
    let bytes = serde_json::to_vec(cursor).unwrap_or_default();
    if let Err(e) = write_atomic(&dir.join(CURSOR_FILE), &bytes) {
        // Worst case the batch is shipped again after a restart: at least once, never lost.
        tracing::warn!(error = %e, "audit sink: cannot save the cursor");
    }
}

struct Batch {
    body: Vec<u8>,
    next: Cursor,
}

/// Up to `max` complete committed lines from the cursor; `None` when nothing new is committed.
fn next_batch(
    dir: &Path,
    cursor: &Cursor,
    committed: &Committed,
    max: usize,
) -> Result<Option<Batch>, AuditError> {
    let path: PathBuf = segments::segment_path(dir, cursor.segment);
    let end = if cursor.segment == committed.segment {
        committed.len
    } else if cursor.segment < committed.segment {
        std::fs::metadata(&path)
            .map_err(|e| segments::io_err(&path, e))?
            .len()
    } else {
        return Ok(None);
    };
    if cursor.offset >= end {
        if cursor.segment < committed.segment {
            return Ok(Some(Batch {
                body: Vec::new(),
                next: Cursor {
                    segment: cursor.segment + 1,
                    offset: 0,
                    shipped_seq: cursor.shipped_seq,
                },
            }));
        }
        return Ok(None);
    }
    let mut file = std::fs::File::open(&path).map_err(|e| segments::io_err(&path, e))?;
    file.seek(SeekFrom::Start(cursor.offset))
        .map_err(|e| segments::io_err(&path, e))?;
    let mut bytes = Vec::new();
    file.take(end - cursor.offset)
        .read_to_end(&mut bytes)
        .map_err(|e| segments::io_err(&path, e))?;
    let mut body_len = 0;
    let mut last_seq = cursor.shipped_seq;
    for line in bytes.split_inclusive(|&b| b == b'\n').take(max) {
        if !line.ends_with(b"\n") {
            break;
        }
        if let Ok(r) = serde_json::from_slice::<super::chain::Record>(line) {
            last_seq = r.seq;
        }
        body_len += line.len();
    }
    bytes.truncate(body_len);
    Ok(Some(Batch {
        body: bytes,
        next: Cursor {
            segment: cursor.segment,
            offset: cursor.offset + body_len as u64,
            shipped_seq: last_seq,
        },
    }))
}
