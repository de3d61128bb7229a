//! A request between its decision and its turn (`drip serve`'s acquire, the
//! proxy's shape mode). If it is dropped there, its client went away: the
//! store is asked to give its place back ([`Limiter::cancel`]: where a
//! bucket tracks its queue, for a listed place that is the key's last, no
//! windows), then the wait is counted in `drip_acquire_cancelled_total`.

use std::sync::Arc;

use drip::{Limiter, Store};

use crate::metrics::Metrics;

/// The place a waiting request holds, given back if it is dropped before
/// [`done`](Self::done).
pub struct Waiter<'a, S: Store> {
    limiter: &'a Limiter<S>,
    bucket: &'a str,
    key: &'a str,
    /// The id the place is listed under.
    id: &'a str,
    metrics: &'a Arc<Metrics>,
    armed: bool,
}

impl<'a, S: Store> Waiter<'a, S> {
    /// The place `id` of `key` in `bucket`.
    pub fn new(
        limiter: &'a Limiter<S>,
        bucket: &'a str,
        key: &'a str,
        id: &'a str,
        metrics: &'a Arc<Metrics>,
    ) -> Self {
        Waiter {
            limiter,
            bucket,
            key,
            id,
            metrics,
            armed: true,
        }
    }

    /// The turn came (or the wait ended otherwise): nothing to give back.
    pub fn done(mut self) {
        self.armed = false;
    }
}

impl<S: Store> Drop for Waiter<'_, S> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let metrics = self.metrics.clone();
        // Dropped with the request's task, which cannot wait for a store
        // call: the call runs in a task of its own, and the wait is counted
        // once the store has been asked.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            metrics.acquire_cancelled();
            return;
        };
        let (limiter, bucket, key, id) = (
            self.limiter.clone(),
            self.bucket.to_owned(),
            self.key.to_owned(),
            self.id.to_owned(),
        );
        runtime.spawn(async move {
            if let Err(e) = limiter.cancel(&bucket, &key, &id).await {
                tracing::debug!(bucket, key, id, "giving a cancelled place back: {e}");
            }
            metrics.acquire_cancelled();
        });
    }
}
