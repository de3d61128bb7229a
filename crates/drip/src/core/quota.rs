//! `Quota`: the few numbers of a policy a response needs (the
//! `RateLimit-Policy` field, a "cost too large" message), carried by every
//! [`Decision`](super::Decision) so that answering a request never asks the
//! store for its policy a second time.

use super::policy::Policy;
use super::rate::{NANOS_PER_SEC, Nanos};

/// A small summary of the limit that decided a request: the bucket's
/// capacity, the time its full bucket takes to drain, and the largest cost
/// the policy can ever admit. `Copy` and two words, so a decision stays
/// cheap to move.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Quota {
    // Both fit 32 bits: a capacity is at most `MAX_CAPACITY` (u32::MAX) and
    // a window's limit can only lower `max_cost` below it.
    capacity: u32,
    max_cost: u32,
    /// Time a full bucket takes to drain, rounded up to whole ns.
    drain: Nanos,
}

impl Quota {
    /// The quota of `policy` (computed once, when a policy is built; read it
    /// with [`Policy::quota`]).
    pub(crate) fn of(policy: &Policy) -> Quota {
        let limit = policy.limit();
        let rate = limit.rate();
        let drain = rate.ceil_ns(rate.cost_ticks(limit.capacity()));
        Quota::new(limit.capacity(), policy.max_cost(), drain)
    }

    /// A quota from its parts (each capacity and cost clamped to 32 bits,
    /// which every policy's are).
    pub(crate) fn new(capacity: u64, max_cost: u64, drain: Nanos) -> Quota {
        Quota {
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
            max_cost: u32::try_from(max_cost).unwrap_or(u32::MAX),
            drain,
        }
    }

    /// Units the bucket holds.
    #[inline]
    pub fn capacity(&self) -> u64 {
        u64::from(self.capacity)
    }

    /// The largest single request the policy can ever admit (its capacity,
    /// or its smallest window limit).
    #[inline]
    pub fn max_cost(&self) -> u64 {
        u64::from(self.max_cost)
    }

    /// Time a full bucket takes to drain, in ns (rounded up).
    #[inline]
    pub fn drain(&self) -> Nanos {
        self.drain
    }

    /// Time a full bucket takes to drain, in whole seconds rounded up: the
    /// `w` of `RateLimit-Policy`.
    #[inline]
    pub fn drain_secs(&self) -> u64 {
        self.drain.div_ceil(NANOS_PER_SEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Limit, Rate, Window};
    use std::time::Duration;

    #[test]
    fn a_quota_names_capacity_drain_and_largest_cost() {
        let p = Policy::police(Limit::new(Rate::per_second(2).unwrap(), 5).unwrap());
        let q = p.quota();
        assert_eq!((q.capacity(), q.max_cost()), (5, 5));
        assert_eq!(q.drain(), 2_500_000_000);
        assert_eq!(q.drain_secs(), 3);
        let p = p
            .with_window(Window::new(3, Duration::from_secs(60)).unwrap())
            .unwrap();
        assert_eq!(p.quota().max_cost(), 3);
    }

    #[test]
    fn the_largest_capacity_fits() {
        let cap = crate::core::MAX_CAPACITY;
        let p = Policy::shape(Limit::new(Rate::per_second(1 << 30).unwrap(), cap).unwrap());
        assert_eq!(p.quota().capacity(), cap);
        assert_eq!(p.quota().max_cost(), cap);
        assert_eq!(p.quota().drain_secs(), 4);
    }
}
