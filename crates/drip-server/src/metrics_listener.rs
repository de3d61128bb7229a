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

/// What each traffic tool runs beside its own listener: a stop token that
/// SIGINT/SIGTERM cancel, and the `--metrics` listener when one is asked
/// for.
pub struct Sidecar {
    /// Cancelled by a signal (or by [`Sidecar::finish`]).
    pub stop: tokio_util::sync::CancellationToken,
    metrics_task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Sidecar {
    /// Binds `--metrics` (if given) and installs the signal handlers
    /// (logging `on_signal` when one comes).
    pub async fn start(
        metrics_addr: Option<&str>,
        metrics: Arc<Metrics>,
        on_signal: &'static str,
    ) -> Result<Sidecar> {
        let listener = match metrics_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn({
            let (stop, signal) = (stop.clone(), crate::serve::signal());
            async move {
                signal.await;
                tracing::info!("{on_signal}");
                stop.cancel();
            }
        });
        let metrics_task =
            listener.map(|l| tokio::spawn(serve(l, metrics, stop.clone().cancelled_owned())));
        Ok(Sidecar { stop, metrics_task })
    }

    /// Stops everything and waits for the metrics listener to close.
    pub async fn finish(self) -> Result<()> {
        self.stop.cancel();
        if let Some(t) = self.metrics_task {
            t.await.context("the metrics listener panicked")??;
        }
        Ok(())
    }
}
