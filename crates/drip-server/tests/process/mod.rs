//! The real `drip serve` as a child process on ports the OS picks, for
//! tests that drive it from outside (foreign clients, raw sockets).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `drip serve`, killed when dropped.
pub struct Drip {
    child: Child,
    /// `host:port` of the HTTP listener.
    pub http: String,
    /// `host:port` of the gRPC listener.
    pub grpc: String,
}

impl Drip {
    /// Starts `drip serve --http 127.0.0.1:0 --grpc 127.0.0.1:0 ARGS` and
    /// waits for its two "listening" log lines (no fixed sleeps).
    pub fn start(args: &[&str]) -> Drip {
        let mut child = Command::new(env!("CARGO_BIN_EXE_drip"))
            .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = mpsc::channel();
        // Keeps reading so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
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
        Drip {
            child,
            http: http.unwrap(),
            grpc: grpc.unwrap(),
        }
    }
}

impl Drop for Drip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
