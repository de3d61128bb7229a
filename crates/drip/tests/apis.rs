//! The blocking API, throttles, key expiry and the key cap.

use std::time::Duration;

use drip::{
    Error, Limit, Limiter, ManualClock, MemoryStore, Mode, Outcome, Policy, Rate, TokioClock,
    Window, blocking,
};

fn policy(mode: Mode, per_second: u64, capacity: u64) -> Policy {
    Policy::new(
        mode,
        Limit::new(Rate::per_second(per_second).unwrap(), capacity).unwrap(),
    )
}

#[test]
fn blocking_limiter_needs_no_runtime() {
    let store = MemoryStore::with_clock(ManualClock::new(0));
    let limiter = blocking::Limiter::new(store).unwrap();
    limiter.configure("b", policy(Mode::Police, 1, 2)).unwrap();
    assert!(limiter.check("b", "k", 1).unwrap().allowed());
    assert!(limiter.check("b", "k", 1).unwrap().allowed());
    let d = limiter.check("b", "k", 1).unwrap();
    assert_eq!(
        (d.outcome, d.retry_after),
        (Outcome::Limited, 1_000_000_000)
    );
    assert_eq!(limiter.status("b", "k").unwrap().counters.total(), 3);
    assert_eq!(limiter.list().unwrap().len(), 1);
    assert_eq!(limiter.policy("b").unwrap().unwrap().limit().capacity(), 2);
    // A throttle that cannot get a turn within its timeout says so.
    let r = limiter.throttle("b", "k", 1, Some(Duration::from_millis(10)), || 42);
    assert!(
        matches!(r, Err(Error::Limited { retry_after }) if retry_after == Duration::from_millis(990))
    );
    assert!(matches!(
        limiter.throttle("b", "k", 5, None, || 42),
        Err(Error::Exceeds { cost: 5 })
    ));
    assert!(limiter.delete("b").unwrap());
    assert!(matches!(
        limiter.check("b", "k", 1),
        Err(Error::UnknownBucket(_))
    ));
}

#[test]
fn blocking_acquire_and_throttle_wait_in_real_time() {
    let limiter = blocking::Limiter::memory().unwrap();
    limiter.configure("b", policy(Mode::Shape, 20, 10)).unwrap();
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    for i in 0..5 {
        out.push(limiter.throttle("b", "k", 1, None, || i).unwrap());
    }
    // Five turns at 20/s: the fifth goes 200 ms after the first.
    assert_eq!(out, [0, 1, 2, 3, 4]);
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(195), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[tokio::test]
async fn blocking_calls_inside_a_runtime_are_refused_not_deadlocked() {
    let limiter = tokio::task::spawn_blocking(|| blocking::Limiter::memory().unwrap())
        .await
        .unwrap();
    assert!(matches!(
        limiter.configure("b", policy(Mode::Police, 1, 1)),
        Err(Error::BlockingInAsync)
    ));
    tokio::task::spawn_blocking(move || drop(limiter))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn throttle_guard_call_and_wrap_each_wait_their_turn() {
    let limiter = Limiter::new(MemoryStore::with_clock(TokioClock::new()));
    limiter
        .configure("t", policy(Mode::Police, 10, 1))
        .await
        .unwrap();
    let throttle = limiter.throttle("t", "k");
    let start = tokio::time::Instant::now();
    // Guard form.
    let turn = throttle.enter().await.unwrap();
    assert_eq!(turn.decision.wait, 0);
    // Call form.
    assert_eq!(throttle.call(|| async { 7 }).await.unwrap(), 7);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    // Wrapped function.
    let double = throttle.clone().wrap(|x: u32| async move { x * 2 });
    assert_eq!(double.call(21).await.unwrap(), 42);
    assert_eq!(double.call(1).await.unwrap(), 2);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    // With a timeout shorter than the next turn: an error, and nothing used.
    let impatient = throttle.clone().with_timeout(Duration::from_millis(50));
    assert!(matches!(
        impatient.enter().await,
        Err(Error::Limited { .. })
    ));
    let heavy = throttle.with_cost(2);
    assert!(matches!(
        heavy.enter().await,
        Err(Error::Exceeds { cost: 2 })
    ));
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}

#[tokio::test]
async fn idle_keys_expire_and_hold_nothing_after_a_sweep() {
    let clock = ManualClock::new(0);
    let store = MemoryStore::with_clock(clock.clone());
    let limiter = Limiter::new(store);
    let windowed = policy(Mode::Police, 10, 10)
        .with_window(Window::new(100, Duration::from_secs(60)).unwrap())
        .unwrap();
    limiter
        .configure("plain", policy(Mode::Police, 10, 10))
        .await
        .unwrap();
    limiter.configure("windowed", windowed).await.unwrap();
    for i in 0..100 {
        limiter.check("plain", &format!("k{i}"), 5).await.unwrap();
        limiter
            .check("windowed", &format!("k{i}"), 5)
            .await
            .unwrap();
    }
    assert_eq!(limiter.store().keys_held(), 200);
    // Nothing is idle yet.
    assert_eq!(limiter.store().sweep(), 0);
    // After 0.5 s the plain buckets are empty; the windows still remember.
    clock.advance_ms(500);
    assert_eq!(limiter.store().sweep(), 100);
    assert_eq!(limiter.store().keys_held(), 100);
    clock.advance_ms(60_000);
    assert_eq!(limiter.store().sweep(), 100);
    assert_eq!(limiter.store().keys_held(), 0);
}

#[tokio::test]
async fn the_key_cap_refuses_new_keys_and_keeps_old_ones() {
    let clock = ManualClock::new(0);
    let store = MemoryStore::with_clock_and_max_keys(clock.clone(), 3);
    let limiter = Limiter::new(store);
    limiter
        .configure("b", policy(Mode::Police, 1, 2))
        .await
        .unwrap();
    for k in ["a", "b", "c"] {
        assert!(limiter.check("b", k, 2).await.unwrap().allowed());
    }
    let e = limiter.check("b", "d", 1).await.unwrap_err();
    assert!(matches!(e, Error::KeyLimit { limit: 3 }), "{e}");
    assert!(e.to_string().contains("3 keys"), "{e}");
    // Old keys are not reset to make room: "a" is still full.
    assert_eq!(
        limiter.check("b", "a", 1).await.unwrap().outcome,
        Outcome::Limited
    );
    // Once keys are idle and swept, new keys are welcome again.
    clock.advance_ms(2000);
    assert_eq!(limiter.store().sweep(), 3);
    assert!(limiter.check("b", "d", 1).await.unwrap().allowed());
    // Deleting a bucket gives its keys back.
    assert!(limiter.delete("b").await.unwrap());
    limiter
        .configure("b", policy(Mode::Police, 1, 2))
        .await
        .unwrap();
    for k in ["x", "y", "z"] {
        assert!(limiter.check("b", k, 1).await.unwrap().allowed());
    }
}
