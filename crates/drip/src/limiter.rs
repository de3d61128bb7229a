//! `Limiter`: the API programs embed, over any [`Store`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::core::{Decision, JointDecision, Outcome, Policy, Request};
use crate::store::{JointPart, KeyLevel, KeyStatus, MemoryStore, QueuedRequest, Store};
use crate::throttle::Throttle;
use crate::{Error, Result};

/// Rate limits named buckets kept in a store. Cloning is cheap and clones
/// share the store.
///
/// ```
/// # tokio_test_block_on(async {
/// use drip::{Limit, Limiter, Policy, Rate};
/// let limiter = Limiter::memory();
/// let policy = Policy::police(Limit::new(Rate::per_second(5)?, 10)?);
/// limiter.configure("api", policy).await?;
/// let d = limiter.check("api", "client-1", 1).await?;
/// assert!(d.allowed());
/// # Ok::<(), drip::Error>(())
/// # }).unwrap();
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
/// # }
/// ```
pub struct Limiter<S: Store = MemoryStore> {
    store: Arc<S>,
}

impl<S: Store> Clone for Limiter<S> {
    fn clone(&self) -> Self {
        Limiter {
            store: self.store.clone(),
        }
    }
}

impl Limiter<MemoryStore> {
    /// A limiter on a fresh memory store.
    pub fn memory() -> Self {
        Limiter::new(MemoryStore::new())
    }
}

impl<S: Store> Limiter<S> {
    /// A limiter over `store`.
    pub fn new(store: S) -> Self {
        Limiter {
            store: Arc::new(store),
        }
    }

    /// The store, for store-specific calls in tests and tools
    /// (`MemoryStore::sweep`...). Front ends go through the methods of
    /// `Limiter`: it is the one door to a store.
    #[doc(hidden)]
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Decides `req` for `key` of `bucket`: exactly one store call. The
    /// decision carries what a response needs ([`Decision::quota`]), so no
    /// second call is ever needed to answer it.
    pub async fn decide(&self, bucket: &str, key: &str, req: Request) -> Result<Decision> {
        self.store.decide(bucket, key, req).await
    }

    /// Decides `parts` (each a request for a key of a bucket) jointly, in
    /// exactly one store call: all admitted and all consumed, or none
    /// consumed, with one decision per part ([`JointDecision`]).
    pub async fn decide_all(&self, parts: &[JointPart<'_>]) -> Result<JointDecision> {
        self.store.decide_all(parts).await
    }

    /// Checks that the store answers (readiness).
    pub async fn ping(&self) -> Result<()> {
        self.store.ping().await
    }

    /// Forgets keys that are idle now and returns how many (stores that
    /// expire keys themselves answer 0).
    pub async fn sweep_idle(&self) -> Result<u64> {
        self.store.sweep_idle().await
    }

    /// Keys holding state now, where the store can tell cheaply.
    pub async fn keys_held(&self) -> Result<Option<u64>> {
        self.store.keys_held().await
    }

    /// Creates or replaces `bucket`; existing keys keep their water.
    pub async fn configure(&self, bucket: &str, policy: Policy) -> Result<()> {
        self.store.configure(bucket, policy, false).await
    }

    /// Creates or replaces `bucket` and empties every key's state.
    pub async fn configure_reset(&self, bucket: &str, policy: Policy) -> Result<()> {
        self.store.configure(bucket, policy, true).await
    }

    /// Decides now whether `cost` units for `key` may go: police admits or
    /// rejects; shape queues (see `Decision::wait`) or rejects (queue full).
    pub async fn check(&self, bucket: &str, key: &str, cost: u64) -> Result<Decision> {
        self.store.decide(bucket, key, Request::check(cost)).await
    }

    /// Waits until `cost` units for `key` may go and returns the decision
    /// that admitted them. The request takes its place at once, so waiters
    /// are served first come, first served and none starves. With a
    /// `timeout`, a request that could not go within it is not admitted:
    /// the limited decision is returned at once and nothing is consumed.
    ///
    /// A waiting request holds its place outside the bucket until its turn,
    /// in both modes: in shape mode `acquire` does not refuse because the
    /// queue is full now, it waits for room, and the timeout (not the
    /// capacity) bounds how far ahead places are taken. Use
    /// [`check`](Self::check) and sleep `Decision::wait` to be refused when
    /// the queue is full instead. While places are held, `level` counts
    /// them and may exceed the capacity.
    ///
    /// If the future is dropped while waiting, the place it took stays used.
    pub async fn acquire(
        &self,
        bucket: &str,
        key: &str,
        cost: u64,
        timeout: Option<Duration>,
    ) -> Result<Decision> {
        let d = self.decide(bucket, key, reservation(cost, timeout)).await?;
        wait_turn(&d, std::future::pending()).await;
        Ok(d)
    }

    /// Like [`acquire`](Self::acquire), but a request that is not admitted is
    /// an error: [`Error::Limited`] or [`Error::Exceeds`].
    pub async fn acquire_or_err(
        &self,
        bucket: &str,
        key: &str,
        cost: u64,
        timeout: Option<Duration>,
    ) -> Result<Decision> {
        admitted(self.acquire(bucket, key, cost, timeout).await?, cost)
    }

    /// Level and counters of `key` in `bucket`.
    pub async fn status(&self, bucket: &str, key: &str) -> Result<KeyStatus> {
        self.store.status(bucket, key).await
    }

    /// The policy of `bucket`, if configured.
    pub async fn policy(&self, bucket: &str) -> Result<Option<Policy>> {
        self.store.policy(bucket).await
    }

    /// Removes `bucket`; false if there was none.
    pub async fn delete(&self, bucket: &str) -> Result<bool> {
        self.store.delete(bucket).await
    }

    /// Every configured bucket with its policy.
    pub async fn list(&self) -> Result<Vec<(String, Policy)>> {
        self.store.list().await
    }

    /// The `n` keys of `bucket` holding the most water now, fullest first,
    /// or `None` where the store cannot tell cheaply (see
    /// [`Store::busiest_keys`]). For dashboards: one store call.
    pub async fn busiest_keys(&self, bucket: &str, n: usize) -> Result<Option<Vec<KeyLevel>>> {
        self.store.busiest_keys(bucket, n).await
    }

    /// A throttle: each call through it waits its turn in `bucket` for `key`.
    pub fn throttle(&self, bucket: &str, key: &str) -> Throttle<S> {
        Throttle::new(self.clone(), bucket, key)
    }

    /// Decides `req` as [`decide`](Self::decide) does (one store call) and,
    /// if the bucket tracks its queue ([`Policy::with_track_queue`]) and
    /// admits it, lists it as `id` in [`queue`](Self::queue).
    pub async fn decide_tracked(
        &self,
        bucket: &str,
        key: &str,
        req: Request,
        id: &str,
    ) -> Result<Decision> {
        self.store.decide_tracked(bucket, key, req, id).await
    }

    /// The requests of `key` in `bucket` admitted and not yet departed, in
    /// departure order: empty unless the bucket tracks its queue
    /// ([`Policy::with_track_queue`], shape mode).
    /// [`Error::UnknownBucket`] when there is no such bucket.
    pub async fn queue(&self, bucket: &str, key: &str) -> Result<Vec<QueuedRequest>> {
        self.store.queue(bucket, key).await
    }

    /// Takes the queued request `id` off `key`'s list and gives its place
    /// back where that is exact (see [`Store::cancel`]): true when given
    /// back, false when its place stays used.
    pub async fn cancel(&self, bucket: &str, key: &str, id: &str) -> Result<bool> {
        self.store.cancel(bucket, key, id).await
    }
}

/// Sleeps until the turn an admitted decision grants (`Decision::wait`
/// from when it was made; at once for a refusal or no wait), unless `stop`
/// finishes first. True when the turn came, false when stopped. Every
/// waiting API (`acquire`, the blocking limiter, throttles, the tower
/// layer, the server) waits through this one function.
pub async fn wait_turn(d: &Decision, stop: impl Future<Output = ()>) -> bool {
    if !d.allowed() || d.wait == 0 {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_nanos(d.wait)) => true,
        _ = stop => false,
    }
}

/// The request `acquire` makes: a place within `timeout` (none: any wait).
pub(crate) fn reservation(cost: u64, timeout: Option<Duration>) -> Request {
    let max_wait = timeout.map_or(u64::MAX, |t| {
        u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
    });
    Request::reserve(cost, max_wait)
}

/// The decision if admitted, else the error that says why not.
pub(crate) fn admitted(d: Decision, cost: u64) -> Result<Decision> {
    match d.outcome {
        Outcome::Allowed => Ok(d),
        Outcome::Limited => Err(Error::Limited {
            retry_after: Duration::from_nanos(d.retry_after),
        }),
        Outcome::Exceeds => Err(Error::Exceeds { cost }),
    }
}
