//! The baseline of `scripts/bench-server.sh`: an axum hello-world that
//! answers every request with a fixed text, on the same runtime settings as
//! `drip serve`.
//!
//! `cargo run --release -p drip-server --example hello -- 127.0.0.1:8090`

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let app = axum::Router::new().fallback(|| async { "Hello, World!" });
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("hello listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
