//! `KeyedBucket`'s own paths: a key whose `tat` outgrows its 64-bit word,
//! counting on and off, and reconfiguration while keys lag behind.

use std::time::Duration;

use drip::core::{self, State};
use drip::{KeyedBucket, Limit, ManualClock, Mode, Policy, Rate, Request};

/// 3 units per 7 ns: ticks are 1/3 ns, so `tat` passes 2^64 ticks once the
/// clock passes 2^64 / 3 ns.
fn fine(mode: Mode) -> Policy {
    let rate = Rate::new(3, Duration::from_nanos(7)).unwrap();
    Policy::new(mode, Limit::new(rate, 5).unwrap())
}

#[test]
fn a_key_outgrowing_its_word_decides_exactly_as_the_core() {
    for mode in [Mode::Police, Mode::Shape] {
        let policy = fine(mode);
        let start = u64::MAX / 3 - 40;
        let clock = ManualClock::new(start);
        let bucket = KeyedBucket::new(policy.clone(), clock.clone());
        let mut state = State::default();
        let mut admitted = 0;
        // Steps of 0..=4 ns across the boundary at 2^64 / 3 ns, with costs
        // 1..=3 and some reservations: every decision and level as the core's.
        for i in 0u64..200 {
            let now = start + i * 2 / 5 + (i % 5);
            clock.set(now);
            let req = match i % 4 {
                3 => Request::reserve(1 + i % 3, 20),
                _ => Request::check(1 + i % 3),
            };
            let got = bucket.decide(&7u64, req).unwrap();
            let want = core::decide(&policy, &mut state, now, req);
            assert_eq!(got, want, "{mode:?} step {i} at {now}");
            admitted += u64::from(got.allowed());
            let status = bucket.status(&7u64);
            assert_eq!(status.level, core::level(&policy, &state, now), "step {i}");
        }
        assert!(state.tat > u128::from(u64::MAX), "the test must cross 2^64");
        assert!(admitted > 20, "{mode:?}: only {admitted} admitted");
    }
}

#[test]
fn counting_is_opt_in_and_decides_the_same() {
    let policy = Policy::police(Limit::new(Rate::per_second(10).unwrap(), 3).unwrap());
    let clock = ManualClock::new(0);
    let counted = KeyedBucket::new(policy.clone(), clock.clone()).with_counters();
    let uncounted = KeyedBucket::new(policy, clock.clone());
    for i in 0..50u64 {
        clock.set(i * 37_000_000);
        let key = i % 2;
        assert_eq!(
            counted.check(&key, 1).unwrap(),
            uncounted.check(&key, 1).unwrap()
        );
    }
    let (c, u) = (counted.status(&0u64), uncounted.status(&0u64));
    assert_eq!(c.level, u.level);
    assert_eq!(c.counters.total(), 25);
    assert!(c.counters.allowed > 0 && c.counters.rejected > 0);
    assert_eq!(u.counters.total(), 0);
}

#[test]
fn keys_behind_many_reconfigurations_catch_up_on_their_next_decision() {
    // Key 1 takes 10 units at 10/s; 200 changes follow while it sits idle,
    // the last to 1/s at t = 100 ms: 9 units of water remain, leaking at 1/s.
    let clock = ManualClock::new(0);
    let ten = Policy::police(Limit::new(Rate::per_second(10).unwrap(), 10).unwrap());
    let bucket = KeyedBucket::new(ten.clone(), clock.clone()).with_counters();
    assert!(bucket.check(&1u64, 10).unwrap().allowed());
    for _ in 0..199 {
        bucket.reconfigure(ten.clone(), false);
    }
    clock.set(100_000_000);
    let one = Policy::police(Limit::new(Rate::per_second(1).unwrap(), 10).unwrap());
    bucket.reconfigure(one.clone(), false);
    let status = bucket.status(&1u64);
    assert_eq!((status.level.queue_size, status.level.remaining), (9, 1));
    assert_eq!(status.policy, one);
    assert!(bucket.check(&1u64, 1).unwrap().allowed());
    let d = bucket.check(&1u64, 1).unwrap();
    assert_eq!((d.allowed(), d.retry_after), (false, 1_000_000_000));
    assert_eq!(bucket.status(&1u64).counters.total(), 3);
    // A reset forgets every key at once, counters too.
    bucket.reconfigure(one, true);
    assert!(bucket.is_empty());
    assert_eq!(bucket.status(&1u64).counters.total(), 0);
}

#[test]
fn idle_inline_keys_behind_hundreds_of_changes_carry_over_exactly() {
    // Uncounted keys of a policy without windows are inline words that name
    // their epoch by a 7-bit tag: 300 changes reuse every tag twice over
    // while key 1 sits idle and key 2 keeps deciding. Both must end as the
    // core's state carried change by change.
    let clock = ManualClock::new(1_000);
    let rate = |i: u64| Rate::per_second(5 + i % 7).unwrap();
    let policy = |i: u64| Policy::police(Limit::new(rate(i), 10).unwrap());
    let bucket = KeyedBucket::new(policy(0), clock.clone());
    let (mut idle, mut busy) = (State::default(), State::default());
    let mut now = 1_000;
    let p0 = policy(0);
    assert_eq!(
        bucket.check(&1u64, 9).unwrap(),
        core::decide(&p0, &mut idle, now, Request::check(9))
    );
    let mut current = p0;
    for i in 1..=300u64 {
        now += 1_000_000 + i;
        clock.set(now);
        let next = policy(i);
        bucket.reconfigure(next.clone(), false);
        core::carry_over(&current, &next, &mut idle, now);
        core::carry_over(&current, &next, &mut busy, now);
        current = next;
        if i % 3 == 0 {
            let got = bucket.check(&2u64, 1 + i % 4).unwrap();
            let want = core::decide(&current, &mut busy, now, Request::check(1 + i % 4));
            assert_eq!(got, want, "key 2 at change {i}");
        }
    }
    for (key, state) in [(1u64, &mut idle), (2u64, &mut busy)] {
        let level = bucket.status(&key).level;
        assert_eq!(level, core::level(&current, state, now), "key {key}");
        let got = bucket.check(&key, 2).unwrap();
        assert_eq!(got, core::decide(&current, state, now, Request::check(2)));
    }
}
