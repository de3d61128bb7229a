//! `drip simulate`: a bandwidth monitor on a simulated clock. Random packets
//! go through one leaky bucket whose decisions are the core's own `decide`;
//! one line per packet, the totals, and optionally a plot and a CSV file.
//!
//! - [`model`]: the packets and the decisions; [`plot`]: PNG/SVG; [`csv`]: rows.

pub mod csv;
pub mod model;
pub mod plot;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use drip::{Limit, Mode, Policy, Rate};

use model::{Arrivals, Run, Setup};

/// Options of `drip simulate`.
///
/// Example: `drip simulate --capacity 500 --rate 200 --packets 60 --seed 7 --plot fill.png`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Bucket capacity in bytes (the largest burst), 1..=4294967295.
    #[arg(long, default_value_t = 500)]
    pub capacity: u64,
    /// Leak rate in bytes per second, a positive decimal such as 200 or 12.5.
    #[arg(long, default_value_t = 200.0, allow_negative_numbers = true)]
    pub rate: f64,
    /// Packets to send, 1..=1000000.
    #[arg(long, default_value_t = 60)]
    pub packets: u64,
    /// Smallest packet in bytes, at least 1.
    #[arg(long, default_value_t = 10)]
    pub min_size: u64,
    /// Largest packet in bytes (inclusive), at least --min-size.
    #[arg(long, default_value_t = 100)]
    pub max_size: u64,
    /// Time between packets, e.g. 100ms, 1s, 250us (fixed arrivals).
    #[arg(long, default_value = "100ms", conflicts_with = "arrivals", value_parser = parse_interval)]
    pub interval: Duration,
    /// Random arrivals instead of --interval: `poisson:RATE`, RATE packets per
    /// second on average (exponential gaps), e.g. poisson:10.
    #[arg(long, value_parser = parse_arrivals)]
    pub arrivals: Option<f64>,
    /// police (deny what does not fit) or shape (queue what fits, deny when
    /// the queue is full).
    #[arg(long, default_value = "police", value_parser = parse_mode)]
    pub mode: Mode,
    /// Seed of the random generator: the same seed gives the same packets,
    /// lines and files. Without it a seed is picked and printed to stderr.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write a plot of the fill level against time: FILE.png or FILE.svg.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Write one row per packet (t_s, size_bytes, outcome, level_after_bytes,
    /// queue_after_packets) to FILE.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse().map_err(|e: drip::ConfigError| e.message)
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("--interval must be a duration such as 100ms or 1s: {e}"))?;
    if d.is_zero() || d > Duration::from_secs(86_400) {
        return Err("--interval must be in 1ns..=24h".into());
    }
    Ok(d)
}

fn parse_arrivals(s: &str) -> Result<f64, String> {
    let rate = s
        .strip_prefix("poisson:")
        .and_then(|r| r.parse::<f64>().ok())
        .ok_or_else(|| {
            format!("--arrivals must be poisson:RATE (packets per second), not {s:?}")
        })?;
    if !rate.is_finite() || !(1e-3..=1e9).contains(&rate) {
        return Err(
            "--arrivals poisson:RATE: RATE must be in 0.001..=1e9 packets per second".into(),
        );
    }
    Ok(rate)
}

impl Args {
    /// Checks the options and builds the simulation's setup.
    pub fn setup(&self, seed: u64) -> Result<Setup> {
        let limit = Limit::new(Rate::per_second_f64(self.rate)?, self.capacity)?;
        if !(1..=1_000_000).contains(&self.packets) {
            bail!("--packets must be in 1..=1000000");
        }
        if self.min_size == 0 || self.max_size < self.min_size {
            bail!("--min-size must be at least 1 and --max-size at least --min-size");
        }
        let arrivals = match self.arrivals {
            Some(rate) => Arrivals::Poisson(rate),
            None => Arrivals::Every(self.interval.as_nanos() as u64),
        };
        Ok(Setup {
            policy: Policy::new(self.mode, limit),
            packets: self.packets,
            min_size: self.min_size,
            max_size: self.max_size,
            arrivals,
            seed,
        })
    }
}

/// One packet's line, exactly as the user's monitor printed it.
pub fn line(size: u64, allowed: bool) -> String {
    if allowed {
        format!("Packet of {size} bytes allowed.")
    } else {
        format!("Packet of {size} bytes denied. Wait for bucket to drain.")
    }
}

/// Writes the packet lines and the totals.
pub fn print(run: &Run, out: &mut impl Write) -> Result<()> {
    for p in &run.packets {
        writeln!(out, "{}", line(p.size, p.allowed))?;
    }
    writeln!(out, "Total allowed data: {} bytes", run.allowed_bytes())?;
    writeln!(out, "Total denied data: {} bytes", run.denied_bytes())?;
    Ok(())
}

/// Runs `drip simulate`: lines to `out`, notes (seed, files) to `err`.
pub fn run(args: &Args, out: &mut impl Write, err: &mut impl Write) -> Result<()> {
    let seed = match args.seed {
        Some(s) => s,
        None => {
            let s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            writeln!(err, "seed {s} (pass --seed {s} to run this again)")?;
            s
        }
    };
    let setup = args.setup(seed)?;
    let run = model::simulate(&setup);
    print(&run, out)?;
    if let Some(path) = &args.csv {
        csv::write(path, &run)?;
        writeln!(err, "wrote {}", path.display())?;
    }
    if let Some(path) = &args.plot {
        let rate = setup.policy.limit().rate().per_second_decimal();
        let labels = plot::Labels {
            capacity: args.capacity,
            title: format!(
                "drip simulate: {} bucket, capacity {} bytes, leak {} bytes/s, {} packets, seed {}",
                args.mode.as_str(),
                args.capacity,
                rate,
                args.packets,
                seed
            ),
            shape: args.mode == Mode::Shape,
        };
        plot::write(path, &run, &labels)?;
        writeln!(err, "wrote {}", path.display())?;
    }
    Ok(())
}
