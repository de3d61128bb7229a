//! The six leaky-bucket scenarios of the core issue (see
//! `crates/drip/tests/conformance/mod.rs`), on the wall clock, through the
//! real server over HTTP and over gRPC.
//!
//! The conformance suite checks them exactly on a manual clock; here time
//! passes for real, so each expectation is bounded by the time that actually
//! elapsed: a shaped bucket leaks `rate` units per second from its first
//! admission, which happened between sending the first request (`t0`) and
//! its answer (`t1`). A slow or loaded machine widens nothing but the
//! measured interval.

#[cfg(feature = "redis")]
mod cluster_support;
mod common;
#[cfg(feature = "redis")]
#[path = "../../drip/tests/redis_support/mod.rs"]
mod redis_support;

use std::time::{Duration, Instant};

use common::{Client, Grpc, Http, TestServer};
use drip_server::model::{BucketStatus, DecisionBody};

/// When a burst was sent.
struct Burst {
    /// Before the first request.
    t0: Instant,
    /// After the first answer.
    t1: Instant,
    decisions: Vec<DecisionBody>,
}

async fn burst(c: &impl Client, bucket: &str, n: usize) -> Burst {
    let t0 = Instant::now();
    let mut decisions = vec![c.allow(bucket, "k").await];
    let t1 = Instant::now();
    for _ in 1..n {
        decisions.push(c.allow(bucket, "k").await);
    }
    Burst { t0, t1, decisions }
}

/// The status, with the units leaked since the first admission bounded by
/// the wall clock: at least `rate * (s0 - t1)`, at most `rate * (s1 - t0)`
/// (one unit of slack each way for rounding).
async fn status_leaked(c: &impl Client, b: &Burst, rate: f64) -> (BucketStatus, u64, u64) {
    let s0 = Instant::now();
    let s = c.status("b", "k").await;
    let s1 = Instant::now();
    let lo = (rate * s0.saturating_duration_since(b.t1).as_secs_f64()).floor() as i64 - 1;
    let hi = (rate * (s1 - b.t0).as_secs_f64()).ceil() as u64 + 1;
    (s, lo.max(0) as u64, hi)
}

fn within(x: u64, lo: u64, hi: u64, what: &str) {
    assert!((lo..=hi).contains(&x), "{what} = {x}, expected {lo}..={hi}");
}

async fn sleep_until(t: Instant) {
    tokio::time::sleep_until(t.into()).await;
}

/// (a) capacity 100 at 10/s, 50 queued: over the next 2 s, 20 processed.
async fn scenario_a(c: &impl Client) {
    c.configure("b", "shape", 100, 10.0, true).await;
    let b = burst(c, "b", 50).await;
    assert!(b.decisions.iter().all(|d| d.allowed));
    sleep_until(b.t1 + Duration::from_secs(2)).await;
    let (s, lo, hi) = status_leaked(c, &b, 10.0).await;
    within(s.processed_requests, lo, hi, "processed after 2 s");
    within(s.processed_requests, 18, hi.max(22), "processed after 2 s");
    assert_eq!(s.processed_requests + s.queue_size, 50);
}

/// (b) capacity 10 at 1/s: ten admitted, the 11th rejected (both modes).
async fn scenario_b(c: &impl Client) {
    for mode in ["police", "shape"] {
        c.configure("b", mode, 10, 1.0, true).await;
        let b = burst(c, "b", 11).await;
        assert!(b.decisions[..10].iter().all(|d| d.allowed), "{mode}");
        let last = &b.decisions[10];
        assert!(!last.allowed, "{mode}");
        // Exactly 1000 ms on a frozen clock; less the time the burst took.
        let took = b.t0.elapsed().as_millis() as u64;
        within(
            last.retry_after_ms,
            1000 - took.min(1000),
            1000,
            "retry_after_ms",
        );
    }
}

/// (c) capacity 100 at 10/s: the first waits 0 ms, the 11th 1000 ms.
async fn scenario_c(c: &impl Client) {
    c.configure("b", "shape", 100, 10.0, true).await;
    let b = burst(c, "b", 11).await;
    let took = b.t0.elapsed().as_millis() as u64;
    assert_eq!(b.decisions[0].estimated_wait_ms, 0);
    assert_eq!(b.decisions[0].queue_position, 1);
    let d = &b.decisions[10];
    within(
        d.estimated_wait_ms,
        1000 - took.min(1000),
        1000,
        "wait of the 11th",
    );
    let leaked = (took / 100) + 1;
    within(
        d.queue_position,
        11 - leaked.min(10),
        11,
        "queue_position of the 11th",
    );
}

/// (d) a burst of 50 at 10/s: every 500 ms, 5 processed, for 2.5 s.
async fn scenario_d(c: &impl Client) {
    c.configure("b", "shape", 50, 10.0, true).await;
    let b = burst(c, "b", 50).await;
    assert!(b.decisions.iter().all(|d| d.allowed));
    let mut last = 0;
    for i in 1..=5u32 {
        sleep_until(b.t1 + Duration::from_millis(500) * i).await;
        let (s, lo, hi) = status_leaked(c, &b, 10.0).await;
        within(s.processed_requests, lo, hi, "processed");
        assert!(s.processed_requests >= last);
        last = s.processed_requests;
    }
    within(last, 24, 50, "processed after 2.5 s");
}

/// (e) capacity 20 at 100/s: 20 queued; after 0.5 s none queued, 20 processed.
async fn scenario_e(c: &impl Client) {
    c.configure("b", "shape", 20, 100.0, true).await;
    let b = burst(c, "b", 20).await;
    assert!(b.decisions.iter().all(|d| d.allowed));
    let (s, lo, hi) = status_leaked(c, &b, 100.0).await;
    within(s.processed_requests, lo, hi.min(20), "processed at once");
    assert_eq!(s.queue_size + s.processed_requests, 20);
    sleep_until(b.t1 + Duration::from_millis(500)).await;
    let s = c.status("b", "k").await;
    // The bucket drained at 0.2 s. A store may forget a drained key (Redis
    // expires it at once; memory and SQLite sweep it later) and its counters
    // then start again at zero (`KeyStatus::counters`).
    let forgotten = s.total_requests == 0;
    let processed = if forgotten { 20 } else { s.processed_requests };
    assert_eq!((s.queue_size, processed), (0, 20));
}

/// (f) a burst of 50: queue 50 and processed 0 at once; 10 processed after 1 s.
async fn scenario_f(c: &impl Client) {
    c.configure("b", "shape", 100, 10.0, true).await;
    let b = burst(c, "b", 50).await;
    assert!(b.decisions.iter().all(|d| d.allowed));
    let (s, lo, hi) = status_leaked(c, &b, 10.0).await;
    within(s.processed_requests, lo, hi, "processed at once");
    within(s.queue_size, 50 - hi.min(50), 50, "queue at once");
    sleep_until(b.t1 + Duration::from_secs(1)).await;
    let (s, lo, hi) = status_leaked(c, &b, 10.0).await;
    within(s.processed_requests, lo, hi, "processed after 1 s");
    within(s.processed_requests, 9, hi.max(11), "processed after 1 s");
    assert_eq!(s.processed_requests + s.queue_size, 50);
}

/// Three `drip serve` processes on one Redis, each call sent to the next
/// node in turn (issue 15).
#[cfg(feature = "redis")]
struct RoundRobin {
    cluster: cluster_support::TestCluster,
    next: std::sync::atomic::AtomicUsize,
}

#[cfg(feature = "redis")]
impl RoundRobin {
    fn start() -> RoundRobin {
        RoundRobin {
            cluster: cluster_support::TestCluster::single(3, cluster_support::FAST),
            next: Default::default(),
        }
    }

    fn node(&self) -> usize {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.cluster.nodes.len()
    }
}

#[cfg(feature = "redis")]
impl Client for RoundRobin {
    async fn configure(
        &self,
        bucket: &str,
        mode: &str,
        capacity: u64,
        leak_rate: f64,
        reset: bool,
    ) {
        let body = serde_json::json!({"mode": mode, "capacity": capacity, "leak_rate": leak_rate, "reset": reset});
        assert_eq!(self.cluster.configure(self.node(), bucket, body).await, 200);
    }

    async fn allow(&self, bucket: &str, key: &str) -> DecisionBody {
        let (code, body, _) = self.cluster.allow(self.node(), bucket, key).await;
        let d: DecisionBody = serde_json::from_value(body).unwrap();
        assert_eq!(code, if d.allowed { 200 } else { 429 });
        d
    }

    async fn status(&self, bucket: &str, key: &str) -> BucketStatus {
        let (code, body) = self
            .cluster
            .get(self.node(), &format!("/v1/buckets/{bucket}?key={key}"))
            .await;
        assert_eq!(code, 200);
        serde_json::from_value(body).unwrap()
    }
}

macro_rules! over_both_protocols {
    ($($name:ident)*) => {
        mod http {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = TestServer::memory().await;
                    super::$name(&Http(&server)).await;
                }
            )*
        }
        mod grpc {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = TestServer::memory().await;
                    super::$name(&Grpc(server.grpc().await)).await;
                }
            )*
        }
        #[cfg(feature = "redis")]
        mod http_redis {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if !redis_support::available() {
                        return;
                    }
                    let redis = redis_support::RedisServer::start();
                    let store = drip::store::redis::RedisStore::connect(&redis.url(), Default::default())
                        .await
                        .unwrap();
                    let server = TestServer::start(drip::Limiter::new(store), Default::default()).await;
                    super::$name(&Http(&server)).await;
                }
            )*
        }
        #[cfg(feature = "redis")]
        mod cluster_round_robin {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if !redis_support::available() {
                        return;
                    }
                    super::$name(&RoundRobin::start()).await;
                }
            )*
        }
        #[cfg(feature = "sqlite")]
        mod http_sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempdir();
                    let store = drip::store::sqlite::SqliteStore::open(dir.join("drip.db")).unwrap();
                    let server = TestServer::start(drip::Limiter::new(store), Default::default()).await;
                    super::$name(&Http(&server)).await;
                    let _ = std::fs::remove_dir_all(&dir);
                }
            )*
        }
    };
}

over_both_protocols!(scenario_a scenario_b scenario_c scenario_d scenario_e scenario_f);

/// A fresh directory under the system's temporary directory.
#[cfg(feature = "sqlite")]
fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "drip-server-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
