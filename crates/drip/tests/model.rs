//! Property tests against a plain reference model.
//!
//! The model is a literal leaky bucket: water in exact rational units that
//! drains continuously, and for each window the full history of admissions.
//! It shares no code with drip's tick arithmetic. Random policies, costs,
//! time steps, windows and reconfigurations must give the same decisions,
//! and no interval may ever see more admitted than the limits allow.

mod strategies;

use std::time::Duration;

use drip::core::{self, Request, State};
use drip::{KeyedBucket, ManualClock, Mode, Outcome, Policy, Window};
use num_bigint::BigInt;
use num_rational::BigRational as Q;
use proptest::prelude::*;
use strategies::{arb_policy, arb_policy_approximate};

fn q(x: u64) -> Q {
    Q::from_integer(BigInt::from(x))
}

fn ceil_u64(x: &Q) -> u64 {
    u64::try_from(x.ceil().to_integer()).unwrap()
}

fn floor_u64(x: &Q) -> u64 {
    u64::try_from(x.floor().to_integer()).unwrap()
}

/// The reference: water and histories.
struct Model {
    policy: Policy,
    water: Q,
    at: u64,
    /// Per window: every admission ever, as (time, cost).
    history: Vec<Vec<(u64, u64)>>,
}

/// What the model expects of one request.
#[derive(Debug, PartialEq)]
struct Expect {
    outcome: Outcome,
    wait: u64,
    queue_position: u64,
    remaining: u64,
    retry_after: u64,
    reset_after: u64,
}

impl Model {
    fn new(policy: Policy) -> Model {
        let n = policy.windows().len();
        Model {
            policy,
            water: q(0),
            at: 0,
            history: vec![Vec::new(); n],
        }
    }

    /// T, the time one unit takes to leak, in ns.
    fn t(&self) -> Q {
        let r = self.policy.limit().rate();
        Q::new(BigInt::from(r.period_ns()), BigInt::from(r.amount()))
    }

    fn drain(&mut self, now: u64) {
        let leaked = (q(now) - q(self.at)) / self.t();
        self.water = (self.water.clone() - leaked).max(q(0));
        self.at = now;
    }

    /// Units of window i inside the window that ends at `t`: (t - W, t].
    fn used(&self, i: usize, t: u64) -> u64 {
        let w = self.policy.windows()[i].period_ns();
        self.history[i]
            .iter()
            .filter(|h| h.0 + w > t)
            .map(|h| h.1)
            .sum()
    }

    /// Earliest t (not before the last admission) with room for `cost` in window i.
    fn window_ready(&self, i: usize, cost: u64) -> u64 {
        let w = self.policy.windows()[i];
        let last = self.history[i].last().map_or(0, |h| h.0);
        let mut candidates: Vec<u64> = self.history[i]
            .iter()
            .map(|h| h.0 + w.period_ns())
            .collect();
        candidates.push(last);
        candidates.sort();
        candidates
            .into_iter()
            .filter(|&t| t >= last)
            .find(|&t| self.used(i, t) + cost <= w.limit())
            .unwrap()
    }

    fn remaining_and_reset(&self, now: u64) -> (u64, u64) {
        let cap = q(self.policy.limit().capacity());
        let mut remaining = floor_u64(&(cap - self.water.clone()).max(q(0)));
        let mut reset = ceil_u64(&(q(now) + self.water.clone() * self.t())) - now;
        for (i, w) in self.policy.windows().iter().enumerate() {
            remaining = remaining.min(w.limit().saturating_sub(self.used(i, now)));
            if let Some(&(t, _)) = self.history[i].last() {
                reset = reset.max((t + w.period_ns()).saturating_sub(now));
            }
        }
        (remaining, reset)
    }

    fn check(&mut self, now: u64, cost: u64) -> Expect {
        self.drain(now);
        let cap = self.policy.limit().capacity();
        let shape = self.policy.mode() == Mode::Shape;
        let qpos = if shape { ceil_u64(&self.water) + 1 } else { 0 };
        let never = cost > cap || self.policy.windows().iter().any(|w| cost > w.limit());
        if never {
            let (remaining, reset_after) = self.remaining_and_reset(now);
            let outcome = Outcome::Exceeds;
            return Expect {
                outcome,
                wait: 0,
                queue_position: 0,
                remaining,
                retry_after: 0,
                reset_after,
            };
        }
        let ready = (0..self.history.len())
            .map(|i| self.window_ready(i, cost))
            .max()
            .unwrap_or(0);
        let t = self.t();
        // When the request would go, exactly.
        let (go, admit) = if shape {
            let go = (q(now) + self.water.clone() * t.clone())
                .max(q(ready))
                .max(q(now));
            let fits = (go.clone() - q(now)) / t.clone() + q(cost) <= q(cap);
            (go, fits)
        } else {
            let bucket_at = q(now) + (self.water.clone() + q(cost) - q(cap)) * t.clone();
            let go = bucket_at.max(q(ready)).max(q(now));
            let now_ok = go == q(now);
            (go, now_ok)
        };
        if !admit {
            let (remaining, reset_after) = self.remaining_and_reset(now);
            let retry_at = if shape {
                go.clone() + (q(cost) - q(cap)) * t
            } else {
                go
            };
            return Expect {
                outcome: Outcome::Limited,
                wait: 0,
                queue_position: qpos,
                remaining,
                retry_after: ceil_u64(&retry_at) - now,
                reset_after,
            };
        }
        let depart = ceil_u64(&go);
        self.water = if shape {
            // Everything ahead of it, any wait the windows add, and itself.
            (go - q(now)) / t + q(cost)
        } else {
            self.water.clone() + q(cost)
        };
        if cost > 0 {
            for h in &mut self.history {
                h.push((depart, cost));
            }
        }
        let (remaining, reset_after) = self.remaining_and_reset(now);
        Expect {
            outcome: Outcome::Allowed,
            wait: depart - now,
            queue_position: qpos,
            remaining,
            retry_after: 0,
            reset_after,
        }
    }

    fn reconfigure(&mut self, now: u64, policy: Policy, reset: bool) {
        self.drain(now);
        let history = std::mem::take(&mut self.history);
        if reset {
            self.water = q(0);
            self.history = vec![Vec::new(); policy.windows().len()];
        } else {
            // The water carries over, rounded up to the new rate's resolution.
            let p = q(policy.limit().rate().period_ns());
            self.water = (self.water.clone() * p.clone()).ceil() / p;
            self.history = policy
                .windows()
                .iter()
                .map(|w| {
                    self.policy
                        .windows()
                        .iter()
                        .position(|o| o.period_ns() == w.period_ns())
                        .map(|i| history[i].clone())
                        .unwrap_or_default()
                })
                .collect();
        }
        self.policy = policy;
    }
}

// ---- generators ----

#[derive(Debug, Clone)]
enum Op {
    /// Advance by `k/4` emission intervals (+ jitter ns), then ask for `cost`.
    Check {
        k: u64,
        jitter: u64,
        cost: u64,
    },
    Reconfigure {
        policy: Policy,
        reset: bool,
    },
}

fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        12 => (0u64..=12, 0u64..=3, 0u64..=14).prop_map(|(k, jitter, cost)| Op::Check { k, jitter, cost }),
        1 => (arb_policy(), any::<bool>()).prop_map(|(policy, reset)| Op::Reconfigure { policy, reset }),
    ];
    prop::collection::vec(op, 1..60)
}

fn advance_for(policy: &Policy, k: u64, jitter: u64) -> u64 {
    let r = policy.limit().rate();
    r.period_ns() * k / (r.amount() * 4) + jitter
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    /// The memory store (both its atomic and its locked path, and carry-over
    /// on reconfiguration) decides exactly as the reference model does.
    #[test]
    fn memory_store_matches_the_reference_model(policy in arb_policy(), ops in arb_ops()) {
        let clock = ManualClock::new(0);
        let bucket: KeyedBucket<String, ManualClock> = KeyedBucket::new(policy.clone(), clock.clone());
        // A twin asked only for verdicts, which it builds on its own path.
        let short: KeyedBucket<String, ManualClock> = KeyedBucket::new(policy.clone(), clock.clone());
        let mut model = Model::new(policy);
        let mut now = 0;
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Check { k, jitter, cost } => {
                    now += advance_for(&model.policy, k, jitter);
                    clock.set(now);
                    let d = bucket.check("key", cost).unwrap();
                    let want = model.check(now, cost);
                    let got = Expect {
                        outcome: d.outcome,
                        wait: d.wait,
                        queue_position: d.queue_position,
                        remaining: d.remaining,
                        retry_after: d.retry_after,
                        reset_after: d.reset_after,
                    };
                    prop_assert_eq!(got, want, "step {} at {} ns, cost {}", step, now, cost);
                    prop_assert_eq!(short.verdict("key", cost).unwrap(), d.verdict(), "verdict at step {}", step);
                    let s = bucket.status("key");
                    prop_assert_eq!(s.level.queue_size, ceil_u64(&model.water), "queue at step {}", step);
                }
                Op::Reconfigure { policy, reset } => {
                    bucket.reconfigure(policy.clone(), reset);
                    short.reconfigure(policy.clone(), reset);
                    model.reconfigure(now, policy, reset);
                }
            }
        }
    }

    /// With reservations (acquire) mixed in, and approximate windows too,
    /// departures never exceed any limit in any interval: police admissions conform to the bucket
    /// (at most capacity + elapsed/T in any interval), shaped departures are
    /// spaced by the work ahead of them, and every window of length W holds at
    /// most its limit. Reported waits are rounded up to the next ns, hence
    /// the 1 ns slack.
    #[test]
    fn no_interval_exceeds_the_limits(
        policy in arb_policy_approximate(),
        steps in prop::collection::vec((0u64..=8, 0u64..=3, 0u64..=6, prop::option::of(0u64..=40)), 1..80),
    ) {
        let mut state = State::default();
        let mut now = 0;
        let mut departures: Vec<(u64, u64)> = Vec::new();
        let r = policy.limit().rate();
        let t = Q::new(BigInt::from(r.period_ns()), BigInt::from(r.amount()));
        for (k, jitter, cost, reserve) in steps {
            now += advance_for(&policy, k, jitter);
            let req = match reserve {
                Some(n) => Request::reserve(cost, r.period_ns() * n / (4 * r.amount())),
                None => Request::check(cost),
            };
            let d = core::decide(&policy, &mut state, now, req);
            if d.allowed() && cost > 0 {
                departures.push((now + d.wait, cost));
            }
        }
        let cap = q(policy.limit().capacity());
        for j in 0..departures.len() {
            let mut sum = 0;
            for i in (0..=j).rev() {
                sum += departures[i].1;
                let span = q(departures[j].0 - departures[i].0 + 1);
                if policy.mode() == Mode::Police {
                    prop_assert!((q(sum) - cap.clone()) * t.clone() <= span, "bucket overrun {:?}", departures);
                } else if i < j {
                    let ahead = q(sum - departures[j].1) * t.clone();
                    prop_assert!(ahead <= span, "departures too close {:?}", departures);
                }
            }
            for w in policy.windows() {
                let from = departures[j].0.saturating_sub(w.period_ns());
                let inside: u64 = departures[..=j].iter().filter(|x| x.0 > from).map(|x| x.1).sum();
                prop_assert!(inside <= w.limit(), "window overrun {:?}", departures);
            }
        }
    }

    /// A limited police check's retry_after is exact: the same request is
    /// refused 1 ns before it and admitted at it.
    #[test]
    fn retry_after_is_exact(policy in arb_policy(), costs in prop::collection::vec(1u64..=6, 1..30)) {
        let policy = Policy::police(*policy.limit()).with_window(Window::new(9, Duration::from_nanos(policy.limit().rate().period_ns() * 7 / policy.limit().rate().amount() + 1)).unwrap()).unwrap();
        let mut state = State::default();
        for cost in costs {
            let d = core::decide(&policy, &mut state, 0, Request::check(cost));
            if d.outcome == Outcome::Limited {
                let mut before = state.clone();
                prop_assert!(!core::decide(&policy, &mut before, d.retry_after - 1, Request::check(cost)).allowed());
                let mut at = state.clone();
                prop_assert!(core::decide(&policy, &mut at, d.retry_after, Request::check(cost)).allowed());
            }
        }
    }
}
