//! The durable review store: one SQLite table, versioned with `PRAGMA user_version`, behind a
//! mutex. Every method blocks (SQLite I/O and an fsync per write), so async callers go through
//! `web::block`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{
    named_params, params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior,
};

use super::error::open_hint;
use super::metrics_names::set_queue_depth;
use super::{ApprovedRoute, NewReview, Review, ReviewError, ReviewState};

/// Schema migrations, applied in order; `PRAGMA user_version` counts how many have run. Append
/// only: a shipped migration never changes.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE reviews (
    id TEXT PRIMARY KEY NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    state TEXT NOT NULL
        CHECK(state IN ('pending','approved','rejected','completed','failed')),
    endpoint TEXT NOT NULL,
    request_json TEXT NOT NULL,
    signals_json TEXT NOT NULL,
    rule_id TEXT,
    reviewer TEXT,
    decision_note TEXT,
    approved_route TEXT,
    result_json TEXT
);
-- Queue listings and the depth gauge filter on state; rowid (insertion order) rides along.
CREATE INDEX reviews_by_state ON reviews(state);
"#];

/// The schema version this gateway writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Most rows one [`ReviewStore::list`] returns, whatever the caller asks for.
pub const MAX_LIST_LIMIT: usize = 1000;

/// Longest reviewer name and decision note accepted, in characters.
const MAX_REVIEWER_CHARS: usize = 200;
const MAX_NOTE_CHARS: usize = 4000;

const COLUMNS: &str = "id, created_at, updated_at, state, endpoint, request_json, signals_json, \
                       rule_id, reviewer, decision_note, approved_route, result_json";

/// How the store opens its database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// How long a write waits for a lock held by another connection (a backup tool, the CLI)
    /// before failing as unavailable.
    pub busy_timeout: Duration,
    /// Upper bound on the database size. When reached, `submit` fails as unavailable (503),
    /// exactly as on a full disk, so a flood of reviewable requests cannot fill the volume
    /// the model cache and logs share. `None`: bounded only by the disk.
    pub max_db_bytes: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            max_db_bytes: None,
        }
    }
}

/// The durable human-review queue. `Send + Sync`; share it in an `Arc`.
pub struct ReviewStore {
    // One connection: writes are serialized anyway (SQLite has one writer) and this is not a
    // hot path, so a pool would add nothing but lock contention inside SQLite.
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl fmt::Debug for ReviewStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReviewStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What a transition writes besides the new state.
struct Change<'a> {
    from: ReviewState,
    to: ReviewState,
    /// Past participle for the conflict message ("approved", "rejected", ...).
    action: &'static str,
    reviewer: Option<&'a str>,
    note: Option<&'a str>,
    route: Option<String>,
    result: Option<String>,
}

impl ReviewStore {
    /// Opens (creating if needed, with its parent directory) the database at `path` with
    /// default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ReviewError> {
        Self::open_with(path, &StoreOptions::default())
    }

    /// Opens the database for reading and writing, applies pending migrations and checks it is
    /// intact. Every failure names the path.
    pub fn open_with(path: impl AsRef<Path>, options: &StoreOptions) -> Result<Self, ReviewError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        reject_non_durable(path)?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let created = !path.exists();
        std::fs::create_dir_all(dir).map_err(|source| ReviewError::Directory {
            path: shown.clone(),
            source,
        })?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn =
            Connection::open_with_flags(path, flags).map_err(|e| open_error(&shown, e))?;
        // SQLite silently falls back to read-only when the file is not writable; the first
        // write would then fail long after startup. Refuse now instead.
        if conn
            .is_readonly(rusqlite::MAIN_DB)
            .map_err(|e| open_error(&shown, e))?
        {
            return Err(open_error(
                &shown,
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                    Some("opened read-only".into()),
                ),
            ));
        }
        configure(&conn, options).map_err(|e| open_error(&shown, e))?;
        quick_check(&conn, &shown)?;
        migrate(&mut conn, &shown)?;
        if created {
            sync_directory(dir);
        }
        let store = Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        };
        publish_depth(&store.lock());
        Ok(store)
    }

    /// Opens an existing database without write access (inspection tools, backups). Every
    /// write fails as [`ReviewError::Unavailable`].
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self, ReviewError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        reject_non_durable(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(&shown, e))?;
        conn.busy_timeout(StoreOptions::default().busy_timeout)
            .map_err(|e| open_error(&shown, e))?;
        quick_check(&conn, &shown)?;
        let found = user_version(&conn).map_err(|e| open_error(&shown, e))?;
        if found > SCHEMA_VERSION {
            return Err(ReviewError::SchemaTooNew {
                path: shown,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            return Err(ReviewError::SchemaTooOld {
                path: shown,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores a new pending review. When this returns `Ok`, the review is on stable storage.
    pub fn submit(&self, new: NewReview) -> Result<Review, ReviewError> {
        let endpoint = new.endpoint.trim();
        if endpoint.is_empty() {
            return Err(ReviewError::InvalidInput {
                field: "endpoint",
                message: "must not be empty".into(),
            });
        }
        let id = format!("rev_{}", uuid::Uuid::new_v4().simple());
        let now = unix_now();
        let conn = self.lock();
        conn.prepare_cached(
            "INSERT INTO reviews \
             (id, created_at, updated_at, state, endpoint, request_json, signals_json, rule_id) \
             VALUES (?1, ?2, ?2, 'pending', ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            id,
            now,
            endpoint,
            new.request_json.to_string(),
            new.signals_json.to_string(),
            new.rule_id,
        ])?;
        publish_depth(&conn);
        drop(conn);
        Ok(Review {
            id,
            created_at: now,
            updated_at: now,
            state: ReviewState::Pending,
            endpoint: endpoint.to_owned(),
            request_json: new.request_json,
            signals_json: new.signals_json,
            rule_id: new.rule_id,
            reviewer: None,
            decision_note: None,
            approved_route: None,
            result_json: None,
        })
    }

    /// One review by id.
    pub fn get(&self, id: &str) -> Result<Review, ReviewError> {
        let conn = self.lock();
        let stored = conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM reviews WHERE id = ?1"))?
            .query_row([id], StoredRow::read)
            .optional()?;
        drop(conn);
        stored
            .ok_or_else(|| ReviewError::NotFound(id.to_owned()))?
            .decode()
    }

    /// Reviews in `state` (all when `None`), oldest first, at most `limit` (capped at
    /// [`MAX_LIST_LIMIT`]).
    pub fn list(
        &self,
        state: Option<ReviewState>,
        limit: usize,
    ) -> Result<Vec<Review>, ReviewError> {
        let limit = i64::try_from(limit.min(MAX_LIST_LIMIT)).unwrap_or(0);
        let conn = self.lock();
        let rows = match state {
            Some(state) => conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM reviews WHERE state = ?1 ORDER BY rowid LIMIT ?2"
                ))?
                .query_map(params![state.as_str(), limit], StoredRow::read)?
                .collect::<Result<Vec<_>, _>>()?,
            None => conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM reviews ORDER BY rowid LIMIT ?1"
                ))?
                .query_map([limit], StoredRow::read)?
                .collect::<Result<Vec<_>, _>>()?,
        };
        drop(conn);
        rows.into_iter().map(StoredRow::decode).collect()
    }

    /// Approves a pending review onto `route`. Any other state is a [`ReviewError::Conflict`].
    pub fn approve(
        &self,
        id: &str,
        reviewer: &str,
        route: &ApprovedRoute,
        note: Option<&str>,
    ) -> Result<Review, ReviewError> {
        self.transition(
            id,
            Change {
                from: ReviewState::Pending,
                to: ReviewState::Approved,
                action: "approved",
                reviewer: Some(check_reviewer(reviewer)?),
                note: check_note(note)?,
                route: Some(route.to_string()),
                result: None,
            },
        )
    }

    /// Rejects a pending review. Any other state is a [`ReviewError::Conflict`].
    pub fn reject(
        &self,
        id: &str,
        reviewer: &str,
        note: Option<&str>,
    ) -> Result<Review, ReviewError> {
        self.transition(
            id,
            Change {
                from: ReviewState::Pending,
                to: ReviewState::Rejected,
                action: "rejected",
                reviewer: Some(check_reviewer(reviewer)?),
                note: check_note(note)?,
                route: None,
                result: None,
            },
        )
    }

    /// Records the response of an approved review that has run.
    pub fn complete(
        &self,
        id: &str,
        result_json: &serde_json::Value,
    ) -> Result<Review, ReviewError> {
        self.transition(
            id,
            Change {
                from: ReviewState::Approved,
                to: ReviewState::Completed,
                action: "completed",
                reviewer: None,
                note: None,
                route: None,
                result: Some(result_json.to_string()),
            },
        )
    }

    /// Records that running an approved review failed; stored as `{"error": {"message": ..}}`.
    pub fn fail(&self, id: &str, message: &str) -> Result<Review, ReviewError> {
        let error = serde_json::json!({ "error": { "message": message } });
        self.transition(
            id,
            Change {
                from: ReviewState::Approved,
                to: ReviewState::Failed,
                action: "failed",
                reviewer: None,
                note: None,
                route: None,
                result: Some(error.to_string()),
            },
        )
    }

    /// Reviews waiting for a reviewer.
    pub fn pending_count(&self) -> Result<u64, ReviewError> {
        Ok(count_pending(&self.lock())?)
    }

    /// Runs SQLite's full `PRAGMA integrity_check` (reads the whole file: for a `check` command
    /// or after an incident, not for every startup).
    pub fn integrity_check(&self) -> Result<(), ReviewError> {
        let shown = self.path.display().to_string();
        run_check(&self.lock(), "integrity_check", &shown)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held cannot have left a half-applied change (each write is
        // one statement or a transaction that rolls back on drop), so a poisoned lock is safe
        // to keep using; refusing would take the review queue down for good.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves `id` from `change.from` to `change.to` atomically, or explains why not.
    fn transition(&self, id: &str, change: Change<'_>) -> Result<Review, ReviewError> {
        debug_assert!(change.from.can_become(change.to));
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The state guard in WHERE makes check-and-set one statement, so two reviewers racing
        // (or a second process on the same file) cannot both win.
        let updated = tx
            .prepare_cached(
                "UPDATE reviews SET state = :to, updated_at = :now, \
                 reviewer = COALESCE(:reviewer, reviewer), \
                 decision_note = COALESCE(:note, decision_note), \
                 approved_route = COALESCE(:route, approved_route), \
                 result_json = COALESCE(:result, result_json) \
                 WHERE id = :id AND state = :from",
            )?
            .execute(named_params! {
                ":to": change.to.as_str(),
                ":now": unix_now(),
                ":reviewer": change.reviewer,
                ":note": change.note,
                ":route": change.route,
                ":result": change.result,
                ":id": id,
                ":from": change.from.as_str(),
            })?;
        if updated == 0 {
            let current: Option<String> = tx
                .prepare_cached("SELECT state FROM reviews WHERE id = ?1")?
                .query_row([id], |row| row.get(0))
                .optional()?;
            let Some(current) = current else {
                return Err(ReviewError::NotFound(id.to_owned()));
            };
            return Err(ReviewError::Conflict {
                id: id.to_owned(),
                state: decode_state(id, &current)?,
                action: change.action,
            });
        }
        let stored = tx
            .prepare_cached(&format!("SELECT {COLUMNS} FROM reviews WHERE id = ?1"))?
            .query_row([id], StoredRow::read)?;
        // Commit explicitly: a failing commit (disk full, I/O error) must reach the caller, and
        // a dropped transaction would only roll back.
        tx.commit()?;
        if change.from == ReviewState::Pending {
            publish_depth(&conn);
        }
        drop(conn);
        stored.decode()
    }
}

/// SQLite reads `""` as a private temporary database and `":memory:"` as an in-memory one:
/// both vanish on close, which would silently lose every accepted review.
fn reject_non_durable(path: &Path) -> Result<(), ReviewError> {
    let text = path.as_os_str();
    if text.is_empty() || text == ":memory:" {
        return Err(ReviewError::InvalidInput {
            field: "review database path",
            message: format!(
                "'{}' is not a file; reviews must be stored durably",
                path.display()
            ),
        });
    }
    Ok(())
}

/// Makes a newly created database file's directory entry durable. SQLite syncs the directory
/// when it creates the WAL, but not for the main file, so a power cut right after the first
/// start could leave a WAL whose database file never appeared. Best effort: the data itself is
/// already synced, and a failure here is only worth a warning.
fn sync_directory(dir: &Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not sync the review database directory");
    }
}

/// Pragmas set on every read-write open.
fn configure(conn: &Connection, options: &StoreOptions) -> rusqlite::Result<()> {
    conn.busy_timeout(options.busy_timeout)?;
    // WAL: a commit is one sequential append (plus fsync) instead of the rollback journal's
    // several, and readers (admin listings) never block the writer.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Some network file systems cannot do WAL. The rollback journal with synchronous=FULL
        // is just as durable, only slower, so carry on.
        tracing::warn!(journal_mode = %mode, "review database could not switch to WAL mode");
    }
    // synchronous=FULL fsyncs the WAL at every commit. With NORMAL, WAL mode syncs only at
    // checkpoints: a review committed just before a power cut or kernel crash could vanish
    // after we had answered 202 with its id, breaking "nothing accepted is lost". (A process
    // crash alone, kill -9 included, loses nothing in either mode: committed frames are already
    // in the OS page cache. FULL is for the machine going down.)
    conn.pragma_update(None, "synchronous", "FULL")?;
    if let Some(max_bytes) = options.max_db_bytes {
        let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
        let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        let pages = (max_bytes / page_size.max(1)).max(1);
        conn.pragma_update(None, "max_page_count", pages)?;
    }
    Ok(())
}

/// Applies the migrations this database has not had yet, in one transaction.
fn migrate(conn: &mut Connection, shown: &str) -> Result<(), ReviewError> {
    let open = |e| open_error(shown, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open)?;
    let found = user_version(&tx).map_err(open)?;
    if found > SCHEMA_VERSION {
        return Err(ReviewError::SchemaTooNew {
            path: shown.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let Ok(applied) = usize::try_from(found) else {
        return Err(ReviewError::Corrupt {
            path: shown.to_owned(),
            details: format!("schema version {found} was not written by this gateway"),
        });
    };
    for sql in MIGRATIONS.iter().skip(applied) {
        tx.execute_batch(sql).map_err(open)?;
    }
    if found < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(open)?;
    }
    tx.commit().map_err(open)
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// `PRAGMA quick_check` at open: cheap enough for a queue-sized file, and finding damage at
/// startup beats finding it when a reviewer opens a broken row.
fn quick_check(conn: &Connection, shown: &str) -> Result<(), ReviewError> {
    run_check(conn, "quick_check", shown)
}

fn run_check(conn: &Connection, pragma: &str, shown: &str) -> Result<(), ReviewError> {
    let open = |e| open_error(shown, e);
    let mut stmt = conn.prepare(&format!("PRAGMA {pragma}")).map_err(open)?;
    let problems = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(open)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(open)?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    Err(ReviewError::Corrupt {
        path: shown.to_owned(),
        details: problems.join("; "),
    })
}

fn open_error(shown: &str, source: rusqlite::Error) -> ReviewError {
    ReviewError::Open {
        path: shown.to_owned(),
        hint: open_hint(&source),
        source,
    }
}

fn count_pending(conn: &Connection) -> rusqlite::Result<u64> {
    let count: i64 = conn
        .prepare_cached("SELECT count(*) FROM reviews WHERE state = 'pending'")?
        .query_row([], |row| row.get(0))?;
    // count(*) is never negative.
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Refreshes the queue-depth gauge. A failure here must not fail the write that preceded it
/// (that write is committed), so it is only logged.
fn publish_depth(conn: &Connection) {
    match count_pending(conn) {
        Ok(pending) => set_queue_depth(pending),
        Err(e) => tracing::warn!(error = %e, "could not count pending reviews"),
    }
}

fn check_reviewer(reviewer: &str) -> Result<&str, ReviewError> {
    let reviewer = reviewer.trim();
    if reviewer.is_empty() || reviewer.chars().count() > MAX_REVIEWER_CHARS {
        return Err(ReviewError::InvalidInput {
            field: "reviewer",
            message: format!("must be 1..={MAX_REVIEWER_CHARS} characters"),
        });
    }
    Ok(reviewer)
}

fn check_note(note: Option<&str>) -> Result<Option<&str>, ReviewError> {
    let Some(note) = note.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(ReviewError::InvalidInput {
            field: "note",
            message: format!("must be at most {MAX_NOTE_CHARS} characters"),
        });
    }
    Ok(Some(note))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn decode_state(id: &str, text: &str) -> Result<ReviewState, ReviewError> {
    text.parse().map_err(|_| ReviewError::Decode {
        id: id.to_owned(),
        column: "state",
        message: format!("unknown state '{text}'"),
    })
}

/// A row as SQLite returns it; decoded outside the lock so JSON parsing does not hold it.
struct StoredRow {
    id: String,
    created_at: i64,
    updated_at: i64,
    state: String,
    endpoint: String,
    request_json: String,
    signals_json: String,
    rule_id: Option<String>,
    reviewer: Option<String>,
    decision_note: Option<String>,
    approved_route: Option<String>,
    result_json: Option<String>,
}

impl StoredRow {
    /// Reads the columns of [`COLUMNS`], in that order.
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            created_at: row.get(1)?,
            updated_at: row.get(2)?,
            state: row.get(3)?,
            endpoint: row.get(4)?,
            request_json: row.get(5)?,
            signals_json: row.get(6)?,
            rule_id: row.get(7)?,
            reviewer: row.get(8)?,
            decision_note: row.get(9)?,
            approved_route: row.get(10)?,
            result_json: row.get(11)?,
        })
    }

    fn decode(self) -> Result<Review, ReviewError> {
        let id = self.id;
        let json = |column: &'static str, text: &str| {
            serde_json::from_str(text).map_err(|e| ReviewError::Decode {
                id: id.clone(),
                column,
                message: e.to_string(),
            })
        };
        let request_json = json("request_json", &self.request_json)?;
        let signals_json = json("signals_json", &self.signals_json)?;
        let result_json = self
            .result_json
            .as_deref()
            .map(|text| json("result_json", text))
            .transpose()?;
        let approved_route = self
            .approved_route
            .as_deref()
            .map(|text| {
                ApprovedRoute::parse(text).map_err(|e| ReviewError::Decode {
                    id: id.clone(),
                    column: "approved_route",
                    message: e.to_string(),
                })
            })
            .transpose()?;
        let state = decode_state(&id, &self.state)?;
        Ok(Review {
            id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            state,
            endpoint: self.endpoint,
            request_json,
            signals_json,
            rule_id: self.rule_id,
            reviewer: self.reviewer,
            decision_note: self.decision_note,
            approved_route,
            result_json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db() -> (PathBuf, impl Drop) {
        struct Cleanup(PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let dir = std::env::temp_dir().join(format!(
            "edge-gateway-review-unit-{}",
            uuid::Uuid::new_v4().simple()
        ));
        (dir.join("reviews.db"), Cleanup(dir))
    }

    fn new_review() -> NewReview {
        NewReview {
            endpoint: "chat.completions".into(),
            request_json: serde_json::json!({"model": "m", "messages": []}),
            signals_json: serde_json::json!({"risk_score": 80}),
            rule_id: Some("pii".into()),
        }
    }

    #[test]
    fn schema_version_is_recorded() {
        let (path, _cleanup) = temp_db();
        let store = ReviewStore::open(&path).expect("open");
        let version = user_version(&store.lock()).expect("user_version");
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn pragmas_are_wal_and_full() {
        let (path, _cleanup) = temp_db();
        let store = ReviewStore::open(&path).expect("open");
        let conn = store.lock();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("journal_mode");
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .expect("synchronous");
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "2 is FULL");
    }

    #[test]
    fn newer_schema_is_refused_with_the_path() {
        let (path, _cleanup) = temp_db();
        drop(ReviewStore::open(&path).expect("open"));
        let conn = Connection::open(&path).expect("raw open");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("bump");
        drop(conn);
        let err = ReviewStore::open(&path).expect_err("newer schema");
        assert!(matches!(err, ReviewError::SchemaTooNew { .. }), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn store_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ReviewStore>();
    }

    #[test]
    fn non_durable_paths_are_refused() {
        for path in ["", ":memory:"] {
            let err = ReviewStore::open(path).expect_err(path);
            assert!(
                matches!(err, ReviewError::InvalidInput { .. }),
                "{path:?}: {err}"
            );
        }
    }

    #[test]
    fn read_only_open_of_an_unmigrated_database_says_so() {
        let (path, _cleanup) = temp_db();
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        drop(Connection::open(&path).expect("create empty SQLite file"));
        let err = ReviewStore::open_read_only(&path).expect_err("version 0");
        assert!(
            matches!(err, ReviewError::SchemaTooOld { found: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn check_constraint_rejects_unknown_states() {
        let (path, _cleanup) = temp_db();
        let store = ReviewStore::open(&path).expect("open");
        let review = store.submit(new_review()).expect("submit");
        let err = store
            .lock()
            .execute(
                "UPDATE reviews SET state = 'lost' WHERE id = ?1",
                [&review.id],
            )
            .expect_err("CHECK constraint");
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::ConstraintViolation)
        );
    }

    #[test]
    fn blank_reviewer_and_oversized_note_are_invalid() {
        let (path, _cleanup) = temp_db();
        let store = ReviewStore::open(&path).expect("open");
        let review = store.submit(new_review()).expect("submit");
        let err = store
            .approve(&review.id, "  ", &ApprovedRoute::Edge, None)
            .expect_err("blank reviewer");
        assert!(matches!(
            err,
            ReviewError::InvalidInput {
                field: "reviewer",
                ..
            }
        ));
        let long = "x".repeat(MAX_NOTE_CHARS + 1);
        let err = store
            .reject(&review.id, "alice", Some(&long))
            .expect_err("long note");
        assert!(matches!(
            err,
            ReviewError::InvalidInput { field: "note", .. }
        ));
        assert_eq!(
            store.get(&review.id).expect("get").state,
            ReviewState::Pending
        );
    }

    #[test]
    fn damaged_row_is_a_decode_error_not_a_panic() {
        let (path, _cleanup) = temp_db();
        let store = ReviewStore::open(&path).expect("open");
        let review = store.submit(new_review()).expect("submit");
        store
            .lock()
            .execute(
                "UPDATE reviews SET request_json = '{not json' WHERE id = ?1",
                [&review.id],
            )
            .expect("damage");
        let err = store.get(&review.id).expect_err("decode");
        assert!(
            matches!(
                err,
                ReviewError::Decode {
                    column: "request_json",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.openai_parts().0, 500);
    }
}
