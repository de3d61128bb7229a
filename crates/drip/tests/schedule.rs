//! `Limiter::schedule`: jobs run at their request's turn, in departure
//! order; refused requests' jobs never run; a dropped handle cancels a job
//! that has not started. On paused tokio time (exact) and on real time
//! (wide bounds), async and blocking.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use drip::{JobError, Limit, Limiter, MemoryStore, Policy, Rate, TokioClock};

const JOBS: usize = 50;
const STEP: Duration = Duration::from_millis(100); // 10 per second

fn shape_10_per_s(capacity: u64) -> Policy {
    Policy::shape(Limit::new(Rate::per_second(10).unwrap(), capacity).unwrap())
}

/// A burst of `JOBS` jobs at 10/s; returns (job index, start time since the
/// burst) in the order the jobs started. With `exact` (paused time) each
/// wait is exactly its turn; on real time it is counted from a decision
/// made a little later than the first, so it may be that much shorter.
async fn burst<S: drip::Store>(
    limiter: &Limiter<S>,
    capacity: u64,
    exact: bool,
) -> Vec<(usize, Duration)> {
    limiter
        .configure("jobs", shape_10_per_s(capacity))
        .await
        .unwrap();
    let t0 = tokio::time::Instant::now();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for i in 0..JOBS {
        let log = log.clone();
        let s = limiter
            .schedule("jobs", "k", 1, async move {
                log.lock().unwrap().push((i, t0.elapsed()));
                i
            })
            .await
            .unwrap();
        assert_eq!(s.decision.queue_position, i as u64 + 1, "job {i}");
        let due = STEP * i as u32;
        if exact {
            assert_eq!(s.wait(), due, "job {i}");
        } else {
            assert!(
                s.wait() <= due && s.wait() + STEP >= due,
                "job {i}: {:?}",
                s.wait()
            );
        }
        handles.push(s.job.expect("admitted"));
    }
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await, Ok(i));
    }
    Arc::try_unwrap(log).unwrap().into_inner().unwrap()
}

#[tokio::test(start_paused = true)]
async fn fifty_burst_jobs_at_10_per_s_run_in_order_at_exact_times() {
    let limiter = Limiter::new(MemoryStore::with_clock(TokioClock::new()));
    let log = burst(&limiter, JOBS as u64, true).await;
    let expected: Vec<(usize, Duration)> = (0..JOBS).map(|i| (i, STEP * i as u32)).collect();
    assert_eq!(log, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_burst_jobs_at_10_per_s_run_in_order_on_real_time() {
    let limiter = Limiter::memory();
    let log = burst(&limiter, JOBS as u64, false).await;
    let order: Vec<usize> = log.iter().map(|&(i, _)| i).collect();
    assert_eq!(order, (0..JOBS).collect::<Vec<_>>());
    for &(i, at) in &log {
        // Never early (the turn is counted from the decision, just after
        // t0), and late by at most 400 ms on a loaded machine.
        let due = STEP * i as u32;
        assert!(
            at + Duration::from_millis(5) >= due && at <= due + Duration::from_millis(400),
            "job {i} started at {at:?}, due at {due:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_and_the_job_never_runs() {
    let limiter = Limiter::new(MemoryStore::with_clock(TokioClock::new()));
    limiter.configure("q", shape_10_per_s(2)).await.unwrap();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let mut admitted = Vec::new();
    for i in 0..3 {
        let ran = ran.clone();
        let s = limiter
            .schedule("q", "", 1, async move { ran.lock().unwrap().push(i) })
            .await
            .unwrap();
        assert_eq!(s.admitted(), i < 2, "job {i}");
        admitted.extend(s.job);
    }
    for h in admitted {
        h.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(*ran.lock().unwrap(), vec![0, 1]);
}

#[tokio::test(start_paused = true)]
async fn police_runs_admitted_jobs_at_once() {
    let limiter = Limiter::new(MemoryStore::with_clock(TokioClock::new()));
    let police = Policy::police(Limit::new(Rate::per_second(10).unwrap(), 2).unwrap());
    limiter.configure("p", police).await.unwrap();
    let t0 = tokio::time::Instant::now();
    let a = limiter
        .schedule("p", "", 1, async move { t0.elapsed() })
        .await
        .unwrap();
    let b = limiter
        .schedule("p", "", 1, async move { t0.elapsed() })
        .await
        .unwrap();
    let c = limiter.schedule("p", "", 1, async {}).await.unwrap();
    assert!(c.job.is_none() && c.decision.retry_after > 0);
    assert_eq!(a.job.unwrap().await, Ok(Duration::ZERO));
    assert_eq!(b.job.unwrap().await, Ok(Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_handle_cancels_its_job() {
    let limiter = Limiter::new(MemoryStore::with_clock(TokioClock::new()));
    limiter.configure("c", shape_10_per_s(10)).await.unwrap();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let mut jobs = Vec::new();
    for i in 0..4 {
        let ran = ran.clone();
        let s = limiter
            .schedule("c", "", 1, async move { ran.lock().unwrap().push(i) })
            .await
            .unwrap();
        jobs.push(s.job.unwrap());
    }
    let last = jobs.pop().unwrap();
    let third = jobs.pop().unwrap();
    let second = jobs.pop().unwrap();
    drop(second); // due at 100 ms
    assert!(third.cancel()); // due at 200 ms
    last.detach(); // due at 300 ms: runs without its handle
    jobs.pop().unwrap().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(*ran.lock().unwrap(), vec![0, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_job_that_started_is_not_cancelled() {
    let limiter = Limiter::new(MemoryStore::with_clock(TokioClock::new()));
    limiter.configure("s", shape_10_per_s(10)).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let done = Arc::new(Mutex::new(false));
    let s = limiter
        .schedule("s", "", 1, {
            let done = done.clone();
            async move {
                let _ = rx.await;
                *done.lock().unwrap() = true;
            }
        })
        .await
        .unwrap();
    let h = s.job.unwrap();
    tokio::task::yield_now().await;
    while !h.is_started() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(!h.cancel());
    tx.send(()).unwrap();
    while !*done.lock().unwrap() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn blocking_schedule_runs_in_order_and_cancels() {
    let limiter = drip::blocking::Limiter::memory().unwrap();
    // 20 per second: 5 jobs 50 ms apart.
    let policy = Policy::shape(Limit::new(Rate::per_second(20).unwrap(), 10).unwrap());
    limiter.configure("b", policy).unwrap();
    let t0 = std::time::Instant::now();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for i in 0..6 {
        let log = log.clone();
        let s = limiter
            .schedule("b", "", 1, move || {
                log.lock().unwrap().push((i, t0.elapsed()));
                i
            })
            .unwrap();
        let due = Duration::from_millis(50) * i as u32;
        assert!(s.wait() <= due && s.wait() + Duration::from_millis(50) >= due);
        handles.push(s.job.unwrap());
    }
    let cancelled = handles.remove(2);
    drop(cancelled);
    let outputs: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    assert_eq!(outputs, vec![Ok(0), Ok(1), Ok(3), Ok(4), Ok(5)]);
    let log = log.lock().unwrap();
    let order: Vec<usize> = log.iter().map(|&(i, _)| i).collect();
    assert_eq!(order, vec![0, 1, 3, 4, 5]);
    for &(i, at) in log.iter() {
        let due = Duration::from_millis(50) * i as u32;
        assert!(
            at + Duration::from_millis(5) >= due && at <= due + Duration::from_millis(400),
            "job {i} at {at:?}"
        );
    }
}

#[test]
fn job_errors_say_why() {
    assert_eq!(
        JobError::Cancelled.to_string(),
        "the job was cancelled before its turn"
    );
}

/// Cancellation gives the slot back (issue 14): on a bucket that tracks
/// its queue, cancelling the last waiting job returns its place, so the
/// next request gets its earlier turn; cancelling a job with others behind
/// it takes it off the list but keeps its place (their turns stand).
#[tokio::test(start_paused = true)]
async fn cancellation_gives_the_slot_back() {
    let limiter = Limiter::new(MemoryStore::with_clock(TokioClock::new()));
    let tracked = shape_10_per_s(10).with_track_queue(true);
    limiter.configure("g", tracked).await.unwrap();
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(limiter.schedule("g", "", 1, async {}).await.unwrap());
    }
    let ids: Vec<String> = jobs.iter().map(|s| s.request_id.clone()).collect();
    let listed = || async {
        let q = limiter.queue("g", "").await.unwrap();
        q.into_iter().map(|r| r.request_id).collect::<Vec<_>>()
    };
    assert_eq!(listed().await, ids);
    let last = jobs.pop().unwrap();
    assert_eq!(last.wait(), STEP * 2);
    drop(last.job); // due at 200 ms, nothing behind it
    // The waiting task gives the place back as it ends: wait for it.
    for _ in 0..1000 {
        if listed().await.len() == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(listed().await.len(), 2, "the cancelled job is still listed");
    let next = limiter.schedule("g", "", 1, async {}).await.unwrap();
    assert_eq!(next.wait(), STEP * 2, "the cancelled job's turn");
    // The middle job has one behind it: its place stays used.
    let middle = jobs.pop().unwrap();
    assert!(middle.job.unwrap().cancel());
    for _ in 0..1000 {
        if listed().await.len() == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(listed().await.len(), 2, "the cancelled job is still listed");
    let after = limiter.schedule("g", "", 1, async {}).await.unwrap();
    assert_eq!(after.wait(), STEP * 3);
    drop((next, after, jobs));
}

/// The blocking twin gives the place back too.
#[test]
fn blocking_cancellation_gives_the_slot_back() {
    let limiter = drip::blocking::Limiter::memory().unwrap();
    limiter
        .configure("g", shape_10_per_s(10).with_track_queue(true))
        .unwrap();
    let a = limiter.schedule("g", "", 1, || ()).unwrap();
    let b = limiter.schedule("g", "", 1, || ()).unwrap();
    assert!(b.wait() > Duration::ZERO);
    drop(b.job);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while limiter.queue("g", "").unwrap().len() != 1 {
        assert!(std::time::Instant::now() < deadline, "never given back");
        std::thread::sleep(Duration::from_millis(1));
    }
    let c = limiter.schedule("g", "", 1, || ()).unwrap();
    // c takes b's turn (about 100 ms after a), not the one after it.
    assert!(c.wait() <= STEP, "{:?}", c.wait());
    drop((a, c));
}
