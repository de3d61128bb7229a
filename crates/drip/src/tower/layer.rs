//! `RateLimitLayer`: how requests are charged to a bucket.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use tower::Layer;

use super::service::{Config, RateLimit};
use crate::{Limiter, Store};

/// What one request costs, in units of the bucket.
///
/// Implemented by `u64` (every request costs the same) and by any
/// `Fn(&Request<B>) -> u64` (for example the `Content-Length`, for a bucket
/// counted in bytes).
pub trait RequestCost<B> {
    /// The units `req` takes from the bucket.
    fn cost(&self, req: &Request<B>) -> u64;
}

impl<B> RequestCost<B> for u64 {
    fn cost(&self, _req: &Request<B>) -> u64 {
        *self
    }
}

impl<B, F> RequestCost<B> for F
where
    F: Fn(&Request<B>) -> u64,
{
    fn cost(&self, req: &Request<B>) -> u64 {
        self(req)
    }
}

/// Applies [`RateLimit`] to a service: each request is charged to the key
/// that `key` picks in the limiter's bucket `bucket`, and goes, waits its
/// turn, or is refused as the bucket's policy decides (see the
/// [module](super) documentation for the responses).
pub struct RateLimitLayer<St: Store, K, C = u64> {
    limiter: Limiter<St>,
    bucket: Arc<str>,
    key: K,
    cost: C,
    max_wait: Option<Duration>,
}

impl<St: Store, K> RateLimitLayer<St, K> {
    /// Limits requests with `limiter`'s bucket `bucket` (which must be
    /// configured in the limiter's store), per the key `key` returns for
    /// each request. Every request costs 1 unit.
    ///
    /// `key` is any `Fn(&http::Request<B>) -> String`, e.g. one that reads
    /// the client address from axum's `ConnectInfo<SocketAddr>` extension or
    /// an API key from a header. Requests for which it returns the same
    /// string share one bucket.
    pub fn new(limiter: Limiter<St>, bucket: impl Into<String>, key: K) -> Self {
        RateLimitLayer {
            limiter,
            bucket: Arc::from(bucket.into()),
            key,
            cost: 1,
            max_wait: None,
        }
    }
}

impl<St: Store, K, C> RateLimitLayer<St, K, C> {
    /// The same layer with requests costing what `cost` says: a fixed `u64`
    /// or a function of the request. A request costing more than the policy
    /// can ever admit is answered `413 Content Too Large`.
    pub fn cost<C2>(self, cost: C2) -> RateLimitLayer<St, K, C2> {
        RateLimitLayer {
            limiter: self.limiter,
            bucket: self.bucket,
            key: self.key,
            cost,
            max_wait: self.max_wait,
        }
    }

    /// Holds each request until it may go, provided that is within
    /// `max_wait`; a request that could not go within it is answered 429 at
    /// once and takes nothing from the bucket. This is
    /// [`Limiter::acquire`] with a timeout, in either mode:
    ///
    /// - police: a request that does not fit now waits until it fits;
    /// - shape: `max_wait` replaces the capacity as the bound on the queue,
    ///   so a request is admitted whenever its turn comes within `max_wait`,
    ///   even if more than `capacity` units are then waiting.
    ///
    /// Without it (the default) police answers 429 to what does not fit now,
    /// and shape queues at most `capacity` units, each waiting at most the
    /// time a full bucket takes to drain.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// The bucket requests are charged to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

impl<St: Store, K: Clone, C: Clone> Clone for RateLimitLayer<St, K, C> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            limiter: self.limiter.clone(),
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            cost: self.cost.clone(),
            max_wait: self.max_wait,
        }
    }
}

impl<St: Store, K, C> fmt::Debug for RateLimitLayer<St, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("bucket", &self.bucket)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl<S, St: Store, K: Clone, C: Clone> Layer<S> for RateLimitLayer<St, K, C> {
    type Service = RateLimit<S, St, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let config = Config::new(
            self.limiter.clone(),
            self.bucket.clone(),
            self.key.clone(),
            self.cost.clone(),
            self.max_wait,
        );
        RateLimit::new(inner, Arc::new(config))
    }
}
