//! Tamper-evident audit log: routing decisions and model, prompt and policy changes appended as
//! a hash chain to segment files, written by one thread with group commit, optionally shipped
//! to a telemetry sink with the files as the buffer. `edge-gateway audit verify` checks it.

pub mod chain;
pub mod metrics_names;
pub mod segments;
pub mod sink;
pub mod writer;

use std::path::PathBuf;

pub use chain::ChainKey;
pub use segments::{verify_dir, AuditError, VerifyReport};
pub use sink::SinkSettings;
pub use writer::{AuditLog, AuditUnavailable};

/// Validated `audit` settings.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub dir: PathBuf,
    /// Records waiting for the writer before `record` refuses (bounded memory).
    pub queue_capacity: usize,
    /// A segment is closed and a new one started past this size.
    pub segment_max_bytes: u64,
    /// How long the writer gathers records after the first of a batch before one write and
    /// fsync for all of them (0 = commit whatever is queued at once).
    pub commit_interval: std::time::Duration,
    /// Refuse requests (503) when their decision cannot be queued for the log.
    pub fail_closed: bool,
    /// HMAC key of the chain (from the environment), if configured.
    pub key: Option<ChainKey>,
    pub sink: Option<SinkSettings>,
}

/// Opens the log and, when configured, starts shipping it to the sink.
pub fn start(settings: &AuditSettings) -> Result<AuditLog, AuditError> {
    let log = AuditLog::open(settings)?;
    if let Some(sink) = &settings.sink {
        sink::start(&log, sink.clone())?;
    }
    Ok(log)
}
