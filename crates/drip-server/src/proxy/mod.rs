//! `drip proxy`: an HTTP reverse proxy that polices (429) or queues (FIFO)
//! each client's requests through one drip bucket.
//!
//! - [`args`]: the flags and the policy they describe.
//! - [`client_ip`]: who the client is (`--trust-forwarded`); [`key`] and
//!   [`cost`]: what a request is limited under and what it costs.
//! - [`gate`]: the one decision per request, through `Limiter`, and the
//!   wait in shape mode (and the place a disconnected waiter gives back).
//! - [`upstream`]: the pooled client, streaming, 502/504.
//! - [`respond`]: the proxy's own JSON answers; [`server`]: the listener.

pub mod args;
pub mod client_ip;
pub mod cost;
pub mod gate;
pub mod key;
pub mod respond;
pub mod server;
pub mod upstream;

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use drip::{Limiter, Policy, Store};
use tokio::net::TcpListener;

pub use args::Args;

use crate::limits;
use crate::metrics::Metrics;
use crate::metrics_listener::Sidecar;
use crate::serve::{self, WithLimiter};

/// Runs `drip proxy` until SIGINT or SIGTERM.
pub async fn run(args: Args) -> Result<()> {
    limits::bucket_id(&args.bucket).map_err(|e| anyhow!("--bucket: {e}"))?;
    let policy = args.policy().map_err(|e| anyhow!(e))?;
    let store = args.store.clone();
    let max_keys = args.max_keys;
    serve::with_store_capped(&store, max_keys, Job { args, policy }).await
}

struct Job {
    args: Args,
    policy: Option<Policy>,
}

impl WithLimiter for Job {
    async fn run<S: Store>(self, limiter: Limiter<S>) -> Result<()> {
        let Job { args, policy } = self;
        let upstream = upstream::Upstream::new(
            &args.upstream,
            args.connect_timeout,
            args.upstream_timeout,
            args.preserve_host,
        )
        .map_err(|e| anyhow!(e))?;
        // The policy is known once, here: from the flags, or read from the
        // store; never per request.
        let policy = match policy {
            Some(p) => {
                limiter
                    .configure(&args.bucket, p.clone())
                    .await
                    .with_context(|| format!("configuring bucket {:?}", args.bucket))?;
                p
            }
            None => limiter
                .policy(&args.bucket)
                .await
                .with_context(|| format!("reading bucket {:?} from the store", args.bucket))?
                .ok_or_else(|| {
                    anyhow!(
                        "bucket {:?} is not configured in the store: configure it first, or pass --capacity and --leak-rate",
                        args.bucket
                    )
                })?,
        };
        let metrics = Arc::new(Metrics::new());
        let listener = TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("binding the proxy listener (--listen) to {}", args.listen))?;
        tracing::info!(
            "proxy listening on http://{}, forwarding to {} (bucket {:?}, {} mode)",
            listener.local_addr()?,
            args.upstream,
            args.bucket,
            policy.mode().as_str()
        );
        let sidecar = Sidecar::start(
            args.metrics.as_deref(),
            metrics.clone(),
            "shutting down: finishing the requests in flight",
        )
        .await?;
        // Idle keys free their place under --max-keys (and their memory).
        let sweeper = tokio::spawn(sweep(limiter.clone(), metrics.clone()));
        let proxy = server::Proxy {
            gate: gate::Gate::new(limiter, &args.bucket, &policy, args.queue_timeout, metrics),
            upstream,
            key: args.key,
            cost: args.cost,
            trusted: args.trust_forwarded,
        };
        let workers = args.workers.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            usize::from,
        );
        let served = server::serve(
            proxy,
            listener,
            workers,
            sidecar.stop.clone().cancelled_owned(),
        )
        .await;
        sweeper.abort();
        sidecar.finish().await?;
        served
    }
}

/// Forgets idle keys every 10 s (as `drip serve` does) and keeps the
/// keys-held gauge current.
async fn sweep<S: Store>(limiter: Limiter<S>, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if limiter.sweep_idle().await.is_err() {
            metrics.store_error("sweep");
        }
        if let Ok(Some(n)) = limiter.keys_held().await {
            metrics.keys_held(n);
        }
    }
}
