//! Joint decisions: several requests, each on its own key and policy,
//! admitted together or not at all (Envoy's rate limit service sends a
//! request's descriptors together, and a request refused by one of them
//! must consume from none).

use super::decide::{Decision, Outcome, Request, State, decide, level};
use super::policy::Policy;
use super::rate::Nanos;

/// What a joint decision answers: whether all parts were admitted, and one
/// [`Decision`] per part, in order.
///
/// When `admitted` is true every binding part was admitted (an advisory
/// part may be refused: it then carries its refusal and consumed nothing).
/// When `admitted` is false nothing was consumed anywhere. The parts that
/// refused carry their own refusal (`Limited` or `Exceeds`, with
/// `retry_after`); the parts that would have admitted carry `Allowed` with
/// `wait` 0 and the figures (`remaining`, `reset_after`) of their key as it
/// stays, unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct JointDecision {
    /// True when every binding part was admitted and all consumed.
    pub admitted: bool,
    /// One decision per part, in the order asked.
    pub decisions: Vec<Decision>,
}

/// Decides `parts` jointly at `now`. Each part is `(slot, request,
/// advisory)`, where `slot` indexes `states` (several parts may share a
/// key: the later ones see what the earlier ones would consume). The whole
/// is admitted when every binding (not advisory) part admits; then every
/// state moves on (advisory parts consume only if they fit themselves).
/// Otherwise `states` are left exactly as they were.
pub fn decide_joint(
    states: &mut [(&Policy, State)],
    parts: &[(usize, Request, bool)],
    now: Nanos,
) -> JointDecision {
    // Plan on copies: the stores' states change only if every part admits.
    let mut planned: Vec<State> = states.iter().map(|(_, s)| s.clone()).collect();
    let decisions: Vec<Decision> = parts
        .iter()
        .map(|&(slot, req, _)| decide(states[slot].0, &mut planned[slot], now, req))
        .collect();
    let admitted = decisions
        .iter()
        .zip(parts)
        .all(|(d, &(_, _, advisory))| advisory || d.allowed());
    if admitted {
        for ((_, state), plan) in states.iter_mut().zip(planned) {
            *state = plan;
        }
        return JointDecision {
            admitted,
            decisions,
        };
    }
    let decisions = decisions
        .into_iter()
        .zip(parts)
        .map(|(d, &(slot, _, _))| {
            if d.allowed() {
                unconsumed(states[slot].0, &states[slot].1, now)
            } else {
                d
            }
        })
        .collect();
    JointDecision {
        admitted,
        decisions,
    }
}

/// The answer for a part that would have admitted but was not consumed:
/// `Allowed`, no wait, and the figures of the key as it stays.
pub fn unconsumed(policy: &Policy, state: &State, now: Nanos) -> Decision {
    let l = level(policy, state, now);
    Decision {
        outcome: Outcome::Allowed,
        wait: 0,
        queue_position: 0,
        remaining: l.remaining,
        retry_after: 0,
        reset_after: l.reset_after,
        quota: policy.quota(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limit, Rate};

    fn police(capacity: u64) -> Policy {
        Policy::police(Limit::new(Rate::per_second(1).unwrap(), capacity).unwrap())
    }

    #[test]
    fn one_refusal_consumes_nothing_anywhere() {
        let (wide, narrow) = (police(10), police(1));
        let mut states = vec![(&wide, State::default()), (&narrow, State::default())];
        let both = [(0, Request::check(1), false), (1, Request::check(1), false)];
        let first = decide_joint(&mut states, &both, 0);
        assert!(first.admitted);
        assert_eq!(first.decisions[0].remaining, 9);
        let before: Vec<State> = states.iter().map(|s| s.1.clone()).collect();
        let second = decide_joint(&mut states, &both, 0);
        assert!(!second.admitted);
        assert!(second.decisions[0].allowed(), "the wide part would admit");
        assert_eq!(second.decisions[0].remaining, 9, "and is not consumed");
        assert_eq!(second.decisions[1].outcome, Outcome::Limited);
        assert!(second.decisions[1].retry_after > 0);
        let after: Vec<State> = states.iter().map(|s| s.1.clone()).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn parts_sharing_a_key_see_each_other() {
        let p = police(3);
        let mut states = vec![(&p, State::default())];
        let parts = [(0, Request::check(2), false), (0, Request::check(2), false)];
        let d = decide_joint(&mut states, &parts, 0);
        assert!(!d.admitted, "2 + 2 does not fit in 3");
        assert_eq!(states[0].1, State::default());
        let d = decide_joint(&mut states, &parts[..1], 0);
        assert!(d.admitted);
    }

    #[test]
    fn an_advisory_refusal_does_not_refuse_the_whole() {
        let (wide, narrow) = (police(10), police(1));
        let mut states = vec![(&wide, State::default()), (&narrow, State::default())];
        let parts = [(0, Request::check(1), false), (1, Request::check(1), true)];
        assert!(decide_joint(&mut states, &parts, 0).admitted);
        let d = decide_joint(&mut states, &parts, 0);
        assert!(d.admitted, "the narrow part is advisory");
        assert_eq!(d.decisions[1].outcome, Outcome::Limited);
        assert_eq!(d.decisions[0].remaining, 8, "the binding part consumed");
    }
}
