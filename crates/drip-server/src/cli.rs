//! The command line: `drip demo`, `drip serve`, `drip status`, `drip proxy`,
//! `drip shape`.

use clap::{Parser, Subcommand};

use crate::{demo, proxy, serve, shaper, status_cmd};

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
}
