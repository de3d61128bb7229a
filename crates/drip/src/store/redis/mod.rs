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
//! is hex-encoded into `{h:...}`). Joint decisions (`joint.rs`) over
//! several buckets therefore need a single Redis.
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

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};

use super::{KeyLevel, KeyStatus, QueuedRequest, Store};
use crate::Result;
use crate::clock::Clock;
use crate::core::{Decision, Level, Nanos, Policy, Request};

mod batch;
mod busiest;
mod cache;
mod conn;
mod deny_cache;
mod deny_sync;
mod joint;
mod script;

// Each part sees the others' items through `use super::*`.
use batch::*;
use cache::*;
use conn::*;
use deny_cache::*;
use joint::*;
use script::*;

pub use conn::Conn as Connection;
pub use deny_cache::DenyCacheStats;

/// How the Redis store connects.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// Longest wait to open a connection. Default 1 s.
    pub connection_timeout: Duration,
    /// Longest wait for an answer; past it a call fails with
    /// [`Error::Store`](crate::Error::Store) and the caller decides (DESIGN.md §5). Default 1 s.
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
    /// Refusals the exact local deny cache remembers (default 65536, a few
    /// MB at most; 0 turns it off). A key refused with "retry after R" is
    /// refused on this node, without a script call, until the bound passes,
    /// exactly as Redis would refuse it; see `deny_cache.rs`. A configure,
    /// reset or delete made through this store reaches it at once; one made
    /// through another process reaches it at its next version check
    /// (`deny_cache_sync`), within 100 ms.
    pub deny_cache: usize,
    /// How often the deny cache checks the versions of the buckets it holds
    /// bounds for (a change made on another node reaches this node within
    /// about this period plus a round trip) and adds its local refusals to
    /// the counters in Redis. Default 25 ms.
    pub deny_cache_sync: Duration,
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
            deny_cache: 65536,
            deny_cache_sync: Duration::from_millis(25),
        }
    }
}

type TestClock = Arc<dyn Fn() -> Nanos + Send + Sync>;

/// Buckets kept in Redis or Redis Cluster. A clone is the same store
/// (e.g. to read its [`deny_cache_stats`](Self::deny_cache_stats) beside a
/// `Limiter` that owns it).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    pub(super) conn: Conn,
    pub(super) decide: Script,
    pub(super) configure: Script,
    pub(super) queue: Script,
    /// Joint decisions (`joint.lua` around `decide.lua`).
    pub(super) joint: Script,
    pub(super) prefix: String,
    /// Buckets this node has seen to exist (entries are kept).
    pub(super) buckets: DashMap<String, Arc<Bucket>>,
    pub(super) test_clock: std::sync::OnceLock<TestClock>,
    pub(super) in_flight: usize,
    pub(super) max_batch: usize,
    pub(super) spin: Duration,
    /// Where batches whose callers wait are sent from (the runtime that
    /// opened the store, which also drives its connection).
    pub(super) runtime: tokio::runtime::Handle,
    /// The exact local deny cache (`None`: off).
    pub(super) deny: Option<DenyCache>,
    pub(super) deny_sync: Duration,
    /// The deny cache's clock (when no test clock is set).
    pub(super) clock: crate::clock::MonotonicClock,
    /// This store, for the deny cache's background sync.
    pub(super) me: std::sync::Weak<Inner>,
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
            inner: Arc::new_cyclic(|me| Inner {
                conn,
                decide: Script::new(DECIDE),
                queue: Script::new(QUEUE),
                configure: Script::new(CONFIGURE),
                joint: Script::new(&joint_script()),
                prefix: options.prefix,
                buckets: DashMap::new(),
                test_clock: std::sync::OnceLock::new(),
                in_flight: options.in_flight.max(1),
                max_batch: options.max_batch.clamp(1, 256),
                spin: options.spin,
                runtime: tokio::runtime::Handle::current(),
                deny: (options.deny_cache > 0).then(|| DenyCache::new(options.deny_cache)),
                deny_sync: options.deny_cache_sync.max(Duration::from_millis(1)),
                clock: crate::clock::MonotonicClock::new(),
                me: me.clone(),
            }),
        }
    }

    /// For tests: decide on `clock` (read to the microsecond) instead of
    /// Redis `TIME`, so conformance tables with exact times run on Redis too.
    pub fn with_test_clock(self, clock: impl Clock) -> Self {
        // Set once, before the store is used.
        let _ = self.inner.test_clock.set(Arc::new(move || clock.now()));
        self
    }

    /// The deny cache's counters (all zero when it is off).
    pub fn deny_cache_stats(&self) -> DenyCacheStats {
        self.inner
            .deny
            .as_ref()
            .map(DenyCache::stats)
            .unwrap_or_default()
    }
}

impl Inner {
    /// Runs `queue.lua` on `key` of `bucket` (`op`: list or cancel).
    async fn queue_call(&self, bucket: &str, key: &str, op: &str, id: &str) -> Result<Value> {
        let cached = self
            .load(bucket)
            .await?
            .ok_or_else(|| crate::Error::UnknownBucket(bucket.to_owned()))?;
        let reply: Value = self
            .queue
            .key(&cached.policy_key)
            .key(format!("{}{key}", cached.queue_prefix))
            .key(format!("{}{key}", cached.state_prefix))
            .arg(self.now_arg())
            .arg(op)
            .arg(id)
            .arg(cached.policy.windows().len())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        match &reply {
            Value::SimpleString(s) if s == "nobucket" => {
                Err(crate::Error::UnknownBucket(bucket.to_owned()))
            }
            _ => Ok(reply),
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
        Ok(self.inner.decide(bucket, key, req, "").await?.decision())
    }

    async fn decide_all(
        &self,
        parts: &[super::JointPart<'_>],
    ) -> Result<crate::core::JointDecision> {
        self.decide_all_now(parts).await
    }

    async fn status(&self, bucket: &str, key: &str) -> Result<KeyStatus> {
        let item = Item {
            key,
            req: Request::check(0),
            peek: true,
            id: "",
            count: false,
        };
        let entry = self.inner.bucket(bucket).await?;
        // This node's refusals of the key not yet counted in Redis go first,
        // in the same call, so the counters read are exact.
        let tally = self
            .inner
            .deny
            .as_ref()
            .and_then(|d| d.take_key(bucket, key));
        let mut items = Vec::with_capacity(2);
        if let Some((_, n)) = &tally {
            items.push(Item::count(key, *n));
        }
        items.push(item);
        let result = self.inner.run(bucket, &entry, &items).await;
        if let (Err(_), Some((t, n)), Some(deny)) = (&result, &tally, &self.inner.deny) {
            deny.untake(t, *n);
        }
        let (replies, cached) = result?;
        let r = replies.last().ok_or_else(|| bad_reply(&Value::Nil))?;
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

    async fn decide_tracked(
        &self,
        bucket: &str,
        key: &str,
        req: Request,
        id: &str,
    ) -> Result<Decision> {
        Ok(self.inner.decide(bucket, key, req, id).await?.decision())
    }

    async fn queue(&self, bucket: &str, key: &str) -> Result<Vec<QueuedRequest>> {
        let reply = self.inner.queue_call(bucket, key, "list", "").await?;
        let Value::Array(entries) = &reply else {
            return Err(bad_reply(&reply));
        };
        entries
            .iter()
            .map(|e| match e {
                Value::BulkString(b) if b.len() >= 16 => {
                    let n = |i: usize| f64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
                    Ok(QueuedRequest {
                        enqueue_time_ms: n(0).max(0.0) as u64,
                        estimated_process_time_ms: n(8).max(0.0) as u64,
                        request_id: String::from_utf8_lossy(&b[16..]).into_owned(),
                    })
                }
                _ => Err(bad_reply(&reply)),
            })
            .collect()
    }

    async fn cancel(&self, bucket: &str, key: &str, id: &str) -> Result<bool> {
        match self.inner.queue_call(bucket, key, "cancel", id).await? {
            Value::Int(n) => Ok(n == 1),
            other => Err(bad_reply(&other)),
        }
    }

    async fn busiest_keys(&self, bucket: &str, n: usize) -> Result<Option<Vec<KeyLevel>>> {
        self.inner.busiest(bucket, n).await
    }

    async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.inner.conn.clone())
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
