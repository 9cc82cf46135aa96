//! Audit segment files on disk (`audit-00000001.jsonl`, …): listing, reading the chain back,
//! repairing a line cut short by a crash, and verifying a whole directory.

use std::path::{Path, PathBuf};

use super::chain::{self, ChainError, ChainKey, GENESIS};

/// Why the audit log cannot be opened or verified.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log {file}, line {line}: {error} (run `edge-gateway audit verify` and move the damaged file aside after keeping a copy)")]
    Broken {
        file: PathBuf,
        line: usize,
        error: ChainError,
    },
    #[error("audit log {0}: {1}")]
    Invalid(PathBuf, String),
}

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> AuditError {
    AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Path of segment `n` in `dir`.
pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("audit-{n:08}.jsonl"))
}

/// Segment numbers present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, AuditError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix("audit-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push(n);
    }
    out.sort_unstable();
    Ok(out)
}

/// Where the chain stands at the end of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Seq of the last record (0 before the first).
    pub seq: u64,
    pub hash: String,
}

impl ChainHead {
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.to_string(),
        }
    }
}

/// Result of reading one segment.
#[derive(Debug)]
pub struct SegmentScan {
    pub head: ChainHead,
    pub records: usize,
    /// Length of the complete lines; bytes after it belong to a line cut short by a crash.
    pub complete_len: u64,
    pub total_len: u64,
}

/// Verifies the records of segment `file`, which continue the chain from `from`.
pub fn scan_segment(
    file: &Path,
    key: Option<&ChainKey>,
    from: &ChainHead,
) -> Result<SegmentScan, AuditError> {
    let bytes = std::fs::read(file).map_err(|e| io_err(file, e))?;
    let complete_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut head = from.clone();
    let mut records = 0;
    let mut prev_seq = Some(from.seq);
    for (i, line) in bytes
        .get(..complete_len)
        .unwrap_or_default()
        .split(|&b| b == b'\n')
        .enumerate()
    {
        if line.is_empty() {
            continue;
        }
        let record = chain::check_line(key, line, prev_seq, &head.hash).map_err(|error| {
            AuditError::Broken {
                file: file.to_path_buf(),
                line: i + 1,
                error,
            }
        })?;
        prev_seq = Some(record.seq);
        head = ChainHead {
            seq: record.seq,
            hash: record.hash,
        };
        records += 1;
    }
    Ok(SegmentScan {
        head,
        records,
        complete_len: complete_len as u64,
        total_len: bytes.len() as u64,
    })
}

/// The chain head at the end of segment `file`, read from its last line only (trusting the
/// segments before the one being opened, which `audit verify` checks in full).
pub fn last_head(file: &Path) -> Result<Option<ChainHead>, AuditError> {
    let bytes = std::fs::read(file).map_err(|e| io_err(file, e))?;
    let Some(line) = bytes
        .split(|&b| b == b'\n')
        .rev()
        .find(|l| !l.is_empty() && l.ends_with(b"}"))
    else {
        return Ok(None);
    };
    let record: chain::Record = serde_json::from_slice(line)
        .map_err(|e| AuditError::Invalid(file.to_path_buf(), format!("last record: {e}")))?;
    Ok(Some(ChainHead {
        seq: record.seq,
        hash: record.hash,
    }))
}

/// Summary of a verified audit directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: usize,
    pub records: usize,
    pub head: ChainHead,
    /// Bytes of a last line cut short by a crash (dropped at the next start), if any.
    pub incomplete_tail_bytes: u64,
}

/// Verifies every segment in `dir`, in order, as one chain.
pub fn verify_dir(dir: &Path, key: Option<&ChainKey>) -> Result<VerifyReport, AuditError> {
    let segments = list_segments(dir)?;
    if segments.is_empty() {
        return Err(AuditError::Invalid(
            dir.to_path_buf(),
            "no audit segments (audit-*.jsonl) found".into(),
        ));
    }
    let mut head = ChainHead::genesis();
    let mut records = 0;
    let mut tail = 0;
    for (i, n) in segments.iter().enumerate() {
        let file = segment_path(dir, *n);
        let scan = scan_segment(&file, key, &head)?;
        let incomplete = scan.total_len - scan.complete_len;
        if incomplete > 0 && i + 1 < segments.len() {
            return Err(AuditError::Invalid(
                file,
                format!("{incomplete} bytes of an incomplete line in a closed segment"),
            ));
        }
        tail = incomplete;
        records += scan.records;
        head = scan.head;
    }
    Ok(VerifyReport {
        segments: segments.len(),
        records,
        head,
        incomplete_tail_bytes: tail,
    })
}
