//! The database's layout and opening a connection: the schema, WAL mode,
//! and the busy handler that lets processes take turns fairly.

use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};

use super::*;
use crate::Result;

/// The layout this code reads and writes (`drip_meta.schema`).
pub(super) const SCHEMA_VERSION: i64 = 1;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS drip_meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drip_buckets (
    bucket  TEXT PRIMARY KEY,
    policy  TEXT NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drip_keys (
    bucket   TEXT NOT NULL,
    key      TEXT NOT NULL,
    tat      BLOB NOT NULL,
    windows  BLOB NOT NULL,
    allowed  INTEGER NOT NULL,
    rejected INTEGER NOT NULL,
    idle_at  INTEGER NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drip_queue (
    bucket    TEXT NOT NULL,
    key       TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    id        TEXT NOT NULL,
    enqueued  INTEGER NOT NULL,
    turn      INTEGER NOT NULL,
    leaves    INTEGER NOT NULL,
    end_tat   BLOB NOT NULL,
    start_tat BLOB NOT NULL,
    PRIMARY KEY (bucket, key, seq)
) WITHOUT ROWID;
INSERT OR IGNORE INTO drip_meta (name, value) VALUES ('schema', 1), ('policy_seq', 0);
";

pub(super) fn connect(path: &Path, options: &SqliteOptions) -> Result<Connection, Fail> {
    let conn = Connection::open(path)?;
    // SQLite's own handler while opening; each worker thread installs the
    // finer-grained one (`busy`) before its first job.
    conn.busy_timeout(options.busy_timeout)?;
    let mode: String = retry_busy(options.busy_timeout, || {
        Ok(conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?)
    })?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Fail::Invalid(format!(
            "cannot switch to WAL mode (journal_mode is {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", options.synchronous.pragma())?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Runs `op` again while the database is busy, for up to `timeout`. While
/// a file is being created or switched to WAL mode, SQLite answers "busy"
/// at once rather than waiting (waiting could deadlock), so processes that
/// open one new file at the same moment take turns here.
pub(super) fn retry_busy<T>(
    timeout: Duration,
    mut op: impl FnMut() -> Result<T, Fail>,
) -> Result<T, Fail> {
    let start = Instant::now();
    loop {
        match op() {
            Err(Fail::Sql(e)) if is_busy(&e) && start.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(2));
            }
            out => return out,
        }
    }
}

pub(super) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

pub(super) fn init_schema(conn: &Connection) -> Result<(), Fail> {
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))
        .inspect_err(|_| {
            let _ = conn.execute_batch("ROLLBACK");
        })?;
    let found: i64 = conn.query_row(
        "SELECT value FROM drip_meta WHERE name = 'schema'",
        [],
        |r| r.get(0),
    )?;
    if found != SCHEMA_VERSION {
        return Err(Fail::Invalid(format!(
            "the database has drip schema {found}; this version of drip reads schema {SCHEMA_VERSION}"
        )));
    }
    Ok(())
}

thread_local! {
    /// The busy timeout of the connection owned by this thread.
    pub(super) static BUSY_TIMEOUT: Cell<Duration> = const { Cell::new(Duration::from_secs(5)) };
    /// When the current wait for a lock began.
    static BUSY_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// SQLite's busy handler: called while another connection holds the lock,
/// `count` times before in this wait. SQLite's default handler sleeps up to
/// 100 ms between tries, which lets one busy process keep the lock for long
/// stretches; short sleeps give waiting processes a fair chance at the
/// moments between another process's transactions.
pub(super) fn busy(count: i32) -> bool {
    let now = Instant::now();
    let since = match BUSY_SINCE.with(Cell::get) {
        Some(t) if count > 0 => t,
        _ => {
            BUSY_SINCE.with(|s| s.set(Some(now)));
            now
        }
    };
    let waited = now - since;
    let timeout = BUSY_TIMEOUT.with(Cell::get);
    if waited >= timeout {
        return false;
    }
    let pause = if waited < Duration::from_secs(1) {
        Duration::from_micros(20)
    } else {
        Duration::from_millis(1)
    };
    std::thread::sleep(pause.min(timeout - waited));
    true
}
