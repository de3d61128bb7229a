//! The operations of the contract, shared by the HTTP and gRPC front ends:
//! each checks its input, calls the limiter and records metrics. The front
//! ends only translate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drip::core::{NANOS_PER_SEC, Request};
use drip::{Decision, KeyStatus, Limiter, Outcome, Store, wait_turn};
use tokio_util::sync::CancellationToken;

use crate::cluster::{ClusterHandle, OnStoreError, watch_degraded};
use crate::error::ApiError;
use crate::limits;
use crate::metrics::Metrics;
use crate::model::{
    BucketList, BucketStatus, ClusterStatus, ConfigureBody, DecisionBody, Leader, NodeStatus,
    QueueBody, QueuedRequestBody, WindowSpec,
};
use crate::request_id::{self, RequestId};
use crate::waiter::Waiter;

/// Who this node is, as `/v1/cluster` reports it.
#[derive(Clone, Debug)]
pub struct Node {
    /// The node's id.
    pub id: String,
    /// Address of its HTTP listener.
    pub http: String,
    /// Address of its gRPC listener.
    pub grpc: String,
}

/// One server's shared state: the limiter, its metrics, the admin token and
/// the shutdown signal that waiting requests listen to.
pub struct App<S: Store> {
    limiter: Limiter<S>,
    metrics: Arc<Metrics>,
    admin_token: Option<String>,
    node: Node,
    shutdown: CancellationToken,
    /// The cluster this node is part of (Redis stores); none: on its own.
    cluster: Option<ClusterHandle>,
    /// How long counters outlive the water in buckets that do not say.
    counter_retention: Duration,
}

/// A decision: with the bucket's name, which the caller has, all its
/// response needs (the decision's `quota` names the policy for
/// `RateLimit-Policy`).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The decision.
    pub decision: Decision,
    /// Decided without the shared store (`on_store_error = allow | local`).
    pub degraded: bool,
    /// The request's id: the one asked with, or the one this node made.
    pub request_id: RequestId,
}

impl Answer {
    /// The JSON body of the decision.
    pub fn body(&self) -> DecisionBody {
        DecisionBody {
            degraded: self.degraded,
            request_id: self.request_id.clone(),
            ..decision_body(&self.decision)
        }
    }

    /// The JSON body of the decision, taking the request id (no copy).
    pub fn take_body(&mut self) -> DecisionBody {
        DecisionBody {
            degraded: self.degraded,
            request_id: std::mem::take(&mut self.request_id),
            ..decision_body(&self.decision)
        }
    }
}

/// A decision as the contract reports it: times in ms, rounded up.
pub fn decision_body(d: &Decision) -> DecisionBody {
    DecisionBody {
        allowed: d.allowed(),
        queue_position: d.queue_position,
        estimated_wait_ms: ceil_ms(d.wait),
        remaining: d.remaining,
        retry_after_ms: ceil_ms(d.retry_after),
        reset_after_ms: ceil_ms(d.reset_after),
        request_id: RequestId::default(),
        degraded: false,
    }
}

/// Nanoseconds as whole milliseconds, rounded up (a client that waits that
/// long is never early).
pub fn ceil_ms(ns: u64) -> u64 {
    ns.div_ceil(1_000_000)
}

impl<S: Store> App<S> {
    /// State for a server over `limiter`.
    pub fn new(
        limiter: Limiter<S>,
        admin_token: Option<String>,
        node: Node,
        shutdown: CancellationToken,
        cluster: Option<ClusterHandle>,
    ) -> Arc<Self> {
        Self::with_counter_retention(
            limiter,
            admin_token,
            node,
            shutdown,
            cluster,
            limits::DEFAULT_COUNTER_RETENTION,
        )
    }

    /// State for a server over `limiter` whose buckets keep their counters
    /// for `counter_retention` unless they say otherwise.
    pub fn with_counter_retention(
        limiter: Limiter<S>,
        admin_token: Option<String>,
        node: Node,
        shutdown: CancellationToken,
        cluster: Option<ClusterHandle>,
        counter_retention: Duration,
    ) -> Arc<Self> {
        Arc::new(App {
            limiter,
            metrics: Arc::new(Metrics::new()),
            admin_token: admin_token.filter(|t| !t.is_empty()),
            node,
            shutdown,
            cluster,
            counter_retention,
        })
    }

    /// The limiter.
    pub fn limiter(&self) -> &Limiter<S> {
        &self.limiter
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Cancelled when the server starts shutting down.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Checks the `Authorization` value of an admin call: `Bearer <token>`
    /// when the server has a token, anything otherwise.
    pub fn authorize(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        let Some(token) = &self.admin_token else {
            return Ok(());
        };
        let given = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::Unauthenticated)
        }
    }

    /// Creates or replaces `bucket` and returns the status of its key `""`.
    pub async fn configure(
        &self,
        bucket: &str,
        body: &ConfigureBody,
    ) -> Result<BucketStatus, ApiError> {
        let bucket = limits::bucket_id(bucket)?;
        let policy = limits::policy(
            body.mode.as_deref(),
            body.capacity,
            body.leak_rate,
            &body.windows,
            body.counter_retention_s,
            self.counter_retention,
        )?
        .with_track_queue(limits::track_queue(body.track_queue));
        let done = if body.reset {
            self.limiter.configure_reset(bucket, policy).await
        } else {
            self.limiter.configure(bucket, policy).await
        };
        done.map_err(|e| self.failed("configure", e))?;
        self.status(bucket, "").await
    }

    /// Decides now whether `cost` units for `key` may go.
    pub async fn allow(
        &self,
        bucket: &str,
        key: &str,
        cost: Option<u64>,
        request_id: Option<String>,
    ) -> Result<Answer, ApiError> {
        let request_id = request_id::resolve(request_id)?;
        let bucket = limits::bucket_id(bucket)?;
        let key = limits::key(key)?;
        let cost = limits::cost(cost)?;
        let (decision, degraded) = self
            .decide(bucket, key, Request::check(cost), &request_id)
            .await?;
        self.answer(bucket, decision, degraded, request_id)
    }

    /// Answers when `cost` units for `key` may go (after waiting for them),
    /// or at once when that cannot be within `timeout_ms`. If the server
    /// shuts down meanwhile the waiter gets [`ApiError::ShuttingDown`]; if
    /// the caller drops the future, the wait ends, is counted as cancelled,
    /// and the place is given back where the store can
    /// ([`Limiter::cancel`]: a bucket that tracks its queue, a listed place
    /// (within the capacity) that is the key's last, no windows); otherwise
    /// it stays used.
    pub async fn acquire(
        &self,
        bucket: &str,
        key: &str,
        cost: Option<u64>,
        timeout_ms: Option<u64>,
        request_id: Option<String>,
    ) -> Result<Answer, ApiError> {
        let request_id = request_id::resolve(request_id)?;
        let bucket = limits::bucket_id(bucket)?;
        let key = limits::key(key)?;
        let cost = limits::cost(cost)?;
        let timeout = limits::timeout(timeout_ms)?;
        if self.shutdown.is_cancelled() {
            return Err(ApiError::ShuttingDown);
        }
        let max_wait = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let (decision, degraded) = self
            .decide(bucket, key, Request::reserve(cost, max_wait), &request_id)
            .await?;
        let waiter = Waiter::new(&self.limiter, bucket, key, &request_id, &self.metrics);
        let turned = wait_turn(&decision, self.shutdown.cancelled()).await;
        waiter.done();
        if !turned {
            return Err(ApiError::ShuttingDown);
        }
        self.answer(bucket, decision, degraded, request_id)
    }

    /// Level and counters of `key` in `bucket`.
    pub async fn status(&self, bucket: &str, key: &str) -> Result<BucketStatus, ApiError> {
        let bucket = limits::bucket_id(bucket)?;
        let key = limits::key(key)?;
        let s = self
            .limiter
            .status(bucket, key)
            .await
            .map_err(|e| self.failed("status", e))?;
        Ok(bucket_status(bucket, key, &s))
    }

    /// The requests of `key` in `bucket` admitted and not yet departed.
    pub async fn queue(&self, bucket: &str, key: &str) -> Result<QueueBody, ApiError> {
        let bucket = limits::bucket_id(bucket)?;
        let key = limits::key(key)?;
        let requests = self
            .limiter
            .queue(bucket, key)
            .await
            .map_err(|e| self.failed("queue", e))?;
        Ok(QueueBody {
            bucket_id: bucket.to_owned(),
            key: key.to_owned(),
            requests: requests
                .into_iter()
                .map(|r| QueuedRequestBody {
                    request_id: r.request_id,
                    enqueue_time_ms: r.enqueue_time_ms,
                    estimated_process_time_ms: r.estimated_process_time_ms,
                })
                .collect(),
        })
    }

    /// Removes `bucket`.
    pub async fn delete(&self, bucket: &str) -> Result<(), ApiError> {
        let bucket = limits::bucket_id(bucket)?;
        match self.limiter.delete(bucket).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ApiError::UnknownBucket(bucket.to_owned())),
            Err(e) => Err(self.failed("delete", e)),
        }
    }

    /// Every bucket with the status of its key `""`.
    pub async fn list(&self) -> Result<BucketList, ApiError> {
        let all = self
            .limiter
            .list()
            .await
            .map_err(|e| self.failed("list", e))?;
        let mut buckets = Vec::with_capacity(all.len());
        for (name, _) in all {
            match self.limiter.status(&name, "").await {
                Ok(s) => buckets.push(bucket_status(&name, "", &s)),
                // Deleted since the list was read.
                Err(drip::Error::UnknownBucket(_)) => {}
                Err(e) => return Err(self.failed("status", e)),
            }
        }
        Ok(BucketList { buckets })
    }

    /// The cluster as this node sees it: the members and the leader as
    /// Redis has them; on its own (memory, SQLite), itself as leader.
    pub async fn cluster(&self) -> ClusterStatus {
        if let Some(c) = &self.cluster {
            return c.0.status().await.unwrap_or_else(|| ClusterStatus {
                node_id: self.node.id.clone(),
                leader: String::new(),
                nodes: Vec::new(),
            });
        }
        ClusterStatus {
            node_id: self.node.id.clone(),
            leader: self.node.id.clone(),
            nodes: vec![NodeStatus {
                node_id: self.node.id.clone(),
                http: self.node.http.clone(),
                grpc: self.node.grpc.clone(),
                last_seen_ms: 0,
                alive: true,
            }],
        }
    }

    /// The node holding the leader lease (empty while nobody does).
    pub async fn leader(&self) -> Leader {
        Leader {
            leader: self.cluster().await.leader,
        }
    }

    /// Ready when the store answers; while it is known down, ready but
    /// degraded under `on_store_error = allow | local` (returns the
    /// policy), unavailable under `deny`.
    pub async fn ready(&self) -> Result<Option<OnStoreError>, ApiError> {
        if let Some(c) = &self.cluster {
            let health = c.0.health();
            if health.is_down() {
                return match health.policy() {
                    OnStoreError::Deny => Err(ApiError::Unavailable(
                        "the store is down (on_store_error = deny)".to_owned(),
                    )),
                    p => Ok(Some(p)),
                };
            }
        }
        self.limiter
            .ping()
            .await
            .map_err(|e| self.failed("ping", e))?;
        Ok(None)
    }

    /// The metrics text, with the keys held counted now.
    pub async fn render_metrics(&self) -> String {
        self.count_keys().await;
        if let Some(c) = &self.cluster {
            self.metrics.cluster(&c.0.metrics(), c.0.health());
        }
        self.metrics.render()
    }

    /// Forgets idle keys, then updates the keys-held gauge.
    pub async fn sweep(&self) {
        if let Err(e) = self.limiter.sweep_idle().await {
            tracing::warn!(error = %e, "sweeping idle keys failed");
            self.metrics.store_error("sweep");
        }
        self.count_keys().await;
    }

    async fn count_keys(&self) {
        match self.limiter.keys_held().await {
            Ok(Some(n)) => self.metrics.keys_held(n),
            Ok(None) => {}
            Err(_) => self.metrics.store_error("keys_held"),
        }
    }

    /// One decision (listed as `id` when the bucket tracks its queue), and
    /// whether it was made without the shared store.
    async fn decide(
        &self,
        bucket: &str,
        key: &str,
        req: Request,
        id: &str,
    ) -> Result<(Decision, bool), ApiError> {
        let start = Instant::now();
        // Only a cluster's store (`cluster::Resilient`) decides degraded:
        // memory and SQLite skip the task-local scope that watches for it.
        let (d, degraded) = if self.cluster.is_some() {
            watch_degraded(self.limiter.decide_tracked(bucket, key, req, id)).await
        } else {
            (
                self.limiter.decide_tracked(bucket, key, req, id).await,
                false,
            )
        };
        let d = d.map_err(|e| self.failed("decide", e))?;
        self.metrics.decision(bucket, d.outcome, start.elapsed());
        Ok((d, degraded))
    }

    /// The answer to a decision; no store call (the decision carries its
    /// policy's quota).
    fn answer(
        &self,
        bucket: &str,
        decision: Decision,
        degraded: bool,
        request_id: RequestId,
    ) -> Result<Answer, ApiError> {
        if decision.outcome == Outcome::Exceeds {
            return Err(limits::cost_exceeds(bucket, decision.quota.max_cost()));
        }
        Ok(Answer {
            decision,
            degraded,
            request_id,
        })
    }

    /// Counts a store failure and turns it into the client's error.
    fn failed(&self, op: &'static str, e: drip::Error) -> ApiError {
        if let drip::Error::KeyLimit { .. } = e {
            // A flood of new keys: counted, not logged per request.
            self.metrics.key_refused();
        } else if let drip::Error::Store(_) = e {
            tracing::warn!(op, error = %e, "store call failed");
            self.metrics.store_error(op);
        }
        e.into()
    }
}

/// The contract's status object of `key` in `bucket`.
pub fn bucket_status(bucket: &str, key: &str, s: &KeyStatus) -> BucketStatus {
    let p = &s.policy;
    BucketStatus {
        bucket_id: bucket.to_owned(),
        key: key.to_owned(),
        mode: p.mode().as_str().to_owned(),
        capacity: p.limit().capacity(),
        leak_rate: p.limit().rate().per_second_decimal(),
        windows: p
            .windows()
            .iter()
            .map(|w| WindowSpec {
                limit: w.limit(),
                period_s: w.period_ns() as f64 / NANOS_PER_SEC as f64,
            })
            .collect(),
        level: s.level.level,
        queue_size: s.level.queue_size,
        total_requests: s.counters.total(),
        allowed_requests: s.counters.allowed,
        rejected_requests: s.counters.rejected,
        processed_requests: s.processed(),
        counter_retention_s: p.counter_retention().as_secs_f64(),
        track_queue: p.tracks_queue(),
    }
}

/// Compares secrets in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
