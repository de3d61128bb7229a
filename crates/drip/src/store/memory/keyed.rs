//! [`KeyedBucket`]: one policy over many keys, in memory.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;

use super::KeyBudget;
use super::cell::{Slot, Step};
use super::epoch::{Epochs, PASS_EVERY};
use super::map::{Entry, KeyHash, KeyMap};
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
    epochs: Epochs,
    keys: KeyMap<K, Slot>,
    clock: C,
    budget: Arc<KeyBudget>,
    /// Serialises changes of epoch (reconfigurations and rebases), so each
    /// follows the one before (decisions never take it).
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
            epochs: Epochs::new(policy, clock.now()),
            keys: KeyMap::new(),
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
        let hash = self.keys.key_hash(key);
        // The common case, kept small so it inlines: a known key, settled.
        let known = self.keys.read_hashed(
            hash,
            key,
            #[inline(always)]
            |slot| {
                if let Some(answer) = slot.decide_fast(&self.epochs, now, req) {
                    return Some(answer);
                }
                match slot.decide(&self.epochs, now, req) {
                    Step::Done(decision) => Some(A::from_decision(decision)),
                    _ => None,
                }
            },
        );
        match known {
            Some(Some(answer)) => Ok(answer),
            _ => self.decide_slow(key, hash, now, req).map(A::from_decision),
        }
    }

    /// A new key, or one that must be settled first (see `Step`).
    #[cold]
    #[inline(never)]
    fn decide_slow<Q>(&self, key: &Q, hash: KeyHash, now: Nanos, req: Request) -> Result<Decision>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        loop {
            let epochs = &self.epochs;
            let step = self.keys.write_hashed(hash, key, |entry| match entry {
                Entry::Occupied(slot) => match slot.decide(epochs, now, req) {
                    Step::Settle { grow } => {
                        slot.settle(epochs, grow);
                        Ok::<_, crate::Error>(slot.decide(epochs, now, req))
                    }
                    other => Ok(other),
                },
                Entry::Vacant(e) => {
                    self.budget.take()?;
                    let slot = e.insert(key.to_owned(), Slot::new(epochs, self.counting));
                    // A new key's first decision, on the fast path as any other.
                    match slot.decide_fast::<Decision>(epochs, now, req) {
                        Some(decision) => Ok(Step::Done(decision)),
                        None => Ok(slot.decide(epochs, now, req)),
                    }
                }
            })?;
            // The entry is released by now: a rebase may pass over every key.
            // Settled, a key can still need a second round: a change of
            // epoch in between, or a word that must grow after all.
            match step {
                Step::Done(decision) => return Ok(decision),
                Step::Rebase => self.rebase(now),
                Step::Settle { .. } => {}
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
        let (epoch, state, counters) = self
            .keys
            .read(key, |slot| slot.view(&self.epochs))
            .unwrap_or_else(|| (self.epochs.current(), State::default(), Counters::default()));
        KeyStatus {
            level: core::level(&epoch.policy, &state, now),
            policy: epoch.policy.clone(),
            counters,
        }
    }

    /// The current policy.
    pub fn policy(&self) -> Policy {
        self.epochs.current().policy.clone()
    }

    /// Replaces the policy. Without `reset` every key's water and window
    /// logs carry over; with it every key starts empty (counters too).
    ///
    /// Never waits for decisions, nor they for it: the new policy is
    /// chained after the current one, and each key is carried over to it by
    /// its own next decision (or by the next [`sweep`](Self::sweep)), which
    /// sees its epoch has a successor. Every 64th change of epoch also
    /// carries every inline key over at once, under shared locks (see
    /// `epoch.rs`).
    pub fn reconfigure(&self, policy: Policy, reset: bool) {
        let _one_at_a_time = self.reconfiguring.lock();
        let now = self.clock.now();
        self.push_epoch(policy, now, reset);
    }

    /// Appends an epoch with the same policy and a base near `now`, unless
    /// another caller did already: word states stay small.
    #[cold]
    fn rebase(&self, now: Nanos) {
        let _one_at_a_time = self.reconfiguring.lock();
        let current = self.epochs.current();
        if current.is_current() && current.needs_rebase(now) {
            self.push_epoch(current.policy.clone(), now, false);
        }
    }

    /// Makes `policy` current from `at` on. The caller holds
    /// `reconfiguring`.
    fn push_epoch(&self, policy: Policy, at: Nanos, reset: bool) {
        let current = self.epochs.current();
        if (current.id + 1) % PASS_EVERY == 0 {
            // The new epoch's tag was last borne 128 epochs ago: carry every
            // inline key over now, so none still bears it (nor will, 64
            // epochs on). Under shared locks only, so decisions go on and
            // the pass is never starved by them.
            self.keys.for_each(|slot| slot.carry_inline(&self.epochs));
        }
        self.epochs.push(current.successor(policy, at, reset));
    }

    /// Forgets keys that are idle now (bucket empty, windows clear): they
    /// hold no memory afterwards. Carries every other key over to the
    /// current policy, so old policies are freed. Returns how many keys
    /// were removed.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now();
        // The map gives the freed entries' memory back, not just keeps it
        // for reuse.
        let removed = self.keys.retain(|slot| {
            slot.settle(&self.epochs, false);
            !slot.is_idle(&self.epochs, now)
        });
        self.budget.give_back(removed);
        removed
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.len() == 0
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
    fn a_key_is_one_word() {
        // A map entry's size is what deciding over many keys pays for most
        // (BENCHMARKS.md): keep `Slot` at 8 bytes, an entry of a `u64` key
        // at 16 as in governor.
        assert_eq!(size_of::<Slot>(), 8);
        assert_eq!(size_of::<(u64, Slot)>(), 16);
    }

    #[test]
    fn old_policies_are_freed_once_no_key_needs_them() {
        let clock = ManualClock::new(0);
        // Counted keys are boxed and hold their epoch.
        let bucket = KeyedBucket::new(police(10), clock.clone()).with_counters();
        bucket.check(&1u64, 5).unwrap();
        bucket.check(&2u64, 5).unwrap();
        let first = Arc::downgrade(&bucket.epochs.current());
        for i in 0..40 {
            bucket.reconfigure(police(11 + i), false);
        }
        assert!(first.upgrade().is_some(), "keys 1 and 2 still need it");
        // Key 1 moves on by deciding, key 2 by a sweep; the ring of the
        // last 128 epochs still holds the first until 128 more follow.
        bucket.check(&1u64, 1).unwrap();
        assert_eq!(bucket.sweep(), 0);
        for i in 0..100 {
            bucket.reconfigure(police(11 + i), false);
        }
        assert!(first.upgrade().is_none(), "no key needs it now");
        assert_eq!(bucket.status(&2u64).counters.allowed, 1);
    }

    #[test]
    fn inline_keys_stay_inline_across_rebases_and_decide_as_the_core() {
        // 1 GiB/s of bytes (2^21 ticks per ns): a rebase every ~13 s of
        // clock; 400 steps of 7.3 s: a rebase every second step, three passes.
        let rate = Rate::per_second(1 << 30).unwrap();
        let policy = Policy::police(Limit::new(rate, 1 << 20).unwrap());
        let clock = ManualClock::new(3 << 40);
        let bucket = KeyedBucket::new(policy.clone(), clock.clone());
        let mut state = State::default();
        for i in 0..400u64 {
            let now = (3 << 40) + i * 7_300_000_000 + i % 3;
            clock.set(now);
            let req = Request::check(1 + (i * 7919) % (3 << 20));
            let got = bucket.decide(&9u64, req).unwrap();
            assert_eq!(got, core::decide(&policy, &mut state, now, req), "step {i}");
            // Between decisions a burst that fills the bucket, on the fast path.
            for _ in 0..3 {
                let r = Request::check(1 << 18);
                assert_eq!(
                    bucket.decide(&9u64, r).unwrap(),
                    core::decide(&policy, &mut state, now, r)
                );
            }
        }
        assert!(bucket.epochs.current().id > 150, "the test must rebase");
        let tag = bucket.keys.read(&9u64, Slot::inline_tag).unwrap();
        assert_eq!(tag, Some(bucket.epochs.current().tag()));
    }
}
