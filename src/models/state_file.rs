//! Persists which package each served model runs (stable, candidate with its share, previous),
//! so a promotion or rollback survives a restart. Entries are tied to the `model.path` the
//! config named when they were written: a deployment that changes the config path starts from
//! the config again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::governance::files::write_atomic;
use crate::governance::GovernanceError;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelStateFile {
    pub models: BTreeMap<String, SlotRecord>,
}

/// One served model's versions, as package paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotRecord {
    /// `model.path` (or `models[].path`) from the config this record was written under.
    pub config_path: PathBuf,
    pub stable: PathBuf,
    #[serde(default)]
    pub candidate: Option<CandidateRecord>,
    #[serde(default)]
    pub previous: Option<PathBuf>,
}

/// A candidate and its canary share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateRecord {
    pub path: PathBuf,
    pub percent: u8,
}

impl ModelStateFile {
    /// Reads `path`; a missing file is an empty state. A damaged file is logged and ignored
    /// (the config then decides), never a reason not to start.
    pub fn read(path: &Path) -> Self {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::error!(file = %path.display(), error = %e, "model state file unreadable; starting from the configuration");
                Self::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "model state file unreadable; starting from the configuration");
                Self::default()
            }
        }
    }

    /// Writes the file atomically (creating its directory).
    pub fn write(&self, path: &Path) -> Result<(), GovernanceError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| GovernanceError::io(dir, e))?;
        }
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        write_atomic(path, &bytes)
    }
}
