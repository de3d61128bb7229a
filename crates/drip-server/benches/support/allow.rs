//! The allow request and the two routers that answer it, shared by the
//! `allow_path` benchmark and `tests/allocations.rs`: `drip serve`'s whole
//! router over a memory store whose bucket `x` admits everything, and the
//! axum hello-world of `scripts/bench-server.sh`.

use axum::Router;
use axum::body::Body;
use drip::{Limit, Limiter, Policy, Rate};
use drip_server::app::{App, Node};
use http::Request;
use tokio_util::sync::CancellationToken;

/// `POST /v1/buckets/x/allow` with a small JSON body, as wrk sends it.
pub fn request() -> Request<Body> {
    Request::post("/v1/buckets/x/allow")
        .header("content-type", "application/json")
        .header("host", "127.0.0.1")
        .body(Body::from(r#"{"key":"k"}"#))
        .unwrap()
}

/// The runtime both run on: one thread, as a single connection's requests
/// are served.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// drip's router and the hello-world's (inside a tokio runtime).
pub async fn routers() -> (Router, Router) {
    let limiter = Limiter::memory();
    let rate = Rate::per_second(1_000_000_000).unwrap();
    let policy = Policy::police(Limit::new(rate, u64::from(u32::MAX)).unwrap());
    limiter.configure("x", policy).await.unwrap();
    let node = Node {
        id: "bench".into(),
        http: "127.0.0.1:0".into(),
        grpc: "127.0.0.1:0".into(),
    };
    let app = App::new(limiter, None, node, CancellationToken::new(), None);
    let hello = Router::new().fallback(|| async { "Hello, World!" });
    (drip_server::http::router(app), hello)
}
