//! The limiter for synchronous programs: the same calls without `async`.
//! The caller needs no tokio runtime; one small runtime of its own drives
//! the store, and waiting is a plain thread sleep.

use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

use crate::core::{Decision, Policy};
use crate::store::{KeyStatus, MemoryStore, Store};
use crate::{Error, Result};

/// A blocking [`Limiter`](crate::Limiter). Share it between threads by
/// reference or in an `Arc`.
pub struct Limiter<S: Store = MemoryStore> {
    inner: crate::Limiter<S>,
    runtime: Runtime,
}

impl Limiter<MemoryStore> {
    /// A blocking limiter on a fresh memory store.
    pub fn memory() -> Result<Self> {
        Limiter::new(MemoryStore::new())
    }
}

impl<S: Store> Limiter<S> {
    /// A blocking limiter over `store`.
    pub fn new(store: S) -> Result<Self> {
        Self::from_async(crate::Limiter::new(store))
    }

    /// A blocking view of an async limiter (they share the store).
    pub fn from_async(inner: crate::Limiter<S>) -> Result<Self> {
        Ok(Limiter {
            inner,
            runtime: runtime()?,
        })
    }

    /// Opens the store with `open` on this limiter's own runtime. Stores
    /// whose connections run tasks on the runtime that opened them (Redis)
    /// must be opened this way:
    /// `blocking::Limiter::open(|| RedisStore::connect(url, options))`.
    pub fn open<F, Fut>(open: F) -> Result<Self>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<S>>,
    {
        if Handle::try_current().is_ok() {
            return Err(Error::BlockingInAsync);
        }
        let runtime = runtime()?;
        let store = runtime.block_on(open())?;
        Ok(Limiter {
            inner: crate::Limiter::new(store),
            runtime,
        })
    }

    /// The async limiter underneath.
    pub fn as_async(&self) -> &crate::Limiter<S> {
        &self.inner
    }

    fn run<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        if Handle::try_current().is_ok() {
            return Err(Error::BlockingInAsync);
        }
        self.runtime.block_on(f)
    }

    /// A handle to the runtime that drives the store (for threads this
    /// limiter starts).
    pub(crate) fn handle(&self) -> Handle {
        self.runtime.handle().clone()
    }

    /// See [`crate::Limiter::decide_tracked`].
    pub fn decide_tracked(
        &self,
        bucket: &str,
        key: &str,
        req: crate::Request,
        id: &str,
    ) -> Result<Decision> {
        self.run(self.inner.decide_tracked(bucket, key, req, id))
    }

    /// See [`crate::Limiter::queue`].
    pub fn queue(&self, bucket: &str, key: &str) -> Result<Vec<crate::QueuedRequest>> {
        self.run(self.inner.queue(bucket, key))
    }

    /// See [`crate::Limiter::cancel`].
    pub fn cancel(&self, bucket: &str, key: &str, id: &str) -> Result<bool> {
        self.run(self.inner.cancel(bucket, key, id))
    }

    /// See [`crate::Limiter::configure`].
    pub fn configure(&self, bucket: &str, policy: Policy) -> Result<()> {
        self.run(self.inner.configure(bucket, policy))
    }

    /// See [`crate::Limiter::configure_reset`].
    pub fn configure_reset(&self, bucket: &str, policy: Policy) -> Result<()> {
        self.run(self.inner.configure_reset(bucket, policy))
    }

    /// See [`crate::Limiter::check`].
    pub fn check(&self, bucket: &str, key: &str, cost: u64) -> Result<Decision> {
        self.run(self.inner.check(bucket, key, cost))
    }

    /// See [`crate::Limiter::acquire`]: blocks this thread until the request may go.
    pub fn acquire(
        &self,
        bucket: &str,
        key: &str,
        cost: u64,
        timeout: Option<Duration>,
    ) -> Result<Decision> {
        // The async acquire, driven on this limiter's runtime: its sleep
        // blocks this thread until the turn.
        self.run(self.inner.acquire(bucket, key, cost, timeout))
    }

    /// Waits for a turn, then runs `f`; a turn not granted is an error
    /// ([`Error::Limited`] within `timeout`, or [`Error::Exceeds`]).
    pub fn throttle<T>(
        &self,
        bucket: &str,
        key: &str,
        cost: u64,
        timeout: Option<Duration>,
        f: impl FnOnce() -> T,
    ) -> Result<T> {
        crate::limiter::admitted(self.acquire(bucket, key, cost, timeout)?, cost)?;
        Ok(f())
    }

    /// See [`crate::Limiter::status`].
    pub fn status(&self, bucket: &str, key: &str) -> Result<KeyStatus> {
        self.run(self.inner.status(bucket, key))
    }

    /// See [`crate::Limiter::policy`].
    pub fn policy(&self, bucket: &str) -> Result<Option<Policy>> {
        self.run(self.inner.policy(bucket))
    }

    /// See [`crate::Limiter::delete`].
    pub fn delete(&self, bucket: &str) -> Result<bool> {
        self.run(self.inner.delete(bucket))
    }

    /// See [`crate::Limiter::list`].
    pub fn list(&self) -> Result<Vec<(String, Policy)>> {
        self.run(self.inner.list())
    }
}

/// The small runtime a blocking limiter drives its store with.
fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("drip-blocking")
        .enable_all()
        .build()
        .map_err(|e| Error::Store(format!("cannot start the blocking runtime: {e}")))
}
