//! Every HTTP endpoint of the contract (DESIGN.md §4), through the real
//! server on a loopback port.

mod common;
#[cfg(feature = "redis")]
#[path = "../../drip/tests/redis_support/mod.rs"]
mod redis_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::TestServer;
use drip_server::server::Options;
use serde_json::{Value, json};

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const STATUS_FIELDS: &[&str] = &[
    "bucket_id",
    "key",
    "mode",
    "capacity",
    "leak_rate",
    "windows",
    "level",
    "queue_size",
    "total_requests",
    "allowed_requests",
    "rejected_requests",
    "processed_requests",
    "counter_retention_s",
    "track_queue",
];

const DECISION_FIELDS: &[&str] = &[
    "allowed",
    "queue_position",
    "estimated_wait_ms",
    "remaining",
    "retry_after_ms",
    "reset_after_ms",
    "request_id",
];

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn configure_allow_status_list_delete(s: TestServer) {
    let r = s
        .put(
            "api",
            json!({"mode": "police", "capacity": 3, "leak_rate": 1.5,
                   "windows": [{"limit": 1000, "period_s": 3600}], "reset": false}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(keys(&v), set(STATUS_FIELDS));
    assert_eq!(v["bucket_id"], "api");
    assert_eq!(v["key"], "");
    assert_eq!(v["leak_rate"], 1.5);
    assert_eq!(v["windows"], json!([{"limit": 1000, "period_s": 3600.0}]));

    // allow: body optional, key and cost default.
    let r = s
        .client
        .post(s.url("/v1/buckets/api/allow"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // t: the hour-long window is what takes longest to be full again.
    assert_eq!(header(&r, "ratelimit").unwrap(), "\"api\";r=2;t=3600");
    let v: Value = r.json().await.unwrap();
    assert_eq!(keys(&v), set(DECISION_FIELDS));
    assert_eq!(v["allowed"], true);
    assert_eq!(v["remaining"], 2);

    let r = s
        .post("/v1/buckets/api/allow", json!({"key": "u1", "cost": 2}))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["remaining"], 1);

    let (code, v) = s.get_json("/v1/buckets/api?key=u1").await;
    assert_eq!(code, 200);
    assert_eq!(keys(&v), set(STATUS_FIELDS));
    assert_eq!(
        (v["key"].as_str(), v["allowed_requests"].as_u64()),
        (Some("u1"), Some(1))
    );
    assert_eq!(v["total_requests"], 1);
    assert!(v["level"].as_f64().unwrap() > 1.0);
    let (_, v) = s.get_json("/v1/buckets/api").await;
    assert_eq!(
        (v["key"].as_str(), v["allowed_requests"].as_u64()),
        (Some(""), Some(1))
    );

    s.put("zeta", json!({"capacity": 1, "leak_rate": 1})).await;
    let (code, v) = s.get_json("/v1/buckets").await;
    assert_eq!(code, 200);
    let names: Vec<_> = v["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["bucket_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["api", "zeta"]);
    assert_eq!(keys(&v["buckets"][0]), set(STATUS_FIELDS));

    let r = s
        .client
        .delete(s.url("/v1/buckets/api"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for (method, path) in [
        ("DELETE", "/v1/buckets/api"),
        ("GET", "/v1/buckets/api"),
        ("POST", "/v1/buckets/api/allow"),
        ("POST", "/v1/buckets/api/acquire"),
    ] {
        let r = s
            .client
            .request(method.parse().unwrap(), s.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{method} {path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(v["error"]["field"], "bucket_id");
    }
}

async fn refusals_carry_retry_after_and_ratelimit_fields(s: TestServer) {
    s.put("p", json!({"capacity": 2, "leak_rate": 1})).await;
    for _ in 0..2 {
        let r = s.post("/v1/buckets/p/allow", json!({})).await;
        assert_eq!(r.status(), 200);
        assert!(header(&r, "ratelimit").is_some());
        assert!(header(&r, "retry-after").is_none());
    }
    let r = s.post("/v1/buckets/p/allow", json!({})).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after").unwrap(), "1");
    assert_eq!(header(&r, "ratelimit-policy").unwrap(), "\"p\";q=2;w=2");
    assert_eq!(header(&r, "ratelimit").unwrap(), "\"p\";r=0;t=2");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["allowed"], false);
    let retry = v["retry_after_ms"].as_u64().unwrap();
    assert!((900..=1000).contains(&retry), "{retry}");

    // Shape: a full queue is refused the same way; Retry-After rounds up.
    s.put(
        "q",
        json!({"mode": "shape", "capacity": 3, "leak_rate": 0.5}),
    )
    .await;
    for i in 1..=3 {
        let r = s.post("/v1/buckets/q/allow", json!({})).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["queue_position"], i);
    }
    let r = s.post("/v1/buckets/q/allow", json!({})).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after").unwrap(), "2");
    assert_eq!(header(&r, "ratelimit-policy").unwrap(), "\"q\";q=3;w=6");
    assert_eq!(header(&r, "ratelimit").unwrap(), "\"q\";r=0;t=6");

    // acquire that cannot go within its timeout: 429 at once, same fields.
    let t = Instant::now();
    let r = s
        .post("/v1/buckets/p/acquire", json!({"timeout_ms": 10}))
        .await;
    assert_eq!(r.status(), 429);
    assert!(t.elapsed() < Duration::from_millis(500));
    assert!(header(&r, "retry-after").is_some());
    assert!(header(&r, "ratelimit-policy").is_some());
    assert!(header(&r, "ratelimit").is_some());
}

#[tokio::test]
async fn admin_calls_need_the_token() {
    let s = TestServer::start(
        drip::Limiter::memory(),
        Options {
            admin_token: Some("s3cret".into()),
            ..Options::default()
        },
    )
    .await;
    let body = json!({"capacity": 5, "leak_rate": 1});
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("s3cret"),
        Some("Basic s3cret"),
    ] {
        let mut req = s.client.put(s.url("/v1/buckets/a")).json(&body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert_eq!(header(&r, "www-authenticate").unwrap(), "Bearer");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unauthenticated");
        assert_eq!(v["error"]["field"], "authorization");
    }
    // Nothing changed; and a bad body without the token is still a 401.
    assert_eq!(s.get_json("/v1/buckets/a").await.0, 404);
    let r = s
        .client
        .put(s.url("/v1/buckets/a"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = s
        .client
        .put(s.url("/v1/buckets/a"))
        .bearer_auth("s3cret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Decisions and reads need no token.
    assert_eq!(s.post("/v1/buckets/a/allow", json!({})).await.status(), 200);
    assert_eq!(s.get_json("/v1/buckets/a").await.0, 200);
    assert_eq!(s.get_json("/v1/buckets").await.0, 200);

    let r = s
        .client
        .delete(s.url("/v1/buckets/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(s.get_json("/v1/buckets/a").await.0, 200);
    let r = s
        .client
        .delete(s.url("/v1/buckets/a"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    // gRPC: the same token, as `authorization` metadata.
    use drip_server::grpc::pb;
    let mut g = s.grpc().await;
    let req = || pb::ConfigureBucketRequest {
        bucket_id: "g".into(),
        capacity: 1,
        leak_rate: 1.0,
        ..Default::default()
    };
    let e = g.configure_bucket(req()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let mut ok = tonic::Request::new(req());
    ok.metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    g.configure_bucket(ok).await.unwrap();
    let e = g
        .delete_bucket(pb::DeleteBucketRequest {
            bucket_id: "g".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
}

async fn reconfiguration_is_seen_by_the_next_call(s: TestServer) {
    s.put("r", json!({"capacity": 1, "leak_rate": 0.01})).await;
    assert_eq!(s.post("/v1/buckets/r/allow", json!({})).await.status(), 200);
    assert_eq!(s.post("/v1/buckets/r/allow", json!({})).await.status(), 429);

    // Bigger bucket, water kept: the next call fits.
    let v: Value = s
        .put("r", json!({"capacity": 3, "leak_rate": 0.01}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["capacity"].as_u64(), v["queue_size"].as_u64()),
        (Some(3), Some(1))
    );
    let r = s.post("/v1/buckets/r/allow", json!({})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["remaining"], 1);

    // Shape mode: the next call is queued behind the water.
    s.put(
        "r",
        json!({"mode": "shape", "capacity": 3, "leak_rate": 0.01}),
    )
    .await;
    let v: Value = s
        .post("/v1/buckets/r/allow", json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["queue_position"], 3);
    assert!(v["estimated_wait_ms"].as_u64().unwrap() > 100_000);

    // reset: every key empty.
    let v: Value = s
        .put(
            "r",
            json!({"capacity": 1, "leak_rate": 0.01, "reset": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["mode"].as_str(), v["level"].as_f64()),
        (Some("police"), Some(0.0))
    );
    assert_eq!(s.post("/v1/buckets/r/allow", json!({})).await.status(), 200);
}

async fn windows_and_costs(s: TestServer) {
    s.put(
        "w",
        json!({"capacity": 10, "leak_rate": 100, "windows": [{"limit": 3, "period_s": 3600}]}),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(s.post("/v1/buckets/w/allow", json!({})).await.status(), 200);
    }
    let r = s.post("/v1/buckets/w/allow", json!({})).await;
    assert_eq!(r.status(), 429);
    let secs: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&secs), "{secs}");
    // Other keys are other buckets.
    assert_eq!(
        s.post("/v1/buckets/w/allow", json!({"key": "other", "cost": 3}))
            .await
            .status(),
        200
    );
}

async fn acquire_waits_for_the_turn(s: TestServer) {
    // Shape: five ahead at 10/s, so the sixth goes after ~500 ms.
    s.put(
        "s",
        json!({"mode": "shape", "capacity": 10, "leak_rate": 10}),
    )
    .await;
    let t = Instant::now();
    for _ in 0..5 {
        s.post("/v1/buckets/s/allow", json!({})).await;
    }
    let r = s
        .post("/v1/buckets/s/acquire", json!({"timeout_ms": 5000}))
        .await;
    let waited = t.elapsed();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "ratelimit").is_some());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["queue_position"], 6);
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    let wait = v["estimated_wait_ms"].as_u64().unwrap();
    assert!((400..=500).contains(&wait), "{wait}");

    // Police: waits until admitted.
    s.put("p", json!({"capacity": 1, "leak_rate": 5})).await;
    s.post("/v1/buckets/p/allow", json!({})).await;
    let t = Instant::now();
    let r = s.post("/v1/buckets/p/acquire", json!({})).await;
    assert_eq!(r.status(), 200);
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_is_cancelled_when_the_client_goes_away() {
    let s = TestServer::memory().await;
    s.put(
        "slow",
        json!({"mode": "shape", "capacity": 1, "leak_rate": 0.1}),
    )
    .await;
    s.post("/v1/buckets/slow/allow", json!({})).await;
    let cancelled = "drip_acquire_cancelled_total";
    assert_eq!(s.metric(cancelled).await, Some(0.0));

    // HTTP: the client gives up after 200 ms; its connection closes.
    let e = s
        .client
        .post(s.url("/v1/buckets/slow/acquire"))
        .json(&json!({"timeout_ms": 60000}))
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_timeout());
    wait_for_metric(&s, cancelled, 1.0).await;

    // gRPC: the call is dropped, so its stream is reset.
    let mut g = s.grpc().await;
    let call = g.acquire(drip_server::grpc::pb::AcquireRequest {
        bucket_id: "slow".into(),
        timeout_ms: Some(60000),
        ..Default::default()
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(200), call)
            .await
            .is_err()
    );
    wait_for_metric(&s, cancelled, 2.0).await;

    // The server still answers.
    assert_eq!(s.get_json("/healthz").await.0, 200);
}

async fn wait_for_metric(s: &TestServer, name: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.metric(name).await != Some(value) {
        assert!(Instant::now() < deadline, "{name} never reached {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_waiters_and_finishes() {
    let mut s = TestServer::memory().await;
    s.put(
        "slow",
        json!({"mode": "shape", "capacity": 1, "leak_rate": 0.1}),
    )
    .await;
    s.post("/v1/buckets/slow/allow", json!({})).await;
    let http_waiter = tokio::spawn({
        let client = s.client.clone();
        let url = s.url("/v1/buckets/slow/acquire");
        async move {
            let r = client
                .post(url)
                .json(&json!({"timeout_ms": 60000}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    });
    let mut g = s.grpc().await;
    let grpc_waiter = tokio::spawn(async move {
        g.acquire(drip_server::grpc::pb::AcquireRequest {
            bucket_id: "slow".into(),
            timeout_ms: Some(60000),
            ..Default::default()
        })
        .await
    });
    // Both are waiting once the store has admitted (reserved) them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.get_json("/v1/buckets/slow").await.1["allowed_requests"] != 3 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = Instant::now();
    s.begin_shutdown();
    let (code, v) = http_waiter.await.unwrap();
    assert_eq!(code, 503);
    assert_eq!(v["error"]["code"], "shutting_down");
    let e = grpc_waiter.await.unwrap().unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    s.stop().await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn cluster_of_one() {
    let s = TestServer::memory().await;
    let (code, v) = s.get_json("/v1/cluster").await;
    assert_eq!(code, 200);
    assert_eq!(keys(&v), set(&["node_id", "leader", "nodes"]));
    let id = v["node_id"].as_str().unwrap().to_owned();
    assert!(id.ends_with(&format!(":{}", s.http.port())), "{id}");
    assert_eq!(v["leader"], id.as_str());
    let node = &v["nodes"][0];
    assert_eq!(
        keys(node),
        set(&["node_id", "http", "grpc", "last_seen_ms", "alive"])
    );
    assert_eq!(node["http"], s.http.to_string());
    assert_eq!(node["grpc"], s.grpc.to_string());
    assert_eq!(node["alive"], true);
    assert_eq!(v["nodes"].as_array().unwrap().len(), 1);
    let (code, v) = s.get_json("/v1/cluster/leader").await;
    assert_eq!(code, 200);
    assert_eq!(v, json!({"leader": id}));

    let named = TestServer::start(
        drip::Limiter::memory(),
        Options {
            node_id: Some("node-a".into()),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(
        named.get_json("/v1/cluster/leader").await.1["leader"],
        "node-a"
    );
}

#[tokio::test]
async fn service_pages() {
    let s = TestServer::memory().await;
    assert_eq!(s.get_json("/healthz").await, (200, json!({"status": "ok"})));
    assert_eq!(
        s.get_json("/readyz").await,
        (200, json!({"status": "ready"}))
    );

    s.put("m", json!({"capacity": 1, "leak_rate": 1})).await;
    s.post("/v1/buckets/m/allow", json!({})).await;
    s.post("/v1/buckets/m/allow", json!({})).await;
    let r = s.client.get(s.url("/metrics")).send().await.unwrap();
    assert!(
        header(&r, "content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for line in [
        "drip_decisions_total{bucket=\"m\",outcome=\"allowed\"} 1",
        "drip_decisions_total{bucket=\"m\",outcome=\"limited\"} 1",
        "drip_decision_duration_seconds_count 2",
        "drip_store_errors_total{op=\"decide\"} 0",
        "drip_keys_held 1",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    assert!(
        text.contains("drip_decision_duration_seconds_bucket{le="),
        "{text}"
    );

    // Each server has its own metrics, though they share a process.
    let other = TestServer::memory().await;
    assert_eq!(other.metric("drip_decisions_total").await, None);

    let (code, doc) = s.get_json("/openapi.json").await;
    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/buckets",
        "/v1/buckets/{bucket}",
        "/v1/buckets/{bucket}/allow",
        "/v1/buckets/{bucket}/acquire",
        "/v1/cluster",
        "/v1/cluster/leader",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    for method in ["get", "put", "delete"] {
        assert!(doc["paths"]["/v1/buckets/{bucket}"].get(method).is_some());
    }
    assert!(doc["components"]["schemas"].get("ConfigureBody").is_some());

    let r = s.client.get(s.url("/docs/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().to_lowercase().contains("swagger"));
    let r = s
        .client
        .get(s.url("/docs/swagger-ui.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = s.client.get(s.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").unwrap().starts_with("text/html"));
    let html = r.text().await.unwrap();
    // The live dashboard: its buckets come over /v1/events (tests/dashboard.rs).
    for part in [
        "/dashboard/uPlot.iife.min.js",
        "/v1/events",
        "href=\"/docs\"",
        "href=\"/metrics\"",
    ] {
        assert!(html.contains(part), "{part} not in\n{html}");
    }
}

#[tokio::test]
async fn status_command_prints_a_table() {
    let s = TestServer::memory().await;
    s.put(
        "alpha",
        json!({"mode": "shape", "capacity": 10, "leak_rate": 2}),
    )
    .await;
    for _ in 0..4 {
        s.post("/v1/buckets/alpha/allow", json!({})).await;
    }
    let mut out = Vec::new();
    let args = drip_server::status_cmd::Args {
        url: format!("http://{}", s.http),
    };
    drip_server::status_cmd::run(&args, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut lines = text.lines();
    let head: Vec<_> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        head,
        [
            "bucket",
            "mode",
            "capacity",
            "leak_rate/s",
            "level",
            "queue",
            "allowed",
            "rejected",
            "processed"
        ]
    );
    let row: Vec<_> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["alpha", "shape", "10", "2"]);
    assert_eq!(row[6], "4");
    let level: f64 = row[4].parse().unwrap();
    assert!(level > 3.0 && level <= 4.0, "{text}");

    let bad = drip_server::status_cmd::Args {
        url: "http://127.0.0.1:1".into(),
    };
    let e = drip_server::status_cmd::run(&bad, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("could not reach"), "{e}");
}

/// A store that cannot be reached: not ready, and decisions are 503 /
/// `UNAVAILABLE` without the store's details, counted as store errors.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_503() {
    if !redis_support::available() {
        return;
    }
    let mut redis = redis_support::RedisServer::start();
    let store = drip::store::redis::RedisStore::connect(&redis.url(), Default::default())
        .await
        .unwrap();
    let s = TestServer::start(drip::Limiter::new(store), Options::default()).await;
    s.put("r", json!({"capacity": 5, "leak_rate": 1})).await;
    assert_eq!(s.post("/v1/buckets/r/allow", json!({})).await.status(), 200);
    assert_eq!(s.get_json("/readyz").await.0, 200);

    redis.stop();
    let (code, v) = s.get_json("/readyz").await;
    assert_eq!(code, 503);
    assert_eq!(v["error"]["code"], "unavailable");
    let r = s.post("/v1/buckets/r/allow", json!({})).await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unavailable");
    assert!(
        !v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{v}"
    );
    let e = s
        .grpc()
        .await
        .allow_request(drip_server::grpc::pb::AllowRequestRequest {
            bucket_id: "r".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    let errors = s
        .metric("drip_store_errors_total{op=\"decide\"}")
        .await
        .unwrap();
    assert!(errors >= 2.0, "{errors}");
    assert_eq!(s.get_json("/healthz").await.0, 200);
}

/// The tests above that depend on the store, run on each store.
macro_rules! on_every_store {
    ($($name:ident)*) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::TestServer::memory().await).await;
                }
            )*
        }
        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = std::env::temp_dir().join(format!(
                        "drip-server-http-{}-{}",
                        std::process::id(),
                        stringify!($name)
                    ));
                    let _ = std::fs::remove_dir_all(&dir);
                    std::fs::create_dir_all(&dir).unwrap();
                    let store = drip::store::sqlite::SqliteStore::open(dir.join("drip.db")).unwrap();
                    let server = super::TestServer::start(drip::Limiter::new(store), Default::default()).await;
                    super::$name(server).await;
                    let _ = std::fs::remove_dir_all(&dir);
                }
            )*
        }
        #[cfg(feature = "redis")]
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if !super::redis_support::available() {
                        return;
                    }
                    let redis = super::redis_support::RedisServer::start();
                    let store = drip::store::redis::RedisStore::connect(&redis.url(), Default::default())
                        .await
                        .unwrap();
                    let server = super::TestServer::start(drip::Limiter::new(store), Default::default()).await;
                    super::$name(server).await;
                }
            )*
        }
    };
}

on_every_store!(
    configure_allow_status_list_delete
    refusals_carry_retry_after_and_ratelimit_fields
    reconfiguration_is_seen_by_the_next_call
    windows_and_costs
    acquire_waits_for_the_turn
);
