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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{KeyLevel, KeyStatus, QueuedRequest, Store};
use crate::clock::{Clock, SystemClock};
use crate::core::{Decision, Policy, Request};
use crate::{Error, Result};

mod busiest;
mod codec;
mod fail;
mod joint;
mod ops;
mod queue;
mod schema;
#[cfg(test)]
mod tests;
mod worker;

// Each part sees the others' items through `use super::*`.
use codec::*;
use fail::*;
use schema::*;
use worker::*;

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

    async fn decide_all(
        &self,
        parts: &[super::JointPart<'_>],
    ) -> Result<crate::core::JointDecision> {
        self.decide_all_now(parts).await
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

    async fn decide_tracked(
        &self,
        bucket: &str,
        key: &str,
        req: Request,
        id: &str,
    ) -> Result<Decision> {
        let (bucket, key, id) = (bucket.to_owned(), key.to_owned(), id.to_owned());
        self.write("decide", move |w| w.decide_tracked(&bucket, &key, req, &id))
            .await
    }

    async fn queue(&self, bucket: &str, key: &str) -> Result<Vec<QueuedRequest>> {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        self.read("queue", move |w| w.queued(&bucket, &key)).await
    }

    async fn cancel(&self, bucket: &str, key: &str, id: &str) -> Result<bool> {
        let (bucket, key, id) = (bucket.to_owned(), key.to_owned(), id.to_owned());
        self.write("cancel", move |w| w.cancel(&bucket, &key, &id))
            .await
    }

    async fn busiest_keys(&self, bucket: &str, n: usize) -> Result<Option<Vec<KeyLevel>>> {
        let bucket = bucket.to_owned();
        self.read("busiest_keys", move |w| w.busiest(&bucket, n).map(Some))
            .await
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
