//! [`KeyedBucket`]: one policy over many keys, in memory.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use parking_lot::Mutex;

use super::KeyBudget;
use super::cell::{Slot, Step};
use super::epoch::Epoch;
use crate::Result;
use crate::clock::{Clock, MonotonicClock};
use crate::core::{self, Decision, Policy, Request, State};
use crate::store::{Counters, KeyStatus};

/// One policy applied to many keys of type `K`, in memory.
///
/// Use it directly for the fastest in-process limiting (`K` may be any
/// hashable key, e.g. `u64` or `String`); [`MemoryStore`](super::MemoryStore)
/// keeps one per named bucket.
pub struct KeyedBucket<K: Hash + Eq, C: Clock = MonotonicClock> {
    epoch: ArcSwap<Epoch>,
    keys: DashMap<K, Slot>,
    clock: C,
    budget: Arc<KeyBudget>,
    /// Serialises reconfigurations (decisions never take it).
    reconfiguring: Mutex<()>,
}

impl<K: Hash + Eq + Clone, C: Clock> KeyedBucket<K, C> {
    /// A bucket with `policy`, reading time from `clock`, holding at most
    /// [`DEFAULT_MAX_KEYS`](super::DEFAULT_MAX_KEYS) keys.
    pub fn new(policy: Policy, clock: C) -> Self {
        Self::with_budget(policy, clock, KeyBudget::new(super::DEFAULT_MAX_KEYS))
    }

    /// A bucket that refuses new keys beyond `max_keys`.
    pub fn with_max_keys(policy: Policy, clock: C, max_keys: usize) -> Self {
        Self::with_budget(policy, clock, KeyBudget::new(max_keys))
    }

    pub(super) fn with_budget(policy: Policy, clock: C, budget: Arc<KeyBudget>) -> Self {
        KeyedBucket {
            epoch: ArcSwap::from_pointee(Epoch::first(policy)),
            keys: DashMap::new(),
            clock,
            budget,
            reconfiguring: Mutex::new(()),
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
        let now = self.clock.now();
        loop {
            let epoch = self.epoch.load();
            let step = match self.keys.get(key) {
                Some(slot) => slot.decide(&epoch, now, req),
                None => match self.keys.entry(key.to_owned()) {
                    dashmap::Entry::Occupied(e) => e.get().decide(&epoch, now, req),
                    dashmap::Entry::Vacant(e) => {
                        self.budget.take()?;
                        e.insert(Slot::new(&epoch)).decide(&epoch, now, req)
                    }
                },
            };
            match step {
                Step::Done(decision) => return Ok(decision),
                Step::Reload => continue,
                Step::Rebuild => {
                    // Exclusive access to rebuild the key, then try again.
                    if let Some(mut slot) = self.keys.get_mut(key) {
                        slot.rebuild(&self.epoch.load());
                    }
                }
            }
        }
    }

    /// Level and counters of `key` now.
    pub fn status<Q>(&self, key: &Q) -> KeyStatus
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.clock.now();
        loop {
            let epoch = self.epoch.load();
            let (state, counters) = match self.keys.get(key) {
                Some(slot) => match slot.view(&epoch) {
                    Some(view) => view,
                    None => continue,
                },
                None => (State::default(), Counters::default()),
            };
            return KeyStatus {
                level: core::level(&epoch.policy, &state, now),
                policy: epoch.policy.clone(),
                counters,
            };
        }
    }

    /// The current policy.
    pub fn policy(&self) -> Policy {
        self.epoch.load().policy.clone()
    }

    /// Replaces the policy. Without `reset` every key's water and window
    /// logs carry over; with it every key starts empty (counters too).
    ///
    /// Decisions go on meanwhile and never wait for this: the new policy is
    /// installed at once, and each key is carried over either by this call's
    /// pass over the keys or by its own next decision, whichever comes
    /// first. The pass takes no lock that busy keys could starve.
    pub fn reconfigure(&self, policy: Policy, reset: bool) {
        let _one_at_a_time = self.reconfiguring.lock();
        let now = self.clock.now();
        let next = Arc::new(self.epoch.load().next(policy, now, reset));
        self.epoch.store(next.clone());
        let mut rebuild = Vec::new();
        for entry in self.keys.iter() {
            if let Step::Rebuild = entry.value().carry_over(&next) {
                rebuild.push(entry.key().clone());
            }
        }
        for key in rebuild {
            // A key busy now is rebuilt by its own next decision instead.
            if let Some(mut slot) = self.keys.try_get_mut(&key).try_unwrap() {
                slot.rebuild(&next);
            }
        }
    }

    /// Forgets keys that are idle now (bucket empty, windows clear): they
    /// hold no memory afterwards. Returns how many were removed.
    pub fn sweep(&self) -> usize {
        let epoch = self.epoch.load();
        let now = self.clock.now();
        let before = self.keys.len();
        self.keys.retain(|_, slot| match slot.view(&epoch) {
            Some((state, _)) => !core::is_idle(&epoch.policy, &state, now),
            None => true,
        });
        let removed = before.saturating_sub(self.keys.len());
        self.budget.give_back(removed);
        if removed > 0 {
            // Give the freed entries' memory back, not just keep it for reuse.
            self.keys.shrink_to_fit();
        }
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
}

impl<K: Hash + Eq, C: Clock> Drop for KeyedBucket<K, C> {
    fn drop(&mut self) {
        self.budget.give_back(self.keys.len());
    }
}
