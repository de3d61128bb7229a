//! The baseline of `scripts/bench-server.sh`: an axum hello-world that
//! answers every request with a fixed text, on the same runtime settings as
//! `drip serve`. With a delay (`2ms`), each answer waits that long first: a
//! server of known latency, for checking what load generators measure
//! (`scripts/bench-stress.sh`).
//!
//! `cargo run --release -p drip-server --example hello -- 127.0.0.1:8090 [DELAY]`

use std::time::Duration;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let delay = match args.next() {
        Some(d) => humantime::parse_duration(&d).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("DELAY, a duration such as 2ms: {e}"),
            )
        })?,
        None => Duration::ZERO,
    };
    let app = axum::Router::new().fallback(move || async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        "Hello, World!"
    });
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("hello listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
