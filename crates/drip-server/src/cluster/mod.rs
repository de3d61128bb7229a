//! The cluster (DESIGN.md §5): nodes sharing one Redis (or Redis Cluster)
//! are one cluster. Nodes are stateless; Redis holds the state and is the
//! only arbiter: drip builds no consensus of its own, and no decision ever
//! waits on the leader.
//!
//! # Layout
//!
//! - [`options`]: heartbeat, member timeout, lease, store timeout,
//!   [`OnStoreError`].
//! - [`node`]: [`Cluster`], one node's heartbeat loop, which runs
//!   `membership` (member records and the view of the cluster), `lease`
//!   (set-if-absent; compare-and-extend in the leader's fenced chore;
//!   released on shutdown) and `heal` (remembering configurations, the
//!   leader writing back what Redis lost); the scripts are in `lua/`.
//! - [`remembered`]: the configurations and deletions a node has seen,
//!   written back by the leader when Redis comes back empty.
//! - [`resilient`]: [`Resilient`], the store wrapper that applies
//!   `on_store_error` while the store is down.
//! - [`health`]: what the wrapper, the loop and the front ends share.
//! - [`keys`], [`conn`]: Redis key names and the loop's connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::model::ClusterStatus;

#[cfg(feature = "redis")]
pub mod conn;
#[cfg(feature = "redis")]
mod heal;
pub mod health;
#[cfg(feature = "redis")]
pub mod keys;
#[cfg(feature = "redis")]
mod lease;
#[cfg(feature = "redis")]
mod membership;
#[cfg(feature = "redis")]
pub mod node;
pub mod options;
pub mod remembered;
pub mod resilient;
#[cfg(feature = "redis")]
pub mod start;

pub use health::{Health, Mode, watch_degraded};
#[cfg(feature = "redis")]
pub use node::Cluster;
pub use options::{ClusterOptions, OnStoreError};
pub use remembered::Remembered;
pub use resilient::Resilient;

/// A boxed future, for the object-safe [`ClusterInfo`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the front ends ask of a node's cluster.
pub trait ClusterInfo: Send + Sync + 'static {
    /// Members, alive or not, and the leader; `None` if never read.
    fn status(&self) -> BoxFuture<'_, Option<ClusterStatus>>;
    /// The store's health and the `on_store_error` policy.
    fn health(&self) -> &Arc<Health>;
    /// The cluster's gauges and counters now.
    fn metrics(&self) -> ClusterMetrics;
}

/// The cluster's gauges and counters, for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterMetrics {
    /// This node holds the leader lease.
    pub leader: bool,
    /// Members alive as last seen.
    pub members_alive: u64,
    /// Leader chores refused by their fence (this node had lost the lease).
    pub chores_refused: u64,
    /// Configurations written back after Redis lost them.
    pub configs_restored: u64,
    /// Configurations this node remembers.
    pub remembered_live: u64,
    /// Deletions (tombstones) this node remembers.
    pub remembered_deleted: u64,
    /// The Redis store's deny cache on this node.
    pub deny_cache: drip::store::redis::DenyCacheStats,
}

/// A node's cluster as the server holds it.
#[derive(Clone)]
pub struct ClusterHandle(pub Arc<dyn ClusterInfo>);

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHandle")
            .field("on_store_error", &self.0.health().policy())
            .finish_non_exhaustive()
    }
}
