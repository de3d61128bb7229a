//! An axum app whose routes are rate limited per client IP by drip's tower
//! layer: `/` is policed (a burst of 5, then 2 per second; the rest get 429),
//! `/shaped` is shaped (up to 5 queued, released 2 per second), `/health`
//! is not limited.
//!
//! ```sh
//! PORT=3000 cargo run -p drip --features tower --example axum_layer
//! for i in $(seq 8); do curl -s -o /dev/null -w '%{http_code}\n' http://127.0.0.1:3000/; done
//! curl -i http://127.0.0.1:3000/    # see Retry-After, RateLimit-Policy, RateLimit
//! ```

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::routing::get;
use drip::tower::RateLimitLayer;
use drip::{Limit, Limiter, Policy, Rate};

/// The client's IP address, from the connection axum accepted.
fn client_ip(req: &Request<Body>) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| format!("PORT must be a port number in 0..=65535, not {p:?}"))?,
        Err(_) => 3000,
    };

    let limiter = Limiter::memory();
    let two_per_second = Limit::new(Rate::per_second(2)?, 5)?;
    limiter
        .configure("per-ip", Policy::police(two_per_second))
        .await?;
    limiter
        .configure("per-ip-shaped", Policy::shape(two_per_second))
        .await?;

    let app = Router::new()
        .route(
            "/",
            get(|| async { "hello\n" }).layer(RateLimitLayer::new(
                limiter.clone(),
                "per-ip",
                client_ip,
            )),
        )
        .route(
            "/shaped",
            get(|| async { "hello, in your turn\n" }).layer(RateLimitLayer::new(
                limiter,
                "per-ip-shaped",
                client_ip,
            )),
        )
        .route("/health", get(|| async { "ok\n" }));

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    println!(
        "  policed: for i in $(seq 8); do curl -s -o /dev/null -w '%{{http_code}}\\n' http://{addr}/; done"
    );
    println!("  headers: curl -i http://{addr}/");
    println!(
        "  shaped:  for i in $(seq 6); do curl -s -w ' %{{time_total}}s\\n' http://{addr}/shaped & done; wait"
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
