//! `drip proxy` as a real process in front of a real upstream (an axum app
//! on loopback): keys, 429 headers, forwarded headers, streaming, shape
//! mode's rate and order, timeouts, shared stores, a broken upstream.

mod proxy_support;

#[cfg(feature = "redis")]
#[path = "../../drip/tests/redis_support/mod.rs"]
mod redis_support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use proxy_support::{Proc, client_from, free_port, sha256_hex, upstream, upstream_on};
use serde_json::Value;

/// A slow leak: within a test, the bucket only fills.
const SLOW: &str = "0.001";

async fn get(client: &reqwest::Client, url: &str) -> reqwest::Response {
    client.get(url).send().await.unwrap()
}

/// Sends `n` requests to `url` and returns their status codes.
async fn statuses(client: &reqwest::Client, url: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(client, url).await.status().as_u16());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn police_per_ip_with_429_headers() {
    let up = upstream().await;
    let proxy = Proc::proxy(&[
        "--upstream",
        &up.url(),
        "--capacity",
        "3",
        "--leak-rate",
        SLOW,
    ]);
    let (a, b) = (client_from("127.0.0.1"), client_from("127.0.0.2"));
    let url = proxy.url("/hello");

    let ok = get(&a, &url).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["ratelimit"], "\"proxy\";r=2;t=1000");
    assert_eq!(ok.text().await.unwrap(), "hello");
    assert_eq!(statuses(&a, &url, 2).await, [200, 200]);

    let refused = get(&a, &url).await;
    assert_eq!(refused.status(), 429);
    let h = refused.headers();
    assert_eq!(h["retry-after"], "1000");
    assert_eq!(h["ratelimit-policy"], "\"proxy\";q=3;w=3000");
    assert_eq!(h["ratelimit"], "\"proxy\";r=0;t=3000");
    assert_eq!(h["content-type"], "application/json");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // One unit leaks in 1000 s, less the few ms since the first request.
    let retry_ms = body["retry_after_ms"].as_u64().unwrap();
    assert!((990_000..=1_000_000).contains(&retry_ms), "{retry_ms}");

    // Another client address has its own bucket.
    assert_eq!(statuses(&b, &url, 4).await, [200, 200, 200, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_const_keys() {
    let up = upstream().await;
    let by_header = Proc::proxy(&[
        "--upstream",
        &up.url(),
        "--capacity",
        "2",
        "--leak-rate",
        SLOW,
        "--key",
        "header:x-api-key",
    ]);
    let c = reqwest::Client::new();
    let send = |key: &'static str| {
        let c = c.clone();
        let url = by_header.url("/hello");
        async move {
            c.get(url)
                .header("x-api-key", key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        [
            send("alice").await,
            send("alice").await,
            send("alice").await
        ],
        [200, 200, 429]
    );
    assert_eq!(
        [send("bob").await, send("bob").await, send("bob").await],
        [200, 200, 429]
    );

    // const: two client addresses share one bucket.
    let shared = Proc::proxy(&[
        "--upstream",
        &up.url(),
        "--capacity",
        "2",
        "--leak-rate",
        SLOW,
        "--key",
        "const",
    ]);
    let url = shared.url("/hello");
    assert_eq!(statuses(&client_from("127.0.0.1"), &url, 1).await, [200]);
    assert_eq!(
        statuses(&client_from("127.0.0.3"), &url, 2).await,
        [200, 429]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_ignored_unless_trusted() {
    let up = upstream().await;
    let args = [
        "--upstream",
        &up.url(),
        "--capacity",
        "1",
        "--leak-rate",
        SLOW,
    ];
    let c = reqwest::Client::new();

    // Untrusted: a client changing X-Forwarded-For still has one bucket.
    let untrusted = Proc::proxy(&args);
    let send = |p: &Proc, xff: &str| c.get(p.url("/hello")).header("x-forwarded-for", xff).send();
    assert_eq!(send(&untrusted, "1.1.1.1").await.unwrap().status(), 200);
    // The proxy appends the address it got the request from.
    assert_eq!(
        up.seen.xff.lock().unwrap().as_deref(),
        Some("1.1.1.1, 127.0.0.1")
    );
    assert_eq!(send(&untrusted, "2.2.2.2").await.unwrap().status(), 429);

    // Behind one trusted proxy: the last hop is the client.
    let mut trusted_args = args.to_vec();
    trusted_args.extend(["--trust-forwarded", "1"]);
    let trusted = Proc::proxy(&trusted_args);
    assert_eq!(send(&trusted, "1.1.1.1").await.unwrap().status(), 200);
    assert_eq!(send(&trusted, "2.2.2.2").await.unwrap().status(), 200);
    assert_eq!(
        send(&trusted, "9.9.9.9, 2.2.2.2").await.unwrap().status(),
        429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabyte_bodies_stream_through_unchanged() {
    let up = upstream().await;
    let proxy = Proc::proxy(&[
        "--upstream",
        &up.url(),
        "--capacity",
        "100",
        "--leak-rate",
        "100",
    ]);
    let c = reqwest::Client::new();
    // Warm up (runtime, pools), then measure what the bodies add.
    assert_eq!(get(&c, &proxy.url("/hello")).await.status(), 200);
    let before = proxy.peak_rss();

    // Request body: 10 MB up, hashed by the upstream as it streams in.
    let body = up.big.clone();
    let want = format!("{} {}", body.len(), sha256_hex(&body));
    let r = c.post(proxy.url("/sum")).body(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), want);

    // Response body: 10 MB down, hashed as it streams in.
    let r = get(&c, &proxy.url("/big")).await;
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut got = Vec::new();
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got.len(), up.big.len());
    assert_eq!(sha256_hex(&got), sha256_hex(&up.big));

    // Neither body was held whole: the peak grew by far less than 10 MB.
    let grown = proxy.peak_rss().saturating_sub(before);
    eprintln!(
        "proxy peak RSS grew by {} KiB for two 10 MB bodies",
        grown / 1024
    );
    assert!(grown < 4 * 1024 * 1024, "peak RSS grew by {grown} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shape_releases_at_the_rate_in_fifo_order() {
    let up = upstream().await;
    // 5/s: 26 requests leave over 25 intervals, 5 s.
    let proxy = Proc::proxy(&[
        "--upstream",
        &up.url(),
        "--capacity",
        "1",
        "--leak-rate",
        "5",
        "--mode",
        "shape",
        "--key",
        "const",
    ]);
    let c = reqwest::Client::new();
    let n = 26u64;
    let mut tasks = Vec::new();
    for i in 0..n {
        let req = c.get(proxy.url("/seq")).header("x-seq", i.to_string());
        tasks.push(tokio::spawn(async move {
            req.send().await.unwrap().status().as_u16()
        }));
        // Arrivals 40 ms apart (5x faster than the rate), so their order is known.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let seen = up.seen.seq.lock().unwrap().clone();
    let order: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(
        order,
        (0..n).collect::<Vec<_>>(),
        "departures out of arrival order"
    );
    let span = seen.last().unwrap().1 - seen[0].1;
    let ideal = Duration::from_millis(200) * (n as u32 - 1);
    let error = (span.as_secs_f64() - ideal.as_secs_f64()).abs() / ideal.as_secs_f64();
    eprintln!(
        "{} departures over {span:?} (ideal {ideal:?}): error {:.2}%",
        n,
        error * 100.0
    );
    assert!(error < 0.05, "span {span:?} vs ideal {ideal:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_timeout_answers_429_at_once() {
    let up = upstream().await;
    let proxy = Proc::proxy(&[
        "--upstream",
        &up.url(),
        "--capacity",
        "1",
        "--leak-rate",
        "1",
        "--mode",
        "shape",
        "--queue-timeout",
        "500ms",
    ]);
    let c = reqwest::Client::new();
    assert_eq!(get(&c, &proxy.url("/hello")).await.status(), 200);
    // The next turn is 1 s away, beyond the 500 ms timeout.
    let t = Instant::now();
    let r = get(&c, &proxy.url("/hello")).await;
    let took = t.elapsed();
    assert_eq!(r.status(), 429);
    assert!(took < Duration::from_millis(300), "took {took:?}");
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.headers().contains_key("ratelimit-policy"));
}

/// 30 requests alternating between two proxies on `store`: exactly the
/// capacity (10) is admitted.
async fn two_proxies_share(store: &str) {
    let up = upstream().await;
    let args = [
        "--upstream",
        &up.url(),
        "--capacity",
        "10",
        "--leak-rate",
        SLOW,
        "--key",
        "const",
        "--store",
        store,
    ];
    let (p1, p2) = (Proc::proxy(&args), Proc::proxy(&args));
    let c = reqwest::Client::new();
    let mut admitted = 0;
    for i in 0..30 {
        let p = if i % 2 == 0 { &p1 } else { &p2 };
        if get(&c, &p.url("/hello")).await.status() == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10);
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_on_one_sqlite_file_share_one_limit() {
    let dir = std::env::temp_dir().join(format!("drip-proxy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shared.db");
    two_proxies_share(&format!("sqlite:{}", path.display())).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_on_one_redis_share_one_limit() {
    if !redis_support::available() {
        return;
    }
    let redis = redis_support::RedisServer::start();
    two_proxies_share(&redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502_slow_is_504_and_the_proxy_stays_up() {
    let port = free_port();
    let mut proxy = Proc::proxy(&[
        "--upstream",
        &format!("http://127.0.0.1:{port}"),
        "--capacity",
        "100",
        "--leak-rate",
        "100",
        "--upstream-timeout",
        "300ms",
    ]);
    let c = reqwest::Client::new();
    for _ in 0..5 {
        let r = get(&c, &proxy.url("/hello")).await;
        assert_eq!(r.status(), 502);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "upstream_unreachable");
    }
    assert!(proxy.alive());

    // The upstream comes up on that port: the same proxy forwards again.
    let _up = upstream_on(
        tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap(),
    );
    assert_eq!(get(&c, &proxy.url("/hello")).await.status(), 200);

    let t = Instant::now();
    let r = get(&c, &proxy.url("/slow?ms=3000")).await;
    assert_eq!(r.status(), 504);
    assert!(t.elapsed() < Duration::from_secs(2));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert_eq!(get(&c, &proxy.url("/hello")).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_metrics_and_graceful_shutdown() {
    let up = upstream().await;
    let mut proxy = Proc::proxy(&[
        "--upstream",
        &up.url(),
        "--capacity",
        "1",
        "--leak-rate",
        SLOW,
        "--metrics",
        "127.0.0.1:0",
    ]);
    // A cleartext HTTP/2 client is served too.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = get(&h2, &proxy.url("/hello")).await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello");
    assert_eq!(get(&h2, &proxy.url("/hello")).await.status(), 429);

    let metrics_url = format!("http://{}/metrics", proxy.metrics.as_ref().unwrap());
    let text = get(&reqwest::Client::new(), &metrics_url)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"drip_decisions_total{bucket="proxy",outcome="allowed"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"drip_decisions_total{bucket="proxy",outcome="limited"} 1"#));

    proxy.signal("TERM");
    assert!(proxy.wait_exit(Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_bytes_charges_the_declared_body_length() {
    let up = upstream().await;
    let proxy = Proc::proxy(&[
        "--upstream",
        &up.url(),
        "--capacity",
        "100",
        "--leak-rate",
        SLOW,
        "--key",
        "const",
        "--cost",
        "bytes",
    ]);
    let c = reqwest::Client::new();
    let post = |body: reqwest::Body| c.post(proxy.url("/sum")).body(body).send();
    assert_eq!(post(vec![1u8; 60].into()).await.unwrap().status(), 200);
    // No body: costs 1.
    assert_eq!(get(&c, &proxy.url("/hello")).await.status(), 200);
    let r = post(vec![1u8; 60].into()).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
    let r = post(vec![1u8; 200].into()).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "exceeds_capacity"
    );
    // A chunked body cannot be charged before it is read.
    let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(vec![1u8; 10])]);
    let r = post(reqwest::Body::wrap_stream(chunks)).await.unwrap();
    assert_eq!(r.status(), 411);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "length_required"
    );
}

/// A client that gives up while queued gives its place back (the proxy's
/// shape-mode policy lists its waiters, and the leaver's place is the last):
/// the next request takes that turn, and the abandoned wait is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_the_queue_gives_its_place_back() {
    let up = upstream().await;
    let proxy = Proc::proxy(&[
        "--upstream",
        &up.url(),
        "--capacity",
        "2",
        "--leak-rate",
        "2",
        "--mode",
        "shape",
        "--key",
        "const",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let c = reqwest::Client::new();
    let t = Instant::now();
    assert_eq!(get(&c, &proxy.url("/hello")).await.status(), 200);
    // Its turn is 500 ms away (second of a queue of 2); it leaves after
    // 100 ms.
    let gone = c
        .get(proxy.url("/hello"))
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(gone.is_err());
    // Counted once the store has been asked to give the place back.
    let url = format!("http://{}/metrics", proxy.metrics.as_ref().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = get(&c, &url).await.text().await.unwrap();
        if text.contains("drip_acquire_cancelled_total 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no cancelled wait counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next request takes the leaver's turn, 500 ms after the first,
    // not the one after it (1 s).
    assert_eq!(get(&c, &proxy.url("/hello")).await.status(), 200);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_millis(950),
        "went after {waited:?}"
    );
}
