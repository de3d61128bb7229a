//! The proxy's HTTP server: every request is keyed, charged, passed through
//! the gate and forwarded; HTTP/1.1 and cleartext HTTP/2 on one listener.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use drip::Store;
use drip::tower::headers::RATELIMIT;
use http::Request;
use tokio::net::TcpListener;

use super::args::{CostSpec, KeySpec};
use super::client_ip::client_ip;
use super::gate::Gate;
use super::upstream::Upstream;
use super::{cost, key};

/// Everything a request needs, shared by all of them.
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

/// Serves `proxy` on `listener` until `shutdown` completes, then lets the
/// requests in flight (queued ones included) finish.
pub async fn serve<S: Store>(
    proxy: Proxy<S>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = Router::new()
        .fallback(handle::<S>)
        .with_state(Arc::new(proxy));
    // Small responses must not wait on Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("serving the proxy")
}

async fn handle<S: Store>(
    State(proxy): State<Arc<Proxy<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
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
