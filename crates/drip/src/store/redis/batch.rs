//! Batching: a bucket's requests that arrive while its call slots are busy
//! wait and go together in its next script calls.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::Mutex;
use redis::Value;
use tokio::sync::oneshot;

use super::*;
use crate::core::Request;
use crate::{Error, Result};

/// A request waiting for its bucket's next script call.
pub(super) struct QueuedRequest {
    pub(super) key: String,
    pub(super) req: Request,
    /// The request's id (listed when the bucket tracks its queue).
    pub(super) id: String,
    pub(super) reply: oneshot::Sender<Result<Reply>>,
}

/// What this node keeps of a bucket, under one lock: its policy as last
/// read, its script calls under way and the requests waiting for the next.
/// (A lone call looks the bucket up once and takes the lock twice.)
#[derive(Default)]
pub(super) struct Bucket {
    pub(super) state: Mutex<BucketState>,
    /// Local ns until which a deny-cache bound of this bucket may be live
    /// (the sync checks the bucket's version until then).
    pub(super) deny_until: AtomicU64,
}

#[derive(Default)]
pub(super) struct BucketState {
    /// The policy as this node last read it; `None`: read it again.
    pub(super) cached: Option<Arc<Cached>>,
    pub(super) in_flight: usize,
    /// Requests in the calls under way.
    pub(super) sending: usize,
    pub(super) waiting: Vec<QueuedRequest>,
}

/// Holds one of a bucket's call slots; when dropped (the call answered, or
/// its caller gone) it passes the slot to the requests that waited, or
/// frees it.
pub(super) struct CallSlot<'a> {
    pub(super) inner: &'a Arc<Inner>,
    pub(super) name: &'a str,
    pub(super) bucket: &'a Arc<Bucket>,
}

impl Drop for CallSlot<'_> {
    fn drop(&mut self) {
        if let Some(batch) = self.inner.next_batch(self.bucket, 1) {
            let (inner, bucket) = (self.inner.clone(), self.bucket.clone());
            let name = self.name.to_owned();
            self.inner
                .runtime
                .spawn(async move { inner.send_batches(name, bucket, batch).await });
        }
    }
}

impl Inner {
    /// Decides one request: at once in a call of its own when the bucket
    /// has a call slot free, otherwise in the bucket's next batch.
    pub(super) async fn decide(
        self: &Arc<Self>,
        name: &str,
        key: &str,
        req: Request,
        id: &str,
    ) -> Result<Reply> {
        let bucket = self.bucket(name).await?;
        let now = self.deny.as_ref().map(|_| self.local_now());
        let mut local = None;
        let waiting = {
            let mut queue = bucket.state.lock();
            if let (Some(deny), Some(now), Some(cached)) = (&self.deny, now, &queue.cached) {
                local = deny.check(name, key, req, now, cached);
            }
            if local.is_some() {
                None
            } else if queue.in_flight < self.in_flight && queue.waiting.is_empty() {
                queue.in_flight += 1;
                queue.sending += 1;
                None
            } else {
                let (tx, rx) = oneshot::channel();
                queue.waiting.push(QueuedRequest {
                    key: key.to_owned(),
                    req,
                    id: id.to_owned(),
                    reply: tx,
                });
                Some(rx)
            }
        };
        if let Some(reply) = local {
            // Refused by the deny cache, without I/O: spend the task's
            // budget as any tokio I/O would, so that a task looping over
            // local refusals still lets the runtime's other tasks (the
            // cache's sync among them) run.
            tokio::task::consume_budget().await;
            return Ok(reply);
        }
        match waiting {
            None => {
                let _slot = CallSlot {
                    inner: self,
                    name,
                    bucket: &bucket,
                };
                let item = Item {
                    key,
                    req,
                    peek: false,
                    id,
                    count: false,
                };
                let items = [item];
                let call = self.run(name, &bucket, &items);
                let (mut replies, _) = if self.spin.is_zero() {
                    call.await?
                } else {
                    spin(call, self.spin).await?
                };
                replies.pop().ok_or_else(|| bad_reply(&Value::Nil))
            }
            Some(rx) => rx.await.unwrap_or_else(|_| {
                Err(Error::Store(
                    "the Redis store stopped before deciding".to_owned(),
                ))
            }),
        }
    }

    /// When a call slot of `bucket` comes free (its call decided `done`
    /// requests): the requests waiting for it (the slot passes to them), or
    /// `None` (the slot is freed).
    ///
    /// A batch takes the oldest waiting requests, at most `max_batch` and at
    /// most its share of the bucket's requests (waiting and under way)
    /// spread over its call slots: with 16 callers and 2 slots, two calls
    /// of 8 alternate, one in Redis while the other's callers come back,
    /// rather than one of 15 and one of 1.
    pub(super) fn next_batch(&self, bucket: &Bucket, done: usize) -> Option<Vec<QueuedRequest>> {
        let mut queue = bucket.state.lock();
        queue.sending = queue.sending.saturating_sub(done);
        // Callers that gave up before their call was sent are not decided.
        queue.waiting.retain(|j| !j.reply.is_closed());
        if queue.waiting.is_empty() {
            queue.in_flight -= 1;
            return None;
        }
        let share = (queue.waiting.len() + queue.sending).div_ceil(self.in_flight);
        let n = queue.waiting.len().min(self.max_batch).min(share);
        queue.sending += n;
        let rest = queue.waiting.split_off(n);
        Some(std::mem::replace(&mut queue.waiting, rest))
    }

    /// Sends `batch` in one script call and answers each of its callers,
    /// then the requests that waited meanwhile (after a yield), until none
    /// wait.
    pub(super) async fn send_batches(
        self: Arc<Self>,
        name: String,
        bucket: Arc<Bucket>,
        mut batch: Vec<QueuedRequest>,
    ) {
        loop {
            let items: Vec<Item<'_>> = batch
                .iter()
                .map(|j| Item {
                    key: &j.key,
                    req: j.req,
                    peek: false,
                    id: &j.id,
                    count: false,
                })
                .collect();
            let n = items.len();
            let result = self.run(&name, &bucket, &items).await;
            drop(items);
            match result {
                Ok((replies, _)) => {
                    for (job, reply) in batch.drain(..).zip(replies) {
                        let _ = job.reply.send(Ok(reply));
                    }
                }
                Err(e) => {
                    for job in batch.drain(..) {
                        let _ = job.reply.send(Err(e.duplicate()));
                    }
                }
            }
            // The callers just answered often ask again at once: let them
            // (runnable now) join the next batch rather than find the slot
            // free and go alone, one call each.
            tokio::task::yield_now().await;
            match self.next_batch(&bucket, n) {
                Some(next) => batch = next,
                None => return,
            }
        }
    }
}

impl Error {
    /// The same error for another caller of a failed batch.
    pub(super) fn duplicate(&self) -> Error {
        match self {
            Error::UnknownBucket(b) => Error::UnknownBucket(b.clone()),
            Error::Store(m) => Error::Store(m.clone()),
            Error::Config(c) => Error::Config(c.clone()),
            other => Error::Store(other.to_string()),
        }
    }
}
