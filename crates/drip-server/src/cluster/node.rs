//! One node's part in the cluster: the loop that heartbeats its member
//! record, holds or waits for the leader lease, remembers configurations,
//! and (as leader) does the fenced chores. Nothing in the decision path
//! waits on it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use redis::{RedisResult, Script, Value};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::conn::Conn;
use super::health::Health;
use super::keys::Keys;
use super::options::ClusterOptions;
use super::remembered::{Entry, Remembered};
use super::{ClusterInfo, ClusterMetrics};
use crate::app::Node;
use crate::model::{ClusterStatus, NodeStatus};

/// A policy hash's `text`, `version` and `gen`.
type PolicyFields = (Option<String>, Option<u64>, Option<String>);

/// A member's record, as heartbeated.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    node_id: String,
    http: String,
    grpc: String,
    /// When the node started (Unix ms, its own clock).
    started_ms: u64,
    /// The drip version it runs.
    version: String,
}

struct Scripts {
    heartbeat: Script,
    view: Script,
    acquire: Script,
    release: Script,
    sweep: Script,
    restore: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            heartbeat: Script::new(include_str!("lua/heartbeat.lua")),
            view: Script::new(include_str!("lua/view.lua")),
            acquire: Script::new(include_str!("lua/lease_acquire.lua")),
            release: Script::new(include_str!("lua/lease_release.lua")),
            sweep: Script::new(include_str!("lua/sweep.lua")),
            restore: Script::new(include_str!("lua/restore.lua")),
        }
    }
}

/// This node in a cluster sharing one Redis (or Redis Cluster).
pub struct Cluster {
    conn: Conn,
    keys: Keys,
    options: ClusterOptions,
    id: String,
    record: String,
    scripts: Scripts,
    /// The lease value (`"TOKEN ID"`) while this node believes it leads.
    lease: Mutex<Option<String>>,
    /// The highest fencing token seen, so new ones stay above it.
    max_token: AtomicU64,
    remembered: Arc<Remembered>,
    health: Arc<Health>,
    chores_refused: AtomicU64,
    restored: AtomicU64,
    last_view: Mutex<Option<ClusterStatus>>,
}

impl Cluster {
    /// This node (`node`) in the cluster reached through `conn`.
    pub fn new(
        conn: Conn,
        prefix: &str,
        node: &Node,
        options: ClusterOptions,
        health: Arc<Health>,
        remembered: Arc<Remembered>,
    ) -> Arc<Self> {
        let record = Record {
            node_id: node.id.clone(),
            http: node.http.clone(),
            grpc: node.grpc.clone(),
            started_ms: unix_ms(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        Arc::new(Cluster {
            conn,
            keys: Keys::new(prefix),
            options,
            id: node.id.clone(),
            record: serde_json::to_string(&record).unwrap_or_default(),
            scripts: Scripts::new(),
            lease: Mutex::new(None),
            max_token: AtomicU64::new(0),
            remembered,
            health,
            chores_refused: AtomicU64::new(0),
            restored: AtomicU64::new(0),
            last_view: Mutex::new(None),
        })
    }

    /// Heartbeats every `options.heartbeat` until `stop`, then leaves:
    /// releases the lease (so another node takes it at once) and removes
    /// its member record.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.options.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            tokio::select! {
                _ = self.tick() => {}
                _ = stop.cancelled() => break,
            }
        }
        if let Err(e) = self.leave().await {
            tracing::warn!(error = %e, "leaving the cluster failed; the lease and record expire");
        }
    }

    /// One heartbeat: record, view, configurations, chores, lease.
    async fn tick(&self) {
        let mut conn = self.conn.clone();
        let beat: RedisResult<i64> = self
            .scripts
            .heartbeat
            .key(self.keys.members())
            .key(self.keys.node(&self.id))
            .arg(&self.id)
            .arg(&self.record)
            .arg(self.options.forget_after().as_millis() as u64)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = beat {
            tracing::debug!(error = %e, "heartbeat failed");
            return;
        }
        match self.read_view().await {
            Ok(view) => {
                self.health
                    .set_live_nodes(view.nodes.iter().filter(|n| n.alive).count());
                *self.last_view.lock() = Some(view);
            }
            Err(e) => tracing::debug!(error = %e, "reading the cluster failed"),
        }
        let counters = match self.observe().await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::debug!(error = %e, "reading the configurations failed");
                None
            }
        };
        let lease = self.lease.lock().clone();
        if let Some(lease) = lease {
            match self.chores(&lease, counters.as_deref()).await {
                Ok(true) => {}
                Ok(false) => {
                    self.chores_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        lease = %lease,
                        "a leader chore was refused: this node lost the lease and stops leading"
                    );
                    *self.lease.lock() = None;
                }
                Err(e) => tracing::warn!(error = %e, "a leader chore failed"),
            }
        }
        if let Err(e) = self.lease_tick().await {
            tracing::debug!(error = %e, "renewing or taking the lease failed");
        }
    }

    /// Takes the lease if nobody holds it (the leader renews it in its
    /// fenced chore).
    async fn lease_tick(&self) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        let lease_ms = self.options.lease.as_millis() as u64;
        if self.lease.lock().is_some() {
            return Ok(());
        }
        let (token, value): (u64, String) = self
            .scripts
            .acquire
            .key(self.keys.lease())
            .key(self.keys.epoch())
            .arg(&self.id)
            .arg(lease_ms)
            .arg(self.max_token.load(Ordering::Relaxed))
            .invoke_async(&mut conn)
            .await?;
        if token > 0 {
            tracing::info!(token, "took the leader lease");
            self.max_token.fetch_max(token, Ordering::Relaxed);
            *self.lease.lock() = Some(value);
        } else if let Some((t, _)) = split_lease(&value) {
            self.max_token.fetch_max(t, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The leader's chores, each fenced by the lease: renew the lease and
    /// forget long-dead members (one script), then write back
    /// configurations Redis lost. False when a chore was refused (the
    /// lease is someone else's).
    async fn chores(
        &self,
        lease: &str,
        counters: Option<&[(String, Option<u64>)]>,
    ) -> RedisResult<bool> {
        let mut conn = self.conn.clone();
        let swept: i64 = self
            .scripts
            .sweep
            .key(self.keys.lease())
            .key(self.keys.members())
            .arg(lease)
            .arg(self.options.forget_after().as_millis() as u64)
            .arg(self.options.lease.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        if swept < 0 {
            return Ok(false);
        }
        if swept > 0 {
            tracing::info!(forgotten = swept, "forgot members not seen for long");
        }
        let Some(counters) = counters else {
            return Ok(true);
        };
        let token = split_lease(lease).map_or(0, |(t, _)| t);
        for (name, counter) in counters {
            let Some(entry) = self.remembered.get(name) else {
                continue;
            };
            if counter.unwrap_or(0) >= entry.version {
                continue;
            }
            if !self.restore(token, name, &entry).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes back one lost configuration (or a deletion's version);
    /// false if the bucket's fence refused this token.
    async fn restore(&self, token: u64, name: &str, entry: &Entry) -> RedisResult<bool> {
        let mut conn = self.conn.clone();
        let (a, p) = entry
            .text
            .as_deref()
            .and_then(|t| drip::Policy::decode(t).ok())
            .map_or((0, 0), |p| {
                (p.limit().rate().amount(), p.limit().rate().period_ns())
            });
        let done: i64 = self
            .scripts
            .restore
            .key(self.keys.policy(name))
            .key(self.keys.version(name))
            .key(self.keys.fence(name))
            .arg(token)
            .arg(entry.version)
            .arg(&entry.generation)
            .arg(entry.text.as_deref().unwrap_or(""))
            .arg(a)
            .arg(p)
            .invoke_async(&mut conn)
            .await?;
        match done {
            -1 => return Ok(false),
            1 => {
                let _: () = redis::cmd("SADD")
                    .arg(self.keys.registry())
                    .arg(name)
                    .query_async(&mut conn)
                    .await?;
                self.restored.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    bucket = name,
                    version = entry.version,
                    "restored a configuration Redis lost"
                );
            }
            2 => tracing::info!(
                bucket = name,
                version = entry.version,
                "restored a deletion's version"
            ),
            _ => {}
        }
        Ok(true)
    }

    /// Reads every bucket this node knows of or Redis lists, remembers
    /// what is configured (and what was deleted), and returns each
    /// bucket's version counter.
    async fn observe(&self) -> RedisResult<Vec<(String, Option<u64>)>> {
        let mut conn = self.conn.clone();
        let listed: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.registry())
            .query_async(&mut conn)
            .await?;
        let names: BTreeSet<String> = listed
            .into_iter()
            .chain(self.remembered.snapshot().into_iter().map(|(n, _)| n))
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            // One slot per bucket: a pipeline of its two keys.
            let ((text, version, generation), counter): (PolicyFields, Option<u64>) = redis::pipe()
                .cmd("HMGET")
                .arg(self.keys.policy(&name))
                .arg(&["text", "version", "gen"])
                .cmd("GET")
                .arg(self.keys.version(&name))
                .query_async(&mut conn)
                .await?;
            match (text, version, generation, counter) {
                (Some(text), Some(version), Some(generation), _) => {
                    self.remembered.merge(
                        &name,
                        Entry {
                            version,
                            generation,
                            text: Some(text),
                        },
                    );
                }
                // No policy but the counter is there: deleted, not lost.
                (None, _, _, Some(c)) => {
                    if let Some(old) = self.remembered.get(&name)
                        && old.text.is_some()
                        && c >= old.version
                    {
                        self.remembered.merge(
                            &name,
                            Entry {
                                version: c,
                                generation: old.generation,
                                text: None,
                            },
                        );
                    }
                }
                _ => {}
            }
            out.push((name, counter));
        }
        Ok(out)
    }

    /// Reads the members and the leader from Redis.
    async fn read_view(&self) -> RedisResult<ClusterStatus> {
        let mut conn = self.conn.clone();
        let raw: Vec<Value> = self
            .scripts
            .view
            .key(self.keys.members())
            .key(self.keys.lease())
            .invoke_async(&mut conn)
            .await?;
        let bad = || redis::RedisError::from((redis::ErrorKind::Parse, "bad cluster view"));
        let now: u64 = redis::from_redis_value(raw.first().ok_or_else(bad)?.clone())?;
        let lease: Option<String> = redis::from_redis_value(raw.get(1).ok_or_else(bad)?.clone())?;
        let mut seen = Vec::new();
        for pair in raw[2..].chunks_exact(2) {
            let id: String = redis::from_redis_value(pair[0].clone())?;
            let score: String = redis::from_redis_value(pair[1].clone())?;
            seen.push((id, score.parse::<f64>().unwrap_or(0.0) as u64));
        }
        let records: Vec<Option<String>> = if seen.is_empty() {
            Vec::new()
        } else {
            let mut cmd = redis::cmd("MGET");
            for (id, _) in &seen {
                cmd.arg(self.keys.node(id));
            }
            cmd.query_async(&mut conn).await?
        };
        let timeout = self.options.member_timeout.as_millis() as u64;
        let mut nodes = Vec::with_capacity(seen.len());
        for ((id, last), record) in seen.into_iter().zip(records) {
            let Some(record) = record.and_then(|r| serde_json::from_str::<Record>(&r).ok()) else {
                continue;
            };
            let ago = now.saturating_sub(last);
            nodes.push(NodeStatus {
                node_id: id,
                http: record.http,
                grpc: record.grpc,
                last_seen_ms: ago,
                alive: ago <= timeout,
            });
        }
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let leader = lease
            .as_deref()
            .and_then(split_lease)
            .map(|(t, id)| {
                self.max_token.fetch_max(t, Ordering::Relaxed);
                id.to_owned()
            })
            .unwrap_or_default();
        Ok(ClusterStatus {
            node_id: self.id.clone(),
            leader,
            nodes,
        })
    }

    /// Releases the lease if held and removes this node's record.
    async fn leave(&self) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        let held = self.lease.lock().take();
        if let Some(value) = held {
            let _: i64 = self
                .scripts
                .release
                .key(self.keys.lease())
                .arg(&value)
                .invoke_async(&mut conn)
                .await?;
            tracing::info!("released the leader lease");
        }
        let _: () = redis::pipe()
            .cmd("ZREM")
            .arg(self.keys.members())
            .arg(&self.id)
            .ignore()
            .cmd("DEL")
            .arg(self.keys.node(&self.id))
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}

impl ClusterInfo for Cluster {
    fn status(&self) -> super::BoxFuture<'_, Option<ClusterStatus>> {
        Box::pin(async move {
            match self.read_view().await {
                Ok(v) => Some(v),
                // Redis is down: what was last seen.
                Err(_) => self.last_view.lock().clone(),
            }
        })
    }

    fn health(&self) -> &Arc<Health> {
        &self.health
    }

    fn metrics(&self) -> ClusterMetrics {
        let (remembered_live, remembered_deleted) = self.remembered.counts();
        ClusterMetrics {
            remembered_live,
            remembered_deleted,
            leader: self.lease.lock().is_some(),
            members_alive: self.health.live_nodes() as u64,
            chores_refused: self.chores_refused.load(Ordering::Relaxed),
            configs_restored: self.restored.load(Ordering::Relaxed),
        }
    }
}

/// `"TOKEN ID"` as its parts.
fn split_lease(value: &str) -> Option<(u64, &str)> {
    let (token, id) = value.split_once(' ')?;
    Some((token.parse().ok()?, id))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
