//! The Redis store: limits shared by every node that talks to one Redis (or
//! one Redis Cluster).
//!
//! Decisions are made by a Lua script (`EVALSHA`, reloaded on `NOSCRIPT`),
//! [`decide.lua`](self), the twin of [`crate::core::decide`]: same state, same
//! rules, with time from Redis `TIME` so every node shares one clock. One
//! script call decides a batch of requests of one bucket: while a bucket
//! has [`RedisOptions::in_flight`] calls under way, the requests that arrive
//! wait and go together in its next calls (each slot taking its share),
//! in arrival order, each decided exactly as if alone. Keys:
//!
//! - `PREFIX:{b:BUCKET}:policy` — hash: `text` (the [`Policy::encode`] form),
//!   `version`, `gen` (generation), `hist` (the last changes, see
//!   `configure.lua`).
//! - `PREFIX:{b:BUCKET}:version` — a counter; versions never repeat.
//! - `PREFIX:{b:BUCKET}:gGEN:s:KEY` — one key's state, a string (see
//!   `decide.lua`), expiring when the key would be idle. (Before batching it
//!   was a hash at `...:k:KEY`; those are no longer read and expire.)
//! - `PREFIX:buckets` — the set of bucket names, for `list`.
//!
//! The `{b:BUCKET}` hash tag puts every key of a bucket in one cluster slot,
//! so the scripts work on Redis Cluster unchanged (a bucket name with braces
//! is hex-encoded into `{h:...}`).
//!
//! Policies are cached per node and sent with each decision together with
//! their version; the script answers `stale` when the stored version differs,
//! so a change made by any node is seen by every node at its next call.
//!
//! Exactness in doubles: a key's water must stay below 2^53 ticks of
//! `1/amount` ns, so `configure` refuses policies whose full bucket does not
//! fit (e.g. capacity 2^32 at 10/s), and a reservation reaching further is
//! refused like a timeout. Times enter the script in microseconds; waits and
//! retries come out in nanoseconds.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisFuture, RedisWrite, Script, ServerErrorKind, Value};
use tokio::sync::oneshot;

use super::{Counters, KeyStatus, Store};
use crate::clock::Clock;
use crate::core::{Decision, Level, MAX_EXACT, Mode, Nanos, Outcome, Policy, Quota, Request};
use crate::error::ConfigError;
use crate::{Error, Result};

const DECIDE: &str = include_str!("decide.lua");
const CONFIGURE: &str = include_str!("configure.lua");

/// How the Redis store connects.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// Longest wait to open a connection. Default 1 s.
    pub connection_timeout: Duration,
    /// Longest wait for an answer; past it a call fails with
    /// [`Error::Store`] and the caller decides (DESIGN.md §5). Default 1 s.
    pub response_timeout: Duration,
    /// Prefix of every key drip writes. Default `drip`.
    pub prefix: String,
    /// Script calls one bucket may have under way at once (at least 1).
    /// Requests for the bucket that arrive while all are busy wait and go
    /// together in its next calls, each call taking at most its share of
    /// the bucket's requests (waiting and under way) over the slots.
    /// Default 2: one call pipelined behind another, so Redis is not idle
    /// while the client reads an answer and sends the next.
    pub in_flight: usize,
    /// Most requests decided in one script call (1..=256). Default 64.
    pub max_batch: usize,
    /// How long a lone call (one with no other call of its bucket under
    /// way) keeps polling for its answer, yielding to the runtime, which then
    /// polls the socket instead of sleeping, before it waits asleep. Off
    /// (zero) by default: it trades a busy client core for latency. On a
    /// 2-vCPU VM, 100 µs cut a lone call's median round trip from ~100 µs to
    /// ~30 µs (BENCHMARKS.md). Other tasks of the runtime still run while a
    /// call spins; the response timeout applies as without it.
    pub spin: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            connection_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            prefix: "drip".to_owned(),
            in_flight: 2,
            max_batch: 64,
            spin: Duration::ZERO,
        }
    }
}

/// One multiplexed connection (pipelining concurrent callers), to a single
/// Redis or to a cluster. Both reconnect by themselves.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A bucket's policy as this node last read it, with what each decision
/// sends precomputed (shared, not rebuilt, by every call).
struct Cached {
    policy: Policy,
    /// `PREFIX:{b:BUCKET}:policy`.
    policy_key: String,
    /// `PREFIX:{b:BUCKET}:gGEN:s:`, followed by the key.
    state_prefix: String,
    /// The version and the policy as the decide script reads them after
    /// `now` (packed doubles).
    args: Vec<u8>,
}

impl Cached {
    fn new(tag: &str, policy: Policy, version: u64, generation: &str) -> Arc<Cached> {
        Arc::new(Cached {
            args: script_args(&policy, version),
            policy,
            policy_key: format!("{tag}:policy"),
            state_prefix: format!("{tag}:g{generation}:s:"),
        })
    }
}

type TestClock = Arc<dyn Fn() -> Nanos + Send + Sync>;

/// One request of a script call.
#[derive(Clone, Copy)]
struct Item<'a> {
    key: &'a str,
    req: Request,
    /// Report the key's state; decide and write nothing.
    peek: bool,
}

/// A request waiting for its bucket's next script call.
struct Job {
    key: String,
    req: Request,
    reply: oneshot::Sender<Result<Reply>>,
}

/// What this node keeps of a bucket, under one lock: its policy as last
/// read, its script calls under way and the requests waiting for the next.
/// (A lone call looks the bucket up once and takes the lock twice.)
#[derive(Default)]
struct Bucket {
    state: Mutex<BucketState>,
}

#[derive(Default)]
struct BucketState {
    /// The policy as this node last read it; `None`: read it again.
    cached: Option<Arc<Cached>>,
    in_flight: usize,
    /// Requests in the calls under way.
    sending: usize,
    waiting: Vec<Job>,
}

/// Buckets kept in Redis or Redis Cluster.
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    decide: Script,
    configure: Script,
    prefix: String,
    /// Buckets this node has seen to exist (entries are kept).
    buckets: DashMap<String, Arc<Bucket>>,
    test_clock: Option<TestClock>,
    in_flight: usize,
    max_batch: usize,
    spin: Duration,
    /// Where batches whose callers wait are sent from (the runtime that
    /// opened the store, which also drives its connection).
    runtime: tokio::runtime::Handle,
}

impl RedisStore {
    /// Connects to one Redis at `url` (`redis://host:port/db`).
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Self> {
        let client = redis::Client::open(url).map_err(store_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connection_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(options.connection_timeout);
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(store_error)?;
        Ok(Self::with_conn(Conn::Single(manager), options))
    }

    /// Connects to a Redis Cluster through any of its nodes' `urls`.
    pub async fn connect_cluster(urls: &[String], options: RedisOptions) -> Result<Self> {
        let client = redis::cluster::ClusterClient::builder(urls.to_vec())
            .connection_timeout(options.connection_timeout)
            .response_timeout(options.response_timeout)
            .retries(1)
            .build()
            .map_err(store_error)?;
        let conn = client.get_async_connection().await.map_err(store_error)?;
        Ok(Self::with_conn(Conn::Cluster(conn), options))
    }

    fn with_conn(conn: Conn, options: RedisOptions) -> Self {
        RedisStore {
            inner: Arc::new(Inner {
                conn,
                decide: Script::new(DECIDE),
                configure: Script::new(CONFIGURE),
                prefix: options.prefix,
                buckets: DashMap::new(),
                test_clock: None,
                in_flight: options.in_flight.max(1),
                max_batch: options.max_batch.clamp(1, 256),
                spin: options.spin,
                runtime: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// For tests: decide on `clock` (read to the microsecond) instead of
    /// Redis `TIME`, so conformance tables with exact times run on Redis too.
    pub fn with_test_clock(mut self, clock: impl Clock) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_test_clock is called before the store is used")
            .test_clock = Some(Arc::new(move || clock.now()));
        self
    }
}

/// Holds one of a bucket's call slots; when dropped (the call answered, or
/// its caller gone) it passes the slot to the requests that waited, or
/// frees it.
struct Slot<'a> {
    inner: &'a Arc<Inner>,
    name: &'a str,
    bucket: &'a Arc<Bucket>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(batch) = self.inner.next_batch(self.bucket, 1) {
            let (inner, bucket) = (self.inner.clone(), self.bucket.clone());
            let name = self.name.to_owned();
            self.inner
                .runtime
                .spawn(async move { inner.send_batches(name, bucket, batch).await });
        }
    }
}

impl Inner {
    /// `now_us` for a script: empty means "use Redis TIME".
    fn now_arg(&self) -> String {
        self.test_clock
            .as_ref()
            .map_or_else(String::new, |c| (c() / 1000).to_string())
    }

    fn tag(&self, bucket: &str) -> String {
        if bucket.is_empty() || bucket.contains(['{', '}']) {
            let hex: String = bucket.bytes().map(|b| format!("{b:02x}")).collect();
            format!("{}:{{h:{hex}}}", self.prefix)
        } else {
            format!("{}:{{b:{bucket}}}", self.prefix)
        }
    }

    fn registry(&self) -> String {
        format!("{}:buckets", self.prefix)
    }

    /// Reads `bucket`'s policy from Redis and caches it.
    async fn load(&self, bucket: &str) -> Result<Option<Arc<Cached>>> {
        let tag = self.tag(bucket);
        let (text, version, generation): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("HMGET")
                .arg(format!("{tag}:policy"))
                .arg(&["text", "version", "gen"])
                .query_async(&mut self.conn.clone())
                .await
                .map_err(store_error)?;
        let (Some(text), Some(version), Some(generation)) = (text, version, generation) else {
            self.forget(bucket);
            return Ok(None);
        };
        let policy = Policy::decode(&text)?;
        let version = version
            .parse()
            .map_err(|_| Error::Store(format!("bucket {bucket:?} has version {version:?}")))?;
        let cached = Cached::new(&tag, policy, version, &generation);
        self.remember(bucket, cached.clone());
        Ok(Some(cached))
    }

    /// The entry of a bucket this node has seen.
    fn entry(&self, name: &str) -> Option<Arc<Bucket>> {
        self.buckets.get(name).map(|b| b.clone())
    }

    /// Keeps `cached` as the bucket's policy.
    fn remember(&self, name: &str, cached: Arc<Cached>) {
        let bucket = match self.entry(name) {
            Some(b) => b,
            None => self.buckets.entry(name.to_owned()).or_default().clone(),
        };
        bucket.state.lock().cached = Some(cached);
    }

    /// Forgets the bucket's policy: its next call reads it again.
    fn forget(&self, name: &str) {
        if let Some(b) = self.entry(name) {
            b.state.lock().cached = None;
        }
    }

    /// The entry of a bucket that exists (read from Redis when this node
    /// has not seen it: only buckets that exist get an entry).
    async fn bucket(&self, name: &str) -> Result<Arc<Bucket>> {
        if let Some(b) = self.entry(name) {
            return Ok(b);
        }
        self.load(name).await?;
        self.entry(name)
            .ok_or_else(|| Error::UnknownBucket(name.to_owned()))
    }

    async fn cached(&self, name: &str, bucket: &Bucket) -> Result<Arc<Cached>> {
        let cached = bucket.state.lock().cached.clone();
        match cached {
            Some(c) => Ok(c),
            None => self
                .load(name)
                .await?
                .ok_or_else(|| Error::UnknownBucket(name.to_owned())),
        }
    }

    /// Sends `cmd` on the connection (on a single Redis straight to it,
    /// without a boxed future per call).
    async fn query(&self, cmd: &Cmd) -> redis::RedisResult<Value> {
        match &self.conn {
            Conn::Single(c) => c.clone().send_packed_command(cmd).await?.extract_error(),
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }

    /// Sends `cmd`, an `EVALSHA` of the decide script, loading the script
    /// first if Redis does not have it (`NOSCRIPT`: restarted, flushed, or
    /// a new cluster node).
    async fn eval_decide(&self, cmd: &Cmd) -> Result<Value> {
        match self.query(cmd).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.decide
                    .load_async(&mut self.conn.clone())
                    .await
                    .map_err(store_error)?;
                self.query(cmd).await.map_err(store_error)
            }
            r => r.map_err(store_error),
        }
    }

    /// The `EVALSHA` deciding `items`, built in one buffer.
    fn decide_cmd(&self, cached: &Cached, items: &[Item<'_>]) -> Cmd {
        let keys_len: usize = items
            .iter()
            .map(|i| cached.state_prefix.len() + i.key.len())
            .sum();
        let mut cmd = Cmd::with_capacity(
            7 + items.len(),
            96 + cached.policy_key.len() + cached.args.len() + keys_len + 16 * items.len(),
        );
        cmd.arg("EVALSHA")
            .arg(self.decide.get_hash())
            .arg(1 + items.len())
            .arg(&cached.policy_key);
        for item in items {
            let mut key = cmd.writer_for_next_arg();
            // Writing to a Cmd's buffer cannot fail.
            let _ = key.write_all(cached.state_prefix.as_bytes());
            let _ = key.write_all(item.key.as_bytes());
        }
        {
            // One argument: now, the version and policy, the requests.
            let mut reqs = cmd.writer_for_next_arg();
            let now = match &self.test_clock {
                None => -1.0,
                Some(c) => (c() / 1000) as f64,
            };
            let _ = reqs.write_all(&now.to_le_bytes());
            let _ = reqs.write_all(&cached.args);
            for item in items {
                let max_wait = match (item.peek, item.req.max_wait) {
                    (true, _) => -2.0,
                    (false, None) => -1.0,
                    (false, Some(w)) => w.min(MAX_EXACT) as f64,
                };
                let _ = reqs.write_all(&(item.req.cost.min(MAX_EXACT) as f64).to_le_bytes());
                let _ = reqs.write_all(&max_wait.to_le_bytes());
            }
        }
        cmd
    }

    /// Decides `items` of `bucket` in one script call (reloading the policy
    /// when it changed): their answers in order, and the policy used.
    async fn run(
        &self,
        name: &str,
        bucket: &Bucket,
        items: &[Item<'_>],
    ) -> Result<(Vec<Reply>, Arc<Cached>)> {
        for _ in 0..3 {
            let cached = self.cached(name, bucket).await?;
            let cmd = self.decide_cmd(&cached, items);
            let reply = self.eval_decide(&cmd).await?;
            let parsed = parse_reply(&reply, items, cached.policy.quota())?;
            if let Parsed::Replies(r) = parsed {
                return Ok((r, cached));
            }
            {
                // Unless another call has read the policy again since.
                let mut state = bucket.state.lock();
                if state
                    .cached
                    .as_ref()
                    .is_some_and(|c| Arc::ptr_eq(c, &cached))
                {
                    state.cached = None;
                }
            }
            if let Parsed::NoBucket = parsed {
                return Err(Error::UnknownBucket(name.to_owned()));
            }
        }
        Err(Error::Store(format!(
            "the policy of bucket {name:?} kept changing while deciding"
        )))
    }

    /// Decides one request: at once in a call of its own when the bucket
    /// has a call slot free, otherwise in the bucket's next batch.
    async fn decide(self: &Arc<Self>, name: &str, key: &str, req: Request) -> Result<Reply> {
        let bucket = self.bucket(name).await?;
        let waiting = {
            let mut queue = bucket.state.lock();
            if queue.in_flight < self.in_flight && queue.waiting.is_empty() {
                queue.in_flight += 1;
                queue.sending += 1;
                None
            } else {
                let (tx, rx) = oneshot::channel();
                queue.waiting.push(Job {
                    key: key.to_owned(),
                    req,
                    reply: tx,
                });
                Some(rx)
            }
        };
        match waiting {
            None => {
                let _slot = Slot {
                    inner: self,
                    name,
                    bucket: &bucket,
                };
                let item = Item {
                    key,
                    req,
                    peek: false,
                };
                let items = [item];
                let call = self.run(name, &bucket, &items);
                let (mut replies, _) = if self.spin.is_zero() {
                    call.await?
                } else {
                    spin(call, self.spin).await?
                };
                replies.pop().ok_or_else(|| bad_reply(&Value::Nil))
            }
            Some(rx) => rx.await.unwrap_or_else(|_| {
                Err(Error::Store(
                    "the Redis store stopped before deciding".to_owned(),
                ))
            }),
        }
    }

    /// When a call slot of `bucket` comes free (its call decided `done`
    /// requests): the requests waiting for it (the slot passes to them), or
    /// `None` (the slot is freed).
    ///
    /// A batch takes the oldest waiting requests, at most `max_batch` and at
    /// most its share of the bucket's requests (waiting and under way)
    /// spread over its call slots: with 16 callers and 2 slots, two calls
    /// of 8 alternate, one in Redis while the other's callers come back,
    /// rather than one of 15 and one of 1.
    fn next_batch(&self, bucket: &Bucket, done: usize) -> Option<Vec<Job>> {
        let mut queue = bucket.state.lock();
        queue.sending = queue.sending.saturating_sub(done);
        // Callers that gave up before their call was sent are not decided.
        queue.waiting.retain(|j| !j.reply.is_closed());
        if queue.waiting.is_empty() {
            queue.in_flight -= 1;
            return None;
        }
        let share = (queue.waiting.len() + queue.sending).div_ceil(self.in_flight);
        let n = queue.waiting.len().min(self.max_batch).min(share);
        queue.sending += n;
        let rest = queue.waiting.split_off(n);
        Some(std::mem::replace(&mut queue.waiting, rest))
    }

    /// Sends `batch` in one script call and answers each of its callers,
    /// then the requests that waited meanwhile (after a yield), until none
    /// wait.
    async fn send_batches(self: Arc<Self>, name: String, bucket: Arc<Bucket>, mut batch: Vec<Job>) {
        loop {
            let items: Vec<Item<'_>> = batch
                .iter()
                .map(|j| Item {
                    key: &j.key,
                    req: j.req,
                    peek: false,
                })
                .collect();
            let n = items.len();
            let result = self.run(&name, &bucket, &items).await;
            drop(items);
            match result {
                Ok((replies, _)) => {
                    for (job, reply) in batch.drain(..).zip(replies) {
                        let _ = job.reply.send(Ok(reply));
                    }
                }
                Err(e) => {
                    for job in batch.drain(..) {
                        let _ = job.reply.send(Err(e.duplicate()));
                    }
                }
            }
            // The callers just answered often ask again at once: let them
            // (runnable now) join the next batch rather than find the slot
            // free and go alone, one call each.
            tokio::task::yield_now().await;
            match self.next_batch(&bucket, n) {
                Some(next) => batch = next,
                None => return,
            }
        }
    }
}

/// What the decide script reads after `now`: the version, then the policy:
/// mode (0 police, 1 shape), a, p, capacity, window count, then per window
/// limit, period_ns and granularity_ns, as little-endian doubles (exact:
/// versions count configurations, and `configure` refuses what would pass
/// 2^53).
fn script_args(policy: &Policy, version: u64) -> Vec<u8> {
    let rate = policy.limit().rate();
    let mode = match policy.mode() {
        Mode::Police => 0,
        Mode::Shape => 1,
    };
    let mut numbers = vec![
        version,
        mode,
        rate.amount(),
        rate.period_ns(),
        policy.limit().capacity(),
        policy.windows().len() as u64,
    ];
    for w in policy.windows() {
        numbers.extend([w.limit(), w.period_ns(), w.granularity_ns()]);
    }
    numbers
        .into_iter()
        .flat_map(|n| (n as f64).to_le_bytes())
        .collect()
}

/// Refuses policies whose numbers would not stay exact in the script.
fn check_exact(policy: &Policy) -> Result<(), ConfigError> {
    let rate = policy.limit().rate();
    let full = rate.period_ns() as u128 * policy.limit().capacity() as u128;
    if rate.amount() > MAX_EXACT || full > MAX_EXACT as u128 {
        return Err(ConfigError::new(
            "capacity",
            format!(
                "capacity × emission interval is too fine or too large for the Redis store: \
                 capacity × period_ns / amount must fit 2^53 ticks (here {} × {} ns / {})",
                policy.limit().capacity(),
                rate.period_ns(),
                rate.amount()
            ),
        ));
    }
    if let Some(i) = policy
        .windows()
        .iter()
        .position(|w| w.period_ns() > MAX_EXACT / 1000)
    {
        return Err(ConfigError::new(
            format!("windows[{i}].period_s"),
            format!(
                "windows[{i}].period_s must be at most 9007199254 s (104 days) on the Redis store"
            ),
        ));
    }
    Ok(())
}

/// One answer of the decide script.
#[derive(Debug)]
struct Reply {
    outcome: Outcome,
    wait: u64,
    queue_position: u64,
    remaining: u64,
    retry_after: u64,
    reset_after: u64,
    /// The policy's, as every decision carries it.
    quota: Quota,
    /// Only for a peek.
    water_ticks: u64,
    /// Only for a peek.
    counters: Counters,
}

impl Reply {
    fn decision(&self) -> Decision {
        Decision {
            outcome: self.outcome,
            wait: self.wait,
            queue_position: self.queue_position,
            remaining: self.remaining,
            retry_after: self.retry_after,
            reset_after: self.reset_after,
            quota: self.quota,
        }
    }
}

enum Parsed {
    Replies(Vec<Reply>),
    Stale,
    NoBucket,
}

fn bad_reply(reply: &Value) -> Error {
    Error::Store(format!(
        "unexpected reply from the decide script: {reply:?}"
    ))
}

/// Polls `fut`, yielding to the runtime between polls for up to `limit`,
/// then awaits it (see `RedisOptions::spin`).
async fn spin<F: std::future::Future>(fut: F, limit: Duration) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let deadline = std::time::Instant::now() + limit;
    loop {
        let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await;
        if let std::task::Poll::Ready(out) = polled {
            return out;
        }
        if std::time::Instant::now() >= deadline {
            return fut.await;
        }
        tokio::task::yield_now().await;
    }
}

/// The script's answer to `items`: six little-endian doubles per request
/// (nine for a peek), or a status word.
/// `quota` is that of the policy the call was made with, which the script
/// checked (by its version) is the stored one.
fn parse_reply(reply: &Value, items: &[Item<'_>], quota: Quota) -> Result<Parsed> {
    let bad = || bad_reply(reply);
    let bytes = match reply {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => {
            return match s.as_str() {
                "stale" => Ok(Parsed::Stale),
                "nobucket" => Ok(Parsed::NoBucket),
                _ => Err(bad()),
            };
        }
        _ => return Err(bad()),
    };
    let want = 8 * (6 * items.len() + 3 * items.iter().filter(|i| i.peek).count());
    if bytes.len() != want {
        return Err(bad());
    }
    let mut n = bytes.chunks_exact(8).map(|c| {
        let x = f64::from_le_bytes(c.try_into().expect("8 bytes"));
        // Whole numbers in 0..2^64 only (the script works below 2^53).
        if x >= 0.0 && x.fract() == 0.0 && x < 18_446_744_073_709_551_616.0 {
            Ok(x as u64)
        } else {
            Err(bad())
        }
    });
    let mut next = || n.next().unwrap_or_else(|| Err(bad()));
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let outcome = match next()? {
            1 => Outcome::Allowed,
            2 => Outcome::Limited,
            3 => Outcome::Exceeds,
            _ => return Err(bad()),
        };
        let mut r = Reply {
            outcome,
            wait: next()?,
            queue_position: next()?,
            remaining: next()?,
            retry_after: next()?,
            reset_after: next()?,
            quota,
            water_ticks: 0,
            counters: Counters::default(),
        };
        if item.peek {
            r.water_ticks = next()?;
            r.counters = Counters {
                allowed: next()?,
                rejected: next()?,
            };
        }
        out.push(r);
    }
    Ok(Parsed::Replies(out))
}

fn store_error(e: redis::RedisError) -> Error {
    Error::Store(format!("redis: {e}"))
}

impl Error {
    /// The same error for another caller of a failed batch.
    fn duplicate(&self) -> Error {
        match self {
            Error::UnknownBucket(b) => Error::UnknownBucket(b.clone()),
            Error::Store(m) => Error::Store(m.clone()),
            Error::Config(c) => Error::Config(c.clone()),
            other => Error::Store(other.to_string()),
        }
    }
}

impl Store for RedisStore {
    async fn configure(&self, bucket: &str, policy: Policy, reset: bool) -> Result<()> {
        check_exact(&policy)?;
        let inner = &self.inner;
        let tag = inner.tag(bucket);
        let text = policy.encode();
        let mut call = inner.configure.prepare_invoke();
        call.key(format!("{tag}:policy"))
            .key(format!("{tag}:version"))
            .arg(&text)
            .arg(if reset { "1" } else { "0" })
            .arg(inner.now_arg())
            .arg(policy.limit().rate().amount())
            .arg(policy.limit().rate().period_ns());
        let (version, generation): (u64, u64) = call
            .invoke_async(&mut inner.conn.clone())
            .await
            .map_err(store_error)?;
        let _: () = redis::cmd("SADD")
            .arg(inner.registry())
            .arg(bucket)
            .query_async(&mut inner.conn.clone())
            .await
            .map_err(store_error)?;
        inner.remember(
            bucket,
            Cached::new(&tag, policy, version, &generation.to_string()),
        );
        Ok(())
    }

    async fn policy(&self, bucket: &str) -> Result<Option<Policy>> {
        Ok(self.inner.load(bucket).await?.map(|c| c.policy.clone()))
    }

    async fn decide(&self, bucket: &str, key: &str, req: Request) -> Result<Decision> {
        Ok(self.inner.decide(bucket, key, req).await?.decision())
    }

    async fn status(&self, bucket: &str, key: &str) -> Result<KeyStatus> {
        let item = Item {
            key,
            req: Request::check(0),
            peek: true,
        };
        let entry = self.inner.bucket(bucket).await?;
        let (replies, cached) = self.inner.run(bucket, &entry, &[item]).await?;
        let r = replies.first().ok_or_else(|| bad_reply(&Value::Nil))?;
        let p = cached.policy.limit().rate().period_ns();
        Ok(KeyStatus {
            level: Level {
                level: r.water_ticks as f64 / p as f64,
                queue_size: r.water_ticks.div_ceil(p),
                remaining: r.remaining,
                reset_after: r.reset_after,
            },
            policy: cached.policy.clone(),
            counters: r.counters,
        })
    }

    async fn delete(&self, bucket: &str) -> Result<bool> {
        let inner = &self.inner;
        let mut conn = inner.conn.clone();
        let removed: u64 = redis::cmd("DEL")
            .arg(format!("{}:policy", inner.tag(bucket)))
            .query_async(&mut conn)
            .await
            .map_err(store_error)?;
        let _: () = redis::cmd("SREM")
            .arg(inner.registry())
            .arg(bucket)
            .query_async(&mut conn)
            .await
            .map_err(store_error)?;
        inner.forget(bucket);
        Ok(removed > 0)
    }

    async fn list(&self) -> Result<Vec<(String, Policy)>> {
        let inner = &self.inner;
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(inner.registry())
            .query_async(&mut inner.conn.clone())
            .await
            .map_err(store_error)?;
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(c) = inner.load(&name).await? {
                out.push((name, c.policy.clone()));
            }
        }
        Ok(out)
    }

    async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.inner.conn.clone())
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
