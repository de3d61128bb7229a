//! Refused requests per second on the Redis store, answered as the server
//! answers them before and after issue 13, alternately in one run:
//!
//! - `two trips`: the decision, then the policy looked up again for the
//!   `RateLimit-Policy` field (`Limiter::policy`, an `HMGET`): what the
//!   server's `App::verdict`, its gRPC path and the tower layer did on
//!   every refusal before;
//! - `one trip`: the decision alone, its fields built from the decision's
//!   `Quota` (`drip::headers::fields`): what they do now.
//!
//! N tasks share one `Limiter` over one `RedisStore` and loop on keys
//! whose bucket is full (capacity 1, 1 per day), so every call is refused.
//! The two forms alternate in blocks of `--block-ms` for `--rounds` rounds;
//! printed: each form's median refusals/s over the rounds, and the median
//! of the per-round ratio one/two.
//!
//! ```sh
//! scripts/bench-redis-refusals.sh        # starts its own redis-server
//! cargo run --release -p drip --features redis --example redis_refusals -- \
//!     redis://127.0.0.1:6379/ --concurrency 1,16 --rounds 10 --block-ms 500
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use drip::store::{RedisOptions, RedisStore};
use drip::{Limit, Limiter, Policy, Rate, headers};

const BUCKET: &str = "refusals";
const KEYS: u64 = 100;

#[derive(Clone, Copy, PartialEq)]
enum Form {
    TwoTrips,
    OneTrip,
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

/// Runs `concurrency` tasks answering refusals in `form` for `block`;
/// returns refusals per second.
async fn block(
    limiter: &Limiter<RedisStore>,
    form: Form,
    concurrency: usize,
    block: Duration,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let label = headers::sf_string(BUCKET);
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let (limiter, done, stop, label) =
                (limiter.clone(), done.clone(), stop.clone(), label.clone());
            tokio::spawn(async move {
                let mut i = t as u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("k{}", i % KEYS);
                    i += 7;
                    let d = limiter.check(BUCKET, &key, 1).await.expect("decide");
                    assert!(!d.allowed(), "every key is full");
                    let policy_field = match form {
                        Form::TwoTrips => {
                            let p = limiter.policy(BUCKET).await.expect("policy");
                            p.map(|p| headers::policy_value(&label, &p.quota()))
                        }
                        Form::OneTrip => headers::fields(&label, &d).ratelimit_policy,
                    };
                    std::hint::black_box(policy_field);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    tokio::time::sleep(block).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    for t in tasks {
        t.await.expect("task");
    }
    n as f64 / secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> drip::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_owned());
    let concurrency: Vec<usize> = arg(&args, "--concurrency", "1,16")
        .split(',')
        .map(|c| c.parse().expect("--concurrency: numbers, e.g. 1,16"))
        .collect();
    let rounds: usize = arg(&args, "--rounds", "10").parse().expect("--rounds");
    let block_ms: u64 = arg(&args, "--block-ms", "500").parse().expect("--block-ms");

    let store = RedisStore::connect(&url, RedisOptions::default()).await?;
    let limiter = Limiter::new(store);
    let policy = Policy::police(Limit::new(Rate::per_day(1)?, 1)?);
    limiter.configure_reset(BUCKET, policy).await?;
    for k in 0..KEYS {
        limiter.check(BUCKET, &format!("k{k}"), 1).await?;
    }
    println!(
        "{:>11}  {:>14}  {:>14}  {:>10}",
        "concurrency", "two trips/s", "one trip/s", "one/two"
    );
    for &c in &concurrency {
        let (mut two, mut one, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        let b = Duration::from_millis(block_ms);
        for r in 0..=rounds {
            // Alternate which goes first; round 0 is a warm-up.
            let (a, z) = if r % 2 == 0 {
                let a = block(&limiter, Form::TwoTrips, c, b).await;
                (a, block(&limiter, Form::OneTrip, c, b).await)
            } else {
                let z = block(&limiter, Form::OneTrip, c, b).await;
                (block(&limiter, Form::TwoTrips, c, b).await, z)
            };
            if r > 0 {
                two.push(a);
                one.push(z);
                ratio.push(z / a);
            }
        }
        println!(
            "{c:>11}  {:>14.0}  {:>14.0}  {:>9.2}x",
            median(two),
            median(one),
            median(ratio)
        );
    }
    limiter.delete(BUCKET).await?;
    Ok(())
}
