//! For the `drip proxy` tests: the real `drip proxy` as a process on a port
//! the OS picks, and a real upstream (an axum app on loopback) that records
//! what reaches it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

pub const DRIP: &str = env!("CARGO_BIN_EXE_drip");

/// A running `drip` subcommand, killed when dropped.
pub struct Proc {
    pub child: Child,
    /// The address of its main listener.
    pub addr: String,
    /// The metrics listener's address, when it has one.
    pub metrics: Option<String>,
    /// Lines the process writes to stderr after start-up.
    pub log: mpsc::Receiver<String>,
}

impl Proc {
    /// `drip proxy --listen 127.0.0.1:0 ARGS`, once it logs its listener.
    pub fn proxy(args: &[&str]) -> Proc {
        Proc::start("proxy", "proxy listening on http://", args)
    }

    /// `drip SUB --listen 127.0.0.1:0 ARGS`; waits for the line holding
    /// `marker` followed by the address (polling the log, no fixed sleeps).
    pub fn start(sub: &str, marker: &str, args: &[&str]) -> Proc {
        let mut child = Command::new(DRIP)
            .args([sub, "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let wants_metrics = args.contains(&"--metrics");
        let (mut addr, mut metrics) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = String::new();
        while addr.is_none() || (wants_metrics && metrics.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = log.recv_timeout(left) else {
                let _ = child.kill();
                panic!("drip {sub} did not log its listener; it said:\n{seen}");
            };
            seen.push_str(&line);
            seen.push('\n');
            if let Some(a) = line.split(marker).nth(1) {
                addr = a.split([',', ' ']).next().map(str::to_owned);
            }
            if let Some(a) = line.split("metrics listening on http://").nth(1) {
                metrics = a.split('/').next().map(str::to_owned);
            }
        }
        Proc {
            child,
            addr: addr.unwrap(),
            metrics,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Bytes of memory the process has held at most (VmHWM).
    pub fn peak_rss(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmHWM:") * 1024
    }

    /// Bytes of memory the process holds now (VmRSS).
    pub fn rss(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmRSS:") * 1024
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// What reached the upstream.
#[derive(Default)]
pub struct Seen {
    /// `x-seq` of each `/seq` request, with when it arrived.
    pub seq: Mutex<Vec<(u64, Instant)>>,
    /// The `x-forwarded-for` of the last `/hello`.
    pub xff: Mutex<Option<String>>,
}

/// The upstream app, serving until the test's runtime ends.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    /// What `/big` sends.
    pub big: Bytes,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Starts the upstream on a free loopback port.
pub async fn upstream() -> Upstream {
    upstream_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
}

/// Starts the upstream on `listener`.
pub fn upstream_on(listener: tokio::net::TcpListener) -> Upstream {
    let seen = Arc::new(Seen::default());
    let big = pattern(10 * 1024 * 1024);
    let app = Router::new()
        .route("/hello", get(hello))
        .route("/seq", get(seq))
        .route("/sum", post(sum))
        .route("/big", get(serve_big))
        .route("/slow", get(slow))
        .with_state((seen.clone(), big.clone()));
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Upstream { addr, seen, big }
}

type AppState = (Arc<Seen>, Bytes);

async fn hello(State((seen, _)): State<AppState>, headers: HeaderMap) -> &'static str {
    *seen.xff.lock().unwrap() = headers
        .get("x-forwarded-for")
        .map(|v| v.to_str().unwrap().to_owned());
    "hello"
}

async fn seq(State((seen, _)): State<AppState>, headers: HeaderMap) -> &'static str {
    let n = headers["x-seq"].to_str().unwrap().parse().unwrap();
    seen.seq.lock().unwrap().push((n, Instant::now()));
    "ok"
}

/// Hashes the request body as it streams in: `"<bytes> <sha256>"`.
async fn sum(body: Body) -> String {
    let mut stream = body.into_data_stream();
    let (mut n, mut h) = (0usize, Sha256::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        n += chunk.len();
        h.update(&chunk);
    }
    format!("{n} {}", hex(&h.finalize()))
}

/// Streams `big` in 64 KiB chunks.
async fn serve_big(State((_, big)): State<AppState>) -> Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..big.len())
        .step_by(64 * 1024)
        .map(|i| Ok(big.slice(i..(i + 64 * 1024).min(big.len()))))
        .collect();
    Body::from_stream(futures_util::stream::iter(chunks))
}

async fn slow(Query(q): Query<std::collections::HashMap<String, u64>>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(q.get("ms").copied().unwrap_or(3000))).await;
    "late"
}

/// `n` bytes of a fixed pseudo-random pattern.
pub fn pattern(n: usize) -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client whose connections come from `local` (e.g. 127.0.0.2, another
/// client address on loopback).
pub fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(local.parse().unwrap()))
        .build()
        .unwrap()
}
