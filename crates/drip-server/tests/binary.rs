//! The real `drip` binary as a process: it logs one line per listener,
//! takes its flags from `DRIP_*` variables too, refuses a bad config file
//! with the bucket and field named, answers waiting requests and exits
//! cleanly on SIGTERM, and (with SQLite) two processes share one exact limit.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[cfg(feature = "redis")]
#[path = "../../drip/tests/redis_support/mod.rs"]
mod redis_support;

const DRIP: &str = env!("CARGO_BIN_EXE_drip");

/// A running `drip serve`, killed when dropped.
struct Proc {
    child: Child,
    http: String,
    grpc: String,
    /// Lines the process writes to stderr after start-up.
    log: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `drip serve` with `args` and `env`, on ports the OS picks,
    /// and waits for its two "listening" lines (polling, no fixed sleeps).
    fn start(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(DRIP);
        cmd.arg("serve")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut http, mut grpc) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.is_none() || grpc.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = log
                .recv_timeout(left)
                .expect("drip serve did not log its listeners");
            if let Some(a) = line.split("HTTP listening on http://").nth(1) {
                http = Some(a.trim().to_owned());
            }
            if let Some(a) = line.split("gRPC listening on ").nth(1) {
                grpc = Some(a.trim().to_owned());
            }
        }
        Proc {
            child,
            http: http.unwrap(),
            grpc: grpc.unwrap(),
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Waits up to `limit` for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "drip serve did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `drip` to completion; returns (success, stderr).
fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(DRIP).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drip-bin-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_listeners_uses_env_and_stops_cleanly_on_sigterm() {
    let config = temp_file(
        "ok.toml",
        "[buckets.api]\nmode = \"police\"\ncapacity = 10\nleak_rate = 5\n\
         windows = [{ limit = 1000, period_s = 3600 }]\n\n\
         [buckets.slow]\nmode = \"shape\"\ncapacity = 1\nleak_rate = 0.1\n",
    );
    let mut p = Proc::start(
        &[
            "--http",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ],
        &[("DRIP_GRPC", "127.0.0.1:0"), ("DRIP_ADMIN_TOKEN", "tok")],
    );
    assert!(p.grpc.starts_with("127.0.0.1:"), "{}", p.grpc);
    let client = reqwest::Client::new();

    // The file's buckets exist; the token from the environment is required.
    let v: Value = client
        .get(p.url("/v1/buckets/api"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["capacity"].as_u64(), v["leak_rate"].as_f64()),
        (Some(10), Some(5.0))
    );
    assert_eq!(v["windows"], json!([{"limit": 1000, "period_s": 3600.0}]));
    let r = client
        .put(p.url("/v1/buckets/x"))
        .json(&json!({"capacity": 1, "leak_rate": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // `drip status` against it.
    let (ok, out) = run(&["status", "--url", &p.url("")]);
    assert!(ok, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("api ") && l.contains("police")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("slow ") && l.contains("shape")),
        "{out}"
    );

    // A request waiting its turn when SIGTERM comes gets an answer.
    client
        .post(p.url("/v1/buckets/slow/allow"))
        .send()
        .await
        .unwrap();
    let waiter = tokio::spawn({
        let url = p.url("/v1/buckets/slow/acquire");
        let client = client.clone();
        async move {
            let r = client
                .post(url)
                .json(&json!({"timeout_ms": 60000}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: Value = client
            .get(p.url("/v1/buckets/slow"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["allowed_requests"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.signal("TERM");
    let (code, v) = waiter.await.unwrap();
    assert_eq!(code, 503);
    assert_eq!(v["error"]["code"], "shutting_down");
    let status = tokio::task::block_in_place(|| p.wait_exit(Duration::from_secs(10)));
    assert!(status.success(), "{status:?}");
    // The reader thread may still be forwarding the last lines: read until
    // it ends (at the pipe's end, the process having exited).
    let rest: Vec<String> = p.log.iter().collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
}

#[test]
fn sigint_stops_an_idle_server() {
    let mut p = Proc::start(&["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"], &[]);
    p.signal("INT");
    assert!(p.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn a_bad_config_file_is_refused_naming_bucket_and_field() {
    let cases = [
        (
            "[buckets.api]\ncapacity = 0\nleak_rate = 5\n",
            "bucket \"api\": capacity must be an integer in 1..=4294967295",
        ),
        (
            "[buckets.api]\ncapacity = 5\nleak_rate = -1\n",
            "bucket \"api\": leak_rate must be",
        ),
        (
            "[buckets.api]\ncapacity = 5\n",
            "bucket \"api\": leak_rate is required",
        ),
        (
            "[buckets.api]\ncapacity = 5\nleak_rate = 1\nwindows = [{ limit = 1, period_s = 0 }]\n",
            "bucket \"api\": windows[0].period_s",
        ),
        (
            "[buckets.api]\ncapacity = 5\nleak_rate = 1\nmode = \"fifo\"\n",
            "bucket \"api\": mode must be",
        ),
        (
            "[buckets.api]\ncapacity = 5\nleak_rate = 1\nburst = 2\n",
            "bucket \"api\": unknown field burst",
        ),
        ("[bucket.api]\ncapacity = 5\n", "unknown field `bucket`"),
        ("[buckets.api\n", "not valid TOML"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = temp_file(&format!("bad{i}.toml"), text);
        let (ok, out) = run(&[
            "serve",
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
            "--config",
            path.to_str().unwrap(),
        ]);
        assert!(!ok, "{text}");
        assert!(out.contains(want), "{text}: {out}");
        assert!(
            out.contains(path.to_str().unwrap()),
            "names the file: {out}"
        );
    }
    let (ok, out) = run(&["serve", "--config", "/nonexistent/drip.toml"]);
    assert!(!ok);
    assert!(out.contains("/nonexistent/drip.toml"), "{out}");
}

#[test]
fn bad_counter_retentions_are_refused() {
    for bad in ["-1", "2592001", "abc"] {
        let (ok, out) = run(&["serve", "--counter-retention", bad]);
        assert!(!ok, "{bad}");
        assert!(out.contains("--counter-retention"), "{bad}: {out}");
        assert!(out.contains("0..=2592000"), "{bad}: {out}");
    }
    let path = temp_file("bad_retention.toml", "counter_retention_s = -5\n");
    let (ok, out) = run(&["serve", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("counter_retention_s must be"), "{out}");
}

#[test]
fn bad_store_values_are_refused() {
    let (ok, out) = run(&["serve", "--store", "postgres://x"]);
    assert!(!ok);
    assert!(
        out.contains("memory, sqlite:PATH or redis://HOST:PORT"),
        "{out}"
    );
    let (ok, out) = run(&[
        "serve",
        "--http",
        "127.0.0.1:0",
        "--grpc",
        "127.0.0.1:0",
        "--store",
        "redis://127.0.0.1:1",
    ]);
    // Nothing listens on port 1: a clear start-up error, not a hang.
    assert!(!ok);
    assert!(
        out.contains("connecting to the Redis store redis://127.0.0.1:1"),
        "{out}"
    );
    let (ok, out) = run(&["serve", "--store", "sqlite:"]);
    assert!(!ok);
    assert!(out.contains("sqlite: needs a path"), "{out}");
}

/// Two `drip serve` processes on one SQLite file: configuration made
/// through one is seen by the other, and together they admit exactly the
/// bucket's capacity.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_sqlite_limit() {
    let db = temp_file("shared.db", "");
    std::fs::remove_file(&db).unwrap();
    two_processes_share_one_limit(&format!("sqlite:{}", db.display())).await;
}

/// The same with two processes on one Redis.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_redis_limit() {
    if !redis_support::available() {
        return;
    }
    let redis = redis_support::RedisServer::start();
    two_processes_share_one_limit(&redis.url()).await;
}

#[allow(dead_code)]
async fn two_processes_share_one_limit(store: &str) {
    let args = [
        "--http",
        "127.0.0.1:0",
        "--grpc",
        "127.0.0.1:0",
        "--store",
        store,
    ];
    let a = Proc::start(&args, &[]);
    let b = Proc::start(&args, &[]);
    let client = reqwest::Client::new();
    let r = client
        .put(a.url("/v1/buckets/shared"))
        .json(&json!({"capacity": 25, "leak_rate": 0.001}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let url = if i % 2 == 0 {
            a.url("/v1/buckets/shared/allow")
        } else {
            b.url("/v1/buckets/shared/allow")
        };
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client.post(url).send().await.unwrap().status().as_u16()
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => allowed += 1,
            429 => {}
            other => panic!("status {other}"),
        }
    }
    assert_eq!(allowed, 25);
    let v: Value = client
        .get(b.url("/v1/buckets/shared"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            v["allowed_requests"].as_u64(),
            v["rejected_requests"].as_u64()
        ),
        (Some(25), Some(15))
    );
    assert_eq!(
        client.get(b.url("/readyz")).send().await.unwrap().status(),
        200
    );
}
