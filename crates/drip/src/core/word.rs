//! The hot path in 64 bits: [`WordPolicy::decide`] decides exactly as
//! [`decide_tat`](super::decide_tat) does, for a policy without windows,
//! with the policy's numbers precomputed and the arithmetic in `u64`. Where
//! a value would not fit it answers `None` and the caller uses
//! `decide_tat`, so it never decides differently, only faster (tests:
//! `word_matches_decide_tat` below and tests/model.rs).

use std::num::NonZeroU64;

use super::decide::{Decision, Outcome, Request, Verdict};
use super::policy::{Mode, Policy};
use super::quota::Quota;
use super::rate::Nanos;

/// A policy without windows whose full bucket fits 64 bits of ticks, with
/// the numbers a decision needs.
#[derive(Clone, Copy, Debug)]
pub struct WordPolicy {
    mode: Mode,
    /// Ticks per ns (the rate's reduced `amount`, at least 1).
    amount: u64,
    /// Ticks per unit (the rate's reduced `period_ns`, at least 1).
    period: u64,
    capacity: u64,
    /// `capacity * period`: the full bucket.
    cap_t: u64,
    /// What every decision carries (`Policy::quota`).
    quota: Quota,
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
            // A rate's reduced numbers are at least 1.
            amount: NonZeroU64::new(rate.amount())?.get(),
            period: NonZeroU64::new(rate.period_ns())?.get(),
            capacity,
            cap_t: capacity.checked_mul(rate.period_ns())?,
            quota: policy.quota(),
        })
    }

    /// The full bucket, in ticks.
    #[cfg_attr(not(drip_loom), allow(dead_code))]
    pub fn full_ticks(&self) -> u64 {
        self.cap_t
    }

    /// Decides `req` at `now` for a key whose `tat` is `tat`: the decision
    /// and the new `tat` if it changed, or `None` if some value does not fit
    /// 64 bits (then ask `decide_tat`). Only differences of times count, so
    /// `tat` and `now` may both be taken from any origin (the memory store
    /// counts from a moment near the policy's start): the answer is the
    /// same, and the new `tat` is from that origin too.
    #[cfg_attr(not(any(test, drip_loom)), allow(dead_code))]
    #[inline(always)]
    pub fn decide(&self, tat: u64, now: Nanos, req: Request) -> Option<(Decision, Option<u64>)> {
        self.answer(tat, now, req)
    }

    /// [`decide`](Self::decide), answering `A`: a whole [`Decision`], or
    /// only a [`Verdict`], for which the figures it lacks are not computed.
    #[inline(always)]
    pub(crate) fn answer<A: Answer>(
        &self,
        tat: u64,
        now: Nanos,
        req: Request,
    ) -> Option<(A, Option<u64>)> {
        let now_t = now.checked_mul(self.amount)?;
        let excess = tat.saturating_sub(now_t);
        if req.cost > self.capacity {
            let a = A::build(self, Outcome::Exceeds, excess, 0, 0, None);
            return Some((a, None));
        }
        // cost <= capacity, so this fits as cap_t does.
        let cost_t = req.cost * self.period;
        if self.mode == Mode::Police && req.max_wait.is_none() {
            // The commonest request, in the fewest steps: a police check is
            // admitted when its cost fits on top of the water, that is when
            // `tat + cost_t <= now_t + cap_t` (a `tat` behind `now_t` is an
            // empty bucket, where any cost up to the capacity fits). The
            // bound does not depend on the key's state, so it is ready
            // before the state is read.
            let limit = now_t.checked_add(self.cap_t - cost_t)?;
            if tat > limit {
                let retry = self.ceil_ns(tat - limit);
                let a = A::build(self, Outcome::Limited, tat - now_t, 0, retry, None);
                return Some((a, None));
            }
            let next = tat.max(now_t).checked_add(cost_t)?;
            let a = A::build(self, Outcome::Allowed, next - now_t, 0, 0, None);
            return Some((a, (next != tat).then_some(next)));
        }
        let (admit, after, wait, retry, ahead) = match self.mode {
            Mode::Police => {
                let go_t = excess.checked_add(cost_t)?.saturating_sub(self.cap_t);
                let go = self.ceil_ns(go_t);
                let (admit, retry) = match req.max_wait {
                    None => (go_t == 0, go),
                    Some(w) => (go <= w, go.saturating_sub(w)),
                };
                let after = excess.max(go_t).checked_add(cost_t)?;
                (admit, after, go, retry, None)
            }
            Mode::Shape => {
                let after = excess.checked_add(cost_t)?;
                let enter_t = after.saturating_sub(self.cap_t);
                let depart = self.ceil_ns(excess);
                let (admit, retry) = match req.max_wait {
                    None => (enter_t == 0, self.ceil_ns(enter_t)),
                    Some(w) => (depart <= w, depart.saturating_sub(w)),
                };
                (admit, after, depart, retry, Some(excess))
            }
        };
        if !admit {
            let a = A::build(self, Outcome::Limited, excess, 0, retry, ahead);
            return Some((a, None));
        }
        let next = now_t.checked_add(after)?;
        let a = A::build(self, Outcome::Allowed, after, wait, 0, ahead);
        Some((a, (next != tat).then_some(next)))
    }

    /// Ticks rounded up to whole nanoseconds.
    #[inline(always)]
    fn ceil_ns(&self, ticks: u64) -> Nanos {
        if self.amount == 1 {
            ticks
        } else {
            div_ceil(ticks, self.amount)
        }
    }
}

/// What the 64-bit path answers: a whole [`Decision`] or only a
/// [`Verdict`]. Each builds itself from the outcome and the water, taking
/// only the figures it needs.
pub(crate) trait Answer: Copy {
    /// `excess`: the water (ticks) the bucket holds after the request;
    /// `ahead`: in shape mode, the water ahead of the request (its place).
    fn build(
        word: &WordPolicy,
        outcome: Outcome,
        excess: u64,
        wait: Nanos,
        retry_after: Nanos,
        ahead: Option<u64>,
    ) -> Self;

    /// The answer from a decision made on another path.
    fn from_decision(d: Decision) -> Self;

    /// True when admitted.
    fn allowed(&self) -> bool;
}

impl Answer for Decision {
    #[inline(always)]
    fn build(
        word: &WordPolicy,
        outcome: Outcome,
        excess: u64,
        wait: Nanos,
        retry_after: Nanos,
        ahead: Option<u64>,
    ) -> Decision {
        Decision {
            outcome,
            wait,
            queue_position: ahead.map_or(0, |e| div_ceil(e, word.period).saturating_add(1)),
            remaining: div_floor(word.cap_t.saturating_sub(excess), word.period),
            retry_after,
            reset_after: word.ceil_ns(excess),
            quota: word.quota,
        }
    }

    #[inline(always)]
    fn from_decision(d: Decision) -> Decision {
        d
    }

    #[inline(always)]
    fn allowed(&self) -> bool {
        Decision::allowed(self)
    }
}

impl Answer for Verdict {
    #[inline(always)]
    fn build(
        _: &WordPolicy,
        outcome: Outcome,
        _: u64,
        wait: Nanos,
        retry_after: Nanos,
        _: Option<u64>,
    ) -> Verdict {
        match outcome {
            Outcome::Allowed => Verdict::Allowed { wait },
            Outcome::Limited => Verdict::Limited { retry_after },
            Outcome::Exceeds => Verdict::Exceeds,
        }
    }

    #[inline(always)]
    fn from_decision(d: Decision) -> Verdict {
        d.verdict()
    }

    #[inline(always)]
    fn allowed(&self) -> bool {
        Verdict::allowed(self)
    }
}

/// `x / d`, skipping the division where the answer is plain: a rejected
/// check of one unit leaves less than one unit of room, for example. `d`
/// is at least 1 (a zero divides as 1 rather than panic).
#[inline(always)]
fn div_floor(x: u64, d: u64) -> u64 {
    if d <= 1 {
        x
    } else if x < d {
        0
    } else {
        x / d
    }
}

/// `x / d` rounded up; `d` as in `div_floor`.
#[inline(always)]
fn div_ceil(x: u64, d: u64) -> u64 {
    x.div_ceil(d.max(1))
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
            matches_decide_tat(&policy, &word, tat, now, req)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// The same where it is decided: a `tat` at or next to the last one
        /// that still admits the request (full bucket, the cost just fits).
        #[test]
        fn word_matches_decide_tat_where_the_cost_just_fits(
            policy in policy(),
            now in 0u64..=1 << 40,
            cost in 0u64..=30,
            max_wait in prop::option::of(0u64..=10_000),
            delta in -3i64..=3,
        ) {
            let Some(word) = WordPolicy::new(&policy) else {
                return Ok(());
            };
            let req = Request { cost, max_wait };
            let edge = now
                .checked_mul(word.amount)
                .and_then(|n| n.checked_add(word.cap_t))
                .and_then(|n| n.checked_sub(cost.checked_mul(word.period)?));
            let Some(tat) = edge.and_then(|e| e.checked_add_signed(delta)) else {
                return Ok(());
            };
            matches_decide_tat(&policy, &word, tat, now, req)?;
        }
    }

    /// Where `word` answers for `tat` at `now`, it answers as `decide_tat`;
    /// the verdict alone, built on its own, says the same.
    fn matches_decide_tat(
        policy: &Policy,
        word: &WordPolicy,
        tat: u64,
        now: Nanos,
        req: Request,
    ) -> Result<(), TestCaseError> {
        if let Some((d, next)) = word.decide(tat, now, req) {
            let (want, want_next) = decide_tat(policy, u128::from(tat), now, req);
            prop_assert_eq!(d, want);
            prop_assert_eq!(next.map(u128::from), want_next);
            let (v, v_next) = word.answer::<Verdict>(tat, now, req).unwrap();
            prop_assert_eq!(v, want.verdict());
            prop_assert_eq!(v_next, next);
        }
        Ok(())
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
