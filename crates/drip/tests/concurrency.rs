//! Exactness under contention, and FIFO release of waiters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use drip::store::Counting;
use drip::{
    KeyedBucket, Limit, Limiter, ManualClock, MemoryStore, Policy, Rate, TokioClock, Window,
};

fn hammer<N: Counting>(bucket: Arc<KeyedBucket<String, ManualClock, N>>) -> u64 {
    let admitted = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (bucket, admitted) = (bucket.clone(), admitted.clone());
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    if bucket.check("one-key", 1).unwrap().allowed() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    admitted.load(Ordering::Relaxed)
}

/// 8 threads × 10,000 calls on one key, clock frozen: exactly `capacity`
/// admitted, on the lock-free path (no windows).
#[test]
fn frozen_clock_admits_exactly_capacity_lock_free() {
    let policy = Policy::police(Limit::new(Rate::per_second(10).unwrap(), 1234).unwrap());
    let bucket = Arc::new(KeyedBucket::new(policy, ManualClock::new(5)).with_counters());
    assert_eq!(hammer(bucket.clone()), 1234);
    let s = bucket.status("one-key");
    assert_eq!(
        (s.counters.allowed, s.counters.rejected),
        (1234, 80_000 - 1234)
    );
}

/// The same on the locked path (a policy with a window), where the window
/// is the tighter limit.
#[test]
fn frozen_clock_admits_exactly_the_window_limit() {
    let policy = Policy::shape(Limit::new(Rate::per_second(10).unwrap(), 5000).unwrap())
        .with_window(Window::new(777, Duration::from_secs(3600)).unwrap())
        .unwrap();
    let bucket = Arc::new(KeyedBucket::new(policy, ManualClock::new(5)).with_counters());
    assert_eq!(hammer(bucket), 777);
}

/// N concurrent waiters are released in the order they asked, one every
/// emission interval.
#[tokio::test(start_paused = true)]
async fn acquire_releases_waiters_fifo_at_the_rate() {
    let start = tokio::time::Instant::now();
    let limiter = Limiter::new(MemoryStore::with_clock(TokioClock::new()));
    let policy = Policy::police(Limit::new(Rate::per_second(10).unwrap(), 1).unwrap());
    limiter.configure("fifo", policy).await.unwrap();
    let mut waiters = Vec::new();
    for i in 0..20u64 {
        let l = limiter.clone();
        waiters.push(tokio::spawn(async move {
            let d = l.acquire("fifo", "k", 1, None).await.unwrap();
            assert!(d.allowed());
            (i, start.elapsed())
        }));
        // Let the waiter take its place before the next one asks.
        tokio::task::yield_now().await;
    }
    let mut released = Vec::new();
    for w in waiters {
        released.push(w.await.unwrap());
    }
    released.sort_by_key(|r| r.1);
    for (pos, (i, at)) in released.iter().enumerate() {
        assert_eq!(*i, pos as u64, "released out of order: {released:?}");
        assert_eq!(*at, Duration::from_millis(100 * pos as u64), "waiter {i}");
    }
}

/// The same with real threads and real time on the blocking API: 4 threads
/// share 20/s with no burst; 12 acquisitions take at least 11 intervals.
#[test]
fn blocking_acquire_from_threads_keeps_the_rate() {
    let limiter = Arc::new(drip::blocking::Limiter::memory().unwrap());
    let policy = Policy::police(Limit::new(Rate::per_second(20).unwrap(), 1).unwrap());
    limiter.configure("t", policy).unwrap();
    let start = std::time::Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let l = limiter.clone();
            std::thread::spawn(move || {
                (0..3).all(|_| l.acquire("t", "k", 1, None).unwrap().allowed())
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap());
    }
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(550), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

/// Reconfigurations while 8 threads hammer one key: the water carries over
/// exactly (frozen clock, whole units), including between the atomic-word
/// and the locked kinds of key, so exactly the capacity is admitted; and a
/// reconfiguration is never starved by the load. Counted keys hold their
/// counters inline, uncounted ones only the word; both carried over (and by the passes
/// every 64 changes, which run while the load goes on).
#[test]
fn reconfiguring_under_load_keeps_exactness() {
    reconfiguring_under_load(true, |b| b.with_counters());
    reconfiguring_under_load(false, |b| b);
}

fn reconfiguring_under_load<N: Counting>(
    counted: bool,
    make: fn(KeyedBucket<String, ManualClock>) -> KeyedBucket<String, ManualClock, N>,
) {
    let limit = |per_second| Limit::new(Rate::per_second(per_second).unwrap(), 3000).unwrap();
    let plain = move |per_second| Policy::police(limit(per_second));
    let windowed = move |per_second| {
        Policy::police(limit(per_second))
            .with_window(Window::new(1_000_000, Duration::from_secs(60)).unwrap())
            .unwrap()
    };
    let bucket = KeyedBucket::new(plain(10), ManualClock::new(5));
    let bucket = Arc::new(make(bucket));
    let changes = Arc::new(AtomicU64::new(0));
    let changer = {
        let (bucket, changes) = (bucket.clone(), changes.clone());
        std::thread::spawn(move || {
            for n in 0..400u64 {
                let p = match n % 4 {
                    0 => windowed(7),
                    1 => plain(3),
                    2 => windowed(10),
                    _ => plain(10),
                };
                bucket.reconfigure(p, false);
                changes.fetch_add(1, Ordering::Relaxed);
                std::thread::yield_now();
            }
        })
    };
    // Keep deciding until every reconfiguration has happened among the calls.
    let admitted = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (bucket, admitted, changes) = (bucket.clone(), admitted.clone(), changes.clone());
            std::thread::spawn(move || {
                let mut calls = 0;
                while calls < 10_000 || changes.load(Ordering::Relaxed) < 400 {
                    if bucket.check("one-key", 1).unwrap().allowed() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    calls += 1;
                }
            })
        })
        .collect();
    changer.join().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(admitted.load(Ordering::Relaxed), 3000, "counted: {counted}");
    if counted {
        assert_eq!(bucket.status("one-key").counters.allowed, 3000);
    }
}

/// Four threads meet 3000 new keys at once, in different orders, while a
/// fifth sweeps without pause: the map grows under concurrent reads and
/// writes of the same shards, each key is inserted once, and none holding
/// water is swept, so on a frozen clock every key admits exactly its
/// capacity (and a sweep at the end, the clock moved on, forgets them all).
#[test]
fn new_keys_from_many_threads_during_sweeps_are_each_admitted_exactly() {
    const KEYS: u64 = 3000;
    const CAPACITY: u64 = 3;
    let policy = Policy::police(Limit::new(Rate::per_second(1).unwrap(), CAPACITY).unwrap());
    let clock = ManualClock::new(5);
    let bucket = Arc::new(KeyedBucket::<u64, _>::with_max_keys(
        policy,
        clock.clone(),
        KEYS as usize,
    ));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeper = {
        let (bucket, done) = (bucket.clone(), done.clone());
        std::thread::spawn(move || {
            let mut swept = 0;
            while !done.load(Ordering::Relaxed) {
                swept += bucket.sweep();
            }
            swept
        })
    };
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let bucket = bucket.clone();
            std::thread::spawn(move || {
                let mut admitted = vec![0u64; KEYS as usize];
                for round in 0..2 * CAPACITY {
                    for i in 0..KEYS {
                        // Each thread its own order: a stride prime to KEYS.
                        let stride = [7, 11, 13, 17][t as usize];
                        let key = (i * stride + round) % KEYS;
                        if bucket.check(&key, 1).unwrap().allowed() {
                            admitted[key as usize] += 1;
                        }
                    }
                }
                admitted
            })
        })
        .collect();
    let mut admitted = vec![0u64; KEYS as usize];
    for t in threads {
        for (all, n) in admitted.iter_mut().zip(t.join().unwrap()) {
            *all += n;
        }
    }
    done.store(true, Ordering::Relaxed);
    assert_eq!(sweeper.join().unwrap(), 0, "no key with water is idle");
    assert!(admitted.iter().all(|&n| n == CAPACITY), "{admitted:?}");
    assert_eq!(bucket.len(), KEYS as usize);
    clock.advance(Duration::from_secs(CAPACITY));
    assert_eq!(bucket.sweep(), KEYS as usize);
    assert!(bucket.is_empty());
    // The key budget came back whole: KEYS new keys fit again.
    for key in 0..KEYS {
        assert!(bucket.check(&(key + KEYS), 1).unwrap().allowed());
    }
}

/// Joint decisions under contention (`Limiter::decide_all` on the memory
/// store): 4 threads, clock frozen, each mixing joint decisions on two
/// buckets (parts in both orders) with single decisions on each. Every
/// admission is counted by who made it; at the end each bucket must hold
/// exactly what was admitted on it, its capacity: a joint decision that
/// consumed from one bucket and was refused by the other, or a lost update
/// between a joint and a single decision, breaks the sums. Parts in both
/// orders would deadlock if shards were locked in part order: a watchdog
/// fails the test then.
#[test]
fn joint_decisions_across_two_buckets_are_atomic_and_exact() {
    use drip::{JointPart, Request};
    let clock = ManualClock::new(5);
    let limiter = Limiter::new(MemoryStore::with_clock(clock));
    let a = Policy::police(Limit::new(Rate::per_second(1).unwrap(), 500).unwrap());
    let b = Policy::police(Limit::new(Rate::per_second(1).unwrap(), 5000).unwrap())
        .with_window(Window::new(300, Duration::from_secs(3600)).unwrap())
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        limiter.configure("a", a).await.unwrap();
        limiter.configure("b", b).await.unwrap();
    });
    // [joint, a alone, b alone] admissions.
    let counts = Arc::new([const { AtomicU64::new(0) }; 3]);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for t in 0..4u64 {
        let (limiter, counts, done) = (limiter.clone(), counts.clone(), done_tx.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let part = |bucket| JointPart::new(bucket, "k", Request::check(1));
            let (ab, ba) = ([part("a"), part("b")], [part("b"), part("a")]);
            rt.block_on(async {
                for i in 0..6000u64 {
                    let (which, ok) = match (i + t) % 3 {
                        0 => {
                            let parts = if (i / 3 + t) % 2 == 0 { &ab } else { &ba };
                            let d = limiter.decide_all(parts).await.unwrap();
                            assert_eq!(d.admitted, d.decisions.iter().all(|d| d.allowed()));
                            (0, d.admitted)
                        }
                        1 => (1, limiter.check("a", "k", 1).await.unwrap().allowed()),
                        _ => (2, limiter.check("b", "k", 1).await.unwrap().allowed()),
                    };
                    if ok {
                        counts[which].fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            done.send(()).unwrap();
        });
    }
    for _ in 0..4 {
        done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a thread is stuck: joint decisions deadlocked");
    }
    let [joint, a_alone, b_alone] = [0, 1, 2].map(|i| counts[i].load(Ordering::Relaxed));
    assert!(joint > 0, "no joint decision was admitted");
    assert_eq!(
        joint + a_alone,
        500,
        "bucket a: joint {joint} + alone {a_alone}"
    );
    assert_eq!(
        joint + b_alone,
        300,
        "bucket b: joint {joint} + alone {b_alone}"
    );
    rt.block_on(async {
        let sa = limiter.status("a", "k").await.unwrap();
        let sb = limiter.status("b", "k").await.unwrap();
        assert_eq!((sa.counters.allowed, sa.level.remaining), (500, 0));
        assert_eq!((sb.counters.allowed, sb.level.remaining), (300, 0));
    });
}
