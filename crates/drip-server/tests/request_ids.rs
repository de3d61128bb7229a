//! Request ids on allow and acquire, over HTTP and gRPC: a client's id is
//! echoed (admitted or refused), a missing one is made by the server and
//! unique (10,000 calls), and a bad one is refused naming `request_id`.

mod common;

use std::collections::HashSet;

use common::TestServer;
use drip_server::grpc::pb;
use serde_json::{Value, json};
use tonic::Code;

async fn bucket(s: &TestServer, name: &str, capacity: u64) {
    // Leaks one unit an hour: nothing leaks during the test.
    let r = s
        .put(
            name,
            json!({"capacity": capacity, "leak_rate": 1.0 / 3600.0}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

async fn http_allow(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let r = s.post(path, body).await;
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn http_echoes_the_clients_id_admitted_or_refused() {
    let s = TestServer::memory().await;
    bucket(&s, "b", 1).await;
    let (code, v) = http_allow(&s, "/v1/buckets/b/allow", json!({"request_id": "r1"})).await;
    assert_eq!((code, v["request_id"].as_str()), (200, Some("r1")));
    let (code, v) = http_allow(&s, "/v1/buckets/b/allow", json!({"request_id": "r 2~"})).await;
    assert_eq!((code, v["request_id"].as_str()), (429, Some("r 2~")));
    let long = "x".repeat(128);
    let (code, v) = http_allow(
        &s,
        "/v1/buckets/b/acquire",
        json!({"request_id": long, "timeout_ms": 0}),
    )
    .await;
    assert_eq!((code, v["request_id"].as_str()), (429, Some(long.as_str())));
    bucket(&s, "c", 5).await;
    let (code, v) = http_allow(&s, "/v1/buckets/c/acquire", json!({"request_id": "a-1"})).await;
    assert_eq!((code, v["request_id"].as_str()), (200, Some("a-1")));
}

#[tokio::test]
async fn http_makes_an_id_when_absent() {
    let s = TestServer::memory().await;
    bucket(&s, "b", 1000).await;
    // No body at all, an empty object, and acquire.
    let r = s
        .client
        .post(s.url("/v1/buckets/b/allow"))
        .send()
        .await
        .unwrap();
    let a: Value = r.json().await.unwrap();
    let (_, b) = http_allow(&s, "/v1/buckets/b/allow", json!({})).await;
    let (_, c) = http_allow(&s, "/v1/buckets/b/acquire", json!({})).await;
    let ids: HashSet<&str> = [&a, &b, &c]
        .iter()
        .map(|v| v["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for id in ids {
        let rest = id.strip_prefix("req_").unwrap();
        let (ms, n) = rest.split_once('_').unwrap();
        assert!(ms.parse::<u64>().unwrap() > 1_700_000_000_000, "{id}");
        n.parse::<u64>().unwrap();
    }
}

#[tokio::test]
async fn http_refuses_bad_ids_naming_the_field() {
    let s = TestServer::memory().await;
    bucket(&s, "b", 10).await;
    let bad = [
        json!(""),
        json!("x".repeat(129)),
        json!("é"),
        json!("a\nb"),
        json!("tab\there"),
        json!(5),
        json!(null),
    ];
    for path in ["/v1/buckets/b/allow", "/v1/buckets/b/acquire"] {
        for id in &bad {
            let (code, v) = http_allow(&s, path, json!({ "request_id": id })).await;
            // null is "absent" to serde's Option: it gets an id made.
            if id.is_null() {
                assert_eq!(code, 200);
                continue;
            }
            assert_eq!(code, 400, "{path} {id}: {v}");
            assert_eq!(v["error"]["field"], "request_id", "{path} {id}: {v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("1..=128 bytes of printable ASCII"),
                "{v}"
            );
        }
    }
    // Nothing refused was counted.
    let (_, st) = s.get_json("/v1/buckets/b").await;
    assert_eq!(st["total_requests"], 2);
}

fn allow(bucket: &str, request_id: Option<&str>) -> pb::AllowRequestRequest {
    pb::AllowRequestRequest {
        bucket_id: bucket.into(),
        request_id: request_id.map(str::to_owned),
        ..Default::default()
    }
}

#[tokio::test]
async fn grpc_echoes_makes_and_refuses_ids() {
    let s = TestServer::memory().await;
    bucket(&s, "b", 1).await;
    let mut g = s.grpc().await;
    let d = g.allow_request(allow("b", Some("g1"))).await.unwrap();
    let d = d.into_inner();
    assert_eq!((d.allowed, d.request_id.as_str()), (true, "g1"));
    let d = g.allow_request(allow("b", Some("g2"))).await.unwrap();
    let d = d.into_inner();
    assert_eq!((d.allowed, d.request_id.as_str()), (false, "g2"));
    let d = g
        .allow_request(allow("b", None))
        .await
        .unwrap()
        .into_inner();
    assert!(d.request_id.starts_with("req_"), "{}", d.request_id);
    let a = g
        .acquire(pb::AcquireRequest {
            bucket_id: "b".into(),
            timeout_ms: Some(0),
            request_id: Some("g3".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.request_id, "g3");
    for bad in ["", "é", "a\u{7f}", &"x".repeat(129)] {
        let e = g.allow_request(allow("b", Some(bad))).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}");
        assert_eq!(e.metadata().get("drip-field").unwrap(), "request_id");
        let e = g
            .acquire(pb::AcquireRequest {
                bucket_id: "b".into(),
                request_id: Some(bad.to_owned()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}");
    }
}

/// 10,000 calls without an id, from 16 concurrent callers: all different.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_generated_ids_are_unique() {
    let s = TestServer::memory().await;
    // Most calls are refused: a refusal carries its id too.
    bucket(&s, "many", 10).await;
    let g = s.grpc().await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut g = g.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(625);
            for _ in 0..625 {
                let d = g.allow_request(allow("many", None)).await.unwrap();
                ids.push(d.into_inner().request_id);
            }
            ids
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(all.insert(id.clone()), "{id} was made twice");
        }
    }
    assert_eq!(all.len(), 10_000);
}
