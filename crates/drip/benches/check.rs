//! Cost of one check: drip beside governor, measured in the same run.
//!
//! Each criterion group holds a drip function and a governor function doing
//! the same work, so the report shows them side by side. Two loads:
//!
//! - `admit`: 1e9 units/s with a capacity of `u32::MAX` (governor: the same
//!   quota and burst). Real time moves far faster than the checks fill the
//!   bucket, so every check is admitted and writes the state (one CAS).
//! - `admit_3000_per_s`: 3000 units/s with a capacity of `u32::MAX`: every
//!   check is admitted too, but at an everyday rate whose numbers are not 1
//!   (drip's tick is 1/3 ns, a unit 1e6 ticks), so drip's `remaining` and
//!   `reset_after` take real divisions, which `admit` skips.
//! - `reject`: 1 per hour, capacity 1, each key primed with one check, so
//!   every measured check is rejected and writes no state.
//!
//! Before timing, every setup asserts that both limiters give the expected
//! verdict, so the two sides are known to do the same kind of work.
//!
//! drip is measured twice on each load: `check` (a whole `Decision`:
//! remaining, reset_after, wait, queue position) and `verdict` (only the
//! answer and its time: what governor's `check_key` returns).
//!
//! Clocks: drip's default `MonotonicClock` and governor's
//! default `QuantaClock` (both the TSC through quanta), as users get them; the `clock` group measures
//! the two clocks alone, and the `*_frozen` functions use a manual clock on
//! both sides to take the clock out of the comparison.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use drip::store::Counted;
use drip::{Clock as _, KeyedBucket, Limiter, ManualClock, MonotonicClock};
use governor::RateLimiter;
use governor::clock::{Clock as _, FakeRelativeClock, QuantaClock};

mod support;
use support::{Cycle, LOADS, Load, OWN_KEYS, prime, string_keys, two_threads, u64_keys};

fn clocks(c: &mut Criterion) {
    let mut g = c.benchmark_group("clock_now");
    let drip_clock = MonotonicClock::new();
    g.bench_function("drip_monotonic_clock", |b| {
        b.iter(|| black_box(drip_clock.now()))
    });
    let gov_clock = QuantaClock::default();
    g.bench_function("governor_quanta_clock", |b| {
        b.iter(|| black_box(gov_clock.now()))
    });
    g.finish();
}

fn single_key(c: &mut Criterion) {
    for load in LOADS {
        let mut g = c.benchmark_group(format!("single_key/{}", load.name()));
        let key = [42u64];

        let drip = KeyedBucket::new(load.policy(), MonotonicClock::new()).with_counters();
        prime(load, &key, |k| drip.check(k, 1).unwrap().allowed());
        g.bench_function("drip_keyed_u64_counted", |b| {
            b.iter(|| black_box(drip.check(black_box(&42u64), 1)))
        });

        let drip = KeyedBucket::new(load.policy(), MonotonicClock::new());
        prime(load, &key, |k| drip.check(k, 1).unwrap().allowed());
        g.bench_function("drip_keyed_u64", |b| {
            b.iter(|| black_box(drip.check(black_box(&42u64), 1)))
        });
        g.bench_function("drip_verdict_u64", |b| {
            b.iter(|| black_box(drip.verdict(black_box(&42u64), 1)))
        });

        let gov = RateLimiter::keyed(load.quota());
        prime(load, &key, |k| gov.check_key(k).is_ok());
        g.bench_function("governor_keyed_u64", |b| {
            b.iter(|| black_box(gov.check_key(black_box(&42u64))))
        });

        let gov_direct = RateLimiter::direct(load.quota());
        prime(load, &[()], |_| gov_direct.check().is_ok());
        g.bench_function("governor_direct", |b| {
            b.iter(|| black_box(gov_direct.check()))
        });

        // Both clocks frozen: the limiters' own work without reading time.
        let drip = KeyedBucket::new(load.policy(), ManualClock::new(1));
        prime(load, &key, |k| drip.check(k, 1).unwrap().allowed());
        g.bench_function("drip_keyed_u64_frozen", |b| {
            b.iter(|| black_box(drip.check(black_box(&42u64), 1)))
        });
        g.bench_function("drip_verdict_u64_frozen", |b| {
            b.iter(|| black_box(drip.verdict(black_box(&42u64), 1)))
        });

        let gov = RateLimiter::dashmap_with_clock(load.quota(), FakeRelativeClock::default());
        prime(load, &key, |k| gov.check_key(k).is_ok());
        g.bench_function("governor_keyed_u64_frozen", |b| {
            b.iter(|| black_box(gov.check_key(black_box(&42u64))))
        });
        g.finish();
    }
}

fn many_u64_keys(c: &mut Criterion) {
    let keys = u64_keys();
    for load in LOADS {
        let mut g = c.benchmark_group(format!("keys_10k_u64/{}", load.name()));

        let drip = KeyedBucket::new(load.policy(), MonotonicClock::new()).with_counters();
        prime(load, &keys, |k| drip.check(k, 1).unwrap().allowed());
        g.bench_function("drip_keyed_counted", |b| {
            let mut cycle = Cycle::new(&keys);
            b.iter(|| black_box(drip.check(cycle.next_key(), 1)))
        });

        let drip = KeyedBucket::new(load.policy(), MonotonicClock::new());
        prime(load, &keys, |k| drip.check(k, 1).unwrap().allowed());
        g.bench_function("drip_keyed", |b| {
            let mut cycle = Cycle::new(&keys);
            b.iter(|| black_box(drip.check(cycle.next_key(), 1)))
        });
        g.bench_function("drip_verdict", |b| {
            let mut cycle = Cycle::new(&keys);
            b.iter(|| black_box(drip.verdict(cycle.next_key(), 1)))
        });

        let gov = RateLimiter::keyed(load.quota());
        prime(load, &keys, |k| gov.check_key(k).is_ok());
        g.bench_function("governor_keyed", |b| {
            let mut cycle = Cycle::new(&keys);
            b.iter(|| black_box(gov.check_key(cycle.next_key())))
        });
        g.finish();
    }
}

fn many_string_keys(c: &mut Criterion) {
    let keys = string_keys();
    for load in LOADS {
        let mut g = c.benchmark_group(format!("keys_10k_string/{}", load.name()));

        let drip: KeyedBucket<String, MonotonicClock, Counted> =
            KeyedBucket::new(load.policy(), MonotonicClock::new()).with_counters();
        prime(load, &keys, |k| {
            drip.check(k.as_str(), 1).unwrap().allowed()
        });
        g.bench_function("drip_keyed_string_counted", |b| {
            let mut cycle = Cycle::new(&keys);
            b.iter(|| black_box(drip.check(cycle.next_key().as_str(), 1)))
        });

        let drip: KeyedBucket<String> = KeyedBucket::new(load.policy(), MonotonicClock::new());
        prime(load, &keys, |k| {
            drip.check(k.as_str(), 1).unwrap().allowed()
        });
        g.bench_function("drip_keyed_string", |b| {
            let mut cycle = Cycle::new(&keys);
            b.iter(|| black_box(drip.check(cycle.next_key().as_str(), 1)))
        });
        g.bench_function("drip_verdict_string", |b| {
            let mut cycle = Cycle::new(&keys);
            b.iter(|| black_box(drip.verdict(cycle.next_key().as_str(), 1)))
        });

        let gov = RateLimiter::keyed(load.quota());
        prime(load, &keys, |k: &String| gov.check_key(k).is_ok());
        g.bench_function("governor_keyed_string", |b| {
            let mut cycle = Cycle::new(&keys);
            b.iter(|| black_box(gov.check_key(cycle.next_key())))
        });
        g.finish();
    }
}

fn contended(c: &mut Criterion) {
    for load in LOADS {
        let mut g = c.benchmark_group(format!("two_threads_one_key/{}", load.name()));
        let key = [7u64];

        let drip = KeyedBucket::new(load.policy(), MonotonicClock::new()).with_counters();
        prime(load, &key, |k| drip.check(k, 1).unwrap().allowed());
        g.bench_function("drip_keyed_u64_counted", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, &|_, _| {
                    black_box(drip.check(&7u64, 1)).ok();
                })
            })
        });

        let drip = KeyedBucket::new(load.policy(), MonotonicClock::new());
        prime(load, &key, |k| drip.check(k, 1).unwrap().allowed());
        g.bench_function("drip_keyed_u64", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, &|_, _| {
                    black_box(drip.check(&7u64, 1)).ok();
                })
            })
        });
        g.bench_function("drip_verdict_u64", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, &|_, _| {
                    black_box(drip.verdict(&7u64, 1)).ok();
                })
            })
        });

        let gov = RateLimiter::keyed(load.quota());
        prime(load, &key, |k| gov.check_key(k).is_ok());
        g.bench_function("governor_keyed_u64", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, &|_, _| {
                    black_box(gov.check_key(&7u64)).ok();
                })
            })
        });

        let gov_direct = RateLimiter::direct(load.quota());
        prime(load, &[()], |_| gov_direct.check().is_ok());
        g.bench_function("governor_direct", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, &|_, _| {
                    black_box(gov_direct.check()).ok();
                })
            })
        });
        g.finish();
    }

    // Two threads, each on its own set of keys of one limiter: what they
    // still share. Each thread cycles through 4096 keys, so both limiters'
    // map shards are hit by both threads alike.
    let load = Load::Admit;
    let mut g = c.benchmark_group("two_threads_own_keys/admit");
    let keys = u64_keys();
    let own: [&[u64]; 2] = [&keys[..OWN_KEYS], &keys[OWN_KEYS..2 * OWN_KEYS]];
    let key = |t: usize, j: u64| &own[t][j as usize & (OWN_KEYS - 1)];

    let drip = KeyedBucket::new(load.policy(), MonotonicClock::new()).with_counters();
    prime(load, &keys[..2 * OWN_KEYS], |k| {
        drip.check(k, 1).unwrap().allowed()
    });
    g.bench_function("drip_keyed_u64_counted", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, j| {
                black_box(drip.check(key(t, j), 1)).ok();
            })
        })
    });

    let drip = KeyedBucket::new(load.policy(), MonotonicClock::new());
    prime(load, &keys[..2 * OWN_KEYS], |k| {
        drip.check(k, 1).unwrap().allowed()
    });
    g.bench_function("drip_keyed_u64", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, j| {
                black_box(drip.check(key(t, j), 1)).ok();
            })
        })
    });
    g.bench_function("drip_verdict_u64", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, j| {
                black_box(drip.verdict(key(t, j), 1)).ok();
            })
        })
    });

    let gov = RateLimiter::keyed(load.quota());
    prime(load, &keys[..2 * OWN_KEYS], |k| gov.check_key(k).is_ok());
    g.bench_function("governor_keyed_u64", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, j| {
                black_box(gov.check_key(key(t, j))).ok();
            })
        })
    });
    g.finish();
}

/// drip's async `Limiter::check` through the memory store, beside the
/// `KeyedBucket<String>` it ends in and governor keyed on a `String`.
fn store_layer(c: &mut Criterion) {
    let load = Load::Admit;
    let mut g = c.benchmark_group("store_layer/admit");
    let key = ["client-1".to_owned()];

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let limiter = Limiter::memory();
    rt.block_on(limiter.configure("api", load.policy()))
        .unwrap();
    prime(load, &key, |k| {
        rt.block_on(limiter.check("api", k, 1)).unwrap().allowed()
    });
    g.bench_function("drip_limiter_async", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(
                        limiter
                            .check(black_box("api"), black_box("client-1"), 1)
                            .await,
                    )
                    .ok();
                }
                start.elapsed()
            })
        })
    });

    let drip: KeyedBucket<String, MonotonicClock, Counted> =
        KeyedBucket::new(load.policy(), MonotonicClock::new()).with_counters();
    prime(load, &key, |k| drip.check(k.as_str(), 1).unwrap().allowed());
    g.bench_function("drip_keyed_string_counted", |b| {
        b.iter(|| black_box(drip.check(black_box("client-1"), 1)))
    });

    let gov = RateLimiter::keyed(load.quota());
    prime(load, &key, |k: &String| gov.check_key(k).is_ok());
    g.bench_function("governor_keyed_string", |b| {
        b.iter(|| black_box(gov.check_key(black_box(&key[0]))))
    });
    g.finish();
}

criterion_group!(
    benches,
    clocks,
    single_key,
    many_u64_keys,
    many_string_keys,
    contended,
    store_layer
);
criterion_main!(benches);
