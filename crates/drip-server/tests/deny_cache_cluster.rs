//! The Redis store's exact local deny cache across real processes (issue
//! 19): three `drip serve` nodes on one redis-server, one key flooded
//! through all of them, admit exactly the bucket's capacity while most
//! refusals are answered on the nodes; a reset made on node A is honoured
//! by node B within 100 ms; every refusal is counted.

#![cfg(feature = "redis")]

mod cluster_support;
#[path = "../../drip/tests/redis_support/mod.rs"]
mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_support::{FAST, TestCluster, available, eventually};
use serde_json::json;

const HITS: &str = "drip_deny_cache_hits_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_over_three_nodes_admits_the_capacity_and_a_reset_reaches_every_cache() {
    if !available() {
        return;
    }
    // The deny cache is on by default.
    let c = Arc::new(TestCluster::single(3, FAST));
    // 100 at once, then one per 1000 s: nothing leaks during the test.
    let bucket = json!({"capacity": 100, "leak_rate": 0.001});
    assert_eq!(c.configure(0, "hot", bucket.clone()).await, 200);

    // 3 nodes x 6 callers x 100 requests on one key.
    let mut tasks = Vec::new();
    for node in 0..3 {
        for _ in 0..6 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let mut admitted = 0u64;
                for _ in 0..100 {
                    let (code, _, _) = c.allow(node, "hot", "one").await;
                    assert!(code == 200 || code == 429, "{code}");
                    admitted += u64::from(code == 200);
                }
                admitted
            }));
        }
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap();
    }
    assert_eq!(admitted, 100, "over- or under-admission");
    let mut local = 0.0;
    for node in 0..3 {
        let hits = c.metric(node, HITS).await.unwrap_or(0.0);
        assert!(hits > 0.0, "node {node} refused nothing locally");
        local += hits;
    }
    assert!(local >= 1000.0, "only {local} of 1700 refusals were local");

    // Every refusal is counted, the local ones within a sync period.
    eventually(Duration::from_secs(5), "counters", || async {
        let (_, s) = c.get(1, "/v1/buckets/hot?key=one").await;
        let counts = (
            s["allowed_requests"].as_u64(),
            s["rejected_requests"].as_u64(),
        );
        if counts == (Some(100), Some(1700)) {
            Ok(())
        } else {
            Err(format!("{s}"))
        }
    })
    .await;

    // Node B refuses locally; a reset on node A reaches B within 100 ms.
    let hits = c.metric(1, HITS).await.unwrap_or(0.0);
    assert_eq!(c.allow(1, "hot", "one").await.0, 429);
    assert!(c.metric(1, HITS).await.unwrap_or(0.0) > hits);
    let mut reset = bucket.clone();
    reset["reset"] = json!(true);
    assert_eq!(c.configure(0, "hot", reset).await, 200);
    let t = Instant::now();
    loop {
        let (code, _, _) = c.allow(1, "hot", "one").await;
        if code == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "B never saw the reset"
        );
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "B saw the reset after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_cache_zero_sends_every_refusal_to_redis() {
    if !available() {
        return;
    }
    let mut args = FAST.to_vec();
    args.extend(["--deny-cache", "0"]);
    let c = TestCluster::single(1, &args);
    let bucket = json!({"capacity": 5, "leak_rate": 0.001});
    assert_eq!(c.configure(0, "hot", bucket).await, 200);
    let mut admitted = 0;
    for _ in 0..50 {
        admitted += u64::from(c.allow(0, "hot", "one").await.0 == 200);
    }
    assert_eq!(admitted, 5);
    assert_eq!(c.metric(0, HITS).await.unwrap_or(0.0), 0.0);
    let (_, s) = c.get(0, "/v1/buckets/hot?key=one").await;
    assert_eq!(s["rejected_requests"].as_u64(), Some(45), "{s}");
}
