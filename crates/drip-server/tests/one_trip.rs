//! One store call per decision (issue 13): on every store, an admitted and
//! a refused request, over HTTP and over gRPC, each cost exactly one call
//! to the store (and, on Redis, exactly one command: the `EVALSHA`). A
//! refusal's `RateLimit-Policy` comes from the decision, not from a second
//! look-up of the policy.
//!
//! Every store runs behind [`Counting`], a store that counts every call it
//! forwards; Redis is also a real `redis-server` whose `MONITOR` stream
//! shows the commands each request sent.

mod common;
#[path = "../../drip/tests/redis_support/mod.rs"]
mod redis_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestServer;
use drip::core::Request;
use drip::store::{KeyLevel, KeyStatus, RedisOptions, RedisStore, SqliteStore};
use drip::{Decision, Limiter, MemoryStore, Policy, Result, Store};
use drip_server::grpc::pb;
use drip_server::server::Options;
use redis_support::RedisServer;
use serde_json::json;

/// Every store call, by name, shared with the test.
type Calls = Arc<Mutex<BTreeMap<&'static str, u64>>>;

/// A store that counts every call before forwarding it to `inner`.
struct Counting<S> {
    inner: S,
    calls: Calls,
}

impl<S> Counting<S> {
    fn new(inner: S) -> (Self, Calls) {
        let calls = Calls::default();
        let store = Counting {
            inner,
            calls: calls.clone(),
        };
        (store, calls)
    }

    fn count(&self, name: &'static str) {
        *self.calls.lock().unwrap().entry(name).or_default() += 1;
    }
}

impl<S: Store> Store for Counting<S> {
    async fn configure(&self, bucket: &str, policy: Policy, reset: bool) -> Result<()> {
        self.count("configure");
        self.inner.configure(bucket, policy, reset).await
    }
    async fn policy(&self, bucket: &str) -> Result<Option<Policy>> {
        self.count("policy");
        self.inner.policy(bucket).await
    }
    async fn decide(&self, bucket: &str, key: &str, req: Request) -> Result<Decision> {
        self.count("decide");
        self.inner.decide(bucket, key, req).await
    }
    async fn status(&self, bucket: &str, key: &str) -> Result<KeyStatus> {
        self.count("status");
        self.inner.status(bucket, key).await
    }
    async fn delete(&self, bucket: &str) -> Result<bool> {
        self.count("delete");
        self.inner.delete(bucket).await
    }
    async fn list(&self) -> Result<Vec<(String, Policy)>> {
        self.count("list");
        self.inner.list().await
    }
    async fn ping(&self) -> Result<()> {
        self.count("ping");
        self.inner.ping().await
    }
    async fn sweep_idle(&self) -> Result<u64> {
        self.count("sweep_idle");
        self.inner.sweep_idle().await
    }
    async fn keys_held(&self) -> Result<Option<u64>> {
        self.count("keys_held");
        self.inner.keys_held().await
    }
    async fn busiest_keys(&self, bucket: &str, n: usize) -> Result<Option<Vec<KeyLevel>>> {
        self.count("busiest_keys");
        self.inner.busiest_keys(bucket, n).await
    }
}

/// No sweep during the test: only the requests it makes reach the store.
fn options() -> Options {
    Options {
        sweep_every: Duration::from_secs(3600),
        ..Options::default()
    }
}

/// One request of the scenario and what it must answer.
#[derive(Clone, Copy, Debug)]
enum Ask {
    Http { key: &'static str, admitted: bool },
    HttpAcquire { key: &'static str, admitted: bool },
    Grpc { key: &'static str, admitted: bool },
}

/// Capacity 2, leaking one unit in 1000 s: two admitted per key, then refused.
const SCENARIO: [Ask; 9] = [
    Ask::Http {
        key: "h",
        admitted: true,
    },
    Ask::Http {
        key: "h",
        admitted: true,
    },
    Ask::Http {
        key: "h",
        admitted: false,
    },
    Ask::HttpAcquire {
        key: "a",
        admitted: true,
    },
    Ask::HttpAcquire {
        key: "a",
        admitted: true,
    },
    Ask::HttpAcquire {
        key: "a",
        admitted: false,
    },
    Ask::Grpc {
        key: "g",
        admitted: true,
    },
    Ask::Grpc {
        key: "g",
        admitted: true,
    },
    Ask::Grpc {
        key: "g",
        admitted: false,
    },
];

async fn configure(s: &TestServer) {
    let r = s
        .put("api", json!({"capacity": 2, "leak_rate": 0.001}))
        .await;
    assert_eq!(r.status(), 200);
}

/// Makes one request and checks its answer (and, for a refusal over HTTP,
/// the `RateLimit-Policy` field built from the decision).
async fn ask(s: &TestServer, a: Ask) {
    match a {
        Ask::Http { key, admitted } | Ask::HttpAcquire { key, admitted } => {
            let r = match a {
                Ask::Http { .. } => s.post("/v1/buckets/api/allow", json!({"key": key})).await,
                _ => {
                    let body = json!({"key": key, "timeout_ms": 0});
                    s.post("/v1/buckets/api/acquire", body).await
                }
            };
            assert_eq!(r.status() == 200, admitted, "{a:?}: {}", r.status());
            let policy = r.headers().get("ratelimit-policy").cloned();
            if admitted {
                assert!(policy.is_none(), "{a:?}");
            } else {
                assert_eq!(r.status(), 429);
                assert_eq!(policy.unwrap(), "\"api\";q=2;w=2000", "{a:?}");
                assert!(r.headers().contains_key("retry-after"), "{a:?}");
            }
        }
        Ask::Grpc { key, admitted } => {
            let mut g = s.grpc().await;
            let r = g
                .allow_request(pb::AllowRequestRequest {
                    bucket_id: "api".into(),
                    key: key.into(),
                    cost: None,
                    request_id: None,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.allowed, admitted, "{a:?}");
        }
    }
}

/// Runs the scenario on a server over `store`, checking after each request
/// that it cost one `decide` and no other store call; `extra` checks
/// whatever else the store can count (Redis commands).
async fn one_call_each<S: Store>(store: S, mut extra: impl FnMut(Ask)) {
    let (store, calls) = Counting::new(store);
    let s = TestServer::start(Limiter::new(store), options()).await;
    configure(&s).await;
    // Warm up anything a first call loads (the Redis script), on another key.
    ask(
        &s,
        Ask::Http {
            key: "warm",
            admitted: true,
        },
    )
    .await;
    extra(Ask::Http {
        key: "warm",
        admitted: true,
    });
    for a in SCENARIO {
        calls.lock().unwrap().clear();
        ask(&s, a).await;
        // The store's own count first (Redis: the commands on the wire).
        extra(a);
        let seen = calls.lock().unwrap().clone();
        assert_eq!(
            seen,
            BTreeMap::from([("decide", 1)]),
            "{a:?} made other store calls than one decide"
        );
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn memory_one_store_call_per_decision() {
    one_call_each(MemoryStore::new(), |_| {}).await;
}

#[tokio::test]
async fn sqlite_one_store_call_per_decision() {
    let dir = std::env::temp_dir().join(format!("drip-one-trip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(dir.join("drip.db")).unwrap();
    one_call_each(store, |_| {}).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `redis-cli MONITOR` on a Redis: the commands its clients send (not
/// those a script runs, which MONITOR marks `lua`), read by a thread.
struct Monitor {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    port: u16,
    marks: u64,
}

impl Monitor {
    fn start(port: u16) -> Monitor {
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "MONITOR"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-cli MONITOR");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut m = Monitor {
            child,
            lines,
            port,
            marks: 0,
        };
        m.sent_since_mark(); // waits until MONITOR is live
        m
    }

    /// The client commands (upper-case names) since the last call: sends a
    /// marker `ECHO` and waits for it to come through, so every command
    /// sent before it has (polling, never a fixed sleep).
    fn sent_since_mark(&mut self) -> Vec<String> {
        self.marks += 1;
        let mark = format!("drip-mark-{}", self.marks);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            redis_support::cli(self.port, &["ECHO", &mark]);
            let mut lines = self.lines.lock().unwrap();
            if let Some(i) = lines.iter().position(|l| l.contains(&mark)) {
                let seen: Vec<String> = lines.drain(..=i).collect();
                return seen
                    .iter()
                    .filter(|l| !l.contains(" lua]") && !l.contains("\"ECHO\""))
                    .filter_map(|l| l.split('"').nth(1).map(str::to_uppercase))
                    .collect();
            }
            drop(lines);
            assert!(Instant::now() < deadline, "MONITOR never showed {mark}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn redis_one_command_per_decision() {
    if !redis_support::available() {
        return;
    }
    let redis = RedisServer::start();
    // Every decision through the script: the deny cache answers a repeated
    // refusal with no command at all, and its sync sends commands of its
    // own (both tested in crates/drip/tests/redis_deny_cache.rs).
    let options = RedisOptions {
        deny_cache: 0,
        ..RedisOptions::default()
    };
    let store = RedisStore::connect(&redis.url(), options).await.unwrap();
    let mut monitor = Monitor::start(redis.port);
    one_call_each(store, |a| {
        let sent = monitor.sent_since_mark();
        if !matches!(a, Ask::Http { key: "warm", .. }) {
            assert_eq!(
                sent,
                vec!["EVALSHA".to_owned()],
                "{a:?}: the store sent other commands than one EVALSHA"
            );
        }
    })
    .await;
}
