//! The cost of listing the queue (`Policy::with_track_queue`) on the
//! decision path, per store: the same shape decisions on a bucket that
//! tracks its queue and on one that does not, interleaved round by round
//! in one run, so both see the same machine.
//!
//! Each store gets two shape buckets, 1,000,000/s capacity 1000 (every
//! check is admitted and its key's queue stays short, so each tracked
//! decision appends an entry and drops the departed head), checked
//! round-robin over `KEYS` keys, each request with an id of its own
//! (made before the clock starts). Per round each bucket runs `n`
//! decisions (which goes first alternates); the report is the median
//! ns/decision over the rounds, and tracked / untracked.
//!
//! Run: `scripts/bench-queue-tracking.sh` (under `flock /work/bench.lock`,
//! with `uptime`), or `cargo bench -p drip --features sqlite,redis --bench
//! queue_tracking`. Redis: a `redis-server` this program starts on a free
//! loopback port (skipped, with a note, when there is none).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drip::store::{RedisOptions, RedisStore, SqliteStore};
use drip::{Limit, Limiter, Policy, Rate, Request, Store};

const KEYS: usize = 1000;

fn policy(track: bool) -> Policy {
    Policy::shape(Limit::new(Rate::per_second(1_000_000).unwrap(), 1000).unwrap())
        .with_track_queue(track)
}

/// `n` decisions on `bucket`, ns each.
async fn run<S: Store>(limiter: &Limiter<S>, bucket: &str, keys: &[String], ids: &[String]) -> f64 {
    let start = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let d = limiter
            .decide_tracked(bucket, &keys[i % KEYS], Request::check(1), id)
            .await
            .unwrap();
        assert!(d.allowed());
    }
    start.elapsed().as_nanos() as f64 / ids.len() as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn compare<S: Store>(name: &str, limiter: Limiter<S>, n: usize, rounds: usize) {
    limiter.configure("plain", policy(false)).await.unwrap();
    limiter.configure("tracked", policy(true)).await.unwrap();
    let keys: Vec<String> = (0..KEYS).map(|k| format!("key-{k}")).collect();
    let ids: Vec<String> = (0..n).map(|i| format!("req_1796360000000_{i}")).collect();
    // Warm up both (keys created, caches filled).
    run(&limiter, "plain", &keys, &ids[..n.min(KEYS * 2)]).await;
    run(&limiter, "tracked", &keys, &ids[..n.min(KEYS * 2)]).await;
    let (mut plain, mut tracked) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        if r % 2 == 0 {
            plain.push(run(&limiter, "plain", &keys, &ids).await);
            tracked.push(run(&limiter, "tracked", &keys, &ids).await);
        } else {
            tracked.push(run(&limiter, "tracked", &keys, &ids).await);
            plain.push(run(&limiter, "plain", &keys, &ids).await);
        }
    }
    let (p, t) = (median(plain), median(tracked));
    println!(
        "{name:<8} untracked {p:>10.0} ns/decision   tracked {t:>10.0} ns/decision   tracked/untracked {:.2}x   ({rounds} rounds x {n})",
        t / p
    );
}

/// A throwaway `redis-server` on a free loopback port.
struct Redis(Child, u16);

impl Redis {
    fn start() -> Option<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(Redis(child, port))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        compare("memory", Limiter::memory(), 200_000, 15).await;
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(dir.path().join("bench.db")).unwrap();
        compare("sqlite", Limiter::new(sqlite), 3_000, 9).await;
        match Redis::start() {
            Some(redis) => {
                let url = format!("redis://127.0.0.1:{}", redis.1);
                let store = RedisStore::connect(&url, RedisOptions::default())
                    .await
                    .unwrap();
                compare("redis", Limiter::new(store), 3_000, 9).await;
            }
            None => println!("redis    skipped: no redis-server could be started"),
        }
    });
}
