//! The proxy's HTTP server: every request is keyed, charged, passed through
//! the gate and forwarded; HTTP/1.1 and cleartext HTTP/2 on one listener.
//!
//! Connections are served by worker threads, each a single-threaded tokio
//! runtime with its own upstream pool (as nginx's worker processes): a
//! client connection, the upstream connection its requests take and the
//! tasks driving both stay on one thread, so a request is never handed
//! from thread to thread. One task accepts and deals the connections out
//! in turn. The limiter is shared by all workers.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use drip::Store;
use drip::tower::headers::RATELIMIT;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::args::{CostSpec, KeySpec};
use super::client_ip::client_ip;
use super::gate::Gate;
use super::upstream::Upstream;
use super::{cost, key};

/// Everything a request needs, shared by the requests of one worker.
pub struct Proxy<S: Store> {
    /// The decision.
    pub gate: Gate<S>,
    /// Where admitted requests go.
    pub upstream: Upstream,
    /// `--key`.
    pub key: KeySpec,
    /// `--cost`.
    pub cost: CostSpec,
    /// `--trust-forwarded`.
    pub trusted: usize,
}

impl<S: Store> Proxy<S> {
    /// The same proxy for another worker: the limiter shared, the upstream
    /// pool its own.
    fn for_worker(&self) -> Proxy<S> {
        Proxy {
            gate: self.gate.clone(),
            upstream: self.upstream.fresh(),
            key: self.key.clone(),
            cost: self.cost,
            trusted: self.trusted,
        }
    }
}

/// An accepted connection on its way to a worker.
type Accepted = (std::net::TcpStream, SocketAddr);

/// Serves `proxy` on `listener` with `workers` threads until `shutdown`
/// completes, then lets the requests in flight (queued ones included)
/// finish.
pub async fn serve<S: Store>(
    proxy: Proxy<S>,
    listener: TcpListener,
    workers: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let mut deal = Vec::new();
    let mut threads = Vec::new();
    for i in 0..workers.max(1) {
        let (tx, rx) = mpsc::unbounded_channel::<Accepted>();
        let worker = proxy.for_worker();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a proxy worker's runtime")?;
        let thread = std::thread::Builder::new()
            .name(format!("drip-proxy-{i}"))
            .spawn(move || runtime.block_on(work(Arc::new(worker), rx)))
            .context("starting a proxy worker thread")?;
        deal.push(tx);
        threads.push(thread);
    }
    drop(proxy);
    tokio::pin!(shutdown);
    let mut next = 0;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => break,
        };
        match accepted.and_then(|(tcp, peer)| Ok((tcp.into_std()?, peer))) {
            Ok(conn) => {
                // A worker only stops when its channel closes, below.
                let _ = deal[next].send(conn);
                next = (next + 1) % deal.len();
            }
            Err(e) => {
                // Out of file descriptors, or a connection reset while
                // queued: keep accepting, a little later.
                tracing::warn!("accepting a proxy connection: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    drop(deal);
    tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await
    .context("waiting for the proxy workers")
}

/// One worker: serves the connections dealt to it until the channel
/// closes, then waits for their requests in flight.
async fn work<S: Store>(proxy: Arc<Proxy<S>>, mut conns: mpsc::UnboundedReceiver<Accepted>) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    while let Some((tcp, peer)) = conns.recv().await {
        let Ok(tcp) = TcpStream::from_std(tcp) else {
            continue;
        };
        // Small responses must not wait on Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let proxy = proxy.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(handle(&proxy, peer, req.map(Body::new)).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    graceful.shutdown().await;
}

async fn handle<S: Store>(proxy: &Proxy<S>, peer: SocketAddr, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let client = client_ip(peer, &parts.headers, proxy.trusted);
    let key = match key::key(&proxy.key, client, &parts) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    let cost = match cost::cost(proxy.cost, &body) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let decision = match proxy.gate.pass(&key, cost).await {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    let mut resp = proxy
        .upstream
        .forward(Request::from_parts(parts, body), peer.ip())
        .await;
    if let Some(v) = proxy.gate.ratelimit(&decision) {
        resp.headers_mut().insert(RATELIMIT.clone(), v);
    }
    resp
}
