//! The hot path in 64 bits: [`WordPolicy::decide`] decides exactly as
//! [`decide_tat`](super::decide_tat) does, for a policy without windows,
//! with the policy's numbers precomputed and the arithmetic in `u64`. Where
//! a value would not fit it answers `None` and the caller uses
//! `decide_tat`, so it never decides differently, only faster (tests:
//! `word_matches_decide_tat` below and tests/model.rs).

use super::decide::{Decision, Outcome, Request};
use super::policy::{Mode, Policy};
use super::rate::Nanos;

/// A policy without windows whose full bucket fits 64 bits of ticks, with
/// the numbers a decision needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WordPolicy {
    mode: Mode,
    /// Ticks per ns (the rate's reduced `amount`).
    amount: u64,
    /// Ticks per unit (the rate's reduced `period_ns`).
    period: u64,
    capacity: u64,
    /// `capacity * period`: the full bucket.
    cap_t: u64,
}

impl WordPolicy {
    /// `None` if `policy` has windows or its full bucket needs more than 64
    /// bits of ticks.
    pub fn new(policy: &Policy) -> Option<WordPolicy> {
        if !policy.windows().is_empty() {
            return None;
        }
        let rate = policy.limit().rate();
        let capacity = policy.limit().capacity();
        Some(WordPolicy {
            mode: policy.mode(),
            amount: rate.amount(),
            period: rate.period_ns(),
            capacity,
            cap_t: capacity.checked_mul(rate.period_ns())?,
        })
    }

    /// Decides `req` at `now` for a key whose `tat` is `tat`: the decision
    /// and the new `tat` if it changed, or `None` if some value does not fit
    /// 64 bits (then ask `decide_tat`).
    #[inline(always)]
    pub fn decide(&self, tat: u64, now: Nanos, req: Request) -> Option<(Decision, Option<u64>)> {
        let now_t = now.checked_mul(self.amount)?;
        let excess = tat.saturating_sub(now_t);
        if req.cost > self.capacity {
            let d = self.decision(Outcome::Exceeds, excess, 0, 0, 0);
            return Some((d, None));
        }
        // cost <= capacity, so this fits as cap_t does.
        let cost_t = req.cost * self.period;
        let (admit, after, wait, retry, queue_position) = match self.mode {
            Mode::Police => {
                let go_t = excess.checked_add(cost_t)?.saturating_sub(self.cap_t);
                let go = self.ceil_ns(go_t);
                let (admit, retry) = match req.max_wait {
                    None => (go_t == 0, go),
                    Some(w) => (go <= w, go.saturating_sub(w)),
                };
                let after = excess.max(go_t).checked_add(cost_t)?;
                (admit, after, go, retry, 0)
            }
            Mode::Shape => {
                let after = excess.checked_add(cost_t)?;
                let enter_t = after.saturating_sub(self.cap_t);
                let depart = self.ceil_ns(excess);
                let (admit, retry) = match req.max_wait {
                    None => (enter_t == 0, self.ceil_ns(enter_t)),
                    Some(w) => (depart <= w, depart.saturating_sub(w)),
                };
                let queue_position = excess.div_ceil(self.period).saturating_add(1);
                (admit, after, depart, retry, queue_position)
            }
        };
        if !admit {
            let d = self.decision(Outcome::Limited, excess, 0, queue_position, retry);
            return Some((d, None));
        }
        let next = now_t.checked_add(after)?;
        let d = self.decision(Outcome::Allowed, after, wait, queue_position, 0);
        Some((d, (next != tat).then_some(next)))
    }

    /// The decision, with `remaining` and `reset_after` from the water
    /// (`excess` ticks) the bucket holds after it.
    #[inline(always)]
    fn decision(
        &self,
        outcome: Outcome,
        excess: u64,
        wait: Nanos,
        queue_position: u64,
        retry_after: Nanos,
    ) -> Decision {
        Decision {
            outcome,
            wait,
            queue_position,
            remaining: div_floor(self.cap_t.saturating_sub(excess), self.period),
            retry_after,
            reset_after: self.ceil_ns(excess),
        }
    }

    /// Ticks rounded up to whole nanoseconds.
    #[inline(always)]
    fn ceil_ns(&self, ticks: u64) -> Nanos {
        if self.amount == 1 {
            ticks
        } else {
            ticks.div_ceil(self.amount)
        }
    }
}

/// `x / d`, skipping the division where the answer is plain: a rejected
/// check of one unit leaves less than one unit of room, for example.
#[inline(always)]
fn div_floor(x: u64, d: u64) -> u64 {
    if d == 1 {
        x
    } else if x < d {
        0
    } else {
        x / d
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::core::{Limit, Rate, decide_tat};

    fn policy() -> impl Strategy<Value = Policy> {
        let amount = prop_oneof![Just(1u64), 1u64..=7, 1u64..=u32::MAX as u64];
        let period = prop_oneof![1u64..=10, 1u64..=4_000_000_000, 1u64..=u64::MAX / 2];
        let capacity = prop_oneof![1u64..=20, 1u64..=u32::MAX as u64];
        (any::<bool>(), amount, period, capacity).prop_filter_map(
            "a valid limit",
            |(shape, amount, period, capacity)| {
                let rate = Rate::new(amount, Duration::from_nanos(period)).ok()?;
                let limit = Limit::new(rate, capacity).ok()?;
                let mode = if shape { Mode::Shape } else { Mode::Police };
                Some(Policy::new(mode, limit))
            },
        )
    }

    fn near_edges() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..=10_000,
            0u64..=u64::MAX,
            (0u64..=1_000_000).prop_map(|d| u64::MAX - d),
            (0u64..=1 << 40).prop_map(|d| (1 << 63) - d),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// Wherever the 64-bit path answers, it answers as `decide_tat`.
        #[test]
        fn word_matches_decide_tat(
            policy in policy(),
            tat in near_edges(),
            now in near_edges(),
            cost in prop_oneof![0u64..=30, any::<u64>()],
            max_wait in prop::option::of(near_edges()),
        ) {
            let req = Request { cost, max_wait };
            let Some(word) = WordPolicy::new(&policy) else {
                return Ok(());
            };
            if let Some((d, next)) = word.decide(tat, now, req) {
                let (want, want_next) = decide_tat(&policy, u128::from(tat), now, req);
                prop_assert_eq!(d, want);
                prop_assert_eq!(next.map(u128::from), want_next);
            }
        }
    }

    #[test]
    fn answers_for_everyday_policies_and_declines_overflow() {
        let p = Policy::police(Limit::new(Rate::per_second(10).unwrap(), 5).unwrap());
        let w = WordPolicy::new(&p).unwrap();
        let (d, next) = w.decide(0, 1_000, Request::check(1)).unwrap();
        assert!(d.allowed());
        assert_eq!(next, Some(1_000 + 100_000_000));
        // A tat beyond 64 bits of ticks: the caller must use decide_tat.
        assert_eq!(
            w.decide(u64::MAX - 10, u64::MAX - 10, Request::check(1)),
            None
        );
    }
}
