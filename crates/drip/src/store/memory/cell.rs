//! One key: the epoch its state was written in, the state, and counters.
//!
//! A decision reads the policy through the key's own epoch, so the fast path
//! takes no lock and touches no reference count: one load of the key's
//! word, the arithmetic, one compare-and-swap (as in governor), and one
//! counter unless counting is off.
//! Anything else (the key's epoch was replaced, or its word cannot hold the
//! next `tat`) needs exclusive access to the entry: `Step::Settle`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::epoch::Epoch;
use crate::core::{self, Answer, Decision, Nanos, Request, State};
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

/// One key. The common form is two words (the epoch and `tat`) plus an
/// optional pointer to the counters, so a map entry stays small: entry size
/// is what a decision over many keys pays for most (cache lines fetched and
/// written back).
pub(super) enum Slot {
    /// `tat` in one atomic word, decided by a compare-and-swap loop. Used
    /// for policies without windows while `tat` fits 64 bits: about 584
    /// years of nanoseconds for whole-nanosecond rates (amount 1), less for
    /// rates whose ticks are finer.
    Word {
        epoch: Arc<Epoch>,
        tat: AtomicU64,
        counts: Option<Box<Counts>>,
    },
    /// Windows, or a `tat` beyond 64 bits: a state behind a lock.
    Locked(Box<Locked>),
}

pub(super) struct Locked {
    epoch: Arc<Epoch>,
    state: Mutex<State>,
    counts: Option<Counts>,
}

/// A key's allowed and rejected requests (absent when not counting).
#[derive(Default)]
pub(super) struct Counts {
    allowed: AtomicU64,
    rejected: AtomicU64,
}

impl Counts {
    fn new(c: Counters) -> Counts {
        Counts {
            allowed: AtomicU64::new(c.allowed),
            rejected: AtomicU64::new(c.rejected),
        }
    }

    #[inline(always)]
    fn add(&self, allowed: bool) {
        let counter = if allowed {
            &self.allowed
        } else {
            &self.rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> Counters {
        Counters {
            allowed: self.allowed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

impl Slot {
    /// An empty key, counting its requests if `counting`.
    pub(super) fn new(epoch: Arc<Epoch>, counting: bool) -> Slot {
        let counters = counting.then(Counters::default);
        Slot::with_state(epoch, State::default(), counters, false)
    }

    fn with_state(
        epoch: Arc<Epoch>,
        state: State,
        counters: Option<Counters>,
        locked: bool,
    ) -> Slot {
        match u64::try_from(state.tat) {
            Ok(tat) if !locked && epoch.policy.windows().is_empty() => Slot::Word {
                epoch,
                tat: AtomicU64::new(tat),
                counts: counters.map(|c| Box::new(Counts::new(c))),
            },
            _ => Slot::Locked(Box::new(Locked {
                epoch,
                state: Mutex::new(state),
                counts: counters.map(Counts::new),
            })),
        }
    }

    fn epoch(&self) -> &Arc<Epoch> {
        match self {
            Slot::Word { epoch, .. } => epoch,
            Slot::Locked(l) => &l.epoch,
        }
    }

    /// The common case, small enough to inline into every caller: a word
    /// key, current, whose numbers fit 64 bits. Decides and counts it, or
    /// answers `None` (nothing done) for [`decide`](Self::decide).
    #[inline(always)]
    pub(super) fn decide_fast<A: Answer>(&self, now: Nanos, req: Request) -> Option<A> {
        let Slot::Word { epoch, tat, counts } = self else {
            return None;
        };
        let word = epoch.word.as_ref()?;
        if !epoch.is_current() {
            return None;
        }
        let mut cur = tat.load(Ordering::Acquire);
        loop {
            let (answer, next) = word.answer::<A>(cur, now, req)?;
            if let Some(next) = next {
                if let Err(seen) =
                    tat.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
                {
                    cur = seen;
                    continue;
                }
            }
            if let Some(c) = counts {
                c.add(answer.allowed());
            }
            return Some(answer);
        }
    }

    /// Decides `req` at `now` under the key's epoch, if it is current, and
    /// counts it. Out of line: the common case is `decide_fast`.
    #[inline(never)]
    pub(super) fn decide(&self, now: Nanos, req: Request) -> Step {
        match self {
            Slot::Word { epoch, tat, counts } => {
                if !epoch.is_current() {
                    return Step::Settle { grow: false };
                }
                let mut cur = tat.load(Ordering::Acquire);
                let decision = loop {
                    let Some((decision, next)) = decide_word(epoch, cur, now, req) else {
                        return Step::Settle { grow: true };
                    };
                    let Some(next) = next else { break decision };
                    match tat.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => break decision,
                        Err(seen) => cur = seen,
                    }
                };
                if let Some(c) = counts {
                    c.add(decision.allowed());
                }
                Step::Done(decision)
            }
            Slot::Locked(l) => {
                if !l.epoch.is_current() {
                    return Step::Settle { grow: false };
                }
                let decision = core::decide(&l.epoch.policy, &mut l.state.lock(), now, req);
                if let Some(c) = &l.counts {
                    c.add(decision.allowed());
                }
                Step::Done(decision)
            }
        }
    }

    /// With exclusive access: carries the key over to the latest epoch (the
    /// kind of slot follows the policy), and moves it to a locked slot if
    /// `grow`.
    pub(super) fn settle(&mut self, grow: bool) {
        if self.epoch().is_current() && !grow {
            return;
        }
        let counting = match self {
            Slot::Word { counts, .. } => counts.is_some(),
            Slot::Locked(l) => l.counts.is_some(),
        };
        let (epoch, state, counters) = self.view();
        *self = Slot::with_state(epoch, state, counting.then_some(counters), grow);
    }

    /// True when the key, settled, holds nothing worth keeping at `now`.
    pub(super) fn is_idle(&self, now: Nanos) -> bool {
        match self {
            Slot::Word { epoch, tat, .. } => core::is_idle(&epoch.policy, &word_state(tat), now),
            Slot::Locked(l) => core::is_idle(&l.epoch.policy, &l.state.lock(), now),
        }
    }

    /// The key as of the latest epoch (carried over in a copy if need be),
    /// with that epoch.
    pub(super) fn view(&self) -> (Arc<Epoch>, State, Counters) {
        let (state, counts) = match self {
            Slot::Word { tat, counts, .. } => (word_state(tat), counts.as_deref()),
            Slot::Locked(l) => (l.state.lock().clone(), l.counts.as_ref()),
        };
        let counters = counts.map(Counts::get).unwrap_or_default();
        Epoch::carry(self.epoch(), state, counters)
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

fn word_state(tat: &AtomicU64) -> State {
    State {
        tat: u128::from(tat.load(Ordering::Acquire)),
        windows: Vec::new(),
    }
}
