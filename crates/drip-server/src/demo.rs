//! `drip demo`: one bucket, a burst, and what the bucket decided.

use std::io::Write;

use anyhow::Result;
use drip::{KeyedBucket, Limit, ManualClock, Mode, Policy, Rate};

/// Options of `drip demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// police (reject what does not fit) or shape (queue what fits).
    #[arg(long, default_value = "shape", value_parser = parse_mode)]
    mode: Mode,
    /// Units the bucket holds (its burst), 1..=4294967295.
    #[arg(long, default_value_t = 10)]
    capacity: u64,
    /// Leak rate in units per second, a positive decimal such as 10 or 0.5.
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    rate: f64,
    /// Requests sent at once.
    #[arg(long, default_value_t = 11)]
    burst: u64,
    /// Cost of each request in units.
    #[arg(long, default_value_t = 1)]
    cost: u64,
    /// Milliseconds after the burst at which to show the bucket again.
    #[arg(long, default_value_t = 1000)]
    after_ms: u64,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse().map_err(|e: drip::ConfigError| e.message)
}

/// Runs the demo, writing a table to `out`.
pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    let limit = Limit::new(Rate::per_second_f64(args.rate)?, args.capacity)?;
    let clock = ManualClock::new(0);
    let bucket =
        KeyedBucket::<String, _>::new(Policy::new(args.mode, limit), clock.clone()).with_counters();
    writeln!(
        out,
        "{} bucket: capacity {}, leaking {}/s; {} requests of cost {} at t=0",
        args.mode.as_str(),
        args.capacity,
        args.rate,
        args.burst,
        args.cost
    )?;
    writeln!(
        out,
        "{:>4}  {:<8}  {:>5}  {:>9}  {:>9}  {:>14}",
        "req", "outcome", "queue", "wait_ms", "remaining", "retry_after_ms"
    )?;
    for i in 1..=args.burst {
        let d = bucket.check("demo", args.cost)?;
        writeln!(
            out,
            "{:>4}  {:<8}  {:>5}  {:>9.1}  {:>9}  {:>14.1}",
            i,
            format!("{:?}", d.outcome).to_lowercase(),
            d.queue_position,
            d.wait as f64 / 1e6,
            d.remaining,
            d.retry_after as f64 / 1e6
        )?;
    }
    for at in [0, args.after_ms] {
        clock.set(at * 1_000_000);
        let s = bucket.status("demo");
        writeln!(
            out,
            "t={at} ms: level {:.2}, queue_size {}, allowed {}, rejected {}, processed {}",
            s.level.level,
            s.level.queue_size,
            s.counters.allowed,
            s.counters.rejected,
            s.processed()
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn demo(argv: &[&str]) -> Result<String> {
        let cli = Cli::try_parse_from(std::iter::once("demo").chain(argv.iter().copied()))?;
        let mut out = Vec::new();
        run(&cli.args, &mut out)?;
        Ok(String::from_utf8(out)?)
    }

    #[test]
    fn default_demo_is_the_design_check() {
        let out = demo(&[]).unwrap();
        assert!(out.contains("  10  allowed      10      900.0"), "{out}");
        assert!(out.contains("  11  limited      11        0.0"), "{out}");
        assert!(
            out.contains(
                "t=1000 ms: level 0.00, queue_size 0, allowed 10, rejected 1, processed 10"
            ),
            "{out}"
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        let e = demo(&["--capacity", "0"]).unwrap_err().to_string();
        assert!(
            e.contains("capacity must be an integer in 1..=4294967295"),
            "{e}"
        );
        let e = demo(&["--rate", "-1"]).unwrap_err().to_string();
        assert!(e.contains("leak_rate"), "{e}");
        assert!(demo(&["--mode", "queue"]).is_err());
    }
}
