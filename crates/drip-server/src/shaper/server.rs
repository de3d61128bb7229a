//! The shaper's listener: each accepted connection is paired with a new
//! upstream connection and both directions are piped through the bucket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use drip::{Limiter, Store};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::args::Per;
use super::pipe::{Meter, pipe};
use crate::metrics::Metrics;

/// Longest wait for the upstream to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What every connection shares.
pub struct Shaper<S: Store> {
    /// The only way to the store.
    pub limiter: Limiter<S>,
    /// The bucket.
    pub bucket: String,
    /// HOST:PORT to connect to.
    pub upstream: String,
    /// What shares one rate.
    pub per: Per,
    /// Bytes read at a time.
    pub chunk: usize,
    /// Decisions are counted here.
    pub metrics: Arc<Metrics>,
    /// Makes this process's connection keys unique in a shared store.
    pub instance: String,
    /// Connections accepted so far.
    pub accepted: AtomicU64,
}

impl<S: Store> Shaper<S> {
    /// The keys of a connection from `peer`: (client to upstream, upstream
    /// to client). Each direction has its own rate.
    fn keys(&self, peer: SocketAddr) -> (String, String) {
        let base = match self.per {
            Per::Connection => {
                let n = self.accepted.fetch_add(1, Ordering::Relaxed);
                format!("conn:{}:{n}", self.instance)
            }
            Per::Client => format!("client:{}", peer.ip()),
            Per::Total => "total".to_owned(),
        };
        (format!("{base}/up"), format!("{base}/down"))
    }

    /// Shapes one client connection until both directions end or one fails.
    async fn connection(&self, client: TcpStream, peer: SocketAddr) {
        let upstream = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect(&self.upstream),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(%peer, "upstream {} unreachable: {e}", self.upstream);
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "upstream {} did not accept within {CONNECT_TIMEOUT:?}", self.upstream);
                return;
            }
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (key_up, key_down) = self.keys(peer);
        let meter = |key| Meter {
            limiter: &self.limiter,
            bucket: &self.bucket,
            key,
            metrics: &self.metrics,
        };
        let (client_read, client_write) = client.into_split();
        let (upstream_read, upstream_write) = upstream.into_split();
        let up = pipe(meter(key_up), self.chunk, client_read, upstream_write);
        let down = pipe(meter(key_down), self.chunk, upstream_read, client_write);
        // A failure in one direction ends both; a clean end (half-close) of
        // one lets the other go on.
        match tokio::try_join!(up, down) {
            Ok((sent, received)) => {
                tracing::debug!(%peer, sent, received, "connection closed")
            }
            Err(e) => tracing::debug!(%peer, "connection ended: {e}"),
        }
    }
}

/// Accepts connections until `stop`, then lets open ones go on for at most
/// `drain`.
pub async fn serve<S: Store>(
    shaper: Arc<Shaper<S>>,
    listener: TcpListener,
    stop: CancellationToken,
    drain: Duration,
) {
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let shaper = shaper.clone();
                    tracker.spawn(async move { shaper.connection(socket, peer).await });
                }
                Err(e) => {
                    // Out of file descriptors, most likely: back off briefly.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!(
            "closing {} connections still open after {drain:?}",
            tracker.len()
        );
    }
}
