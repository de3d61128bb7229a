//! Where bucket state lives. Each store makes a decision atomically in its
//! own place (memory: compare-and-swap or a per-key lock; SQLite: one
//! transaction; Redis: one script) by the same rules as [`crate::core`].

use std::future::Future;

use crate::core::{Level, Policy, Request};
use crate::{Decision, Result};

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use memory::{Counted, Counting, KeyedBucket, MemoryStore, NoCounts};
#[cfg(feature = "redis")]
pub use redis::{RedisOptions, RedisStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};

/// Counters and level of one key of a bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyStatus {
    /// The bucket's policy.
    pub policy: Policy,
    /// How full the key's bucket is now.
    pub level: Level,
    /// Counters since the key was created. They outlive the water for the
    /// policy's [counter retention](crate::Policy::with_counter_retention)
    /// after the key's last request; a key idle beyond both starts again at
    /// zero.
    pub counters: Counters,
}

impl KeyStatus {
    /// Admitted requests that have left the queue: `allowed - queue_size`.
    pub fn processed(&self) -> u64 {
        self.counters.allowed.saturating_sub(self.level.queue_size)
    }
}

/// Requests seen by one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests admitted.
    pub allowed: u64,
    /// Requests refused (limited or never admissible).
    pub rejected: u64,
}

impl Counters {
    /// All requests decided.
    pub fn total(&self) -> u64 {
        self.allowed + self.rejected
    }
}

/// A bucket store. Implementations decide atomically: concurrent calls on
/// one key behave as if made one after another.
pub trait Store: Send + Sync + 'static {
    /// Creates or replaces the bucket `bucket`. Without `reset`, each key's
    /// state carries over to the new policy ([`crate::core::carry_over`]);
    /// with it every key starts empty.
    fn configure(
        &self,
        bucket: &str,
        policy: Policy,
        reset: bool,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The policy of `bucket`, if configured.
    fn policy(&self, bucket: &str) -> impl Future<Output = Result<Option<Policy>>> + Send;

    /// Decides `req` for `key` of `bucket` at the store's current time.
    fn decide(
        &self,
        bucket: &str,
        key: &str,
        req: Request,
    ) -> impl Future<Output = Result<Decision>> + Send;

    /// Level and counters of `key` of `bucket` (an unseen key is empty).
    fn status(&self, bucket: &str, key: &str) -> impl Future<Output = Result<KeyStatus>> + Send;

    /// Removes `bucket` and all its keys; false if there was none.
    fn delete(&self, bucket: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Every configured bucket with its policy, sorted by name.
    fn list(&self) -> impl Future<Output = Result<Vec<(String, Policy)>>> + Send;

    /// Checks that the store answers (for readiness probes).
    fn ping(&self) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(Ok(()))
    }

    /// Forgets keys that are idle now (bucket empty, windows clear, counter
    /// retention passed) and returns how many. Stores that expire keys themselves (Redis) do nothing.
    fn sweep_idle(&self) -> impl Future<Output = Result<u64>> + Send {
        std::future::ready(Ok(0))
    }

    /// Keys holding state now, where the store can tell cheaply.
    fn keys_held(&self) -> impl Future<Output = Result<Option<u64>>> + Send {
        std::future::ready(Ok(None))
    }
}
