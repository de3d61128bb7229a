//! The flags of `drip proxy` and the policy they describe.

use std::str::FromStr;
use std::time::Duration;

use drip::{Mode, Policy};

use crate::serve::StoreSpec;

/// Options of `drip proxy`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
Examples:
  # 5 requests/s per client IP with bursts of 10; refused requests get 429:
  drip proxy --listen 0.0.0.0:8080 --upstream http://127.0.0.1:9000 --capacity 10 --leak-rate 5

  # Queue each API key's requests and let them go at 2/s, waiting at most 3 s:
  drip proxy --listen 0.0.0.0:8080 --upstream http://app:9000 --capacity 20 --leak-rate 2 \\
      --mode shape --key header:X-Api-Key --queue-timeout 3s

  # Two proxies sharing one limit through Redis, behind one load balancer:
  drip proxy --upstream http://app:9000 --capacity 100 --leak-rate 50 \\
      --store redis://10.0.0.5:6379 --trust-forwarded 1")]
pub struct Args {
    /// Address to accept HTTP/1.1 and HTTP/2 (cleartext) clients on, e.g.
    /// 0.0.0.0:8080.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The service to forward admitted requests to: an http:// URL, with an
    /// optional base path, e.g. http://127.0.0.1:9000 or http://app:9000/api.
    #[arg(long)]
    pub upstream: String,
    /// Name of the bucket in the store. Without --capacity it must already be
    /// configured there (e.g. by `drip serve`'s PUT); its policy is read once,
    /// at start.
    #[arg(long, default_value = "proxy")]
    pub bucket: String,
    /// Requests (or bytes, with --cost bytes) the bucket holds: the burst. With
    /// --leak-rate, the proxy configures the bucket (existing keys keep their
    /// water). Example: --capacity 10.
    #[arg(long, requires = "leak_rate", value_parser = clap::value_parser!(u64).range(1..=4_294_967_295))]
    pub capacity: Option<u64>,
    /// Units per second the bucket leaks (admits on average), a positive
    /// decimal in 1e-9..=1e15. Example: --leak-rate 5 or --leak-rate 0.5.
    #[arg(long, requires = "capacity")]
    pub leak_rate: Option<f64>,
    /// police: refuse what does not fit now with 429; shape: queue each
    /// request until its turn (FIFO per key), 429 only when its turn is
    /// beyond --queue-timeout.
    #[arg(long, value_enum, default_value_t = ModeArg::Police, requires = "capacity")]
    pub mode: ModeArg,
    /// An exact rolling limit ANDed with the bucket, LIMIT/PERIOD; repeat for
    /// several. Example: --window 1000/1h --window 20/10s.
    #[arg(long = "window", value_name = "LIMIT/PERIOD", requires = "capacity")]
    pub windows: Vec<WindowArg>,
    /// What identifies a client: ip (the client address, see
    /// --trust-forwarded), header:NAME (a request header's value; requests
    /// without it share the empty key), path (the request path) or const
    /// (everyone shares one bucket).
    #[arg(long, default_value = "ip")]
    pub key: KeySpec,
    /// What a request costs: 1, or bytes (its Content-Length; a request with
    /// a body of unknown length is refused with 411).
    #[arg(long, default_value = "1")]
    pub cost: CostSpec,
    /// Where bucket state lives: memory (this process), sqlite:PATH (the
    /// processes of one host) or redis://HOST:PORT (every node).
    #[arg(long, default_value = "memory")]
    pub store: StoreSpec,
    /// Memory store: the most client keys held, 1..=1000000000; a new key
    /// beyond it is answered 503 `key_limit` while held keys keep deciding
    /// (idle keys free their place when swept; ~160 bytes a key).
    /// Example: --max-keys 200000
    #[arg(long, env = "DRIP_MAX_KEYS", value_name = "N",
          default_value_t = crate::key_cap::DEFAULT_MAX_KEYS,
          value_parser = crate::key_cap::parse_flag)]
    pub max_keys: usize,
    /// Number of proxies in front of this one that append to
    /// X-Forwarded-For (or Forwarded): the client is the N-th address from
    /// the right. 0 (default): the headers are ignored and the client is the
    /// peer address, so a client cannot pick its own key.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub trust_forwarded: usize,
    /// Shape mode: longest a request may wait for its turn; one whose turn is
    /// later is refused with 429 at once. Example: --queue-timeout 500ms.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub queue_timeout: Duration,
    /// Longest to wait for the upstream's response head before answering
    /// 504. Example: --upstream-timeout 10s.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub upstream_timeout: Duration,
    /// Longest to wait for a connection to the upstream before answering
    /// 502. Example: --connect-timeout 2s.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// Forward the client's Host header instead of the upstream's authority.
    #[arg(long)]
    pub preserve_host: bool,
    /// Also serve Prometheus metrics at http://ADDR/metrics, e.g.
    /// 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Threads serving connections, 1..=1024, each with its own upstream
    /// connections (a connection stays on one thread, as in nginx's
    /// workers); default: one per core. Example: --workers 4.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
}

/// `--mode`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    /// Refuse with 429 what does not fit now.
    Police,
    /// Queue each request until its turn.
    Shape,
}

/// `--window LIMIT/PERIOD`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowArg {
    /// At most this many units...
    pub limit: u64,
    /// ...in any window of this length.
    pub period: Duration,
}

impl FromStr for WindowArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let rule = "--window must be LIMIT/PERIOD: a whole number, a slash and a duration, e.g. 1000/1h or 20/10s";
        let (limit, period) = s.split_once('/').ok_or_else(|| rule.to_owned())?;
        let limit = limit.trim().parse().map_err(|_| rule.to_owned())?;
        let period = duration(period.trim()).map_err(|_| rule.to_owned())?;
        Ok(WindowArg { limit, period })
    }
}

/// `--key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySpec {
    /// The client's address.
    Ip,
    /// A request header's value.
    Header(http::HeaderName),
    /// The request path.
    Path,
    /// One key for everyone.
    Const,
}

impl FromStr for KeySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ip" => Ok(KeySpec::Ip),
            "path" => Ok(KeySpec::Path),
            "const" => Ok(KeySpec::Const),
            _ => match s.strip_prefix("header:") {
                Some(name) => http::HeaderName::from_str(name)
                    .map(KeySpec::Header)
                    .map_err(|_| format!("--key header:{name}: {name:?} is not a header name")),
                None => Err(format!(
                    "--key must be ip, header:NAME, path or const (got {s:?})"
                )),
            },
        }
    }
}

/// `--cost`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CostSpec {
    /// Every request costs 1.
    One,
    /// A request costs its body's length in bytes.
    Bytes,
}

impl FromStr for CostSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1" => Ok(CostSpec::One),
            "bytes" => Ok(CostSpec::Bytes),
            _ => Err(format!("--cost must be 1 or bytes (got {s:?})")),
        }
    }
}

/// A duration such as `500ms`, `2s`, `1h 30m`.
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}): use e.g. 500ms, 2s, 1m, 1h"))
}

impl Args {
    /// The policy the flags describe, or `None` when the bucket is read from
    /// the store. Errors name the flag and its accepted range.
    pub fn policy(&self) -> Result<Option<Policy>, String> {
        let (Some(capacity), Some(leak_rate)) = (self.capacity, self.leak_rate) else {
            return Ok(None);
        };
        let mode = match self.mode {
            ModeArg::Police => Mode::Police,
            ModeArg::Shape => Mode::Shape,
        };
        let windows: Vec<(u64, f64)> = self
            .windows
            .iter()
            .map(|w| (w.limit, w.period.as_secs_f64()))
            .collect();
        // Shape mode lists its waiters, so one whose client leaves can give
        // its place back (`Limiter::cancel`).
        Policy::from_parts(mode, capacity, leak_rate, &windows)
            .map(|p| Some(p.with_track_queue(mode == Mode::Shape)))
            .map_err(|e| {
                let flag = match e.field.as_str() {
                    "leak_rate" => "--leak-rate",
                    "capacity" => "--capacity",
                    _ => "--window",
                };
                format!("{flag}: {}", e.message)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_costs_windows() {
        assert_eq!("ip".parse::<KeySpec>().unwrap(), KeySpec::Ip);
        assert_eq!(
            "header:X-Api-Key".parse::<KeySpec>().unwrap(),
            KeySpec::Header(http::HeaderName::from_static("x-api-key"))
        );
        assert!("host".parse::<KeySpec>().unwrap_err().contains("--key"));
        assert!("header:a b".parse::<KeySpec>().is_err());
        assert_eq!("bytes".parse::<CostSpec>().unwrap(), CostSpec::Bytes);
        assert!("2".parse::<CostSpec>().unwrap_err().contains("--cost"));
        let w: WindowArg = "1000/1h".parse().unwrap();
        assert_eq!(w.limit, 1000);
        assert_eq!(w.period, Duration::from_secs(3600));
        assert!(
            "1000"
                .parse::<WindowArg>()
                .unwrap_err()
                .contains("--window")
        );
        assert!("x/1s".parse::<WindowArg>().is_err());
    }
}
