//! The dashboard's sampler: once a second, while at least one browser
//! watches, it reads every bucket through the server's [`App`] (the limiter's
//! `list` and `status`, the Prometheus decision counters and the cluster
//! view), keeps a few minutes of each bucket's level, reads the busiest
//! keys of the buckets on the pages browsers show (the limiter's
//! `busiest_keys`), and broadcasts the snapshot. With nobody watching there
//! is no task and no cost.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drip::Store;
use serde::Serialize;
use tokio::sync::broadcast;

use super::watched::{Watch, Watched};
use crate::app::App;
use crate::metrics::DECISIONS;
use crate::model::ClusterStatus;

/// How often a snapshot is taken.
pub const EVERY: Duration = Duration::from_secs(1);
/// Samples of history kept per bucket (five minutes at one a second).
pub const HISTORY: usize = 300;
/// Busiest keys read per bucket shown.
pub const TOP_KEYS: usize = 5;
/// Most buckets whose busiest keys one sample reads (over every watched page).
pub const MAX_KEYED_BUCKETS: usize = 100;

/// One of a bucket's busiest keys in a snapshot.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct KeySample {
    /// The key.
    pub key: String,
    /// Units in its bucket now.
    pub level: f64,
    /// Its queue size now (shape mode: requests waiting).
    pub queue_size: u64,
    /// Requests it has had admitted (within the counter retention).
    pub allowed: u64,
    /// Requests it has had refused (within the counter retention).
    pub rejected: u64,
}

/// One bucket in a snapshot.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct BucketSample {
    /// The bucket's name.
    pub bucket_id: String,
    /// `police` or `shape`.
    pub mode: String,
    /// Units the bucket holds.
    pub capacity: u64,
    /// Units leaked per second.
    pub leak_rate: f64,
    /// Level of key `""` now.
    pub level: f64,
    /// Queue size of key `""` now (shape mode: requests waiting).
    pub queue_size: u64,
    /// Decisions admitted per second over the last interval, all keys.
    pub admitted_per_s: f64,
    /// Decisions refused per second over the last interval, all keys.
    pub rejected_per_s: f64,
    /// Decisions admitted since the server started, all keys.
    pub admitted_total: u64,
    /// Decisions refused since the server started, all keys.
    pub rejected_total: u64,
    /// The keys holding the most water now, fullest first (at most
    /// [`TOP_KEYS`]; drained keys left out). Read only for buckets on a
    /// page some browser shows; empty otherwise, and where the store cannot
    /// tell cheaply (a Redis Cluster).
    pub busiest_keys: Vec<KeySample>,
}

/// Everything a browser is sent, before its page is cut out.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Epoch milliseconds of the sample.
    pub t_ms: u64,
    /// Every bucket, busiest first (decisions per second, then level, then name).
    pub buckets: Vec<BucketSample>,
    /// The cluster as this node sees it.
    pub cluster: ClusterStatus,
    /// Recent (t_ms, level) of every bucket, oldest first.
    pub history: HashMap<String, VecDeque<(u64, f64)>>,
    /// An error reading the store, if the last sample failed.
    pub error: Option<String>,
}

/// The sampler of one server: started by the first subscriber, stopped
/// when the last one leaves.
pub struct Sampler<S: Store> {
    app: Arc<App<S>>,
    live: Mutex<Option<broadcast::Sender<Arc<Snapshot>>>>,
    last: Mutex<Option<Arc<Snapshot>>>,
    watched: Arc<Watched>,
}

impl<S: Store> Sampler<S> {
    /// A sampler over `app`, idle.
    pub fn new(app: Arc<App<S>>) -> Arc<Sampler<S>> {
        Arc::new(Sampler {
            app,
            live: Mutex::new(None),
            last: Mutex::new(None),
            watched: Arc::default(),
        })
    }

    /// Counts a browser showing `page` of `per_page` buckets (whose busiest
    /// keys are then read) until the guard drops.
    pub fn watch(&self, page: usize, per_page: usize) -> Watch {
        self.watched.watch(page, per_page)
    }

    /// True while a sampling task runs (someone watches).
    pub fn is_sampling(&self) -> bool {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Subscribes to snapshots, starting the sampling task if none runs.
    /// Returns the latest snapshot too, when there is one.
    pub fn subscribe(
        self: &Arc<Self>,
    ) -> (broadcast::Receiver<Arc<Snapshot>>, Option<Arc<Snapshot>>) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let rx = match live.as_ref() {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(4);
                *live = Some(tx.clone());
                tokio::spawn(self.clone().sample(tx));
                rx
            }
        };
        let last = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (rx, last)
    }

    /// Samples every [`EVERY`] until nobody listens or the server stops.
    async fn sample(self: Arc<Self>, tx: broadcast::Sender<Arc<Snapshot>>) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut history: HashMap<String, VecDeque<(u64, f64)>> = HashMap::new();
        let mut previous: Option<(u64, BTreeMap<String, [u64; 2]>)> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.app.shutdown().cancelled() => break,
            }
            {
                // Stop under the lock, so a new subscriber either joins this
                // task or starts the next one.
                let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
                if tx.receiver_count() == 0 {
                    *live = None;
                    break;
                }
            }
            let snap = Arc::new(self.snapshot(&mut history, &mut previous).await);
            *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(snap.clone());
            let _ = tx.send(snap);
        }
        *self.live.lock().unwrap_or_else(PoisonError::into_inner) = None;
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    async fn snapshot(
        &self,
        history: &mut HashMap<String, VecDeque<(u64, f64)>>,
        previous: &mut Option<(u64, BTreeMap<String, [u64; 2]>)>,
    ) -> Snapshot {
        let t_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let counts = decision_counts(&self.app.render_metrics().await);
        let dt = previous
            .as_ref()
            .map(|(t, _)| t_ms.saturating_sub(*t) as f64 / 1000.0)
            .filter(|&dt| dt > 0.0);
        let (mut buckets, error) = match self.app.list().await {
            Ok(list) => (list.buckets, None),
            Err(e) => (Vec::new(), Some(e.public_message())),
        };
        let mut out: Vec<BucketSample> = buckets
            .drain(..)
            .map(|b| {
                let now = counts.get(&b.bucket_id).copied().unwrap_or_default();
                let before = previous
                    .as_ref()
                    .and_then(|(_, p)| p.get(&b.bucket_id).copied())
                    .unwrap_or(now);
                let rate =
                    |i: usize| dt.map_or(0.0, |dt| now[i].saturating_sub(before[i]) as f64 / dt);
                BucketSample {
                    admitted_per_s: rate(0),
                    rejected_per_s: rate(1),
                    admitted_total: now[0],
                    rejected_total: now[1],
                    bucket_id: b.bucket_id,
                    mode: b.mode,
                    capacity: b.capacity,
                    leak_rate: b.leak_rate,
                    level: b.level,
                    queue_size: b.queue_size,
                    busiest_keys: Vec::new(),
                }
            })
            .collect();
        out.sort_by(|a, b| {
            let busy = |s: &BucketSample| s.admitted_per_s + s.rejected_per_s;
            busy(b)
                .total_cmp(&busy(a))
                .then(b.level.total_cmp(&a.level))
                .then_with(|| a.bucket_id.cmp(&b.bucket_id))
        });
        for range in self.watched.positions(out.len(), MAX_KEYED_BUCKETS) {
            for b in &mut out[range] {
                b.busiest_keys = self.busiest_keys(&b.bucket_id).await;
            }
        }
        history.retain(|name, _| out.iter().any(|b| &b.bucket_id == name));
        for b in &out {
            let h = history.entry(b.bucket_id.clone()).or_default();
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back((t_ms, b.level));
        }
        *previous = Some((t_ms, counts));
        Snapshot {
            t_ms,
            buckets: out,
            cluster: self.app.cluster().await,
            history: history.clone(),
            error,
        }
    }
}

impl<S: Store> Sampler<S> {
    /// The busiest keys of `bucket` through the limiter (none if the store
    /// cannot tell, or fails: the bucket's own figures still show).
    async fn busiest_keys(&self, bucket: &str) -> Vec<KeySample> {
        match self.app.limiter().busiest_keys(bucket, TOP_KEYS).await {
            Ok(Some(keys)) => keys
                .into_iter()
                .map(|k| KeySample {
                    key: k.key,
                    level: k.level.level,
                    queue_size: k.level.queue_size,
                    allowed: k.counters.allowed,
                    rejected: k.counters.rejected,
                })
                .collect(),
            Ok(None) | Err(_) => Vec::new(),
        }
    }
}

/// Admitted and refused decisions per bucket, from the Prometheus text:
/// `drip_decisions_total{bucket="api",outcome="allowed"} 12`.
pub fn decision_counts(text: &str) -> BTreeMap<String, [u64; 2]> {
    let mut out: BTreeMap<String, [u64; 2]> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line
            .strip_prefix(DECISIONS)
            .and_then(|r| r.strip_prefix('{'))
        else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let label = |name: &str| {
            labels.split(',').find_map(|kv| {
                kv.strip_prefix(name)
                    .and_then(|v| v.strip_prefix("=\""))
                    .and_then(|v| v.strip_suffix('"'))
            })
        };
        let (Some(bucket), Some(outcome)) = (label("bucket"), label("outcome")) else {
            continue;
        };
        let Ok(n) = value.trim().parse::<f64>() else {
            continue;
        };
        let slot = match outcome {
            "allowed" => 0,
            "limited" | "exceeds" => 1,
            _ => continue,
        };
        out.entry(bucket.to_owned()).or_default()[slot] += n as u64;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Node;
    use drip::{Limit, Limiter, MemoryStore, Policy, Rate};
    use tokio_util::sync::CancellationToken;

    /// Nobody watching, no task; the first subscriber starts one, and it
    /// ends once the last one has gone.
    /// A sampler over `limiter` on a node of no cluster.
    fn sampler_of(limiter: Limiter<MemoryStore>) -> Arc<Sampler<MemoryStore>> {
        let node = Node {
            id: "n".into(),
            http: "h".into(),
            grpc: "g".into(),
        };
        Sampler::new(App::new(
            limiter,
            None,
            node,
            CancellationToken::new(),
            None,
        ))
    }

    #[tokio::test]
    async fn samples_only_while_watched() {
        let limiter = Limiter::memory();
        let policy = Policy::police(Limit::new(Rate::per_second(1).unwrap(), 5).unwrap());
        limiter.configure("a", policy).await.unwrap();
        let sampler = sampler_of(limiter);
        assert!(!sampler.is_sampling());
        let (mut rx, first) = sampler.subscribe();
        assert!(first.is_none() && sampler.is_sampling());
        let snap = rx.recv().await.unwrap();
        assert_eq!(snap.buckets.len(), 1);
        assert_eq!(snap.buckets[0].bucket_id, "a");
        let (rx2, first) = sampler.subscribe();
        assert!(
            first.is_some(),
            "a second watcher gets the last sample at once"
        );
        drop((rx, rx2));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sampler.is_sampling() {
            assert!(
                std::time::Instant::now() < deadline,
                "the sampler did not stop"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The busiest keys come for the buckets on a watched page only,
    /// fullest first, at most `TOP_KEYS` of them.
    #[tokio::test]
    async fn busiest_keys_of_watched_pages_only() {
        let limiter = Limiter::memory();
        let policy = Policy::police(Limit::new(Rate::per_second(1).unwrap(), 100).unwrap());
        for b in ["a", "b"] {
            limiter.configure(b, policy.clone()).await.unwrap();
        }
        // Bucket "a" is the busier (more decisions): first in the order.
        for i in 0..8u64 {
            limiter.check("a", &format!("k{i}"), 10 + i).await.unwrap();
        }
        limiter.check("b", "x", 50).await.unwrap();
        let sampler = sampler_of(limiter);
        let (mut history, mut previous) = (HashMap::new(), None);
        let snap = sampler.snapshot(&mut history, &mut previous).await;
        assert!(snap.buckets.iter().all(|b| b.busiest_keys.is_empty()));
        // Page 1 of 1 bucket per page: the second bucket in the order.
        let watch = sampler.watch(1, 1);
        let snap = sampler.snapshot(&mut history, &mut previous).await;
        let shown: Vec<_> = snap.buckets.iter().map(|b| b.busiest_keys.len()).collect();
        assert_eq!(shown.iter().filter(|&&n| n > 0).count(), 1, "{shown:?}");
        let watch0 = sampler.watch(0, 2);
        let snap = sampler.snapshot(&mut history, &mut previous).await;
        let a = snap.buckets.iter().find(|b| b.bucket_id == "a").unwrap();
        let keys: Vec<&str> = a.busiest_keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["k7", "k6", "k5", "k4", "k3"]);
        assert_eq!(
            (a.busiest_keys[0].allowed, a.busiest_keys[0].rejected),
            (1, 0)
        );
        drop((watch, watch0));
        let snap = sampler.snapshot(&mut history, &mut previous).await;
        assert!(snap.buckets.iter().all(|b| b.busiest_keys.is_empty()));
    }

    #[test]
    fn reads_the_decision_counters() {
        let text = "# TYPE drip_decisions_total counter\n\
            drip_decisions_total{bucket=\"api\",outcome=\"allowed\"} 12\n\
            drip_decisions_total{bucket=\"api\",outcome=\"limited\"} 3\n\
            drip_decisions_total{bucket=\"api\",outcome=\"exceeds\"} 1\n\
            drip_decisions_total{bucket=\"b\",outcome=\"allowed\"} 5\n\
            drip_decision_duration_seconds_count 20\n";
        let c = decision_counts(text);
        assert_eq!(c["api"], [12, 4]);
        assert_eq!(c["b"], [5, 0]);
        assert_eq!(c.len(), 2);
    }
}
