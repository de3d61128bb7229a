//! Bad input over HTTP: a table of requests with the status and field each
//! must be answered with, and a property test that throws random methods,
//! paths and bodies at the server: never a 5xx, never a hang, and the
//! server still answers afterwards. gRPC's bad input is checked in
//! `grpc_api.rs`.

mod common;

use std::time::Duration;

use common::TestServer;
use proptest::prelude::*;
use serde_json::{Value, json};

/// One row: method, path, body (None: no body), expected status and field.
type Row = (
    &'static str,
    String,
    Option<String>,
    u16,
    Option<&'static str>,
);

fn rows() -> Vec<Row> {
    let cfg = |body: &str, field: &'static str| -> Row {
        (
            "PUT",
            "/v1/buckets/t".into(),
            Some(body.into()),
            400,
            Some(field),
        )
    };
    let allow = |body: &str, field: &'static str| -> Row {
        (
            "POST",
            "/v1/buckets/t/allow".into(),
            Some(body.into()),
            400,
            Some(field),
        )
    };
    let acquire = |body: &str, field: &'static str| -> Row {
        (
            "POST",
            "/v1/buckets/t/acquire".into(),
            Some(body.into()),
            400,
            Some(field),
        )
    };
    let ok_cfg = r#""capacity": 10, "leak_rate": 1"#;
    let nine_windows = format!(
        r#"{{{ok_cfg}, "windows": [{}]}}"#,
        [r#"{"limit": 1, "period_s": 1}"#; 9].join(",")
    );
    vec![
        // configure: malformed JSON and wrong shapes
        cfg("{", "body"),
        cfg("", "body"),
        cfg("[]", "body"),
        cfg("\"x\"", "body"),
        cfg("null", "body"),
        cfg(r#"{"capacity": 10, "leak_rate": 1} trailing"#, "body"),
        // missing and unknown fields
        cfg(r#"{"capacity": 10}"#, "leak_rate"),
        cfg(r#"{"leak_rate": 1}"#, "capacity"),
        cfg(&format!(r#"{{{ok_cfg}, "burst": 5}}"#), "burst"),
        // capacity: zero, negative, fractional, string, huge
        cfg(r#"{"capacity": 0, "leak_rate": 1}"#, "capacity"),
        cfg(r#"{"capacity": -1, "leak_rate": 1}"#, "capacity"),
        cfg(r#"{"capacity": 1.5, "leak_rate": 1}"#, "capacity"),
        cfg(r#"{"capacity": "10", "leak_rate": 1}"#, "capacity"),
        cfg(r#"{"capacity": null, "leak_rate": 1}"#, "capacity"),
        cfg(r#"{"capacity": 4294967296, "leak_rate": 1}"#, "capacity"),
        cfg(r#"{"capacity": 1e30, "leak_rate": 1}"#, "capacity"),
        cfg(
            r#"{"capacity": 99999999999999999999999, "leak_rate": 1}"#,
            "capacity",
        ),
        cfg(r#"{"capacity": 4294967295, "leak_rate": 1e-9}"#, "capacity"),
        // leak_rate: zero, negative, NaN, huge, tiny, wrong type
        cfg(r#"{"capacity": 10, "leak_rate": 0}"#, "leak_rate"),
        cfg(r#"{"capacity": 10, "leak_rate": -1}"#, "leak_rate"),
        cfg(r#"{"capacity": 10, "leak_rate": "NaN"}"#, "leak_rate"),
        cfg(r#"{"capacity": 10, "leak_rate": NaN}"#, "body"),
        cfg(r#"{"capacity": 10, "leak_rate": 1e16}"#, "leak_rate"),
        cfg(r#"{"capacity": 10, "leak_rate": 1e400}"#, "leak_rate"),
        cfg(r#"{"capacity": 10, "leak_rate": 1e-12}"#, "leak_rate"),
        cfg(r#"{"capacity": 10, "leak_rate": true}"#, "leak_rate"),
        // mode, reset
        cfg(&format!(r#"{{{ok_cfg}, "mode": "queue"}}"#), "mode"),
        cfg(&format!(r#"{{{ok_cfg}, "mode": 1}}"#), "mode"),
        cfg(&format!(r#"{{{ok_cfg}, "reset": "yes"}}"#), "reset"),
        // windows
        cfg(
            &format!(r#"{{{ok_cfg}, "windows": {{"limit": 1}}}}"#),
            "windows",
        ),
        cfg(&format!(r#"{{{ok_cfg}, "windows": [1]}}"#), "windows[0]"),
        cfg(
            &format!(r#"{{{ok_cfg}, "windows": [{{"limit": 0, "period_s": 1}}]}}"#),
            "windows[0].limit",
        ),
        cfg(
            &format!(r#"{{{ok_cfg}, "windows": [{{"limit": -5, "period_s": 1}}]}}"#),
            "windows[0].limit",
        ),
        cfg(
            &format!(r#"{{{ok_cfg}, "windows": [{{"limit": 9007199254740992, "period_s": 1}}]}}"#),
            "windows[0].limit",
        ),
        cfg(
            &format!(r#"{{{ok_cfg}, "windows": [{{"limit": 1, "period_s": 0}}]}}"#),
            "windows[0].period_s",
        ),
        cfg(
            &format!(r#"{{{ok_cfg}, "windows": [{{"limit": 1, "period_s": -1}}]}}"#),
            "windows[0].period_s",
        ),
        cfg(
            &format!(r#"{{{ok_cfg}, "windows": [{{"limit": 1, "period_s": 1e12}}]}}"#),
            "windows[0].period_s",
        ),
        cfg(
            &format!(r#"{{{ok_cfg}, "windows": [{{"limit": 1, "period_s": 1}}, {{"limit": 1}}]}}"#),
            "windows[1].period_s",
        ),
        cfg(
            &format!(r#"{{{ok_cfg}, "windows": [{{"limit": 1, "period_s": 1, "x": 1}}]}}"#),
            "windows[0].x",
        ),
        cfg(&nine_windows, "windows"),
        // bucket ids
        (
            "PUT",
            format!("/v1/buckets/{}", "a".repeat(129)),
            Some(format!("{{{ok_cfg}}}")),
            400,
            Some("bucket_id"),
        ),
        (
            "PUT",
            "/v1/buckets/a%20b".into(),
            Some(format!("{{{ok_cfg}}}")),
            400,
            Some("bucket_id"),
        ),
        (
            "PUT",
            "/v1/buckets/%C3%A9".into(),
            Some(format!("{{{ok_cfg}}}")),
            400,
            Some("bucket_id"),
        ),
        (
            "PUT",
            "/v1/buckets/%FF".into(),
            Some(format!("{{{ok_cfg}}}")),
            400,
            Some("bucket_id"),
        ),
        (
            "POST",
            "/v1/buckets/a!b/allow".into(),
            None,
            400,
            Some("bucket_id"),
        ),
        (
            "GET",
            format!("/v1/buckets/{}", "b".repeat(200)),
            None,
            400,
            Some("bucket_id"),
        ),
        // too large
        (
            "PUT",
            "/v1/buckets/t".into(),
            Some(format!(r#"{{{ok_cfg}, "mode": "{}"}}"#, "x".repeat(70_000))),
            413,
            Some("body"),
        ),
        (
            "POST",
            "/v1/buckets/t/allow".into(),
            Some(format!(r#"{{"key": "{}"}}"#, "x".repeat(70_000))),
            413,
            Some("body"),
        ),
        // allow
        allow("{", "body"),
        allow("[1]", "body"),
        allow(r#"{"foo": 1}"#, "foo"),
        allow(r#"{"cost": 0}"#, "cost"),
        allow(r#"{"cost": -1}"#, "cost"),
        allow(r#"{"cost": 1.5}"#, "cost"),
        allow(r#"{"cost": "1"}"#, "cost"),
        allow(r#"{"cost": 9007199254740992}"#, "cost"),
        allow(r#"{"cost": 11}"#, "cost"),
        allow(&format!(r#"{{"key": "{}"}}"#, "k".repeat(257)), "key"),
        allow(r#"{"key": 5}"#, "key"),
        allow(r#"{"key": null}"#, "key"),
        (
            "POST",
            "/v1/buckets/nope/allow".into(),
            None,
            404,
            Some("bucket_id"),
        ),
        // acquire
        acquire(r#"{"timeout_ms": -1}"#, "timeout_ms"),
        acquire(r#"{"timeout_ms": 3600001}"#, "timeout_ms"),
        acquire(r#"{"timeout_ms": "1"}"#, "timeout_ms"),
        acquire(r#"{"cost": 0}"#, "cost"),
        acquire(r#"{"cost": 11, "timeout_ms": 10}"#, "cost"),
        acquire(r#"{"wait": 1}"#, "wait"),
        (
            "POST",
            "/v1/buckets/nope/acquire".into(),
            None,
            404,
            Some("bucket_id"),
        ),
        // status, delete
        (
            "GET",
            format!("/v1/buckets/t?key={}", "k".repeat(257)),
            None,
            400,
            Some("key"),
        ),
        ("GET", "/v1/buckets/t?foo=1".into(), None, 400, Some("foo")),
        (
            "GET",
            "/v1/buckets/nope".into(),
            None,
            404,
            Some("bucket_id"),
        ),
        (
            "DELETE",
            "/v1/buckets/nope".into(),
            None,
            404,
            Some("bucket_id"),
        ),
        // wrong methods and paths
        ("PATCH", "/v1/buckets/t".into(), None, 405, None),
        ("POST", "/v1/buckets/t".into(), None, 405, None),
        ("GET", "/v1/buckets/t/allow".into(), None, 405, None),
        ("PUT", "/v1/buckets/t/acquire".into(), None, 405, None),
        ("DELETE", "/v1/buckets".into(), None, 405, None),
        ("POST", "/healthz".into(), None, 405, None),
        ("PUT", "/v1/cluster".into(), None, 405, None),
        ("GET", "/v2/buckets".into(), None, 404, None),
        ("GET", "/v1/buckets/t/allow/more".into(), None, 404, None),
    ]
}

#[tokio::test]
async fn bad_input_table() {
    let s = TestServer::memory().await;
    s.put("t", json!({"capacity": 10, "leak_rate": 1})).await;
    let before = s.get_json("/v1/buckets/t").await.1;
    for (method, path, body, status, field) in rows() {
        let mut req = s.client.request(method.parse().unwrap(), s.url(&path));
        if let Some(b) = &body {
            req = req
                .header("content-type", "application/json")
                .body(b.clone());
        }
        let r = req.send().await.unwrap();
        let got = r.status().as_u16();
        let allow = r.headers().get("allow").cloned();
        let text = r.text().await.unwrap();
        let shown = body.as_deref().map(|b| &b[..b.len().min(120)]);
        assert_eq!(got, status, "{method} {path} {shown:?} -> {text}");
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        let err = &v["error"];
        assert_eq!(
            err["field"].as_str(),
            field,
            "{method} {path} {shown:?} -> {text}"
        );
        let message = err["message"].as_str().unwrap();
        assert!(!message.is_empty());
        if let Some(f) = field
            && status == 400
        {
            assert!(message.contains(f), "message does not name {f}: {message}");
        }
        if status == 405 {
            assert_eq!(err["code"], "method_not_allowed");
            assert!(allow.is_some(), "405 without Allow: {method} {path}");
        }
    }
    // Nothing above changed the bucket or was admitted (the two costs over
    // the capacity count as rejected requests).
    let after = s.get_json("/v1/buckets/t").await.1;
    assert_eq!(before["capacity"], after["capacity"]);
    assert_eq!(before["mode"], after["mode"]);
    assert_eq!(after["allowed_requests"], 0);
}

#[tokio::test]
async fn ranges_are_stated() {
    let s = TestServer::memory().await;
    let v: Value = s
        .put("t", json!({"capacity": 0, "leak_rate": 1}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"error": {"code": "invalid_argument", "field": "capacity",
                         "message": "capacity must be an integer in 1..=4294967295"}})
    );
    let v: Value = s
        .put("t", json!({"capacity": "x", "leak_rate": 1}))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("capacity must be an integer in 1..=4294967295"),
        "{v}"
    );
    let v: Value = s
        .put("t", json!({"capacity": 1, "leak_rate": -2}))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1e-9..=1e15"),
        "{v}"
    );
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z]{0,8}".prop_map(Value::from),
        Just(Value::from("police")),
        Just(Value::from("shape")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("capacity".to_owned()),
                    Just("leak_rate".to_owned()),
                    Just("mode".to_owned()),
                    Just("windows".to_owned()),
                    Just("limit".to_owned()),
                    Just("period_s".to_owned()),
                    Just("reset".to_owned()),
                    Just("key".to_owned()),
                    Just("cost".to_owned()),
                    Just("timeout_ms".to_owned()),
                    "[a-z_]{1,6}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        json_value().prop_map(|v| Some(serde_json::to_vec(&v).unwrap())),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Some),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let bucket = prop_oneof![
        Just("p".to_owned()),
        Just("q".to_owned()),
        "[A-Za-z0-9._:%-]{0,20}",
        "[^/?#]{0,8}".prop_map(|s| s.replace('%', "%25")),
    ];
    (
        bucket,
        prop_oneof![
            Just(""),
            Just("/allow"),
            Just("/acquire"),
            Just("/x"),
            Just("?key=a"),
            Just("?key=%ZZ"),
            Just("?cost=1&key=2")
        ],
        prop_oneof![
            Just("/v1/buckets/"),
            Just("/v1/buckets"),
            Just("/v1/cluster"),
            Just("/v1/cluster/leader"),
            Just("/healthz"),
            Just("/readyz"),
            Just("/"),
            Just("//v1//buckets/")
        ],
    )
        .prop_map(|(b, tail, head)| format!("{head}{b}{tail}"))
}

fn method() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("PUT"),
        Just("DELETE"),
        Just("PATCH"),
        Just("HEAD"),
        Just("OPTIONS"),
    ]
}

#[test]
fn random_requests_never_get_a_server_error() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(async {
        let s = TestServer::memory().await;
        s.put("p", json!({"capacity": 1000, "leak_rate": 1000}))
            .await;
        s.put(
            "q",
            json!({"mode": "shape", "capacity": 5, "leak_rate": 50}),
        )
        .await;
        s
    });
    let config = ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let answered = std::sync::atomic::AtomicUsize::new(0);
    proptest!(config, |(method in method(), path in path(), body in body())| {
        let status = rt.block_on(async {
            let url = server.url(&path);
            let Ok(url) = reqwest::Url::parse(&url) else { return None };
            let mut req = server
                .client
                .request(method.parse().unwrap(), url)
                .timeout(Duration::from_secs(5));
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            match req.send().await {
                Ok(r) => Some(r.status().as_u16()),
                // A random PUT may make a bucket slow and a random acquire
                // may then wait its turn: waiting is an answer, not a hang.
                Err(e) if e.is_timeout() && path.contains("/acquire") => None,
                Err(e) => panic!("{method} {path}: {e}"),
            }
        });
        if let Some(status) = status {
            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            prop_assert!(status < 500, "{} {} {:?} -> {}", method, path,
                body.as_deref().map(String::from_utf8_lossy), status);
        }
    });
    let answered = answered.into_inner();
    assert!(
        answered > 300,
        "only {answered} of 400 requests were answered"
    );
    rt.block_on(async {
        assert_eq!(server.get_json("/healthz").await.0, 200);
        assert_eq!(server.get_json("/v1/buckets").await.0, 200);
    });
}
