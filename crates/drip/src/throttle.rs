//! Throttles: make calls wait their turn in a bucket.
//!
//! Three forms of one thing, for whichever reads best at the call site:
//! a guard (`let _turn = throttle.enter().await?;`), a call
//! (`throttle.call(|| fetch(url)).await?`), and a wrapped function
//! (`let fetch = throttle.wrap(fetch); fetch.call(url).await?`).

use std::future::Future;
use std::time::Duration;

use crate::Result;
use crate::core::Decision;
use crate::limiter::Limiter;
use crate::store::Store;

/// Waits for a turn in one bucket and key before each call.
pub struct Throttle<S: Store> {
    limiter: Limiter<S>,
    bucket: String,
    key: String,
    cost: u64,
    timeout: Option<Duration>,
}

impl<S: Store> Clone for Throttle<S> {
    fn clone(&self) -> Self {
        Throttle {
            limiter: self.limiter.clone(),
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            cost: self.cost,
            timeout: self.timeout,
        }
    }
}

/// Proof that a turn was granted; holding it releases nothing (a leaky
/// bucket meters starts, not concurrency), it only marks the scope.
#[derive(Debug, Clone, Copy)]
pub struct Turn {
    /// The decision that granted the turn.
    pub decision: Decision,
}

impl<S: Store> Throttle<S> {
    pub(crate) fn new(limiter: Limiter<S>, bucket: &str, key: &str) -> Self {
        Throttle {
            limiter,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            cost: 1,
            timeout: None,
        }
    }

    /// Each call costs `cost` units (default 1).
    pub fn with_cost(mut self, cost: u64) -> Self {
        self.cost = cost;
        self
    }

    /// Give up (with [`Error::Limited`](crate::Error::Limited)) when a turn
    /// would come later than `timeout` from now. Default: wait as long as it takes.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Waits for a turn (the guard form).
    pub async fn enter(&self) -> Result<Turn> {
        let decision = self
            .limiter
            .acquire_or_err(&self.bucket, &self.key, self.cost, self.timeout)
            .await?;
        Ok(Turn { decision })
    }

    /// Waits for a turn, then runs `f`.
    pub async fn call<F, Fut>(&self, f: F) -> Result<Fut::Output>
    where
        F: FnOnce() -> Fut,
        Fut: Future,
    {
        self.enter().await?;
        Ok(f().await)
    }

    /// Wraps `f` so that every call of the result waits its turn first.
    pub fn wrap<F>(self, f: F) -> Throttled<S, F> {
        Throttled { throttle: self, f }
    }
}

/// A function whose calls wait their turn (see [`Throttle::wrap`]).
pub struct Throttled<S: Store, F> {
    throttle: Throttle<S>,
    f: F,
}

impl<S: Store, F> Throttled<S, F> {
    /// Waits for a turn, then calls the wrapped function with `arg`.
    pub async fn call<A, Fut>(&self, arg: A) -> Result<Fut::Output>
    where
        F: Fn(A) -> Fut,
        Fut: Future,
    {
        self.throttle.enter().await?;
        Ok((self.f)(arg).await)
    }
}
