//! `drip shape` as a real process between real TCP peers on loopback: the
//! achieved rate over 10 s per connection (both directions at once), per
//! client (3 connections sharing one rate) and in total (2 clients), and
//! the memory it holds while the sender pushes as fast as it can.
//!
//! The three scenarios run at once (each about 10 s), so the file takes ~11 s.

mod proxy_support;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use proxy_support::{DRIP, Proc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const MIB: u64 = 1024 * 1024;
/// The rate of every test: 2 MiB/s, so 20 MiB take 10 s.
const RATE: u64 = 2 * MIB;

/// One direction of one connection as its receiver saw it.
#[derive(Clone, Copy, Debug)]
struct Received {
    bytes: u64,
    /// When the last byte arrived.
    last: Instant,
}

/// An upstream that, on each connection, sends `down` bytes as fast as the
/// socket takes them and reads everything sent up, recording it.
async fn upstream(down: u64) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let uploads = Arc::new(Mutex::new(Vec::new()));
    let seen = uploads.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = socket.into_split();
                let send = async move {
                    send(&mut w, down).await;
                    let _ = w.shutdown().await;
                };
                let recv = async move {
                    let got = receive(&mut r).await;
                    seen.lock().unwrap().push(got);
                };
                tokio::join!(send, recv);
            });
        }
    });
    (addr, uploads)
}

async fn send(w: &mut (impl AsyncWriteExt + Unpin), n: u64) {
    let buf = vec![0x5a; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        if w.write_all(&buf[..k]).await.is_err() {
            return;
        }
        left -= k as u64;
    }
}

async fn receive(r: &mut (impl AsyncReadExt + Unpin)) -> Received {
    let mut buf = vec![0; 64 * 1024];
    let mut got = Received {
        bytes: 0,
        last: Instant::now(),
    };
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => {
                got.bytes += n as u64;
                got.last = Instant::now();
            }
        }
    }
}

/// A client connection from `local` through the shaper: sends `up` bytes,
/// receives until the upstream closes; returns what it received.
async fn client(shaper: &str, local: &str, up: u64) -> Received {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    let stream: TcpStream = socket.connect(shaper.parse().unwrap()).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let sender = tokio::spawn(async move {
        send(&mut w, up).await;
        let _ = w.shutdown().await;
    });
    let got = receive(&mut r).await;
    sender.await.unwrap();
    got
}

fn shaper(upstream: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "--upstream",
        upstream,
        "--rate",
        "2MiB/s",
        "--burst",
        "256KiB",
    ];
    args.extend_from_slice(extra);
    Proc::start("shape", "shape listening on ", &args)
}

/// The burst every test's shaper allows.
const BURST: u64 = 256 * 1024;

/// The achieved rate over `start..last` as a fraction of RATE, minus 1. A
/// token bucket lets the burst go at once and the rest at the rate, so the
/// rate is measured on what came after the burst.
fn rate_error(bytes: u64, start: Instant, last: Instant) -> f64 {
    let achieved = (bytes - BURST) as f64 / (last - start).as_secs_f64();
    eprintln!(
        "{bytes} bytes in {:?}: {achieved:.0} B/s for {RATE} B/s",
        last - start
    );
    achieved / RATE as f64 - 1.0
}

async fn per_connection_both_directions_at_the_rate_within_burst_memory() {
    let (up_addr, uploads) = upstream(20 * MIB).await;
    let shaper = shaper(&up_addr, &["--per", "connection"]);
    // Warm up (runtime threads, allocator arenas): a connection that reads
    // 256 KiB and hangs up; then measure what the transfer adds.
    let mut warm = TcpStream::connect(&shaper.addr).await.unwrap();
    let mut buf = vec![0; 256 * 1024];
    warm.read_exact(&mut buf).await.unwrap();
    drop(warm);
    let before = shaper.peak_rss();
    let start = Instant::now();
    let down = client(&shaper.addr, "127.0.0.1", 20 * MIB).await;
    assert_eq!(down.bytes, 20 * MIB);
    let down_error = rate_error(down.bytes, start, down.last);
    // The upstream records the upload when it ends (polled, not slept on).
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let up = loop {
        let found = uploads
            .lock()
            .unwrap()
            .iter()
            .copied()
            .find(|u| u.bytes > 0);
        if let Some(u) = found {
            break u;
        }
        assert!(Instant::now() < deadline, "the upload did not end");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(up.bytes, 20 * MIB);
    let up_error = rate_error(up.bytes, start, up.last);
    assert!(down_error.abs() < 0.02, "download off by {down_error:.4}");
    assert!(up_error.abs() < 0.02, "upload off by {up_error:.4}");

    // Both senders pushed as fast as sockets allowed; the shaper held one
    // 64 KiB chunk (a quarter of the burst) per direction, not the megabytes
    // waiting to go.
    let grown = shaper.peak_rss().saturating_sub(before);
    eprintln!("shaper peak RSS grew by {} KiB", grown / 1024);
    assert!(
        grown < 2 * 64 * 1024 + 512 * 1024,
        "peak RSS grew by {grown} bytes"
    );
}

async fn per_client_three_connections_share_one_rate() {
    let (up_addr, _) = upstream(20 * MIB / 3).await;
    let shaper = shaper(&up_addr, &["--per", "client"]);
    let start = Instant::now();
    let conns: Vec<_> = (0..3)
        .map(|_| {
            let addr = shaper.addr.clone();
            tokio::spawn(async move { client(&addr, "127.0.0.1", 0).await })
        })
        .collect();
    let mut total = 0;
    let mut last = start;
    for c in conns {
        let got = c.await.unwrap();
        total += got.bytes;
        last = last.max(got.last);
    }
    assert_eq!(total, 3 * (20 * MIB / 3));
    let error = rate_error(total, start, last);
    assert!(error.abs() < 0.02, "off by {error:.4}");
}

async fn total_two_clients_share_one_rate() {
    let (up_addr, _) = upstream(10 * MIB).await;
    let shaper = shaper(&up_addr, &["--per", "total"]);
    let start = Instant::now();
    let conns: Vec<_> = ["127.0.0.1", "127.0.0.2"]
        .into_iter()
        .map(|local| {
            let addr = shaper.addr.clone();
            tokio::spawn(async move { client(&addr, local, 0).await })
        })
        .collect();
    let mut total = 0;
    let mut last = start;
    for c in conns {
        let got = c.await.unwrap();
        total += got.bytes;
        last = last.max(got.last);
    }
    assert_eq!(total, 20 * MIB);
    let error = rate_error(total, start, last);
    assert!(error.abs() < 0.02, "off by {error:.4}");
}

/// The three 10 s scenarios at once, each with its own shaper: the test
/// harness runs only as many tests at a time as there are cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_per_connection_per_client_and_total() {
    tokio::join!(
        per_connection_both_directions_at_the_rate_within_burst_memory(),
        per_client_three_connections_share_one_rate(),
        total_two_clients_share_one_rate(),
    );
}

#[test]
fn bad_rates_name_the_flag_and_the_form() {
    for (flag, value, form) in [
        ("--rate", "1MB", "1MiB/s"),
        ("--rate", "fast", "1MiB/s"),
        ("--burst", "lots", "64KiB"),
    ] {
        let mut args = vec!["shape", "--upstream", "127.0.0.1:1", "--rate", "1MiB/s"];
        if flag == "--rate" {
            args[4] = value;
        } else {
            args.extend([flag, value]);
        }
        let out = std::process::Command::new(DRIP)
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{flag} must be")) && err.contains(form),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_graceful_shutdown() {
    let (up_addr, _) = upstream(1000).await;
    let mut shaper = Proc::start(
        "shape",
        "shape listening on ",
        &[
            "--upstream",
            &up_addr,
            "--rate",
            "1MiB/s",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    assert_eq!(client(&shaper.addr, "127.0.0.1", 10).await.bytes, 1000);
    let url = format!("http://{}/metrics", shaper.metrics.as_ref().unwrap());
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    let allowed = text
        .lines()
        .find(|l| l.starts_with(r#"drip_decisions_total{bucket="shape",outcome="allowed"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok());
    // At least one chunk each way.
    assert!(allowed >= Some(2), "{text}");
    shaper.signal("TERM");
    assert!(
        shaper
            .wait_exit(std::time::Duration::from_secs(10))
            .success()
    );
}
