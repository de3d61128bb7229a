//! The dashboard's busiest keys on the SQLite and Redis stores, through a
//! real `drip serve` process (on Redis, the server wraps its store for
//! `--on-store-error`: the keys must come through that too). Reads
//! `/v1/events` as a browser would, no browser needed.

#[path = "../../drip/tests/redis_support/mod.rs"]
mod redis_support;
mod serve_proc;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serve_proc::Serve;

/// Sends traffic to keys a (5 units), b (3) and c (1) of bucket `t`, reads
/// the event stream until `t`'s busiest keys are a, b, c in that order.
fn busiest_keys_come_through(serve: &Serve) {
    serve.put_bucket("t", r#"{"capacity": 100, "leak_rate": 0.01}"#);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let base = serve.http_url();
        for (key, cost) in [("a", 5), ("b", 3), ("c", 1)] {
            let r = client
                .post(format!("{base}/v1/buckets/t/allow"))
                .body(json!({"key": key, "cost": cost}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        let mut events = client
            .get(format!("{base}/v1/events?page=0&per_page=20"))
            .send()
            .await
            .unwrap();
        let mut text = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(5), events.chunk())
                .await
                .expect("an event within 5 s")
                .unwrap()
                .expect("the stream stays open");
            text.push_str(&String::from_utf8_lossy(&chunk));
            let last: Option<Value> = text
                .split("\n\n")
                .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
                .filter_map(|d| serde_json::from_str(d).ok())
                .last();
            let keys: Vec<(String, f64)> = last
                .iter()
                .flat_map(|e| e["buckets"].as_array().cloned().unwrap_or_default())
                .filter(|b| b["bucket_id"] == "t")
                .flat_map(|b| b["busiest_keys"].as_array().cloned().unwrap_or_default())
                .map(|k| {
                    (
                        k["key"].as_str().unwrap_or("").to_owned(),
                        k["level"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect();
            let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
            if names == ["a", "b", "c"] {
                assert!(keys[0].1 > 4.9 && keys[0].1 <= 5.0, "{keys:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the busiest keys never showed: {names:?}"
            );
        }
    });
}

#[test]
fn busiest_keys_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("drip-dashboard-sqlite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!("sqlite:{}", dir.join("drip.db").display());
    busiest_keys_come_through(&Serve::start_with(&["--store", &store]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn busiest_keys_on_redis() {
    if !redis_support::available() {
        return;
    }
    let redis = redis_support::RedisServer::start();
    busiest_keys_come_through(&Serve::start_with(&["--store", &redis.url()]));
}
