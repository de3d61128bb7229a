//! `RateLimit`: the service that admits, delays or refuses each request.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower::Service;

use super::future::ResponseFuture;
use super::layer::RequestCost;
use crate::headers::{fields, sf_string};
use crate::limiter::reservation;
use crate::{Decision, Error, Limiter, Outcome, Request as Ask, Result, Store, wait_turn};

/// A service that charges each request to a bucket of a [`Limiter`] before
/// passing it to the inner service; made by
/// [`RateLimitLayer`](super::RateLimitLayer).
pub struct RateLimit<S, St: Store, K, C = u64> {
    inner: S,
    config: Arc<Config<St, K, C>>,
}

impl<S, St: Store, K, C> RateLimit<S, St, K, C> {
    pub(super) fn new(inner: S, config: Arc<Config<St, K, C>>) -> Self {
        RateLimit { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, without the rate limit.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, St: Store, K, C> Clone for RateLimit<S, St, K, C> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug, St: Store, K, C> fmt::Debug for RateLimit<S, St, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("bucket", &self.config.bucket)
            .field("max_wait", &self.config.max_wait)
            .finish_non_exhaustive()
    }
}

impl<S, St, K, C, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, St, K, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    St: Store,
    K: Fn(&Request<ReqBody>) -> String + Send + Sync + 'static,
    C: RequestCost<ReqBody> + Send + Sync + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The clone may not be ready; the instance that was polled ready
        // serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        let key = (config.key)(&req);
        let cost = config.cost.cost(&req);
        ResponseFuture::new(async move {
            let decision = match config.admit(&key, cost).await {
                Ok(d) => d,
                Err(e) => return Ok(error_response(&e)),
            };
            if !decision.allowed() {
                return Ok(config.refusal(&decision));
            }
            let mut res = inner.call(req).await?;
            // Appended, so limits nested in one another list side by side.
            fields(&config.label, &decision).append_to(res.headers_mut());
            Ok(res)
        })
    }
}

/// What a layer was built with, shared by every clone of its services.
pub(super) struct Config<St: Store, K, C> {
    limiter: Limiter<St>,
    bucket: Arc<str>,
    /// The bucket's name as a structured-field string, `"bucket"`.
    label: String,
    key: K,
    cost: C,
    max_wait: Option<Duration>,
}

impl<St: Store, K, C> Config<St, K, C> {
    pub(super) fn new(
        limiter: Limiter<St>,
        bucket: Arc<str>,
        key: K,
        cost: C,
        max_wait: Option<Duration>,
    ) -> Self {
        Config {
            limiter,
            label: sf_string(&bucket),
            bucket,
            key,
            cost,
            max_wait,
        }
    }

    /// Decides the request (one store call) and, once admitted, waits
    /// until it may go.
    async fn admit(&self, key: &str, cost: u64) -> Result<Decision> {
        // Without `max_wait`, a check: it queues a shaped request only while
        // the queue has room, where a reservation without a timeout would
        // queue it however long the wait.
        let ask = match self.max_wait {
            Some(max_wait) => reservation(cost, Some(max_wait)),
            None => Ask::check(cost),
        };
        let d = self.limiter.decide(&self.bucket, key, ask).await?;
        wait_turn(&d, std::future::pending()).await;
        Ok(d)
    }

    /// The response to a request that was not admitted: 429, or 413 for a
    /// cost the policy can never admit; its fields come from the decision.
    fn refusal<B: Default>(&self, d: &Decision) -> Response<B> {
        let mut res = Response::new(B::default());
        *res.status_mut() = if d.outcome == Outcome::Exceeds {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        fields(&self.label, d).append_to(res.headers_mut());
        res
    }
}

/// The middleware's answer when the limiter could not decide: 503 when the
/// store failed or is full of keys, 500 for a misconfiguration (no such
/// bucket) and anything else.
fn error_response<B: Default>(e: &Error) -> Response<B> {
    let mut res = Response::new(B::default());
    *res.status_mut() = match e {
        Error::Store(_) | Error::KeyLimit { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    res
}
