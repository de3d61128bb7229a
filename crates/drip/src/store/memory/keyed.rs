//! [`KeyedBucket`]: one policy over many keys, in memory.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;

use super::KeyBudget;
use super::cell::{Cell, Counted, Counting, NoCounts};
use super::config::Config;
use super::shards::{FindIn, Shard, Shards};
use crate::Result;
use crate::clock::{Clock, MonotonicClock};
use crate::core::{self, Answer, Decision, Level, Nanos, Policy, Request, State, Verdict};
use crate::store::busiest::Top;
use crate::store::{Counters, Entry, KeyStatus};

/// One policy applied to many keys of type `K`, in memory.
///
/// Use it directly for the fastest in-process limiting (`K` may be any
/// hashable key, e.g. `u64` or `String`); [`MemoryStore`](super::MemoryStore)
/// keeps one per named bucket. `N` is what each key counts: nothing
/// ([`NoCounts`], the default) or its allowed and rejected requests
/// ([`Counted`], see [`with_counters`](Self::with_counters)).
pub struct KeyedBucket<K: Hash + Eq, C: Clock = MonotonicClock, N: Counting = NoCounts> {
    /// The keys, in shards that each also hold the policy (`shards.rs`): a
    /// decision locks its key's shard, shared, and nothing else.
    pub(super) shards: Shards<K, N>,
    clock: C,
    pub(super) budget: Arc<KeyBudget>,
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

    /// Counts each key's allowed and rejected requests, for
    /// [`status`](Self::status) (which otherwise reports zero counters).
    /// It costs one more atomic operation per decision and 24 bytes per
    /// key: off by default here, on in [`MemoryStore`](super::MemoryStore),
    /// whose status reports them. Keys already held count from zero.
    pub fn with_counters(mut self) -> KeyedBucket<K, C, Counted> {
        // `self` is dropped after this (giving back the keys it holds then:
        // none), so its keys are taken out first.
        let empty = Shards::new(Config::new(self.policy(), self.clock.now()));
        let shards = std::mem::replace(&mut self.shards, empty);
        KeyedBucket {
            shards: shards.recount(),
            clock: self.clock.clone(),
            budget: self.budget.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone, C: Clock, N: Counting> KeyedBucket<K, C, N> {
    pub(super) fn with_budget(policy: Policy, clock: C, budget: Arc<KeyBudget>) -> Self {
        KeyedBucket {
            shards: Shards::new(Config::new(policy, clock.now())),
            clock,
            budget,
        }
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
        self.answer_as(key, req, None)
    }

    /// [`answer`](Self::answer), listing an admitted request as `id` when
    /// the policy tracks its queue (tracked keys always take the slow path,
    /// under the write lock).
    #[inline(always)]
    fn answer_as<Q, A: Answer>(&self, key: &Q, req: Request, id: Option<&str>) -> Result<A>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.clock.now();
        let hash = self.shards.hash(key);
        {
            // The common case: a known key, decided under its shard's read
            // lock, with the policy that shard holds.
            let shard = self.shards.read(hash);
            if let Some(cell) = shard.find(hash, key)
                && let Some(answer) = cell.decide(&shard.config, &shard.spills, now, req)
            {
                return Ok(answer);
            }
        }
        self.decide_slow(key, hash, now, req, id)
    }

    /// Decides `req` for `key` now as [`decide`](Self::decide) does and,
    /// when the policy tracks its queue, lists the admitted request as `id`
    /// in the same step (under the key's shard's write lock).
    pub fn decide_tracked<Q>(&self, key: &Q, req: Request, id: &str) -> Result<Decision>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.answer_as(key, req, Some(id))
    }

    /// The listed requests of `key` still queued now, in departure order.
    pub(crate) fn queued<Q>(&self, key: &Q) -> (Nanos, Vec<Entry>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.clock.now();
        let hash = self.shards.hash(key);
        let shard = self.shards.read(hash);
        let queued = shard
            .find(hash, key)
            .map_or_else(Vec::new, |cell| cell.queued(&shard.spills, now));
        (now, queued)
    }

    /// Takes the listed request `id` of `key` off the list, giving its
    /// place back when exact ([`Store::cancel`](crate::Store::cancel)).
    pub(crate) fn cancel<Q>(&self, key: &Q, id: &str) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.clock.now();
        let hash = self.shards.hash(key);
        let mut guard = self.shards.write(hash);
        let Shard {
            config,
            keys,
            spills,
        } = &mut *guard;
        keys.find_mut(hash, |(k, _)| k.borrow() == key)
            .is_some_and(|(_, cell)| cell.cancel(config, spills, now, id))
    }

    /// A new key, a key the word cannot decide, or a bucket to rebase.
    #[cold]
    #[inline(never)]
    fn decide_slow<Q, A: Answer>(
        &self,
        key: &Q,
        hash: u64,
        now: Nanos,
        req: Request,
        id: Option<&str>,
    ) -> Result<A>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut guard = self.shards.write(hash);
        if guard.config.needs_rebase(now) {
            // Every shard holds the same config: rebase them all, alone.
            drop(guard);
            self.rebase(now);
            guard = self.shards.write(hash);
        }
        let Shard {
            config,
            keys,
            spills,
        } = &mut *guard;
        let config: &Config = config;
        // One probe finds the key or the place for it.
        let cell = self.shards.find_or_insert(keys, hash, key, || {
            self.budget.take()?;
            Ok::<_, crate::Error>(Cell::new(config, spills))
        })?;
        if config.track {
            let d = cell.decide_tracked(config, spills, now, req, id.unwrap_or(""));
            return Ok(A::from_decision(d));
        }
        if let Some(answer) = cell.decide_alone(config, spills, now, req) {
            return Ok(answer);
        }
        // The word cannot hold what this decision needs: the whole state
        // can, and it decides exactly as the core does.
        cell.spill(config, spills);
        Ok(cell
            .decide_alone(config, spills, now, req)
            .expect("a key holding its whole state always decides"))
    }

    /// Level and counters of `key` now.
    pub fn status<Q>(&self, key: &Q) -> KeyStatus
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.clock.now();
        let hash = self.shards.hash(key);
        let shard = self.shards.read(hash);
        let (state, counters) = shard.find(hash, key).map_or_else(
            || (State::default(), Counters::default()),
            |cell| (cell.state(&shard.config, &shard.spills), cell.counters()),
        );
        KeyStatus {
            level: core::level(&shard.config.policy, &state, now),
            policy: shard.config.policy.clone(),
            counters,
        }
    }

    /// The `n` keys holding the most water now, fullest first, with their
    /// level and counters; keys whose bucket is empty are left out. Walks
    /// every key, one shard at a time under its read lock, so decisions go
    /// on meanwhile (only a new key of the shard being read waits for it).
    pub fn busiest(&self, n: usize) -> Vec<(K, Level, Counters)> {
        let now = self.clock.now();
        let mut top = Top::new(n);
        self.shards.each_shared(|shard| {
            let (config, spills) = (&shard.config, &shard.spills);
            let empty_below = config.policy.limit().rate().ticks(now);
            for (key, cell) in shard.keys.iter() {
                let tat = cell.tat(config, spills);
                if tat > empty_below {
                    top.offer(tat, || {
                        let level = core::level(&config.policy, &cell.state(config, spills), now);
                        (key.clone(), level, cell.counters())
                    });
                }
            }
        });
        top.into_sorted()
    }

    /// The current policy.
    pub fn policy(&self) -> Policy {
        self.shards.config().policy.clone()
    }

    /// Replaces the policy. Without `reset` every key's water and window
    /// logs carry over ([`core::carry_over`]); with it every key is
    /// forgotten (counters too). Holds every shard while it carries every
    /// key over: decisions wait for it, it takes time in proportion to the
    /// keys held.
    pub fn reconfigure(&self, policy: Policy, reset: bool) {
        let mut all = self.shards.write_all();
        let now = self.clock.now();
        let new = Arc::new(Config::new(policy, now));
        for shard in all.iter_mut() {
            let Shard {
                config,
                keys,
                spills,
            } = &mut **shard;
            if reset {
                self.budget.give_back(keys.len());
                keys.clear();
                spills.clear();
            } else {
                for (_, cell) in keys.iter_mut() {
                    let mut state = cell.state(config, spills);
                    core::carry_over(&config.policy, &new.policy, &mut state, now);
                    cell.store(&new, spills, state);
                }
            }
            *config = new.clone();
        }
    }

    /// Moves the base near `now` (unless another caller did already), so
    /// word states stay within 64 bits; every word key is carried over to
    /// the new base, while no decision runs.
    #[cold]
    pub(super) fn rebase(&self, now: Nanos) {
        let mut all = self.shards.write_all();
        if !all[0].config.needs_rebase(now) {
            return;
        }
        let new = Arc::new(Config::new(all[0].config.policy.clone(), now));
        for shard in all.iter_mut() {
            let Shard {
                config,
                keys,
                spills,
            } = &mut **shard;
            for (_, cell) in keys.iter_mut() {
                let state = cell.state(config, spills);
                cell.store(&new, spills, state);
            }
            *config = new.clone();
        }
    }

    /// Forgets keys that are idle now (bucket empty, windows clear, and the
    /// policy's counter retention passed when the bucket counts).
    /// Returns how many keys were removed.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now();
        let mut removed = 0;
        self.shards.each_alone(|shard, hasher| {
            let Shard {
                config,
                keys,
                spills,
            } = shard;
            let before = keys.len();
            keys.retain(|(_, cell)| {
                let idle = cell.is_idle(config, spills, now);
                if idle {
                    cell.release(spills);
                }
                !idle
            });
            removed += before - keys.len();
            // Give the freed entries' memory back, not just keep it.
            keys.shrink_to_fit(|(k, _)| hasher.hash(k));
            spills.shrink_to_fit();
        });
        self.budget.give_back(removed);
        removed
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq, C: Clock, N: Counting> Drop for KeyedBucket<K, C, N> {
    fn drop(&mut self) {
        self.budget.give_back(self.shards.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limit, ManualClock, Rate};

    #[test]
    fn a_key_is_one_word() {
        // Entry size is what deciding over many keys pays for most: a
        // `u64` key's entry is governor's size.
        assert_eq!(size_of::<Cell<NoCounts>>(), 8);
        assert_eq!(size_of::<(u64, Cell<NoCounts>)>(), 16);
        // Counted: the counters inline, no allocation of their own.
        assert_eq!(size_of::<Cell<Counted>>(), 32);
    }

    /// Places held in the shards' side tables of whole states.
    fn spilled<K: Hash + Eq, C: Clock, N: Counting>(bucket: &KeyedBucket<K, C, N>) -> usize {
        let mut n = 0;
        bucket.shards.each_shared(|shard| n += shard.spills.len());
        n
    }

    #[test]
    fn spilled_keys_give_their_place_back_when_swept_reset_or_made_words() {
        use std::time::Duration;
        let limit = Limit::new(Rate::per_second(10).unwrap(), 10).unwrap();
        let window = crate::Window::new(100, Duration::from_secs(60)).unwrap();
        let windowed = Policy::police(limit).with_window(window).unwrap();
        let clock = ManualClock::new(1 << 40);
        let bucket = KeyedBucket::new(windowed.clone(), clock.clone()).with_counters();
        for k in 0..50u64 {
            assert!(bucket.check(&k, 1).unwrap().allowed());
        }
        // A window keeps every key whole.
        assert_eq!(spilled(&bucket), 50);
        // Drained, the window passed: swept, and their places with them.
        clock.advance(Duration::from_secs(61));
        assert_eq!(bucket.sweep(), 50);
        assert_eq!(spilled(&bucket), 0);
        for k in 0..20u64 {
            bucket.check(&k, 1).unwrap();
        }
        assert_eq!(spilled(&bucket), 20);
        // Without the window every key fits its word again.
        bucket.reconfigure(Policy::police(limit), false);
        assert_eq!(spilled(&bucket), 0);
        assert_eq!(bucket.len(), 20);
        bucket.reconfigure(windowed, false);
        assert_eq!(spilled(&bucket), 20);
        bucket.reconfigure(Policy::police(limit), true);
        assert_eq!((spilled(&bucket), bucket.len()), (0, 0));
    }

    #[test]
    fn a_tat_reaching_the_top_bit_spills_and_decides_as_the_core() {
        // 3 per 2 s (3 ticks a ns, 2e9 a unit), u32::MAX of capacity (91
        // years to drain): a full bucket is 8.6e18 ticks, so near the end
        // of the base's range (2^62 ticks) a `tat` passes 2^63, the bit
        // that marks a spilled key; the key must spill, not write it.
        let rate = Rate::new(3, std::time::Duration::from_secs(2)).unwrap();
        let policy = Policy::police(Limit::new(rate, u64::from(u32::MAX)).unwrap());
        let clock = ManualClock::new(1 << 40);
        let bucket = KeyedBucket::new(policy.clone(), clock.clone());
        let now = bucket.shards.config().base + (1 << 62) / 3 - 1_000_000;
        clock.set(now);
        let mut state = State::default();
        for cost in [1 << 31, 1 << 30, 1, 5, 1 << 30] {
            let req = Request::check(cost);
            let want = core::decide(&policy, &mut state, now, req);
            assert_eq!(bucket.decide(&7u64, req).unwrap(), want, "cost {cost}");
        }
        assert!(state.tat > 1 << 63, "the test must pass the top bit");
        // A new key's first decision (made alone) passing it at once.
        let (mut fresh, req) = (State::default(), Request::check(u32::MAX.into()));
        let want = core::decide(&policy, &mut fresh, now, req);
        assert_eq!(bucket.decide(&8u64, req).unwrap(), want);
        assert!(fresh.tat > 1 << 63);
        for (key, state) in [(7u64, &mut state), (8, &mut fresh)] {
            let req = Request::check(1);
            let want = core::decide(&policy, state, now, req);
            assert_eq!(bucket.decide(&key, req).unwrap(), want, "key {key}");
            let hash = bucket.shards.hash(&key);
            let shard = bucket.shards.read(hash);
            assert!(!shard.find(hash, &key).unwrap().is_word(), "key {key}");
        }
    }

    #[test]
    fn keys_stay_words_across_rebases_and_decide_as_the_core() {
        // 1 GiB/s of bytes (2^21 ticks per ns): a rebase every ~2200 s of
        // clock; 400 steps of 7.3 s or more: several rebases.
        let rate = Rate::per_second(1 << 30).unwrap();
        let policy = Policy::police(Limit::new(rate, 1 << 20).unwrap());
        let clock = ManualClock::new(3 << 40);
        let bucket = KeyedBucket::new(policy.clone(), clock.clone());
        let first_base = bucket.shards.config().base;
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
            bucket.shards.config().base > first_base,
            "the test must rebase"
        );
        let hash = bucket.shards.hash(&9u64);
        let shard = bucket.shards.read(hash);
        assert!(
            shard.find(hash, &9u64).unwrap().is_word(),
            "the key must still be a word"
        );
    }
}
