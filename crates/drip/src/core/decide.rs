//! The decision: one function from (policy, state, now, request) to a
//! verdict and the next state. Pure: the caller supplies `now` and stores the
//! state; memory and SQLite call this, the Redis script is its twin.

use super::policy::{Mode, Policy};
use super::quota::Quota;
use super::rate::{Nanos, mul_div_ceil};
use super::window::WindowLog;

/// What is asked of a bucket: `cost` units, now or within `max_wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Units the request takes (1 per request, or bytes for bandwidth).
    pub cost: u64,
    /// `None` for a check: police admits only now, shape only if the queue
    /// has room now. `Some(w)`: reserve the earliest place, provided the
    /// request may go within `w` ns; later requests queue behind it.
    pub max_wait: Option<Nanos>,
}

impl Request {
    /// A check of `cost` units.
    #[inline]
    pub fn check(cost: u64) -> Request {
        Request {
            cost,
            max_wait: None,
        }
    }

    /// A reservation of `cost` units that may wait up to `max_wait` ns.
    pub fn reserve(cost: u64, max_wait: Nanos) -> Request {
        Request {
            cost,
            max_wait: Some(max_wait),
        }
    }
}

/// Whether a request was admitted.
// A whole word: a one-byte outcome left seven bytes of padding in a
// `Decision`, which moves of a `Result<Decision>` copied in overlapping
// pieces, through the stack (a stall: about 5 ns per check here, BENCHMARKS.md).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Admitted: it may go after `wait`.
    Allowed,
    /// Not now: it could be admitted after `retry_after`.
    Limited,
    /// Never: the cost is larger than the policy can ever admit.
    Exceeds,
}

/// The answer to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    /// Admitted, limited, or never admissible.
    pub outcome: Outcome,
    /// Time from now until the request may go: its turn in shape mode, its
    /// reserved moment for a reservation, 0 for an admitted police check.
    pub wait: Nanos,
    /// Shape mode: the request's place in the queue (1 = goes next), which is
    /// `ceil(level before it) + 1`. Police mode: 0.
    pub queue_position: u64,
    /// Units that could still be admitted now (the least over all limits).
    pub remaining: u64,
    /// When limited: time until this same request would be admitted.
    /// Otherwise 0.
    pub retry_after: Nanos,
    /// Time until every limit is back to full (bucket empty, windows clear).
    pub reset_after: Nanos,
    /// The policy that decided, summarised for the response (capacity,
    /// drain time, largest cost): no second store call to answer.
    pub quota: Quota,
}

impl Decision {
    /// True when admitted.
    #[inline]
    pub fn allowed(&self) -> bool {
        self.outcome == Outcome::Allowed
    }

    /// The short answer: the outcome with its one time.
    #[inline]
    pub fn verdict(&self) -> Verdict {
        match self.outcome {
            Outcome::Allowed => Verdict::Allowed { wait: self.wait },
            Outcome::Limited => Verdict::Limited {
                retry_after: self.retry_after,
            },
            Outcome::Exceeds => Verdict::Exceeds,
        }
    }
}

/// The short answer to one request: go (after `wait`), not yet (retry
/// after `retry_after`), or never. A [`Decision`] adds the bucket's figures
/// (remaining, reset_after, queue position); callers that need only the
/// answer can ask for this alone, which is cheaper to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Admitted: it may go after `wait` ns (0 for an admitted police check;
    /// its turn in shape mode).
    Allowed {
        /// Time from now until the request may go.
        wait: Nanos,
    },
    /// Not now: the same request would be admitted after `retry_after` ns.
    Limited {
        /// Time until this same request would be admitted.
        retry_after: Nanos,
    },
    /// Never: the cost is larger than the policy can ever admit.
    Exceeds,
}

impl Verdict {
    /// True when admitted.
    #[inline]
    pub fn allowed(&self) -> bool {
        matches!(self, Verdict::Allowed { .. })
    }
}

/// A bucket's state for one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Theoretical arrival time: when the bucket will be empty, in ticks of
    /// the policy's rate (`1 / amount` ns; see [`Rate`](super::Rate)).
    pub tat: u128,
    /// One log per rolling window of the policy, in order.
    pub windows: Vec<WindowLog>,
}

/// How full a bucket is at some moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    /// Units of water in the bucket (fractional while leaking).
    pub level: f64,
    /// Requests waiting to leave, `ceil(level)`; in police mode, the units
    /// not yet leaked.
    pub queue_size: u64,
    /// Units that could be admitted now (the least over all limits).
    pub remaining: u64,
    /// Time until every limit is back to full.
    pub reset_after: Nanos,
}

/// Decides `req` at `now`. On admission `state` moves on; otherwise it keeps
/// what it held (apart from forgetting window entries that have expired).
/// All limits of the policy admit together or not at all.
pub fn decide(policy: &Policy, state: &mut State, now: Nanos, req: Request) -> Decision {
    align(policy, state);
    for (w, log) in policy.windows().iter().zip(&mut state.windows) {
        log.prune(w, now);
    }
    if req.cost > policy.max_cost() {
        return finish(policy, state, now, Outcome::Exceeds, 0, 0, 0);
    }
    let window_ready = policy
        .windows()
        .iter()
        .zip(&state.windows)
        .map(|(w, log)| log.ready_at(w, req.cost))
        .max()
        .unwrap_or(0);
    let rate = policy.limit().rate();
    let now_t = rate.ticks(now);
    let ready = window_ready.saturating_sub(now);
    let plan = plan(policy, state.tat.saturating_sub(now_t), req, ready);
    if !plan.admit {
        return finish(
            policy,
            state,
            now,
            Outcome::Limited,
            0,
            plan.queue_position,
            plan.retry,
        );
    }
    state.tat = now_t.saturating_add(plan.excess);
    let depart = now.saturating_add(plan.wait);
    for (w, log) in policy.windows().iter().zip(&mut state.windows) {
        log.record(w, depart, req.cost);
    }
    finish(
        policy,
        state,
        now,
        Outcome::Allowed,
        plan.wait,
        plan.queue_position,
        0,
    )
}

/// The fast path for a policy without windows, whose whole state is `tat`:
/// returns the decision and the new `tat` if admitted. Decides exactly as
/// [`decide`] does, without building a [`State`].
// Only the word path's tests call it (their reference), besides the docs.
#[cfg_attr(not(test), allow(dead_code))]
#[inline(always)]
pub fn decide_tat(
    policy: &Policy,
    tat: u128,
    now: Nanos,
    req: Request,
) -> (Decision, Option<u128>) {
    debug_assert!(policy.windows().is_empty());
    let rate = policy.limit().rate();
    let now_t = rate.ticks(now);
    let excess = tat.saturating_sub(now_t);
    let bucket = |excess: u128| {
        let room = rate
            .cost_ticks(policy.limit().capacity())
            .saturating_sub(excess);
        (clamp_u64(rate.floor_units(room)), rate.ceil_ns(excess))
    };
    if req.cost > policy.limit().capacity() {
        let (remaining, reset_after) = bucket(excess);
        let d = Decision {
            outcome: Outcome::Exceeds,
            wait: 0,
            queue_position: 0,
            remaining,
            retry_after: 0,
            reset_after,
            quota: policy.quota(),
        };
        return (d, None);
    }
    let plan = plan(policy, excess, req, 0);
    let (outcome, excess, wait, retry_after, next) = if plan.admit {
        let next = now_t.saturating_add(plan.excess);
        (
            Outcome::Allowed,
            plan.excess,
            plan.wait,
            0,
            (next != tat).then_some(next),
        )
    } else {
        (Outcome::Limited, excess, 0, plan.retry, None)
    };
    let (remaining, reset_after) = bucket(excess);
    let d = Decision {
        outcome,
        wait,
        queue_position: plan.queue_position,
        remaining,
        retry_after,
        reset_after,
        quota: policy.quota(),
    };
    (d, next)
}

/// How full the bucket is at `now` (`state` is not changed).
pub fn level(policy: &Policy, state: &State, now: Nanos) -> Level {
    let rate = policy.limit().rate();
    let excess = state.tat.saturating_sub(rate.ticks(now));
    let mut live = state.clone();
    align(policy, &mut live);
    for (w, log) in policy.windows().iter().zip(&mut live.windows) {
        log.prune(w, now);
    }
    Level {
        level: excess as f64 / rate.period_ns() as f64,
        queue_size: clamp_u64(rate.ceil_units(excess)),
        remaining: remaining(policy, &live, now),
        reset_after: reset_after(policy, &live, now),
    }
}

/// True when the key holds nothing worth keeping at `now`: the bucket is
/// empty and every window is clear, so forgetting it changes no decision.
pub fn is_idle(policy: &Policy, state: &State, now: Nanos) -> bool {
    state.tat <= policy.limit().rate().ticks(now)
        && policy
            .windows()
            .iter()
            .zip(&state.windows)
            .all(|(w, log)| log.clear_at(w) <= now)
}

/// Moves `state`, kept under `old`, to `new` at `now`: the water in the
/// bucket stays (rounded up to the new rate's tick), and a window keeps its
/// log when the new policy has a window of the same period; other windows
/// start empty.
pub fn carry_over(old: &Policy, new: &Policy, state: &mut State, now: Nanos) {
    let (ro, rn) = (old.limit().rate(), new.limit().rate());
    let excess = state.tat.saturating_sub(ro.ticks(now));
    let moved = mul_div_ceil(excess, rn.period_ns(), ro.period_ns());
    state.tat = rn.ticks(now).saturating_add(moved);
    let mut logs = std::mem::take(&mut state.windows);
    logs.resize_with(old.windows().len(), WindowLog::default);
    state.windows = new
        .windows()
        .iter()
        .map(|w| {
            old.windows()
                .iter()
                .position(|o| o.period_ns() == w.period_ns())
                .map(|i| std::mem::take(&mut logs[i]))
                .unwrap_or_default()
        })
        .collect();
}

/// Where the bucket alone puts a request. Everything is relative to now:
/// water in ticks ahead of now, times in ns from now.
struct Plan {
    admit: bool,
    /// The water (ticks ahead of now) after admission.
    excess: u128,
    /// When the request leaves.
    wait: Nanos,
    /// When limited: when this request would be admitted if asked again.
    retry: Nanos,
    queue_position: u64,
}

/// The leaky bucket's part of a decision. `excess` is the water now (the
/// core's `tat - now`, in ticks) and `ready` the earliest time (ns from now)
/// the windows let the request leave.
#[inline(always)]
fn plan(policy: &Policy, excess: u128, req: Request, ready: Nanos) -> Plan {
    let rate = policy.limit().rate();
    let ready_t = rate.ticks(ready);
    let cost_t = rate.cost_ticks(req.cost);
    let cap_t = rate.cost_ticks(policy.limit().capacity());
    match policy.mode() {
        Mode::Police => {
            // Admitted at `go` when the bucket then has room for the cost.
            let go_t = ready_t.max(excess.saturating_add(cost_t).saturating_sub(cap_t));
            let go = rate.ceil_ns(go_t);
            let (admit, retry) = match req.max_wait {
                None => (go_t == 0, go),
                Some(w) => (go <= w, go.saturating_sub(w)),
            };
            Plan {
                admit,
                excess: excess.max(go_t).saturating_add(cost_t),
                wait: go,
                retry,
                queue_position: 0,
            }
        }
        Mode::Shape => {
            // Leaves when the water ahead of it has leaked (and the windows
            // allow); it must fit in the bucket when it joins the queue.
            let start_t = excess.max(ready_t);
            let new_excess = start_t.saturating_add(cost_t);
            let enter_t = new_excess.saturating_sub(cap_t);
            let depart = rate.ceil_ns(start_t);
            let (admit, retry) = match req.max_wait {
                None => (enter_t == 0, rate.ceil_ns(enter_t)),
                Some(w) => (depart <= w, depart.saturating_sub(w)),
            };
            Plan {
                admit,
                excess: new_excess,
                wait: depart,
                retry,
                queue_position: clamp_u64(rate.ceil_units(excess)).saturating_add(1),
            }
        }
    }
}

fn finish(
    policy: &Policy,
    state: &State,
    now: Nanos,
    outcome: Outcome,
    wait: Nanos,
    queue_position: u64,
    retry_after: Nanos,
) -> Decision {
    Decision {
        outcome,
        wait,
        queue_position,
        remaining: remaining(policy, state, now),
        retry_after,
        reset_after: reset_after(policy, state, now),
        quota: policy.quota(),
    }
}

/// Units admissible now: the least room over the bucket and the windows.
fn remaining(policy: &Policy, state: &State, now: Nanos) -> u64 {
    let rate = policy.limit().rate();
    let excess = state.tat.saturating_sub(rate.ticks(now));
    let room = rate
        .cost_ticks(policy.limit().capacity())
        .saturating_sub(excess);
    let bucket = clamp_u64(rate.floor_units(room));
    policy
        .windows()
        .iter()
        .zip(&state.windows)
        .map(|(w, log)| w.limit().saturating_sub(log.used()))
        .fold(bucket, u64::min)
}

/// Time until the bucket is empty and every window clear.
fn reset_after(policy: &Policy, state: &State, now: Nanos) -> Nanos {
    let rate = policy.limit().rate();
    let empty_in = rate.ceil_ns(state.tat.saturating_sub(rate.ticks(now)));
    policy
        .windows()
        .iter()
        .zip(&state.windows)
        .map(|(w, log)| log.clear_at(w).saturating_sub(now))
        .fold(empty_in, u64::max)
}

/// Gives `state` one log per window of `policy`.
fn align(policy: &Policy, state: &mut State) {
    state
        .windows
        .resize_with(policy.windows().len(), WindowLog::default);
}

fn clamp_u64(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}
