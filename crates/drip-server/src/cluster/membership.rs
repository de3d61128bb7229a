//! Membership: each node's record and last-seen time, and the view of
//! every member and the leader that `/v1/cluster` shows.

use std::sync::atomic::Ordering;

use redis::{RedisResult, Value};
use serde::{Deserialize, Serialize};

use super::lease::split_lease;
use super::node::Cluster;
use crate::model::{ClusterStatus, NodeStatus};

/// A member's record, as heartbeated.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) node_id: String,
    pub(super) http: String,
    pub(super) grpc: String,
    /// When the node started (Unix ms, its own clock).
    pub(super) started_ms: u64,
    /// The drip version it runs.
    pub(super) version: String,
}

impl Cluster {
    /// Reads the members and the leader from Redis.
    pub(super) async fn read_view(&self) -> RedisResult<ClusterStatus> {
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
}
