//! Policy epochs. A bucket's policy changes by appending a new epoch to a
//! chain; each key holds the epoch its state was written in, so a decision
//! reads its policy through the key itself, with no lock or reference count
//! on the policy. A key whose epoch has a successor is carried over, change
//! by change, when next touched (or swept).
//!
//! An epoch stays alive while a key written in it (or in an earlier one)
//! does, so a key untouched across many changes keeps those changes alive
//! until its next decision or the next sweep.

use std::sync::{Arc, OnceLock};

use crate::core::{self, Nanos, Policy, State, WordPolicy};
use crate::store::Counters;

/// One policy of a bucket, from `at` until its successor's `at`.
pub(super) struct Epoch {
    pub(super) policy: Policy,
    /// The policy precomputed for the 64-bit path, when it allows one.
    pub(super) word: Option<WordPolicy>,
    /// When this policy took effect: where state is carried over to it.
    at: Nanos,
    /// State written before this epoch is dropped (counters too).
    reset: bool,
    /// The epoch that replaced this one; set once, by the reconfiguration.
    /// Its absence is what makes an epoch current.
    next: OnceLock<Arc<Epoch>>,
}

impl Epoch {
    pub(super) fn first(policy: Policy) -> Arc<Epoch> {
        Arc::new(Epoch::new(policy, 0, false))
    }

    fn new(policy: Policy, at: Nanos, reset: bool) -> Epoch {
        Epoch {
            word: WordPolicy::new(&policy),
            policy,
            at,
            reset,
            next: OnceLock::new(),
        }
    }

    /// True while no later policy exists.
    #[inline]
    pub(super) fn is_current(&self) -> bool {
        self.next.get().is_none()
    }

    /// Installs `policy` from `at` on as the successor of the latest epoch
    /// (this one, when the caller holds the current epoch and reconfigures
    /// one at a time) and returns it.
    pub(super) fn follow(&self, policy: Policy, at: Nanos, reset: bool) -> Arc<Epoch> {
        let next = Arc::new(Epoch::new(policy, at, reset));
        let mut tail = self;
        loop {
            match tail.next.get() {
                Some(later) => tail = later,
                None if tail.next.set(next.clone()).is_ok() => return next,
                None => {}
            }
        }
    }

    /// `state` and `counters`, written in `from`, carried over change by
    /// change to the latest epoch, which is returned with them. A reset on
    /// the way empties both.
    pub(super) fn carry(
        from: &Arc<Epoch>,
        mut state: State,
        mut counters: Counters,
    ) -> (Arc<Epoch>, State, Counters) {
        let mut at = from;
        while let Some(next) = at.next.get() {
            if next.reset {
                state = State::default();
                counters = Counters::default();
            } else {
                core::carry_over(&at.policy, &next.policy, &mut state, next.at);
            }
            at = next;
        }
        (at.clone(), state, counters)
    }
}

impl Drop for Epoch {
    // A long chain of unused epochs would otherwise be dropped by recursion.
    fn drop(&mut self) {
        let mut next = self.next.take();
        while let Some(e) = next {
            next = match Arc::try_unwrap(e) {
                Ok(mut e) => e.next.take(),
                Err(_) => None,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limit, Rate};

    fn police(per_second: u64) -> Policy {
        Policy::police(Limit::new(Rate::per_second(per_second).unwrap(), 10).unwrap())
    }

    #[test]
    fn carry_replays_every_change_and_drops_across_a_reset() {
        let e0 = Epoch::first(police(10));
        // 5 units at t=0 under 10/s; at 100 ms, 4 remain: 1/s from then on.
        let e1 = e0.follow(police(1), 100_000_000, false);
        let e2 = e1.follow(police(2), 1_100_000_000, false);
        assert!(!e0.is_current() && !e1.is_current() && e2.is_current());
        let state = State {
            tat: 500_000_000,
            windows: Vec::new(),
        };
        let counters = Counters {
            allowed: 5,
            rejected: 1,
        };
        // At 1.1 s 3 units remain; at 2/s they are gone by 2.6 s.
        let (to, carried, kept) = Epoch::carry(&e0, state.clone(), counters);
        assert!(Arc::ptr_eq(&to, &e2));
        assert_eq!((carried.tat, kept), (2_600_000_000, counters));
        // Following a stale epoch appends to the latest.
        let e3 = e0.follow(police(2), 2_000_000_000, true);
        assert!(Arc::ptr_eq(e2.next.get().unwrap(), &e3));
        let (to, carried, kept) = Epoch::carry(&e1, state, counters);
        assert!(Arc::ptr_eq(&to, &e3));
        assert_eq!((carried, kept), Default::default());
    }

    #[test]
    fn a_long_chain_drops_without_recursion() {
        let first = Epoch::first(police(1));
        let mut last = first.clone();
        for i in 0..200_000 {
            last = last.follow(police(1 + i % 7), i, false);
        }
        drop(last);
        drop(first);
    }
}
