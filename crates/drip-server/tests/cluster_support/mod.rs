//! A cluster harness in the style of gubernator's `cluster/cluster.go`:
//! real `redis-server` processes (one server or a 3-master Redis Cluster,
//! from `redis_support`) and N real `drip serve` processes on loopback
//! ports they pick themselves (`127.0.0.1:0`, read back from their log).
//! Tests wait by polling state, never by fixed sleeps; every process is
//! killed when its handle drops.

#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drip_server::model::ClusterStatus;
use serde_json::{Value, json};

use crate::redis_support::{self, RedisCluster, RedisServer};

/// Fast cluster settings for tests: a silent member is dead after 500 ms,
/// a killed leader is replaced within 3.1 s (longer than the 2 s a
/// graceful stop is given, so a test sees whether the lease was released).
pub const FAST: &[&str] = &[
    "--heartbeat",
    "100ms",
    "--member-timeout",
    "500ms",
    "--lease",
    "3s",
    "--store-timeout",
    "300ms",
];

/// One `drip serve` process.
pub struct DripNode {
    child: Option<Child>,
    /// `127.0.0.1:PORT` of its HTTP listener.
    pub http: String,
    /// `127.0.0.1:PORT` of its gRPC listener.
    pub grpc: String,
    /// Its `--node-id`.
    pub id: String,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    store: String,
    args: Vec<String>,
}

impl DripNode {
    /// Starts `drip serve --store STORE --node-id ID ARGS...` on free
    /// ports and waits until it listens.
    pub fn start(store: &str, id: &str, args: &[&str]) -> DripNode {
        let mut node = DripNode {
            child: None,
            http: String::new(),
            grpc: String::new(),
            id: id.to_owned(),
            log: Arc::default(),
            reader: None,
            store: store.to_owned(),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_drip"))
            .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
            .args(["--store", &self.store, "--node-id", &self.id])
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env_remove("DRIP_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start drip serve");
        let stderr = child.stderr.take().unwrap();
        self.log = Arc::default();
        let log = self.log.clone();
        let (tx, rx) = std::sync::mpsc::channel::<(String, String)>();
        self.reader = Some(std::thread::spawn(move || {
            let mut http = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(a) = line.split("HTTP listening on http://").nth(1) {
                    http = Some(a.trim().to_owned());
                }
                if let (Some(h), Some(g)) = (&http, line.split("gRPC listening on ").nth(1)) {
                    let _ = tx.send((h.clone(), g.trim().to_owned()));
                }
                log.lock().unwrap().push(line);
            }
        }));
        self.child = Some(child);
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok((http, grpc)) => {
                self.http = http;
                self.grpc = grpc;
            }
            Err(_) => panic!(
                "drip serve {} did not start:\n{}",
                self.id,
                self.log.lock().unwrap().join("\n")
            ),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {sig} {}", self.id);
    }

    /// SIGTERM, then waits for the process to exit.
    pub fn stop(&mut self) {
        if self.child.is_some() {
            self.signal("-TERM");
            let _ = self.child.take().unwrap().wait();
            self.join_log();
        }
    }

    /// Waits until the log reader has read everything the process wrote.
    fn join_log(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    /// SIGKILL (a crash: nothing released).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.join_log();
        }
    }

    /// SIGSTOP: the process freezes, as in a long GC pause.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The URL of `path` on this node.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }
}

impl Drop for DripNode {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A paused process would not die of SIGTERM; SIGKILL always works.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// The Redis a cluster shares.
pub enum Backend {
    /// One redis-server.
    Single(RedisServer),
    /// A 3-master Redis Cluster.
    Cluster(RedisCluster),
    /// A Redis the test holds itself (to stop and restart it while the
    /// cluster is shared by tasks), by its `--store` value.
    Url(String),
}

impl Backend {
    /// The `--store` value.
    pub fn store(&self) -> String {
        match self {
            Backend::Single(r) => r.url(),
            Backend::Cluster(c) => c.urls().join(","),
            Backend::Url(u) => u.clone(),
        }
    }
}

/// N drip nodes on one Redis.
pub struct TestCluster {
    pub nodes: Vec<DripNode>,
    pub backend: Backend,
    pub client: reqwest::Client,
}

impl TestCluster {
    /// `n` nodes (`node-0`...) on a fresh redis-server, each with `args`.
    pub fn single(n: usize, args: &[&str]) -> TestCluster {
        Self::on(Backend::Single(RedisServer::start()), n, args)
    }

    /// `n` nodes on a fresh 3-master Redis Cluster.
    pub fn redis_cluster(n: usize, args: &[&str]) -> TestCluster {
        Self::on(Backend::Cluster(RedisCluster::start()), n, args)
    }

    /// `n` nodes on `backend`.
    pub fn on(backend: Backend, n: usize, args: &[&str]) -> TestCluster {
        let store = backend.store();
        let nodes = (0..n)
            .map(|i| DripNode::start(&store, &format!("node-{i}"), args))
            .collect();
        TestCluster {
            nodes,
            backend,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// Adds a node with its own arguments.
    pub fn add(&mut self, id: &str, args: &[&str]) -> usize {
        self.nodes
            .push(DripNode::start(&self.backend.store(), id, args));
        self.nodes.len() - 1
    }

    /// The single Redis (panics on a Redis Cluster).
    pub fn redis(&mut self) -> &mut RedisServer {
        match &mut self.backend {
            Backend::Single(r) => r,
            _ => panic!("not a Redis this harness holds"),
        }
    }

    /// Kills the Redis (every node of a Redis Cluster) and starts it again
    /// empty (no persistence; a Redis Cluster keeps its slot map in its
    /// nodes.conf), waiting until it serves again.
    pub fn restart_redis_empty(&mut self) {
        match &mut self.backend {
            Backend::Single(r) => r.restart(),
            Backend::Cluster(c) => {
                for n in &mut c.nodes {
                    n.stop();
                }
                for n in &mut c.nodes {
                    n.restart();
                }
                let deadline = Instant::now() + Duration::from_secs(20);
                for n in &c.nodes {
                    while !redis_support::cli(n.port, &["CLUSTER", "INFO"])
                        .contains("cluster_state:ok")
                    {
                        assert!(Instant::now() < deadline, "cluster did not become ok");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            Backend::Url(_) => panic!("not a Redis this harness holds"),
        }
    }

    /// `GET /v1/cluster` of node `i`.
    pub async fn status(&self, i: usize) -> ClusterStatus {
        self.client
            .get(self.nodes[i].url("/v1/cluster"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `PUT /v1/buckets/{bucket}` on node `i`.
    pub async fn configure(&self, i: usize, bucket: &str, body: Value) -> u16 {
        self.client
            .put(self.nodes[i].url(&format!("/v1/buckets/{bucket}")))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// `POST .../allow` on node `i`: status, body, and the degraded header.
    pub async fn allow(&self, i: usize, bucket: &str, key: &str) -> (u16, Value, bool) {
        let r = self
            .client
            .post(self.nodes[i].url(&format!("/v1/buckets/{bucket}/allow")))
            .json(&json!({"key": key}))
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        let degraded = r.headers().get("drip-degraded").is_some();
        (code, r.json().await.unwrap_or(Value::Null), degraded)
    }

    /// `GET` of `path` on node `i`: status and JSON body.
    pub async fn get(&self, i: usize, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.nodes[i].url(path))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// The value of the metric line of node `i` that starts with `prefix`.
    pub async fn metric(&self, i: usize, prefix: &str) -> Option<f64> {
        let text = self
            .client
            .get(self.nodes[i].url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

/// Polls `check` until it returns `Some`, at most `within`; panics with
/// `what` and the last value seen otherwise.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: not within {within:?}; last: {last}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True if redis-server is installed (else the test says why and returns).
pub fn available() -> bool {
    redis_support::available()
}
