//! The threads that own the connections: a writer that makes decisions
//! (several to a transaction: group commit) and configuration changes, and
//! readers that answer queries.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::*;
use crate::clock::Clock;
use crate::core::{Decision, Policy, Request};
use crate::{Error, Result};

/// A connection's thread: the connection, the clock, and the policies it
/// has decoded, by version.
pub(super) struct Worker<C> {
    pub(super) conn: Connection,
    pub(super) clock: C,
    pub(super) path: PathBuf,
    pub(super) policies: HashMap<String, (i64, Arc<Policy>)>,
    /// Reused for encoding window logs.
    pub(super) buf: Vec<u8>,
}

/// Starts a thread that knows the busy timeout (see [`busy`]).
/// How long the writer keeps looking for the next task before it sleeps.
pub(super) const WRITER_SPIN: Duration = Duration::from_micros(40);

/// The next task: looked for (yielding the CPU between looks) for
/// `WRITER_SPIN`, then waited for. A caller making one call after another
/// sends its next call within microseconds of its answer; catching it
/// awake saves the writer's wake-up, a good part of such a call's time
/// (BENCHMARKS.md, SQLite).
pub(super) fn recv_soon<T>(tasks: &mpsc::Receiver<T>) -> Result<T, mpsc::RecvError> {
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

pub(super) fn spawn_thread(
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
    pub(super) fn new(conn: Connection, path: &Path, clock: &C) -> Self {
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
    pub(super) fn guarded(&mut self, f: impl FnOnce(&mut Self)) {
        if std::panic::catch_unwind(AssertUnwindSafe(|| f(self))).is_err()
            && !self.conn.is_autocommit()
        {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// A reader's life: jobs from the shared queue until the store is gone.
    pub(super) fn read_loop(&mut self, jobs: &Mutex<mpsc::Receiver<Job<C>>>) {
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
    pub(super) fn write_loop(&mut self, tasks: mpsc::Receiver<Task<C>>, max_batch: usize) {
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
    pub(super) fn decide_batch(&mut self, batch: &mut Vec<Pending>) {
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
pub(super) struct Pending {
    pub(super) bucket: String,
    pub(super) key: String,
    pub(super) req: Request,
    pub(super) reply: oneshot::Sender<Result<Decision>>,
}
