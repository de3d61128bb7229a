//! The memory store: state in this process.
//!
//! [`KeyedBucket`] is one policy over many keys, in shards (hash tables
//! behind one read-write lock each, as a `DashMap` keeps them), each shard
//! also holding the bucket's policy (`shards.rs`). A key of a policy
//! without windows is one atomic word, its `tat`, decided by a
//! compare-and-swap loop as in governor (`word.rs`); any other key is
//! spilled: its word marks it (top bit set) and its whole state is kept
//! behind a lock in its shard's side table (`cell.rs`). A decision locks its key's
//! shard, shared, and reads the policy there; a change of policy locks
//! every shard and carries every key over before any decision sees it
//! (`keyed.rs`). [`MemoryStore`] keeps one `KeyedBucket` per named bucket,
//! all counting, and the store-wide key budget. No `unsafe` code.
//!
//! Layout: `sync.rs` (std or loom atomics), `word.rs` (the CAS loop),
//! `config.rs` (a policy and its 64-bit base), `cell.rs` (one key),
//! `joint.rs` (joint decisions over several keys),
//! `shards.rs` (the keys and the policy), `keyed.rs` ([`KeyedBucket`]),
//! `loom_models.rs`, and here the key budget and [`MemoryStore`].
//!
//! # Invariants, and what checks each
//!
//! 1. Concurrent decisions on one word key behave as if made one after
//!    another: none is lost, none admitted on a stale `tat` (the CAS loop).
//!    Checked by the loom models `loom_models::{two_checks_of_a_full_bucket,
//!    three_checks_admit_exactly_capacity, a_reservation_and_a_check}` and
//!    by `tests/concurrency.rs` (`frozen_clock_admits_exactly_capacity_lock_free`).
//! 2. A decision never runs while the policy changes, and a change carries
//!    every key over exactly (`core::carry_over`) before any decision sees
//!    the new policy: a decision holds its shard's lock while it reads the
//!    policy there; a change holds every shard's lock, taken in order (so
//!    it cannot deadlock with decisions, which hold one). Checked by
//!    `tests/concurrency.rs` (`reconfiguring_under_load_keeps_exactness`)
//!    and `tests/keyed_bucket.rs`.
//! 3. A key changes form (word or whole state) only with exclusive access:
//!    its shard locked alone (`decide_slow`, reconfigure, rebase), and a
//!    decision never writes the top bit that marks a spilled key (a `tat`
//!    reaching it spills: `keyed::tests::a_tat_reaching_the_top_bit_spills_and_decides_as_the_core`);
//!    a removed or unspilled key gives its side-table place back
//!    (`keyed::tests::spilled_keys_give_their_place_back_when_swept_reset_or_made_words`).
//!    No `unsafe` code (`forbid`): the shards' locks give this.
//! 4. Word arithmetic never overflows unnoticed: a value beyond 64 bits
//!    makes the word answer `None` and the key decides on its whole state
//!    (`WordPolicy` proptest `word_matches_decide_tat`; `tests/keyed_bucket.rs`
//!    `a_key_outgrowing_its_word_decides_exactly_as_the_core`); the base moves
//!    on before `now` leaves its range (`keyed::tests::keys_stay_words_across_rebases_and_decide_as_the_core`).
//! 5. The key budget counts exactly the keys held over a store's buckets
//!    (`tests/apis.rs` `the_key_cap_refuses_new_keys_and_keeps_old_ones`,
//!    `tests/concurrency.rs` `new_keys_from_many_threads_during_sweeps_are_each_admitted_exactly`).
//! 6. Every decision gives the same answer as `core::decide` on the same
//!    state (the conformance suite, `tests/memory_conformance.rs`, and the
//!    reference-model proptests, `tests/model.rs`).
//! 7. A joint decision (`decide_all`, `joint.rs`) admits all its parts or
//!    consumes nothing, and runs as if no other decision ran beside it: it
//!    holds every involved shard alone, taken in one global order (bucket
//!    name, shard index; each once), which every other locker respects (one
//!    shard, or one bucket's shards in index order), so it cannot deadlock;
//!    it plans on copies (`core::decide_joint`) and writes back only when
//!    every part admits. Checked by `tests/concurrency.rs`
//!    (`joint_decisions_across_two_buckets_are_atomic_and_exact`: fails with
//!    per-part decisions, and its watchdog fails with locks in part order)
//!    and the conformance case `joint_decisions`.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};

use super::{JointPart, KeyLevel, KeyStatus, QueuedRequest, Store};
use crate::clock::{Clock, MonotonicClock, SystemClock};
use crate::core::{Decision, JointDecision, Nanos, Policy, Request};
use crate::{Error, Result};
use cell::Cell;

mod cell;
mod config;
mod joint;
mod keyed;
#[cfg(all(test, drip_loom))]
mod loom_models;
mod shards;
mod sync;
mod word;

pub use cell::{Counted, Counting, NoCounts};
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

/// A bucket of the store: string keys, counted.
type StoreBucket<C> = KeyedBucket<String, C, Counted>;

/// The memory store: named buckets of string keys in this process.
pub struct MemoryStore<C: Clock = MonotonicClock> {
    /// Read by every decision: behind crossbeam's per-thread read locks, so
    /// decisions on different threads do not contend for one lock word.
    buckets: ShardedLock<BTreeMap<String, Arc<StoreBucket<C>>>>,
    clock: C,
    budget: Arc<KeyBudget>,
    /// The system clock's epoch ns and the store clock's reading taken
    /// together at start: listed queue times are placed on the epoch from
    /// them, so every listing agrees.
    epoch_at: (Nanos, Nanos),
}

impl MemoryStore<MonotonicClock> {
    /// A store on the monotonic clock holding at most [`DEFAULT_MAX_KEYS`] keys.
    pub fn new() -> Self {
        Self::with_clock(MonotonicClock::new())
    }
}

impl MemoryStore<MonotonicClock> {
    /// A store on the monotonic clock that refuses new keys, over all its
    /// buckets, beyond `max_keys` ([`Error::KeyLimit`]); keys it holds keep
    /// deciding, and idle ones make room when swept.
    pub fn with_max_keys(max_keys: usize) -> Self {
        Self::with_clock_and_max_keys(MonotonicClock::new(), max_keys)
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
            epoch_at: (SystemClock.now(), clock.now()),
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
    #[inline(always)]
    fn with_bucket<T>(&self, name: &str, f: impl FnOnce(&StoreBucket<C>) -> T) -> Result<T> {
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

    /// The most keys this store holds over all its buckets.
    pub fn max_keys(&self) -> usize {
        self.budget.max
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
                    let b = StoreBucket::with_budget(
                        policy.clone(),
                        self.clock.clone(),
                        self.budget.clone(),
                    );
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

    async fn decide_tracked(
        &self,
        bucket: &str,
        key: &str,
        req: Request,
        id: &str,
    ) -> Result<Decision> {
        self.with_bucket(bucket, |b| b.decide_tracked(key, req, id))?
    }

    async fn queue(&self, bucket: &str, key: &str) -> Result<Vec<QueuedRequest>> {
        let (_, entries) = self.with_bucket(bucket, |b| b.queued(key))?;
        let (epoch, at) = self.epoch_at;
        let to_epoch =
            |t: Nanos| (i128::from(epoch) + i128::from(t) - i128::from(at)).max(0) as u64;
        Ok(entries.iter().map(|e| e.listed(to_epoch)).collect())
    }

    async fn cancel(&self, bucket: &str, key: &str, id: &str) -> Result<bool> {
        self.with_bucket(bucket, |b| b.cancel(key, id))
    }

    async fn decide_all(&self, parts: &[JointPart<'_>]) -> Result<JointDecision> {
        self.decide_all_now(parts)
    }

    async fn busiest_keys(&self, bucket: &str, n: usize) -> Result<Option<Vec<KeyLevel>>> {
        // The bucket is taken out of the map first: walking its keys must
        // not hold the map's lock, which creating a bucket writes.
        let b = read(&self.buckets)
            .get(bucket)
            .cloned()
            .ok_or_else(|| Error::UnknownBucket(bucket.to_owned()))?;
        let keys = b.busiest(n).into_iter();
        Ok(Some(
            keys.map(|(key, level, counters)| KeyLevel {
                key,
                level,
                counters,
            })
            .collect(),
        ))
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
