//! The cluster (issue 15) with real processes: `redis-server` (one, or a
//! 3-master Redis Cluster) and three `drip serve` nodes sharing it.

#![cfg(feature = "redis")]

mod cluster_support;
#[path = "../../drip/tests/redis_support/mod.rs"]
mod redis_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cluster_support::{FAST, TestCluster, available, eventually};
use drip_server::grpc::pb;
use drip_server::grpc::pb::rate_limiter_service_client::RateLimiterServiceClient;
use serde_json::json;

/// The ids of the alive members in node `i`'s view, and its leader.
async fn alive_and_leader(c: &TestCluster, i: usize) -> (BTreeSet<String>, String) {
    let s = c.status(i).await;
    let alive = s
        .nodes
        .iter()
        .filter(|n| n.alive)
        .map(|n| n.node_id.clone())
        .collect();
    (alive, s.leader)
}

/// Waits until every node in `nodes` sees exactly `members` alive and the
/// same leader, one of them; returns the leader.
async fn agreed(c: &TestCluster, nodes: &[usize], within: Duration) -> String {
    let members: BTreeSet<String> = nodes.iter().map(|&i| c.nodes[i].id.clone()).collect();
    eventually(within, "nodes agree on members and leader", || async {
        let mut views = Vec::new();
        for &i in nodes {
            views.push(alive_and_leader(c, i).await);
        }
        let (alive, leader) = views[0].clone();
        if views.iter().all(|v| *v == (alive.clone(), leader.clone()))
            && alive == members
            && members.contains(&leader)
        {
            Ok(leader)
        } else {
            Err(format!("{views:?}"))
        }
    })
    .await
}

fn index_of(c: &TestCluster, id: &str) -> usize {
    c.nodes.iter().position(|n| n.id == id).unwrap()
}

/// Membership, the leader, failover (kill -9, then a graceful stop) and
/// configuration everywhere, on whatever Redis `c` shares.
async fn membership_leader_and_config(mut c: TestCluster) {
    // Three nodes list the same three alive members and one leader.
    let first = agreed(&c, &[0, 1, 2], Duration::from_secs(10)).await;
    // The same over gRPC and /v1/cluster/leader.
    let mut grpc = RateLimiterServiceClient::connect(format!("http://{}", c.nodes[1].grpc))
        .await
        .unwrap();
    let s = grpc
        .get_cluster_status(pb::GetClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (s.node_id.as_str(), s.leader.as_str()),
        ("node-1", first.as_str())
    );
    assert_eq!(s.nodes.iter().filter(|n| n.alive).count(), 3, "{s:?}");
    assert!(
        s.nodes
            .iter()
            .all(|n| !n.http.is_empty() && !n.grpc.is_empty())
    );
    let l = grpc
        .get_leader(pb::GetLeaderRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.leader, first);
    assert_eq!(
        c.get(2, "/v1/cluster/leader").await.1["leader"],
        first.as_str()
    );

    // A configuration made on node A is used by node C's next decision.
    assert_eq!(
        c.configure(0, "shared", json!({"capacity": 2, "leak_rate": 0.001}))
            .await,
        200
    );
    assert_eq!(c.allow(2, "shared", "k").await.0, 200);
    assert_eq!(c.allow(1, "shared", "k").await.0, 200);
    assert_eq!(c.allow(2, "shared", "k").await.0, 429);
    // A change on A (capacity 5, state carried over) reaches C within
    // 100 ms: C's deny cache holds its last refusal until its sync reads
    // the new version (DESIGN.md §5).
    assert_eq!(
        c.configure(0, "shared", json!({"capacity": 5, "leak_rate": 0.001}))
            .await,
        200
    );
    let t = Instant::now();
    while c.allow(2, "shared", "k").await.0 != 200 {
        assert!(t.elapsed() < Duration::from_millis(100), "C kept refusing");
    }
    for _ in 0..2 {
        assert_eq!(c.allow(2, "shared", "k").await.0, 200);
    }
    assert_eq!(c.allow(1, "shared", "k").await.0, 429);

    // kill -9 of the leader: the two others agree on a new leader and list
    // two alive members within 10 s.
    let l = index_of(&c, &first);
    let t = Instant::now();
    c.nodes[l].kill();
    let rest: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let second = agreed(&c, &rest, Duration::from_secs(10)).await;
    assert_ne!(second, first);
    eprintln!("kill -9 of the leader: new leader in {:?}", t.elapsed());

    // A graceful stop releases the lease at once: a new leader within 2 s
    // (the lease is 3 s here: without the release it would take longer).
    let l2 = index_of(&c, &second);
    let last = *rest.iter().find(|&&i| i != l2).unwrap();
    let t = Instant::now();
    c.nodes[l2].stop();
    let third = agreed(&c, &[last], Duration::from_secs(2)).await;
    assert_eq!(third, c.nodes[last].id);
    eprintln!(
        "graceful stop of the leader: new leader in {:?}",
        t.elapsed()
    );
    assert!(
        c.nodes[l2]
            .log()
            .iter()
            .any(|l| l.contains("released the leader lease")),
        "{:?}",
        c.nodes[l2].log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_leader_and_config_on_one_redis() {
    if !available() {
        return;
    }
    membership_leader_and_config(TestCluster::single(3, FAST)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_leader_and_config_on_a_redis_cluster() {
    if !available() {
        return;
    }
    membership_leader_and_config(TestCluster::redis_cluster(3, FAST)).await;
}

/// 600 concurrent allows spread over the three nodes on a capacity-100
/// bucket (that leaks 1 a day) admit exactly 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_concurrent_allows_over_three_nodes_admit_exactly_one_hundred() {
    if !available() {
        return;
    }
    let c = TestCluster::single(3, FAST);
    assert_eq!(
        c.configure(0, "exact", json!({"capacity": 100, "leak_rate": 0.001}))
            .await,
        200
    );
    let c = std::sync::Arc::new(c);
    let mut tasks = Vec::new();
    for i in 0..600 {
        let c = c.clone();
        tasks.push(tokio::spawn(
            async move { c.allow(i % 3, "exact", "k").await.0 },
        ));
    }
    let mut admitted = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => admitted += 1,
            429 => {}
            other => panic!("status {other}"),
        }
    }
    assert_eq!(admitted, 100);
}

/// Two leaders never act at once: the leader is paused (SIGSTOP) past its
/// lease, another takes over, and when the old one resumes (SIGCONT) its
/// chore is refused by the fence and it stops leading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leaders_chore_is_refused_after_another_took_over() {
    if !available() {
        return;
    }
    let c = TestCluster::single(3, FAST);
    let first = agreed(&c, &[0, 1, 2], Duration::from_secs(10)).await;
    let l = index_of(&c, &first);
    let rest: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    c.nodes[l].pause();
    let second = agreed(&c, &rest, Duration::from_secs(10)).await;
    assert_ne!(second, first);
    c.nodes[l].resume();
    // The old leader's next chore is refused, counted, and it steps down.
    eventually(
        Duration::from_secs(10),
        "the old leader's chore is refused",
        || async {
            match c.metric(l, "drip_cluster_chores_refused_total").await {
                Some(n) if n >= 1.0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(c.metric(l, "drip_cluster_leader").await, Some(0.0));
    assert!(
        c.nodes[l]
            .log()
            .iter()
            .any(|line| line.contains("a leader chore was refused")),
        "{:?}",
        c.nodes[l].log()
    );
    // All three agree the new leader leads.
    let now = agreed(&c, &[0, 1, 2], Duration::from_secs(10)).await;
    assert_eq!(now, second);
}

/// Redis restarted empty (no persistence): the leader writes back the
/// configurations every node remembers, not the deleted one, and
/// decisions are exact again, within 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_gets_its_configurations_back_but_not_deletions() {
    if !available() {
        return;
    }
    configurations_come_back(TestCluster::single(3, FAST)).await;
}

/// The same on a 3-master Redis Cluster whose three nodes all restart empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_restarted_empty_gets_its_configurations_back() {
    if !available() {
        return;
    }
    configurations_come_back(TestCluster::redis_cluster(3, FAST)).await;
}

async fn configurations_come_back(mut c: TestCluster) {
    agreed(&c, &[0, 1, 2], Duration::from_secs(10)).await;
    for (i, name) in ["kept", "gone", "also"].iter().enumerate() {
        let body = json!({"capacity": 3, "leak_rate": 0.001});
        assert_eq!(c.configure(i, name, body).await, 200);
    }
    remembered(&c, (3.0, 0.0)).await;
    let r = c
        .client
        .delete(c.nodes[1].url("/v1/buckets/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Every node has seen two configurations and one deletion.
    remembered(&c, (2.0, 1.0)).await;
    for _ in 0..3 {
        assert_eq!(c.allow(0, "kept", "k").await.0, 200);
    }

    let t = Instant::now();
    // Killed and started again empty (the nodes may write to it at once,
    // so emptiness shows below: the leader counts two write-backs, and the
    // bucket's state starts over).
    c.restart_redis_empty();
    eventually(
        Duration::from_secs(10),
        "configurations restored",
        || async {
            let mut seen = Vec::new();
            for i in 0..3 {
                for name in ["kept", "also", "gone"] {
                    seen.push(c.get(i, &format!("/v1/buckets/{name}")).await.0);
                }
            }
            if seen == [200, 200, 404].repeat(3) {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
    eprintln!(
        "Redis restarted empty: configurations back in {:?}",
        t.elapsed()
    );
    // Exact again: the state was lost with Redis, so 3 fit, the 4th not.
    for i in 0..3 {
        assert_eq!(c.allow(i, "kept", "k").await.0, 200);
    }
    assert_eq!(c.allow(1, "kept", "k").await.0, 429);
    assert_eq!(c.get(2, "/v1/buckets/gone").await.0, 404);
    let mut restored = 0.0;
    for i in 0..3 {
        restored += c
            .metric(i, "drip_cluster_configs_restored_total")
            .await
            .unwrap_or(0.0);
    }
    assert_eq!(restored, 2.0);
}

/// Waits until every node remembers `(live, deleted)` configurations.
async fn remembered(c: &TestCluster, want: (f64, f64)) {
    eventually(Duration::from_secs(10), "nodes remember", || async {
        let mut seen = Vec::new();
        for i in 0..c.nodes.len() {
            seen.push((
                c.metric(i, "drip_cluster_remembered{state=\"live\"}").await,
                c.metric(i, "drip_cluster_remembered{state=\"deleted\"}")
                    .await,
            ));
        }
        if seen.iter().all(|s| *s == (Some(want.0), Some(want.1))) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
}

/// A Redis that keeps its data across a kill (append-only file, synced at
/// every write), so a restart brings the buckets back.
fn durable_redis() -> redis_support::RedisServer {
    redis_support::RedisServer::start_with(
        redis_support::free_port(),
        &["--appendonly", "yes", "--appendfsync", "always"],
    )
}

/// Redis killed under load: each node answers by its `on_store_error`
/// (deny: 503 naming the cause; allow: admitted and flagged; local:
/// decided locally and flagged) within the store timeout and stays up;
/// when Redis returns, every node decides in it again within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_each_node_follows_its_on_store_error() {
    if !available() {
        return;
    }
    let mut redis = durable_redis();
    let mut c = TestCluster::on(cluster_support::Backend::Url(redis.url()), 0, FAST);
    for policy in ["deny", "allow", "local"] {
        let mut args = FAST.to_vec();
        args.extend(["--on-store-error", policy]);
        c.add(policy, &args);
    }
    agreed(&c, &[0, 1, 2], Duration::from_secs(10)).await;
    assert_eq!(
        c.configure(0, "load", json!({"capacity": 1000000, "leak_rate": 1000}))
            .await,
        200
    );
    remembered(&c, (1.0, 0.0)).await;
    let c = std::sync::Arc::new(c);

    // Load: two callers per node, each recording (started, took, status,
    // degraded, body) until told to stop.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut load = Vec::new();
    for i in 0..3 {
        for _ in 0..2 {
            let (c, stop) = (c.clone(), stop.clone());
            load.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.is_cancelled() {
                    let t = Instant::now();
                    let (code, body, degraded) = c.allow(i, "load", "k").await;
                    seen.push((t, t.elapsed(), code, degraded, body));
                }
                (i, seen)
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    redis.stop();
    // Every node answers by its policy within the store timeout (300 ms,
    // plus slack for a loaded machine), and readyz says so.
    eventually(
        Duration::from_secs(5),
        "every node follows its policy",
        || async {
            let d = c.allow(0, "load", "k").await;
            let a = c.allow(1, "load", "k").await;
            let l = c.allow(2, "load", "k").await;
            let deny_ok = d.0 == 503
                && d.1["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("on_store_error = deny"));
            let allow_ok = a.0 == 200 && a.2 && a.1["degraded"] == true;
            let local_ok = (l.0 == 200 || l.0 == 429) && l.2 && l.1["degraded"] == true;
            if deny_ok && allow_ok && local_ok {
                Ok(())
            } else {
                Err(format!("{d:?} {a:?} {l:?}"))
            }
        },
    )
    .await;
    // The same over gRPC: UNAVAILABLE naming the cause, or admitted with
    // `drip-degraded` metadata.
    let allow = |i: usize| {
        let addr = format!("http://{}", c.nodes[i].grpc);
        async move {
            RateLimiterServiceClient::connect(addr)
                .await
                .unwrap()
                .allow_request(pb::AllowRequestRequest {
                    bucket_id: "load".into(),
                    key: "k".into(),
                    cost: None,
                    request_id: None,
                })
                .await
        }
    };
    let denied = allow(0).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unavailable);
    assert!(
        denied.message().contains("on_store_error = deny"),
        "{denied:?}"
    );
    for i in [1, 2] {
        let r = allow(i).await.unwrap();
        assert_eq!(r.metadata().get("drip-degraded").unwrap(), "true");
    }
    assert_eq!(c.get(0, "/readyz").await.0, 503);
    assert_eq!(c.get(1, "/readyz").await.1["status"], "degraded");
    assert_eq!(c.get(2, "/readyz").await.1["on_store_error"], "local");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let back = Instant::now();
    redis.restart();
    // Back on Redis within 2 s of its return: answers not degraded.
    let mut recovered = Vec::new();
    for i in 0..3 {
        let took = eventually(Duration::from_secs(2), "back on Redis", || async {
            let r = c.allow(i, "load", "k").await;
            if r.0 == 200 && !r.2 {
                Ok(back.elapsed())
            } else {
                Err(format!("{r:?}"))
            }
        })
        .await;
        recovered.push(took);
    }
    eprintln!("back on Redis after its return: {recovered:?}");
    stop.cancel();

    // Under load, while Redis was down: every answer in time, as its policy.
    for task in load {
        let (i, seen) = task.await.unwrap();
        let during: Vec<_> = seen
            .iter()
            .filter(|(t, ..)| *t > killed + Duration::from_millis(50) && *t < back)
            .collect();
        assert!(!during.is_empty(), "node {i} was asked during the outage");
        let slowest = during.iter().map(|s| s.1).max().unwrap();
        assert!(
            slowest < Duration::from_millis(300 + 700),
            "node {i}: slowest answer during the outage {slowest:?}"
        );
        for (_, _, code, degraded, body) in &during {
            match i {
                0 => assert!(*code == 503 || (*code == 200 && !degraded), "{code} {body}"),
                _ => assert!(
                    *code == 200 && (*degraded || body.get("degraded").is_none()),
                    "{code} {body}"
                ),
            }
        }
        eprintln!(
            "node {i}: {} answers during the outage, slowest {slowest:?}",
            during.len()
        );
    }
    // Every node stayed up and counted its modes.
    for i in 0..3 {
        assert_eq!(c.get(i, "/healthz").await.0, 200);
    }
    assert!(
        c.metric(0, "drip_decisions_by_mode_total{mode=\"deny\"}")
            .await
            .unwrap()
            > 0.0
    );
    assert!(
        c.metric(1, "drip_decisions_by_mode_total{mode=\"allow\"}")
            .await
            .unwrap()
            > 0.0
    );
    assert!(
        c.metric(2, "drip_decisions_by_mode_total{mode=\"local\"}")
            .await
            .unwrap()
            > 0.0
    );
}

/// `local` mode: over a 5 s outage under steady overload, the three nodes
/// together admit within 10% of what the shared limit allows (each node
/// has a third of the rate and capacity); when Redis returns, what they
/// admitted is charged to the shared bucket, which then refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_keeps_the_limit_over_an_outage_and_charges_it_back() {
    if !available() {
        return;
    }
    let mut redis = durable_redis();
    let mut args = FAST.to_vec();
    args.extend(["--on-store-error", "local"]);
    let c = TestCluster::on(cluster_support::Backend::Url(redis.url()), 3, &args);
    agreed(&c, &[0, 1, 2], Duration::from_secs(10)).await;
    let (capacity, rate) = (30.0, 6.0);
    assert_eq!(
        c.configure(0, "lim", json!({"capacity": 30, "leak_rate": rate}))
            .await,
        200
    );
    remembered(&c, (1.0, 0.0)).await;
    let c = std::sync::Arc::new(c);

    redis.stop();
    let down = Instant::now();
    let outage = Duration::from_secs(5);
    // Steady overload: every node asked every 10 ms for the whole outage.
    let mut load = Vec::new();
    for i in 0..3 {
        let c = c.clone();
        load.push(tokio::spawn(async move {
            let (mut admitted, mut asked) = (0u64, 0u64);
            while down.elapsed() < outage {
                let (code, body, degraded) = c.allow(i, "lim", "k").await;
                assert!(degraded, "{code} {body}");
                asked += 1;
                if code == 200 {
                    admitted += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (admitted, asked)
        }));
    }
    let mut admitted = 0;
    for t in load {
        let (a, asked) = t.await.unwrap();
        assert!(asked > a, "overloaded: some were refused");
        admitted += a;
    }
    let took = down.elapsed().as_secs_f64();
    let allowed = capacity + rate * took;
    eprintln!("local mode: {admitted} admitted over {took:.2} s; the limit allows {allowed:.1}");
    assert!(
        (admitted as f64 - allowed).abs() <= 0.1 * allowed,
        "{admitted} admitted, the limit allows {allowed:.1}"
    );

    // Redis returns (with its data): each node charges what it admitted,
    // then decides in Redis again; the shared bucket refuses what was
    // already spent.
    redis.restart();
    eventually(
        Duration::from_secs(5),
        "every node back on Redis",
        || async {
            let mut down = Vec::new();
            for i in 0..3 {
                down.push(c.metric(i, "drip_store_down").await);
            }
            if down.iter().all(|d| *d == Some(0.0)) {
                Ok(())
            } else {
                Err(format!("{down:?}"))
            }
        },
    )
    .await;
    for i in 0..3 {
        let (code, body, degraded) = c.allow(i, "lim", "k").await;
        assert_eq!((code, degraded), (429, false), "{body}");
    }
    let (_, s) = c.get(1, "/v1/buckets/lim?key=k").await;
    let level = s["level"].as_f64().unwrap();
    assert!(level > capacity, "the charged bucket holds {level}");
}

/// Redis frozen (SIGSTOP, so connections hang instead of being refused):
/// the first decision fails over after the store timeout, the next ones at
/// once (the store is known down; a background probe watches it); after
/// SIGCONT the node decides in Redis again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_one_store_timeout_then_none() {
    if !available() {
        return;
    }
    let redis = redis_support::RedisServer::start();
    let mut args = FAST.to_vec();
    args.extend(["--on-store-error", "allow"]);
    let c = TestCluster::on(cluster_support::Backend::Url(redis.url()), 1, &args);
    assert_eq!(
        c.configure(0, "f", json!({"capacity": 1000, "leak_rate": 1000}))
            .await,
        200
    );
    let r = c.allow(0, "f", "k").await;
    assert_eq!((r.0, r.2), (200, false), "{r:?}");
    let info = redis_support::cli(redis.port, &["INFO", "server"]);
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .to_owned();
    let signal = |sig: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        )
    };
    signal("-STOP");
    let t = Instant::now();
    let first = c.allow(0, "f", "k").await;
    let first_took = t.elapsed();
    let t = Instant::now();
    let second = c.allow(0, "f", "k").await;
    let second_took = t.elapsed();
    signal("-CONT");
    eprintln!("frozen Redis: first answer {first_took:?}, next {second_took:?}");
    assert!(first.2 && second.2, "{first:?} {second:?}");
    // The store timeout is 300 ms: the first waits it out, the next does not.
    assert!(first_took >= Duration::from_millis(250), "{first_took:?}");
    assert!(
        first_took < Duration::from_millis(300 + 700),
        "{first_took:?}"
    );
    assert!(second_took < Duration::from_millis(100), "{second_took:?}");
    eventually(Duration::from_secs(3), "back on Redis", || async {
        let r = c.allow(0, "f", "k").await;
        if r.0 == 200 && !r.2 {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
}

/// `drip status --url` shows the buckets, then the members, which are
/// alive, and the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drip_status_shows_the_cluster() {
    if !available() {
        return;
    }
    let c = TestCluster::single(3, FAST);
    let leader = agreed(&c, &[0, 1, 2], Duration::from_secs(10)).await;
    assert_eq!(
        c.configure(0, "api", json!({"capacity": 5, "leak_rate": 1}))
            .await,
        200
    );
    c.allow(1, "api", "").await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drip"))
        .args(["status", "--url", &c.nodes[2].url("")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.lines().any(|l| l.starts_with("api ")), "{text}");
    assert!(
        text.contains(&format!(
            "cluster: 3 members, 3 alive, leader {leader} (seen from node-2)"
        )),
        "{text}"
    );
    for n in &c.nodes {
        let row = text
            .lines()
            .find(|l| l.starts_with(&n.id))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(row.contains(&n.http) && row.contains("yes"), "{row}");
        assert_eq!(
            row.contains(" * ") || row.contains(&format!("{} *", n.id)),
            n.id == leader,
            "{row}"
        );
    }
}
