//! The Redis script against the Rust core: the same random sequences of
//! checks, reservations and reconfigurations, at the same times (passed to
//! the script in place of Redis `TIME`), must give identical decisions.

#![cfg(feature = "redis")]

mod redis_support;
mod strategies;

use std::sync::atomic::{AtomicU64, Ordering};

use drip::core::{self, Request, State};
use drip::store::{RedisOptions, RedisStore};
use drip::{ManualClock, Policy, Store};
use proptest::prelude::*;
use redis_support::RedisServer;

/// Windows of any ns length (the script keeps logs in ns, relative to the
/// key's write time), exact or approximate.
fn arb_policy() -> impl Strategy<Value = Policy> {
    strategies::arb_policy_with(0u32..=4, 999)
}

#[derive(Debug, Clone)]
enum Op {
    /// Advance `k/4` emission intervals rounded to whole µs, then decide.
    Decide {
        k: u64,
        cost: u64,
        reserve: Option<u64>,
    },
    Reconfigure {
        policy: Policy,
        reset: bool,
    },
}

fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        10 => (0u64..=12, 0u64..=14, prop::option::of(0u64..=30))
            .prop_map(|(k, cost, reserve)| Op::Decide { k, cost, reserve }),
        1 => (arb_policy(), any::<bool>()).prop_map(|(policy, reset)| Op::Reconfigure { policy, reset }),
    ];
    prop::collection::vec(op, 1..40)
}

/// `k/4` emission intervals, rounded up to whole microseconds.
fn step_us(policy: &Policy, k: u64) -> u64 {
    let r = policy.limit().rate();
    (r.period_ns() * k / (r.amount() * 4)).div_ceil(1000)
}

#[test]
fn redis_script_decides_as_the_core() {
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
        RedisStore::connect(
            &server.url(),
            // Exact answers from the script; the deny cache is tested in
            // redis_deny_cache.rs.
            RedisOptions {
                deny_cache: 0,
                ..RedisOptions::default()
            },
        )
        .await
        .unwrap()
        .with_test_clock(clock.clone())
    });
    let case = AtomicU64::new(0);
    let config = ProptestConfig {
        cases: 1000,
        ..ProptestConfig::default()
    };
    proptest!(config, |(policy in arb_policy(), ops in arb_ops())| {
        let bucket = format!("case{}", case.fetch_add(1, Ordering::Relaxed));
        // Start each case at a fresh, whole-µs time far from zero.
        let mut now = 1_700_000_000_000_000_000u64;
        clock.set(now);
        let mut current = policy.clone();
        let mut state = State::default();
        runtime.block_on(store.configure(&bucket, policy, false)).unwrap();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Decide { k, cost, reserve } => {
                    now += step_us(&current, k) * 1000;
                    clock.set(now);
                    let r = current.limit().rate();
                    let req = match reserve {
                        Some(n) => Request::reserve(cost, r.period_ns() * n / (4 * r.amount())),
                        None => Request::check(cost),
                    };
                    let want = core::decide(&current, &mut state, now, req);
                    let got = runtime.block_on(store.decide(&bucket, "k", req)).unwrap();
                    prop_assert_eq!(got, want, "step {} ({:?}) at {}", step, req, now);
                    let s = runtime.block_on(store.status(&bucket, "k")).unwrap();
                    let level = core::level(&current, &state, now);
                    prop_assert_eq!(s.level.queue_size, level.queue_size, "queue at step {}", step);
                    prop_assert_eq!(s.level.remaining, level.remaining, "remaining at step {}", step);
                }
                Op::Reconfigure { policy, reset } => {
                    if reset {
                        state = State::default();
                    } else {
                        core::carry_over(&current, &policy, &mut state, now);
                    }
                    runtime.block_on(store.configure(&bucket, policy.clone(), reset)).unwrap();
                    current = policy;
                }
            }
        }
    });
}
