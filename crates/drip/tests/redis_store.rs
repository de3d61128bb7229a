//! The Redis store for real: shared by several connections and "nodes",
//! exact under concurrency, keys expiring, a Redis Cluster, and a Redis that
//! goes away and comes back.

#![cfg(feature = "redis")]

mod conformance;
mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance::Harness;
use drip::store::{RedisOptions, RedisStore};
use drip::{
    Clock, Error, Limit, Limiter, ManualClock, Mode, Outcome, Policy, Rate, Request, Store,
};
use redis_support::{RedisCluster, RedisServer};

fn policy(mode: Mode, rate: Rate, capacity: u64) -> Policy {
    Policy::new(mode, Limit::new(rate, capacity).unwrap())
}

/// A policy whose full bucket would take longer than 2^53 ticks to drain is
/// refused by the Redis store with the field and the reason.
#[tokio::test]
async fn policies_beyond_exact_doubles_are_refused() {
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let limiter = Limiter::new(store(&server).await);
    let e = limiter
        .configure("slow", policy(Mode::Police, Rate::per_day(1).unwrap(), 500))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Config(c) if c.field == "capacity"),
        "{e}"
    );
    assert!(limiter.policy("slow").await.unwrap().is_none());
}

async fn store(server: &RedisServer) -> RedisStore {
    RedisStore::connect(&server.url(), RedisOptions::default())
        .await
        .unwrap()
}

/// 4 tasks on each of 2 connections hammer one key; the leak is 1 per hour,
/// so exactly the capacity (500) is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_admit_exactly_the_limit() {
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let nodes = [
        Limiter::new(store(&server).await),
        Limiter::new(store(&server).await),
    ];
    nodes[0]
        .configure("hot", policy(Mode::Police, Rate::per_hour(1).unwrap(), 500))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for node in &nodes {
        for _ in 0..4 {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                let mut admitted = 0u64;
                for _ in 0..200 {
                    if node.check("hot", "one", 1).await.unwrap().allowed() {
                        admitted += 1;
                    }
                }
                admitted
            }));
        }
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 500);
    // Each node's status first adds the refusals its deny cache made
    // (otherwise its sync does within 25 ms): after both, all are counted.
    nodes[0].status("hot", "one").await.unwrap();
    let s = nodes[1].status("hot", "one").await.unwrap();
    assert_eq!((s.counters.allowed, s.counters.rejected), (500, 1100));
}

/// A change made through one node is used by the other at its next call.
#[tokio::test]
async fn every_node_sees_a_configuration_change_at_once() {
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let (a, b) = (
        Limiter::new(store(&server).await),
        Limiter::new(store(&server).await),
    );
    let slow = Rate::per_hour(1).unwrap();
    a.configure("api", policy(Mode::Police, slow, 2))
        .await
        .unwrap();
    assert!(b.check("api", "k", 2).await.unwrap().allowed());
    assert_eq!(
        b.check("api", "k", 1).await.unwrap().outcome,
        Outcome::Limited
    );
    // Grow the bucket through a; b's cached policy is stale and reloads.
    a.configure("api", policy(Mode::Police, slow, 5))
        .await
        .unwrap();
    let d = b.check("api", "k", 3).await.unwrap();
    assert!(d.allowed(), "{d:?}");
    assert_eq!(
        b.policy("api").await.unwrap().unwrap().limit().capacity(),
        5
    );
    // Deleted through a: b answers "no such bucket".
    assert!(a.delete("api").await.unwrap());
    assert!(matches!(
        b.check("api", "k", 1).await,
        Err(Error::UnknownBucket(_))
    ));
    // Re-created: a fresh generation, the old water is not read.
    a.configure("api", policy(Mode::Police, slow, 5))
        .await
        .unwrap();
    assert_eq!(
        b.check("api", "k", 5).await.unwrap().outcome,
        Outcome::Allowed
    );
}

/// A key's state expires when the bucket would be empty, so idle keys cost
/// nothing; with windows, when the window is clear too.
#[tokio::test]
async fn idle_keys_expire_in_redis() {
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let limiter = Limiter::new(store(&server).await);
    // 100/s, capacity 10: ten requests fill it for 100 ms.
    limiter
        .configure(
            "e",
            policy(Mode::Police, Rate::per_second(100).unwrap(), 10),
        )
        .await
        .unwrap();
    for i in 0..50 {
        limiter.check("e", &format!("k{i}"), 10).await.unwrap();
    }
    let count = |pattern: &str| {
        redis_support::cli(server.port, &["--scan", "--pattern", pattern])
            .lines()
            .count()
    };
    assert_eq!(count("drip:{b:e}:g*"), 50);
    let ttl: i64 = redis_support::cli(server.port, &["PTTL", "drip:{b:e}:g1:s:k0"])
        .trim()
        .parse()
        .unwrap();
    assert!((1..=101).contains(&ttl), "pttl {ttl}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while count("drip:{b:e}:g*") > 0 {
        assert!(Instant::now() < deadline, "keys did not expire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The policy itself stays.
    assert!(limiter.policy("e").await.unwrap().is_some());
}

/// Counters outlive the water on real time: 20 requests into a shape
/// bucket of 20 at 100/s drain in 200 ms; once the key of a bucket without
/// retention has expired (polled), the retained one still reports
/// `queue_size 0, processed 20`, and its key goes when the retention ends.
#[tokio::test]
async fn counters_outlive_the_water_on_real_time() {
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let limiter = Limiter::new(store(&server).await);
    let shape = || policy(Mode::Shape, Rate::per_second(100).unwrap(), 20);
    let kept = shape()
        .with_counter_retention(Duration::from_secs(2))
        .unwrap();
    limiter.configure("d", kept).await.unwrap();
    limiter.configure("z", shape()).await.unwrap();
    let start = Instant::now();
    for _ in 0..20 {
        assert!(limiter.check("d", "k", 1).await.unwrap().allowed());
        assert!(limiter.check("z", "k", 1).await.unwrap().allowed());
    }
    let exists = |key: &str| redis_support::cli(server.port, &["EXISTS", key]).trim() == "1";
    let deadline = start + Duration::from_secs(10);
    // The state without retention expires when the queue has drained.
    while exists("drip:{b:z}:g1:s:k") {
        assert!(Instant::now() < deadline, "the state did not expire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(start.elapsed() >= Duration::from_millis(190));
    let seen = |s: drip::KeyStatus| (s.level.queue_size, s.processed(), s.counters.total());
    assert_eq!(seen(limiter.status("z", "k").await.unwrap()), (0, 0, 0));
    if start.elapsed() < Duration::from_millis(1500) {
        // Within the retention (a loaded machine may have taken longer).
        assert_eq!(seen(limiter.status("d", "k").await.unwrap()), (0, 20, 20));
    }
    while exists("drip:{b:d}:g1:s:k") {
        assert!(Instant::now() < deadline, "the counters did not expire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(start.elapsed() >= Duration::from_millis(1990));
    assert_eq!(seen(limiter.status("d", "k").await.unwrap()), (0, 0, 0));
}

/// The queue of waiting requests on real time (Redis `TIME`): a burst of 10
/// at 10/s is listed whole, about half after 0.5 s (wide bounds), and the
/// list key expires with the water.
#[tokio::test]
async fn the_queue_list_expires_with_the_water_on_real_time() {
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let limiter = Limiter::new(store(&server).await);
    let tracked = policy(Mode::Shape, Rate::per_second(10).unwrap(), 10).with_track_queue(true);
    limiter.configure("q", tracked).await.unwrap();
    let start = Instant::now();
    for i in 0..12 {
        let d = limiter
            .decide_tracked("q", "k", drip::Request::check(1), &format!("r{i}"))
            .await
            .unwrap();
        assert_eq!(d.allowed(), i < 10, "request {i}");
    }
    let q = limiter.queue("q", "k").await.unwrap();
    if start.elapsed() < Duration::from_millis(80) {
        let ids: Vec<&str> = q.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(
            ids,
            ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"]
        );
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(q[0].enqueue_time_ms.abs_diff(now_ms) < 5_000, "epoch ms");
        for w in q.windows(2) {
            let gap = w[1].estimated_process_time_ms - w[0].estimated_process_time_ms;
            assert!((99..=101).contains(&gap), "{w:?}");
        }
    }
    // 0.5 s after the burst ended: the turns count from the first
    // decision's Redis `TIME`, which comes after `start` (by a connection's
    // round trip or more on a busy machine), so from `start` a sixth entry
    // could still be listed.
    let burst_end = Instant::now();
    tokio::time::sleep_until((burst_end + Duration::from_millis(500)).into()).await;
    let left = limiter.queue("q", "k").await.unwrap().len();
    assert!((2..=5).contains(&left), "{left} listed after 0.5 s");
    let exists = |key: &str| redis_support::cli(server.port, &["EXISTS", key]).trim() == "1";
    let deadline = start + Duration::from_secs(10);
    while exists("drip:{b:q}:g1:q:k") {
        assert!(Instant::now() < deadline, "the list did not expire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert!(limiter.queue("q", "k").await.unwrap().is_empty());
}

/// Redis stops: calls fail with a store error within the timeout, no hang,
/// no panic. Redis comes back: calls succeed again with the same limiter.
#[tokio::test]
async fn redis_down_is_a_quick_error_and_recovery_needs_no_restart() {
    if !redis_support::available() {
        return;
    }
    let mut server = RedisServer::start();
    let options = redis_support::short_timeouts(RedisOptions::default());
    let limiter = Limiter::new(RedisStore::connect(&server.url(), options).await.unwrap());
    let p = policy(Mode::Police, Rate::per_second(10).unwrap(), 10);
    limiter.configure("f", p.clone()).await.unwrap();
    assert!(limiter.check("f", "k", 1).await.unwrap().allowed());

    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let r = limiter.check("f", "k", 1).await;
        let took = started.elapsed();
        assert!(matches!(r, Err(Error::Store(_))), "{r:?}");
        // The configured timeouts, with room for a loaded machine.
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
    assert!(limiter.store().ping().await.is_err());

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match limiter.check("f", "k", 1).await {
            // The restarted Redis is empty: the bucket must be configured again.
            Err(Error::UnknownBucket(_)) => break,
            Ok(d) => panic!("a restarted empty Redis cannot know the bucket: {d:?}"),
            Err(e) => {
                assert!(Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    limiter.configure("f", p).await.unwrap();
    assert!(limiter.check("f", "k", 1).await.unwrap().allowed());
}

/// With `spin`, lone calls poll for their answers: they decide as any other
/// call, and a Redis that stops is still a quick store error.
#[tokio::test]
async fn spinning_lone_calls_decide_alike_and_fail_quickly() {
    if !redis_support::available() {
        return;
    }
    let mut server = RedisServer::start();
    let options = redis_support::short_timeouts(RedisOptions {
        spin: Duration::from_micros(200),
        ..RedisOptions::default()
    });
    let limiter = Limiter::new(RedisStore::connect(&server.url(), options).await.unwrap());
    let p = policy(Mode::Police, Rate::per_hour(1).unwrap(), 5);
    limiter.configure("s", p).await.unwrap();
    let mut admitted = 0;
    for _ in 0..8 {
        admitted += u32::from(limiter.check("s", "k", 1).await.unwrap().allowed());
    }
    assert_eq!(admitted, 5);
    server.stop();
    let started = Instant::now();
    // Another key: "k" is refused by the deny cache without a call.
    let r = limiter.check("s", "k2", 1).await;
    assert!(matches!(r, Err(Error::Store(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// The conformance suite's cases on a 3-master Redis Cluster, each with its
/// own key prefix, decisions on a manual clock.
#[tokio::test]
async fn conformance_on_a_redis_cluster() {
    if !redis_support::available() {
        return;
    }
    let cluster = Arc::new(RedisCluster::start());
    let mut n = 0;
    let mut harness = || {
        n += 1;
        let (cluster, prefix) = (cluster.clone(), format!("case{n}"));
        async move {
            let options = RedisOptions {
                prefix,
                // Exact answers from the script (the deny cache is tested in
                // redis_deny_cache.rs).
                deny_cache: 0,
                ..RedisOptions::default()
            };
            let clock = ManualClock::new(1_000_000_000);
            let store = RedisStore::connect_cluster(&cluster.urls(), options)
                .await
                .unwrap()
                .with_test_clock(clock.clone());
            Harness {
                limiter: Limiter::new(store),
                advance: Box::new(move |d| clock.advance(d)),
            }
        }
    };
    conformance::police_table(harness().await).await;
    conformance::shape_table(harness().await).await;
    conformance::scenario_a(harness().await).await;
    conformance::scenario_b(harness().await).await;
    conformance::scenario_c(harness().await).await;
    conformance::scenario_d(harness().await).await;
    conformance::scenario_e(harness().await).await;
    conformance::scenario_f(harness().await).await;
    conformance::windows_and_atomicity(harness().await).await;
    conformance::costs(harness().await).await;
    conformance::reconfigure(harness().await).await;
    conformance::delete_and_list(harness().await).await;
    conformance::status_counters(harness().await).await;
    conformance::acquire_reservations(harness().await).await;
    conformance::bad_input(harness().await).await;
    conformance::counters_outlive_the_water(harness().await).await;
    conformance::queue_listing(harness().await).await;
    conformance::cancel_gives_the_place_back(harness().await).await;
    // Joint decisions: within one bucket (one slot) as on one Redis; across
    // buckets (several slots) refused, saying why.
    let h = harness().await;
    let p = conformance::policy(drip::Mode::Police, 1, 2);
    for b in ["j1", "j2"] {
        h.limiter.configure(b, p.clone()).await.unwrap();
    }
    let part = |bucket, key| drip::JointPart::new(bucket, key, drip::Request::check(1));
    let same = [part("j1", "a"), part("j1", "b"), part("j1", "a")];
    assert!(h.limiter.decide_all(&same).await.unwrap().admitted);
    let d = h.limiter.decide_all(&same).await.unwrap();
    assert!(!d.admitted);
    assert_eq!(
        h.limiter.status("j1", "b").await.unwrap().level.remaining,
        1
    );
    let across = h
        .limiter
        .decide_all(&[part("j1", "c"), part("j2", "c")])
        .await;
    match across {
        Err(Error::Unsupported(m)) => assert!(m.contains("within one bucket"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The buckets spread over the masters: more than one holds drip's keys.
    let holding = cluster
        .nodes
        .iter()
        .filter(|n| redis_support::cli(n.port, &["DBSIZE"]).trim() != "0")
        .count();
    assert!(holding > 1, "only {holding} master holds keys");
}

/// The blocking API over Redis: the store opened on the limiter's runtime.
#[test]
fn blocking_limiter_over_redis() {
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let url = server.url();
    let limiter =
        drip::blocking::Limiter::open(|| RedisStore::connect(&url, RedisOptions::default()))
            .unwrap();
    limiter
        .configure("b", policy(Mode::Police, Rate::per_hour(1).unwrap(), 3))
        .unwrap();
    let admitted = (0..5)
        .filter(|_| limiter.check("b", "k", 1).unwrap().allowed())
        .count();
    assert_eq!(admitted, 3);
    assert_eq!(limiter.status("b", "k").unwrap().counters.rejected, 2);
}

/// The decide script's text form (what `scripts/bench-redis.sh` runs with
/// `redis-benchmark`, which cannot send binary arguments) decides as
/// `RedisStore` does, and answers `stale` for an old version.
#[tokio::test]
async fn the_scripts_text_form_decides_as_the_store() {
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let clock = ManualClock::new(1_700_000_000_000_000_000);
    let options = RedisOptions {
        // The store's own answers, each from the script.
        deny_cache: 0,
        ..RedisOptions::default()
    };
    let store = RedisStore::connect(&server.url(), options)
        .await
        .unwrap()
        .with_test_clock(clock.clone());
    let p = policy(Mode::Shape, Rate::per_second(10).unwrap(), 3);
    store.configure("t", p, false).await.unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let script = redis::Script::new(include_str!("../src/store/redis/decide.lua"));
    let (version, generation): (String, String) = redis::cmd("HMGET")
        .arg("drip:{b:t}:policy")
        .arg(&["version", "gen"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let now_us = (clock.now() / 1000).to_string();
    let mut outcomes = Vec::new();
    for step in 0..5 {
        let text: Vec<u8> = script
            .key("drip:{b:t}:policy")
            .key(format!("drip:{{b:t}}:g{generation}:s:text"))
            .arg("")
            .arg(&version)
            .arg(&now_us)
            .arg(&["shape", "10", "1000000000", "3", "0", "1", "-1"])
            .invoke_async(&mut conn)
            .await
            .unwrap();
        let d = store
            .decide("t", "packed", Request::check(1))
            .await
            .unwrap();
        let got: Vec<u64> = text
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as u64)
            .collect();
        let outcome = match d.outcome {
            Outcome::Allowed => 1,
            Outcome::Limited => 2,
            Outcome::Exceeds => 3,
        };
        let want = vec![
            outcome,
            d.wait,
            d.queue_position,
            d.remaining,
            d.retry_after,
            d.reset_after,
        ];
        assert_eq!(got, want, "step {step}");
        outcomes.push(d.outcome);
    }
    // Queued with waits while the bucket holds them, then refused.
    assert_eq!(
        outcomes[2..],
        [Outcome::Allowed, Outcome::Limited, Outcome::Limited]
    );
    let stale: redis::Value = script
        .key("drip:{b:t}:policy")
        .key("drip:{b:t}:g1:s:text")
        .arg("")
        .arg("0")
        .arg(&now_us)
        .arg(&["shape", "10", "1000000000", "3", "0", "1", "-1"])
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stale, redis::Value::SimpleString("stale".to_owned()));
}
