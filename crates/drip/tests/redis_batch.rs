//! The Redis store's batching: requests for one bucket that arrive while its
//! script calls are under way go together in one call, each decided exactly
//! as if alone, in arrival order; a caller that gives up or a call that
//! fails affects no other caller.

#![cfg(feature = "redis")]

mod redis_support;
mod strategies;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use drip::core::{self, State};
use drip::store::{RedisOptions, RedisStore};
use drip::{Decision, Error, Limit, ManualClock, Mode, Policy, Rate, Request, Store};
use proptest::prelude::*;
use redis_support::RedisServer;

type Call<'a> = Pin<Box<dyn Future<Output = drip::Result<Decision>> + 'a>>;

/// One script call under way per bucket: every request that arrives while
/// it is goes in the next batch.
fn options(in_flight: usize, max_batch: usize) -> RedisOptions {
    RedisOptions {
        in_flight,
        max_batch,
        // Exact answers from the script; the deny cache is tested in
        // redis_deny_cache.rs.
        deny_cache: 0,
        ..RedisOptions::default()
    }
}

async fn store(server: &RedisServer, in_flight: usize, max_batch: usize) -> RedisStore {
    RedisStore::connect(&server.url(), options(in_flight, max_batch))
        .await
        .unwrap()
}

/// Polls each call once, in order (so they arrive in that order), then all
/// of them until every one is done.
async fn join_in_order(mut calls: Vec<Call<'_>>) -> Vec<drip::Result<Decision>> {
    let mut out: Vec<Option<drip::Result<Decision>>> = calls.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (call, slot) in calls.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match call.as_mut().poll(cx) {
                    Poll::Ready(r) => *slot = Some(r),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

/// Polls `call` once.
async fn poll_once(call: &mut Call<'_>) {
    std::future::poll_fn(|cx| {
        assert!(call.as_mut().poll(cx).is_pending(), "answered at once");
        Poll::Ready(())
    })
    .await
}

/// Calls of the decide script so far.
fn script_calls(server: &RedisServer) -> u64 {
    let stats = redis_support::cli(server.port, &["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

fn police(rate: Rate, capacity: u64) -> Policy {
    Policy::new(Mode::Police, Limit::new(rate, capacity).unwrap())
}

/// 300 callers at once on one key, whose bucket holds 100 and leaks 1 per
/// hour: exactly 100 are admitted, and they went in a few script calls.
#[tokio::test]
async fn many_callers_on_one_key_admit_exactly_the_limit_in_few_calls() {
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let store = store(&server, 1, 64).await;
    store
        .configure("hot", police(Rate::per_hour(1).unwrap(), 100), false)
        .await
        .unwrap();
    // Loads the script (a first NOSCRIPT call would count too).
    store
        .decide("hot", "warm", Request::check(1))
        .await
        .unwrap();
    let before = script_calls(&server);
    let calls: Vec<Call<'_>> = (0..300)
        .map(|_| Box::pin(store.decide("hot", "one", Request::check(1))) as Call<'_>)
        .collect();
    let results = join_in_order(calls).await;
    let admitted: Vec<bool> = results
        .iter()
        .map(|r| r.as_ref().unwrap().allowed())
        .collect();
    // Arrival order is decision order: the first 100 are the admitted ones.
    assert_eq!(admitted.iter().filter(|a| **a).count(), 100);
    assert!(admitted[..100].iter().all(|a| *a) && admitted[100..].iter().all(|a| !*a));
    // One call alone, then batches of at most 64: 1 + ceil(299 / 64) = 6.
    let calls = script_calls(&server) - before;
    assert_eq!(calls, 6, "script calls for 300 requests");
    let s = store.status("hot", "one").await.unwrap();
    assert_eq!((s.counters.allowed, s.counters.rejected), (100, 200));
}

/// The same from 8 tasks on a 2-thread runtime sharing the store: callers
/// arrive in any order and from both threads; still exactly the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_on_two_threads_admit_exactly_the_limit() {
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let store = std::sync::Arc::new(store(&server, 2, 16).await);
    store
        .configure("hot", police(Rate::per_hour(1).unwrap(), 500), false)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut admitted = 0u64;
                for _ in 0..200 {
                    if store
                        .decide("hot", "one", Request::check(1))
                        .await
                        .unwrap()
                        .allowed()
                    {
                        admitted += 1;
                    }
                }
                admitted
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 500);
    let s = store.status("hot", "one").await.unwrap();
    assert_eq!((s.counters.allowed, s.counters.rejected), (500, 1100));
}

#[derive(Debug, Clone)]
struct Req {
    key: usize,
    cost: u64,
    /// Emission intervals / 4 a reservation may wait; None: a check.
    reserve: Option<u64>,
}

fn arb_bursts() -> impl Strategy<Value = Vec<(u64, Vec<Req>)>> {
    let req = (0usize..3, 0u64..=6, prop::option::of(0u64..=30))
        .prop_map(|(key, cost, reserve)| Req { key, cost, reserve });
    prop::collection::vec((0u64..=12, prop::collection::vec(req, 1..12)), 1..8)
}

/// Bursts of requests over three keys, all sent at once, against the core
/// deciding them one after another in arrival order at the same moment.
#[test]
fn batches_decide_as_the_core_in_arrival_order() {
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = ManualClock::new(0);
    let store = runtime.block_on(async {
        RedisStore::connect(&server.url(), options(1, 5))
            .await
            .unwrap()
            .with_test_clock(clock.clone())
    });
    let case = AtomicU64::new(0);
    let before = script_calls(&server);
    // Script calls expected: per burst one for its first request (alone),
    // then batches of at most 5; or, when the previous burst's last call
    // still holds the call slot (it yields once before letting it go),
    // batches of at most 5 from the first request on. Per case a configure
    // and three status calls.
    let expected = AtomicU64::new(0);
    let expected_min = AtomicU64::new(0);
    let config = ProptestConfig {
        cases: 200,
        ..ProptestConfig::default()
    };
    proptest!(config, |(policy in strategies::arb_policy_with(0u32..=4, 999), bursts in arb_bursts())| {
        let bucket = format!("case{}", case.fetch_add(1, Ordering::Relaxed));
        let mut now = 1_700_000_000_000_000_000u64;
        clock.set(now);
        let mut states = vec![State::default(); 3];
        runtime.block_on(store.configure(&bucket, policy.clone(), false)).unwrap();
        let r = policy.limit().rate();
        for (step, (k, burst)) in bursts.into_iter().enumerate() {
            now += (r.period_ns() * k / (r.amount() * 4)).div_ceil(1000) * 1000;
            clock.set(now);
            let reqs: Vec<(String, Request)> = burst
                .iter()
                .map(|q| {
                    let req = match q.reserve {
                        Some(n) => Request::reserve(q.cost, r.period_ns() * n / (4 * r.amount())),
                        None => Request::check(q.cost),
                    };
                    (format!("k{}", q.key), req)
                })
                .collect();
            let want: Vec<Decision> = burst
                .iter()
                .zip(&reqs)
                .map(|(q, (_, req))| core::decide(&policy, &mut states[q.key], now, *req))
                .collect();
            let calls: Vec<Call<'_>> = reqs
                .iter()
                .map(|(key, req)| Box::pin(store.decide(&bucket, key, *req)) as Call<'_>)
                .collect();
            let got: Vec<Decision> = runtime
                .block_on(join_in_order(calls))
                .into_iter()
                .map(Result::unwrap)
                .collect();
            expected.fetch_add(1 + (got.len() as u64 - 1).div_ceil(5), Ordering::Relaxed);
            expected_min.fetch_add((got.len() as u64).div_ceil(5), Ordering::Relaxed);
            prop_assert_eq!(got, want, "burst {} at {}", step, now);
        }
        for (i, state) in states.iter().enumerate() {
            let s = runtime.block_on(store.status(&bucket, &format!("k{i}"))).unwrap();
            let level = core::level(&policy, state, now);
            prop_assert_eq!(s.level.queue_size, level.queue_size, "queue of k{}", i);
            prop_assert_eq!(s.level.remaining, level.remaining, "remaining of k{}", i);
        }
        expected.fetch_add(1 + 3, Ordering::Relaxed);
        expected_min.fetch_add(1 + 3, Ordering::Relaxed);
    });
    // The bursts did go in batches. (+2: each script's first call finds it
    // not loaded yet.)
    let calls = script_calls(&server) - before;
    let expected = expected_min.load(Ordering::Relaxed) + 2..=expected.load(Ordering::Relaxed) + 2;
    assert!(
        expected.contains(&calls),
        "{calls} script calls, expected {expected:?}"
    );
}

/// A caller that gives up while waiting for the next batch is not decided;
/// one that gives up while its own call is under way passes its call slot
/// on; the others get their answers either way.
#[tokio::test]
async fn callers_that_give_up_break_no_one() {
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let store = store(&server, 1, 64).await;
    store
        .configure("d", police(Rate::per_hour(1).unwrap(), 10), false)
        .await
        .unwrap();
    let call = |key: &'static str| Box::pin(store.decide("d", key, Request::check(1))) as Call<'_>;

    // a goes alone; b, c and d wait for the next batch; c gives up.
    let (mut a, mut b, mut c, mut d) = (call("k"), call("k"), call("k"), call("k"));
    for f in [&mut a, &mut b, &mut c, &mut d] {
        poll_once(f).await;
    }
    drop(c);
    let results = join_in_order(vec![a, b, d]).await;
    assert!(results.iter().all(|r| r.as_ref().unwrap().allowed()));
    let s = store.status("d", "k").await.unwrap();
    assert_eq!(s.counters.allowed, 3, "the caller that gave up was decided");

    // e's call is under way when e gives up: f and g, waiting behind it,
    // are still answered.
    let (mut e, mut f, mut g) = (call("x"), call("x"), call("x"));
    for h in [&mut e, &mut f, &mut g] {
        poll_once(h).await;
    }
    drop(e);
    let results = tokio::time::timeout(Duration::from_secs(5), join_in_order(vec![f, g]))
        .await
        .expect("callers behind one that gave up were never answered");
    assert!(results.iter().all(|r| r.as_ref().unwrap().allowed()));
}

/// A batch that fails fails each of its callers: the bucket deleted by
/// another node (each gets "no such bucket"), and Redis gone (each gets a
/// store error, in time).
#[tokio::test]
async fn a_failed_batch_fails_each_caller() {
    if !redis_support::available() {
        return;
    }
    let mut server = RedisServer::start();
    let options = redis_support::short_timeouts(options(1, 64));
    let store = RedisStore::connect(&server.url(), options.clone())
        .await
        .unwrap();
    let other = RedisStore::connect(&server.url(), options).await.unwrap();
    let p = police(Rate::per_second(10).unwrap(), 10);
    store.configure("gone", p.clone(), false).await.unwrap();
    assert!(
        store
            .decide("gone", "k", Request::check(1))
            .await
            .unwrap()
            .allowed()
    );
    assert!(other.delete("gone").await.unwrap());
    let calls: Vec<Call<'_>> = (0..5)
        .map(|i| Box::pin(store.decide("gone", ["a", "b"][i % 2], Request::check(1))) as Call<'_>)
        .collect();
    for r in join_in_order(calls).await {
        assert!(
            matches!(r, Err(Error::UnknownBucket(ref b)) if b == "gone"),
            "{r:?}"
        );
    }

    store.configure("up", p, false).await.unwrap();
    server.stop();
    let calls: Vec<Call<'_>> = (0..5)
        .map(|_| Box::pin(store.decide("up", "k", Request::check(1))) as Call<'_>)
        .collect();
    let results = tokio::time::timeout(Duration::from_secs(10), join_in_order(calls))
        .await
        .expect("callers of a failed batch were never answered");
    for r in results {
        assert!(matches!(r, Err(Error::Store(_))), "{r:?}");
    }
}

/// `tasks` tasks sharing `store` each decide `each` requests on one key of
/// `bucket` one after another: how many were admitted.
async fn callers_in_a_loop(
    store: &std::sync::Arc<RedisStore>,
    bucket: &str,
    tasks: usize,
    each: usize,
) -> u64 {
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (store, bucket) = (store.clone(), bucket.to_owned());
            tokio::spawn(async move {
                let mut admitted = 0;
                for _ in 0..each {
                    if store
                        .decide(&bucket, "one", Request::check(1))
                        .await
                        .unwrap()
                        .allowed()
                    {
                        admitted += 1;
                    }
                }
                admitted
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    total
}

/// 16 tasks deciding 40 checks each on one key of a fresh bucket (limit
/// 300 an hour), `in_flight` calls per bucket: asserts exactly 300 admitted
/// and counted, and returns the script calls the 640 requests took.
async fn script_calls_of_looping_callers(in_flight: usize) -> u64 {
    let server = RedisServer::start();
    let store = std::sync::Arc::new(store(&server, in_flight, 64).await);
    store
        .configure("loop", police(Rate::per_hour(1).unwrap(), 300), false)
        .await
        .unwrap();
    store
        .decide("loop", "warm", Request::check(1))
        .await
        .unwrap();
    let before = script_calls(&server);
    assert_eq!(callers_in_a_loop(&store, "loop", 16, 40).await, 300);
    let calls = script_calls(&server) - before;
    let s = store.status("loop", "one").await.unwrap();
    assert_eq!((s.counters.allowed, s.counters.rejected), (300, 340));
    calls
}

/// Callers that ask again as soon as they are answered join the next batch
/// instead of finding the call slot free and going alone: 16 callers, one
/// call under way at a time, 40 decisions each go in batches of 16 (one
/// call alone and one of 15 to start), not alternately alone and 15.
#[tokio::test]
async fn callers_asking_again_at_once_join_the_next_batch() {
    if !redis_support::available() {
        return;
    }
    let calls = script_calls_of_looping_callers(1).await;
    // 1 + 1 + 39 = 41 when every batch after the first two has all 16.
    assert!(calls <= 44, "{calls} script calls for 640 requests");
}

/// With two calls under way per bucket, 16 callers asking again at once
/// split into two calls of about 8 (each slot takes its share of the
/// bucket's requests), not one of 15 beside lone calls.
#[tokio::test]
async fn two_call_slots_share_the_waiting_requests() {
    if !redis_support::available() {
        return;
    }
    let calls = script_calls_of_looping_callers(2).await;
    // 640 / 8 = 80 calls of 8, give or take the first few.
    assert!(
        (76..=88).contains(&calls),
        "{calls} script calls for 640 requests"
    );
}
