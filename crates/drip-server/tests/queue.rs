//! The queue of waiting requests over the server's contract (issue 14): a
//! real `drip serve` process (memory store), listed over HTTP
//! (`GET /v1/buckets/{bucket}/queue?key=K`) and gRPC (`GetQueuedRequests`):
//! ids in departure order, turns 100 ms apart at 10/s, bounded by the
//! capacity; empty for police and untracked buckets; 404 / NOT_FOUND for an
//! unknown bucket; 400 / INVALID_ARGUMENT for a bad key or bucket id.

mod serve_proc;

use drip_server::grpc::pb;
use drip_server::grpc::pb::rate_limiter_service_client::RateLimiterServiceClient;
use serde_json::{Value, json};
use serve_proc::Serve;

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn put(&self, bucket: &str, body: Value) -> Value {
        let r = self
            .http
            .put(format!("{}/v1/buckets/{bucket}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    async fn allow(&self, bucket: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/v1/buckets/{bucket}/allow", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    async fn queue(&self, bucket: &str, key: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}/v1/buckets/{bucket}/queue", self.base))
            .query(&[("key", key)])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

fn ids(q: &Value) -> Vec<String> {
    q["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_queue_is_listed_over_http_and_grpc() {
    let drip = Serve::start();
    let api = Api {
        base: drip.http_url(),
        http: reqwest::Client::new(),
    };
    // 1/s: slow enough that nothing departs while the test runs on a
    // loaded machine (the library's conformance case is the exact 10/s
    // one); capacity 10 bounds the list.
    let status = api
        .put(
            "q",
            json!({"mode": "shape", "capacity": 10, "leak_rate": 1}),
        )
        .await;
    assert_eq!(status["track_queue"], true, "on by default: {status}");
    let mut given = Vec::new();
    for i in 0..12 {
        let body = if i % 2 == 0 {
            json!({"key": "k", "request_id": format!("r{i}")})
        } else {
            json!({"key": "k"}) // the server makes one
        };
        let d = api.allow("q", body).await;
        assert_eq!(d["allowed"], i < 10, "request {i}: {d}");
        if i < 10 {
            given.push(d["request_id"].as_str().unwrap().to_owned());
        }
    }
    let (code, q) = api.queue("q", "k").await;
    assert_eq!(code, 200, "{q}");
    assert_eq!(
        (q["bucket_id"].as_str(), q["key"].as_str()),
        (Some("q"), Some("k"))
    );
    assert_eq!(
        ids(&q),
        given,
        "ids in departure order, the refused two left out"
    );
    let list = q["requests"].as_array().unwrap();
    let ms = |r: &Value, f: &str| r[f].as_u64().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        ms(&list[0], "enqueue_time_ms").abs_diff(now_ms) < 60_000,
        "epoch ms"
    );
    for w in list.windows(2) {
        let gap = ms(&w[1], "estimated_process_time_ms") - ms(&w[0], "estimated_process_time_ms");
        assert!((999..=1001).contains(&gap), "turns 1 s apart: {w:?}");
        assert!(ms(&w[1], "enqueue_time_ms") >= ms(&w[0], "enqueue_time_ms"));
    }

    // gRPC lists the same.
    let mut g = RateLimiterServiceClient::connect(drip.grpc_url())
        .await
        .unwrap();
    let ask = |bucket: &str, key: &str| pb::GetQueuedRequestsRequest {
        bucket_id: bucket.into(),
        key: key.into(),
    };
    let r = g
        .get_queued_requests(ask("q", "k"))
        .await
        .unwrap()
        .into_inner();
    let grpc_ids: Vec<String> = r.requests.iter().map(|e| e.request_id.clone()).collect();
    // The head may have left meanwhile on a very slow machine: compare tails.
    assert!(
        given.ends_with(&grpc_ids) && grpc_ids.len() >= 9,
        "{grpc_ids:?}"
    );
    assert_eq!(
        r.requests.last().unwrap().estimated_process_time_ms,
        ms(list.last().unwrap(), "estimated_process_time_ms")
    );

    // Police, and shape without tracking: nothing listed.
    api.put("p", json!({"capacity": 10, "leak_rate": 1})).await;
    let untracked = api
        .put(
            "u",
            json!({"mode": "shape", "capacity": 10, "leak_rate": 1, "track_queue": false}),
        )
        .await;
    assert_eq!(untracked["track_queue"], false);
    for b in ["p", "u"] {
        api.allow(b, json!({"key": "k"})).await;
        api.allow(b, json!({"key": "k"})).await;
        let (code, q) = api.queue(b, "k").await;
        assert_eq!((code, ids(&q).len()), (200, 0), "{b}: {q}");
    }

    // Unknown bucket: 404; bad key or bucket id: 400 naming the field.
    let (code, e) = api.queue("nope", "k").await;
    assert_eq!(
        (code, e["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{e}"
    );
    let (code, e) = api.queue("q", &"x".repeat(300)).await;
    assert_eq!(
        (code, e["error"]["field"].as_str()),
        (400, Some("key")),
        "{e}"
    );
    let (code, e) = api.queue(&"b".repeat(129), "k").await;
    assert_eq!(
        (code, e["error"]["field"].as_str()),
        (400, Some("bucket_id")),
        "{e}"
    );
    let e = g.get_queued_requests(ask("nope", "k")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = g
        .get_queued_requests(ask("q", &"x".repeat(300)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("key"), "{}", e.message());
}

/// An acquire whose client leaves while it waits gives its place back
/// (the key's last place, a tracked bucket): the queue no longer lists it,
/// and the next request takes that turn, not the one after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_whose_client_leaves_gives_its_place_back() {
    let drip = Serve::start();
    let api = Api {
        base: drip.http_url(),
        http: reqwest::Client::new(),
    };
    // One every 10 s: the first goes at once, the next waits 10 s (the
    // leaver's entry would stay listed that long).
    api.put(
        "g",
        json!({"mode": "shape", "capacity": 10, "leak_rate": 0.1}),
    )
    .await;
    let first = api
        .allow("g", json!({"key": "k", "request_id": "first"}))
        .await;
    assert_eq!(first["estimated_wait_ms"], 0, "{first}");
    let gone = api
        .http
        .post(format!("{}/v1/buckets/g/acquire", api.base))
        .json(&json!({"key": "k", "request_id": "leaver", "timeout_ms": 60000}))
        .timeout(std::time::Duration::from_millis(200))
        .send()
        .await;
    assert!(gone.is_err(), "the client left while it waited");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    loop {
        let (_, q) = api.queue("g", "k").await;
        if !ids(&q).contains(&"leaver".to_owned()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the leaver is still listed: {q}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Its turn (10 s after the first) is free again: the next request takes
    // it (less the time gone by), not the turn 20 s after the first.
    let next = api.allow("g", json!({"key": "k"})).await;
    let wait = next["estimated_wait_ms"].as_u64().unwrap();
    assert!(
        wait <= 10_000,
        "the leaver's place was not given back: {next}"
    );
}
