//! What a counter retention costs a decision on the memory store: a
//! counting `KeyedBucket` (as `MemoryStore` keeps) with and without
//! `Policy::with_counter_retention`, whose keys then record the last
//! request's time (one more atomic `fetch_max` per decision).
//!
//! The two subjects run interleaved, round after round, so load from other
//! processes falls on both alike; the report is each round's ns per check
//! and the median ratio. Run: `cargo bench -p drip --bench retention_cost`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use drip::store::Counted;
use drip::{KeyedBucket, Limit, MonotonicClock, Policy, Rate};

/// Checks per subject per round, over `KEYS` keys.
const CHECKS: u64 = 2_000_000;
const KEYS: u64 = 1_000;
const ROUNDS: usize = 11;

fn bucket(retention: Duration) -> KeyedBucket<u64, MonotonicClock, Counted> {
    // Roomy enough that every check is admitted and the word path serves.
    let policy =
        Policy::police(Limit::new(Rate::per_second(1_000_000_000).unwrap(), 1 << 30).unwrap())
            .with_counter_retention(retention)
            .unwrap();
    KeyedBucket::new(policy, MonotonicClock::new()).with_counters()
}

fn round(b: &KeyedBucket<u64, MonotonicClock, Counted>) -> f64 {
    let start = Instant::now();
    for i in 0..CHECKS {
        black_box(b.check(&(i % KEYS), 1).unwrap());
    }
    start.elapsed().as_nanos() as f64 / CHECKS as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let without = bucket(Duration::ZERO);
    let with = bucket(Duration::from_secs(60));
    round(&without);
    round(&with);
    let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..ROUNDS {
        // Alternate which goes first.
        let (x, y) = if r % 2 == 0 {
            let x = round(&without);
            (x, round(&with))
        } else {
            let y = round(&with);
            (round(&without), y)
        };
        println!("round {r:2}: without {x:6.2} ns/check, with retention {y:6.2} ns/check");
        a.push(x);
        b.push(y);
        ratios.push(y / x);
    }
    println!(
        "median: without {:.2} ns, with {:.2} ns, ratio (with / without) {:.3}",
        median(a),
        median(b),
        median(ratios)
    );
}
