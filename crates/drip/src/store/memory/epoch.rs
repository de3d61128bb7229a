//! Policy epochs. A bucket's policy changes by installing a new epoch; each
//! key remembers the epoch its state was written in, and is carried over to
//! the current one when next touched (or by the reconfiguration's own pass
//! over the keys). So decisions never take a lock on the policy.

use std::sync::Arc;

use crate::core::{self, Nanos, Policy, State};

/// How many past changes an epoch remembers. A key untouched across more
/// changes than this (and missed by the reconfigurations' passes over the
/// keys, which only a key busy at that very moment can be) starts empty.
const HISTORY: usize = 64;

/// One change of policy.
struct Change {
    id: u32,
    policy: Policy,
    /// When the change was made: where the carry-over happens.
    at: Nanos,
}

/// The current policy and the changes that led to it.
pub(super) struct Epoch {
    pub(super) id: u32,
    pub(super) policy: Policy,
    /// Oldest first; the last is this epoch. A reset starts a new history,
    /// so state written before it is dropped.
    history: Vec<Arc<Change>>,
}

impl Epoch {
    pub(super) fn first(policy: Policy) -> Epoch {
        Epoch {
            id: 0,
            history: vec![Arc::new(Change {
                id: 0,
                policy: policy.clone(),
                at: 0,
            })],
            policy,
        }
    }

    /// The epoch after this one: `policy` from `at` on.
    pub(super) fn next(&self, policy: Policy, at: Nanos, reset: bool) -> Epoch {
        let id = self.id.wrapping_add(1);
        let keep = if reset { 0 } else { HISTORY - 1 };
        let skip = self.history.len().saturating_sub(keep);
        let mut history: Vec<_> = self.history[skip..].to_vec();
        history.push(Arc::new(Change {
            id,
            policy: policy.clone(),
            at,
        }));
        Epoch {
            id,
            policy,
            history,
        }
    }

    /// True if `id` is a later epoch than this one (this one is stale).
    pub(super) fn is_older_than(&self, id: u32) -> bool {
        (id.wrapping_sub(self.id) as i32) > 0
    }

    /// `state`, written in epoch `from`, carried over change by change to
    /// this epoch; `None` if `from` is no longer remembered: the bucket was
    /// reset since (or changed more than `HISTORY` times), so the key
    /// starts empty, counters too.
    pub(super) fn carry(&self, from: u32, mut state: State) -> Option<State> {
        let i = self.history.iter().position(|c| c.id == from)?;
        for pair in self.history[i..].windows(2) {
            core::carry_over(&pair[0].policy, &pair[1].policy, &mut state, pair[1].at);
        }
        Some(state)
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
        let e1 = e0.next(police(1), 100_000_000, false);
        let e2 = e1.next(police(2), 1_100_000_000, false);
        let state = State {
            tat: 500_000_000,
            windows: Vec::new(),
        };
        // At 1.1 s 3 units remain; at 2/s they are gone by 2.6 s.
        assert_eq!(e2.carry(0, state.clone()).unwrap().tat, 2_600_000_000);
        assert!(e0.is_older_than(e2.id) && !e2.is_older_than(e0.id));
        let e3 = e2.next(police(2), 2_000_000_000, true);
        assert_eq!(e3.carry(1, state), None);
    }
}
