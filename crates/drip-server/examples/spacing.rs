//! Departure spacing through a queueing proxy, for `scripts/bench-proxy.sh`:
//! serves as the upstream on `UPSTREAM_ADDR`, sends `N` requests at once to
//! `PROXY_URL`, and reports how far the gaps between consecutive arrivals
//! at the upstream are from the ideal `1/RATE`.
//!
//! `cargo run --release -p drip-server --example spacing -- PROXY_URL UPSTREAM_ADDR RATE N`
//! prints `admitted=N p50_us=.. p99_us=.. max_us=.. span_error_pct=..`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, upstream, rate, n] = &args[..] else {
        return Err("usage: spacing PROXY_URL UPSTREAM_ADDR RATE N".into());
    };
    let rate: f64 = rate.parse()?;
    let n: usize = n.parse()?;
    let arrivals = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let seen = arrivals.clone();
    let app = axum::Router::new().fallback(move || {
        seen.lock().unwrap().push(Instant::now());
        async { "ok" }
    });
    let listener = tokio::net::TcpListener::bind(upstream).await?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(n)
        .timeout(Duration::from_secs(600))
        .build()?;
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let req = client.get(url.as_str()).send();
            tokio::spawn(async move { req.await.map(|r| r.status().as_u16()).unwrap_or(0) })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        if t.await? == 200 {
            admitted += 1;
        }
    }
    let mut times = arrivals.lock().unwrap().clone();
    times.sort();
    if times.len() < 3 {
        return Err(format!("only {} requests reached the upstream", times.len()).into());
    }
    let ideal = 1.0 / rate;
    let mut errors: Vec<f64> = times
        .windows(2)
        .map(|w| ((w[1] - w[0]).as_secs_f64() - ideal).abs() * 1e6)
        .collect();
    errors.sort_by(f64::total_cmp);
    let pct = |p: f64| errors[((errors.len() - 1) as f64 * p).round() as usize];
    let span = (*times.last().unwrap() - times[0]).as_secs_f64();
    let span_ideal = ideal * (times.len() - 1) as f64;
    println!(
        "admitted={admitted} p50_us={:.0} p99_us={:.0} max_us={:.0} span_error_pct={:.3}",
        pct(0.5),
        pct(0.99),
        errors.last().unwrap(),
        (span - span_ideal) / span_ideal * 100.0
    );
    Ok(())
}
