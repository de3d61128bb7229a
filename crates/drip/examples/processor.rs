//! The user's `LeakyBucketProcessor`, on `Limiter::schedule`: a handler per
//! bucket, requests submitted in a burst, each handled at its turn (the
//! bucket's leak rate); what does not fit in the queue is refused at once.
//!
//! `cargo run -p drip --example processor`

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use drip::{JobHandle, Limit, Limiter, Policy, Rate};
use tokio::time::Instant;

/// A queued request as the handler sees it.
#[derive(Debug, Clone)]
struct QueuedRequest {
    request_id: String,
    bucket_id: String,
    enqueued: Instant,
}

type Handler = Arc<dyn Fn(QueuedRequest) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Hands each admitted request to its bucket's handler at its turn.
struct LeakyBucketProcessor {
    limiter: Limiter,
    handlers: HashMap<String, Handler>,
}

impl LeakyBucketProcessor {
    fn new(limiter: Limiter) -> Self {
        LeakyBucketProcessor {
            limiter,
            handlers: HashMap::new(),
        }
    }

    /// Registers the handler of `bucket`'s requests.
    fn register_handler<F, Fut>(&mut self, bucket: &str, handler: F)
    where
        F: Fn(QueuedRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handlers.insert(
            bucket.to_owned(),
            Arc::new(move |r| Box::pin(handler(r)) as Pin<Box<dyn Future<Output = ()> + Send>>),
        );
    }

    /// Queues a request: `Some(handle)` if admitted (its handler runs at
    /// its turn), `None` if the queue is full.
    async fn submit(&self, bucket: &str, request_id: &str) -> drip::Result<Option<JobHandle<()>>> {
        let handler = self.handlers[bucket].clone();
        let request = QueuedRequest {
            request_id: request_id.to_owned(),
            bucket_id: bucket.to_owned(),
            enqueued: Instant::now(),
        };
        let s = self
            .limiter
            .schedule(bucket, "", 1, handler(request))
            .await?;
        let d = &s.decision;
        if s.admitted() {
            println!(
                "{request_id}: queued at position {:>2}, estimated wait {:>4} ms",
                d.queue_position,
                s.wait().as_millis()
            );
        } else {
            println!("{request_id}: refused, the queue is full");
        }
        Ok(s.job)
    }
}

#[tokio::main]
async fn main() -> drip::Result<()> {
    let limiter = Limiter::memory();
    // The queue holds 10 requests and drains 5 per second.
    limiter
        .configure(
            "emails",
            Policy::shape(Limit::new(Rate::per_second(5)?, 10)?),
        )
        .await?;

    let mut processor = LeakyBucketProcessor::new(limiter.clone());
    let start = Instant::now();
    processor.register_handler("emails", move |r: QueuedRequest| async move {
        println!(
            "  handled {} of {} at {:>5} ms (waited {} ms)",
            r.request_id,
            r.bucket_id,
            start.elapsed().as_millis(),
            r.enqueued.elapsed().as_millis()
        );
    });

    // A burst of 12: ten are queued, two refused.
    let mut jobs = Vec::new();
    for i in 1..=12 {
        if let Some(job) = processor.submit("emails", &format!("req-{i}")).await? {
            jobs.push(job);
        }
    }
    for job in jobs {
        job.await.expect("the handler ran");
    }
    let s = limiter.status("emails", "").await?;
    println!(
        "handled {} of {} requests ({} refused) in {:.1} s",
        s.counters.allowed,
        s.counters.total(),
        s.counters.rejected,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
