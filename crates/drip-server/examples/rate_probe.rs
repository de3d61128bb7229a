//! Achieved byte rate through a TCP shaper, for `scripts/bench-shape.sh`:
//! serves as an upstream on `UPSTREAM_ADDR` that sends as fast as the socket
//! takes, connects to `SHAPER_ADDR`, reads for `SECONDS` and reports the
//! rate after the first `BURST` bytes (a token bucket lets those go at once).
//!
//! `cargo run --release -p drip-server --example rate_probe -- SHAPER_ADDR UPSTREAM_ADDR SECONDS BURST`
//! prints `bytes=.. seconds=.. rate_Bps=..`. With `SHAPER_ADDR` equal to
//! `UPSTREAM_ADDR` it measures the unshaped loopback.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, shaper, upstream, seconds, burst] = &args[..] else {
        return Err("usage: rate_probe SHAPER_ADDR UPSTREAM_ADDR SECONDS BURST".into());
    };
    let seconds: f64 = seconds.parse()?;
    let burst: u64 = burst.parse()?;
    let listener = tokio::net::TcpListener::bind(upstream).await?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let buf = vec![0x5a; 256 * 1024];
                while socket.write_all(&buf).await.is_ok() {}
            });
        }
    });
    let mut stream = tokio::net::TcpStream::connect(shaper).await?;
    let mut buf = vec![0; 256 * 1024];
    let mut total = 0u64;
    // The clock starts when the burst is through.
    while total < burst {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err("closed during the burst".into());
        }
        total += n as u64;
    }
    let (start, counted_from) = (Instant::now(), total);
    let end = start + Duration::from_secs_f64(seconds);
    let mut last = start;
    while last < end {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
        last = Instant::now();
    }
    let bytes = total - counted_from;
    let secs = (last - start).as_secs_f64();
    println!(
        "bytes={bytes} seconds={secs:.3} rate_Bps={:.0}",
        bytes as f64 / secs
    );
    Ok(())
}
