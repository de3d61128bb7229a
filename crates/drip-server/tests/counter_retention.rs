//! Counters outlive the water (issue 14): a key's counters are kept for a
//! retention after its last request, set per server (`Options`,
//! `--counter-retention`) and per bucket (`counter_retention_s`), through the
//! real server.

mod common;
#[cfg(feature = "redis")]
#[path = "../../drip/tests/redis_support/mod.rs"]
mod redis_support;

use std::time::Duration;

use common::TestServer;
use drip_server::server::Options;
use serde_json::{Value, json};

fn retention_of(status: &Value) -> f64 {
    status["counter_retention_s"].as_f64().unwrap()
}

/// The server's default applies to buckets that do not say; a bucket's
/// own value wins; out-of-range values are refused naming the field.
#[tokio::test]
async fn retention_is_set_per_server_and_per_bucket() {
    let s = TestServer::memory().await;
    let r = s.put("a", json!({"capacity": 5, "leak_rate": 1})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(retention_of(&r.json().await.unwrap()), 60.0);
    let r = s
        .put(
            "b",
            json!({"capacity": 5, "leak_rate": 1, "counter_retention_s": 2.5}),
        )
        .await;
    assert_eq!(retention_of(&r.json().await.unwrap()), 2.5);
    for bad in [json!(-1), json!(2_592_001), json!("60")] {
        let r = s
            .put(
                "c",
                json!({"capacity": 5, "leak_rate": 1, "counter_retention_s": bad}),
            )
            .await;
        assert_eq!(r.status(), 400, "{bad}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["field"], "counter_retention_s", "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("0..=2592000"),
            "{e}"
        );
    }
    s.stop().await.unwrap();

    let options = Options {
        counter_retention: Duration::ZERO,
        ..Options::default()
    };
    let s = TestServer::start(drip::Limiter::memory(), options).await;
    let r = s.put("a", json!({"capacity": 5, "leak_rate": 1})).await;
    assert_eq!(retention_of(&r.json().await.unwrap()), 0.0);
    s.stop().await.unwrap();
}

/// The failing case: a shape bucket of 20 at 100/s, 20 allows spread
/// over two nodes sharing one Redis. Once the state of a bucket without
/// retention has expired (polled: its counters read zero), the bucket with
/// the default retention still reports `queue_size 0, processed 20`.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_queue_keeps_its_counters_on_redis_across_nodes() {
    use std::time::Instant;

    if !redis_support::available() {
        return;
    }
    let redis = redis_support::RedisServer::start();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let store = drip::store::redis::RedisStore::connect(&redis.url(), Default::default())
            .await
            .unwrap();
        nodes.push(TestServer::start(drip::Limiter::new(store), Options::default()).await);
    }
    let shape = |extra: Value| {
        let mut body = json!({"mode": "shape", "capacity": 20, "leak_rate": 100});
        if let Value::Object(m) = extra {
            body.as_object_mut().unwrap().extend(m);
        }
        body
    };
    assert_eq!(nodes[0].put("d", shape(json!({}))).await.status(), 200);
    let zero = shape(json!({"counter_retention_s": 0}));
    assert_eq!(nodes[0].put("z", zero).await.status(), 200);
    for i in 0..20 {
        for bucket in ["d", "z"] {
            let r = nodes[i % 2]
                .post(&format!("/v1/buckets/{bucket}/allow"), json!({}))
                .await;
            assert_eq!(r.status(), 200);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&nodes[1], "z").await["allowed_requests"] != 0 {
        assert!(Instant::now() < deadline, "the state did not expire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in &nodes {
        let d = status(n, "d").await;
        assert_eq!(
            (
                &d["queue_size"],
                &d["allowed_requests"],
                &d["processed_requests"]
            ),
            (&json!(0), &json!(20), &json!(20)),
            "{d}"
        );
    }
    for n in nodes {
        n.stop().await.unwrap();
    }
}

async fn status(n: &TestServer, bucket: &str) -> Value {
    n.get_json(&format!("/v1/buckets/{bucket}")).await.1
}
