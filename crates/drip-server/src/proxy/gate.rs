//! The door every request passes: one decision through [`Limiter`] (one
//! store call), then, in shape mode, the wait for its turn.
//!
//! Police mode is [`Limiter::check`]. Shape mode is [`Limiter::acquire`]'s
//! reservation with `--queue-timeout`, then a [`precise`] wait: the request takes its place at once (so waiters
//! go strictly first come, first served per key, across every proxy on the
//! same store) and is answered 429 at once when its place is beyond the
//! timeout.
//!
//! A client that disconnects while it waits gives its place back where
//! the store can ([`Waiter`]; a policy from the flags tracks its queue in
//! shape mode, so its places are listed up to the capacity); otherwise the
//! slot passes unused, as a departure would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::Response;
use drip::tower::headers;
use drip::{Decision, Limiter, Mode, Outcome, Policy, Request, Store};
use http::{HeaderValue, StatusCode};

use super::respond;
use crate::metrics::Metrics;
use crate::waiter::Waiter;
use crate::{precise, request_id};

/// The bucket, its policy and how to wait.
pub struct Gate<S: Store> {
    limiter: Limiter<S>,
    bucket: String,
    mode: Mode,
    queue_timeout: Duration,
    /// `RateLimit-Policy`, built once from the policy read at start.
    policy_header: Option<HeaderValue>,
    /// The bucket's name as the header fields quote it, built once.
    label: Arc<str>,
    metrics: Arc<Metrics>,
}

impl<S: Store> Clone for Gate<S> {
    fn clone(&self) -> Self {
        Gate {
            limiter: self.limiter.clone(),
            bucket: self.bucket.clone(),
            mode: self.mode,
            queue_timeout: self.queue_timeout,
            policy_header: self.policy_header.clone(),
            label: self.label.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<S: Store> Gate<S> {
    /// A gate on `bucket`, configured with `policy`.
    pub fn new(
        limiter: Limiter<S>,
        bucket: &str,
        policy: &Policy,
        queue_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Gate {
            limiter,
            bucket: bucket.to_owned(),
            mode: policy.mode(),
            queue_timeout,
            policy_header: headers::ratelimit_policy(bucket, policy),
            label: headers::sf_string(bucket).into(),
            metrics,
        }
    }

    /// Admits `cost` units for `key` (after its turn, in shape mode) and
    /// returns the decision, or the answer that refuses the request.
    pub async fn pass(&self, key: &str, cost: u64) -> Result<Decision, Response> {
        let started = Instant::now();
        let decided = match self.mode {
            Mode::Police => self.limiter.check(&self.bucket, key, cost).await,
            Mode::Shape => {
                // `Limiter::acquire`'s reservation, then a wait that ends on
                // time (`precise`), not up to a millisecond late.
                // Listed under an id of its own, to give its place back by.
                let id = request_id::generate();
                let waiter = Waiter::new(&self.limiter, &self.bucket, key, &id, &self.metrics);
                let max_wait = u64::try_from(self.queue_timeout.as_nanos()).unwrap_or(u64::MAX);
                let d = self
                    .limiter
                    .decide_tracked(&self.bucket, key, Request::reserve(cost, max_wait), &id)
                    .await;
                if let Ok(d) = &d
                    && d.allowed()
                    && d.wait > 0
                {
                    precise::sleep_until(Instant::now() + Duration::from_nanos(d.wait)).await;
                }
                waiter.done();
                d
            }
        };
        let d = match decided {
            Ok(d) => d,
            Err(drip::Error::KeyLimit { limit }) => {
                // A flood of new keys: counted, not logged per request.
                self.metrics.key_refused();
                return Err(respond::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "key_limit",
                    &crate::key_cap::refusal(limit),
                ));
            }
            Err(e) => {
                self.metrics.store_error("decide");
                tracing::warn!(bucket = %self.bucket, "store error: {e}");
                return Err(respond::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the rate-limit store did not answer; try again",
                ));
            }
        };
        // The wait in shape mode is the turn, not the store's time.
        let elapsed = started
            .elapsed()
            .saturating_sub(Duration::from_nanos(if d.allowed() { d.wait } else { 0 }));
        self.metrics.decision(&self.bucket, d.outcome, elapsed);
        match d.outcome {
            Outcome::Allowed => Ok(d),
            Outcome::Limited => Err(respond::limited(
                &d,
                self.policy_header.as_ref(),
                self.ratelimit(&d),
            )),
            Outcome::Exceeds => Err(respond::exceeds(cost, self.policy_header.as_ref())),
        }
    }

    /// The `RateLimit` field of a decision.
    pub fn ratelimit(&self, d: &Decision) -> Option<HeaderValue> {
        HeaderValue::from_str(&headers::ratelimit_value(&self.label, d)).ok()
    }
}
