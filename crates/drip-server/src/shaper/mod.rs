//! `drip shape`: a TCP proxy that holds each connection, each client IP or
//! all traffic to a byte rate in each direction, through one drip bucket
//! (cost = bytes).
//!
//! - [`args`]: the flags and the policy (rate, burst); [`units`]: `1MiB/s`.
//! - [`pipe`]: one direction: read a chunk, wait its turn, write
//!   (backpressure: it never holds more than one chunk, at most the burst).
//! - [`server`]: the listener, the keys, the drain on shutdown.

pub mod args;
pub mod pipe;
pub mod server;
pub mod units;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::{Context, Result, anyhow};
use drip::{Limiter, Store};
use tokio::net::TcpListener;

pub use args::Args;

use crate::limits;
use crate::metrics::Metrics;
use crate::metrics_listener::Sidecar;
use crate::serve::{self, WithLimiter};

/// Runs `drip shape` until SIGINT or SIGTERM.
pub async fn run(args: Args) -> Result<()> {
    limits::bucket_id(&args.bucket).map_err(|e| anyhow!("--bucket: {e}"))?;
    args.policy().map_err(|e| anyhow!(e))?;
    let store = args.store.clone();
    serve::with_store(&store, Job(args)).await
}

struct Job(Args);

impl WithLimiter for Job {
    async fn run<S: Store>(self, limiter: Limiter<S>) -> Result<()> {
        let args = self.0;
        let policy = args.policy().map_err(|e| anyhow!(e))?;
        let burst = args.burst().map_err(|e| anyhow!(e))?;
        limiter
            .configure(&args.bucket, policy)
            .await
            .with_context(|| format!("configuring bucket {:?}", args.bucket))?;
        let listener = TcpListener::bind(&args.listen).await.with_context(|| {
            format!("binding the shaper listener (--listen) to {}", args.listen)
        })?;
        tracing::info!(
            "shape listening on {}, forwarding to {} at {} B/s per {:?} each way (burst {} B)",
            listener.local_addr()?,
            args.upstream,
            args.rate,
            args.per,
            burst
        );
        let metrics = Arc::new(Metrics::new());
        let sidecar = Sidecar::start(
            args.metrics.as_deref(),
            metrics.clone(),
            "shutting down: no new connections, draining open ones",
        )
        .await?;
        let shaper = Arc::new(server::Shaper {
            limiter,
            bucket: args.bucket.clone(),
            upstream: args.upstream.clone(),
            per: args.per,
            chunk: args.chunk().map_err(|e| anyhow!(e))?,
            metrics,
            instance: instance_id(),
            accepted: AtomicU64::new(0),
        });
        server::serve(shaper, listener, sidecar.stop.clone(), args.drain_timeout).await;
        sidecar.finish().await
    }
}

/// This process among the shapers sharing a store: host, pid and start time.
fn instance_id() -> String {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{host}-{}-{started}", std::process::id())
}
