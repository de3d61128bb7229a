//! One key: the epoch its state was written in, the state, and counters.
//!
//! A decision reads the policy through the key's own epoch, so the fast path
//! takes no lock and touches no reference count: one load of the key's
//! word, the arithmetic, one compare-and-swap (as in governor), one counter.
//! Anything else (the key's epoch was replaced, or its word cannot hold the
//! next `tat`) needs exclusive access to the entry: `Step::Settle`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::epoch::Epoch;
use crate::core::{self, Decision, Nanos, Request, State};
use crate::store::Counters;

/// What a decision on a slot came to.
pub(super) enum Step {
    Done(Decision),
    /// Settle the slot with exclusive access ([`Slot::settle`], passing
    /// `grow` on), then decide again.
    Settle {
        grow: bool,
    },
}

/// One key's state.
enum Cell {
    /// `tat` in one atomic word, decided by a compare-and-swap loop. Used
    /// for policies without windows while `tat` fits 64 bits: about 584
    /// years of nanoseconds for whole-nanosecond rates (amount 1), less for
    /// rates whose ticks are finer.
    Word(AtomicU64),
    /// Windows, or a `tat` beyond 64 bits: a state behind a lock. Boxed, so
    /// the common case's entry stays small.
    Locked(Box<Mutex<State>>),
}

/// One key: its epoch, state and counters.
pub(super) struct Slot {
    epoch: Arc<Epoch>,
    cell: Cell,
    allowed: AtomicU64,
    rejected: AtomicU64,
}

impl Slot {
    pub(super) fn new(epoch: Arc<Epoch>) -> Slot {
        Slot::with_state(epoch, State::default(), Counters::default(), false)
    }

    fn with_state(epoch: Arc<Epoch>, state: State, counters: Counters, locked: bool) -> Slot {
        let word = match u64::try_from(state.tat) {
            Ok(tat) if !locked && epoch.policy.windows().is_empty() => Some(tat),
            _ => None,
        };
        let cell = match word {
            Some(tat) => Cell::Word(AtomicU64::new(tat)),
            None => Cell::Locked(Box::new(Mutex::new(state))),
        };
        Slot {
            epoch,
            cell,
            allowed: AtomicU64::new(counters.allowed),
            rejected: AtomicU64::new(counters.rejected),
        }
    }

    /// Decides `req` at `now` under the key's epoch, if it is current, and
    /// counts it if `count`.
    #[inline(always)]
    pub(super) fn decide(&self, now: Nanos, req: Request, count: bool) -> Step {
        if !self.epoch.is_current() {
            return Step::Settle { grow: false };
        }
        let policy = &self.epoch.policy;
        let decision = match &self.cell {
            Cell::Word(word) => {
                let mut cur = word.load(Ordering::Acquire);
                loop {
                    let Some((decision, next)) = decide_word(&self.epoch, cur, now, req) else {
                        return Step::Settle { grow: true };
                    };
                    let Some(next) = next else { break decision };
                    match word.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => break decision,
                        Err(seen) => cur = seen,
                    }
                }
            }
            Cell::Locked(m) => core::decide(policy, &mut m.lock(), now, req),
        };
        if count {
            let counter = if decision.allowed() {
                &self.allowed
            } else {
                &self.rejected
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Step::Done(decision)
    }

    /// With exclusive access: carries the key over to the latest epoch (the
    /// kind of cell follows the policy), and moves it to a locked cell if
    /// `grow`.
    pub(super) fn settle(&mut self, grow: bool) {
        if self.epoch.is_current() && !grow {
            return;
        }
        let (epoch, state, counters) = self.view();
        *self = Slot::with_state(epoch, state, counters, grow);
    }

    /// True when the key, settled, holds nothing worth keeping at `now`.
    pub(super) fn is_idle(&self, now: Nanos) -> bool {
        let policy = &self.epoch.policy;
        match &self.cell {
            Cell::Word(word) => core::is_idle(policy, &word_state(word), now),
            Cell::Locked(m) => core::is_idle(policy, &m.lock(), now),
        }
    }

    /// The key as of the latest epoch (carried over in a copy if need be),
    /// with that epoch.
    pub(super) fn view(&self) -> (Arc<Epoch>, State, Counters) {
        let state = match &self.cell {
            Cell::Word(word) => word_state(word),
            Cell::Locked(m) => m.lock().clone(),
        };
        let counters = Counters {
            allowed: self.allowed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        };
        Epoch::carry(&self.epoch, state, counters)
    }
}

/// Decides for a key kept in a word: in 64-bit arithmetic where it fits,
/// else by the general path; `None` if the next `tat` needs more than 64
/// bits.
#[inline(always)]
fn decide_word(
    epoch: &Epoch,
    tat: u64,
    now: Nanos,
    req: Request,
) -> Option<(Decision, Option<u64>)> {
    if let Some(fast) = epoch.word.as_ref().and_then(|w| w.decide(tat, now, req)) {
        return Some(fast);
    }
    let (decision, next) = core::decide_tat(&epoch.policy, u128::from(tat), now, req);
    match next {
        Some(next) => Some((decision, Some(u64::try_from(next).ok()?))),
        None => Some((decision, None)),
    }
}

fn word_state(word: &AtomicU64) -> State {
    State {
        tat: u128::from(word.load(Ordering::Acquire)),
        windows: Vec::new(),
    }
}
