//! `drip serve --max-keys` as a user runs it (issue 19): a real process
//! with a cap of 3 keys refuses a 4th key over HTTP (503 `key_limit`,
//! naming the field `key`) and gRPC (`RESOURCE_EXHAUSTED`), counts the
//! refusals in `drip_keys_refused_total`, and the keys it holds keep
//! deciding exactly as before (a full key still gets its 429).

mod serve_proc;

use drip_server::grpc::pb;
use drip_server::grpc::pb::rate_limiter_service_client::RateLimiterServiceClient;
use serde_json::{Value, json};
use serve_proc::Serve;

async fn allow(c: &reqwest::Client, base: &str, key: &str) -> (u16, Value) {
    let r = c
        .post(format!("{base}/v1/buckets/b/allow"))
        .json(&json!({ "key": key }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[test]
fn new_keys_beyond_max_keys_are_refused_and_held_keys_keep_deciding() {
    let serve = Serve::start_with(&["--max-keys", "3"]);
    // Capacity 1 leaking once a day: a used key stays full, never idle.
    serve.put_bucket("b", r#"{"capacity": 1, "leak_rate": 0.00001}"#);
    let base = serve.http_url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        for key in ["k0", "k1", "k2"] {
            let (status, body) = allow(&c, &base, key).await;
            assert_eq!(
                (status, &body["allowed"]),
                (200, &json!(true)),
                "{key}: {body}"
            );
        }
        let (status, body) = allow(&c, &base, "k3").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "key_limit", "{body}");
        assert_eq!(body["error"]["field"], "key", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("3 keys") && message.contains("--max-keys"),
            "{message}"
        );

        // Held keys decide as before: full, so refused by the bucket.
        for key in ["k0", "k1", "k2"] {
            let (status, body) = allow(&c, &base, key).await;
            assert_eq!(
                (status, &body["allowed"]),
                (429, &json!(false)),
                "{key}: {body}"
            );
        }

        let mut grpc = RateLimiterServiceClient::connect(serve.grpc_url())
            .await
            .unwrap();
        let e = grpc
            .allow_request(pb::AllowRequestRequest {
                bucket_id: "b".into(),
                key: "k4".into(),
                cost: None,
                request_id: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        assert_eq!(e.metadata().get("drip-field").unwrap(), "key");
        let held = grpc
            .allow_request(pb::AllowRequestRequest {
                bucket_id: "b".into(),
                key: "k0".into(),
                cost: None,
                request_id: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!held.allowed, "a held key still decides on its state");

        let text = c
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let refused = text
            .lines()
            .find(|l| l.starts_with("drip_keys_refused_total"))
            .unwrap_or_else(|| panic!("no drip_keys_refused_total in\n{text}"));
        assert_eq!(refused.split_whitespace().last(), Some("2"), "{refused}");
    });
}

#[test]
fn bad_max_keys_from_the_flag_or_the_environment_names_the_flag() {
    let out = std::process::Command::new(serve_proc::DRIP)
        .args(["serve", "--max-keys", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--max-keys must be an integer in 1..=1000000000"),
        "{err}"
    );

    let out = std::process::Command::new(serve_proc::DRIP)
        .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .env("DRIP_MAX_KEYS", "lots")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--max-keys"), "{err}");
}
