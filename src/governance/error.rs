//! Why a governance operation (manifest, signature, prompt, evaluation, audit) failed. Messages
//! name the file and, for a tampered package, the file whose digest differs.

use std::path::PathBuf;

/// A model package failed its manifest or signature checks, or a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GovernanceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("model package {dir} is not signed: {message} (governance.require_signed is true; sign it with `edge-gateway model sign --key KEY {dir}`)")]
    Unsigned { dir: PathBuf, message: String },
    #[error("{file}: sha256 differs from the package manifest (manifest {expected}, file {actual}); the package was modified after its manifest was written (sign it again, or restore the file)")]
    DigestMismatch {
        file: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{file}: size differs from the package manifest (manifest {expected} bytes, file {actual} bytes); the package was modified after its manifest was written (sign it again, or restore the file)")]
    SizeMismatch {
        file: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{file}: listed in the manifest but missing from the package")]
    MissingFile { file: PathBuf },
    #[error("{file}: not listed in the manifest (files added after signing are refused)")]
    UnlistedFile { file: PathBuf },
    #[error("{file}: {message}")]
    Signature { file: PathBuf, message: String },
    #[error("key {origin}: {message}")]
    Key { origin: String, message: String },
}

impl GovernanceError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn manifest(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Manifest {
            path: path.into(),
            message: message.into(),
        }
    }
}
