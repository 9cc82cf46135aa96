//! Why a review-store operation failed, and how each failure reaches an API client.

use rusqlite::ErrorCode;

use super::ReviewState;

/// `Retry-After` for 503s caused by storage trouble: an operator has to free disk or fix
/// permissions, so retrying within a second only adds load.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 10;

/// A failed review-store operation. Messages of storage variants carry SQLite's detail for the
/// log; [`ReviewError::openai_parts`] gives the sanitized client view.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The database could not be opened or prepared (at startup).
    #[error("review database {path}: {hint}: {source}")]
    Open {
        path: String,
        hint: &'static str,
        source: rusqlite::Error,
    },
    /// The directory of the database could not be created (at startup).
    #[error("review database {path}: cannot create its directory: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
    /// The database was written by a newer gateway.
    #[error(
        "review database {path}: schema version {found} is newer than this gateway supports \
         ({supported}); run a newer gateway or restore a backup"
    )]
    SchemaTooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    /// A read-only open found a database not yet migrated to this gateway's schema.
    #[error(
        "review database {path}: schema version {found} is older than this gateway's \
         ({supported}); start the gateway once to migrate it"
    )]
    SchemaTooOld {
        path: String,
        found: i64,
        supported: i64,
    },
    /// `PRAGMA quick_check` found damage.
    #[error("review database {path} is corrupt: {details}")]
    Corrupt { path: String, details: String },
    #[error("review {0} not found")]
    NotFound(String),
    /// The requested transition is not allowed from the review's current state.
    #[error("review {id} is {state}; it cannot be {action}")]
    Conflict {
        id: String,
        state: ReviewState,
        action: &'static str,
    },
    /// An argument the caller passed is unusable (empty reviewer, malformed route).
    #[error("{field}: {message}")]
    InvalidInput {
        field: &'static str,
        message: String,
    },
    /// Storage cannot take writes (or reads) right now: disk full, read-only file system or
    /// file, I/O error, lock held too long. Nothing was stored; the client should retry later.
    #[error("review storage unavailable: {0}")]
    Unavailable(#[source] rusqlite::Error),
    /// Any other database failure.
    #[error("review storage: {0}")]
    Storage(#[source] rusqlite::Error),
    /// A stored value does not decode (hand-edited or damaged row).
    #[error("review {id}: stored {column} is invalid: {message}")]
    Decode {
        id: String,
        column: &'static str,
        message: String,
    },
}

impl From<rusqlite::Error> for ReviewError {
    fn from(e: rusqlite::Error) -> Self {
        if is_unavailable(&e) {
            ReviewError::Unavailable(e)
        } else {
            ReviewError::Storage(e)
        }
    }
}

/// Failures caused by the environment (space, permissions, locks, I/O) rather than by the
/// request or the data: retrying after an operator fixes the cause can succeed.
fn is_unavailable(e: &rusqlite::Error) -> bool {
    // Corruption, constraint and misuse errors are left out: they do not go away on retry.
    matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DiskFull
                | ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::PermissionDenied
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::OutOfMemory
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::NoLargeFileSupport
        )
    )
}

/// A short explanation of an open failure, so the operator knows what to look at.
pub(crate) fn open_hint(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            "the file is corrupt or not a SQLite database"
        }
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => {
            "the file or its directory is not writable"
        }
        Some(ErrorCode::CannotOpen) => {
            "cannot open the file (check that the directory exists and is writable)"
        }
        Some(ErrorCode::DiskFull) => "the disk is full",
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "the database is locked by another process"
        }
        _ => "cannot open",
    }
}

impl ReviewError {
    /// `(status, type, code, message, retry_after_secs)` for the gateway's OpenAI error body.
    /// 5xx messages are generic; log the error itself (its `Display`) for the detail.
    pub fn openai_parts(&self) -> (u16, &'static str, &'static str, String, Option<u64>) {
        match self {
            ReviewError::NotFound(_) => (
                404,
                "invalid_request_error",
                "review_not_found",
                self.to_string(),
                None,
            ),
            ReviewError::Conflict { .. } => (
                409,
                "invalid_request_error",
                "review_state_conflict",
                self.to_string(),
                None,
            ),
            ReviewError::InvalidInput { .. } => (
                400,
                "invalid_request_error",
                "invalid_value",
                self.to_string(),
                None,
            ),
            ReviewError::Unavailable(_) => (
                503,
                "server_error",
                "review_store_unavailable",
                "the review queue cannot accept or change reviews right now; retry later".into(),
                Some(UNAVAILABLE_RETRY_AFTER_SECS),
            ),
            ReviewError::Open { .. }
            | ReviewError::Directory { .. }
            | ReviewError::SchemaTooNew { .. }
            | ReviewError::SchemaTooOld { .. }
            | ReviewError::Corrupt { .. }
            | ReviewError::Storage(_)
            | ReviewError::Decode { .. } => (
                500,
                "server_error",
                "internal_error",
                "internal error in the review queue".into(),
                None,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_error(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn environment_failures_map_to_503_with_retry_after() {
        for code in [
            rusqlite::ffi::SQLITE_FULL,
            rusqlite::ffi::SQLITE_READONLY,
            rusqlite::ffi::SQLITE_IOERR,
            rusqlite::ffi::SQLITE_BUSY,
        ] {
            let e = ReviewError::from(sqlite_error(code));
            let (status, kind, _, message, retry) = e.openai_parts();
            assert_eq!(status, 503, "{e}");
            assert_eq!(kind, "server_error");
            assert_eq!(retry, Some(UNAVAILABLE_RETRY_AFTER_SECS));
            assert!(!message.contains("SQLite"), "{message}");
        }
    }

    #[test]
    fn data_failures_map_to_500() {
        for code in [
            rusqlite::ffi::SQLITE_CONSTRAINT,
            rusqlite::ffi::SQLITE_CORRUPT,
        ] {
            let e = ReviewError::from(sqlite_error(code));
            assert!(matches!(e, ReviewError::Storage(_)), "{e}");
            assert_eq!(e.openai_parts().0, 500);
        }
    }

    #[test]
    fn client_errors_keep_their_message() {
        let e = ReviewError::Conflict {
            id: "rev_1".into(),
            state: ReviewState::Approved,
            action: "rejected",
        };
        let (status, _, code, message, retry) = e.openai_parts();
        assert_eq!((status, code, retry), (409, "review_state_conflict", None));
        assert_eq!(message, "review rev_1 is approved; it cannot be rejected");
        assert_eq!(ReviewError::NotFound("rev_2".into()).openai_parts().0, 404);
    }
}
