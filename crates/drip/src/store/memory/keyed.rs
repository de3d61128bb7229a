//! [`KeyedBucket`]: one policy over many keys, in memory.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use parking_lot::{RwLock, RwLockReadGuard};

use super::KeyBudget;
use super::cell::Cell;
use super::config::Config;
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
    /// The policy: shared by decisions, held alone by a reconfiguration or
    /// a rebase, which carry every key over while no decision runs.
    /// (Lock order: this, then a shard of `keys`.)
    config: RwLock<Config>,
    keys: DashMap<K, Cell>,
    clock: C,
    budget: Arc<KeyBudget>,
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
            config: RwLock::new(Config::new(policy, clock.now())),
            keys: DashMap::new(),
            clock,
            budget,
            counting: false,
        }
    }

    /// Counts each key's allowed and rejected requests, for
    /// [`status`](Self::status) (which otherwise reports zero counters).
    /// It costs one more atomic operation per decision, and a small box per
    /// key: off by default here, on in [`MemoryStore`](super::MemoryStore),
    /// whose status reports them.
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
        self.answer(key, Request::check(cost))
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
        let config = self.config.read();
        // The common case: a known key, decided under the shard's read lock.
        if let Some(cell) = self.keys.get(key)
            && let Some(answer) = cell.decide(&config, now, req)
        {
            return Ok(answer);
        }
        self.decide_slow(config, key, now, req)
    }

    /// A new key, a key the word cannot decide, or a bucket to rebase.
    #[cold]
    #[inline(never)]
    fn decide_slow<'a, Q, A: Answer>(
        &'a self,
        mut config: RwLockReadGuard<'a, Config>,
        key: &Q,
        now: Nanos,
        req: Request,
    ) -> Result<A>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if config.needs_rebase(now) {
            drop(config);
            self.rebase(now);
            config = self.config.read();
        }
        let mut cell = match self.keys.entry(key.to_owned()) {
            Entry::Occupied(e) => e.into_ref(),
            Entry::Vacant(e) => {
                self.budget.take()?;
                e.insert(Cell::new(&config, self.counting))
            }
        };
        if let Some(answer) = cell.decide(&config, now, req) {
            return Ok(answer);
        }
        // The word cannot hold what this decision needs: the whole state
        // can, and it decides exactly as the core does.
        cell.spill(&config);
        Ok(cell
            .decide(&config, now, req)
            .expect("a key holding its whole state always decides"))
    }

    /// Level and counters of `key` now.
    pub fn status<Q>(&self, key: &Q) -> KeyStatus
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.clock.now();
        let config = self.config.read();
        let (state, counters) = self.keys.get(key).map_or_else(
            || (State::default(), Counters::default()),
            |cell| (cell.state(&config), cell.counters()),
        );
        KeyStatus {
            level: core::level(&config.policy, &state, now),
            policy: config.policy.clone(),
            counters,
        }
    }

    /// The current policy.
    pub fn policy(&self) -> Policy {
        self.config.read().policy.clone()
    }

    /// Replaces the policy. Without `reset` every key's water and window
    /// logs carry over ([`core::carry_over`]); with it every key is
    /// forgotten (counters too). Holds the policy alone while it carries
    /// every key over: decisions wait for it, it takes time in proportion
    /// to the keys held.
    pub fn reconfigure(&self, policy: Policy, reset: bool) {
        let now = self.clock.now();
        let mut config = self.config.write();
        let new = Config::new(policy, now);
        if reset {
            let n = self.keys.len();
            self.keys.clear();
            self.budget.give_back(n);
        } else {
            self.keys.iter_mut().for_each(|mut cell| {
                let mut state = cell.state(&config);
                core::carry_over(&config.policy, &new.policy, &mut state, now);
                cell.store(&new, state);
            });
        }
        *config = new;
    }

    /// Moves the base near `now` (unless another caller did already), so
    /// word states stay within 64 bits; every word key is carried over to
    /// the new base, while no decision runs.
    #[cold]
    fn rebase(&self, now: Nanos) {
        let mut config = self.config.write();
        if !config.needs_rebase(now) {
            return;
        }
        let new = Config::new(config.policy.clone(), now);
        self.keys.iter_mut().for_each(|mut cell| {
            let state = cell.state(&config);
            cell.store(&new, state);
        });
        *config = new;
    }

    /// Forgets keys that are idle now (bucket empty, windows clear, and the
    /// policy's counter retention passed when the bucket counts).
    /// Returns how many keys were removed.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now();
        let config = self.config.read();
        let before = self.keys.len();
        self.keys.retain(|_, cell| !cell.is_idle(&config, now));
        self.keys.shrink_to_fit();
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
}

impl<K: Hash + Eq, C: Clock> Drop for KeyedBucket<K, C> {
    fn drop(&mut self) {
        self.budget.give_back(self.keys.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limit, ManualClock, Rate};

    #[test]
    fn keys_stay_words_across_rebases_and_decide_as_the_core() {
        // 1 GiB/s of bytes (2^21 ticks per ns): a rebase every ~2200 s of
        // clock; 400 steps of 7.3 s or more: several rebases.
        let rate = Rate::per_second(1 << 30).unwrap();
        let policy = Policy::police(Limit::new(rate, 1 << 20).unwrap());
        let clock = ManualClock::new(3 << 40);
        let bucket = KeyedBucket::new(policy.clone(), clock.clone());
        let first_base = bucket.config.read().base;
        let mut state = State::default();
        for i in 0..400u64 {
            let now = (3 << 40) + i * 37_300_000_000 + i % 3;
            clock.set(now);
            let req = Request::check(1 + (i * 7919) % (3 << 20));
            let got = bucket.decide(&9u64, req).unwrap();
            assert_eq!(got, core::decide(&policy, &mut state, now, req), "step {i}");
            for _ in 0..3 {
                let r = Request::check(1 << 18);
                assert_eq!(
                    bucket.decide(&9u64, r).unwrap(),
                    core::decide(&policy, &mut state, now, r)
                );
            }
        }
        assert!(
            bucket.config.read().base > first_base,
            "the test must rebase"
        );
        assert!(
            bucket.keys.get(&9u64).unwrap().is_word(),
            "the key must still be a word"
        );
    }
}
