//! `drip`: the command-line front of the drip rate limiter.

use anyhow::Result;
use clap::Parser;
use drip_server::cli::{Cli, Command};
use drip_server::{demo, proxy, serve, shaper, simulate, status_cmd, stress};

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Demo(args) => demo::run(&args, &mut std::io::stdout().lock()),
        Command::Serve(args) => {
            init_tracing();
            runtime()?.block_on(serve::run(args))
        }
        Command::Proxy(args) => {
            init_tracing();
            runtime()?.block_on(proxy::run(args))
        }
        Command::Shape(args) => {
            init_tracing();
            runtime()?.block_on(shaper::run(args))
        }
        Command::Simulate(args) => simulate::run(
            &args,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        ),
        Command::Stress(args) => {
            // Not locked: with --verbose the workers print too.
            let report = runtime()?.block_on(stress::run(&args, &mut std::io::stdout()))?;
            if report.errors > 0 {
                anyhow::bail!(
                    "{} of {} requests failed (429s are not failures)",
                    report.errors,
                    report.requests
                );
            }
            Ok(())
        }
        Command::Status(args) => {
            runtime()?.block_on(status_cmd::run(&args, &mut std::io::stdout().lock()))
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Logs to stderr; `RUST_LOG` overrides the default level (info).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
