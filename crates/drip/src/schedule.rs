//! Scheduling: hand the limiter a job with the request, and it runs the job
//! at the request's turn (a leaky-bucket *processor*).
//!
//! [`Limiter::schedule`] decides at once, through [`Limiter::check`] (one
//! store call), and answers with the decision and, if admitted, a
//! [`JobHandle`]: the job runs at its departure (shape mode: `decision.wait`
//! from now) or at once (police mode). Refused requests (queue full, limited,
//! or a cost the bucket can never admit) get no handle and their job never
//! runs. [`blocking::Limiter::schedule`](crate::blocking::Limiter::schedule)
//! does the same for a synchronous program, on a thread.
//!
//! Each request is decided with an id of its own ([`Scheduled::request_id`]),
//! listed in the bucket's queue when it tracks one
//! ([`Policy::with_track_queue`](crate::Policy::with_track_queue)).
//! Dropping the handle of a job that has not started cancels it: the job
//! never runs, and its place is given back to the store
//! ([`Limiter::cancel`]) where that is exact: the bucket tracks its queue,
//! has no windows, and nothing was admitted behind the job (a new request
//! then gets the job's turn). Otherwise the place stays used, as for a
//! dropped [`Limiter::acquire`]: the turns promised to the requests behind
//! it cannot move, and lowering the bucket's level under them would let a
//! new request overlap their turns.
//!
//! Jobs of one key start in departure order: in shape mode each admitted
//! request departs at least one emission interval (`cost / rate`) after the
//! one before it. Jobs due at the same instant (police mode, or departures
//! closer than the runtime's 1 ms timer resolution) start in the order the
//! runtime wakes them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::Result;
use crate::core::{Decision, Request};
use crate::limiter::Limiter;
use crate::store::Store;

/// Why a job's output is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The job was cancelled before it started (its handle was dropped or
    /// [`JobHandle::cancel`]led).
    #[error("the job was cancelled before its turn")]
    Cancelled,
    /// The job panicked.
    #[error("the job panicked")]
    Panicked,
}

/// The answer to [`Limiter::schedule`]: the decision, and the job if it was
/// admitted.
#[must_use = "dropping the job handle cancels the job"]
pub struct Scheduled<H> {
    /// The store's decision: `queue_position` and `wait` (shape mode) say
    /// where and when the job runs.
    pub decision: Decision,
    /// The admitted job: await it for the job's output, drop it to cancel.
    /// `None` when the request was not admitted; the job never runs.
    pub job: Option<H>,
    /// The id the request was decided with (as listed by
    /// [`Limiter::queue`]): unique per process and, with a random part,
    /// across the nodes sharing a store.
    pub request_id: String,
}

/// A fresh request id for a scheduled job: `job_<nonce>_<n>`, the nonce
/// drawn once per process (std's random hasher keys), `n` counting up.
fn job_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::OnceLock;
    use std::sync::atomic::AtomicU64;
    static NONCE: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nonce = NONCE.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    format!("job_{nonce:016x}_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl<H> Scheduled<H> {
    /// True when the request was admitted and its job will run.
    pub fn admitted(&self) -> bool {
        self.job.is_some()
    }

    /// How long from the decision until the job runs.
    pub fn wait(&self) -> Duration {
        Duration::from_nanos(self.decision.wait)
    }
}

/// Where a job is: waiting for its turn, started, or cancelled. Shared by
/// the handle and the waiting task; exactly one of start and cancel wins.
struct JobState {
    state: AtomicU8,
    cancelled: Notify,
}

const WAITING: u8 = 0;
const STARTED: u8 = 1;
const CANCELLED: u8 = 2;

impl JobState {
    fn new() -> Arc<Self> {
        Arc::new(JobState {
            state: AtomicU8::new(WAITING),
            cancelled: Notify::new(),
        })
    }

    /// Moves a waiting job to `to`; false if it had already started or been
    /// cancelled.
    fn leave_waiting(&self, to: u8) -> bool {
        self.state
            .compare_exchange(WAITING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn started(&self) -> bool {
        self.state.load(Ordering::Acquire) == STARTED
    }
}

/// An admitted job of [`Limiter::schedule`]. Await it for the job's output;
/// drop it (or [`cancel`](Self::cancel) it) to cancel a job that has not
/// started; [`detach`](Self::detach) it to let the job run unobserved.
pub struct JobHandle<T> {
    state: Arc<JobState>,
    task: JoinHandle<Option<T>>,
    detached: bool,
}

impl<T> JobHandle<T> {
    /// True once the job has started (it then runs to its end).
    pub fn is_started(&self) -> bool {
        self.state.started()
    }

    /// Cancels the job if it has not started; true if it was cancelled.
    pub fn cancel(mut self) -> bool {
        self.detached = true;
        cancel(&self.state)
    }

    /// Lets the job run at its turn without this handle.
    pub fn detach(mut self) {
        self.detached = true;
    }
}

fn cancel(state: &JobState) -> bool {
    let cancelled = state.leave_waiting(CANCELLED);
    if cancelled {
        // Wakes the waiting task so it ends now, not at its turn.
        state.cancelled.notify_one();
    }
    cancelled
}

impl<T> Drop for JobHandle<T> {
    fn drop(&mut self) {
        if !self.detached {
            cancel(&self.state);
        }
    }
}

impl<T> Future for JobHandle<T> {
    type Output = std::result::Result<T, JobError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.task).poll(cx).map(|r| match r {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(JobError::Cancelled),
            Err(_) => Err(JobError::Panicked),
        })
    }
}

impl<S: Store> Limiter<S> {
    /// Decides now whether `cost` units for `key` may go, and runs `job` at
    /// the request's turn: after `decision.wait` in shape mode, at once in
    /// police mode. A request not admitted gets no handle and `job` is
    /// dropped unrun. Must be called within a tokio runtime (the job runs
    /// on it).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use drip::{Limit, Limiter, Policy, Rate};
    /// let limiter = Limiter::memory();
    /// limiter.configure("jobs", Policy::shape(Limit::new(Rate::per_second(100)?, 5)?)).await?;
    /// let s = limiter.schedule("jobs", "", 1, async { 42 }).await?;
    /// assert_eq!(s.decision.queue_position, 1);
    /// assert_eq!(s.job.unwrap().await, Ok(42));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn schedule<F>(
        &self,
        bucket: &str,
        key: &str,
        cost: u64,
        job: F,
    ) -> Result<Scheduled<JobHandle<F::Output>>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let request_id = job_id();
        let decision = self
            .decide_tracked(bucket, key, Request::check(cost), &request_id)
            .await?;
        if !decision.allowed() {
            return Ok(Scheduled {
                decision,
                job: None,
                request_id,
            });
        }
        // The turn is `wait` after the store decided, i.e. about now.
        let turn = tokio::time::Instant::now() + Duration::from_nanos(decision.wait);
        let state = JobState::new();
        let task = tokio::spawn({
            let state = state.clone();
            let (limiter, bucket, key, id) = (
                self.clone(),
                bucket.to_owned(),
                key.to_owned(),
                request_id.clone(),
            );
            async move {
                tokio::select! {
                    _ = tokio::time::sleep_until(turn) => {}
                    _ = state.cancelled.notified() => {}
                }
                if state.leave_waiting(STARTED) {
                    Some(job.await)
                } else {
                    // Cancelled: give the place back where the store can
                    // (a store error leaves it used, as it would be anyway).
                    let _ = limiter.cancel(&bucket, &key, &id).await;
                    None
                }
            }
        });
        Ok(Scheduled {
            request_id,
            decision,
            job: Some(JobHandle {
                state,
                task,
                detached: false,
            }),
        })
    }
}

/// An admitted job of
/// [`blocking::Limiter::schedule`](crate::blocking::Limiter::schedule): it
/// runs on a thread of its own at its turn. [`join`](Self::join) it for the
/// job's output; drop it to cancel a job that has not started.
pub struct BlockingJobHandle<T> {
    state: Arc<JobState>,
    // Dropping the sender wakes the sleeping thread at once.
    wake: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Option<T>>>,
}

impl<T> BlockingJobHandle<T> {
    /// True once the job has started (it then runs to its end).
    pub fn is_started(&self) -> bool {
        self.state.started()
    }

    /// Blocks until the job has run and returns its output.
    pub fn join(mut self) -> std::result::Result<T, JobError> {
        let thread = self.thread.take().expect("joined once");
        match thread.join() {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(JobError::Cancelled),
            Err(_) => Err(JobError::Panicked),
        }
    }

    /// Lets the job run at its turn without this handle.
    pub fn detach(mut self) {
        // The thread wakes when the sender goes, finds the job still
        // waiting (not cancelled) and sleeps on until its turn.
        self.thread = None;
    }
}

impl<T> Drop for BlockingJobHandle<T> {
    fn drop(&mut self) {
        if self.thread.is_some() && cancel(&self.state) {
            drop(self.wake.take());
        }
    }
}

impl<S: Store> crate::blocking::Limiter<S> {
    /// [`crate::Limiter::schedule`] for synchronous programs: decides now,
    /// then runs `job` on a thread of its own at the request's turn. Each
    /// waiting job holds a sleeping thread; for thousands of waiting jobs,
    /// use the async limiter.
    pub fn schedule<F, T>(
        &self,
        bucket: &str,
        key: &str,
        cost: u64,
        job: F,
    ) -> Result<Scheduled<BlockingJobHandle<T>>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let request_id = job_id();
        let decision = self.decide_tracked(bucket, key, Request::check(cost), &request_id)?;
        if !decision.allowed() {
            return Ok(Scheduled {
                decision,
                job: None,
                request_id,
            });
        }
        let turn = std::time::Instant::now() + Duration::from_nanos(decision.wait);
        let give_back = {
            let (limiter, runtime) = (self.as_async().clone(), self.handle());
            let (bucket, key, id) = (bucket.to_owned(), key.to_owned(), request_id.clone());
            move || {
                let _ = runtime.block_on(limiter.cancel(&bucket, &key, &id));
            }
        };
        let state = JobState::new();
        let (wake, woken) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("drip-job".to_owned())
            .spawn({
                let state = state.clone();
                move || {
                    // Sleeps until the turn, or until the handle goes.
                    let left = || turn.saturating_duration_since(std::time::Instant::now());
                    let _ = woken.recv_timeout(left());
                    if state.state.load(Ordering::Acquire) == WAITING {
                        // Detached, not cancelled: the turn still counts.
                        std::thread::sleep(left());
                    }
                    let out = state.leave_waiting(STARTED).then(job);
                    if out.is_none() {
                        give_back();
                    }
                    out
                }
            })
            .map_err(|e| crate::Error::Store(format!("cannot start a job thread: {e}")))?;
        Ok(Scheduled {
            request_id,
            decision,
            job: Some(BlockingJobHandle {
                state,
                wake: Some(wake),
                thread: Some(thread),
            }),
        })
    }
}
