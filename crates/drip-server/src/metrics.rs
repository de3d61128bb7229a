//! Prometheus metrics of one server: decisions by bucket and outcome, the
//! decision latency, store errors, keys held, acquire waiters cancelled.
//!
//! Each server owns its recorder instead of installing a global one: a
//! global recorder can be set once per process, and tests run several
//! servers in one process.

use std::collections::HashMap;
use std::time::Duration;

use crossbeam_utils::sync::ShardedLock;
use drip::Outcome;
use metrics::{Recorder, counter, gauge, with_local_recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

mod sharded;

use sharded::{Counts, Latency};

/// Decisions, by `bucket` and `outcome` (`allowed`, `limited`, `exceeds`).
pub const DECISIONS: &str = "drip_decisions_total";
/// Time the store took to decide, in seconds.
pub const DECISION_SECONDS: &str = "drip_decision_duration_seconds";
/// Store calls that failed, by `op`.
pub const STORE_ERRORS: &str = "drip_store_errors_total";
/// Keys holding state in the store.
pub const KEYS_HELD: &str = "drip_keys_held";
/// New keys refused because the memory store held its `--max-keys`.
pub const KEYS_REFUSED: &str = "drip_keys_refused_total";
/// Acquire waiters whose client went away before their turn.
pub const ACQUIRE_CANCELLED: &str = "drip_acquire_cancelled_total";
/// Decisions by where they were made: `mode` = `shared` (the store),
/// `allow`, `local` or `deny` (`on_store_error` while the store was down).
pub const DECISIONS_BY_MODE: &str = "drip_decisions_by_mode_total";
/// 1 while the store is known down.
pub const STORE_DOWN: &str = "drip_store_down";
/// Times the store was found down.
pub const STORE_OUTAGES: &str = "drip_store_outages_total";
/// 1 while this node holds the leader lease.
pub const CLUSTER_LEADER: &str = "drip_cluster_leader";
/// Members alive as this node last saw them.
pub const CLUSTER_MEMBERS_ALIVE: &str = "drip_cluster_members_alive";
/// Leader chores refused by their fence (the lease had passed on).
pub const CLUSTER_CHORES_REFUSED: &str = "drip_cluster_chores_refused_total";
/// Configurations the leader wrote back after Redis lost them.
pub const CLUSTER_CONFIGS_RESTORED: &str = "drip_cluster_configs_restored_total";
/// Configurations (`state="live"`) and deletions (`state="deleted"`) this
/// node remembers, to write back if Redis loses them.
pub const CLUSTER_REMEMBERED: &str = "drip_cluster_remembered";
/// Requests the Redis store's deny cache refused on this node without a
/// store call (exactly as the store would have; DESIGN.md §5).
pub const DENY_CACHE_HITS: &str = "drip_deny_cache_hits_total";
/// Refusals the deny cache holds now.
pub const DENY_CACHE_ENTRIES: &str = "drip_deny_cache_entries";

/// Decision latencies are tens of microseconds in memory and up to
/// milliseconds over a network store.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 1.0,
];

/// The outcomes [`DECISIONS`] counts, in its counters' order.
const OUTCOMES: [&str; 3] = ["allowed", "limited", "exceeds"];

/// The metrics of one server. The decisions and their latency, recorded on
/// every request, are counted in per-thread slots ([`sharded`]) and put
/// into the recorder's text when it is rendered; the rest goes to the
/// recorder directly.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Decision counts by bucket. Each thread reads the map through its own
    /// shard of the lock; a new bucket name writes it once.
    decisions: ShardedLock<HashMap<String, Counts<3>>>,
    latency: Latency,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics with its own recorder.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let m = Metrics {
            recorder,
            handle,
            decisions: ShardedLock::new(HashMap::new()),
            latency: Latency::new(LATENCY_BUCKETS),
        };
        m.with(|| {
            metrics::describe_counter!(DECISIONS, "Decisions by bucket and outcome");
            metrics::describe_counter!(STORE_ERRORS, "Store calls that failed");
            metrics::describe_gauge!(KEYS_HELD, "Keys holding state in the store");
            metrics::describe_counter!(
                ACQUIRE_CANCELLED,
                "Acquire waiters whose client went away before their turn"
            );
            counter!(STORE_ERRORS, "op" => "decide").absolute(0);
            counter!(ACQUIRE_CANCELLED).absolute(0);
            metrics::describe_counter!(
                KEYS_REFUSED,
                "New keys refused because the memory store held its --max-keys"
            );
            counter!(KEYS_REFUSED).absolute(0);
        });
        m
    }

    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        with_local_recorder(&self.recorder as &dyn Recorder, f)
    }

    /// Runs `f` with this server's recorder, for front ends that keep their
    /// own metrics (the RLS).
    pub fn with_recorder<T>(&self, f: impl FnOnce() -> T) -> T {
        self.with(f)
    }

    /// Records one decision of `bucket` that took `elapsed`.
    pub fn decision(&self, bucket: &str, outcome: Outcome, elapsed: Duration) {
        let i = match outcome {
            Outcome::Allowed => 0,
            Outcome::Limited => 1,
            Outcome::Exceeds => 2,
        };
        let read = self.decisions.read().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = read.get(bucket) {
            c.add(i, 1);
        } else {
            drop(read);
            let mut write = self.decisions.write().unwrap_or_else(|e| e.into_inner());
            write.entry(bucket.to_owned()).or_default().add(i, 1);
        }
        self.latency.record(elapsed);
    }

    /// Puts the decision counts into the recorder, each bucket's three
    /// outcomes registered on its first showing.
    fn publish_decisions(&self) {
        let decisions = self.decisions.read().unwrap_or_else(|e| e.into_inner());
        self.with(|| {
            for (bucket, counts) in decisions.iter() {
                for (i, outcome) in OUTCOMES.into_iter().enumerate() {
                    counter!(DECISIONS, "bucket" => bucket.clone(), "outcome" => outcome)
                        .absolute(counts.get(i));
                }
            }
        });
    }

    /// Records a failed store call.
    pub fn store_error(&self, op: &'static str) {
        self.with(|| counter!(STORE_ERRORS, "op" => op).increment(1));
    }

    /// Sets the number of keys the store holds.
    pub fn keys_held(&self, n: u64) {
        self.with(|| gauge!(KEYS_HELD).set(n as f64));
    }

    /// Records a new key refused by the key cap.
    pub fn key_refused(&self) {
        self.with(|| counter!(KEYS_REFUSED).increment(1));
    }

    /// Records an acquire whose client went away while it waited.
    pub fn acquire_cancelled(&self) {
        self.with(|| counter!(ACQUIRE_CANCELLED).increment(1));
    }

    /// Sets the cluster's gauges and counters.
    pub fn cluster(&self, c: &crate::cluster::ClusterMetrics, health: &crate::cluster::Health) {
        use crate::cluster::Mode;
        self.with(|| {
            gauge!(CLUSTER_LEADER).set(if c.leader { 1.0 } else { 0.0 });
            gauge!(CLUSTER_MEMBERS_ALIVE).set(c.members_alive as f64);
            counter!(CLUSTER_CHORES_REFUSED).absolute(c.chores_refused);
            counter!(CLUSTER_CONFIGS_RESTORED).absolute(c.configs_restored);
            counter!(DENY_CACHE_HITS).absolute(c.deny_cache.hits);
            gauge!(DENY_CACHE_ENTRIES).set(c.deny_cache.entries as f64);
            gauge!(CLUSTER_REMEMBERED, "state" => "live").set(c.remembered_live as f64);
            gauge!(CLUSTER_REMEMBERED, "state" => "deleted").set(c.remembered_deleted as f64);
            gauge!(STORE_DOWN).set(if health.is_down() { 1.0 } else { 0.0 });
            counter!(STORE_OUTAGES).absolute(health.outages());
            for mode in Mode::ALL {
                counter!(DECISIONS_BY_MODE, "mode" => mode.as_str())
                    .absolute(health.decisions(mode));
            }
        });
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.publish_decisions();
        let mut text = self.handle.render();
        self.latency
            .render(DECISION_SECONDS, "Time the store took to decide", &mut text);
        text
    }
}
