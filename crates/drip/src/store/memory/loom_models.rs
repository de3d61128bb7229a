//! Loom models of the memory store's one lock-free protocol: the
//! compare-and-swap loop that decides a word key (`word.rs`), run on
//! loom's atomics (`sync.rs`) so every interleaving of a few threads is
//! explored, not sampled. Each model fails, every run, when the loop is
//! weakened (its CAS replaced by a load and a store, or its re-read after
//! a lost race skipped).
//!
//! Run: `RUSTFLAGS="--cfg drip_loom" cargo test -p drip --release --lib loom_models`
//! (`.ci/run` does).

use loom::sync::Arc;
use loom::thread;

use super::word::WordTat;
use crate::core::{Decision, Limit, Outcome, Policy, Rate, Request, WordPolicy};

/// A police bucket of `capacity` leaking 1 per second; the clock is frozen
/// (every decision at `now = 0`), so exactly `capacity` units are admitted.
fn word(capacity: u64) -> WordPolicy {
    let limit = Limit::new(Rate::per_second(1).unwrap(), capacity).unwrap();
    WordPolicy::new(&Policy::police(limit)).unwrap()
}

/// `threads` threads each decide `req` once on one key; returns how many
/// were admitted and the key's final `tat`.
fn run(policy: WordPolicy, threads: usize, req: Request) -> (usize, u64) {
    let tat = Arc::new(WordTat::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let tat = tat.clone();
            thread::spawn(move || {
                let d: Decision = tat
                    .decide(&policy, 0, req)
                    .expect("small numbers fit the word");
                d.outcome == Outcome::Allowed
            })
        })
        .collect();
    let admitted = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|&a| a)
        .count();
    (admitted, tat.load())
}

#[test]
fn two_checks_of_a_full_bucket() {
    // Room for one: one check admitted, one limited, whatever the order.
    loom::model(|| {
        let p = word(1);
        let (admitted, tat) = run(p, 2, Request::check(1));
        assert_eq!(admitted, 1);
        assert_eq!(tat, p.full_ticks());
    });
}

#[test]
fn three_checks_admit_exactly_capacity() {
    loom::model(|| {
        let p = word(2);
        let (admitted, tat) = run(p, 3, Request::check(1));
        assert_eq!(admitted, 2);
        assert_eq!(tat, p.full_ticks());
    });
}

#[test]
fn a_reservation_and_a_check() {
    // A reservation that may wait (admitted, queued behind the water) and
    // a check racing it: the `tat` counts both exactly once each when both
    // are admitted, and the check is refused only if it came second.
    loom::model(|| {
        let p = word(1);
        let tat = Arc::new(WordTat::new(0));
        let t2 = tat.clone();
        let reserve = thread::spawn(move || {
            let d: Decision = t2.decide(&p, 0, Request::reserve(1, u64::MAX)).unwrap();
            d.outcome
        });
        let check: Decision = tat.decide(&p, 0, Request::check(1)).unwrap();
        let reserved = reserve.join().unwrap();
        assert_eq!(
            reserved,
            Outcome::Allowed,
            "a reservation always gets a place"
        );
        let units = if check.outcome == Outcome::Allowed {
            2
        } else {
            1
        };
        assert_eq!(tat.load(), units * p.full_ticks());
    });
}
