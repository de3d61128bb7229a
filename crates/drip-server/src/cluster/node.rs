//! One node's part in the cluster: the loop that heartbeats its member
//! record, holds or waits for the leader lease, remembers configurations,
//! and (as leader) does the fenced chores. Nothing in the decision path
//! waits on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use redis::{RedisResult, Script};
use tokio_util::sync::CancellationToken;

use super::conn::Conn;
use super::health::Health;
use super::keys::Keys;
use super::membership::Record;
use super::options::ClusterOptions;
use super::remembered::Remembered;
use super::{ClusterInfo, ClusterMetrics};
use crate::app::Node;
use crate::model::ClusterStatus;

/// The cluster's scripts (`lua/`).
pub(super) struct Scripts {
    pub(super) heartbeat: Script,
    pub(super) view: Script,
    pub(super) acquire: Script,
    pub(super) release: Script,
    pub(super) sweep: Script,
    pub(super) restore: Script,
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
    pub(super) conn: Conn,
    pub(super) keys: Keys,
    pub(super) options: ClusterOptions,
    pub(super) id: String,
    pub(super) record: String,
    pub(super) scripts: Scripts,
    /// The lease value (`"TOKEN ID"`) while this node believes it leads.
    pub(super) lease: Mutex<Option<String>>,
    /// The highest fencing token seen, so new ones stay above it.
    pub(super) max_token: AtomicU64,
    pub(super) remembered: Arc<Remembered>,
    pub(super) health: Arc<Health>,
    pub(super) chores_refused: AtomicU64,
    pub(super) restored: AtomicU64,
    pub(super) last_view: Mutex<Option<ClusterStatus>>,
    /// Reads the store's deny cache counters (set once, after start).
    pub(super) deny_stats: std::sync::OnceLock<drip::store::redis::RedisStore>,
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
            deny_stats: std::sync::OnceLock::new(),
        })
    }

    /// Exports `store`'s deny cache counters with the cluster's metrics.
    pub fn export_deny_cache(&self, store: drip::store::redis::RedisStore) {
        let _ = self.deny_stats.set(store);
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
            deny_cache: self
                .deny_stats
                .get()
                .map(|s| s.deny_cache_stats())
                .unwrap_or_default(),
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
