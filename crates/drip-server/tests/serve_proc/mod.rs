//! A real `drip serve` process on ports the OS picks, for tests that drive
//! it from outside (`drip stress`, the dashboard, the Python client).
//! Killed when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `drip` binary under test.
pub const DRIP: &str = env!("CARGO_BIN_EXE_drip");

/// A running `drip serve`.
pub struct Serve {
    child: Child,
    /// `HOST:PORT` of the HTTP listener.
    pub http: String,
    /// `HOST:PORT` of the gRPC listener.
    pub grpc: String,
}

impl Serve {
    /// Starts `drip serve` on 127.0.0.1:0 (both listeners) and waits for its
    /// two "listening" lines (no fixed sleeps).
    pub fn start() -> Serve {
        Serve::start_with(&[])
    }

    /// [`Serve::start`] with more arguments of `drip serve`.
    pub fn start_with(args: &[&str]) -> Serve {
        let mut child = Command::new(DRIP)
            .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start drip serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Keep reading (and dropping) after start-up so the pipe never fills.
                let _ = tx.send(line);
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
        Serve {
            child,
            http: http.unwrap(),
            grpc: grpc.unwrap(),
        }
    }

    /// `http://HOST:PORT` of the HTTP listener.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// `http://HOST:PORT` of the gRPC listener.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `PUT /v1/buckets/{bucket}` with `body`; panics unless 200.
    pub fn put_bucket(&self, bucket: &str, body: &str) {
        let url = format!("{}/v1/buckets/{bucket}", self.http_url());
        let body = body.to_owned();
        let status = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                reqwest::Client::new()
                    .put(url)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status())
            })
            .expect("PUT a bucket");
        assert_eq!(status, 200, "PUT {bucket}");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
