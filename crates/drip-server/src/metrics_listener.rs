//! A `/metrics` listener for the traffic tools (`drip proxy --metrics`,
//! `drip shape --metrics`): the same Prometheus text as `drip serve`'s.

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Binds `addr` and logs its line; serve it with [`serve`].
pub async fn bind(addr: &str) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener (--metrics) to {addr}"))?;
    tracing::info!(
        "metrics listening on http://{}/metrics",
        listener.local_addr()?
    );
    Ok(listener)
}

/// How often [`upkeep`] folds the recorded latencies into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds recorded samples into the histograms every few seconds until
/// `stop`: the recorder keeps every latency sample until a render, so
/// without a scrape (no `--metrics`, or a slow scraper) they would pile up.
pub async fn upkeep(metrics: Arc<Metrics>, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                metrics.upkeep();
            }
        }
    }
}

/// Serves `GET /metrics` from `metrics` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving metrics")
}
