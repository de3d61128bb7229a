//! The command line: `drip demo`, `drip serve`, `drip status`, `drip proxy`,
//! `drip shape`, `drip simulate`, `drip stress`.

use clap::{Parser, Subcommand};

use crate::{demo, proxy, serve, shaper, simulate, status_cmd, stress};

/// drip: an exact leaky-bucket rate limiter.
#[derive(Parser, Debug)]
#[command(name = "drip", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Send a burst of requests through one bucket on a simulated clock and
    /// print each decision (police: admitted or rejected with retry_after;
    /// shape: queue position and wait), then the bucket after some time.
    Demo(demo::Args),
    /// Serve the rate limiter over HTTP/JSON and gRPC.
    Serve(serve::Args),
    /// Print a server's buckets and their levels.
    Status(status_cmd::Args),
    /// An HTTP reverse proxy that limits each client through a bucket:
    /// police (429) or shape (queue, FIFO per key).
    Proxy(proxy::Args),
    /// A TCP proxy that holds each connection, client or all traffic to a
    /// byte rate in each direction.
    Shape(shaper::Args),
    /// Send random packets through a byte-rate bucket on a simulated clock:
    /// one line per packet (allowed or denied), the totals, and optionally a
    /// plot of the fill level (PNG/SVG) and a CSV file.
    /// Example: drip simulate --capacity 500 --rate 200 --seed 7 --plot fill.png
    Simulate(simulate::Args),
    /// Load a running `drip serve` (HTTP/JSON or --grpc) and report
    /// admitted / rejected / errors, throughput and latency percentiles;
    /// exits non-zero when requests failed (429s are not failures).
    /// Example: drip stress --bucket api --requests 10000 --concurrency 32
    Stress(stress::Args),
}
