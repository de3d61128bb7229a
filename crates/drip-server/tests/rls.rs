//! Envoy's rate limit service (issue 18) through a real tonic client from
//! `envoy-types` against real `drip serve --rls-config` processes: the
//! configuration shapes of envoyproxy/ratelimit's README
//! (`tests/fixtures/rls/readme`) behave as its README says, except where
//! drip is stricter (no boundary burst: `a_rolling_unit_has_no_boundary_burst`);
//! several descriptors consume atomically; the configuration reloads while
//! serving; bad YAML is refused naming file, line and field;
//! `share_threshold` wildcards share one counter; the same cases with two
//! nodes on one Redis; a Redis outage answered by `--on-store-error`, and a
//! joint decision Redis Cluster cannot make leaving the store up.

#[cfg(feature = "redis")]
mod cluster_support;
#[cfg(feature = "redis")]
#[path = "../../drip/tests/redis_support/mod.rs"]
mod redis_support;
mod serve_proc;

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
    Entry, RateLimitOverride,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use serde_json::Value;
use serve_proc::{DRIP, Serve};
use tonic::transport::Channel;

const OK: i32 = 1;
const OVER: i32 = 2;
/// Steps of a per-second rule must run within its second; on a machine so
/// loaded that they did not, the step's refusal is not asserted.
const FAST_ENOUGH: Duration = Duration::from_millis(900);

fn readme_dir() -> String {
    format!("{}/tests/fixtures/rls/readme", env!("CARGO_MANIFEST_DIR"))
}

fn desc(entries: &[(&str, &str)], hits: Option<u64>) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).to_owned(),
                value: (*v).to_owned(),
            })
            .collect(),
        limit: None,
        hits_addend: hits.map(|value| UInt64Value { value }),
    }
}

struct Rls(RateLimitServiceClient<Channel>);

impl Rls {
    async fn connect(grpc: &str) -> Rls {
        Rls(RateLimitServiceClient::connect(format!("http://{grpc}"))
            .await
            .expect("connect to the RLS"))
    }

    async fn ask(
        &mut self,
        domain: &str,
        d: Vec<RateLimitDescriptor>,
        hits: u32,
    ) -> RateLimitResponse {
        self.0
            .should_rate_limit(RateLimitRequest {
                domain: domain.to_owned(),
                descriptors: d,
                hits_addend: hits,
            })
            .await
            .expect("ShouldRateLimit")
            .into_inner()
    }
}

fn codes(r: &RateLimitResponse) -> (i32, Vec<i32>) {
    (r.overall_code, r.statuses.iter().map(|s| s.code).collect())
}

fn remaining(r: &RateLimitResponse) -> Vec<u32> {
    r.statuses.iter().map(|s| s.limit_remaining).collect()
}

/// The README's cases, each call on the next node (two nodes on one store
/// share every limit).
async fn readme_cases(nodes: &mut [Rls]) {
    let n = nodes.len();
    let mut k = 0;
    let mut node = || {
        k += 1;
        k % n
    };

    // Example 1: 500 per second per value; 500 at once fit, one more does not.
    let t = Instant::now();
    let users = || vec![desc(&[("database", "users")], None)];
    let r = nodes[node()].ask("mongo_cps", users(), 500).await;
    assert_eq!((codes(&r), remaining(&r)), ((OK, vec![OK]), vec![0]));
    let limit = r.statuses[0].current_limit.clone().unwrap();
    assert_eq!((limit.requests_per_unit, limit.unit), (500, 1));
    let r = nodes[node()].ask("mongo_cps", users(), 1).await;
    if t.elapsed() < FAST_ENOUGH {
        assert_eq!(codes(&r), (OVER, vec![OVER]));
    }

    // Example 2: nested descriptors, keyed per value; two limits on one
    // request, decided together: refused by one, the other is not consumed.
    let both = |to: &str| {
        vec![
            desc(&[("message_type", "marketing"), ("to_number", to)], None),
            desc(&[("to_number", to)], None),
        ]
    };
    for i in 0..5u32 {
        let r = nodes[node()].ask("messaging", both("2061111111"), 0).await;
        assert_eq!(codes(&r), (OK, vec![OK, OK]), "marketing message {i}");
        assert_eq!(remaining(&r), vec![4 - i, 99 - i]);
    }
    let r = nodes[node()].ask("messaging", both("2061111111"), 0).await;
    assert_eq!(codes(&r), (OVER, vec![OVER, OK]));
    assert_eq!(remaining(&r), vec![0, 95], "the day limit was not consumed");
    // duration_until_reset: the day window clears a day after the first hit.
    let reset = r.statuses[0].duration_until_reset.unwrap().seconds;
    assert!((86_000..=86_400).contains(&reset), "{reset}");
    // Another number has its own limits; the plain day limit goes on alone.
    let r = nodes[node()].ask("messaging", both("2062222222"), 0).await;
    assert_eq!(remaining(&r), vec![4, 99]);
    let r = nodes[node()]
        .ask(
            "messaging",
            vec![desc(&[("to_number", "2061111111")], None)],
            0,
        )
        .await;
    assert_eq!((codes(&r), remaining(&r)), ((OK, vec![OK]), vec![94]));

    // Per-descriptor hits_addend overrides the request's.
    let r = nodes[node()]
        .ask(
            "messaging",
            vec![
                desc(&[("to_number", "5")], Some(40)),
                desc(&[("message_type", "marketing"), ("to_number", "5")], None),
            ],
            2,
        )
        .await;
    assert_eq!(
        (codes(&r), remaining(&r)),
        ((OK, vec![OK, OK]), vec![60, 3])
    );

    // Example 3: key_value before key; 0 per unit refuses everything and
    // consumes nothing from the other descriptor.
    let ip = |a: &str| vec![desc(&[("remote_address", a)], None)];
    let r = nodes[node()]
        .ask("edge_proxy_per_ip", ip("50.0.0.1"), 0)
        .await;
    assert_eq!((codes(&r), remaining(&r)), ((OK, vec![OK]), vec![9]));
    let mut two = ip("50.0.0.5");
    two.extend(ip("50.0.0.9"));
    let r = nodes[node()].ask("edge_proxy_per_ip", two, 0).await;
    assert_eq!(codes(&r), (OVER, vec![OVER, OK]));
    assert_eq!(
        r.statuses[0]
            .current_limit
            .as_ref()
            .unwrap()
            .requests_per_unit,
        0
    );
    let r = nodes[node()]
        .ask("edge_proxy_per_ip", ip("50.0.0.9"), 0)
        .await;
    if r.statuses[0].duration_until_reset.unwrap().seconds == 0 {
        assert_eq!(
            remaining(&r),
            vec![9],
            "the refused request consumed nothing"
        );
    }

    // Example 4: a descriptor matches only at its own depth.
    let r = nodes[node()]
        .ask(
            "example4",
            vec![desc(&[("key", "value"), ("subkey", "x")], None)],
            0,
        )
        .await;
    assert_eq!(codes(&r), (OK, vec![OK]));
    assert!(r.statuses[0].current_limit.is_none(), "no rule at depth 2");
    let r = nodes[node()]
        .ask(
            "example4",
            vec![desc(&[("nested", "value"), ("subkey", "x")], None)],
            0,
        )
        .await;
    assert_eq!(
        r.statuses[0]
            .current_limit
            .as_ref()
            .unwrap()
            .requests_per_unit,
        300
    );

    // Example 5: unlimited: OK with remaining u32::MAX; unknown keys: OK, no limit.
    let r = nodes[node()]
        .ask(
            "internal",
            vec![desc(&[("ldap", "x")], None), desc(&[("nope", "x")], None)],
            1_000_000,
        )
        .await;
    assert_eq!(codes(&r), (OK, vec![OK, OK]));
    assert_eq!(r.statuses[0].limit_remaining, u32::MAX);
    assert!(r.statuses[1].current_limit.is_none());

    // Example 6: shadow mode: user-a is never limited (but counted), user-b is.
    let svc = |u: &str| vec![desc(&[("service", "auth"), ("user", u)], None)];
    let t = Instant::now();
    let a = nodes[node()].ask("example6", svc("user-a"), 11).await;
    let b = nodes[node()].ask("example6", svc("user-b"), 21).await;
    assert_eq!(codes(&a), (OK, vec![OK]), "shadow mode answers OK");
    if t.elapsed() < FAST_ENOUGH {
        assert_eq!(codes(&b), (OVER, vec![OVER]));
    }
    // Past its limit, a shadow rule still answers OK...
    let t = Instant::now();
    let _ = nodes[node()].ask("example6", svc("user-a"), 10).await;
    let r = nodes[node()].ask("example6", svc("user-a"), 1).await;
    if t.elapsed() < FAST_ENOUGH {
        assert_eq!(codes(&r), (OK, vec![OK]));
    }
    // ...and does not refuse the descriptor beside it, which consumes
    // (user-b's 21 above were refused whole: nothing used).
    let mut mixed = svc("user-a");
    mixed.extend(svc("user-b"));
    let r = nodes[node()].ask("example6", mixed, 1).await;
    if t.elapsed() < FAST_ENOUGH {
        assert_eq!(codes(&r), (OK, vec![OK, OK]));
    }
    assert_eq!(r.statuses[1].limit_remaining, 19, "user-b consumed one");

    // Example 7: replaces: with both descriptors only the replacing 10/s
    // limit applies, and the replaced 5/s one is not consumed.
    let specific = || desc(&[("key_1", "value_1"), ("user", "bkthomps")], None);
    let replacing = || desc(&[("key_2", "value_2"), ("user", "bkthomps")], None);
    let t = Instant::now();
    let r = nodes[node()]
        .ask("example7", vec![specific(), replacing()], 8)
        .await;
    assert_eq!(codes(&r), (OK, vec![OK, OK]));
    assert!(r.statuses[0].current_limit.is_none(), "replaced");
    assert_eq!(r.statuses[1].limit_remaining, 2);
    let r = nodes[node()].ask("example7", vec![specific()], 5).await;
    if t.elapsed() < FAST_ENOUGH {
        assert_eq!((codes(&r), remaining(&r)), ((OK, vec![OK]), vec![0]));
    }

    // Example 8: detailed_metric accepted; key1's values each have 10/min.
    for v in ["a", "b"] {
        let r = nodes[node()]
            .ask("example8", vec![desc(&[("key1", v)], None)], 10)
            .await;
        assert_eq!(codes(&r), (OK, vec![OK]));
    }
    let r = nodes[node()]
        .ask("example8", vec![desc(&[("key1", "value1")], None)], 0)
        .await;
    assert_eq!(remaining(&r), vec![19]);

    // Example 9: wildcards, each matching value keyed on its own.
    let path = |p: &str| vec![desc(&[("path", p)], None)];
    for p in ["/api/1/action", "/api/2/action"] {
        assert_eq!(
            nodes[node()].ask("example9", path(p), 2).await.overall_code,
            OK
        );
    }
    assert_eq!(
        nodes[node()]
            .ask("example9", path("/api/1/action"), 0)
            .await
            .overall_code,
        OVER
    );
    let r = nodes[node()].ask("example9", path("/api/1/other"), 5).await;
    assert!(
        r.statuses[0].current_limit.is_none(),
        "middle wildcard needs the suffix"
    );
    let r = nodes[node()]
        .ask(
            "example9",
            vec![desc(&[("route", "/api/v1/resource/7/action")], None)],
            0,
        )
        .await;
    assert_eq!(remaining(&r), vec![19]);
    let r = nodes[node()]
        .ask("example9", vec![desc(&[("key1", "valueXYZ")], None)], 0)
        .await;
    assert_eq!(remaining(&r), vec![19]);
}

/// drip is stricter than envoyproxy/ratelimit here (the one documented
/// difference): 2 per second means at most 2 in ANY second, so after 2
/// admissions the next comes a whole second later, not at the next
/// wall-clock second (a fixed window admits 2 more there: up to 4 within
/// one second across the boundary).
async fn a_rolling_unit_has_no_boundary_burst(node: &mut Rls) {
    let client = || vec![desc(&[("client", "c")], None)];
    let before = Instant::now();
    assert_eq!(node.ask("strict", client(), 2).await.overall_code, OK);
    let first_again = loop {
        let r = node.ask("strict", client(), 1).await;
        if r.overall_code == OK {
            break before.elapsed();
        }
        assert!(
            before.elapsed() < Duration::from_secs(5),
            "never admitted again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        first_again >= Duration::from_secs(1),
        "admitted after {first_again:?}"
    );
}

async fn get_json(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn metrics(http: &str) -> String {
    reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn readme_configurations_behave_as_documented_on_memory() {
    let dir = readme_dir();
    let serve = Serve::start_with(&["--rls-config", &dir, "--rls-headers"]);
    let mut node = Rls::connect(&serve.grpc).await;
    readme_cases(std::slice::from_mut(&mut node)).await;
    a_rolling_unit_has_no_boundary_burst(&mut node).await;

    // The RateLimit fields of the tightest descriptor, when asked for.
    let r = node
        .ask("internal", vec![desc(&[("azure", "x")], None)], 7)
        .await;
    let headers: Vec<(String, String)> = r
        .response_headers_to_add
        .iter()
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    assert_eq!(
        headers,
        [
            (
                "ratelimit-policy".to_owned(),
                "\"rls\";q=100;w=60".to_owned()
            ),
            ("ratelimit".to_owned(), "\"rls\";r=93;t=60".to_owned()),
        ]
    );

    // GET /v1/rls: every rule with its policy and window kind.
    let v = get_json(format!("{}/v1/rls", serve.http_url())).await;
    assert_eq!(v["enabled"], true);
    let rules = v["rules"].as_array().unwrap();
    let rule = |d: &str, k: &str| {
        rules
            .iter()
            .find(|r| r["domain"] == d && r["key"] == k)
            .unwrap_or_else(|| panic!("no rule {d} {k}"))
            .clone()
    };
    let users = rule("mongo_cps", "database_users");
    assert_eq!(users["window"], "exact");
    assert_eq!(
        users["policy"],
        "police rate=1/1000000 capacity=500 window=500/1000000000/1"
    );
    assert_eq!(rule("strict", "big")["window"], "approximate");
    assert_eq!(rule("internal", "ldap")["unlimited"], true);
    assert_eq!(rule("example6", "service.user_user-a")["shadow_mode"], true);
    assert_eq!(
        rule("example7", "key_2_value_2.user_bkthomps")["replaces"][0],
        "specific_limit"
    );

    // drip status shows them.
    let out = std::process::Command::new(DRIP)
        .args(["status", "--url", &serve.http_url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rls: "), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("example7 ")
            && l.contains("10/second")
            && l.contains("replaces=specific_limit")),
        "{text}"
    );

    // Metrics named as envoyproxy/ratelimit's.
    let m = metrics(&serve.http).await;
    for line in [
        "ratelimit_service_rate_limit_total_hits{domain=\"messaging\",key=\"message_type_marketing.to_number\"} 9",
        "ratelimit_service_rate_limit_over_limit{domain=\"messaging\",key=\"message_type_marketing.to_number\"} 1",
        "ratelimit_service_rate_limit_shadow_mode{domain=\"example6\",key=\"service.user_user-a\"} 13",
    ] {
        assert!(m.contains(line), "no {line:?} in\n{m}");
    }
}

#[tokio::test]
async fn several_descriptors_consume_atomically_under_concurrency() {
    // 8 clients each send 40 requests of two descriptors: a 5/day marketing
    // limit per number and the 100/day per number. Exactly 5 pass, and the
    // 100/day limit then shows exactly 5 consumed.
    let serve = Serve::start_with(&["--rls-config", &readme_dir()]);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let grpc = serve.grpc.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Rls::connect(&grpc).await;
            let mut ok = 0;
            for _ in 0..40 {
                let d = vec![
                    desc(&[("message_type", "marketing"), ("to_number", "7")], None),
                    desc(&[("to_number", "7")], None),
                ];
                if c.ask("messaging", d, 1).await.overall_code == OK {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap();
    }
    assert_eq!(admitted, 5);
    let mut c = Rls::connect(&serve.grpc).await;
    // A descriptor's hits_addend of 0 only looks.
    let r = c
        .ask("messaging", vec![desc(&[("to_number", "7")], Some(0))], 1)
        .await;
    assert_eq!(remaining(&r), vec![95]);
}

#[tokio::test]
async fn share_threshold_values_share_one_counter() {
    let file = format!(
        "{}/tests/fixtures/rls/share/share.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let serve = Serve::start_with(&["--rls-config", &file]);
    let mut c = Rls::connect(&serve.grpc).await;
    // Three different paths under files/ use up the one shared limit of 3.
    for (i, path) in ["files/a.pdf", "files/b.csv", "files/c"].iter().enumerate() {
        let r = c.ask("files", vec![desc(&[("path", path)], None)], 1).await;
        assert_eq!(codes(&r), (OK, vec![OK]), "{path}");
        assert_eq!(remaining(&r), vec![2 - i as u32], "{path}");
    }
    let r = c
        .ask("files", vec![desc(&[("path", "files/d")], None)], 1)
        .await;
    assert_eq!(
        codes(&r),
        (OVER, vec![OVER]),
        "a fourth path shares the limit"
    );
    // Without share_threshold each value matched by the wildcard counts apart.
    for user in ["u1", "u1", "u1", "u2"] {
        let r = c.ask("files", vec![desc(&[("user", user)], None)], 1).await;
        assert_eq!(codes(&r), (OK, vec![OK]), "{user}");
    }
    let r = c.ask("files", vec![desc(&[("user", "u1")], None)], 1).await;
    assert_eq!(codes(&r), (OVER, vec![OVER]));
}

#[tokio::test]
async fn the_configuration_reloads_while_serving() {
    let dir = tempfile_dir();
    let file = dir.join("limits.yaml");
    // The unit as envoyproxy/ratelimit also accepts it: uppercase.
    let rule = |n: u32| {
        format!(
            "domain: live\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: DAY\n      requests_per_unit: {n}\n"
        )
    };
    std::fs::write(&file, rule(1)).unwrap();
    let serve = Serve::start_with(&[
        "--rls-config",
        dir.to_str().unwrap(),
        "--rls-reload-every",
        "50ms",
    ]);
    let mut c = Rls::connect(&serve.grpc).await;
    let ask = || vec![desc(&[("k", "v")], None)];
    assert_eq!(c.ask("live", ask(), 1).await.overall_code, OK);
    assert_eq!(c.ask("live", ask(), 1).await.overall_code, OVER);
    // A descriptor's own limit (2 a day), used once before the reload.
    let own = || {
        let mut d = desc(&[("k", "o")], None);
        d.limit = Some(RateLimitOverride {
            requests_per_unit: 2,
            unit: 4, // DAY
        });
        vec![d]
    };
    assert_eq!(remaining(&c.ask("live", own(), 1).await), vec![1]);
    // Raise the limit: the key keeps what it used (1 of 3).
    std::fs::write(&file, rule(3)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = get_json(format!("{}/v1/rls", serve.http_url())).await;
        if v["rules"][0]["requests_per_unit"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "not reloaded: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c.ask("live", ask(), 1).await;
    assert_eq!((codes(&r), remaining(&r)), ((OK, vec![OK]), vec![1]));
    // The override's bucket survived the reload with what it used (another
    // node sharing the store may be using it).
    let r = c.ask("live", own(), 1).await;
    assert_eq!((codes(&r), remaining(&r)), ((OK, vec![OK]), vec![0]));
    // A bad file is refused; the loaded rules stay; both are counted.
    std::fs::write(
        &file,
        "domain: live\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight}\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !metrics(&serve.http)
        .await
        .contains("ratelimit_service_config_load_error 1")
    {
        assert!(Instant::now() < deadline, "the bad file was not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metrics(&serve.http)
            .await
            .contains("ratelimit_service_config_load_success 1")
    );
    let r = c.ask("live", ask(), 1).await;
    assert_eq!((codes(&r), remaining(&r)), ((OK, vec![OK]), vec![0]));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_yaml_is_refused_at_start_naming_file_line_and_field() {
    let bad = format!(
        "{}/tests/fixtures/rls/bad/unit.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = std::process::Command::new(DRIP)
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
            "--rls-config",
            &bad,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unit.yaml:5:"), "{err}");
    assert!(err.contains("descriptors[0].rate_limit.unit"), "{err}");
    assert!(err.contains("fortnight"), "{err}");
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "drip-rls-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The README cases with two `drip serve` nodes on one Redis, calls
/// alternating between them: they share every limit.
#[cfg(feature = "redis")]
#[tokio::test]
async fn readme_configurations_with_two_nodes_on_redis() {
    if !redis_here() {
        return;
    }
    let dir = readme_dir();
    let cluster = cluster_support::TestCluster::single(2, &["--rls-config", &dir]);
    let mut nodes = Vec::new();
    for n in &cluster.nodes {
        nodes.push(Rls::connect(&n.grpc).await);
    }
    readme_cases(&mut nodes).await;
    a_rolling_unit_has_no_boundary_burst(&mut nodes[1]).await;
}

/// Whether redis-server is here to test with (in CI it must be).
#[cfg(feature = "redis")]
fn redis_here() -> bool {
    let here = cluster_support::available();
    assert!(
        here || std::env::var("CI").is_err(),
        "redis-server is required in CI"
    );
    here
}

/// The two README example 2 limits of one number, in one request.
#[cfg(feature = "redis")]
fn marketing_and_number(to: &str) -> Vec<RateLimitDescriptor> {
    vec![
        desc(&[("message_type", "marketing"), ("to_number", to)], None),
        desc(&[("to_number", to)], None),
    ]
}

/// Redis stopped under a node with `--on-store-error local`: its joint
/// decisions go on in its local buckets (one node: the whole limit), and
/// when Redis is back what they admitted is charged to it.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_answered_by_on_store_error_local() {
    if !redis_here() {
        return;
    }
    // Durable: a restart brings back what was decided before the outage.
    let mut redis = redis_support::RedisServer::start_with(
        redis_support::free_port(),
        &["--appendonly", "yes", "--appendfsync", "always"],
    );
    let dir = readme_dir();
    let mut args = cluster_support::FAST.to_vec();
    args.extend(["--rls-config", &dir, "--on-store-error", "local"]);
    let c = cluster_support::TestCluster::on(cluster_support::Backend::Url(redis.url()), 1, &args);
    let mut node = Rls::connect(&c.nodes[0].grpc).await;
    let r = node.ask("messaging", marketing_and_number("9"), 1).await;
    assert_eq!(codes(&r), (OK, vec![OK, OK]), "through Redis");

    redis.stop();
    // The local buckets start empty with the whole limit (one node), not
    // knowing what Redis holds: 5 a day for marketing, then refused.
    for i in 0..5 {
        let r = node.ask("messaging", marketing_and_number("9"), 1).await;
        assert_eq!(codes(&r), (OK, vec![OK, OK]), "local decision {i}");
    }
    let r = node.ask("messaging", marketing_and_number("9"), 1).await;
    assert_eq!(codes(&r).0, OVER, "the local share is used up");
    assert!(c.metric(0, "drip_store_down").await == Some(1.0));

    redis.restart();
    cluster_support::eventually(Duration::from_secs(5), "back on Redis", || async {
        match c.metric(0, "drip_store_down").await {
            Some(0.0) => Ok(()),
            v => Err(format!("{v:?}")),
        }
    })
    .await;
    // Redis holds the 1 it decided and the 5 charged back: refused there.
    let r = node.ask("messaging", marketing_and_number("9"), 1).await;
    assert_eq!(codes(&r).0, OVER);
    let r = node
        .ask("messaging", vec![desc(&[("to_number", "9")], Some(0))], 1)
        .await;
    assert_eq!(remaining(&r), vec![94], "6 of 100 spent, in Redis");
}

/// On Redis Cluster a request whose descriptors fall in two buckets
/// cannot be decided in one script; it is refused as unsupported, and the
/// store stays up: the next request is decided in Redis, not by
/// `--on-store-error deny`.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_joint_decision_leaves_the_store_up() {
    if !redis_here() {
        return;
    }
    let dir = readme_dir();
    let mut args = cluster_support::FAST.to_vec();
    args.extend(["--rls-config", &dir, "--on-store-error", "deny"]);
    let c = cluster_support::TestCluster::redis_cluster(1, &args);
    let mut node = Rls::connect(&c.nodes[0].grpc).await;
    let err = node
        .0
        .should_rate_limit(RateLimitRequest {
            domain: "messaging".to_owned(),
            descriptors: marketing_and_number("3"),
            hits_addend: 1,
        })
        .await
        .expect_err("two buckets on Redis Cluster");
    assert!(
        err.message().contains("within one bucket"),
        "{}",
        err.message()
    );
    let r = node
        .ask("messaging", vec![desc(&[("to_number", "3")], None)], 1)
        .await;
    assert_eq!(codes(&r), (OK, vec![OK]));
    assert_eq!(c.metric(0, "drip_store_down").await, Some(0.0));
}
