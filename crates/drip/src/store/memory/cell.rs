//! One key's state and counters, and how a decision changes them.
//!
//! A key carries the epoch its state was written in. A decision in a later
//! epoch first carries the state over (`Epoch::carry`) in the same atomic
//! step that a decision would use (a compare-and-swap of the word, or under
//! the key's lock), so it never blocks on other keys. Only a change between
//! the two kinds of key (adding or removing windows) needs exclusive access
//! to the entry, and reports `Step::Rebuild`.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use portable_atomic::AtomicU128;

use super::epoch::Epoch;
use crate::core::{self, Decision, Nanos, Policy, Request, State};
use crate::store::Counters;

/// Bits of a word holding `tat`; the top 32 hold the epoch.
const TAT_BITS: u32 = 96;
const TAT_MASK: u128 = (1 << TAT_BITS) - 1;

/// True when a policy's keys fit one atomic word: no windows, and ticks of
/// at most 2^32 per ns, so `tat` (ns × amount) stays below 2^96.
fn fits_word(policy: &Policy) -> bool {
    policy.windows().is_empty() && policy.limit().rate().amount() <= u32::MAX as u64
}

fn pack(epoch: u32, tat: u128) -> u128 {
    ((epoch as u128) << TAT_BITS) | tat.min(TAT_MASK)
}

fn unpack(word: u128) -> (u32, u128) {
    ((word >> TAT_BITS) as u32, word & TAT_MASK)
}

/// One key's state, tagged with the epoch it was written in.
enum Cell {
    /// `[epoch:32 | tat:96]` in one atomic word, decided by a
    /// compare-and-swap loop as in governor.
    Word(AtomicU128),
    /// A policy with windows (or a very fine rate): a state behind a lock.
    /// Boxed, so the common case's entry stays small.
    Locked(Box<Mutex<(u32, State)>>),
}

/// What a step on a slot came to.
pub(super) enum Step<T> {
    Done(T),
    /// The new policy needs the other kind of cell: rebuild the entry with
    /// exclusive access (`Slot::rebuild`), then try again.
    Rebuild,
    /// The caller's epoch is older than the key's: load the current one.
    Reload,
}

/// One key: its state and counters.
pub(super) struct Slot {
    cell: Cell,
    allowed: AtomicU64,
    rejected: AtomicU64,
}

impl Slot {
    pub(super) fn new(epoch: &Epoch) -> Slot {
        Slot::with_state(epoch, State::default(), Counters::default())
    }

    fn with_state(epoch: &Epoch, state: State, counters: Counters) -> Slot {
        let cell = if fits_word(&epoch.policy) {
            Cell::Word(AtomicU128::new(pack(epoch.id, state.tat)))
        } else {
            Cell::Locked(Box::new(Mutex::new((epoch.id, state))))
        };
        Slot {
            cell,
            allowed: AtomicU64::new(counters.allowed),
            rejected: AtomicU64::new(counters.rejected),
        }
    }

    /// Decides `req` in `epoch` at `now`, carrying the key over first if it
    /// was written in an earlier epoch.
    pub(super) fn decide(&self, epoch: &Epoch, now: Nanos, req: Request) -> Step<Decision> {
        let decision = match self.step(epoch, Some((now, req))) {
            Step::Done(d) => d,
            Step::Rebuild => return Step::Rebuild,
            Step::Reload => return Step::Reload,
        };
        let Some(decision) = decision else {
            return Step::Rebuild;
        };
        let counter = if decision.allowed() {
            &self.allowed
        } else {
            &self.rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Step::Done(decision)
    }

    /// Carries the key over to `epoch` without deciding anything.
    pub(super) fn carry_over(&self, epoch: &Epoch) -> Step<()> {
        match self.step(epoch, None) {
            Step::Done(_) => Step::Done(()),
            Step::Rebuild => Step::Rebuild,
            Step::Reload => Step::Reload,
        }
    }

    /// The one place a key's state changes: carry over to `epoch` if need
    /// be, then decide `request` if given.
    fn step(&self, epoch: &Epoch, request: Option<(Nanos, Request)>) -> Step<Option<Decision>> {
        match &self.cell {
            Cell::Word(word) => {
                let mut cur = word.load(Ordering::Acquire);
                loop {
                    let (id, tat) = unpack(cur);
                    let next = if id != epoch.id {
                        if epoch.is_older_than(id) {
                            return Step::Reload;
                        }
                        if !fits_word(&epoch.policy) {
                            return Step::Rebuild;
                        }
                        let state = State {
                            tat,
                            windows: Vec::new(),
                        };
                        match epoch.carry(id, state) {
                            Some(s) => pack(epoch.id, s.tat),
                            // Reset since: this key's counters go too.
                            None => return Step::Rebuild,
                        }
                    } else {
                        let Some((now, req)) = request else {
                            return Step::Done(None);
                        };
                        let (decision, next) = core::decide_tat(&epoch.policy, tat, now, req);
                        match next {
                            Some(next) => {
                                let next = pack(id, next);
                                if word
                                    .compare_exchange_weak(
                                        cur,
                                        next,
                                        Ordering::AcqRel,
                                        Ordering::Acquire,
                                    )
                                    .is_ok()
                                {
                                    return Step::Done(Some(decision));
                                }
                                cur = word.load(Ordering::Acquire);
                                continue;
                            }
                            None => return Step::Done(Some(decision)),
                        }
                    };
                    // Carried over: install it, then go round to decide.
                    match word.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => cur = next,
                        Err(seen) => cur = seen,
                    }
                }
            }
            Cell::Locked(m) => {
                let mut guard = m.lock();
                let (id, state) = &mut *guard;
                if *id != epoch.id {
                    if epoch.is_older_than(*id) {
                        return Step::Reload;
                    }
                    if fits_word(&epoch.policy) {
                        return Step::Rebuild;
                    }
                    match epoch.carry(*id, std::mem::take(state)) {
                        Some(s) => *state = s,
                        None => return Step::Rebuild,
                    }
                    *id = epoch.id;
                }
                Step::Done(request.map(|(now, req)| core::decide(&epoch.policy, state, now, req)))
            }
        }
    }

    /// Moves the key to `epoch` (the current one) with exclusive access:
    /// rebuilds its cell when the kind changes, and empties it (counters
    /// too) when the bucket was reset since it was written.
    pub(super) fn rebuild(&mut self, epoch: &Epoch) {
        let (id, state) = self.tagged_state();
        if id == epoch.id || epoch.is_older_than(id) {
            return;
        }
        *self = match epoch.carry(id, state) {
            Some(state) => Slot::with_state(epoch, state, self.counters()),
            None => Slot::new(epoch),
        };
    }

    fn tagged_state(&self) -> (u32, State) {
        match &self.cell {
            Cell::Word(word) => {
                let (id, tat) = unpack(word.load(Ordering::Acquire));
                let windows = Vec::new();
                (id, State { tat, windows })
            }
            Cell::Locked(m) => m.lock().clone(),
        }
    }

    /// The key's state and counters as of `epoch` (carried over in a copy
    /// if need be); `None` if the key is already in a later epoch.
    pub(super) fn view(&self, epoch: &Epoch) -> Option<(State, Counters)> {
        let (id, state) = self.tagged_state();
        if id == epoch.id {
            return Some((state, self.counters()));
        }
        if epoch.is_older_than(id) {
            return None;
        }
        Some(match epoch.carry(id, state) {
            Some(state) => (state, self.counters()),
            None => Default::default(),
        })
    }

    fn counters(&self) -> Counters {
        Counters {
            allowed: self.allowed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}
