//! Every RPC of `drip.v1.RateLimiterService`, its errors, and the standard
//! health and reflection services, through the real server.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use drip_server::grpc::pb;
use tonic::Code;

fn configure(
    bucket: &str,
    mode: &str,
    capacity: u64,
    leak_rate: f64,
) -> pb::ConfigureBucketRequest {
    pb::ConfigureBucketRequest {
        bucket_id: bucket.into(),
        mode: mode.into(),
        capacity,
        leak_rate,
        windows: vec![],
        reset: false,
        counter_retention_s: None,
        track_queue: None,
    }
}

fn allow(bucket: &str, key: &str, cost: Option<u64>) -> pb::AllowRequestRequest {
    pb::AllowRequestRequest {
        bucket_id: bucket.into(),
        key: key.into(),
        cost,
        request_id: None,
    }
}

#[tokio::test]
async fn every_rpc() {
    let s = TestServer::memory().await;
    let mut g = s.grpc().await;

    let mut req = configure("api", "", 3, 1.5);
    req.windows = vec![pb::Window {
        limit: 100,
        period_s: 60.0,
    }];
    let b = g
        .configure_bucket(req)
        .await
        .unwrap()
        .into_inner()
        .bucket
        .unwrap();
    assert_eq!((b.bucket_id.as_str(), b.mode.as_str()), ("api", "police"));
    assert_eq!((b.capacity, b.leak_rate), (3, 1.5));
    assert_eq!(
        b.windows,
        vec![pb::Window {
            limit: 100,
            period_s: 60.0
        }]
    );

    let d = g
        .allow_request(allow("api", "", None))
        .await
        .unwrap()
        .into_inner();
    assert!(d.allowed);
    assert_eq!((d.remaining, d.queue_position, d.retry_after_ms), (2, 0, 0));
    let d = g
        .allow_request(allow("api", "", Some(2)))
        .await
        .unwrap()
        .into_inner();
    assert!(d.allowed);
    // A refusal is an answer, not an error.
    let d = g
        .allow_request(allow("api", "", None))
        .await
        .unwrap()
        .into_inner();
    assert!(!d.allowed);
    assert!((600..=667).contains(&d.retry_after_ms), "{d:?}");
    assert!(d.reset_after_ms > 0);

    let d = g
        .acquire(pb::AcquireRequest {
            bucket_id: "api".into(),
            key: "other".into(),
            cost: Some(3),
            timeout_ms: Some(10),
            request_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(d.allowed);
    let t = Instant::now();
    let d = g
        .acquire(pb::AcquireRequest {
            bucket_id: "api".into(),
            key: "other".into(),
            cost: None,
            timeout_ms: Some(2000),
            request_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(d.allowed);
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );

    let st = g
        .get_bucket_status(pb::GetBucketStatusRequest {
            bucket_id: "api".into(),
            key: "".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .bucket
        .unwrap();
    assert_eq!(
        (st.allowed_requests, st.rejected_requests, st.total_requests),
        (2, 1, 3)
    );
    assert_eq!(st.processed_requests, st.allowed_requests - st.queue_size);

    g.configure_bucket(configure("beta", "shape", 5, 1.0))
        .await
        .unwrap();
    let list = g
        .list_buckets(pb::ListBucketsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list.buckets.iter().map(|b| b.bucket_id.as_str()).collect();
    assert_eq!(names, ["api", "beta"]);

    g.delete_bucket(pb::DeleteBucketRequest {
        bucket_id: "beta".into(),
    })
    .await
    .unwrap();
    let e = g
        .delete_bucket(pb::DeleteBucketRequest {
            bucket_id: "beta".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    let leader = g
        .get_leader(pb::GetLeaderRequest {})
        .await
        .unwrap()
        .into_inner();
    let cluster = g
        .get_cluster_status(pb::GetClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(leader.leader, cluster.leader);
    assert_eq!(cluster.node_id, cluster.leader);
    assert_eq!(cluster.nodes.len(), 1);
    let node = &cluster.nodes[0];
    assert_eq!(
        (node.http.clone(), node.grpc.clone()),
        (s.http.to_string(), s.grpc.to_string())
    );
    assert!(node.alive);

    // HTTP sees what gRPC did: one limiter behind both.
    let (code, v) = s.get_json("/v1/buckets/api").await;
    assert_eq!(code, 200);
    assert_eq!(v["allowed_requests"], 2);
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let s = TestServer::memory().await;
    let mut g = s.grpc().await;
    g.configure_bucket(configure("t", "police", 10, 1.0))
        .await
        .unwrap();

    let field = |e: &tonic::Status| {
        e.metadata()
            .get("drip-field")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let with = |f: fn(&mut pb::ConfigureBucketRequest)| {
        let mut r = configure("t", "police", 10, 1.0);
        f(&mut r);
        r
    };
    let cases: Vec<(pb::ConfigureBucketRequest, &str)> = vec![
        (with(|r| r.capacity = 0), "capacity"),
        (with(|r| r.capacity = 1 << 40), "capacity"),
        (with(|r| r.leak_rate = 0.0), "leak_rate"),
        (with(|r| r.leak_rate = -1.0), "leak_rate"),
        (with(|r| r.leak_rate = f64::NAN), "leak_rate"),
        (with(|r| r.leak_rate = f64::INFINITY), "leak_rate"),
        (with(|r| r.mode = "queue".into()), "mode"),
        (with(|r| r.bucket_id = "".into()), "bucket_id"),
        (with(|r| r.bucket_id = "a/b".into()), "bucket_id"),
        (with(|r| r.bucket_id = "x".repeat(129)), "bucket_id"),
        (
            with(|r| {
                r.windows = vec![pb::Window {
                    limit: 0,
                    period_s: 1.0,
                }]
            }),
            "windows[0].limit",
        ),
        (
            with(|r| {
                r.windows = vec![pb::Window {
                    limit: 1,
                    period_s: f64::NAN,
                }]
            }),
            "windows[0].period_s",
        ),
        (
            with(|r| {
                r.windows = vec![
                    pb::Window {
                        limit: 1,
                        period_s: 1.0
                    };
                    9
                ]
            }),
            "windows",
        ),
    ];
    for (req, want) in cases {
        let e = g.configure_bucket(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}");
        assert_eq!(field(&e).as_deref(), Some(want), "{req:?}");
        assert!(e.message().contains(want), "{}", e.message());
    }

    let allow_cases = [
        (allow("t", "", Some(0)), Code::InvalidArgument, "cost"),
        (allow("t", "", Some(11)), Code::InvalidArgument, "cost"),
        (allow("t", "", Some(1 << 53)), Code::InvalidArgument, "cost"),
        (
            allow("t", &"k".repeat(257), None),
            Code::InvalidArgument,
            "key",
        ),
        (allow("", "", None), Code::InvalidArgument, "bucket_id"),
        (allow("nope", "", None), Code::NotFound, "bucket_id"),
    ];
    for (req, code, want) in allow_cases {
        let e = g.allow_request(req.clone()).await.unwrap_err();
        assert_eq!(
            (e.code(), field(&e).as_deref()),
            (code, Some(want)),
            "{req:?}"
        );
    }
    let e = g
        .acquire(pb::AcquireRequest {
            bucket_id: "t".into(),
            timeout_ms: Some(3_600_001),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), field(&e).as_deref()),
        (Code::InvalidArgument, Some("timeout_ms"))
    );
    let e = g
        .get_bucket_status(pb::GetBucketStatusRequest {
            bucket_id: "nope".into(),
            key: "".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Nothing was configured by the bad calls.
    let list = g
        .list_buckets(pb::ListBucketsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.buckets.len(), 1);
    assert_eq!(list.buckets[0].capacity, 10);
}

#[tokio::test]
async fn health_and_reflection() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let s = TestServer::memory().await;
    let mut health = HealthClient::new(s.channel().await);
    for service in ["", "drip.v1.RateLimiterService"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(s.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in ["drip.v1.RateLimiterService", "grpc.health.v1.Health"] {
        assert!(names.contains(&want), "{names:?}");
    }
}
