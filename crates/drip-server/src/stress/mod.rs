//! `drip stress`: a load generator against `drip serve`, over HTTP/JSON or
//! gRPC. A progress bar while it runs; then a table (admitted, rejected,
//! errors by kind, throughput, latency percentiles and a histogram) or, with
//! `--json`, the same as one JSON object.
//!
//! - [`http`] and [`grpc`]: one request each way; [`outcome`]: what came back.
//! - [`report`]: counting, the table and the JSON.

pub mod grpc;
pub mod http;
pub mod outcome;
pub mod report;
pub mod rls;

use std::borrow::Cow;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use outcome::Outcome;
use report::{Report, Tally};

/// Options of `drip stress`.
///
/// Example: `drip stress --url http://127.0.0.1:8080 --bucket api --keys 100 --requests 10000 --concurrency 32`
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The server: its HTTP address, or with --grpc its gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The bucket to send to (it must exist: `PUT /v1/buckets/{bucket}`).
    #[arg(long)]
    pub bucket: String,
    /// The key of every request (default "").
    #[arg(long, conflicts_with = "keys")]
    pub key: Option<String>,
    /// Spread requests over N keys, `k0` .. `k{N-1}` in turn, 1..=1000000.
    #[arg(long)]
    pub keys: Option<u64>,
    /// Requests to send in all (default 1000 unless --duration is given).
    #[arg(long, short = 'n', conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Send for this long instead, e.g. 10s, 1m.
    #[arg(long, short = 'z', value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Requests in flight at once (one connection each), 1..=10000.
    #[arg(long, short = 'c', default_value_t = 10)]
    pub concurrency: u64,
    /// Send at this constant rate in all, requests per second (as wrk2 and
    /// oha): latencies count from each request's intended send time, so a
    /// slow server is not hidden (coordinated-omission correction).
    #[arg(long, short = 'q')]
    pub rate: Option<f64>,
    /// Each request's timeout, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Use gRPC (`drip.v1.RateLimiterService/AllowRequest`); --url is then
    /// the gRPC address, e.g. http://127.0.0.1:50051.
    #[arg(long)]
    pub grpc: bool,
    /// With --grpc: call Envoy's rate limit service
    /// (`ShouldRateLimit`) instead, in the domain named by --bucket, with one
    /// descriptor (--rls-key, KEY). Example: `drip stress --grpc --rls
    /// --url http://127.0.0.1:50051 --bucket bench --keys 100`.
    #[arg(long, requires = "grpc")]
    pub rls: bool,
    /// With --rls: the descriptor entry's key (its value is the request's key).
    #[arg(long, default_value = "key")]
    pub rls_key: String,
    /// Print the report as one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Print one numbered line per request (`13: 429 - {...}`), no progress bar.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("a duration such as 10s: {e}"))?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

/// When the run stops.
#[derive(Clone, Copy, Debug)]
enum Stop {
    After(u64),
    At(Instant),
}

/// What every worker shares.
struct Plan {
    bucket: String,
    key: Option<String>,
    keys: Option<u64>,
    stop: Stop,
    start: Instant,
    /// Nanoseconds between intended sends under --rate.
    gap_ns: Option<f64>,
    timeout: Duration,
    verbose: bool,
    next: AtomicU64,
    bar: ProgressBar,
}

impl Plan {
    /// The next request's number and, under --rate, when it should go;
    /// `None` when the run is over.
    fn take(&self) -> Option<(u64, Option<Instant>)> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let due = self
            .gap_ns
            .map(|g| self.start + Duration::from_nanos((i as f64 * g) as u64));
        let over = match self.stop {
            Stop::After(n) => i >= n,
            Stop::At(end) => due.unwrap_or_else(Instant::now) >= end,
        };
        (!over).then_some((i, due))
    }

    fn key(&self, i: u64) -> Cow<'_, str> {
        match (self.keys, &self.key) {
            (Some(n), _) => Cow::Owned(format!("k{}", i % n)),
            (None, Some(k)) => Cow::Borrowed(k),
            (None, None) => Cow::Borrowed(""),
        }
    }
}

/// One way of sending a request.
enum Client {
    Http(http::Conn),
    Grpc(grpc::Client),
    Rls(rls::Client, String),
}

impl Client {
    async fn allow(&mut self, bucket: &str, key: &str) -> Outcome {
        match self {
            Client::Http(c) => c.allow(key).await,
            Client::Grpc(c) => grpc::allow(c, bucket, key).await,
            Client::Rls(c, entry) => rls::should(c, bucket, entry, key).await,
        }
    }
}

async fn worker(plan: Arc<Plan>, mut client: Client) -> Tally {
    let mut tally = Tally::default();
    let mut out = std::io::stdout();
    while let Some((i, due)) = plan.take() {
        if let Some(due) = due {
            // On time, not up to tokio's millisecond late: the latency
            // counts from `due`, and the tool's own lateness is not the
            // server's.
            crate::precise::sleep_until(due.into_std()).await;
        }
        let sent = Instant::now();
        let key = plan.key(i);
        let outcome =
            match tokio::time::timeout(plan.timeout, client.allow(&plan.bucket, &key)).await {
                Ok(o) => o,
                Err(_) => Outcome::Error {
                    kind: "timeout".into(),
                    detail: format!("no answer within {:?}", plan.timeout),
                },
            };
        // Under --rate a late send counts from when it was due.
        let latency = due.unwrap_or(sent).elapsed();
        tally.record(&outcome, latency);
        if plan.verbose {
            let _ = writeln!(out, "{}", outcome.line(i + 1));
        }
        plan.bar.inc(1);
    }
    tally
}

/// Runs `drip stress` and returns its report (also written to `out`).
pub async fn run(args: &Args, out: &mut impl Write) -> Result<Report> {
    if !(1..=10_000).contains(&args.concurrency) {
        bail!("--concurrency must be in 1..=10000");
    }
    if args.keys.is_some_and(|n| !(1..=1_000_000).contains(&n)) {
        bail!("--keys must be in 1..=1000000");
    }
    if args.requests == Some(0) {
        bail!("--requests must be at least 1");
    }
    if let Some(r) = args.rate
        && (!r.is_finite() || !(0.001..=10_000_000.0).contains(&r))
    {
        bail!("--rate must be in 0.001..=10000000 requests per second");
    }
    let stop_n = args.requests.unwrap_or(1000);
    let total = match args.duration {
        Some(_) => None,
        None => Some(stop_n),
    };
    let bar = if args.verbose {
        ProgressBar::hidden()
    } else {
        // Drawn on stderr only when it is a terminal.
        let bar = match total {
            Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let style = match total {
            Some(_) => {
                "{spinner} [{elapsed_precise}] [{wide_bar}] {pos}/{len} ({per_sec}, eta {eta})"
            }
            None => "{spinner} [{elapsed_precise}] {pos} requests ({per_sec})",
        };
        if let Ok(s) = ProgressStyle::with_template(style) {
            bar.set_style(s);
        }
        bar
    };

    // Connect every worker before the clock starts.
    let mut clients = Vec::with_capacity(args.concurrency as usize);
    if args.rls {
        for _ in 0..args.concurrency {
            clients.push(Client::Rls(
                rls::connect(&args.url).await?,
                args.rls_key.clone(),
            ));
        }
    } else if args.grpc {
        for _ in 0..args.concurrency {
            clients.push(Client::Grpc(grpc::connect(&args.url).await?));
        }
    } else {
        let target = http::Target::new(&args.url, &args.bucket)?;
        tokio::net::TcpStream::connect(&target.authority)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", args.url))?;
        for _ in 0..args.concurrency {
            clients.push(Client::Http(http::Conn::new(target.clone())));
        }
    }

    let start = Instant::now();
    let plan = Arc::new(Plan {
        bucket: args.bucket.clone(),
        key: args.key.clone(),
        keys: args.keys,
        stop: match args.duration {
            Some(d) => Stop::At(start + d),
            None => Stop::After(stop_n),
        },
        start,
        gap_ns: args.rate.map(|r| 1e9 / r),
        timeout: args.timeout,
        verbose: args.verbose,
        next: AtomicU64::new(0),
        bar: bar.clone(),
    });
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(worker(plan.clone(), c)))
        .collect();
    let mut tally = Tally::default();
    for t in tasks {
        tally.merge(&t.await?);
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();

    let protocol = match (args.rls, args.grpc) {
        (true, _) => "rls",
        (false, true) => "grpc",
        (false, false) => "http",
    };
    let report = Report::new(protocol, &tally, elapsed, args.rate, args.concurrency);
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        report.write_table(out)?;
    }
    Ok(report)
}
