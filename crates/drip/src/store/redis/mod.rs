//! The Redis store: limits shared by every node that talks to one Redis (or
//! one Redis Cluster).
//!
//! Each decision is one Lua script run (`EVALSHA`, reloaded on `NOSCRIPT`),
//! [`decide.lua`](self), the twin of [`crate::core::decide`]: same state, same
//! rules, with time from Redis `TIME` so every node shares one clock. Keys:
//!
//! - `PREFIX:{b:BUCKET}:policy` — hash: `text` (the [`Policy::encode`] form),
//!   `version`, `gen` (generation), `hist` (the last changes, see
//!   `configure.lua`).
//! - `PREFIX:{b:BUCKET}:version` — a counter; versions never repeat.
//! - `PREFIX:{b:BUCKET}:gGEN:k:KEY` — one key's state (see `decide.lua`),
//!   expiring when the key would be idle.
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

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisFuture, Script, ServerErrorKind, Value};

use super::{Counters, KeyStatus, Store};
use crate::clock::Clock;
use crate::core::{Decision, Level, MAX_EXACT, Nanos, Outcome, Policy, Request};
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
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            connection_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            prefix: "drip".to_owned(),
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
    version: String,
    /// `PREFIX:{b:BUCKET}:policy`.
    policy_key: String,
    /// `PREFIX:{b:BUCKET}:gGEN:k:`, followed by the key.
    state_prefix: String,
    /// The policy's part of the decide script's arguments.
    args: Vec<String>,
}

impl Cached {
    fn new(tag: &str, policy: Policy, version: String, generation: &str) -> Arc<Cached> {
        Arc::new(Cached {
            args: script_args(&policy),
            policy,
            version,
            policy_key: format!("{tag}:policy"),
            state_prefix: format!("{tag}:g{generation}:k:"),
        })
    }
}

type TestClock = Arc<dyn Fn() -> Nanos + Send + Sync>;

/// Buckets kept in Redis or Redis Cluster.
pub struct RedisStore {
    conn: Conn,
    decide: Script,
    configure: Script,
    prefix: String,
    cache: DashMap<String, Arc<Cached>>,
    test_clock: Option<TestClock>,
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
            conn,
            decide: Script::new(DECIDE),
            configure: Script::new(CONFIGURE),
            prefix: options.prefix,
            cache: DashMap::new(),
            test_clock: None,
        }
    }

    /// For tests: decide on `clock` (read to the microsecond) instead of
    /// Redis `TIME`, so conformance tables with exact times run on Redis too.
    pub fn with_test_clock(mut self, clock: impl Clock) -> Self {
        self.test_clock = Some(Arc::new(move || clock.now()));
        self
    }

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
            self.cache.remove(bucket);
            return Ok(None);
        };
        let policy = Policy::decode(&text)?;
        let cached = Cached::new(&tag, policy, version, &generation);
        self.cache.insert(bucket.to_owned(), cached.clone());
        Ok(Some(cached))
    }

    async fn cached(&self, bucket: &str) -> Result<Arc<Cached>> {
        if let Some(c) = self.cache.get(bucket) {
            return Ok(c.clone());
        }
        self.load(bucket)
            .await?
            .ok_or_else(|| Error::UnknownBucket(bucket.to_owned()))
    }

    /// Sends `cmd`, an `EVALSHA` of the decide script, loading the script
    /// first if Redis does not have it (`NOSCRIPT`: restarted, flushed, or
    /// a new cluster node).
    async fn eval_decide(&self, cmd: &Cmd) -> Result<Vec<Value>> {
        let mut conn = self.conn.clone();
        match cmd.query_async(&mut conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.decide
                    .load_async(&mut conn)
                    .await
                    .map_err(store_error)?;
                cmd.query_async(&mut conn).await.map_err(store_error)
            }
            r => r.map_err(store_error),
        }
    }

    /// Runs the decide script, reloading the policy when it changed.
    async fn run(
        &self,
        bucket: &str,
        key: &str,
        req: Request,
        peek: bool,
    ) -> Result<(Reply, Arc<Cached>)> {
        for _ in 0..3 {
            let cached = self.cached(bucket).await?;
            let mut state_key = String::with_capacity(cached.state_prefix.len() + key.len());
            state_key.push_str(&cached.state_prefix);
            state_key.push_str(key);
            // The EVALSHA command built in one buffer (a ScriptInvocation
            // would allocate each argument, then copy them into a Cmd).
            let mut cmd = Cmd::with_capacity(
                10 + cached.args.len(),
                128 + cached.policy_key.len() + state_key.len(),
            );
            cmd.arg("EVALSHA")
                .arg(self.decide.get_hash())
                .arg(2)
                .arg(&cached.policy_key)
                .arg(state_key)
                .arg(&cached.version)
                .arg(req.cost.min(MAX_EXACT));
            match req.max_wait {
                None => cmd.arg("-1"),
                Some(w) => cmd.arg(w.min(MAX_EXACT)),
            };
            match &self.test_clock {
                None => cmd.arg(""),
                Some(_) => cmd.arg(self.now_arg()),
            };
            cmd.arg(if peek { "1" } else { "0" })
                .arg(cached.args.as_slice());
            let reply = self.eval_decide(&cmd).await?;
            match parse_reply(&reply)? {
                Parsed::Reply(r) => return Ok((r, cached)),
                Parsed::Stale => {
                    self.cache.remove(bucket);
                }
                Parsed::NoBucket => {
                    self.cache.remove(bucket);
                    return Err(Error::UnknownBucket(bucket.to_owned()));
                }
            }
        }
        Err(Error::Store(format!(
            "the policy of bucket {bucket:?} kept changing while deciding"
        )))
    }
}

/// The decide script's policy arguments: mode, a, p, capacity, windows.
fn script_args(policy: &Policy) -> Vec<String> {
    let rate = policy.limit().rate();
    let mut args = vec![
        policy.mode().as_str().to_owned(),
        rate.amount().to_string(),
        rate.period_ns().to_string(),
        policy.limit().capacity().to_string(),
        policy.windows().len().to_string(),
    ];
    for w in policy.windows() {
        args.extend([
            w.limit().to_string(),
            w.period_ns().to_string(),
            w.granularity_ns().to_string(),
        ]);
    }
    args
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
struct Reply {
    outcome: Outcome,
    wait: u64,
    queue_position: u64,
    remaining: u64,
    retry_after: u64,
    reset_after: u64,
    water_ticks: u64,
    counters: Counters,
}

enum Parsed {
    Reply(Reply),
    Stale,
    NoBucket,
}

fn parse_reply(reply: &[Value]) -> Result<Parsed> {
    let bad = || {
        Error::Store(format!(
            "unexpected reply from the decide script: {reply:?}"
        ))
    };
    let word = match reply.first() {
        Some(Value::BulkString(b)) => std::str::from_utf8(b).map_err(|_| bad())?,
        Some(Value::SimpleString(s)) => s.as_str(),
        _ => return Err(bad()),
    };
    let outcome = match word {
        "stale" => return Ok(Parsed::Stale),
        "nobucket" => return Ok(Parsed::NoBucket),
        "A" => Outcome::Allowed,
        "L" => Outcome::Limited,
        "X" => Outcome::Exceeds,
        _ => return Err(bad()),
    };
    let n: Vec<u64> = reply[1..]
        .iter()
        .map(|v| match v {
            Value::Int(i) => u64::try_from(*i).map_err(|_| bad()),
            _ => Err(bad()),
        })
        .collect::<Result<_>>()?;
    let [
        wait,
        queue_position,
        remaining,
        retry_after,
        reset_after,
        water_ticks,
        allowed,
        rejected,
    ] = n[..]
    else {
        return Err(bad());
    };
    Ok(Parsed::Reply(Reply {
        outcome,
        wait,
        queue_position,
        remaining,
        retry_after,
        reset_after,
        water_ticks,
        counters: Counters { allowed, rejected },
    }))
}

fn store_error(e: redis::RedisError) -> Error {
    Error::Store(format!("redis: {e}"))
}

impl Store for RedisStore {
    async fn configure(&self, bucket: &str, policy: Policy, reset: bool) -> Result<()> {
        check_exact(&policy)?;
        let tag = self.tag(bucket);
        let text = policy.encode();
        let mut call = self.configure.prepare_invoke();
        call.key(format!("{tag}:policy"))
            .key(format!("{tag}:version"))
            .arg(&text)
            .arg(if reset { "1" } else { "0" })
            .arg(self.now_arg())
            .arg(policy.limit().rate().amount())
            .arg(policy.limit().rate().period_ns());
        let (version, generation): (u64, u64) = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        let _: () = redis::cmd("SADD")
            .arg(self.registry())
            .arg(bucket)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        self.cache.insert(
            bucket.to_owned(),
            Cached::new(&tag, policy, version.to_string(), &generation.to_string()),
        );
        Ok(())
    }

    async fn policy(&self, bucket: &str) -> Result<Option<Policy>> {
        Ok(self.load(bucket).await?.map(|c| c.policy.clone()))
    }

    async fn decide(&self, bucket: &str, key: &str, req: Request) -> Result<Decision> {
        let (r, _) = self.run(bucket, key, req, false).await?;
        Ok(Decision {
            outcome: r.outcome,
            wait: r.wait,
            queue_position: r.queue_position,
            remaining: r.remaining,
            retry_after: r.retry_after,
            reset_after: r.reset_after,
        })
    }

    async fn status(&self, bucket: &str, key: &str) -> Result<KeyStatus> {
        let (r, cached) = self.run(bucket, key, Request::check(0), true).await?;
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
        let mut conn = self.conn.clone();
        let removed: u64 = redis::cmd("DEL")
            .arg(format!("{}:policy", self.tag(bucket)))
            .query_async(&mut conn)
            .await
            .map_err(store_error)?;
        let _: () = redis::cmd("SREM")
            .arg(self.registry())
            .arg(bucket)
            .query_async(&mut conn)
            .await
            .map_err(store_error)?;
        self.cache.remove(bucket);
        Ok(removed > 0)
    }

    async fn list(&self) -> Result<Vec<(String, Policy)>> {
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.registry())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(c) = self.load(&name).await? {
                out.push((name, c.policy.clone()));
            }
        }
        Ok(out)
    }

    async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
