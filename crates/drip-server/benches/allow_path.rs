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
use axum::body::Body;
use drip::{Limit, Limiter, Policy, Rate};
use drip_server::app::{App, Node};
use http::Request;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn request() -> Request<Body> {
    Request::post("/v1/buckets/x/allow")
        .header("content-type", "application/json")
        .header("host", "127.0.0.1")
        .body(Body::from(r#"{"key":"k"}"#))
        .unwrap()
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let limiter = Limiter::memory();
        let policy = Policy::police(Limit::new(Rate::per_second(1_000_000_000).unwrap(), u64::from(u32::MAX)).unwrap());
        limiter.configure("x", policy).await.unwrap();
        let node = Node {
            id: "bench".into(),
            http: "127.0.0.1:0".into(),
            grpc: "127.0.0.1:0".into(),
        };
        let app = App::new(limiter, None, node, CancellationToken::new(), None);
        let drip = drip_server::http::router(app);
        let hello = Router::new().fallback(|| async { "Hello, World!" });
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
