//! A small gRPC load client for `scripts/bench-server.sh`: `--concurrency`
//! tasks over `--connections` channels call `AllowRequest` back to back for
//! `--seconds`, then it prints requests per second and latency percentiles.
//!
//! `cargo run --release -p drip-server --example grpc_load -- --addr http://127.0.0.1:50051 --bucket x`

use std::time::{Duration, Instant};

use clap::Parser;
use drip_server::grpc::pb;
use drip_server::grpc::pb::rate_limiter_service_client::RateLimiterServiceClient;
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    /// The server's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// The bucket to call (must exist).
    #[arg(long, default_value = "x")]
    bucket: String,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight at once, spread over the connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        channels.push(Channel::from_shared(args.addr.clone())?.connect().await?);
    }
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for i in 0..args.concurrency {
        let mut client = RateLimiterServiceClient::new(channels[i % channels.len()].clone());
        let bucket = args.bucket.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                let r = client
                    .allow_request(pb::AllowRequestRequest {
                        bucket_id: bucket.clone(),
                        key: "k".into(),
                        cost: None,
                        request_id: None,
                    })
                    .await;
                latencies.push(t.elapsed());
                if r.is_err() {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let start = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "requests {}  errors {}  req/s {:.0}  p50 {:.3} ms  p99 {:.3} ms",
        all.len(),
        errors,
        all.len() as f64 / elapsed,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    Ok(())
}
