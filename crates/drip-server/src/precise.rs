//! Sleeps that end within tens of microseconds of their deadline: the
//! proxy's departures in shape mode, `drip stress --rate`'s sends.
//!
//! tokio's timer has a 1 ms resolution, and its runtime parks in
//! `epoll_wait` for whole milliseconds rounded up, so a tokio sleep ends up
//! to a millisecond late, by an amount that depends on when the runtime
//! went to sleep: consecutive departures then drift apart by a random part
//! of a millisecond (the spacing error BENCHMARKS.md measured). Here a
//! tokio sleep covers all but the last `FINE` of the wait, and one
//! process-wide thread, waiting on a condition variable with a nanosecond
//! timeout (a high-resolution kernel timer), ends the rest. No spinning:
//! the thread sleeps between deadlines.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The part of a wait the timer thread ends (more than tokio's lateness).
const FINE: Duration = Duration::from_millis(2);

/// Sleeps until `deadline`.
pub async fn sleep_until(deadline: Instant) {
    let coarse = deadline.checked_sub(FINE).unwrap_or(deadline);
    if coarse > Instant::now() {
        tokio::time::sleep_until(coarse.into()).await;
    }
    if deadline <= Instant::now() {
        return;
    }
    let Some(timer) = timer() else {
        tokio::time::sleep_until(deadline.into()).await;
        return;
    };
    let (tx, rx) = oneshot::channel();
    timer.add(deadline, tx);
    // The timer thread never drops a sender unsent: an error cannot come
    // but is a wake-up all the same.
    let _ = rx.await;
}

/// One deadline and whom to wake, ordered by the deadline alone.
struct Due(Instant, oneshot::Sender<()>);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

/// The deadlines waiting (earliest on top) and the thread's wake-up call.
struct Timer {
    due: Mutex<BinaryHeap<Reverse<Due>>>,
    changed: Condvar,
}

/// The process's timer thread, started on first use (`None` if it could
/// not start: waits then end by tokio's timer alone).
fn timer() -> Option<&'static Timer> {
    static TIMER: OnceLock<Option<&'static Timer>> = OnceLock::new();
    *TIMER.get_or_init(|| {
        let t: &'static Timer = Box::leak(Box::new(Timer {
            due: Mutex::new(BinaryHeap::new()),
            changed: Condvar::new(),
        }));
        match std::thread::Builder::new()
            .name("drip-precise-timer".into())
            .spawn(move || t.run())
        {
            Ok(_) => Some(t),
            Err(e) => {
                tracing::warn!(
                    "no precise timer thread ({e}): shape departures use tokio's 1 ms timer"
                );
                None
            }
        }
    })
}

impl Timer {
    fn add(&self, deadline: Instant, tx: oneshot::Sender<()>) {
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        let earliest = due.peek().is_none_or(|Reverse(d)| deadline < d.0);
        due.push(Reverse(Due(deadline, tx)));
        if earliest {
            self.changed.notify_one();
        }
    }

    /// Wakes each deadline as it passes, sleeping until the next.
    fn run(&self) {
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let now = Instant::now();
            match due.peek() {
                None => {
                    due = self
                        .changed
                        .wait(due)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Some(Reverse(d)) if d.0 <= now => {
                    if let Some(Reverse(Due(_, tx))) = due.pop() {
                        let _ = tx.send(());
                    }
                }
                Some(Reverse(d)) => {
                    let left = d.0 - now;
                    due = self
                        .changed
                        .wait_timeout(due, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sleep ends at or after its deadline, and closer to it than
    /// tokio's own sleep does: the two are interleaved, so a loaded
    /// machine's delays fall on both alike, and their medians compared.
    #[tokio::test]
    async fn sleeps_end_at_their_deadlines_sooner_than_tokios() {
        let (mut precise, mut coarse) = (Vec::new(), Vec::new());
        for i in 0..30u64 {
            let wait = Duration::from_micros(3_000 + 170 * i);
            let deadline = Instant::now() + wait;
            sleep_until(deadline).await;
            let now = Instant::now();
            assert!(now >= deadline);
            precise.push(now - deadline);
            let deadline = Instant::now() + wait;
            tokio::time::sleep_until(deadline.into()).await;
            coarse.push(Instant::now() - deadline);
        }
        precise.sort();
        coarse.sort();
        eprintln!(
            "median lateness: precise {:?}, tokio {:?}",
            precise[15], coarse[15]
        );
        assert!(
            precise[15] < coarse[15],
            "precise {:?} vs tokio {:?}",
            precise[15],
            coarse[15]
        );
    }

    /// Several waiters at once wake in deadline order.
    #[tokio::test]
    async fn waiters_wake_in_deadline_order() {
        let start = Instant::now();
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = [5u64, 1, 4, 2, 3]
            .into_iter()
            .map(|i| {
                let order = order.clone();
                tokio::spawn(async move {
                    sleep_until(start + Duration::from_millis(3 + 15 * i)).await;
                    order.lock().unwrap().push(i);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [1, 2, 3, 4, 5]);
    }
}
