//! `drip`: the command-line front of the drip rate limiter.
//!
//! Today it has one subcommand, `demo`, which runs a bucket in-process on a
//! simulated clock and prints every decision; `serve` and the traffic tools
//! come with their issues.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod demo;

/// drip: an exact leaky-bucket rate limiter.
#[derive(Parser, Debug)]
#[command(name = "drip", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send a burst of requests through one bucket on a simulated clock and
    /// print each decision (police: admitted or rejected with retry_after;
    /// shape: queue position and wait), then the bucket after some time.
    Demo(demo::Args),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Demo(args) => demo::run(&args, &mut std::io::stdout().lock()),
    }
}
