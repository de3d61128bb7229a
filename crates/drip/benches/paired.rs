//! drip against governor in paired rounds: the ratio of their times per
//! check, measured so that the machine's drifting load falls on both alike.
//!
//! criterion (`benches/check.rs`) measures one function for seconds, then
//! the next; on a shared 2-vCPU VM the load moves between them and a figure
//! moves by up to 1.5x from one run to the next. Here each case runs its
//! contenders in turn, a block of `BLOCK` checks each, for `ROUNDS` rounds
//! (the order rotating every round), so the contenders of one round ran
//! within milliseconds of each other. Reported per contender: the median
//! time per check over the rounds, and the median over the rounds of
//! (its block's time / governor's block's time in the same round), with
//! the quartiles of that ratio. The first round is a warm-up and dropped.
//!
//! Contenders: `drip check` (a whole `Decision`), `drip counted` (the same
//! with per-key counters, as the memory store behind `Limiter` runs it),
//! `drip verdict` (only the answer and its time: what governor's
//! `check_key` returns) and governor's keyed limiter; the loads and keys
//! of `benches/check.rs` (see `support/mod.rs`), on each side's default
//! clock (both read the TSC through quanta). The `limiter_*` cases time
//! `Limiter::check` on the memory store (what the server, the blocking API
//! and the tower layer call) beside governor keyed on the same strings, and
//! on one key beside `drip counted` on that string key: the difference is
//! `Limiter`'s own cost (finding the bucket by name). The
//! `limiter_by_name_*` cases time it beside governor found by name the way
//! a program with named limits configured at run time keeps them (a
//! `RwLock` over a `HashMap`).
//!
//! Run: `cargo bench -p drip --bench paired` (about a minute).
//! `PAIRED_ROUNDS` and `PAIRED_BLOCK` change the rounds and block size;
//! `PAIRED_CASES` (a comma-separated list of substrings) runs only the
//! cases whose names contain one of them.

use std::collections::HashMap;
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Barrier, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use drip::store::Counted;
use drip::{KeyedBucket, Limiter, MonotonicClock};
use governor::{DefaultKeyedRateLimiter, RateLimiter};

mod support;
use support::{Cycle, LOADS, Load, OWN_KEYS, prime, string_keys, u64_keys};

/// One check of a two-thread contender: `(thread, i)` for the thread's
/// `i`th check.
type TwoThreadCheck<'a> = dyn Fn(usize, u64) + Sync + 'a;

/// Runs a block of `n` checks and returns how long it took.
type Block<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs the contenders of one case in rotating order, round after round,
/// and prints each one's median time and its median ratio to the last
/// contender (governor).
fn paired(case: &str, mut sides: Vec<(&str, Block<'_>)>) {
    if !chosen(case) {
        return;
    }
    let rounds = env("PAIRED_ROUNDS", 31).max(2) as usize;
    let block = env("PAIRED_BLOCK", 100_000).max(1);
    let n = sides.len();
    let mut ns = vec![Vec::with_capacity(rounds); n];
    for round in 0..=rounds {
        let mut this = vec![0.0; n];
        for i in 0..n {
            let side = (round + i) % n;
            this[side] = (sides[side].1)(block).as_nanos() as f64 / block as f64;
        }
        if round > 0 {
            for (all, t) in ns.iter_mut().zip(this) {
                all.push(t);
            }
        }
    }
    let base = &ns[n - 1];
    println!("\n{case}");
    println!(
        "  {:<16} {:>10}   {:>10}   {:<17}",
        "contender", "ns/check", "/governor", "quartiles"
    );
    for (i, (name, _)) in sides.iter().enumerate() {
        let ratios: Vec<f64> = ns[i].iter().zip(base).map(|(t, b)| t / b).collect();
        let (q1, med, q3) = quartiles(ratios);
        println!(
            "  {:<16} {:>10.2}   {:>9.2}x   [{:.2}, {:.2}]",
            name,
            quartiles(ns[i].clone()).1,
            med,
            q1,
            q3
        );
    }
}

/// Whether `PAIRED_CASES` (if set) names `case`.
fn chosen(case: &str) -> bool {
    std::env::var("PAIRED_CASES").map_or(true, |cases| {
        cases.split(',').any(|c| !c.is_empty() && case.contains(c))
    })
}

fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}

/// A block of one thread's checks.
fn timed(n: u64, mut check: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        check();
    }
    start.elapsed()
}

/// drip's three contenders, each its own bucket on `load`.
struct Drips<K: std::hash::Hash + Eq> {
    check: KeyedBucket<K>,
    counted: KeyedBucket<K, MonotonicClock, Counted>,
    verdict: KeyedBucket<K>,
}

fn drips<K: std::hash::Hash + Eq + Clone>(load: Load) -> Drips<K> {
    let bucket = || KeyedBucket::new(load.policy(), MonotonicClock::new());
    Drips {
        check: bucket(),
        counted: bucket().with_counters(),
        verdict: bucket(),
    }
}

impl<K: std::hash::Hash + Eq + Clone> Drips<K> {
    /// Primes all three on `keys`, each checked as `borrow` gives it.
    fn prime<Q>(&self, load: Load, keys: &[K], borrow: fn(&K) -> &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        for b in [&self.check, &self.verdict] {
            prime(load, keys, |k| b.check(borrow(k), 1).unwrap().allowed());
        }
        let c = &self.counted;
        prime(load, keys, |k| c.check(borrow(k), 1).unwrap().allowed());
    }
}

fn single_key(load: Load) {
    let d = drips::<u64>(load);
    let gov = RateLimiter::keyed(load.quota());
    d.prime(load, &[42u64], |k| k);
    prime(load, &[42u64], |k| gov.check_key(k).is_ok());
    let key = &42u64;
    paired(
        &format!("single_key/{}", load.name()),
        vec![
            (
                "drip check",
                Box::new(|n| timed(n, || drop(black_box(d.check.check(black_box(key), 1))))),
            ),
            (
                "drip counted",
                Box::new(|n| timed(n, || drop(black_box(d.counted.check(black_box(key), 1))))),
            ),
            (
                "drip verdict",
                Box::new(|n| timed(n, || drop(black_box(d.verdict.verdict(black_box(key), 1))))),
            ),
            (
                "governor",
                Box::new(|n| timed(n, || drop(black_box(gov.check_key(black_box(key)))))),
            ),
        ],
    );
}

/// Over many keys, each checked as `Q` (`u64` as itself, `String` as
/// `&str`).
fn many_keys<K, Q>(name: &str, load: Load, keys: &[K], borrow: fn(&K) -> &Q)
where
    K: std::hash::Hash + Eq + Clone + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
{
    let d = drips::<K>(load);
    d.prime(load, keys, borrow);
    let Drips {
        check,
        counted,
        verdict,
    } = d;
    let gov = RateLimiter::keyed(load.quota());
    prime(load, keys, |k| gov.check_key(k).is_ok());
    let (mut a, mut b, mut c, mut d) = (
        Cycle::new(keys),
        Cycle::new(keys),
        Cycle::new(keys),
        Cycle::new(keys),
    );
    paired(
        &format!("{name}/{}", load.name()),
        vec![
            (
                "drip check",
                Box::new(move |n| {
                    timed(n, || drop(black_box(check.check(borrow(a.next_key()), 1))))
                }),
            ),
            (
                "drip counted",
                Box::new(move |n| {
                    timed(n, || {
                        drop(black_box(counted.check(borrow(b.next_key()), 1)))
                    })
                }),
            ),
            (
                "drip verdict",
                Box::new(move |n| {
                    timed(n, || {
                        drop(black_box(verdict.verdict(borrow(c.next_key()), 1)))
                    })
                }),
            ),
            (
                "governor",
                Box::new(move |n| timed(n, || drop(black_box(gov.check_key(d.next_key()))))),
            ),
        ],
    );
}

/// The answer of a future that is ready at once (the memory store's
/// decisions never wait), without a runtime.
fn ready<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the memory store answers at once"),
    }
}

/// `Limiter::check` of bucket `b` on the keys `next` gives, as a
/// contender.
fn limiter_contender<'a>(
    limiter: &'a Limiter,
    mut next: impl FnMut() -> &'a String + 'a,
) -> (&'static str, Block<'a>) {
    let block = move |n| timed(n, || drop(black_box(ready(limiter.check("b", next(), 1)))));
    ("Limiter::check", Box::new(block))
}

/// `Limiter::check` on the memory store (the path `drip serve`, the
/// blocking API and the tower layer take: bucket look-up, counted key,
/// whole `Decision`) beside governor, on one key and on 10k String keys.
fn limiter_check(load: Load, strings: &[String]) {
    let limiter = Limiter::memory();
    ready(limiter.configure("b", load.policy())).unwrap();
    // governor keyed on the same string: both hash the same bytes.
    let gov = RateLimiter::keyed(load.quota());
    let key = &"42".to_owned();
    prime(load, std::slice::from_ref(key), |k| {
        gov.check_key(k).is_ok()
    });
    prime(load, std::slice::from_ref(key), |k| {
        ready(limiter.check("b", k, 1)).unwrap().allowed()
    });
    let counted = KeyedBucket::new(load.policy(), MonotonicClock::new()).with_counters();
    prime(load, std::slice::from_ref(key), |k| {
        counted.check(k.as_str(), 1).unwrap().allowed()
    });
    paired(
        &format!("limiter_single_key/{}", load.name()),
        vec![
            (
                "drip counted",
                Box::new(|n| {
                    timed(n, || {
                        drop(black_box(counted.check(black_box(key.as_str()), 1)))
                    })
                }),
            ),
            limiter_contender(&limiter, || black_box(key)),
            (
                "governor",
                Box::new(|n| timed(n, || drop(black_box(gov.check_key(black_box(key)))))),
            ),
        ],
    );
    let gov = RateLimiter::keyed(load.quota());
    prime(load, strings, |k| gov.check_key(k).is_ok());
    prime(load, strings, |k| {
        ready(limiter.check("b", k, 1)).unwrap().allowed()
    });
    let (mut a, mut b) = (Cycle::new(strings), Cycle::new(strings));
    paired(
        &format!("limiter_keys_10k_string/{}", load.name()),
        vec![
            limiter_contender(&limiter, || a.next_key()),
            (
                "governor",
                Box::new(|n| timed(n, || drop(black_box(gov.check_key(b.next_key()))))),
            ),
        ],
    );
    limiter_by_name(load, &limiter, key, strings);
}

/// Governor's keyed limiters found by name, as a program that configures
/// named limits at run time would keep them (std's `RwLock` over a
/// `HashMap`): the peer of `Limiter::check`, which finds its bucket by name
/// too. No counters (governor keeps none).
type NamedGovernors = std::sync::RwLock<HashMap<String, DefaultKeyedRateLimiter<String>>>;

/// `Limiter::check` beside governor found by name (`NamedGovernors`), on
/// one key and on 10k string keys.
fn limiter_by_name(load: Load, limiter: &Limiter, key: &String, strings: &[String]) {
    let named = || -> NamedGovernors {
        let map = HashMap::from([("b".to_owned(), RateLimiter::keyed(load.quota()))]);
        std::sync::RwLock::new(map)
    };
    let check = |g: &NamedGovernors, k: &String| {
        let map = g.read().unwrap_or_else(PoisonError::into_inner);
        map.get(black_box("b")).map(|g| g.check_key(k).is_ok())
    };
    let gov = named();
    prime(load, std::slice::from_ref(key), |k| check(&gov, k).unwrap());
    paired(
        &format!("limiter_by_name_single_key/{}", load.name()),
        vec![
            limiter_contender(limiter, || black_box(key)),
            (
                "governor by name",
                Box::new(|n| {
                    timed(n, || {
                        black_box(check(&gov, black_box(key)));
                    })
                }),
            ),
        ],
    );
    let gov = named();
    prime(load, strings, |k| check(&gov, k).unwrap());
    let (mut a, mut b) = (Cycle::new(strings), Cycle::new(strings));
    paired(
        &format!("limiter_by_name_keys_10k_string/{}", load.name()),
        vec![
            limiter_contender(limiter, || a.next_key()),
            (
                "governor by name",
                Box::new(|n| {
                    timed(n, || {
                        black_box(check(&gov, b.next_key()));
                    })
                }),
            ),
        ],
    );
}

/// Every check on a key never seen before, each block in a new limiter
/// (made before its block is timed): the cost of inserting keys, table
/// growth included, as in a process meeting its clients.
fn new_keys(load: Load) {
    let drip = move || KeyedBucket::with_max_keys(load.policy(), MonotonicClock::new(), usize::MAX);
    type Drip = KeyedBucket<u64>;
    type Counted = KeyedBucket<u64, MonotonicClock, drip::store::Counted>;
    paired(
        &format!("new_keys/{}", load.name()),
        vec![
            (
                "drip check",
                fresh_keys(drip, |b: &Drip, k| drop(black_box(b.check(k, 1)))),
            ),
            (
                "drip counted",
                fresh_keys(
                    move || drip().with_counters(),
                    |b: &Counted, k| drop(black_box(b.check(k, 1))),
                ),
            ),
            (
                "drip verdict",
                fresh_keys(drip, |b: &Drip, k| drop(black_box(b.verdict(k, 1)))),
            ),
            (
                "governor",
                fresh_keys(
                    move || RateLimiter::keyed(load.quota()),
                    |g: &governor::DefaultKeyedRateLimiter<u64>, k| drop(black_box(g.check_key(k))),
                ),
            ),
        ],
    );
}

/// A block of checks, each on a key its limiter has not seen, in a limiter
/// `make` builds for the block (dropped after the block is timed).
fn fresh_keys<'a, L>(make: impl Fn() -> L + 'a, check: impl Fn(&L, &u64) + 'a) -> Block<'a> {
    Box::new(move |n| {
        let limiter = make();
        let mut i = 0u64;
        timed(n, || {
            i += 1;
            check(&limiter, &i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        })
    })
}

/// Two-thread contenders, run by one pair of worker threads kept for the
/// whole case (threads started anew for each block land wherever the
/// scheduler puts them, which moved a block's time by 2x): for each block
/// both workers make half of its checks with the chosen contender.
fn paired_two_threads(case: &str, sides: &[(&str, &TwoThreadCheck<'_>)]) {
    if !chosen(case) {
        return;
    }
    let (start, end) = (Barrier::new(3), Barrier::new(3));
    // The contender and block size of the next block; `None` stops.
    let job = Mutex::new(None::<(usize, u64)>);
    std::thread::scope(|s| {
        for t in 0..2 {
            let (start, end, job) = (&start, &end, &job);
            s.spawn(move || {
                loop {
                    start.wait();
                    let Some((i, n)) = *job.lock().unwrap() else {
                        break;
                    };
                    let check = sides[i].1;
                    for j in 0..n.div_ceil(2) {
                        check(t, j);
                    }
                    end.wait();
                }
            });
        }
        let blocks: Vec<(&str, Block<'_>)> = sides
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let (start, end, job) = (&start, &end, &job);
                let block: Block<'_> = Box::new(move |n| {
                    *job.lock().unwrap() = Some((i, n));
                    start.wait();
                    let began = Instant::now();
                    end.wait();
                    began.elapsed()
                });
                (*name, block)
            })
            .collect();
        paired(case, blocks);
        *job.lock().unwrap() = None;
        start.wait();
    });
}

fn two_threads_one_key(load: Load) {
    let d = drips::<u64>(load);
    let gov = RateLimiter::keyed(load.quota());
    d.prime(load, &[7u64], |k| k);
    prime(load, &[7u64], |k| gov.check_key(k).is_ok());
    paired_two_threads(
        &format!("two_threads_one_key/{}", load.name()),
        &[
            ("drip check", &|_, _| {
                drop(black_box(d.check.check(&7u64, 1)))
            }),
            ("drip counted", &|_, _| {
                drop(black_box(d.counted.check(&7u64, 1)))
            }),
            ("drip verdict", &|_, _| {
                drop(black_box(d.verdict.verdict(&7u64, 1)))
            }),
            ("governor", &|_, _| drop(black_box(gov.check_key(&7u64)))),
        ],
    );
}

/// Two threads, each cycling through its own 4096 keys of one limiter.
fn two_threads_own_keys(keys: &[u64]) {
    let load = Load::Admit;
    let own: [&[u64]; 2] = [&keys[..OWN_KEYS], &keys[OWN_KEYS..2 * OWN_KEYS]];
    let key = |t: usize, j: u64| &own[t][j as usize & (OWN_KEYS - 1)];
    let d = drips::<u64>(load);
    let gov = RateLimiter::keyed(load.quota());
    let held = &keys[..2 * OWN_KEYS];
    d.prime(load, held, |k| k);
    prime(load, held, |k| gov.check_key(k).is_ok());
    paired_two_threads(
        "two_threads_own_keys/admit",
        &[
            ("drip check", &|t, j| {
                drop(black_box(d.check.check(key(t, j), 1)))
            }),
            ("drip counted", &|t, j| {
                drop(black_box(d.counted.check(key(t, j), 1)))
            }),
            ("drip verdict", &|t, j| {
                drop(black_box(d.verdict.verdict(key(t, j), 1)))
            }),
            ("governor", &|t, j| {
                drop(black_box(gov.check_key(key(t, j))))
            }),
        ],
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read from the command line.
    let (u64s, strings) = (u64_keys(), string_keys());
    for load in LOADS {
        single_key(load);
        many_keys("keys_10k_u64", load, &u64s, |k| k);
        many_keys("keys_10k_string", load, &strings, String::as_str);
        two_threads_one_key(load);
        limiter_check(load, &strings);
    }
    two_threads_own_keys(&u64s);
    new_keys(Load::Admit);
}
