//! The Redis store's exact local deny cache (issue 19): the same random
//! sequences with the cache on and off admit the same requests, a local
//! refusal never says to retry later than Redis would, counters stay exact,
//! a change made on another node reaches the cache within 100 ms, and the
//! cache holds at most its size.

#![cfg(feature = "redis")]

mod redis_support;
mod strategies;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use drip::core::{Outcome, Request};
use drip::store::{RedisOptions, RedisStore};
use drip::{Error, ManualClock, Policy, Store};
use proptest::prelude::*;
use redis_support::RedisServer;

fn options(prefix: &str, deny_cache: usize) -> RedisOptions {
    RedisOptions {
        prefix: prefix.to_owned(),
        deny_cache,
        ..RedisOptions::default()
    }
}

/// The cache on (it is off by default), 65536 entries.
fn cached() -> RedisOptions {
    options("drip", 65_536)
}

#[derive(Debug, Clone)]
struct Op {
    /// Advance `k/8` emission intervals (whole µs), then decide.
    k: u64,
    key: u8,
    cost: u64,
    /// A reservation of `n/4` emission intervals.
    reserve: Option<u64>,
}

fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
    // Mostly small steps, so that refusals are followed by requests the
    // bound covers.
    let op = (
        prop_oneof![6 => 0u64..=2, 1 => 0u64..=40],
        0u8..3,
        prop_oneof![4 => Just(1u64), 1 => 0u64..=6],
        prop::option::weighted(0.2, 0u64..=12),
    )
        .prop_map(|(k, key, cost, reserve)| Op {
            k,
            key,
            cost,
            reserve,
        });
    prop::collection::vec(op, 1..60)
}

#[test]
fn cache_on_and_off_admit_the_same_and_never_retry_later() {
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = ManualClock::new(0);
    let (on, off) = runtime.block_on(async {
        let on = RedisStore::connect(&server.url(), options("on", 1024))
            .await
            .unwrap()
            .with_test_clock(clock.clone());
        let off = RedisStore::connect(&server.url(), options("off", 0))
            .await
            .unwrap()
            .with_test_clock(clock.clone());
        (on, off)
    });
    let case = AtomicU64::new(0);
    let local_refusals = AtomicU64::new(0);
    let config = ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    };
    proptest!(config, |(policy in strategies::arb_policy_with(0u32..=2, 999), ops in arb_ops())| {
        let bucket = format!("case{}", case.fetch_add(1, Ordering::Relaxed));
        let mut now = 1_700_000_000_000_000_000u64;
        clock.set(now);
        runtime.block_on(on.configure(&bucket, policy.clone(), false)).unwrap();
        runtime.block_on(off.configure(&bucket, policy.clone(), false)).unwrap();
        let r = policy.limit().rate();
        for (step, op) in ops.iter().enumerate() {
            now += (r.period_ns() * op.k / (r.amount() * 8)).div_ceil(1000) * 1000;
            clock.set(now);
            let req = match op.reserve {
                Some(n) => Request::reserve(op.cost, r.period_ns() * n / (4 * r.amount())),
                None => Request::check(op.cost),
            };
            let key = format!("k{}", op.key);
            let hits = on.deny_cache_stats().hits;
            let got = runtime.block_on(on.decide(&bucket, &key, req)).unwrap();
            let local = on.deny_cache_stats().hits > hits;
            let want = runtime.block_on(off.decide(&bucket, &key, req)).unwrap();
            prop_assert_eq!(got.outcome, want.outcome, "step {} ({:?}) local {}", step, req, local);
            if local {
                local_refusals.fetch_add(1, Ordering::Relaxed);
                prop_assert!(got.retry_after <= want.retry_after,
                    "step {}: local retry {} later than the store's {}", step, got.retry_after, want.retry_after);
                prop_assert!(got.retry_after > 0);
                prop_assert!(got.reset_after <= want.reset_after, "step {}: reset_after", step);
            } else {
                prop_assert_eq!(got, want, "step {} ({:?})", step, req);
            }
        }
        // Counters: a status on the node counts its local refusals first.
        for k in 0..3 {
            let key = format!("k{k}");
            let a = runtime.block_on(on.status(&bucket, &key)).unwrap();
            let b = runtime.block_on(off.status(&bucket, &key)).unwrap();
            prop_assert_eq!(a.counters, b.counters, "counters of {}", key);
            prop_assert_eq!(a.level.queue_size, b.level.queue_size);
        }
    });
    // The sequences did reach the cache.
    let local = local_refusals.load(Ordering::Relaxed);
    assert!(
        local > 100,
        "only {local} local refusals: the test no longer exercises the cache"
    );
}

/// A bucket that refuses for an hour after `capacity` requests.
fn slow(capacity: u64) -> Policy {
    let rate = drip::Rate::new(1, Duration::from_secs(3600)).unwrap();
    Policy::police(drip::Limit::new(rate, capacity).unwrap())
}

/// Floods `key` on `store` until a request is refused locally.
async fn refuse_locally(store: &RedisStore, bucket: &str, key: &str) {
    let start = Instant::now();
    loop {
        let hits = store.deny_cache_stats().hits;
        let d = store.decide(bucket, key, Request::check(1)).await.unwrap();
        if d.outcome == Outcome::Limited && store.deny_cache_stats().hits > hits {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "never refused locally"
        );
    }
}

/// Time until `store` answers `key` other than with a (local) refusal.
async fn until_changed(store: &RedisStore, bucket: &str, key: &str, since: Instant) -> Duration {
    loop {
        match store.decide(bucket, key, Request::check(1)).await {
            Ok(d) if d.outcome == Outcome::Limited => {}
            _ => return since.elapsed(),
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "the change never reached the cache"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_another_node_reaches_the_cache_within_100_ms() {
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let a = RedisStore::connect(&server.url(), cached()).await.unwrap();
    let b = RedisStore::connect(&server.url(), cached()).await.unwrap();
    a.configure("api", slow(3), false).await.unwrap();

    // Reset on A: B admits again.
    refuse_locally(&b, "api", "k").await;
    let t = Instant::now();
    a.configure("api", slow(3), true).await.unwrap();
    let took = until_changed(&b, "api", "k", t).await;
    assert!(took < Duration::from_millis(100), "reset took {took:?}");

    // A larger capacity on A (no reset): B admits again.
    refuse_locally(&b, "api", "k").await;
    let t = Instant::now();
    a.configure("api", slow(20), false).await.unwrap();
    let took = until_changed(&b, "api", "k", t).await;
    assert!(took < Duration::from_millis(100), "configure took {took:?}");

    // Delete on A: B says the bucket is gone.
    refuse_locally(&b, "api", "k").await;
    let t = Instant::now();
    assert!(a.delete("api").await.unwrap());
    let took = until_changed(&b, "api", "k", t).await;
    assert!(took < Duration::from_millis(100), "delete took {took:?}");
    assert!(matches!(
        b.decide("api", "k", Request::check(1)).await,
        Err(Error::UnknownBucket(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_refusals_reach_the_shared_counters() {
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let a = RedisStore::connect(&server.url(), cached()).await.unwrap();
    let b = RedisStore::connect(&server.url(), cached()).await.unwrap();
    a.configure("api", slow(3), false).await.unwrap();
    for _ in 0..500 {
        b.decide("api", "k", Request::check(1)).await.unwrap();
    }
    assert!(
        b.deny_cache_stats().hits > 400,
        "{:?}",
        b.deny_cache_stats()
    );
    // A sees B's refusals once B's sync has run (polled, not slept).
    let start = Instant::now();
    loop {
        let s = a.status("api", "k").await.unwrap();
        if s.counters.rejected == 497 {
            assert_eq!(s.counters.allowed, 3);
            break;
        }
        assert!(s.counters.rejected < 497, "{:?}", s.counters);
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", s.counters);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_holds_at_most_its_size() {
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), options("drip", 100))
        .await
        .unwrap();
    store.configure("api", slow(1), false).await.unwrap();
    for i in 0..1000 {
        let key = format!("k{i}");
        store.decide("api", &key, Request::check(1)).await.unwrap();
        let d = store.decide("api", &key, Request::check(1)).await.unwrap();
        assert_eq!(d.outcome, Outcome::Limited);
    }
    let stats = store.deny_cache_stats();
    assert_eq!(stats.inserts, 1000);
    assert!(stats.entries <= 100, "{stats:?}");
    // The latest keys are still refused locally.
    let hits = stats.hits;
    store
        .decide("api", "k999", Request::check(1))
        .await
        .unwrap();
    assert_eq!(store.deny_cache_stats().hits, hits + 1);
}

/// On a Redis Cluster: B's bounds, a reset on A, B admits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_reaches_the_cache_on_a_redis_cluster() {
    if !redis_support::available() {
        return;
    }
    let cluster = redis_support::RedisCluster::start();
    let a = RedisStore::connect_cluster(&cluster.urls(), cached())
        .await
        .unwrap();
    let b = RedisStore::connect_cluster(&cluster.urls(), cached())
        .await
        .unwrap();
    a.configure("api", slow(3), false).await.unwrap();
    refuse_locally(&b, "api", "k").await;
    let t = Instant::now();
    a.configure("api", slow(3), true).await.unwrap();
    let took = until_changed(&b, "api", "k", t).await;
    assert!(took < Duration::from_millis(100), "reset took {took:?}");
    // B's local refusals are counted in the cluster too.
    let s = b.status("api", "k").await.unwrap();
    assert_eq!(s.counters.allowed, 1);
}

/// A task that loops over local refusals without any other await (they do
/// no I/O) still lets the runtime's other tasks run: on a current-thread
/// runtime the cache's own sync sees another node's reset.
#[tokio::test(flavor = "current_thread")]
async fn a_loop_of_local_refusals_does_not_starve_the_sync() {
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let a = RedisStore::connect(&server.url(), cached()).await.unwrap();
    let b = RedisStore::connect(&server.url(), cached()).await.unwrap();
    a.configure("api", slow(3), false).await.unwrap();
    refuse_locally(&b, "api", "k").await;
    a.configure("api", slow(3), true).await.unwrap();
    let t = Instant::now();
    loop {
        let d = b.decide("api", "k", Request::check(1)).await.unwrap();
        if d.outcome == Outcome::Allowed {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "the sync never ran");
    }
}
