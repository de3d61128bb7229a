//! The memory store: state in this process.
//!
//! [`KeyedBucket`] is one policy over many keys. A key of a policy without
//! windows is one atomic 128-bit word (its `tat`), decided by a
//! compare-and-swap loop as in governor; a key of a policy with windows is a
//! small state behind a per-key lock. The policy sits behind a read-write
//! lock: decisions share it, and a reconfiguration takes it alone while it
//! carries every key's state over, so no decision sees half a change.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use portable_atomic::AtomicU128;

use super::{Counters, KeyStatus, Store};
use crate::clock::{Clock, MonotonicClock};
use crate::core::{self, Decision, Policy, Request, State};
use crate::{Error, Result};

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

/// One key's state.
enum Cell {
    /// A policy without windows: the whole state is `tat`.
    Word(AtomicU128),
    /// A policy with windows.
    Locked(Mutex<State>),
}

impl Cell {
    fn new(policy: &Policy, state: State) -> Cell {
        if policy.windows().is_empty() {
            Cell::Word(AtomicU128::new(state.tat))
        } else {
            Cell::Locked(Mutex::new(state))
        }
    }

    fn state(&self) -> State {
        match self {
            Cell::Word(tat) => State {
                tat: tat.load(Ordering::Acquire),
                windows: Vec::new(),
            },
            Cell::Locked(m) => m.lock().clone(),
        }
    }

    fn decide(&self, policy: &Policy, now: u64, req: Request) -> Decision {
        match self {
            Cell::Word(tat) => {
                let mut cur = tat.load(Ordering::Acquire);
                loop {
                    let (decision, next) = core::decide_tat(policy, cur, now, req);
                    let Some(next) = next else { return decision };
                    match tat.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => return decision,
                        Err(seen) => cur = seen,
                    }
                }
            }
            Cell::Locked(m) => core::decide(policy, &mut m.lock(), now, req),
        }
    }
}

/// One key: its state and counters.
struct Slot {
    cell: Cell,
    allowed: AtomicU64,
    rejected: AtomicU64,
}

impl Slot {
    fn new(policy: &Policy) -> Slot {
        Slot {
            cell: Cell::new(policy, State::default()),
            allowed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    fn decide(&self, policy: &Policy, now: u64, req: Request) -> Decision {
        let d = self.cell.decide(policy, now, req);
        let counter = if d.allowed() {
            &self.allowed
        } else {
            &self.rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
        d
    }

    fn counters(&self) -> Counters {
        Counters {
            allowed: self.allowed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// One policy applied to many keys of type `K`, in memory.
///
/// Use it directly for the fastest in-process limiting (`K` may be any
/// hashable key, e.g. `u64` or `String`); [`MemoryStore`] keeps one per
/// named bucket.
pub struct KeyedBucket<K: Hash + Eq, C: Clock = MonotonicClock> {
    policy: RwLock<Policy>,
    keys: DashMap<K, Slot>,
    clock: C,
    budget: Arc<KeyBudget>,
}

impl<K: Hash + Eq + Clone, C: Clock> KeyedBucket<K, C> {
    /// A bucket with `policy`, reading time from `clock`, holding at most
    /// [`DEFAULT_MAX_KEYS`] keys.
    pub fn new(policy: Policy, clock: C) -> Self {
        Self::with_budget(policy, clock, KeyBudget::new(DEFAULT_MAX_KEYS))
    }

    /// A bucket that refuses new keys beyond `max_keys`.
    pub fn with_max_keys(policy: Policy, clock: C, max_keys: usize) -> Self {
        Self::with_budget(policy, clock, KeyBudget::new(max_keys))
    }

    fn with_budget(policy: Policy, clock: C, budget: Arc<KeyBudget>) -> Self {
        KeyedBucket {
            policy: RwLock::new(policy),
            keys: DashMap::new(),
            clock,
            budget,
        }
    }

    /// Decides a check of `cost` units for `key` now.
    pub fn check<Q>(&self, key: &Q, cost: u64) -> Result<Decision>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.decide(key, Request::check(cost))
    }

    /// Decides `req` for `key` now.
    pub fn decide<Q>(&self, key: &Q, req: Request) -> Result<Decision>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let policy = self.policy.read();
        let now = self.clock.now();
        if let Some(slot) = self.keys.get(key) {
            return Ok(slot.decide(&policy, now, req));
        }
        let slot = match self.keys.entry(key.to_owned()) {
            dashmap::Entry::Occupied(e) => e.into_ref().downgrade(),
            dashmap::Entry::Vacant(e) => {
                self.budget.take()?;
                e.insert(Slot::new(&policy)).downgrade()
            }
        };
        Ok(slot.decide(&policy, now, req))
    }

    /// Level and counters of `key` now.
    pub fn status<Q>(&self, key: &Q) -> KeyStatus
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let policy = self.policy.read();
        let now = self.clock.now();
        let (state, counters) = self
            .keys
            .get(key)
            .map(|s| (s.cell.state(), s.counters()))
            .unwrap_or_default();
        KeyStatus {
            level: core::level(&policy, &state, now),
            policy: policy.clone(),
            counters,
        }
    }

    /// The current policy.
    pub fn policy(&self) -> Policy {
        self.policy.read().clone()
    }

    /// Replaces the policy. Without `reset` every key's water and window
    /// logs carry over; with it every key starts empty (counters too).
    pub fn reconfigure(&self, policy: Policy, reset: bool) {
        let mut current = self.policy.write();
        if reset {
            self.clear();
        } else {
            let now = self.clock.now();
            for mut slot in self.keys.iter_mut() {
                let mut state = slot.cell.state();
                core::carry_over(&current, &policy, &mut state, now);
                slot.cell = Cell::new(&policy, state);
            }
        }
        *current = policy;
    }

    /// Forgets keys that are idle now (bucket empty, windows clear): they
    /// hold no memory afterwards. Returns how many were removed.
    pub fn sweep(&self) -> usize {
        let policy = self.policy.read();
        let now = self.clock.now();
        let before = self.keys.len();
        self.keys
            .retain(|_, slot| !core::is_idle(&policy, &slot.cell.state(), now));
        let removed = before.saturating_sub(self.keys.len());
        self.budget.give_back(removed);
        removed
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn clear(&self) {
        let held = self.keys.len();
        self.keys.clear();
        self.budget.give_back(held);
    }
}

impl<K: Hash + Eq, C: Clock> Drop for KeyedBucket<K, C> {
    fn drop(&mut self) {
        self.budget.give_back(self.keys.len());
    }
}

/// The memory store: named buckets of string keys in this process.
pub struct MemoryStore<C: Clock = MonotonicClock> {
    buckets: RwLock<BTreeMap<String, Arc<KeyedBucket<String, C>>>>,
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
            buckets: RwLock::new(BTreeMap::new()),
            clock,
            budget: KeyBudget::new(max_keys),
        }
    }

    /// The store's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    fn bucket(&self, name: &str) -> Result<Arc<KeyedBucket<String, C>>> {
        self.buckets
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownBucket(name.to_owned()))
    }

    /// Forgets idle keys in every bucket; returns how many were removed.
    pub fn sweep(&self) -> usize {
        let buckets: Vec<_> = self.buckets.read().values().cloned().collect();
        buckets.iter().map(|b| b.sweep()).sum()
    }

    /// Keys held over all buckets.
    pub fn keys_held(&self) -> usize {
        self.buckets.read().values().map(|b| b.len()).sum()
    }

    fn configure_now(&self, name: &str, policy: Policy, reset: bool) {
        let mut buckets = self.buckets.write();
        match buckets.get(name) {
            Some(b) => b.reconfigure(policy, reset),
            None => {
                let b = KeyedBucket::with_budget(policy, self.clock.clone(), self.budget.clone());
                buckets.insert(name.to_owned(), Arc::new(b));
            }
        }
    }
}

impl<C: Clock> Store for MemoryStore<C> {
    async fn configure(&self, bucket: &str, policy: Policy, reset: bool) -> Result<()> {
        self.configure_now(bucket, policy, reset);
        Ok(())
    }

    async fn policy(&self, bucket: &str) -> Result<Option<Policy>> {
        Ok(self.buckets.read().get(bucket).map(|b| b.policy()))
    }

    async fn decide(&self, bucket: &str, key: &str, req: Request) -> Result<Decision> {
        self.bucket(bucket)?.decide(key, req)
    }

    async fn status(&self, bucket: &str, key: &str) -> Result<KeyStatus> {
        Ok(self.bucket(bucket)?.status(key))
    }

    async fn delete(&self, bucket: &str) -> Result<bool> {
        Ok(self.buckets.write().remove(bucket).is_some())
    }

    async fn sweep_idle(&self) -> Result<u64> {
        Ok(self.sweep() as u64)
    }

    async fn keys_held(&self) -> Result<Option<u64>> {
        Ok(Some(self.keys_held() as u64))
    }

    async fn list(&self) -> Result<Vec<(String, Policy)>> {
        Ok(self
            .buckets
            .read()
            .iter()
            .map(|(name, b)| (name.clone(), b.policy()))
            .collect())
    }
}
