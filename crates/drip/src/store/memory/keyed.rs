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
use crate::core::{self, Answer, Decision, Nanos, Policy, Request, State, Verdict};
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
    /// Serialises reconfigurations, so each follows the one before (decisions
    /// never take it).
    reconfiguring: Mutex<()>,
    /// Whether decisions count each key's allowed and rejected requests
    /// (off unless asked: see `with_counters`).
    counting: bool,
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
            epoch: ArcSwap::new(Epoch::first(policy)),
            keys: DashMap::new(),
            clock,
            budget,
            reconfiguring: Mutex::new(()),
            counting: false,
        }
    }

    /// Counts each key's allowed and rejected requests, for
    /// [`status`](Self::status) (which otherwise reports zero counters).
    /// It costs one more atomic operation per decision, and 16 bytes more
    /// per key (BENCHMARKS.md): off by default here, on in
    /// [`MemoryStore`](super::MemoryStore), whose status reports them.
    pub fn with_counters(mut self) -> Self {
        self.counting = true;
        self
    }

    /// Decides a check of `cost` units for `key` now.
    #[inline(always)]
    pub fn check<Q>(&self, key: &Q, cost: u64) -> Result<Decision>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.decide(key, Request::check(cost))
    }

    /// Checks `cost` units for `key` now, as [`check`](Self::check) does,
    /// answering only the [`Verdict`]: the figures a [`Decision`] adds are
    /// then never computed (the cheapest check; governor's `check_key` gives
    /// the same answer).
    #[inline(always)]
    pub fn verdict<Q>(&self, key: &Q, cost: u64) -> Result<Verdict>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.answer(key, Request::check(cost))
    }

    /// Decides `req` for `key` now.
    #[inline(always)]
    pub fn decide<Q>(&self, key: &Q, req: Request) -> Result<Decision>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.answer(key, req)
    }

    /// Decides `req` for `key` now, answering `A` (a decision or a verdict).
    #[inline(always)]
    fn answer<Q, A: Answer>(&self, key: &Q, req: Request) -> Result<A>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.clock.now();
        // The common case, kept small so it inlines: a known key, settled.
        if let Some(slot) = self.keys.get(key) {
            if let Some(answer) = slot.decide_fast(now, req) {
                return Ok(answer);
            }
            if let Step::Done(decision) = slot.decide(now, req) {
                return Ok(A::from_decision(decision));
            }
        }
        self.decide_slow(key, now, req).map(A::from_decision)
    }

    /// A new key, or one that must be settled first (see `Step::Settle`).
    #[cold]
    #[inline(never)]
    fn decide_slow<Q>(&self, key: &Q, now: Nanos, req: Request) -> Result<Decision>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        loop {
            let step = match self.keys.entry(key.to_owned()) {
                dashmap::Entry::Occupied(mut e) => match e.get().decide(now, req) {
                    Step::Settle { grow } => {
                        e.get_mut().settle(grow);
                        e.get().decide(now, req)
                    }
                    done => done,
                },
                dashmap::Entry::Vacant(e) => {
                    self.budget.take()?;
                    e.insert(Slot::new(self.epoch.load_full(), self.counting))
                        .decide(now, req)
                }
            };
            // Settled, a key can still need a second pass: a reconfiguration
            // in between, or a word that must grow after all.
            if let Step::Done(decision) = step {
                return Ok(decision);
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
        let (epoch, state, counters) = match self.keys.get(key) {
            Some(slot) => slot.view(),
            None => (
                self.epoch.load_full(),
                State::default(),
                Counters::default(),
            ),
        };
        KeyStatus {
            level: core::level(&epoch.policy, &state, now),
            policy: epoch.policy.clone(),
            counters,
        }
    }

    /// The current policy.
    pub fn policy(&self) -> Policy {
        self.epoch.load().policy.clone()
    }

    /// Replaces the policy. Without `reset` every key's water and window
    /// logs carry over; with it every key starts empty (counters too).
    ///
    /// Takes constant time and never waits for decisions, nor they for it:
    /// the new policy is chained after the current one, and each key is
    /// carried over to it by its own next decision (or by the next
    /// [`sweep`](Self::sweep)), which sees its epoch has a successor.
    pub fn reconfigure(&self, policy: Policy, reset: bool) {
        let _one_at_a_time = self.reconfiguring.lock();
        let now = self.clock.now();
        let next = self.epoch.load().follow(policy, now, reset);
        self.epoch.store(next);
    }

    /// Forgets keys that are idle now (bucket empty, windows clear): they
    /// hold no memory afterwards. Carries every other key over to the
    /// current policy, so old policies are freed. Returns how many keys
    /// were removed.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now();
        let before = self.keys.len();
        self.keys.retain(|_, slot| {
            slot.settle(false);
            !slot.is_idle(now)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Limit, ManualClock, Rate};

    fn police(per_second: u64) -> Policy {
        Policy::police(Limit::new(Rate::per_second(per_second).unwrap(), 10).unwrap())
    }

    #[test]
    fn a_word_key_is_three_words() {
        // A map entry's size is what deciding over many keys pays for most
        // (BENCHMARKS.md): keep `Slot` at 24 bytes on 64-bit targets.
        assert!(size_of::<Slot>() <= 3 * size_of::<usize>());
    }

    #[test]
    fn old_policies_are_freed_once_no_key_needs_them() {
        let clock = ManualClock::new(0);
        let bucket = KeyedBucket::new(police(10), clock.clone());
        bucket.check(&1u64, 5).unwrap();
        bucket.check(&2u64, 5).unwrap();
        let first = Arc::downgrade(&bucket.epoch.load_full());
        for i in 0..100 {
            bucket.reconfigure(police(11 + i), false);
        }
        assert!(first.upgrade().is_some(), "keys 1 and 2 still need it");
        // Key 1 moves on by deciding, key 2 by a sweep.
        bucket.check(&1u64, 1).unwrap();
        assert!(first.upgrade().is_some(), "key 2 still needs it");
        assert_eq!(bucket.sweep(), 0);
        assert!(first.upgrade().is_none(), "no key needs it now");
    }
}
