//! The conformance suite: the same cases, with the same expectations, for
//! every store. A store's test file builds a [`Harness`] and instantiates the
//! suite with `conformance_suite!`; each case gets a fresh harness.
//!
//! Tables follow redis-cell's shape: one row per step with an explicit
//! advance of the clock and the expected answer.

#![allow(dead_code)]

use std::time::Duration;

use drip::{Limit, Limiter, Mode, Outcome, Policy, Rate, Request, Store, Window};

/// A limiter plus a way to move its store's clock.
pub struct Harness<S: Store> {
    pub limiter: Limiter<S>,
    pub advance: Box<dyn Fn(Duration) + Send + Sync>,
}

impl<S: Store> Harness<S> {
    pub fn advance_ms(&self, ms: u64) {
        (self.advance)(Duration::from_millis(ms));
    }
}

pub fn policy(mode: Mode, per_second: u64, capacity: u64) -> Policy {
    Policy::new(
        mode,
        Limit::new(Rate::per_second(per_second).unwrap(), capacity).unwrap(),
    )
}

const MS: u64 = 1_000_000;

/// One step of a table: advance the clock, then ask for `cost`.
pub struct Row {
    pub advance_ms: u64,
    pub cost: u64,
    pub outcome: Outcome,
    pub remaining: u64,
    pub retry_after_ms: u64,
    pub wait_ms: u64,
    pub queue_position: u64,
    pub reset_after_ms: u64,
}

#[allow(clippy::too_many_arguments)]
pub const fn row(
    advance_ms: u64,
    cost: u64,
    outcome: Outcome,
    remaining: u64,
    retry_after_ms: u64,
    wait_ms: u64,
    queue_position: u64,
    reset_after_ms: u64,
) -> Row {
    Row {
        advance_ms,
        cost,
        outcome,
        remaining,
        retry_after_ms,
        wait_ms,
        queue_position,
        reset_after_ms,
    }
}

pub async fn run_table<S: Store>(h: &Harness<S>, policy: Policy, rows: &[Row]) {
    h.limiter.configure("t", policy).await.unwrap();
    for (i, r) in rows.iter().enumerate() {
        h.advance_ms(r.advance_ms);
        let d = h.limiter.check("t", "k", r.cost).await.unwrap();
        let got = (
            d.outcome,
            d.remaining,
            d.retry_after,
            d.wait,
            d.queue_position,
            d.reset_after,
        );
        let want = (
            r.outcome,
            r.remaining,
            r.retry_after_ms * MS,
            r.wait_ms * MS,
            r.queue_position,
            r.reset_after_ms * MS,
        );
        assert_eq!(got, want, "row {i}");
    }
}

use Outcome::{Allowed as A, Exceeds as X, Limited as L};

/// Police, capacity 5 at 1/s.
pub async fn police_table<S: Store>(h: Harness<S>) {
    #[rustfmt::skip]
    let rows = [
        //  +ms  cost  outcome rem retry wait qpos reset
        row(0,    1,   A,      4,  0,    0,   0,   1000),
        row(0,    4,   A,      0,  0,    0,   0,   5000),
        row(0,    1,   L,      0,  1000, 0,   0,   5000),
        row(500,  1,   L,      0,  500,  0,   0,   4500),
        row(500,  1,   A,      0,  0,    0,   0,   5000),
        row(3000, 3,   A,      0,  0,    0,   0,   5000),
        row(0,    6,   X,      0,  0,    0,   0,   5000),
        row(10000,5,   A,      0,  0,    0,   0,   5000),
        row(5000, 0,   A,      5,  0,    0,   0,   0),
    ];
    run_table(&h, policy(Mode::Police, 1, 5), &rows).await;
}

/// Shape, capacity 10 at 10/s, a burst of 11 (DESIGN.md §1's check).
pub async fn shape_table<S: Store>(h: Harness<S>) {
    let mut rows: Vec<Row> = (0..10)
        .map(|i| row(0, 1, A, 9 - i, 0, 100 * i, i + 1, 100 * (i + 1)))
        .collect();
    rows.push(row(0, 1, L, 0, 100, 0, 11, 1000));
    rows.push(row(1000, 1, A, 9, 0, 0, 1, 100));
    run_table(&h, policy(Mode::Shape, 10, 10), &rows).await;
    let s = h.limiter.status("t", "k").await.unwrap();
    assert_eq!((s.counters.allowed, s.counters.rejected), (11, 1));
    assert_eq!((s.level.queue_size, s.processed()), (1, 10));
}

async fn burst<S: Store>(h: &Harness<S>, n: u64) -> Vec<drip::Decision> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(h.limiter.check("b", "k", 1).await.unwrap());
    }
    out
}

async fn queue_and_processed<S: Store>(h: &Harness<S>) -> (u64, u64) {
    let s = h.limiter.status("b", "k").await.unwrap();
    (s.level.queue_size, s.processed())
}

/// (a) capacity 100 at 10/s, 50 queued: over the next 2 s exactly 20 processed.
pub async fn scenario_a<S: Store>(h: Harness<S>) {
    h.limiter
        .configure("b", policy(Mode::Shape, 10, 100))
        .await
        .unwrap();
    assert!(burst(&h, 50).await.iter().all(|d| d.allowed()));
    let (_, before) = queue_and_processed(&h).await;
    h.advance_ms(2000);
    let (queue, after) = queue_and_processed(&h).await;
    assert_eq!((before, after, queue), (0, 20, 30));
}

/// (b) capacity 10 at 1/s: ten admitted, the 11th rejected (both modes).
pub async fn scenario_b<S: Store>(h: Harness<S>) {
    for mode in [Mode::Police, Mode::Shape] {
        h.limiter
            .configure_reset("b", policy(mode, 1, 10))
            .await
            .unwrap();
        let ds = burst(&h, 11).await;
        assert!(ds[..10].iter().all(|d| d.allowed()), "{mode:?}");
        assert_eq!(ds[10].outcome, Outcome::Limited, "{mode:?}");
        assert_eq!(ds[10].retry_after, 1000 * MS, "{mode:?}");
    }
}

/// (c) capacity 100 at 10/s: the first waits 0 ms, the 11th 1000 ms.
pub async fn scenario_c<S: Store>(h: Harness<S>) {
    h.limiter
        .configure("b", policy(Mode::Shape, 10, 100))
        .await
        .unwrap();
    let ds = burst(&h, 11).await;
    assert_eq!(ds[0].wait, 0);
    assert_eq!(ds[10].wait, 1000 * MS);
    assert_eq!(ds[10].queue_position, 11);
}

/// (d) a burst of 50 at 10/s: every 500 ms exactly 5 processed, for 2.5 s.
pub async fn scenario_d<S: Store>(h: Harness<S>) {
    h.limiter
        .configure("b", policy(Mode::Shape, 10, 50))
        .await
        .unwrap();
    assert!(burst(&h, 50).await.iter().all(|d| d.allowed()));
    let mut last = queue_and_processed(&h).await.1;
    for _ in 0..5 {
        h.advance_ms(500);
        let now = queue_and_processed(&h).await.1;
        assert_eq!(now - last, 5);
        last = now;
    }
    assert_eq!(queue_and_processed(&h).await, (25, 25));
}

/// (e) capacity 20 at 100/s: 20 queued; after 0.5 s none queued, 20 processed.
pub async fn scenario_e<S: Store>(h: Harness<S>) {
    h.limiter
        .configure("b", policy(Mode::Shape, 100, 20))
        .await
        .unwrap();
    assert!(burst(&h, 20).await.iter().all(|d| d.allowed()));
    assert_eq!(queue_and_processed(&h).await, (20, 0));
    h.advance_ms(500);
    assert_eq!(queue_and_processed(&h).await, (0, 20));
}

/// (f) a burst of 50: queue 50 and processed 0 at once, 10 processed after 1 s.
pub async fn scenario_f<S: Store>(h: Harness<S>) {
    h.limiter
        .configure("b", policy(Mode::Shape, 10, 100))
        .await
        .unwrap();
    assert!(burst(&h, 50).await.iter().all(|d| d.allowed()));
    assert_eq!(queue_and_processed(&h).await, (50, 0));
    h.advance_ms(1000);
    assert_eq!(queue_and_processed(&h).await, (40, 10));
}

/// 5/s capacity 10 AND at most 12 per rolling minute: all or nothing.
pub async fn windows_and_atomicity<S: Store>(h: Harness<S>) {
    let p = policy(Mode::Police, 5, 10)
        .with_window(Window::new(12, Duration::from_secs(60)).unwrap())
        .unwrap();
    h.limiter.configure("w", p).await.unwrap();
    let mut admitted = 0;
    for _ in 0..40 {
        if h.limiter.check("w", "k", 1).await.unwrap().allowed() {
            admitted += 1;
        }
        h.advance_ms(200);
    }
    // 40 requests over 8 s: the bucket would take all, the window allows 12.
    assert_eq!(admitted, 12);
    let s = h.limiter.status("w", "k").await.unwrap();
    assert_eq!(s.level.remaining, 0);
    assert_eq!((s.counters.allowed, s.counters.rejected), (12, 28));
    // A request the bucket rejects consumes nothing from the window either.
    h.advance_ms(60_000);
    assert!(h.limiter.check("w", "k", 10).await.unwrap().allowed());
    let d = h.limiter.check("w", "k", 2).await.unwrap();
    assert_eq!(d.outcome, Outcome::Limited);
    assert_eq!(d.remaining, 0);
    h.advance_ms(400);
    let d = h.limiter.check("w", "k", 2).await.unwrap();
    assert!(d.allowed(), "{d:?}");
    assert_eq!(d.remaining, 0); // window: 12 of 12 used
    // The window's retry is when the oldest admissions leave it.
    h.advance_ms(10_000);
    let d = h.limiter.check("w", "k", 1).await.unwrap();
    assert_eq!(d.outcome, Outcome::Limited);
    assert_eq!(d.retry_after, 49_600 * MS);
}

/// Costs: bytes against a byte-rate bucket; a cost over capacity is never.
pub async fn costs<S: Store>(h: Harness<S>) {
    let p = Policy::police(Limit::new(Rate::per_second(1 << 30).unwrap(), 1 << 20).unwrap());
    h.limiter.configure("bytes", p).await.unwrap();
    assert!(
        h.limiter
            .check("bytes", "c", 1 << 20)
            .await
            .unwrap()
            .allowed()
    );
    let d = h.limiter.check("bytes", "c", 1).await.unwrap();
    assert_eq!(d.outcome, Outcome::Limited);
    // One byte at 1 GiB/s leaks in 0.93 ns: ceil = 1 ns.
    assert_eq!(d.retry_after, 1);
    let d = h.limiter.check("bytes", "c", (1 << 20) + 1).await.unwrap();
    assert_eq!(d.outcome, Outcome::Exceeds);
    // 1 MiB fits again after exactly 2^20 / 2^30 s = 976562.5 ns. (Steps are
    // whole microseconds: the Redis store reads time to the microsecond.)
    (h.advance)(Duration::from_micros(976));
    let d = h.limiter.check("bytes", "c", 1 << 20).await.unwrap();
    assert_eq!((d.outcome, d.retry_after), (Outcome::Limited, 563));
    (h.advance)(Duration::from_micros(1));
    let d = h.limiter.check("bytes", "c", 1 << 20).await.unwrap();
    assert!(d.allowed());
}

/// Reconfiguration keeps the water unless asked to reset.
pub async fn reconfigure<S: Store>(h: Harness<S>) {
    h.limiter
        .configure("r", policy(Mode::Police, 10, 10))
        .await
        .unwrap();
    for _ in 0..8 {
        assert!(h.limiter.check("r", "k", 1).await.unwrap().allowed());
    }
    // Same water (8 units), slower leak, larger bucket.
    h.limiter
        .configure("r", policy(Mode::Police, 1, 20))
        .await
        .unwrap();
    let s = h.limiter.status("r", "k").await.unwrap();
    assert_eq!((s.level.queue_size, s.level.remaining), (8, 12));
    h.advance_ms(1000);
    assert_eq!(
        h.limiter.status("r", "k").await.unwrap().level.queue_size,
        7
    );
    // Switch to shape: the next request queues behind the 7 units.
    h.limiter
        .configure("r", policy(Mode::Shape, 1, 20))
        .await
        .unwrap();
    let d = h.limiter.check("r", "k", 1).await.unwrap();
    assert_eq!((d.wait, d.queue_position), (7000 * MS, 8));
    // Reset: empty.
    h.limiter
        .configure_reset("r", policy(Mode::Shape, 1, 20))
        .await
        .unwrap();
    let s = h.limiter.status("r", "k").await.unwrap();
    assert_eq!((s.level.queue_size, s.counters.total()), (0, 0));
    let d = h.limiter.check("r", "k", 1).await.unwrap();
    assert_eq!((d.wait, d.queue_position), (0, 1));
    assert_eq!(
        h.limiter.policy("r").await.unwrap().unwrap().mode(),
        Mode::Shape
    );
}

/// Delete, list, unknown buckets.
pub async fn delete_and_list<S: Store>(h: Harness<S>) {
    h.limiter
        .configure("b2", policy(Mode::Police, 1, 1))
        .await
        .unwrap();
    h.limiter
        .configure("a1", policy(Mode::Shape, 2, 3))
        .await
        .unwrap();
    let names: Vec<_> = h
        .limiter
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.0)
        .collect();
    assert_eq!(names, ["a1", "b2"]);
    assert!(h.limiter.delete("a1").await.unwrap());
    assert!(!h.limiter.delete("a1").await.unwrap());
    assert!(matches!(
        h.limiter.check("a1", "k", 1).await,
        Err(drip::Error::UnknownBucket(b)) if b == "a1"
    ));
    assert!(h.limiter.status("a1", "k").await.is_err());
    assert_eq!(h.limiter.list().await.unwrap().len(), 1);
}

/// Status counters: total = allowed + rejected, processed = allowed - queue.
pub async fn status_counters<S: Store>(h: Harness<S>) {
    h.limiter
        .configure("s", policy(Mode::Shape, 2, 4))
        .await
        .unwrap();
    for _ in 0..6 {
        h.limiter.check("s", "k", 1).await.unwrap();
    }
    let s = h.limiter.status("s", "k").await.unwrap();
    assert_eq!(
        (s.counters.total(), s.counters.allowed, s.counters.rejected),
        (6, 4, 2)
    );
    assert_eq!((s.level.queue_size, s.processed()), (4, 0));
    h.advance_ms(1250);
    let s = h.limiter.status("s", "k").await.unwrap();
    assert_eq!((s.level.queue_size, s.processed()), (2, 2));
    assert!((s.level.level - 1.5).abs() < 1e-9);
    // Another key is untouched.
    let s = h.limiter.status("s", "other").await.unwrap();
    assert_eq!((s.counters.total(), s.level.queue_size), (0, 0));
}

/// Counters outlive the water: 20 requests into a shape bucket of 20 at
/// 100/s; after 0.5 s the queue is empty and 20 were processed, and that
/// still holds once the state has expired (a sweep on the stores that sweep;
/// Redis on real time is `redis_store.rs`). Without a retention the key goes
/// at the sweep, as before; with one, once the retention has passed.
pub async fn counters_outlive_the_water<S: Store>(h: Harness<S>) {
    let kept = policy(Mode::Shape, 100, 20)
        .with_counter_retention(Duration::from_secs(60))
        .unwrap();
    h.limiter.configure("d", kept).await.unwrap();
    h.limiter
        .configure("z", policy(Mode::Shape, 100, 20))
        .await
        .unwrap();
    for _ in 0..20 {
        assert!(h.limiter.check("d", "k", 1).await.unwrap().allowed());
        assert!(h.limiter.check("z", "k", 1).await.unwrap().allowed());
    }
    let seen = |s: drip::KeyStatus| (s.level.queue_size, s.processed(), s.counters.total());
    h.advance_ms(500);
    assert_eq!(seen(h.limiter.status("d", "k").await.unwrap()), (0, 20, 20));
    // The water is gone: a sweep forgets the key without a retention only.
    let swept = h.limiter.sweep_idle().await.unwrap();
    assert!(swept <= 1, "swept {swept}: the retained key went too");
    assert_eq!(seen(h.limiter.status("d", "k").await.unwrap()), (0, 20, 20));
    if swept == 1 {
        assert_eq!(seen(h.limiter.status("z", "k").await.unwrap()), (0, 0, 0));
    }
    // Still there just before the retention ends, gone after it.
    h.advance_ms(59_000);
    assert_eq!(h.limiter.sweep_idle().await.unwrap(), 0);
    assert_eq!(seen(h.limiter.status("d", "k").await.unwrap()), (0, 20, 20));
    h.advance_ms(1_000);
    if h.limiter.sweep_idle().await.unwrap() == 1 {
        assert_eq!(seen(h.limiter.status("d", "k").await.unwrap()), (0, 0, 0));
    }
}

/// The busiest keys: the fullest first, drained keys left out, at most
/// `n`, with each key's level and counters; another bucket's keys never
/// show; an unknown bucket is an error. Police 1/s, capacity 10: a, b, c,
/// e take 5, 2, 8, 1; 1.5 s later they hold 3.5, 0.5, 6.5 and nothing.
pub async fn busiest_keys<S: Store>(h: Harness<S>) {
    h.limiter
        .configure("t", policy(Mode::Police, 1, 10))
        .await
        .unwrap();
    h.limiter
        .configure("other", policy(Mode::Police, 1, 10))
        .await
        .unwrap();
    for (key, cost) in [("a", 5), ("b", 2), ("c", 8), ("e", 1)] {
        assert!(h.limiter.check("t", key, cost).await.unwrap().allowed());
    }
    assert!(!h.limiter.check("t", "c", 9).await.unwrap().allowed());
    assert!(h.limiter.check("other", "x", 9).await.unwrap().allowed());
    h.advance_ms(1500);
    let names = |v: &[drip::store::KeyLevel]| v.iter().map(|k| k.key.clone()).collect::<Vec<_>>();
    let all = h.limiter.busiest_keys("t", 10).await.unwrap().unwrap();
    assert_eq!(names(&all), ["c", "a", "b"]);
    let levels: Vec<f64> = all.iter().map(|k| k.level.level).collect();
    assert_eq!(levels, [6.5, 3.5, 0.5]);
    assert_eq!(
        (
            all[0].level.queue_size,
            all[0].counters.allowed,
            all[0].counters.rejected
        ),
        (7, 1, 1)
    );
    assert_eq!(all[1].level.remaining, 6);
    let two = h.limiter.busiest_keys("t", 2).await.unwrap().unwrap();
    assert_eq!(names(&two), ["c", "a"]);
    assert!(
        h.limiter
            .busiest_keys("t", 0)
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );
    // Once everything has drained, no key is busy.
    h.advance_ms(7000);
    assert!(
        h.limiter
            .busiest_keys("t", 10)
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        h.limiter.busiest_keys("nope", 3).await,
        Err(drip::Error::UnknownBucket(_))
    ));
}

/// Acquire reserves places in order, and a timeout refuses without consuming.
pub async fn acquire_reservations<S: Store>(h: Harness<S>) {
    h.limiter
        .configure("q", policy(Mode::Police, 10, 1))
        .await
        .unwrap();
    let ms = |x: u64| Some(Duration::from_millis(x));
    // The paused tokio clock of the test runtime lets these sleeps pass at once.
    let first = h.limiter.acquire("q", "k", 1, ms(0)).await.unwrap();
    assert_eq!((first.allowed(), first.wait), (true, 0));
    let too_soon = h.limiter.acquire("q", "k", 1, ms(50)).await.unwrap();
    assert_eq!(too_soon.outcome, Outcome::Limited);
    assert_eq!(too_soon.retry_after, 50 * MS);
    let d2 = h.limiter.acquire("q", "k", 1, ms(100)).await.unwrap();
    assert_eq!((d2.allowed(), d2.wait), (true, 100 * MS));
    let d3 = h.limiter.acquire("q", "k", 1, None).await.unwrap();
    assert_eq!((d3.allowed(), d3.wait), (true, 200 * MS));
    // A plain check cannot jump the queue of reservations.
    assert_eq!(
        h.limiter.check("q", "k", 1).await.unwrap().outcome,
        Outcome::Limited
    );
    assert_eq!(
        h.limiter.acquire("q", "k", 2, None).await.unwrap().outcome,
        Outcome::Exceeds
    );
}

/// Bad input is a ConfigError naming the field; nothing panics.
pub async fn bad_input<S: Store>(_h: Harness<S>) {
    let field = |r: Result<Policy, drip::ConfigError>| r.unwrap_err().field;
    assert_eq!(
        field(Policy::from_parts(Mode::Police, 0, 1.0, &[])),
        "capacity"
    );
    assert_eq!(
        field(Policy::from_parts(Mode::Police, 1 << 40, 1.0, &[])),
        "capacity"
    );
    for rate in [0.0, -3.0, f64::NAN, f64::INFINITY, 1e300] {
        assert_eq!(
            field(Policy::from_parts(Mode::Police, 5, rate, &[])),
            "leak_rate"
        );
    }
    assert_eq!(
        field(Policy::from_parts(Mode::Police, 5, 1.0, &[(0, 60.0)])),
        "windows[0].limit"
    );
    assert_eq!(
        field(Policy::from_parts(Mode::Police, 5, 1.0, &[(5, -1.0)])),
        "windows[0].period_s"
    );
    assert_eq!(
        field("queue".parse::<Mode>().map(|m| policy(m, 1, 1))),
        "mode"
    );
}

/// The queue of waiting requests (shape mode, tracked): after a burst of 10
/// at 10/s the list holds the 10 ids in order, their turns 100 ms apart;
/// it is bounded by the capacity; after 0.5 s it holds the last 5; once the
/// water is gone (and the key swept) it is empty. Untracked and police
/// buckets list nothing; an unknown bucket is an error.
pub async fn queue_listing<S: Store>(h: Harness<S>) {
    let tracked = policy(Mode::Shape, 10, 10).with_track_queue(true);
    h.limiter.configure("q", tracked).await.unwrap();
    let ids: Vec<String> = (0..15).map(|i| format!("r{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let d = h
            .limiter
            .decide_tracked("q", "k", Request::check(1), id)
            .await
            .unwrap();
        assert_eq!(d.allowed(), i < 10, "request {i}");
    }
    let listed = |q: &[drip::QueuedRequest]| -> Vec<String> {
        q.iter().map(|r| r.request_id.clone()).collect()
    };
    let q = h.limiter.queue("q", "k").await.unwrap();
    assert_eq!(listed(&q), ids[..10], "the refused five are not listed");
    let t0 = q[0].enqueue_time_ms;
    for (i, r) in q.iter().enumerate() {
        assert_eq!(r.enqueue_time_ms, t0, "one burst, one moment");
        assert_eq!(r.estimated_process_time_ms, t0 + 100 * i as u64, "{r:?}");
    }
    assert_eq!(
        h.limiter.status("q", "k").await.unwrap().level.queue_size,
        10
    );
    h.advance_ms(500);
    let q = h.limiter.queue("q", "k").await.unwrap();
    assert_eq!(listed(&q), ids[5..10]);
    assert_eq!(q[0].estimated_process_time_ms, t0 + 500);
    // Room for 5 again: they join behind the listed ones, in order.
    for id in ["s0", "s1"] {
        let d = h
            .limiter
            .decide_tracked("q", "k", Request::check(1), id)
            .await
            .unwrap();
        assert!(d.allowed());
    }
    let q = h.limiter.queue("q", "k").await.unwrap();
    assert_eq!(listed(&q), ["r5", "r6", "r7", "r8", "r9", "s0", "s1"]);
    assert_eq!(q[6].estimated_process_time_ms, t0 + 1100);
    assert_eq!(q[6].enqueue_time_ms, t0 + 500);
    // The water gone, the list is empty, and stays so once the key goes.
    h.advance_ms(700);
    assert!(h.limiter.queue("q", "k").await.unwrap().is_empty());
    h.limiter.sweep_idle().await.unwrap();
    assert!(h.limiter.queue("q", "k").await.unwrap().is_empty());
    // A plain check of a tracked bucket is listed too, without an id.
    assert!(h.limiter.check("q", "k", 1).await.unwrap().allowed());
    let q = h.limiter.queue("q", "k").await.unwrap();
    assert_eq!(listed(&q), [""]);

    // Not tracked, or police: nothing listed. Unknown bucket: an error.
    h.limiter
        .configure("u", policy(Mode::Shape, 10, 10))
        .await
        .unwrap();
    let police = policy(Mode::Police, 10, 10).with_track_queue(true);
    h.limiter.configure("p", police).await.unwrap();
    for b in ["u", "p"] {
        let d = h
            .limiter
            .decide_tracked(b, "k", Request::check(1), "x")
            .await
            .unwrap();
        assert!(d.allowed());
        assert!(h.limiter.queue(b, "k").await.unwrap().is_empty(), "{b}");
    }
    assert!(matches!(
        h.limiter.queue("nope", "k").await,
        Err(drip::Error::UnknownBucket(_))
    ));
}

/// Cancelling a queued request gives its place back when nothing is queued
/// behind it (a new request then gets its earlier turn); behind others its
/// place stays used, as their turns were promised.
pub async fn cancel_gives_the_place_back<S: Store>(h: Harness<S>) {
    let tracked = policy(Mode::Shape, 10, 10).with_track_queue(true);
    h.limiter.configure("c", tracked).await.unwrap();
    let go = |id: &'static str| {
        let limiter = h.limiter.clone();
        async move {
            limiter
                .decide_tracked("c", "k", Request::check(1), id)
                .await
                .unwrap()
        }
    };
    assert_eq!(go("a").await.wait, 0);
    assert_eq!(go("b").await.wait, 100 * MS);
    assert_eq!(go("c").await.wait, 200 * MS);
    // "b" has "c" behind it: off the list, its place kept.
    assert!(!h.limiter.cancel("c", "k", "b").await.unwrap());
    // "c" is the last: its place is given back.
    assert!(h.limiter.cancel("c", "k", "c").await.unwrap());
    assert!(!h.limiter.cancel("c", "k", "c").await.unwrap(), "only once");
    assert!(!h.limiter.cancel("c", "k", "nobody").await.unwrap());
    let ids: Vec<String> = h
        .limiter
        .queue("c", "k")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    assert_eq!(ids, ["a"]);
    // "d" takes "c"'s turn (200 ms), not the one after it.
    assert_eq!(go("d").await.wait, 200 * MS);
    assert_eq!(
        h.limiter.status("c", "k").await.unwrap().level.queue_size,
        3
    );
}

/// Joint decisions (`Limiter::decide_all`): several keys of several
/// buckets admitted together or not at all; a refusal by one part consumes
/// nothing anywhere, and only the refusing parts count a rejection.
pub async fn joint_decisions<S: Store>(h: Harness<S>) {
    use drip::JointPart;
    let part = |bucket, key, cost| JointPart::new(bucket, key, drip::Request::check(cost));
    let windowed = policy(Mode::Police, 100, 100)
        .with_window(Window::new(3, Duration::from_secs(1)).unwrap())
        .unwrap();
    h.limiter
        .configure("wide", policy(Mode::Police, 1, 10))
        .await
        .unwrap();
    h.limiter
        .configure("narrow", policy(Mode::Police, 1, 2))
        .await
        .unwrap();
    h.limiter.configure("win", windowed).await.unwrap();
    let both = [part("wide", "k", 1), part("narrow", "k", 1)];
    for left in [9, 8] {
        let d = h.limiter.decide_all(&both).await.unwrap();
        assert!(d.admitted);
        assert_eq!(
            d.decisions.iter().map(|d| d.remaining).collect::<Vec<_>>(),
            [left, left - 8]
        );
    }
    // Refused by the narrow bucket: the wide one is not consumed.
    let d = h.limiter.decide_all(&both).await.unwrap();
    assert!(!d.admitted);
    assert_eq!(d.decisions[0].outcome, Outcome::Allowed);
    assert_eq!((d.decisions[0].remaining, d.decisions[0].wait), (8, 0));
    assert_eq!(d.decisions[1].outcome, Outcome::Limited);
    assert_eq!(d.decisions[1].retry_after, 1000 * MS);
    let counts = |s: drip::KeyStatus| (s.counters.allowed, s.counters.rejected);
    assert_eq!(counts(h.limiter.status("wide", "k").await.unwrap()), (2, 0));
    assert_eq!(
        counts(h.limiter.status("narrow", "k").await.unwrap()),
        (2, 1)
    );
    assert_eq!(
        h.limiter.status("wide", "k").await.unwrap().level.remaining,
        8
    );
    // A window refuses: the bucket beside it is not consumed either.
    let mixed = [part("win", "a", 2), part("wide", "j", 4)];
    assert!(h.limiter.decide_all(&mixed).await.unwrap().admitted);
    let d = h.limiter.decide_all(&mixed).await.unwrap();
    assert!(!d.admitted);
    assert_eq!(d.decisions[0].outcome, Outcome::Limited);
    assert_eq!(d.decisions[1].remaining, 6);
    assert_eq!(
        h.limiter.status("wide", "j").await.unwrap().level.remaining,
        6
    );
    // Parts on one key add up: 1 + 1 + 1 does not fit in 2.
    let thrice = [
        part("narrow", "x", 1),
        part("narrow", "x", 1),
        part("narrow", "x", 1),
    ];
    assert!(!h.limiter.decide_all(&thrice).await.unwrap().admitted);
    assert_eq!(
        h.limiter
            .status("narrow", "x")
            .await
            .unwrap()
            .level
            .remaining,
        2
    );
    assert!(h.limiter.decide_all(&thrice[..2]).await.unwrap().admitted);
    // Too costly for a bucket ever: Exceeds, nothing consumed.
    let d = h
        .limiter
        .decide_all(&[part("wide", "e", 1), part("narrow", "e", 3)])
        .await
        .unwrap();
    assert_eq!(
        (d.admitted, d.decisions[1].outcome),
        (false, Outcome::Exceeds)
    );
    assert_eq!(
        h.limiter.status("wide", "e").await.unwrap().level.remaining,
        10
    );
    // An unknown bucket is an error and nothing is consumed.
    let err = h
        .limiter
        .decide_all(&[part("wide", "u", 1), part("nope", "u", 1)])
        .await;
    assert!(matches!(err, Err(drip::Error::UnknownBucket(b)) if b == "nope"));
    assert_eq!(
        h.limiter.status("wide", "u").await.unwrap().level.remaining,
        10
    );
    // Time refills: the narrow key admits again after 1 s.
    h.advance_ms(1000);
    assert!(h.limiter.decide_all(&both).await.unwrap().admitted);
    // An advisory part (shadow mode) is counted but does not refuse: the
    // narrow key is full, the wide one still consumes.
    let shadowed = [
        part("wide", "s", 1),
        JointPart::advisory("narrow", "k", drip::Request::check(2)),
    ];
    let d = h.limiter.decide_all(&shadowed).await.unwrap();
    assert!(d.admitted);
    assert_eq!(d.decisions[1].outcome, Outcome::Limited);
    assert_eq!(
        h.limiter.status("wide", "s").await.unwrap().level.remaining,
        9
    );
    assert_eq!(
        h.limiter
            .status("narrow", "k")
            .await
            .unwrap()
            .level
            .remaining,
        0
    );
    // Nothing asked: admitted, no decisions.
    let none = h.limiter.decide_all(&[]).await.unwrap();
    assert!(none.admitted && none.decisions.is_empty());
}

/// Instantiates every case for a store: `conformance_suite!(make_harness)`
/// where `make_harness` is an expression giving a fresh `Harness` (it may
/// `.await`). Cases run on a paused tokio clock unless another test
/// attribute is given: `conformance_suite!(make; tokio::test)` for stores
/// whose I/O needs real time (a paused clock would fire their timeouts).
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!($make; tokio::test(start_paused = true));
    };
    ($make:expr; $attr:meta) => {
        $crate::conformance_suite!(@cases [$attr] $make;
            police_table shape_table scenario_a scenario_b scenario_c scenario_d
            scenario_e scenario_f windows_and_atomicity costs reconfigure
            delete_and_list status_counters acquire_reservations bad_input
            counters_outlive_the_water joint_decisions queue_listing cancel_gives_the_place_back
            busiest_keys);
    };
    (@cases [$attr:meta] $make:expr; $($case:ident)*) => {
        $(
            #[$attr]
            async fn $case() {
                conformance::$case($make).await;
            }
        )*
    };
}
