//! The smallest reverse proxy on the stack `drip proxy` is built on (hyper's
//! server, hyper-util's pooled keep-alive client, tokio's multi-thread
//! runtime), with no limit, no headers rewritten and no metrics: the
//! ceiling of that stack as a proxy on this machine, measured beside
//! `drip proxy` and nginx by `scripts/bench-proxy.sh`.
//!
//! `cargo run --release -p drip-server --example bare_proxy -- 127.0.0.1:8091 127.0.0.1:8090`

use std::convert::Infallible;

use http::Uri;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8091".to_owned());
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("bare proxy listening on http://{}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (client, upstream) = (client.clone(), upstream.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                let client = client.clone();
                let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                let uri = format!("http://{upstream}{path}").parse::<Uri>();
                async move {
                    *req.uri_mut() = uri.expect("a valid path stays valid");
                    let resp = match client.request(req).await {
                        Ok(r) => r.map(axum::body::Body::new),
                        Err(_) => http::Response::builder()
                            .status(502)
                            .body(axum::body::Body::empty())
                            .expect("a valid response"),
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
