//! The memory store: state in this process.
//!
//! [`KeyedBucket`] is one policy over many keys. A key is one 64-bit word
//! in the map: for a policy without windows, its `tat` (counted from a
//! recent base), decided by a compare-and-swap loop as in governor, in
//! 64-bit arithmetic; with counters, windows or larger numbers, a pointer
//! to a small box (a word, or a state behind a per-key lock). Each key names
//! the policy epoch it was written in (by a tag, or the box holds it), so
//! decisions take no lock on the policy: a reconfiguration chains a new
//! epoch and each key is carried over to it when next touched (see
//! `epoch.rs` and `cell.rs`).
//!
//! The keys are held in sharded hash tables that each reading thread
//! enters by setting its own mark (`map.rs`): a decision that changes
//! nothing writes only that mark, with one atomic swap.
//!
//! Layout: `epoch.rs` (policy changes), `cell.rs` (one key), `map.rs` (the
//! keys), `keyed.rs` ([`KeyedBucket`]), and here the key budget and
//! [`MemoryStore`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};

use super::{KeyStatus, Store};
use crate::clock::{Clock, MonotonicClock};
use crate::core::{Decision, Policy, Request};
use crate::{Error, Result};

mod cell;
mod epoch;
mod keyed;
mod map;

pub use keyed::KeyedBucket;

/// Default cap on the keys one memory store holds.
pub const DEFAULT_MAX_KEYS: usize = 10_000_000;

/// How many keys a store may hold, shared by its buckets.
#[derive(Debug)]
struct KeyBudget {
    held: AtomicUsize,
    max: usize,
}

impl KeyBudget {
    fn new(max: usize) -> Arc<KeyBudget> {
        Arc::new(KeyBudget {
            held: AtomicUsize::new(0),
            max,
        })
    }

    fn take(&self) -> Result<()> {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            if held >= self.max {
                return Err(Error::KeyLimit { limit: self.max });
            }
            match self.held.compare_exchange_weak(
                held,
                held + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => held = now,
            }
        }
    }

    fn give_back(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::Relaxed);
    }
}

/// The memory store: named buckets of string keys in this process.
pub struct MemoryStore<C: Clock = MonotonicClock> {
    /// Read by every decision: behind crossbeam's per-thread read locks, so
    /// decisions on different threads do not contend for one lock word.
    buckets: ShardedLock<BTreeMap<String, Arc<KeyedBucket<String, C>>>>,
    clock: C,
    budget: Arc<KeyBudget>,
}

impl MemoryStore<MonotonicClock> {
    /// A store on the monotonic clock holding at most [`DEFAULT_MAX_KEYS`] keys.
    pub fn new() -> Self {
        Self::with_clock(MonotonicClock::new())
    }
}

impl Default for MemoryStore<MonotonicClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock> MemoryStore<C> {
    /// A store reading time from `clock` (a [`ManualClock`](crate::ManualClock) in tests).
    pub fn with_clock(clock: C) -> Self {
        Self::with_clock_and_max_keys(clock, DEFAULT_MAX_KEYS)
    }

    /// A store that refuses new keys, over all its buckets, beyond `max_keys`.
    pub fn with_clock_and_max_keys(clock: C, max_keys: usize) -> Self {
        MemoryStore {
            buckets: ShardedLock::new(BTreeMap::new()),
            clock,
            budget: KeyBudget::new(max_keys),
        }
    }

    /// The store's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Runs `f` on the bucket `name`, under the map's read lock (shared by
    /// every decision; only creating or deleting a bucket writes it).
    fn with_bucket<T>(
        &self,
        name: &str,
        f: impl FnOnce(&KeyedBucket<String, C>) -> T,
    ) -> Result<T> {
        match read(&self.buckets).get(name) {
            Some(b) => Ok(f(b)),
            None => Err(Error::UnknownBucket(name.to_owned())),
        }
    }

    /// Forgets idle keys in every bucket; returns how many were removed.
    pub fn sweep(&self) -> usize {
        let buckets: Vec<_> = read(&self.buckets).values().cloned().collect();
        buckets.iter().map(|b| b.sweep()).sum()
    }

    /// Keys held over all buckets.
    pub fn keys_held(&self) -> usize {
        read(&self.buckets).values().map(|b| b.len()).sum()
    }

    fn configure_now(&self, name: &str, policy: Policy, reset: bool) {
        // Create the bucket under the map's write lock if it is new;
        // otherwise reconfigure it (constant time) without holding the map.
        let existing = read(&self.buckets).get(name).cloned();
        let bucket = existing.or_else(|| {
            let mut buckets = write(&self.buckets);
            match buckets.get(name) {
                Some(b) => Some(b.clone()),
                None => {
                    let b = KeyedBucket::with_budget(
                        policy.clone(),
                        self.clock.clone(),
                        self.budget.clone(),
                    )
                    .with_counters();
                    buckets.insert(name.to_owned(), Arc::new(b));
                    None
                }
            }
        });
        if let Some(b) = bucket {
            b.reconfigure(policy, reset);
        }
    }
}

impl<C: Clock> Store for MemoryStore<C> {
    async fn configure(&self, bucket: &str, policy: Policy, reset: bool) -> Result<()> {
        self.configure_now(bucket, policy, reset);
        Ok(())
    }

    async fn policy(&self, bucket: &str) -> Result<Option<Policy>> {
        Ok(read(&self.buckets).get(bucket).map(|b| b.policy()))
    }

    async fn decide(&self, bucket: &str, key: &str, req: Request) -> Result<Decision> {
        self.with_bucket(bucket, |b| b.decide(key, req))?
    }

    async fn status(&self, bucket: &str, key: &str) -> Result<KeyStatus> {
        self.with_bucket(bucket, |b| b.status(key))
    }

    async fn delete(&self, bucket: &str) -> Result<bool> {
        Ok(write(&self.buckets).remove(bucket).is_some())
    }

    async fn sweep_idle(&self) -> Result<u64> {
        Ok(self.sweep() as u64)
    }

    async fn keys_held(&self) -> Result<Option<u64>> {
        Ok(Some(self.keys_held() as u64))
    }

    async fn list(&self) -> Result<Vec<(String, Policy)>> {
        Ok(read(&self.buckets)
            .iter()
            .map(|(name, b)| (name.clone(), b.policy()))
            .collect())
    }
}

// The map of buckets, which every decision reads and only configure and
// delete change, is behind a `ShardedLock`. A panic under it leaves the map
// whole, so a poisoned lock is used as it is.
#[inline(always)]
fn read<T>(lock: &ShardedLock<T>) -> ShardedLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &ShardedLock<T>) -> ShardedLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
