//! The SQLite store (feature `sqlite`): buckets in one database file, shared
//! by every process of a host that opens it.
//!
//! A decision runs inside a `BEGIN IMMEDIATE` transaction: it reads the
//! bucket's policy (checking its version, so a change made by another
//! process applies from that process's commit on) and the key's state,
//! reads the clock, calls [`core::decide`](crate::core::decide), and writes
//! the state and counters back. SQLite lets one writer in at a time over all
//! processes, so concurrent decisions on one key behave as if made one after
//! another, and the limit holds exactly however many processes share the
//! file.
//!
//! When several decisions of one process wait at once, the writer makes up
//! to [`SqliteOptions::max_batch`] of them in one transaction (group
//! commit): each is still decided alone, in queue order, under the write
//! lock, and answered only after the commit that holds it. With
//! `max_batch = 1` every decision is its own transaction.
//!
//! # Schema
//!
//! ```sql
//! -- 'schema' = 1 (the layout below); 'policy_seq' = the last policy version
//! -- handed out, so a version is never reused, even after a delete.
//! CREATE TABLE drip_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
//!
//! CREATE TABLE drip_buckets (
//!     bucket  TEXT PRIMARY KEY,
//!     policy  TEXT NOT NULL,     -- Policy::encode(), e.g. "police rate=5/1000000000 capacity=10"
//!     version INTEGER NOT NULL   -- new on every configure
//! ) WITHOUT ROWID;
//!
//! CREATE TABLE drip_keys (
//!     bucket   TEXT NOT NULL,
//!     key      TEXT NOT NULL,
//!     tat      BLOB NOT NULL,    -- u128, 16 bytes little-endian, in ticks of the policy's rate
//!     windows  BLOB NOT NULL,    -- per window of the policy, in order: u32 LE entry count,
//!                                -- then that many (u64 LE time ns, u64 LE cost) entries
//!     allowed  INTEGER NOT NULL, -- requests admitted
//!     rejected INTEGER NOT NULL, -- requests refused
//!     idle_at  INTEGER NOT NULL, -- ns from which the key is idle (core::is_idle) if untouched
//!     PRIMARY KEY (bucket, key)
//! ) WITHOUT ROWID;
//! ```
//!
//! # Durability
//!
//! The database runs in WAL mode with `synchronous = NORMAL` by default: a
//! committed decision survives a crash of the process, but the last few
//! commits before a power loss or an OS crash may be lost (the database
//! stays consistent). A lost commit forgets that some requests were
//! admitted, so after such a crash those keys may admit that many again.
//! [`Synchronous::Full`] syncs every commit instead, at a large cost in
//! decisions per second (see BENCHMARKS.md).
//!
//! # Threads
//!
//! SQLite calls block, so none runs on the async runtime: one writer thread
//! owns the connection that makes decisions and configuration changes, and
//! a few reader threads own the connections that answer status, policy and
//! list queries. Writes have a single thread because SQLite admits a single
//! writer at a time anyway: more writer connections in one process would
//! only take turns through SQLite's lock, by polling. Readers never wait for
//! the writer (WAL readers see the last commit).

use std::cell::Cell;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{Counters, KeyStatus, Store};
use crate::clock::{Clock, SystemClock};
use crate::core::{self, Decision, Nanos, Policy, Request, State, WindowLog};
use crate::{Error, Result};

/// The layout this code reads and writes (`drip_meta.schema`).
const SCHEMA_VERSION: i64 = 1;

/// Keys examined per transaction by [`SqliteStore::sweep`], so a sweep of
/// many keys never holds the write lock for long.
const SWEEP_CHUNK: usize = 1000;

const SCHEMA: &str = "
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
INSERT OR IGNORE INTO drip_meta (name, value) VALUES ('schema', 1), ('policy_seq', 0);
";

/// How hard SQLite works to make a commit durable (`PRAGMA synchronous`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// Commits survive a crash of the process; the last ones may be lost on
    /// power loss or an OS crash. The usual choice with WAL.
    #[default]
    Normal,
    /// Every commit is synced to disk before the decision is returned.
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Settings of a [`SqliteStore`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// How long a call waits for another process's write lock before it
    /// fails with a store error. Default 5 s.
    pub busy_timeout: Duration,
    /// Connections (each on its own thread) that answer status, policy and
    /// list queries. Default: one per core, 2 to 8.
    pub readers: usize,
    /// Durability of commits. Default [`Synchronous::Normal`].
    pub synchronous: Synchronous,
    /// Most decisions made in one transaction when several wait at once
    /// (group commit); 1 makes every decision its own transaction. Each
    /// decision is exact either way; batching saves a commit per decision
    /// under concurrent load. Default 32.
    pub max_batch: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        SqliteOptions {
            busy_timeout: Duration::from_secs(5),
            readers: cores.clamp(2, 8),
            synchronous: Synchronous::Normal,
            max_batch: 32,
        }
    }
}

/// Work sent to a connection's thread.
type Job<C> = Box<dyn FnOnce(&mut Worker<C>) + Send>;

/// Work sent to the writer: decisions, which it may run several to a
/// transaction, and anything else, which runs alone.
enum Task<C> {
    Decide {
        bucket: String,
        key: String,
        req: Request,
        reply: oneshot::Sender<Result<Decision>>,
    },
    Run(Job<C>),
}

/// The SQLite store: named buckets of string keys in one database file,
/// shared by every process that opens it. Time comes from `C`, the system
/// clock by default, which all processes of a host share.
pub struct SqliteStore<C: Clock = SystemClock> {
    writer: mpsc::Sender<Task<C>>,
    readers: mpsc::Sender<Job<C>>,
    path: PathBuf,
    clock: C,
}

impl SqliteStore<SystemClock> {
    /// Opens (or creates) the database at `path` with default
    /// [`SqliteOptions`], on the system clock.
    ///
    /// Opening does blocking file I/O once, on the calling thread.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_options(path, SystemClock, SqliteOptions::default())
    }
}

impl<C: Clock> SqliteStore<C> {
    /// Opens (or creates) the database at `path`, reading time from `clock`
    /// (a [`ManualClock`](crate::ManualClock) in tests). Every process
    /// sharing a file must use the same clock.
    pub fn open_with_clock(path: impl AsRef<Path>, clock: C) -> Result<Self> {
        Self::open_with_options(path, clock, SqliteOptions::default())
    }

    /// Opens (or creates) the database at `path` with `options`.
    pub fn open_with_options(
        path: impl AsRef<Path>,
        clock: C,
        options: SqliteOptions,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let first = connect(&path, &options).map_err(|e| e.into_error(&path, "open"))?;
        retry_busy(options.busy_timeout, || init_schema(&first))
            .map_err(|e| e.into_error(&path, "create schema"))?;
        let (writer, writer_rx) = mpsc::channel();
        let mut w = Worker::new(first, &path, &clock);
        let max_batch = options.max_batch.max(1);
        spawn_thread("drip-sqlite-writer", &options, move || {
            w.write_loop(writer_rx, max_batch)
        })?;
        let (readers, readers_rx) = mpsc::channel();
        let readers_rx = Arc::new(Mutex::new(readers_rx));
        for i in 0..options.readers.max(1) {
            let conn = connect(&path, &options).map_err(|e| e.into_error(&path, "open"))?;
            let mut w = Worker::new(conn, &path, &clock);
            let jobs = readers_rx.clone();
            spawn_thread(&format!("drip-sqlite-reader-{i}"), &options, move || {
                w.read_loop(&jobs)
            })?;
        }
        Ok(SqliteStore {
            writer,
            readers,
            path,
            clock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Forgets keys that are idle now (bucket empty, windows clear) and
    /// keys of buckets that no longer exist; returns how many were removed.
    pub async fn sweep(&self) -> Result<u64> {
        self.write("sweep", |w| w.sweep()).await
    }

    /// Runs `f` on the writer's thread and waits for its answer without
    /// blocking the async runtime.
    async fn write<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Worker<C>) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T> {
        let (job, rx) = job(op, f);
        self.writer.send(Task::Run(job)).map_err(|_| stopped(op))?;
        rx.await.map_err(|_| stopped(op))?
    }

    /// Runs `f` on a reader's thread.
    async fn read<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Worker<C>) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T> {
        let (job, rx) = job(op, f);
        self.readers.send(job).map_err(|_| stopped(op))?;
        rx.await.map_err(|_| stopped(op))?
    }
}

fn stopped(op: &str) -> Error {
    Error::Store(format!(
        "sqlite: {op}: the store's worker thread has stopped"
    ))
}

/// `f` as a job, and where its answer will come.
fn job<C: Clock, T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce(&mut Worker<C>) -> Result<T, Fail> + Send + 'static,
) -> (Job<C>, oneshot::Receiver<Result<T>>) {
    let (tx, rx) = oneshot::channel();
    let job: Job<C> = Box::new(move |w: &mut Worker<C>| {
        let out = f(w).map_err(|e| e.into_error(&w.path, op));
        let _ = tx.send(out);
    });
    (job, rx)
}

impl<C: Clock> Store for SqliteStore<C> {
    async fn configure(&self, bucket: &str, policy: Policy, reset: bool) -> Result<()> {
        let bucket = bucket.to_owned();
        self.write("configure", move |w| w.configure(&bucket, policy, reset))
            .await
    }

    async fn policy(&self, bucket: &str) -> Result<Option<Policy>> {
        let bucket = bucket.to_owned();
        self.read("policy", move |w| {
            Ok(w.policy(&bucket)?.map(|(_, p)| Policy::clone(&p)))
        })
        .await
    }

    async fn decide(&self, bucket: &str, key: &str, req: Request) -> Result<Decision> {
        let (reply, rx) = oneshot::channel();
        let task = Task::Decide {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            req,
            reply,
        };
        self.writer.send(task).map_err(|_| stopped("decide"))?;
        rx.await.map_err(|_| stopped("decide"))?
    }

    async fn status(&self, bucket: &str, key: &str) -> Result<KeyStatus> {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        self.read("status", move |w| w.status(&bucket, &key)).await
    }

    async fn delete(&self, bucket: &str) -> Result<bool> {
        let bucket = bucket.to_owned();
        self.write("delete", move |w| w.delete(&bucket)).await
    }

    async fn list(&self) -> Result<Vec<(String, Policy)>> {
        self.read("list", |w| w.list()).await
    }

    async fn ping(&self) -> Result<()> {
        self.read("ping", |w| {
            w.conn
                .prepare_cached("SELECT value FROM drip_meta WHERE name = 'schema'")?
                .query_row([], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    async fn sweep_idle(&self) -> Result<u64> {
        self.sweep().await
    }

    async fn keys_held(&self) -> Result<Option<u64>> {
        self.read("keys_held", |w| {
            let n: i64 = w
                .conn
                .prepare_cached("SELECT count(*) FROM drip_keys")?
                .query_row([], |r| r.get(0))?;
            Ok(Some(u64::try_from(n).unwrap_or(0)))
        })
        .await
    }
}

/// A connection's thread: the connection, the clock, and the policies it
/// has decoded, by version.
struct Worker<C> {
    conn: Connection,
    clock: C,
    path: PathBuf,
    policies: HashMap<String, (i64, Arc<Policy>)>,
    /// Reused for encoding window logs.
    buf: Vec<u8>,
}

/// Starts a thread that knows the busy timeout (see [`busy`]).
/// How long the writer keeps looking for the next task before it sleeps.
const WRITER_SPIN: Duration = Duration::from_micros(40);

/// The next task: looked for (yielding the CPU between looks) for
/// `WRITER_SPIN`, then waited for. A caller making one call after another
/// sends its next call within microseconds of its answer; catching it
/// awake saves the writer's wake-up, a good part of such a call's time
/// (BENCHMARKS.md, SQLite).
fn recv_soon<T>(tasks: &mpsc::Receiver<T>) -> Result<T, mpsc::RecvError> {
    let start = Instant::now();
    loop {
        match tasks.try_recv() {
            Ok(t) => return Ok(t),
            Err(mpsc::TryRecvError::Disconnected) => return Err(mpsc::RecvError),
            Err(mpsc::TryRecvError::Empty) if start.elapsed() < WRITER_SPIN => {
                std::thread::yield_now()
            }
            Err(mpsc::TryRecvError::Empty) => return tasks.recv(),
        }
    }
}

fn spawn_thread(
    name: &str,
    options: &SqliteOptions,
    run: impl FnOnce() + Send + 'static,
) -> Result<()> {
    let timeout = options.busy_timeout;
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            BUSY_TIMEOUT.with(|t| t.set(timeout));
            run()
        })
        .map_err(|e| Error::Store(format!("sqlite: cannot start a worker thread: {e}")))?;
    Ok(())
}

impl<C: Clock> Worker<C> {
    fn new(conn: Connection, path: &Path, clock: &C) -> Self {
        Worker {
            conn,
            clock: clock.clone(),
            path: path.to_path_buf(),
            policies: HashMap::new(),
            buf: Vec::new(),
        }
    }

    /// Runs `f`, surviving a panic: the panicking call's reply is dropped
    /// (its caller sees a store error) and its transaction rolled back.
    fn guarded(&mut self, f: impl FnOnce(&mut Self)) {
        if std::panic::catch_unwind(AssertUnwindSafe(|| f(self))).is_err()
            && !self.conn.is_autocommit()
        {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// A reader's life: jobs from the shared queue until the store is gone.
    fn read_loop(&mut self, jobs: &Mutex<mpsc::Receiver<Job<C>>>) {
        self.conn.busy_handler(Some(busy)).ok();
        loop {
            // The lock is held only while waiting for the next job, so idle
            // readers take turns at the queue.
            let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
            let Ok(job) = job else { return };
            self.guarded(|w| job(w));
        }
    }

    /// The writer's life. Decisions waiting together are made in one
    /// transaction, up to `max_batch` of them (group commit): each is still
    /// decided alone, in queue order, under the write lock, and answered
    /// only once the transaction holding it has committed.
    fn write_loop(&mut self, tasks: mpsc::Receiver<Task<C>>, max_batch: usize) {
        self.conn.busy_handler(Some(busy)).ok();
        let mut next = None;
        let mut batch = Vec::new();
        loop {
            let task = match next.take() {
                Some(t) => t,
                None => match recv_soon(&tasks) {
                    Ok(t) => t,
                    Err(_) => return,
                },
            };
            match task {
                Task::Run(job) => self.guarded(|w| job(w)),
                Task::Decide {
                    bucket,
                    key,
                    req,
                    reply,
                } => {
                    batch.push(Pending {
                        bucket,
                        key,
                        req,
                        reply,
                    });
                    while batch.len() < max_batch {
                        match tasks.try_recv() {
                            Ok(Task::Decide {
                                bucket,
                                key,
                                req,
                                reply,
                            }) => batch.push(Pending {
                                bucket,
                                key,
                                req,
                                reply,
                            }),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let mut taken = std::mem::take(&mut batch);
                    self.guarded(|w| w.decide_batch(&mut taken));
                    taken.clear();
                    batch = taken;
                }
            }
        }
    }

    /// Decides every request of `batch` and answers each.
    fn decide_batch(&mut self, batch: &mut Vec<Pending>) {
        if let [one] = batch.as_slice() {
            let out = self.decide(&one.bucket, &one.key, one.req);
            let out = out.map_err(|e| e.into_error(&self.path, "decide"));
            if let Some(p) = batch.pop() {
                let _ = p.reply.send(out);
            }
            return;
        }
        if let Err(e) = self.begin() {
            let msg = e.into_error(&self.path, "decide").to_string();
            for p in batch.drain(..) {
                let _ = p.reply.send(Err(Error::Store(msg.clone())));
            }
            return;
        }
        let mut results = Vec::with_capacity(batch.len());
        for p in batch.iter() {
            match self.decide_in(&p.bucket, &p.key, p.req) {
                Ok(d) => results.push(Ok(d)),
                // Nothing was written for it; the others stand.
                Err(Fail::Drip(e)) => results.push(Err(e)),
                Err(e) => {
                    // A failed statement may have ended the transaction:
                    // undo it all, answer this one with its error, and
                    // decide the others again, each in its own transaction.
                    let _ = self.conn.execute_batch("ROLLBACK");
                    let failed = results.len();
                    let mut e = Some(e.into_error(&self.path, "decide"));
                    for (i, p) in batch.drain(..).enumerate() {
                        let out = match e.take_if(|_| i == failed) {
                            Some(e) => Err(e),
                            None => self
                                .decide(&p.bucket, &p.key, p.req)
                                .map_err(|e| e.into_error(&self.path, "decide")),
                        };
                        let _ = p.reply.send(out);
                    }
                    return;
                }
            }
        }
        match self.commit() {
            Ok(()) => {
                for (p, out) in batch.drain(..).zip(results) {
                    let _ = p.reply.send(out);
                }
            }
            Err(e) => {
                let msg = e.into_error(&self.path, "decide").to_string();
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(Error::Store(msg.clone())));
                }
            }
        }
    }
}

/// A decision waiting in the writer's batch.
struct Pending {
    bucket: String,
    key: String,
    req: Request,
    reply: oneshot::Sender<Result<Decision>>,
}

fn connect(path: &Path, options: &SqliteOptions) -> Result<Connection, Fail> {
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
fn retry_busy<T>(timeout: Duration, mut op: impl FnMut() -> Result<T, Fail>) -> Result<T, Fail> {
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

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn init_schema(conn: &Connection) -> Result<(), Fail> {
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
    static BUSY_TIMEOUT: Cell<Duration> = const { Cell::new(Duration::from_secs(5)) };
    /// When the current wait for a lock began.
    static BUSY_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// SQLite's busy handler: called while another connection holds the lock,
/// `count` times before in this wait. SQLite's default handler sleeps up to
/// 100 ms between tries, which lets one busy process keep the lock for long
/// stretches; short sleeps give waiting processes a fair chance at the
/// moments between another process's transactions.
fn busy(count: i32) -> bool {
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

/// What a worker's call can fail with, before it is given the store's path.
#[derive(Debug)]
enum Fail {
    Sql(rusqlite::Error),
    /// Bad data in the file, or a file drip cannot use.
    Invalid(String),
    Drip(Error),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Drip(e)
    }
}

impl Fail {
    fn into_error(self, path: &Path, op: &str) -> Error {
        match self {
            Fail::Drip(e) => e,
            Fail::Sql(e) => {
                Error::Store(format!("sqlite {}: {op}: {}", path.display(), explain(&e)))
            }
            Fail::Invalid(what) => Error::Store(format!("sqlite {}: {op}: {what}", path.display())),
        }
    }
}

/// SQLite's message, with a hint for the errors users meet most.
fn explain(e: &rusqlite::Error) -> String {
    if is_busy(e) {
        format!("{e} (another connection held the write lock for longer than the busy timeout)")
    } else if e.sqlite_error_code() == Some(ErrorCode::ReadOnly) {
        format!("{e} (the file or its directory is not writable)")
    } else {
        e.to_string()
    }
}

impl<C: Clock> Worker<C> {
    /// The policy of `bucket` as the database holds it now, with its version;
    /// decoded once per version.
    fn policy(&mut self, bucket: &str) -> Result<Option<(i64, Arc<Policy>)>, Fail> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT version, policy FROM drip_buckets WHERE bucket = ?1")?;
        let cached = self.policies.get(bucket).map(|c| c.0);
        let found = stmt
            .query_row([bucket], |r| {
                let version: i64 = r.get(0)?;
                if cached == Some(version) {
                    return Ok((version, None));
                }
                Ok((version, Some(decode_policy(bucket, r.get_ref(1)?))))
            })
            .optional()?;
        match found {
            None => {
                self.policies.remove(bucket);
                Ok(None)
            }
            Some((version, None)) => Ok(self.policies.get(bucket).map(|c| (version, c.1.clone()))),
            Some((version, Some(decoded))) => {
                let policy = Arc::new(decoded?);
                self.policies
                    .insert(bucket.to_owned(), (version, policy.clone()));
                Ok(Some((version, policy)))
            }
        }
    }

    fn load_key(&mut self, bucket: &str, key: &str) -> Result<Option<(State, Counters)>, Fail> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT tat, windows, allowed, rejected FROM drip_keys WHERE bucket = ?1 AND key = ?2",
        )?;
        let row = stmt
            .query_row([bucket, key], |r| {
                let state = decode_state(r.get_ref(0)?, r.get_ref(1)?);
                let counters = Counters {
                    allowed: to_u64(r.get(2)?),
                    rejected: to_u64(r.get(3)?),
                };
                Ok(state.map(|s| (s, counters)))
            })
            .optional()?;
        row.transpose()
            .map_err(|what| Fail::Invalid(format!("key {key:?} of bucket {bucket:?}: {what}")))
    }

    fn save_key(
        &mut self,
        bucket: &str,
        key: &str,
        state: &State,
        counters: Counters,
        idle_at: Nanos,
    ) -> Result<(), Fail> {
        encode_windows(&state.windows, &mut self.buf);
        self.conn
            .prepare_cached(
                "INSERT INTO drip_keys (bucket, key, tat, windows, allowed, rejected, idle_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (bucket, key) DO UPDATE SET
                     tat = excluded.tat, windows = excluded.windows,
                     allowed = excluded.allowed, rejected = excluded.rejected,
                     idle_at = excluded.idle_at",
            )?
            .execute(params![
                bucket,
                key,
                &state.tat.to_le_bytes()[..],
                &self.buf[..],
                to_i64(counters.allowed),
                to_i64(counters.rejected),
                to_i64(idle_at),
            ])?;
        Ok(())
    }

    /// Starts a write transaction: takes the database's write lock now.
    fn begin(&mut self) -> Result<(), Fail> {
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(())
    }

    /// Commits; on failure rolls back, so no transaction is left open.
    fn commit(&mut self) -> Result<(), Fail> {
        let out = self
            .conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]));
        if let Err(e) = out {
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Commits on success, rolls back otherwise.
    fn finish<T>(&mut self, out: Result<T, Fail>) -> Result<T, Fail> {
        match out {
            Ok(v) => self.commit().map(|()| v),
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                Err(e)
            }
        }
    }

    /// Runs `f` inside one write transaction.
    fn immediate<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, Fail>) -> Result<T, Fail> {
        self.begin()?;
        let out = f(self);
        self.finish(out)
    }

    /// Decides `req` in a transaction of its own.
    fn decide(&mut self, bucket: &str, key: &str, req: Request) -> Result<Decision, Fail> {
        self.immediate(|w| w.decide_in(bucket, key, req))
    }

    /// Decides `req` inside the caller's write transaction. Its only write
    /// is the last statement, so an error leaves nothing of it behind.
    fn decide_in(&mut self, bucket: &str, key: &str, req: Request) -> Result<Decision, Fail> {
        let (_, policy) = self
            .policy(bucket)?
            .ok_or_else(|| Error::UnknownBucket(bucket.to_owned()))?;
        let (mut state, mut counters) = self.load_key(bucket, key)?.unwrap_or_default();
        // Read inside the lock, so decisions of all processes see times in
        // the order they hold it.
        let now = self.clock.now();
        let d = core::decide(&policy, &mut state, now, req);
        if d.allowed() {
            counters.allowed = counters.allowed.saturating_add(1);
        } else {
            counters.rejected = counters.rejected.saturating_add(1);
        }
        self.save_key(
            bucket,
            key,
            &state,
            counters,
            now.saturating_add(d.reset_after),
        )?;
        Ok(d)
    }

    fn configure(&mut self, bucket: &str, policy: Policy, reset: bool) -> Result<(), Fail> {
        let text = policy.encode();
        let policy = Arc::new(policy);
        let version = self.immediate(|w| {
            let old: Option<String> = w
                .conn
                .prepare_cached("SELECT policy FROM drip_buckets WHERE bucket = ?1")?
                .query_row([bucket], |r| r.get(0))
                .optional()?;
            let version: i64 = w
                .conn
                .prepare_cached(
                    "UPDATE drip_meta SET value = value + 1 WHERE name = 'policy_seq' RETURNING value",
                )?
                .query_row([], |r| r.get(0))?;
            w.conn
                .prepare_cached(
                    "INSERT INTO drip_buckets (bucket, policy, version) VALUES (?1, ?2, ?3)
                     ON CONFLICT (bucket) DO UPDATE SET
                         policy = excluded.policy, version = excluded.version",
                )?
                .execute(params![bucket, text, version])?;
            // A stored policy this version cannot read cannot be carried
            // over from: its keys start empty, as with a reset.
            let old = old.and_then(|t| Policy::decode(&t).ok());
            match old {
                Some(old) if !reset => w.carry_over(bucket, &old, &policy)?,
                _ => {
                    w.conn
                        .prepare_cached("DELETE FROM drip_keys WHERE bucket = ?1")?
                        .execute([bucket])?;
                }
            }
            Ok(version)
        })?;
        self.policies.insert(bucket.to_owned(), (version, policy));
        Ok(())
    }

    /// Moves every key of `bucket` from `old` to `new` (inside the caller's
    /// transaction).
    fn carry_over(&mut self, bucket: &str, old: &Policy, new: &Policy) -> Result<(), Fail> {
        let now = self.clock.now();
        let keys: Vec<(String, Result<State, String>)> = self
            .conn
            .prepare_cached("SELECT key, tat, windows FROM drip_keys WHERE bucket = ?1")?
            .query_map([bucket], |r| {
                Ok((r.get(0)?, decode_state(r.get_ref(1)?, r.get_ref(2)?)))
            })?
            .collect::<rusqlite::Result<_>>()?;
        for (key, state) in keys {
            // An unreadable state is dropped rather than blocking the change.
            let mut state = state.unwrap_or_default();
            core::carry_over(old, new, &mut state, now);
            let idle_at = now.saturating_add(core::level(new, &state, now).reset_after);
            encode_windows(&state.windows, &mut self.buf);
            self.conn
                .prepare_cached(
                    "UPDATE drip_keys SET tat = ?3, windows = ?4, idle_at = ?5
                     WHERE bucket = ?1 AND key = ?2",
                )?
                .execute(params![
                    bucket,
                    key,
                    &state.tat.to_le_bytes()[..],
                    &self.buf[..],
                    to_i64(idle_at)
                ])?;
        }
        Ok(())
    }

    fn delete(&mut self, bucket: &str) -> Result<bool, Fail> {
        let existed = self.immediate(|w| {
            let n = w
                .conn
                .prepare_cached("DELETE FROM drip_buckets WHERE bucket = ?1")?
                .execute([bucket])?;
            w.conn
                .prepare_cached("DELETE FROM drip_keys WHERE bucket = ?1")?
                .execute([bucket])?;
            Ok(n > 0)
        })?;
        self.policies.remove(bucket);
        Ok(existed)
    }

    fn status(&mut self, bucket: &str, key: &str) -> Result<KeyStatus, Fail> {
        // One read transaction: the policy and the state from one snapshot.
        self.conn.prepare_cached("BEGIN")?.execute([])?;
        let out = (|| {
            let (_, policy) = self
                .policy(bucket)?
                .ok_or_else(|| Error::UnknownBucket(bucket.to_owned()))?;
            let (state, counters) = self.load_key(bucket, key)?.unwrap_or_default();
            let now = self.clock.now();
            Ok(KeyStatus {
                level: core::level(&policy, &state, now),
                policy: Policy::clone(&policy),
                counters,
            })
        })();
        self.finish(out)
    }

    fn list(&mut self) -> Result<Vec<(String, Policy)>, Fail> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT bucket, policy FROM drip_buckets ORDER BY bucket")?;
        let rows = stmt.query_map([], |r| {
            let bucket: String = r.get(0)?;
            let policy = decode_policy(&bucket, r.get_ref(1)?);
            Ok((bucket, policy))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (bucket, policy) = row?;
            out.push((bucket, policy?));
        }
        Ok(out)
    }

    /// Deletes idle keys and orphans, a chunk of keys per transaction.
    fn sweep(&mut self) -> Result<u64, Fail> {
        let mut removed = 0;
        let mut after = (String::new(), String::new());
        loop {
            let (n, last) = self.immediate(|w| w.sweep_chunk(&after))?;
            removed += n;
            match last {
                Some(last) => after = last,
                None => return Ok(removed),
            }
        }
    }

    /// Sweeps up to [`SWEEP_CHUNK`] candidate keys after `after` (in key
    /// order); returns how many were removed and the last key examined, or
    /// `None` at the end.
    #[allow(clippy::type_complexity)]
    fn sweep_chunk(
        &mut self,
        after: &(String, String),
    ) -> Result<(u64, Option<(String, String)>), Fail> {
        let now = self.clock.now();
        // Candidates by `idle_at`; `core::is_idle` has the last word.
        let rows: Vec<(String, String, Result<State, String>)> = self
            .conn
            .prepare_cached(
                "SELECT bucket, key, tat, windows FROM drip_keys
                 WHERE (bucket, key) > (?1, ?2) AND idle_at <= ?3
                 ORDER BY bucket, key LIMIT ?4",
            )?
            .query_map(
                params![after.0, after.1, to_i64(now), SWEEP_CHUNK as i64],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        decode_state(r.get_ref(2)?, r.get_ref(3)?),
                    ))
                },
            )?
            .collect::<rusqlite::Result<_>>()?;
        let mut removed = 0;
        for (bucket, key, state) in &rows {
            let idle = match self.policy(bucket)? {
                // Orphans (bucket deleted) and unreadable states go too.
                None => true,
                Some((_, policy)) => state
                    .as_ref()
                    .map_or(true, |s| core::is_idle(&policy, s, now)),
            };
            if idle {
                removed += self
                    .conn
                    .prepare_cached("DELETE FROM drip_keys WHERE bucket = ?1 AND key = ?2")?
                    .execute([bucket, key])? as u64;
            }
        }
        let last = (rows.len() == SWEEP_CHUNK)
            .then(|| rows.last().map(|r| (r.0.clone(), r.1.clone())))
            .flatten();
        Ok((removed, last))
    }
}

fn decode_policy(bucket: &str, value: ValueRef<'_>) -> Result<Policy, Fail> {
    let text = value
        .as_str()
        .map_err(|e| Fail::Invalid(format!("bucket {bucket:?}: stored policy is not text: {e}")))?;
    Policy::decode(text).map_err(|e| {
        Fail::Invalid(format!(
            "bucket {bucket:?}: stored policy {text:?} cannot be read: {e}"
        ))
    })
}

fn decode_state(tat: ValueRef<'_>, windows: ValueRef<'_>) -> Result<State, String> {
    let tat = tat
        .as_blob()
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(u128::from_le_bytes)
        .ok_or("stored tat is not a 16-byte blob")?;
    let mut rest = windows
        .as_blob()
        .map_err(|_| "stored windows are not a blob")?;
    let mut logs = Vec::new();
    let bad = "stored window log is truncated";
    while !rest.is_empty() {
        let (n, tail) = rest.split_first_chunk::<4>().ok_or(bad)?;
        let n = u32::from_le_bytes(*n) as usize;
        let len = n.checked_mul(16).filter(|&l| l <= tail.len()).ok_or(bad)?;
        let (entries, tail) = tail.split_at(len);
        logs.push(WindowLog::from_entries(entries.chunks_exact(16).map(|e| {
            let (t, c) = e.split_at(8);
            (
                u64::from_le_bytes(t.try_into().unwrap_or_default()),
                u64::from_le_bytes(c.try_into().unwrap_or_default()),
            )
        })));
        rest = tail;
    }
    Ok(State { tat, windows: logs })
}

fn encode_windows(logs: &[WindowLog], buf: &mut Vec<u8>) {
    buf.clear();
    for log in logs {
        let n = log.entries().count();
        buf.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
        for (t, c) in log.entries().take(u32::MAX as usize) {
            buf.extend_from_slice(&t.to_le_bytes());
            buf.extend_from_slice(&c.to_le_bytes());
        }
    }
}

fn to_i64(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

fn to_u64(x: i64) -> u64 {
    u64::try_from(x).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Limit, Rate, Window};

    #[test]
    fn state_round_trips() {
        let state = State {
            tat: u128::MAX - 7,
            windows: vec![
                WindowLog::from_entries([(1, 2), (u64::MAX, 3)]),
                WindowLog::default(),
                WindowLog::from_entries([(5, 1)]),
            ],
        };
        let mut buf = Vec::new();
        encode_windows(&state.windows, &mut buf);
        assert_eq!(buf.len(), 3 * 4 + 3 * 16);
        let tat = state.tat.to_le_bytes();
        let back = decode_state(ValueRef::Blob(&tat), ValueRef::Blob(&buf)).unwrap();
        assert_eq!(back, state);
        assert!(decode_state(ValueRef::Blob(&tat[..15]), ValueRef::Blob(&[])).is_err());
        assert!(decode_state(ValueRef::Blob(&tat), ValueRef::Blob(&buf[..buf.len() - 1])).is_err());
        assert!(decode_state(ValueRef::Integer(3), ValueRef::Blob(&[])).is_err());
    }

    #[tokio::test]
    async fn corrupt_rows_are_store_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drip.db");
        let store = SqliteStore::open_with_clock(&path, crate::ManualClock::new(1_000)).unwrap();
        let policy = Policy::police(Limit::new(Rate::per_second(1).unwrap(), 5).unwrap())
            .with_window(Window::new(3, Duration::from_secs(60)).unwrap())
            .unwrap();
        store.configure("b", policy, false).await.unwrap();
        store.decide("b", "k", Request::check(1)).await.unwrap();
        let raw = Connection::open(&path).unwrap();
        raw.execute("UPDATE drip_keys SET windows = x'0100'", [])
            .unwrap();
        let e = store.decide("b", "k", Request::check(1)).await.unwrap_err();
        assert!(
            matches!(&e, Error::Store(m) if m.contains("truncated")),
            "{e}"
        );
        raw.execute(
            "UPDATE drip_buckets SET policy = 'nonsense', version = -1",
            [],
        )
        .unwrap();
        let e = store.policy("b").await.unwrap_err();
        assert!(
            matches!(&e, Error::Store(m) if m.contains("nonsense")),
            "{e}"
        );
        assert!(store.list().await.is_err());
    }

    /// A writer's worker on a fresh database, outside any thread.
    fn worker(dir: &tempfile::TempDir) -> Worker<crate::ManualClock> {
        let path = dir.path().join("drip.db");
        let conn = connect(&path, &SqliteOptions::default()).unwrap();
        init_schema(&conn).unwrap();
        Worker::new(conn, &path, &crate::ManualClock::new(1_000))
    }

    fn pending(bucket: &str, key: &str) -> (Pending, oneshot::Receiver<Result<Decision>>) {
        let (reply, rx) = oneshot::channel();
        let p = Pending {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            req: Request::check(1),
            reply,
        };
        (p, rx)
    }

    fn counters(w: &mut Worker<crate::ManualClock>, key: &str) -> (u64, u64) {
        let c = w.load_key("b", key).ok().flatten().unwrap_or_default().1;
        (c.allowed, c.rejected)
    }

    #[test]
    fn a_batch_answers_each_decision_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = worker(&dir);
        let policy = Policy::police(Limit::new(Rate::per_second(1).unwrap(), 2).unwrap());
        w.configure("b", policy, false).unwrap();
        let (mut batch, mut rxs) = (Vec::new(), Vec::new());
        for (bucket, key) in [
            ("b", "k"),
            ("nope", "k"),
            ("b", "k"),
            ("b", "k"),
            ("b", "j"),
        ] {
            let (p, rx) = pending(bucket, key);
            batch.push(p);
            rxs.push(rx);
        }
        w.decide_batch(&mut batch);
        let got: Vec<_> = rxs
            .iter_mut()
            .map(|rx| match rx.try_recv().unwrap() {
                Ok(d) => Ok(d.allowed()),
                Err(e) => Err(e.to_string()),
            })
            .collect();
        assert_eq!(
            got,
            [
                Ok(true),
                Err("no bucket named \"nope\"".to_owned()),
                Ok(true),
                Ok(false),
                Ok(true)
            ]
        );
        assert_eq!(counters(&mut w, "k"), (2, 1));
        assert_eq!(counters(&mut w, "j"), (1, 0));
        assert!(w.conn.is_autocommit());
    }

    #[test]
    fn a_failed_decision_does_not_fail_or_repeat_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = worker(&dir);
        let policy = Policy::police(Limit::new(Rate::per_second(1).unwrap(), 5).unwrap());
        w.configure("b", policy, false).unwrap();
        w.decide("b", "bad", Request::check(1)).unwrap();
        w.conn
            .execute("UPDATE drip_keys SET tat = x'00' WHERE key = 'bad'", [])
            .unwrap();
        let (mut batch, mut rxs) = (Vec::new(), Vec::new());
        for key in ["k", "bad", "k"] {
            let (p, rx) = pending("b", key);
            batch.push(p);
            rxs.push(rx);
        }
        w.decide_batch(&mut batch);
        let got: Vec<_> = rxs.iter_mut().map(|rx| rx.try_recv().unwrap()).collect();
        assert!(got[0].as_ref().is_ok_and(|d| d.allowed()));
        assert!(
            matches!(&got[1], Err(Error::Store(m)) if m.contains("16-byte")),
            "{:?}",
            got[1]
        );
        assert!(got[2].as_ref().is_ok_and(|d| d.allowed()));
        // The first attempt at the batch was rolled back, not counted twice.
        assert_eq!(counters(&mut w, "k"), (2, 0));
        assert!(w.conn.is_autocommit());
    }
}
