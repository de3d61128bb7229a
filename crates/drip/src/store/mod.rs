//! Where bucket state lives. Each store makes a decision atomically in its
//! own place (memory: compare-and-swap or a per-key lock; SQLite: one
//! transaction; Redis: one script) by the same rules as [`crate::core`].

use std::future::Future;

use crate::core::{JointDecision, Level, Policy, Request};
use crate::{Decision, Error, Result};

mod busiest;
pub mod memory;
mod queue;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use busiest::{BUSIEST_SCAN, KeyLevel};
pub use memory::{Counted, Counting, KeyedBucket, MemoryStore, NoCounts};
pub use queue::QueuedRequest;
pub(crate) use queue::{Entry, give_back, max_entries};
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

/// One part of a joint decision ([`Store::decide_all`]): a request for
/// `key` of `bucket`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JointPart<'a> {
    /// The bucket (its policy decides this part).
    pub bucket: &'a str,
    /// The key within the bucket.
    pub key: &'a str,
    /// What this part asks.
    pub req: Request,
    /// An advisory part is decided with the others and consumes when it
    /// fits, but its refusal does not refuse the whole (Envoy's shadow
    /// mode: counted, never enforced).
    pub advisory: bool,
}

impl<'a> JointPart<'a> {
    /// A binding part: its refusal refuses the whole decision.
    pub fn new(bucket: &'a str, key: &'a str, req: Request) -> Self {
        JointPart {
            bucket,
            key,
            req,
            advisory: false,
        }
    }

    /// An advisory part (see [`JointPart::advisory`]).
    pub fn advisory(bucket: &'a str, key: &'a str, req: Request) -> Self {
        JointPart {
            advisory: true,
            ..JointPart::new(bucket, key, req)
        }
    }
}

/// Most parts one joint decision may have.
pub const MAX_JOINT_PARTS: usize = 64;

/// Refuses a joint decision of more than [`MAX_JOINT_PARTS`] parts.
pub(crate) fn check_parts(parts: &[JointPart<'_>]) -> Result<()> {
    if parts.len() > MAX_JOINT_PARTS {
        return Err(Error::Config(Box::new(crate::ConfigError {
            field: "parts".to_owned(),
            message: format!(
                "parts must be at most {MAX_JOINT_PARTS} in one joint decision (got {})",
                parts.len()
            ),
        })));
    }
    Ok(())
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

    /// Decides `req` as [`decide`](Self::decide) does and, when the bucket
    /// tracks its queue ([`Policy::with_track_queue`]) and admits it,
    /// records it under `id` in the same atomic step (a plain `decide`
    /// records it with the id `""`). Stores without queues just decide.
    fn decide_tracked(
        &self,
        bucket: &str,
        key: &str,
        req: Request,
        id: &str,
    ) -> impl Future<Output = Result<Decision>> + Send {
        let _ = id;
        self.decide(bucket, key, req)
    }

    /// The requests of `key` admitted and not yet departed, in departure
    /// order (empty unless the bucket tracks its queue).
    fn queue(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Vec<QueuedRequest>>> + Send {
        let _ = (bucket, key);
        std::future::ready(Ok(Vec::new()))
    }

    /// Takes the queued request `id` of `key` off the list and gives its
    /// place back when that is exact: it is the last admitted request of
    /// the key (nothing queued behind it) and the bucket has no windows.
    /// True when the place was given back; false when it stays used (or
    /// there is no such entry, or the store keeps no queue).
    fn cancel(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> impl Future<Output = Result<bool>> + Send {
        let _ = (bucket, key, id);
        std::future::ready(Ok(false))
    }

    /// Decides `parts` jointly at the store's current time: every binding
    /// part admitted and all consume (advisory parts: those that fit), or
    /// none consumes
    /// ([`JointDecision`]). Parts may span buckets and repeat a key. At most
    /// [`MAX_JOINT_PARTS`] parts. On a joint refusal only the parts that
    /// refused count a rejection in their key's counters. Stores that
    /// cannot do this atomically answer [`Error::Unsupported`] (the default).
    fn decide_all(
        &self,
        parts: &[JointPart<'_>],
    ) -> impl Future<Output = Result<JointDecision>> + Send {
        let _ = parts;
        std::future::ready(Err(Error::Unsupported(
            "this store cannot decide several keys jointly".to_owned(),
        )))
    }

    /// The `n` keys of `bucket` holding the most water now, fullest first
    /// (keys whose bucket is empty are left out), or `None` where the store
    /// cannot tell cheaply. Stores that read keys one by one look at no
    /// more than [`BUSIEST_SCAN`] of them. For watching (the dashboard), not
    /// for deciding: it never slows decisions down for long.
    fn busiest_keys(
        &self,
        bucket: &str,
        n: usize,
    ) -> impl Future<Output = Result<Option<Vec<KeyLevel>>>> + Send {
        let _ = (bucket, n);
        std::future::ready(Ok(None))
    }
}
