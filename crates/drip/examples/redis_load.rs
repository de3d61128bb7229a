//! Load on the Redis store: N tasks share one [`RedisStore`] (one multiplexed
//! connection, so redis-rs pipelines their calls) and each loops
//! `decide(bucket, key, Request::check(1))` for a fixed time over a small set
//! of keys. Prints decisions/s and latency percentiles per concurrency.
//!
//! By default the bucket has a huge rate (1,000,000/s, capacity 1,000,000),
//! so nearly every call is admitted and writes its key, as in
//! `scripts/bench-redis.sh`'s peers (`redis-benchmark` running drip's script
//! by `EVALSHA`, and redis-cell's `CL.THROTTLE`). `--rate 30/60 --capacity 16`
//! is redis-cell's README example (`CL.THROTTLE key 15 30 60 1`: 30 per 60 s,
//! a burst of 16), under which nearly every call is rejected.
//!
//! ```sh
//! cargo run --release -p drip --features redis --example redis_load -- \
//!     redis://127.0.0.1:6379/ --concurrency 1,16,64 --seconds 5 --keys 1000
//! # only create the bucket and print the decide script's policy arguments:
//! cargo run --release -p drip --features redis --example redis_load -- \
//!     redis://127.0.0.1:6379/ --configure-only
//! ```
//!
//! `--in-flight` and `--max-batch` set [`RedisOptions`]' batching: script
//! calls under way per bucket, and requests decided per call.
//!
//! `--deny-cache N` sizes [`RedisOptions::deny_cache`] (the exact local
//! deny cache; 0 turns it off): with `--keys 1` and a low rate (one hot
//! key, nearly every call refused) it shows the node's rate with the cache
//! beside its per-call Redis rate (`--deny-cache 0`).
//!
//! `--threads 1` (the default) runs the tasks on tokio's current-thread
//! runtime, like `redis-benchmark`'s single thread; `--threads 2` on a
//! multi-thread runtime with two workers.
//!
//! Keys are `000000000000` … `000000000999` (twelve digits, the form of
//! `redis-benchmark -r 1000`'s `__rand_int__`), picked at random per call.
//! The bucket is configured only if it is missing or different, so its
//! version (which `EVALSHA` callers pass) stays the same across runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drip::store::{RedisOptions, RedisStore};
use drip::{Limit, Outcome, Policy, Rate, Request, Store};

struct Args {
    url: String,
    bucket: String,
    concurrency: Vec<usize>,
    seconds: f64,
    warmup: f64,
    keys: usize,
    /// Amount per period (seconds).
    rate: (u64, u64),
    capacity: u64,
    /// Runtime threads: 1 is tokio's current-thread runtime.
    threads: usize,
    /// Script calls under way per bucket, and requests per call (RedisOptions).
    in_flight: usize,
    max_batch: usize,
    /// RedisOptions::spin, in microseconds.
    spin_us: u64,
    /// RedisOptions::deny_cache.
    deny_cache: usize,
    configure_only: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: redis_load URL [--bucket NAME] [--concurrency 1,16,64] [--seconds 5] \
         [--warmup 0.5] [--keys 1000] [--rate AMOUNT/SECONDS] [--capacity N] \
         [--threads 1] [--in-flight 2] [--max-batch 64] [--spin-us 0] [--deny-cache 65536] \
         [--configure-only]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        url: String::new(),
        bucket: "bench".to_owned(),
        concurrency: vec![1, 16, 64],
        seconds: 5.0,
        warmup: 0.5,
        keys: 1000,
        rate: (1_000_000, 1),
        capacity: 1_000_000,
        threads: 1,
        in_flight: RedisOptions::default().in_flight,
        max_batch: RedisOptions::default().max_batch,
        spin_us: 0,
        deny_cache: 65_536,
        configure_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--bucket" => args.bucket = value(),
            "--concurrency" => {
                args.concurrency = value()
                    .split(',')
                    .map(|s| s.trim().parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--seconds" => args.seconds = value().parse().unwrap_or_else(|_| usage()),
            "--warmup" => args.warmup = value().parse().unwrap_or_else(|_| usage()),
            "--keys" => args.keys = value().parse().unwrap_or_else(|_| usage()),
            "--rate" => {
                let v = value();
                let (amount, secs) = v.split_once('/').unwrap_or_else(|| usage());
                args.rate = (
                    amount.parse().unwrap_or_else(|_| usage()),
                    secs.parse().unwrap_or_else(|_| usage()),
                );
            }
            "--capacity" => args.capacity = value().parse().unwrap_or_else(|_| usage()),
            "--threads" => args.threads = value().parse().unwrap_or_else(|_| usage()),
            "--in-flight" => args.in_flight = value().parse().unwrap_or_else(|_| usage()),
            "--max-batch" => args.max_batch = value().parse().unwrap_or_else(|_| usage()),
            "--spin-us" => args.spin_us = value().parse().unwrap_or_else(|_| usage()),
            "--deny-cache" => args.deny_cache = value().parse().unwrap_or_else(|_| usage()),
            "--configure-only" => args.configure_only = true,
            "-h" | "--help" => usage(),
            _ if a.starts_with("--") || !args.url.is_empty() => usage(),
            _ => args.url = a,
        }
    }
    if args.url.is_empty() || args.keys == 0 || args.threads == 0 || args.concurrency.contains(&0) {
        usage();
    }
    args
}

/// What one task saw.
#[derive(Default)]
struct Tally {
    admitted: u64,
    limited: u64,
    errors: u64,
    /// Latency of each successful call, in nanoseconds.
    latencies: Vec<u64>,
}

/// A small xorshift generator: cheap per call, different per task.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `tasks` tasks calling `decide` on `store` until `duration` has passed.
async fn run(
    store: &Arc<RedisStore>,
    bucket: &Arc<str>,
    keys: &Arc<Vec<String>>,
    tasks: usize,
    duration: Duration,
) -> (Duration, Tally) {
    let start = Instant::now();
    let deadline = start + duration;
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (store, bucket, keys) = (store.clone(), bucket.clone(), keys.clone());
            tokio::spawn(async move {
                let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1).wrapping_mul(7919));
                let mut tally = Tally {
                    latencies: Vec::with_capacity(1 << 16),
                    ..Tally::default()
                };
                let mut now = Instant::now();
                while now < deadline {
                    let key = &keys[(rng.next() % keys.len() as u64) as usize];
                    let result = store.decide(&bucket, key, Request::check(1)).await;
                    let end = Instant::now();
                    match result {
                        Ok(d) => {
                            if d.outcome == Outcome::Allowed {
                                tally.admitted += 1;
                            } else {
                                tally.limited += 1;
                            }
                            tally.latencies.push((end - now).as_nanos() as u64);
                        }
                        Err(e) => {
                            if tally.errors == 0 {
                                eprintln!("task {t}: {e}");
                            }
                            tally.errors += 1;
                        }
                    }
                    now = end;
                }
                tally
            })
        })
        .collect();
    let mut all = Tally::default();
    for h in handles {
        let t = h.await.expect("load task panicked");
        all.admitted += t.admitted;
        all.limited += t.limited;
        all.errors += t.errors;
        all.latencies.extend(t.latencies);
    }
    (start.elapsed(), all)
}

/// The `q`-quantile of sorted `v` (nearest rank), in microseconds.
fn quantile_us(v: &[u64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1] as f64 / 1000.0
}

fn main() {
    let args = parse_args();
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    runtime.block_on(load(args));
}

async fn load(args: Args) {
    let options = RedisOptions {
        in_flight: args.in_flight,
        max_batch: args.max_batch,
        spin: Duration::from_micros(args.spin_us),
        deny_cache: args.deny_cache,
        ..RedisOptions::default()
    };
    let store = RedisStore::connect(&args.url, options)
        .await
        .unwrap_or_else(|e| {
            eprintln!("cannot connect to {}: {e}", args.url);
            std::process::exit(1)
        });
    let rate = Rate::new(args.rate.0, Duration::from_secs(args.rate.1)).unwrap_or_else(|e| {
        eprintln!("--rate: {e}");
        std::process::exit(2)
    });
    let limit = Limit::new(rate, args.capacity).unwrap_or_else(|e| {
        eprintln!("--capacity: {e}");
        std::process::exit(2)
    });
    let policy = Policy::police(limit);
    if store.policy(&args.bucket).await.expect("read policy") != Some(policy.clone()) {
        store
            .configure(&args.bucket, policy.clone(), true)
            .await
            .expect("configure bucket");
    }
    let rate = policy.limit().rate();
    // The decide script's policy arguments (ARGV[6..]), for EVALSHA callers.
    println!(
        "policy-args: {} {} {} {} {}",
        policy.mode().as_str(),
        rate.amount(),
        rate.period_ns(),
        policy.limit().capacity(),
        policy.windows().len()
    );
    if args.configure_only {
        return;
    }

    let store = Arc::new(store);
    let bucket: Arc<str> = args.bucket.as_str().into();
    let keys: Arc<Vec<String>> = Arc::new((0..args.keys).map(|i| format!("{i:012}")).collect());
    for &c in &args.concurrency {
        if args.warmup > 0.0 {
            run(
                &store,
                &bucket,
                &keys,
                c,
                Duration::from_secs_f64(args.warmup),
            )
            .await;
        }
        let (elapsed, mut tally) = run(
            &store,
            &bucket,
            &keys,
            c,
            Duration::from_secs_f64(args.seconds),
        )
        .await;
        tally.latencies.sort_unstable();
        let decided = tally.admitted + tally.limited;
        println!(
            "drip concurrency={c} threads={} seconds={:.2} decisions={decided} \
             decisions_per_s={:.0} admitted={} limited={} errors={} p50_us={:.1} p99_us={:.1} \
             max_us={:.1} deny_cache_hits={}",
            args.threads,
            elapsed.as_secs_f64(),
            decided as f64 / elapsed.as_secs_f64(),
            tally.admitted,
            tally.limited,
            tally.errors,
            quantile_us(&tally.latencies, 0.50),
            quantile_us(&tally.latencies, 0.99),
            quantile_us(&tally.latencies, 1.0),
            store.deny_cache_stats().hits,
        );
    }
}
