//! The SQLite store across OS processes: several processes sharing one
//! database file admit exactly the limit, and see each other's
//! configuration at their next call.
//!
//! The test binary runs itself again as the child processes: the `child`
//! test does nothing unless `DRIP_SQLITE_CHILD` names a role, in which case
//! it plays that role and prints its result on a `drip-child-result=` line.
#![cfg(feature = "sqlite")]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drip::blocking::Limiter;
use drip::store::SqliteStore;
use drip::{Error, Limit, Mode, Policy, Rate, Window};

const ROLE: &str = "DRIP_SQLITE_CHILD";
const DB: &str = "DRIP_SQLITE_DB";
const ARG: &str = "DRIP_SQLITE_ARG";
const START_MS: &str = "DRIP_SQLITE_START_MS";
const RESULT: &str = "drip-child-result=";

/// Processes hammering the database at once.
const PROCESSES: usize = 4;
/// Threads per process.
const THREADS: usize = 4;
/// Rounds per thread; each round checks every bucket of the test once.
const ROUNDS: usize = 100;

fn limiter(path: &Path) -> Limiter<SqliteStore> {
    Limiter::new(SqliteStore::open(path).expect("open the database")).expect("blocking limiter")
}

/// 1 unit per day leaks: over a test that lasts seconds the rate is frozen
/// and a bucket admits exactly its capacity.
fn frozen(mode: Mode, capacity: u64) -> Policy {
    Policy::new(
        mode,
        Limit::new(Rate::per_day(1).unwrap(), capacity).unwrap(),
    )
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The child processes' entry point (a no-op in a normal test run).
#[test]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let path = std::env::var(DB).expect("DRIP_SQLITE_DB");
    let arg = std::env::var(ARG).unwrap_or_default();
    if role == "race" {
        // Open a file no one has created yet, at the same moment as the
        // others, configure (keeping the water) and check 5 times.
        let start: u64 = std::env::var(START_MS).unwrap().parse().unwrap();
        std::thread::sleep(Duration::from_millis(start.saturating_sub(unix_ms())));
        let lim = limiter(Path::new(&path));
        lim.configure("c", frozen(Mode::Police, 10)).unwrap();
        let admitted = (0..5)
            .filter(|_| lim.check("c", "k", 1).unwrap().allowed())
            .count();
        println!("\n{RESULT}{admitted}");
        return;
    }
    let lim = limiter(Path::new(&path));
    let result = match role.as_str() {
        "hammer" => {
            // Start together, so the processes really overlap.
            let start: u64 = std::env::var(START_MS).unwrap().parse().unwrap();
            std::thread::sleep(Duration::from_millis(start.saturating_sub(unix_ms())));
            let counts = std::thread::scope(|s| {
                let threads: Vec<_> = (0..THREADS)
                    .map(|_| {
                        s.spawn(|| {
                            let mut admitted = [0u64; 3];
                            for _ in 0..ROUNDS {
                                for (i, b) in ["frozen", "windowed", "shaped"].iter().enumerate() {
                                    if lim.check(b, "one-key", 1).unwrap().allowed() {
                                        admitted[i] += 1;
                                    }
                                }
                            }
                            admitted
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .map(|t| t.join().unwrap())
                    .fold([0u64; 3], |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2]])
            });
            format!("{},{},{}", counts[0], counts[1], counts[2])
        }
        "check" => {
            // ARG = "bucket n": n checks of key "k".
            let (bucket, n) = arg.split_once(' ').unwrap();
            let n: usize = n.parse().unwrap();
            let admitted = (0..n)
                .filter(|_| lim.check(bucket, "k", 1).unwrap().allowed())
                .count();
            admitted.to_string()
        }
        "configure" => {
            // ARG = "bucket capacity": police at 1/day, keeping the water.
            let (bucket, capacity) = arg.split_once(' ').unwrap();
            lim.configure(bucket, frozen(Mode::Police, capacity.parse().unwrap()))
                .unwrap();
            "ok".to_owned()
        }
        "delete" => lim.delete(&arg).unwrap().to_string(),

        other => panic!("unknown role {other}"),
    };
    // libtest may have written "test child ... " on the same line.
    println!("\n{RESULT}{result}");
}

/// Runs the `child` test of this binary as a process in `role`; returns
/// what it printed on its result line.
fn spawn(role: &str, path: &Path, arg: &str, start_ms: u64) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DB, path)
        .env(ARG, arg)
        .env(START_MS, start_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a child process")
}

fn result(child: std::process::Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("child process did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once(RESULT).map(|r| r.1))
        .unwrap_or_else(|| panic!("no result line in the child's output:\n{stdout}"))
        .to_owned()
}

fn run(role: &str, path: &Path, arg: &str) -> String {
    result(spawn(role, path, arg, 0))
}

#[test]
fn four_processes_admit_exactly_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drip.db");
    let lim = limiter(&path);
    lim.configure("frozen", frozen(Mode::Police, 500)).unwrap();
    // A bucket that would take 10,000, ANDed with at most 300 per hour.
    let windowed = frozen(Mode::Police, 10_000)
        .with_window(Window::new(300, Duration::from_secs(3600)).unwrap())
        .unwrap();
    lim.configure("windowed", windowed).unwrap();
    lim.configure("shaped", frozen(Mode::Shape, 200)).unwrap();

    let start = unix_ms() + 1000;
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| spawn("hammer", &path, "", start))
        .collect();
    let mut totals = [0u64; 3];
    let mut per_process = Vec::new();
    for child in children {
        let counts: Vec<u64> = result(child)
            .split(',')
            .map(|x| x.parse().unwrap())
            .collect();
        for (t, c) in totals.iter_mut().zip(&counts) {
            *t += c;
        }
        per_process.push(counts);
    }
    assert_eq!(totals, [500, 300, 200], "per process: {per_process:?}");

    // Every request was counted once, in the shared database.
    let asked = (PROCESSES * THREADS * ROUNDS) as u64;
    for (bucket, admitted) in [("frozen", 500), ("windowed", 300), ("shaped", 200)] {
        let s = lim.status(bucket, "one-key").unwrap();
        assert_eq!(
            (s.counters.allowed, s.counters.rejected),
            (admitted, asked - admitted),
            "{bucket}"
        );
    }
    // Nothing leaked since: the parent is refused too.
    assert!(!lim.check("frozen", "one-key", 1).unwrap().allowed());
}

#[test]
fn configuration_made_by_one_process_is_seen_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drip.db");
    let lim = limiter(&path);
    lim.configure("p", frozen(Mode::Police, 3)).unwrap();
    assert!(lim.check("p", "k", 1).unwrap().allowed());

    // A child that never configured "p" uses the parent's policy and water.
    assert_eq!(run("check", &path, "p 5"), "2");

    // A child reconfigures (keeping the water); the parent, which has the
    // old policy cached, decides by the new one at its next call.
    assert_eq!(run("configure", &path, "p 10"), "ok");
    let s = lim.status("p", "k").unwrap();
    assert_eq!((s.policy.limit().capacity(), s.level.queue_size), (10, 3));
    let admitted = (0..10)
        .filter(|_| lim.check("p", "k", 1).unwrap().allowed())
        .count();
    assert_eq!(admitted, 7);

    // A bucket the parent creates is seen by a new child, and a delete by a
    // child is seen by the parent.
    lim.configure("q", frozen(Mode::Shape, 4)).unwrap();
    assert_eq!(run("check", &path, "q 6"), "4");
    assert_eq!(run("delete", &path, "q"), "true");
    assert!(matches!(
        lim.check("q", "k", 1),
        Err(Error::UnknownBucket(b)) if b == "q"
    ));
    assert_eq!(lim.list().unwrap().len(), 1);
}

#[test]
fn processes_creating_one_database_at_once_agree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let start = unix_ms() + 500;
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| spawn("race", &path, "", start))
        .collect();
    let admitted: u64 = children
        .into_iter()
        .map(|c| result(c).parse::<u64>().unwrap())
        .sum();
    // Each configure keeps the water of the ones before it.
    assert_eq!(admitted, 10);
}
