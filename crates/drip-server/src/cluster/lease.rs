//! The leader lease: taken with set-if-absent and an expiry, renewed by
//! compare-and-extend inside the leader's fenced chore, released on
//! shutdown. The chore refuses a node whose lease has passed on.

use std::sync::atomic::Ordering;

use redis::RedisResult;

use super::node::Cluster;

impl Cluster {
    /// Takes the lease if nobody holds it (the leader renews it in its
    /// fenced chore).
    pub(super) async fn lease_tick(&self) -> RedisResult<()> {
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
    pub(super) async fn chores(
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

    /// Releases the lease if held and removes this node's record.
    pub(super) async fn leave(&self) -> RedisResult<()> {
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

/// `"TOKEN ID"` as its parts.
pub(super) fn split_lease(value: &str) -> Option<(u64, &str)> {
    let (token, id) = value.split_once(' ')?;
    Some((token.parse().ok()?, id))
}
