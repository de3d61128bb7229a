//! The tower layer in front of a real axum server on a loopback port, driven
//! by real HTTP requests. Police tests run the store on a manual clock, so
//! their numbers are exact; shape tests wait in real time and check only
//! lower bounds (and loose upper ones) on how long requests took.
#![cfg(feature = "tower")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use drip::core::Request as DecideRequest;
use drip::store::KeyStatus;
use drip::tower::RateLimitLayer;
use drip::{
    Decision, Error, Limit, Limiter, ManualClock, MemoryStore, Policy, Rate, Result, Store,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// The key of a request: its `x-client` header, so a test picks the bucket.
fn by_client_header(req: &Request<Body>) -> String {
    req.headers()
        .get("x-client")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The cost of a request: its `x-cost` header, 1 without one.
fn by_cost_header(req: &Request<Body>) -> u64 {
    req.headers()
        .get("x-cost")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(1)
}

/// Serves `/` (answering "ok") behind `layer` on a free loopback port.
async fn serve<L>(layer: L) -> SocketAddr
where
    L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: tower::Service<Request<Body>, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as tower::Service<Request<Body>>>::Response: axum::response::IntoResponse + 'static,
    <L::Service as tower::Service<Request<Body>>>::Future: Send + 'static,
{
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response with its body read.
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// GET `/` as client `key`, with extra headers.
async fn get_as(http: &HttpClient, addr: SocketAddr, key: &str, extra: &[(&str, &str)]) -> Answer {
    let mut req = Request::get(format!("http://{addr}/")).header("x-client", key);
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    let res: Response<_> = http.request(req.body(Empty::new()).unwrap()).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

async fn memory_limiter(policy: Policy) -> (Limiter<MemoryStore<ManualClock>>, ManualClock) {
    let clock = ManualClock::new(0);
    let limiter = Limiter::new(MemoryStore::with_clock(clock.clone()));
    limiter.configure("api", policy).await.unwrap();
    (limiter, clock)
}

fn limit(per_second: u64, capacity: u64) -> Limit {
    Limit::new(Rate::per_second(per_second).unwrap(), capacity).unwrap()
}

#[tokio::test]
async fn police_admits_the_capacity_then_answers_429_with_retry_after() {
    let (limiter, clock) = memory_limiter(Policy::police(limit(1, 3))).await;
    let addr = serve(RateLimitLayer::new(limiter, "api", by_client_header)).await;
    let http = client();

    for (i, left) in [2, 1, 0].into_iter().enumerate() {
        let a = get_as(&http, addr, "alice", &[]).await;
        assert_eq!(a.status, StatusCode::OK, "request {i}");
        assert_eq!(&a.body[..], b"ok");
        let expected = format!("\"api\";r={left};t={}", i + 1);
        assert_eq!(a.header("ratelimit"), Some(expected.as_str()));
        assert_eq!(a.header("retry-after"), None);
    }

    let a = get_as(&http, addr, "alice", &[]).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(a.body.is_empty());
    let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(retry, 1, "one unit leaks in 1 s");
    // 3 units, draining at 1/s: 3 s from full to empty.
    assert_eq!(a.header("ratelimit-policy"), Some("\"api\";q=3;w=3"));
    assert_eq!(a.header("ratelimit"), Some("\"api\";r=0;t=3"));

    // A second later one unit has leaked: one more request fits.
    clock.advance_ms(1000);
    assert_eq!(
        get_as(&http, addr, "alice", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_as(&http, addr, "alice", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn retry_after_rounds_up_to_whole_seconds() {
    // 2 per minute: a unit leaks every 30 s.
    let rate = Rate::per_minute(2).unwrap();
    let (limiter, clock) = memory_limiter(Policy::police(Limit::new(rate, 1).unwrap())).await;
    let addr = serve(RateLimitLayer::new(limiter, "api", by_client_header)).await;
    let http = client();

    assert_eq!(get_as(&http, addr, "k", &[]).await.status, StatusCode::OK);
    clock.advance(Duration::from_millis(10_500));
    let a = get_as(&http, addr, "k", &[]).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        a.header("retry-after"),
        Some("20"),
        "19.5 s rounds up to 20"
    );
    assert_eq!(a.header("ratelimit-policy"), Some("\"api\";q=1;w=30"));
    assert_eq!(a.header("ratelimit"), Some("\"api\";r=0;t=20"));
}

#[tokio::test]
async fn separate_keys_are_separate_buckets() {
    let (limiter, _clock) = memory_limiter(Policy::police(limit(1, 1))).await;
    let addr = serve(RateLimitLayer::new(
        limiter.clone(),
        "api",
        by_client_header,
    ))
    .await;
    let http = client();

    assert_eq!(get_as(&http, addr, "a", &[]).await.status, StatusCode::OK);
    assert_eq!(
        get_as(&http, addr, "a", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let b = get_as(&http, addr, "b", &[]).await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(b.header("ratelimit"), Some("\"api\";r=0;t=1"));
    assert_eq!(
        get_as(&http, addr, "b", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    let a = limiter.status("api", "a").await.unwrap();
    assert_eq!((a.counters.allowed, a.counters.rejected), (1, 1));
}

#[tokio::test]
async fn a_cost_the_bucket_can_never_admit_is_413_without_retry_after() {
    let (limiter, _clock) = memory_limiter(Policy::police(limit(1, 3))).await;
    let layer = RateLimitLayer::new(limiter, "api", by_client_header).cost(by_cost_header);
    let addr = serve(layer).await;
    let http = client();

    let a = get_as(&http, addr, "k", &[("x-cost", "4")]).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.header("retry-after"), None);
    assert_eq!(a.header("ratelimit-policy"), Some("\"api\";q=3;w=3"));
    assert!(a.body.is_empty());

    // Nothing was taken: the whole capacity is still there.
    let a = get_as(&http, addr, "k", &[("x-cost", "3")]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("ratelimit"), Some("\"api\";r=0;t=3"));
    let a = get_as(&http, addr, "k", &[("x-cost", "2")]).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.header("retry-after"), Some("2"));
}

#[tokio::test]
async fn a_bucket_that_is_not_configured_is_500() {
    let (limiter, _clock) = memory_limiter(Policy::police(limit(1, 3))).await;
    let addr = serve(RateLimitLayer::new(limiter, "nope", by_client_header)).await;
    let a = get_as(&client(), addr, "k", &[]).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(a.body.is_empty());
}

/// A store that cannot be reached.
struct Unreachable;

impl Store for Unreachable {
    async fn configure(&self, _: &str, _: Policy, _: bool) -> Result<()> {
        Err(Error::Store("connection refused".into()))
    }
    async fn policy(&self, _: &str) -> Result<Option<Policy>> {
        Err(Error::Store("connection refused".into()))
    }
    async fn decide(&self, _: &str, _: &str, _: DecideRequest) -> Result<Decision> {
        Err(Error::Store("connection refused".into()))
    }
    async fn status(&self, _: &str, _: &str) -> Result<KeyStatus> {
        Err(Error::Store("connection refused".into()))
    }
    async fn delete(&self, _: &str) -> Result<bool> {
        Err(Error::Store("connection refused".into()))
    }
    async fn list(&self) -> Result<Vec<(String, Policy)>> {
        Err(Error::Store("connection refused".into()))
    }
}

#[tokio::test]
async fn a_failing_store_is_503() {
    let limiter = Limiter::new(Unreachable);
    let addr = serve(RateLimitLayer::new(limiter, "api", by_client_header)).await;
    let a = get_as(&client(), addr, "k", &[]).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shape_delays_requests_instead_of_rejecting_them() {
    // Real time: 10/s, so a unit leaks every 100 ms.
    let limiter = Limiter::memory();
    limiter
        .configure("api", Policy::shape(limit(10, 5)))
        .await
        .unwrap();
    let addr = serve(RateLimitLayer::new(limiter, "api", by_client_header)).await;
    let http = client();

    let start = Instant::now();
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let http = http.clone();
            tokio::spawn(async move {
                let a = get_as(&http, addr, "k", &[]).await;
                (a.status, a.header("ratelimit").is_some(), start.elapsed())
            })
        })
        .collect();
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    for (status, has_ratelimit, _) in &done {
        assert_eq!(*status, StatusCode::OK);
        assert!(has_ratelimit);
    }
    let mut elapsed: Vec<Duration> = done.iter().map(|d| d.2).collect();
    elapsed.sort();
    // The second and third left 100 ms and 200 ms after the first was
    // admitted (which was after `start`); a little slack for rounding.
    assert!(elapsed[1] >= Duration::from_millis(95), "{elapsed:?}");
    assert!(elapsed[2] >= Duration::from_millis(195), "{elapsed:?}");
    assert!(elapsed[2] < Duration::from_secs(10), "{elapsed:?}");
}

#[tokio::test]
async fn shape_answers_429_when_the_queue_is_full() {
    // The store's clock stands still: the queue only fills. 10/s, so the
    // second request waits 100 ms (real time) for its turn.
    let (limiter, _clock) = memory_limiter(Policy::shape(limit(10, 2))).await;
    let addr = serve(RateLimitLayer::new(limiter, "api", by_client_header)).await;
    let http = client();

    let start = Instant::now();
    assert_eq!(get_as(&http, addr, "k", &[]).await.status, StatusCode::OK);
    let a = get_as(&http, addr, "k", &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(95));
    assert_eq!(a.header("ratelimit"), Some("\"api\";r=0;t=1"));

    let a = get_as(&http, addr, "k", &[]).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.header("retry-after"), Some("1"));
    assert_eq!(a.header("ratelimit-policy"), Some("\"api\";q=2;w=1"));
    // Another key has its own queue.
    assert_eq!(
        get_as(&http, addr, "other", &[]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn max_wait_holds_requests_only_as_long_as_allowed() {
    // Police, capacity 1 at 10/s, on a clock that stands still: the second
    // request may go in 100 ms and waits for it; the third would have to
    // wait 200 ms, more than the 150 ms allowed.
    let (limiter, _clock) = memory_limiter(Policy::police(limit(10, 1))).await;
    let layer =
        RateLimitLayer::new(limiter, "api", by_client_header).max_wait(Duration::from_millis(150));
    let addr = serve(layer).await;
    let http = client();

    let start = Instant::now();
    assert_eq!(get_as(&http, addr, "k", &[]).await.status, StatusCode::OK);
    assert_eq!(get_as(&http, addr, "k", &[]).await.status, StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(95));
    let a = get_as(&http, addr, "k", &[]).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn with_max_wait_a_shaped_queue_is_bounded_by_the_wait_not_the_capacity() {
    // Shape, capacity 2 at 10/s, clock standing still, 250 ms allowed: turns
    // at 0, 100 and 200 ms all come within it, so three requests go although
    // the bucket holds two; the fourth (300 ms) is refused.
    let (limiter, _clock) = memory_limiter(Policy::shape(limit(10, 2))).await;
    let layer =
        RateLimitLayer::new(limiter, "api", by_client_header).max_wait(Duration::from_millis(250));
    let addr = serve(layer).await;
    let http = client();

    let start = Instant::now();
    for _ in 0..3 {
        assert_eq!(get_as(&http, addr, "k", &[]).await.status, StatusCode::OK);
    }
    assert!(start.elapsed() >= Duration::from_millis(195));
    let a = get_as(&http, addr, "k", &[]).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.header("retry-after"), Some("1"));
}
