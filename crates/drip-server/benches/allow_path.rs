//! The HTTP allow path in process, without the network: the time to answer
//! `POST /v1/buckets/x/allow` through `drip serve`'s whole router (routing,
//! extractors, the decision, metrics, the JSON answer and its headers)
//! beside the axum hello-world of `scripts/bench-server.sh` answering the
//! same request, in alternating blocks (as `drip`'s `benches/paired.rs`).
//! What wrk measures adds the kernel's TCP and hyper's HTTP/1 codec to
//! both; this is the part that differs, measured without their noise.
//!
//! Run: `cargo bench -p drip-server --bench allow_path` (`ALLOW_ROUNDS`,
//! `ALLOW_BLOCK` change the rounds and block size; `ALLOW_PROFILE=1` runs
//! drip's router alone, for `perf record`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::Router;
use tower::ServiceExt;

#[path = "support/allow.rs"]
mod support;

use support::request;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` requests through `router`, one after another; the time taken.
async fn block(router: &Router, n: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let res = router.clone().oneshot(request()).await.unwrap();
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        black_box(body);
    }
    start.elapsed()
}

fn main() {
    let rounds = env("ALLOW_ROUNDS", 21).max(2);
    let n = env("ALLOW_BLOCK", 20_000).max(1);
    support::runtime().block_on(async {
        let (drip, hello) = support::routers().await;
        let res = drip.clone().oneshot(request()).await.unwrap();
        assert_eq!(res.status(), 200, "the allow request must be admitted");
        if std::env::var_os("ALLOW_PROFILE").is_some() {
            for _ in 0..rounds {
                block(&drip, n).await;
            }
            return;
        }
        let (mut d, mut h, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (td, th) = if round % 2 == 0 {
                let td = block(&drip, n).await;
                (td, block(&hello, n).await)
            } else {
                let th = block(&hello, n).await;
                (block(&drip, n).await, th)
            };
            if round == 0 {
                continue; // warm-up
            }
            let per = |t: Duration| t.as_nanos() as f64 / n as f64;
            d.push(per(td));
            h.push(per(th));
            ratios.push(per(th) / per(td));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "allow in process: drip {:.0} ns/request, axum hello-world {:.0} ns/request; hello/drip {:.2} (median of {} rounds of {n})",
            median(&mut d),
            median(&mut h),
            median(&mut ratios),
            rounds - 1
        );
    });
}
