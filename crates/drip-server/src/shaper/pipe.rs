//! One direction of a shaped connection: read a chunk, wait for its turn
//! in the bucket, write it, and only then read again.
//!
//! Reading only after the previous chunk was written is the backpressure:
//! while the shaper waits, it does not read, the kernel's receive buffer
//! fills and TCP flow control slows the sender. So the shaper holds at most
//! one chunk (at most the burst) per direction, whatever the sender does.

use std::io;
use std::time::{Duration, Instant};

use drip::{Limiter, Store};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::metrics::Metrics;

/// Where a direction's bytes are charged.
pub struct Meter<'a, S: Store> {
    /// The limiter, the only way to the store.
    pub limiter: &'a Limiter<S>,
    /// The bucket.
    pub bucket: &'a str,
    /// The key (connection, client or total, and direction).
    pub key: String,
    /// Decisions are counted here.
    pub metrics: &'a Metrics,
}

/// Copies `reader` to `writer` at the meter's rate, `chunk` bytes at most
/// at a time; at the end of `reader` shuts `writer` down (half-close).
/// Returns the bytes copied.
pub async fn pipe<S, R, W>(
    meter: Meter<'_, S>,
    chunk: usize,
    mut reader: R,
    mut writer: W,
) -> io::Result<u64>
where
    S: Store,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; chunk];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            writer.shutdown().await?;
            return Ok(total);
        }
        let started = Instant::now();
        // Any wait: a chunk never exceeds the burst, so its turn comes.
        let d = meter
            .limiter
            .acquire(meter.bucket, &meter.key, n as u64, None)
            .await
            .map_err(|e| {
                meter.metrics.store_error("decide");
                io::Error::other(format!("rate-limit store: {e}"))
            })?;
        let elapsed = started
            .elapsed()
            .saturating_sub(Duration::from_nanos(d.wait));
        meter.metrics.decision(meter.bucket, d.outcome, elapsed);
        if !d.allowed() {
            return Err(io::Error::other(format!(
                "a chunk of {n} bytes was refused by bucket {:?}",
                meter.bucket
            )));
        }
        writer.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}
