//! What an RLS rule promises, as a property: `requests_per_unit` N per
//! `unit` never admits more than N in ANY window of one unit, for random
//! rules (exact windows up to 1024 per unit, approximate ones above) and
//! random request times and hits. Beside it, on the same sequences, a
//! fixed-window model (envoyproxy/ratelimit's INCRBY + EXPIRE per window)
//! admits up to 2N across a window boundary.

use drip::core::{State, decide};
use drip::{Policy, Request};
use drip_server::rls::config::{Unit, rule_policy};
use proptest::prelude::*;

const S: u64 = 1_000_000_000;

/// Admissions (time, hits) of drip's policy for `n` per second.
fn drip_admits(policy: &Policy, reqs: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut state = State::default();
    reqs.iter()
        .filter(|&&(t, hits)| decide(policy, &mut state, t, Request::check(hits)).allowed())
        .copied()
        .collect()
}

/// Admissions of a fixed-window counter: windows [kS, (k+1)S), each
/// admitting while its count plus the hits stays within `n`.
fn fixed_admits(n: u64, reqs: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let (mut window, mut count) = (u64::MAX, 0);
    let mut out = Vec::new();
    for &(t, hits) in reqs {
        if t / S != window {
            (window, count) = (t / S, 0);
        }
        if count + hits <= n {
            count += hits;
            out.push((t, hits));
        }
    }
    out
}

/// The most admitted in any window (t - S, t] (times ascending).
fn max_in_any_unit(admitted: &[(u64, u64)]) -> u64 {
    let (mut lo, mut sum, mut max) = (0, 0, 0);
    for &(t, hits) in admitted {
        sum += hits;
        while admitted[lo].0 + S <= t {
            sum -= admitted[lo].1;
            lo += 1;
        }
        max = max.max(sum);
    }
    max
}

/// Requests at ascending times: gaps up to half a unit, hits 1..=max_hits.
fn requests(max_hits: u64) -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((0..S / 2, 1..=max_hits), 1..300).prop_map(|steps| {
        let mut t = 5 * S;
        steps
            .into_iter()
            .map(|(gap, hits)| {
                t += gap;
                (t, hits)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn no_window_of_one_unit_admits_more_than_the_rule(
        n in prop_oneof![1u32..=20, 1000u32..=3000],
        reqs in requests(4),
    ) {
        let policy = rule_policy(n, Unit::Second).unwrap();
        let admitted = drip_admits(&policy, &reqs);
        prop_assert!(max_in_any_unit(&admitted) <= u64::from(n));
    }

    /// The same bursts through both: n just before a boundary and n just
    /// after. The fixed window admits 2n within a few ns; drip admits n.
    #[test]
    fn a_fixed_window_admits_twice_the_rule_across_a_boundary(
        n in 1u64..=500,
        before in 1u64..1_000_000,
        after in 0u64..1_000_000,
        k in 3u64..10,
    ) {
        let boundary = k * S;
        let mut reqs = vec![(boundary - before, 1); n as usize];
        reqs.extend(vec![(boundary + after, 1); n as usize]);
        let fixed = max_in_any_unit(&fixed_admits(n, &reqs));
        prop_assert_eq!(fixed, 2 * n, "the fixed window lets the boundary burst through");
        let policy = rule_policy(u32::try_from(n).unwrap(), Unit::Second).unwrap();
        prop_assert_eq!(max_in_any_unit(&drip_admits(&policy, &reqs)), n);
    }
}
