//! SQLite store decisions per second, from 1 and from 4 OS processes
//! sharing one database file.
//!
//! Each case makes a fresh database in a temp directory, configures one
//! police bucket (1000/s, capacity 1000, so most checks are admitted and
//! every check writes its row), and starts the processes: this program run
//! again with `DRIP_SQLITE_BENCH_CHILD` set. They start together, check
//! keys round-robin over `KEYS` keys from `tasks` concurrent tokio tasks
//! each, warm up, then count the decisions completed in the measured time.
//! A single-task process also records each call's latency.
//!
//! Run: `cargo bench -p drip --features sqlite --bench sqlite [FILTER]`
//! (`DRIP_BENCH_SECS` sets the measured seconds per case, default 3; a
//! FILTER such as `4x16` runs only the cases whose label contains it).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drip::store::{SqliteOptions, SqliteStore, Synchronous};
use drip::{Limit, Limiter, Policy, Rate, SystemClock};

const CHILD: &str = "DRIP_SQLITE_BENCH_CHILD";
const KEYS: u64 = 10_000;
const WARM_UP: Duration = Duration::from_millis(500);
const RESULT: &str = "drip-bench-result=";

/// One case: how many processes, tasks per process, and the durability.
struct Case {
    processes: usize,
    tasks: usize,
    synchronous: Synchronous,
    /// All processes check one key instead of spreading over `KEYS`.
    one_key: bool,
    /// `SqliteOptions::max_batch`.
    max_batch: usize,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn options(synchronous: Synchronous, max_batch: usize) -> SqliteOptions {
    SqliteOptions {
        synchronous,
        max_batch,
        ..SqliteOptions::default()
    }
}

fn parse_sync(s: &str) -> Synchronous {
    match s {
        "full" => Synchronous::Full,
        _ => Synchronous::Normal,
    }
}

/// A child process: decides until the end of the measured time and prints
/// `count errors p50_us p99_us`.
fn child(spec: &str) {
    let f: Vec<&str> = spec.split(' ').collect();
    let (path, tasks, start_ms, secs, sync, one_key, max_batch) = (
        f[0],
        f[1].parse::<usize>().unwrap(),
        f[2].parse::<u64>().unwrap(),
        f[3].parse::<f64>().unwrap(),
        parse_sync(f[4]),
        f[5] == "1",
        f[6].parse::<usize>().unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(async move {
        let store =
            SqliteStore::open_with_options(path, SystemClock, options(sync, max_batch)).unwrap();
        let lim = Limiter::new(store);
        tokio::time::sleep(Duration::from_millis(start_ms.saturating_sub(unix_ms()))).await;
        let begin = Instant::now();
        let measure_from = begin + WARM_UP;
        let end = measure_from + Duration::from_secs_f64(secs);
        let count = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (lim, count, errors) = (lim.clone(), count.clone(), errors.clone());
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut i = t as u64 * 7919 + std::process::id() as u64;
                    loop {
                        let key = if one_key {
                            "k".to_owned()
                        } else {
                            (i % KEYS).to_string()
                        };
                        i += 1;
                        let t0 = Instant::now();
                        let r = lim.check("bench", &key, 1).await;
                        let t1 = Instant::now();
                        if t1 >= end {
                            break;
                        }
                        if t0 >= measure_from {
                            match r {
                                Ok(_) => count.fetch_add(1, Ordering::Relaxed),
                                Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                            };
                            if tasks == 1 {
                                lat.push((t1 - t0).as_nanos() as u64);
                            }
                        }
                    }
                    lat
                })
            })
            .collect();
        let mut lat = Vec::new();
        for h in handles {
            lat.extend(h.await.unwrap());
        }
        lat.sort_unstable();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .map_or(0.0, |&ns| ns as f64 / 1000.0)
        };
        format!(
            "{} {} {:.1} {:.1}",
            count.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed),
            pct(0.5),
            pct(0.99)
        )
    });
    println!("{RESULT}{out}");
}

/// Runs one case; returns (decisions/s, per-process decisions/s, errors,
/// latency p50 and p99 in µs of the first process when single-task).
fn run(case: &Case, secs: f64) -> (f64, Vec<f64>, u64, Option<(f64, f64)>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    setup.block_on(async {
        let store =
            SqliteStore::open_with_options(&path, SystemClock, options(case.synchronous, 1))
                .unwrap();
        let lim = Limiter::new(store);
        let policy = Policy::police(Limit::new(Rate::per_second(1000).unwrap(), 1000).unwrap());
        lim.configure("bench", policy).await.unwrap();
    });
    let start = unix_ms() + 300 + 100 * case.processes as u64;
    let sync = match case.synchronous {
        Synchronous::Full => "full",
        _ => "normal",
    };
    let children: Vec<_> = (0..case.processes)
        .map(|_| {
            let spec = format!(
                "{} {} {start} {secs} {sync} {} {}",
                path_str(&path),
                case.tasks,
                u8::from(case.one_key),
                case.max_batch
            );
            Command::new(std::env::current_exe().unwrap())
                .env(CHILD, spec)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut per = Vec::new();
    let mut errors = 0;
    let mut latency = None;
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "child failed: {}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(RESULT))
            .expect("child result line");
        let f: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
        per.push(f[0] / secs);
        errors += f[1] as u64;
        if case.tasks == 1 && latency.is_none() {
            latency = Some((f[2], f[3]));
        }
    }
    (per.iter().sum(), per, errors, latency)
}

fn path_str(p: &Path) -> String {
    let s = p.to_str().expect("utf-8 temp path");
    assert!(!s.contains(' '), "temp path with a space: {s}");
    s.to_owned()
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
        return;
    }
    let secs: f64 = std::env::var("DRIP_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    use Synchronous::{Full, Normal};
    // (processes, tasks per process, synchronous, one key, max_batch)
    let cases = [
        (1, 1, Normal, false, 32),
        (1, 16, Normal, false, 1),
        (1, 16, Normal, false, 32),
        (4, 1, Normal, false, 32),
        (4, 16, Normal, false, 1),
        (4, 16, Normal, false, 32),
        (4, 16, Normal, true, 32),
        (1, 1, Full, false, 32),
        (1, 16, Full, false, 1),
        (1, 16, Full, false, 32),
        (4, 16, Full, false, 32),
    ];
    println!(
        "SQLite store, police check, {secs} s measured per case after {} ms warm-up, \
         WAL; keys: {KEYS} round-robin unless one key",
        WARM_UP.as_millis()
    );
    println!(
        "{:<10} {:>6} {:>6} {:<7} {:<8} {:>14} {:>28} {:>7} {:>16}",
        "processes",
        "tasks",
        "batch",
        "sync",
        "keys",
        "decisions/s",
        "per process",
        "errors",
        "p50 / p99 (µs)"
    );
    // `cargo bench` passes `--bench`; any other argument filters the cases.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    for (processes, tasks, synchronous, one_key, max_batch) in cases {
        let label = format!(
            "{processes}x{tasks}-batch{max_batch}-{}-{}",
            if synchronous == Synchronous::Full {
                "full"
            } else {
                "normal"
            },
            if one_key { "onekey" } else { "keys" }
        );
        if !filters.is_empty() && !filters.iter().any(|f| label.contains(f.as_str())) {
            continue;
        }
        let case = Case {
            processes,
            tasks,
            synchronous,
            one_key,
            max_batch,
        };
        let (total, per, errors, latency) = run(&case, secs);
        let per: Vec<String> = per.iter().map(|x| format!("{x:.0}")).collect();
        let lat = latency.map_or("-".to_owned(), |(a, b)| format!("{a:.0} / {b:.0}"));
        println!(
            "{:<10} {:>6} {:>6} {:<7} {:<8} {:>14.0} {:>28} {:>7} {:>16}",
            processes,
            tasks,
            max_batch,
            if synchronous == Synchronous::Full {
                "FULL"
            } else {
                "NORMAL"
            },
            if one_key { "1" } else { "10000" },
            total,
            per.join(" "),
            errors,
            lat
        );
    }
}
