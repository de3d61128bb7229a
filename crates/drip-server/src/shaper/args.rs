//! The flags of `drip shape` and the policy they describe.

use std::time::Duration;

use drip::{Limit, Policy, Rate};

use super::units;
use crate::proxy::args::duration;
use crate::serve::StoreSpec;

/// Largest burst: the bucket's capacity is at most 2^32-1 units (bytes).
const MAX_BURST: u64 = drip::core::MAX_CAPACITY;
/// Largest read: each read is one decision, so larger reads mean fewer
/// store calls at high rates; a read is at most a quarter of the burst.
pub const MAX_CHUNK: u64 = 256 * 1024;

/// Options of `drip shape`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
Examples:
  # Each connection to a database at 1 MiB/s each way, bursts of 256 KiB:
  drip shape --listen 127.0.0.1:15432 --upstream 127.0.0.1:5432 --rate 1MiB/s --burst 256KiB

  # Each client IP at 10 MB/s however many connections it opens:
  drip shape --listen 0.0.0.0:8443 --upstream backend:443 --rate 10MB/s --per client

  # All traffic through two shapers on two hosts at 100 MiB/s together:
  drip shape --listen 0.0.0.0:9000 --upstream app:9000 --rate 100MiB/s --per total --store redis://10.0.0.5:6379")]
pub struct Args {
    /// Address to accept TCP connections on, e.g. 127.0.0.1:9000.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: String,
    /// Where to forward each connection: HOST:PORT, e.g. 127.0.0.1:5432.
    #[arg(long)]
    pub upstream: String,
    /// Bytes per second in each direction: a number, a unit (B K KB KiB M
    /// MB MiB G GB GiB; K M G are binary) and /s. Example: --rate 1MiB/s.
    #[arg(long, value_parser = |s: &str| units::rate("--rate", s))]
    pub rate: u64,
    /// Bytes that may go at once after a quiet spell, and the most the
    /// shaper holds per direction of a connection (a number and a unit, e.g.
    /// 64KiB; at most 4294967295 bytes). The shaper reads a quarter of it
    /// at a time (at most 256 KiB), so the rest absorbs late timers and
    /// scheduling. Default: 50 ms of --rate, at least 64 KiB.
    #[arg(long, value_parser = |s: &str| units::size("--burst", s))]
    pub burst: Option<u64>,
    /// What shares one rate: connection (each connection on its own),
    /// client (all connections of one client IP together) or total (all
    /// traffic together).
    #[arg(long, value_enum, default_value_t = Per::Connection)]
    pub per: Per,
    /// Where bucket state lives: memory (this process), sqlite:PATH (the
    /// processes of one host) or redis://HOST:PORT (every node), so
    /// --per client and --per total hold across shapers.
    #[arg(long, default_value = "memory")]
    pub store: StoreSpec,
    /// Name of the bucket in the store (configured from --rate and --burst).
    #[arg(long, default_value = "shape")]
    pub bucket: String,
    /// On SIGINT/SIGTERM, how long open connections may go on before they
    /// are closed. Example: --drain-timeout 30s.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub drain_timeout: Duration,
    /// Also serve Prometheus metrics at http://ADDR/metrics, e.g.
    /// 127.0.0.1:9091.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

/// `--per`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Per {
    /// Each connection has its own rate.
    Connection,
    /// A client IP's connections share one rate.
    Client,
    /// All traffic shares one rate.
    Total,
}

impl Args {
    /// The burst in bytes: `--burst`, or 50 ms of the rate (at least 64 KiB).
    pub fn burst(&self) -> Result<u64, String> {
        let burst = self
            .burst
            .unwrap_or((self.rate / 20).clamp(64 * 1024, MAX_BURST));
        if burst > MAX_BURST {
            return Err(format!(
                "--burst must be at most {MAX_BURST} bytes (4GiB - 1), got {burst}"
            ));
        }
        Ok(burst)
    }

    /// The bucket: --rate bytes per second, holding --burst bytes. Police:
    /// a chunk may go once the bucket has room for it (token bucket), and
    /// a reservation waits for that moment.
    pub fn policy(&self) -> Result<Policy, String> {
        let rate = Rate::per_second(self.rate).map_err(|e| format!("--rate: {}", e.message))?;
        let limit =
            Limit::new(rate, self.burst()?).map_err(|e| format!("--burst: {}", e.message))?;
        Ok(Policy::police(limit))
    }

    /// Bytes read at a time: a quarter of the burst, at most 256 KiB. A
    /// chunk may go once the bucket has room for it, so what the burst holds
    /// beyond one chunk is the slack that lets a late wake-up catch up
    /// instead of losing its time (with a chunk as large as the burst, the
    /// bucket would have to be empty before every chunk).
    pub fn chunk(&self) -> Result<usize, String> {
        Ok((self.burst()? / 4).clamp(1, MAX_CHUNK) as usize)
    }
}
