//! `Resilient<S>`: a store wrapper that applies `on_store_error` when the
//! shared store does not answer (DESIGN.md §5). It sits behind `Limiter`,
//! so front ends still reach the store only through the limiter.
//!
//! The first call that fails or times out marks the store down; while it
//! is down, decisions are answered at once by the policy (no request pays
//! a timeout) and a background probe pings the store. When it answers, the
//! units admitted by the local buckets (`local`) are charged to the shared
//! buckets, then decisions go to the store again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use drip::core::{MAX_EXACT, Request};
use drip::store::{KeyLevel, KeyStatus};
use drip::{
    Decision, Error, JointDecision, JointPart, Limit, MemoryStore, Outcome, Policy, Rate, Result,
    Store, Window,
};
use parking_lot::Mutex;

use super::health::{Health, Mode, mark_degraded};
use super::options::OnStoreError;
use super::remembered::Remembered;

/// How often a down store is pinged.
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// A store that follows `on_store_error` when `S` does not answer.
pub struct Resilient<S: Store> {
    inner: Arc<S>,
    shared: Arc<Shared>,
}

struct Shared {
    health: Arc<Health>,
    timeout: Duration,
    remembered: Arc<Remembered>,
    /// Why the store was last found down (for logs and 503s).
    cause: Mutex<String>,
    /// This outage's local buckets (`local`), replaced at each recovery.
    local: Mutex<Arc<LocalBuckets>>,
    /// Policies configured through this node (before the cluster loop has
    /// remembered them).
    configured: Mutex<HashMap<String, Policy>>,
}

/// The local buckets of one outage and the units they admitted.
#[derive(Default)]
struct LocalBuckets {
    store: MemoryStore,
    /// The share each bucket was configured with here.
    policies: Mutex<HashMap<String, Policy>>,
    /// Units admitted per (bucket, key), to charge to the shared store.
    admitted: Mutex<HashMap<(String, String), u64>>,
}

impl<S: Store> Resilient<S> {
    /// Wraps `inner`: calls past `timeout` count as failures; `health`
    /// carries the policy and the live node count; `remembered` the
    /// policies for local buckets.
    pub fn new(
        inner: S,
        health: Arc<Health>,
        timeout: Duration,
        remembered: Arc<Remembered>,
    ) -> Self {
        Resilient {
            inner: Arc::new(inner),
            shared: Arc::new(Shared {
                health,
                timeout,
                remembered,
                cause: Mutex::new(String::new()),
                local: Mutex::new(Arc::default()),
                configured: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The health this store reports to.
    pub fn health(&self) -> &Arc<Health> {
        &self.shared.health
    }

    /// Runs a store call within the timeout; a failure marks the store down.
    async fn call<T>(&self, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        if self.shared.health.is_down() {
            return Err(self.down_error());
        }
        match tokio::time::timeout(self.shared.timeout, fut).await {
            Ok(Err(Error::Store(why))) => {
                self.went_down(why.clone());
                Err(Error::Store(why))
            }
            Ok(r) => r,
            Err(_) => {
                let why = format!(
                    "the store did not answer within {} ms",
                    self.shared.timeout.as_millis()
                );
                self.went_down(why.clone());
                Err(Error::Store(why))
            }
        }
    }

    fn down_error(&self) -> Error {
        Error::Store(format!(
            "the store is down (on_store_error = {}): {}",
            self.shared.health.policy(),
            self.shared.cause.lock()
        ))
    }

    /// Marks the store down and, for a new outage, starts the probe.
    fn went_down(&self, why: String) {
        *self.shared.cause.lock() = why.clone();
        if self.shared.health.set_down() {
            tracing::warn!(cause = %why, policy = %self.shared.health.policy(),
                "the store is down: answering by on_store_error until it is back");
            tokio::spawn(probe(self.inner.clone(), self.shared.clone()));
        }
    }

    /// Answers without the store, by the policy: `deny` refuses, `allow`
    /// answers what `allowed` builds, `local` what the local buckets decide.
    async fn by_policy<T>(
        &self,
        allowed: impl FnOnce() -> T,
        local: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let health = &self.shared.health;
        let answer = match health.policy() {
            OnStoreError::Deny => {
                health.count(Mode::Deny);
                return Err(self.down_error());
            }
            OnStoreError::Allow => {
                health.count(Mode::Allow);
                allowed()
            }
            OnStoreError::Local => {
                let answer = local.await?;
                health.count(Mode::Local);
                answer
            }
        };
        mark_degraded();
        Ok(answer)
    }

    /// Answers a decision without the store, by the policy.
    async fn fallback(&self, bucket: &str, key: &str, req: Request) -> Result<Decision> {
        let local = async {
            let policy = self.local_policy(bucket)?;
            let local = self.shared.local.lock().clone();
            local
                .decide(bucket, key, req, &policy, self.shared.health.live_nodes())
                .await
        };
        self.by_policy(|| self.allowed(bucket), local).await
    }

    /// Answers a joint decision without the store, by the policy: `local`
    /// decides it jointly in the local buckets (each part's bucket with its
    /// share), all-or-nothing as the store would.
    async fn fallback_all(&self, parts: &[JointPart<'_>]) -> Result<JointDecision> {
        let allowed = || JointDecision {
            admitted: true,
            decisions: parts.iter().map(|p| self.allowed(p.bucket)).collect(),
        };
        let local = async {
            let policies = parts
                .iter()
                .map(|p| self.local_policy(p.bucket))
                .collect::<Result<Vec<_>>>()?;
            let local = self.shared.local.lock().clone();
            local
                .decide_all(parts, &policies, self.shared.health.live_nodes())
                .await
        };
        self.by_policy(allowed, local).await
    }

    /// The policy a local bucket divides; a bucket this node never saw
    /// has nothing to divide, and is refused as `deny` would.
    fn local_policy(&self, bucket: &str) -> Result<Policy> {
        self.policy(bucket).ok_or_else(|| {
            self.shared.health.count(Mode::Deny);
            self.down_error()
        })
    }

    /// What `allow` answers for `bucket`: admitted, with `RateLimit-Policy`
    /// from the policy this node remembers.
    fn allowed(&self, bucket: &str) -> Decision {
        Decision {
            outcome: Outcome::Allowed,
            wait: 0,
            queue_position: 0,
            remaining: 0,
            retry_after: 0,
            reset_after: 0,
            quota: self.policy(bucket).map(|p| p.quota()).unwrap_or_default(),
        }
    }

    /// The policy of `bucket` as this node knows it without the store.
    fn policy(&self, bucket: &str) -> Option<Policy> {
        self.shared
            .remembered
            .policy(bucket)
            .or_else(|| self.shared.configured.lock().get(bucket).cloned())
    }
}

impl LocalBuckets {
    /// Configures `bucket` here with its share of `policy`, when that
    /// share changed (first use, or the live node count moved).
    async fn configure_share(&self, bucket: &str, policy: &Policy, nodes: usize) -> Result<()> {
        let share = share(policy, nodes as u64)?;
        let changed = self.policies.lock().get(bucket) != Some(&share);
        if changed {
            self.store.configure(bucket, share.clone(), false).await?;
            self.policies.lock().insert(bucket.to_owned(), share);
        }
        Ok(())
    }

    /// Counts `units` admitted here for `key` of `bucket`, to charge later.
    fn admitted(&self, bucket: &str, key: &str, units: u64) {
        *self
            .admitted
            .lock()
            .entry((bucket.to_owned(), key.to_owned()))
            .or_default() += units;
    }

    /// A joint decision in the local buckets; `policies` are the parts'.
    async fn decide_all(
        &self,
        parts: &[JointPart<'_>],
        policies: &[Policy],
        nodes: usize,
    ) -> Result<JointDecision> {
        for (p, policy) in parts.iter().zip(policies) {
            self.configure_share(p.bucket, policy, nodes).await?;
        }
        let d = self.store.decide_all(parts).await?;
        if d.admitted {
            // Each part consumed exactly when its own decision admitted.
            for (p, dec) in parts.iter().zip(&d.decisions) {
                if dec.allowed() {
                    self.admitted(p.bucket, p.key, p.req.cost);
                }
            }
        }
        Ok(d)
    }

    async fn decide(
        &self,
        bucket: &str,
        key: &str,
        req: Request,
        policy: &Policy,
        nodes: usize,
    ) -> Result<Decision> {
        self.configure_share(bucket, policy, nodes).await?;
        let d = self.store.decide(bucket, key, req).await?;
        if d.allowed() {
            self.admitted(bucket, key, req.cost);
        }
        Ok(d)
    }
}

/// `policy` with its rate, capacity and window limits divided by `nodes`
/// (capacities and limits rounded down, at least 1): the part of the
/// shared limit one of `nodes` nodes may use alone.
pub fn share(policy: &Policy, nodes: u64) -> Result<Policy> {
    let nodes = nodes.max(1);
    let limit = policy.limit();
    let rate = limit.rate();
    let period = rate
        .period_ns()
        .checked_mul(nodes)
        .ok_or_else(|| Error::Store("the local share of the rate is too small".to_owned()))?;
    let rate = Rate::new(rate.amount(), Duration::from_nanos(period))?;
    let mut out = Policy::new(
        policy.mode(),
        Limit::new(rate, (limit.capacity() / nodes).max(1))?,
    );
    for w in policy.windows() {
        out = out.with_window(Window::new((w.limit() / nodes).max(1), w.period())?)?;
    }
    Ok(out)
}

/// Pings the store until it answers, charges what the local buckets
/// admitted, then marks it up.
async fn probe<S: Store>(inner: Arc<S>, shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        if !matches!(
            tokio::time::timeout(shared.timeout, inner.ping()).await,
            Ok(Ok(()))
        ) {
            continue;
        }
        let local = shared.local.lock().clone();
        if charge(&*inner, &local, shared.timeout).await {
            *shared.local.lock() = Arc::default();
            shared.health.set_up();
            tracing::info!("the store answers again: deciding in it");
            return;
        }
    }
}

/// Charges the units `local` admitted to the shared buckets (each as a
/// reservation that always fits, so the shared bucket refuses what was
/// spent); true when all are charged.
async fn charge<S: Store>(inner: &S, local: &LocalBuckets, timeout: Duration) -> bool {
    let owed: Vec<((String, String), u64)> = local.admitted.lock().drain().collect();
    let mut all = true;
    for ((bucket, key), units) in owed {
        let req = Request::reserve(units, MAX_EXACT);
        match tokio::time::timeout(timeout, inner.decide(&bucket, &key, req)).await {
            Ok(Ok(_)) | Ok(Err(Error::UnknownBucket(_))) => {}
            _ => {
                *local.admitted.lock().entry((bucket, key)).or_default() += units;
                all = false;
            }
        }
    }
    all
}

impl<S: Store> Store for Resilient<S> {
    async fn configure(&self, bucket: &str, policy: Policy, reset: bool) -> Result<()> {
        self.call(self.inner.configure(bucket, policy.clone(), reset))
            .await?;
        self.shared
            .configured
            .lock()
            .insert(bucket.to_owned(), policy);
        Ok(())
    }

    async fn policy(&self, bucket: &str) -> Result<Option<Policy>> {
        self.call(self.inner.policy(bucket)).await
    }

    async fn decide(&self, bucket: &str, key: &str, req: Request) -> Result<Decision> {
        if !self.shared.health.is_down() {
            match self.call(self.inner.decide(bucket, key, req)).await {
                Ok(d) => {
                    self.shared.health.count(Mode::Shared);
                    return Ok(d);
                }
                Err(Error::Store(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.fallback(bucket, key, req).await
    }

    async fn status(&self, bucket: &str, key: &str) -> Result<KeyStatus> {
        self.call(self.inner.status(bucket, key)).await
    }

    async fn decide_all(&self, parts: &[JointPart<'_>]) -> Result<JointDecision> {
        if !self.shared.health.is_down() {
            match self.call(self.inner.decide_all(parts)).await {
                Ok(d) => {
                    self.shared.health.count(Mode::Shared);
                    return Ok(d);
                }
                Err(Error::Store(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.fallback_all(parts).await
    }

    async fn delete(&self, bucket: &str) -> Result<bool> {
        let deleted = self.call(self.inner.delete(bucket)).await?;
        self.shared.configured.lock().remove(bucket);
        Ok(deleted)
    }

    async fn list(&self) -> Result<Vec<(String, Policy)>> {
        self.call(self.inner.list()).await
    }

    async fn ping(&self) -> Result<()> {
        self.call(self.inner.ping()).await
    }

    async fn sweep_idle(&self) -> Result<u64> {
        self.call(self.inner.sweep_idle()).await
    }

    async fn keys_held(&self) -> Result<Option<u64>> {
        self.call(self.inner.keys_held()).await
    }

    async fn decide_tracked(
        &self,
        bucket: &str,
        key: &str,
        req: Request,
        id: &str,
    ) -> Result<Decision> {
        if !self.shared.health.is_down() {
            match self
                .call(self.inner.decide_tracked(bucket, key, req, id))
                .await
            {
                Ok(d) => {
                    self.shared.health.count(Mode::Shared);
                    return Ok(d);
                }
                Err(Error::Store(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // Decided without the shared store: not listed in its queue.
        self.fallback(bucket, key, req).await
    }

    async fn queue(&self, bucket: &str, key: &str) -> Result<Vec<drip::QueuedRequest>> {
        self.call(self.inner.queue(bucket, key)).await
    }

    async fn cancel(&self, bucket: &str, key: &str, id: &str) -> Result<bool> {
        self.call(self.inner.cancel(bucket, key, id)).await
    }

    async fn busiest_keys(&self, bucket: &str, n: usize) -> Result<Option<Vec<KeyLevel>>> {
        self.call(self.inner.busiest_keys(bucket, n)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_divides_rate_capacity_and_windows() {
        let p = Policy::police(Limit::new(Rate::per_second(6).unwrap(), 30).unwrap())
            .with_window(Window::new(90, Duration::from_secs(60)).unwrap())
            .unwrap();
        let s = share(&p, 3).unwrap();
        assert_eq!(s.limit().capacity(), 10);
        assert_eq!(s.limit().rate().per_second_decimal(), 2.0);
        assert_eq!(s.windows()[0].limit(), 30);
        assert_eq!(share(&p, 100).unwrap().limit().capacity(), 1);
        assert_eq!(share(&p, 1).unwrap(), p);
    }
}
