//! Random policies for the property tests (shared by the model tests of
//! the core and of the Redis script).

#![allow(dead_code)]

use std::time::Duration;

use drip::{Limit, Mode, Policy, Rate, Window};
use proptest::prelude::*;

/// Policies of either mode with rates from 1/10 µs to 50/3 s, capacities
/// 1..=12, and up to two windows of 1..=30 emission intervals (plus up to
/// `max_jitter` ns) whose slot counts come from `slots` (0: exact). A
/// repeated window period is dropped.
pub fn arb_policy_with(
    slots: impl Strategy<Value = u32> + Clone,
    max_jitter: u64,
) -> impl Strategy<Value = Policy> {
    let rate = (
        1u64..=50,
        prop_oneof![1u64..=10_000, 1_000_000u64..=3_000_000_000],
    );
    let windows = prop::collection::vec((1u64..=20, 1u64..=30, 0..=max_jitter, slots), 0..=2);
    (any::<bool>(), rate, 1u64..=12, windows).prop_map(|(shape, (amount, period), cap, ws)| {
        let rate = Rate::new(amount, Duration::from_nanos(period)).unwrap();
        let mode = if shape { Mode::Shape } else { Mode::Police };
        let mut p = Policy::new(mode, Limit::new(rate, cap).unwrap());
        let t = period / amount + 1;
        for (limit, k, jitter, slots) in ws {
            let period = Duration::from_nanos(t * k + jitter);
            let w = match slots {
                0 => Window::new(limit, period),
                n => Window::approximate(limit, period, n),
            }
            .unwrap();
            // A repeated period is refused; keep the first.
            p = p.clone().with_window(w).unwrap_or(p);
        }
        p
    })
}

/// Policies with exact windows.
pub fn arb_policy() -> impl Strategy<Value = Policy> {
    arb_policy_with(Just(0u32), 3)
}

/// Policies whose windows may be approximate (1..=8 slots).
pub fn arb_policy_approximate() -> impl Strategy<Value = Policy> {
    arb_policy_with(prop_oneof![Just(0u32), 1u32..=8], 3)
}
