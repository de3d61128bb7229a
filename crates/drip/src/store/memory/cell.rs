//! One key: its state, the epoch that state was written in, and counters.
//!
//! A key is one 64-bit word in the map, as in governor, so a map entry of a
//! `u64` key is 16 bytes (entry size is what deciding over many keys pays
//! for most: cache lines fetched and written back). The word is either
//!
//! - **inline**: `tag:7 | state:56 | 1`, the state being the key's `tat`
//!   in ticks since its epoch's base and the tag naming the epoch (see
//!   `epoch.rs`). Uncounted keys of policies without windows whose full
//!   bucket fits `INLINE_CAP_TICKS`. A decision reads the current epoch's
//!   numbers from the bucket's lock-free copy, checks the tag, decides in
//!   64-bit arithmetic and writes the word back by compare-and-swap; or
//! - **boxed**: a pointer (its low bit clear; the next bit tells which
//!   kind) to a key holding its epoch: a [`WordKey`]
//!   with counters (the memory store's keys) or a full bucket too large to
//!   be inline, still decided by compare-and-swap; or a [`LockedKey`], a
//!   state behind a lock (windows, or a `tat` beyond 64 bits).
//!
//! Anything else (the key's epoch was replaced, it needs another form, or
//! the bucket needs a rebase) is `Step::Settle` / `Step::Rebase`, done with
//! exclusive access to the entry, which is also the only time a box is
//! replaced or freed: readers hold the map's shard lock, so a box they see
//! stays alive while they use it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::epoch::{Epoch, Epochs, TAGS};
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
    /// The bucket's epoch is too far from now: rebase, then decide again.
    Rebase,
}

/// Bits of an inline state.
const STATE_BITS: u32 = 56;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;
/// Where an inline word keeps its tag.
const TAG_SHIFT: u32 = STATE_BITS + 1;
const _: () = assert!(TAGS <= 1 << (64 - TAG_SHIFT));

/// One key: an inline word (low bit set) or a pointer to a boxed key
/// ([`WordKey`], or [`LockedKey`] with the second bit set). It owns the box
/// (freed on drop), which holds only `Send + Sync` parts.
pub(super) struct Slot(AtomicU64);

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<WordKey>();
    send_sync::<LockedKey>();
};

/// Marks a pointer to a [`LockedKey`]: both kinds are aligned to 4 or more,
/// so a pointer's two low bits are free.
const LOCKED: u64 = 0b10;
const _: () = assert!(align_of::<WordKey>() >= 4 && align_of::<LockedKey>() >= 4);

/// A boxed word: `tat` in ticks since its epoch's base, decided by
/// compare-and-swap.
pub(super) struct WordKey {
    epoch: Arc<Epoch>,
    tat: AtomicU64,
    counts: Option<Counts>,
}

/// Windows, or a `tat` beyond 64 bits: a whole state behind a lock.
pub(super) struct LockedKey {
    epoch: Arc<Epoch>,
    state: Mutex<State>,
    counts: Option<Counts>,
}

/// What a slot's word holds.
enum Form<'a> {
    Inline { tag: u64, state: u64 },
    Word(&'a WordKey),
    Locked(&'a LockedKey),
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

/// The bits an inline word of `tag` has whatever its state: its tag and
/// the mark. A word `w` is an inline word of `tag` iff `w & HEAD == head(tag)`.
const HEAD: u64 = !(STATE_MASK << 1);

#[inline(always)]
pub(super) fn head(tag: u64) -> u64 {
    (tag << TAG_SHIFT) | 1
}

#[inline(always)]
fn inline_word(tag: u64, state: u64) -> u64 {
    debug_assert!(tag < TAGS && state <= STATE_MASK);
    head(tag) | (state << 1)
}

impl Slot {
    /// An empty key of the current epoch, counting its requests if
    /// `counting`.
    pub(super) fn new(epochs: &Epochs, counting: bool) -> Slot {
        let empty = epochs.empty_inline();
        if !counting && empty != 0 {
            return Slot(AtomicU64::new(empty));
        }
        let epoch = epochs.current();
        let counters = counting.then(Counters::default);
        Slot::with_state(epoch, State::default(), counters, 0)
    }

    /// The slot for `state` under `epoch`, in the narrowest form allowed
    /// and at least as wide as `min_width` (0 inline, 1 boxed word, 2
    /// locked).
    fn with_state(
        epoch: Arc<Epoch>,
        state: State,
        counters: Option<Counters>,
        min_width: u8,
    ) -> Slot {
        let word = (min_width < 2 && epoch.word.is_some())
            .then(|| epoch.word_of_state(&state))
            .flatten();
        match word {
            Some(w) if min_width == 0 && counters.is_none() && epoch.inline && w <= STATE_MASK => {
                Slot(AtomicU64::new(inline_word(epoch.tag(), w)))
            }
            Some(w) => {
                let key = Box::new(WordKey {
                    epoch,
                    tat: AtomicU64::new(w),
                    counts: counters.map(Counts::new),
                });
                Slot(AtomicU64::new(Box::into_raw(key) as usize as u64))
            }
            None => {
                let key = Box::new(LockedKey {
                    epoch,
                    state: Mutex::new(state),
                    counts: counters.map(Counts::new),
                });
                Slot(AtomicU64::new(Box::into_raw(key) as usize as u64 | LOCKED))
            }
        }
    }

    #[inline(always)]
    fn form(&self) -> Form<'_> {
        self.form_of(self.0.load(Ordering::Acquire))
    }

    /// What `w`, a value of this slot's word, holds.
    #[inline(always)]
    fn form_of(&self, w: u64) -> Form<'_> {
        // SAFETY (both pointers): an unmarked word is a pointer from
        // `with_state`, freed only by `Drop` or `settle`, which take
        // `&mut self`; the `&self` this borrow comes from keeps it alive.
        if w & 1 == 0 && w & LOCKED == 0 {
            Form::Word(unsafe { &*(w as usize as *const WordKey) })
        } else if w & 1 == 0 {
            Form::Locked(unsafe { &*((w & !LOCKED) as usize as *const LockedKey) })
        } else {
            Form::Inline {
                tag: w >> TAG_SHIFT,
                state: (w >> 1) & STATE_MASK,
            }
        }
    }

    /// The tag of an inline key (`None` if boxed).
    #[cfg(test)]
    pub(super) fn inline_tag(&self) -> Option<u64> {
        match self.form() {
            Form::Inline { tag, .. } => Some(tag),
            Form::Word(_) | Form::Locked(_) => None,
        }
    }

    /// The common cases, small enough to inline into every caller: a key
    /// of the current epoch in 64-bit reach (inline, or a boxed word).
    /// Decides and counts it, or answers `None` (nothing done) for
    /// [`decide`](Self::decide).
    #[inline(always)]
    pub(super) fn decide_fast<A: Answer>(
        &self,
        epochs: &Epochs,
        now: Nanos,
        req: Request,
    ) -> Option<A> {
        let w = self.0.load(Ordering::Acquire);
        if w & 1 == 0 {
            return match self.form_of(w) {
                Form::Word(key) => key.decide_fast(now, req),
                _ => None,
            };
        }
        loop {
            // The word is read again within the epoch's read, so a matching
            // tag names that epoch (not one whose tag it reused).
            let (fast, cur) = epochs.fast(&self.0);
            // Another tag, or a box now (its low bit is clear).
            if cur & HEAD != fast.head {
                return None;
            }
            // Before the base, `since` wraps past the bound too.
            let since = now.wrapping_sub(fast.base);
            if since > fast.max_since_base {
                return None;
            }
            let state = (cur >> 1) & STATE_MASK;
            let (answer, next) = fast.word.answer::<A>(state, since, req)?;
            if let Some(next) = next {
                if next > STATE_MASK {
                    return None;
                }
                let new = fast.head | (next << 1);
                let swapped =
                    self.0
                        .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed);
                if swapped.is_err() {
                    continue;
                }
            }
            return Some(answer);
        }
    }

    /// Decides `req` at `now` if the key's epoch is current, and counts it.
    /// Out of line: the common cases are `decide_fast`.
    #[inline(never)]
    pub(super) fn decide(&self, epochs: &Epochs, now: Nanos, req: Request) -> Step {
        let w = self.0.load(Ordering::Acquire);
        match self.form_of(w) {
            Form::Inline { tag, state } => {
                let epoch = epochs.current();
                // Unchanged since before `current` was read: then a matching
                // tag names that epoch (as in `Epochs::fast`).
                if epoch.tag() != tag || !epoch.inline || self.0.load(Ordering::Acquire) != w {
                    return Step::Settle { grow: false };
                }
                if epoch.needs_rebase(now) {
                    return Step::Rebase;
                }
                match decide_word(&epoch, state, now, req) {
                    Some((d, None)) => Step::Done(d),
                    Some((d, Some(next))) if next <= STATE_MASK => {
                        let (old, new) = (inline_word(tag, state), inline_word(tag, next));
                        match self
                            .0
                            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
                        {
                            Ok(_) => Step::Done(d),
                            // Raced: begin again (the caller settles and retries).
                            Err(_) => Step::Settle { grow: false },
                        }
                    }
                    // The next state needs more bits than an inline word has.
                    _ => Step::Settle { grow: true },
                }
            }
            Form::Word(key) => key.decide(now, req),
            Form::Locked(key) => key.decide(now, req),
        }
    }

    /// With exclusive access: carries the key over to the latest epoch (the
    /// form follows the policy), and moves it to a wider form if `grow`.
    pub(super) fn settle(&mut self, epochs: &Epochs, grow: bool) {
        let (width, counting, current) = match self.form() {
            Form::Inline { tag, .. } => (0, false, epochs.by_tag(tag).is_current()),
            Form::Word(key) => (1, key.counts.is_some(), key.epoch.is_current()),
            Form::Locked(key) => (2, key.counts.is_some(), key.epoch.is_current()),
        };
        if current && !grow {
            return;
        }
        let (epoch, state, counters) = self.view(epochs);
        let min_width = if grow { (width + 1).min(2) } else { 0 };
        *self = Slot::with_state(epoch, state, counting.then_some(counters), min_width);
    }

    /// Carries an inline key of an earlier epoch over to the latest, in
    /// place, with only shared access: the pass before a tag is reused.
    /// (Its next form may be a box: publishing one by compare-and-swap is
    /// safe under shared access; only freeing one is not, and an inline key
    /// owns none.)
    pub(super) fn carry_inline(&self, epochs: &Epochs) {
        loop {
            let cur = self.0.load(Ordering::Acquire);
            let Form::Inline { tag, state } = self.form_of(cur) else {
                return;
            };
            let epoch = epochs.by_tag(tag);
            if epoch.is_current() {
                return;
            }
            let state = epoch.state_of_word(state);
            let (latest, state, _) = Epoch::carry(&epoch, state, Counters::default());
            let next = Slot::with_state(latest, state, None, 0);
            let word = next.0.load(Ordering::Relaxed);
            if self
                .0
                .compare_exchange(cur, word, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // The slot owns the new form now.
                std::mem::forget(next);
                return;
            }
        }
    }

    /// True when the key, settled, holds nothing worth keeping at `now`.
    pub(super) fn is_idle(&self, epochs: &Epochs, now: Nanos) -> bool {
        let (epoch, state, _) = self.view(epochs);
        core::is_idle(&epoch.policy, &state, now)
    }

    /// The key as of the latest epoch (carried over in a copy if need be),
    /// with that epoch.
    pub(super) fn view(&self, epochs: &Epochs) -> (Arc<Epoch>, State, Counters) {
        let (epoch, state, counts) = match self.form() {
            Form::Inline { tag, state } => {
                let epoch = epochs.by_tag(tag);
                let state = epoch.state_of_word(state);
                (epoch, state, None)
            }
            Form::Word(key) => (
                key.epoch.clone(),
                key.epoch.state_of_word(key.tat.load(Ordering::Acquire)),
                key.counts.as_ref(),
            ),
            Form::Locked(key) => (
                key.epoch.clone(),
                key.state.lock().clone(),
                key.counts.as_ref(),
            ),
        };
        let counters = counts.map(Counts::get).unwrap_or_default();
        Epoch::carry(&epoch, state, counters)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let w = *self.0.get_mut();
        // SAFETY: an unmarked word is a pointer from `with_state`, owned by
        // this slot alone; `&mut self` means no reader holds it.
        if w & 1 == 0 && w & LOCKED == 0 {
            drop(unsafe { Box::from_raw(w as usize as *mut WordKey) });
        } else if w & 1 == 0 {
            drop(unsafe { Box::from_raw((w & !LOCKED) as usize as *mut LockedKey) });
        }
    }
}

impl WordKey {
    /// Decided and counted if of the current epoch and in 64-bit reach;
    /// `None` otherwise.
    #[inline(always)]
    fn decide_fast<A: Answer>(&self, now: Nanos, req: Request) -> Option<A> {
        let WordKey { epoch, tat, counts } = self;
        let word = epoch.word.as_ref()?;
        if !epoch.is_current() {
            return None;
        }
        let since = now.wrapping_sub(epoch.base);
        if since > epoch.max_since_base {
            return None;
        }
        let mut cur = tat.load(Ordering::Acquire);
        loop {
            let (answer, next) = word.answer::<A>(cur, since, req)?;
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

    fn decide(&self, now: Nanos, req: Request) -> Step {
        let WordKey { epoch, tat, counts } = self;
        if !epoch.is_current() {
            return Step::Settle { grow: false };
        }
        if epoch.needs_rebase(now) {
            return Step::Rebase;
        }
        let mut cur = tat.load(Ordering::Acquire);
        let decision = loop {
            let Some((decision, next)) = decide_word(epoch, cur, now, req) else {
                return Step::Settle { grow: true };
            };
            let Some(next) = next else { break decision };
            match tat.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break decision,
                Err(seen) => cur = seen,
            }
        };
        if let Some(c) = counts {
            c.add(decision.allowed());
        }
        Step::Done(decision)
    }
}

impl LockedKey {
    fn decide(&self, now: Nanos, req: Request) -> Step {
        if !self.epoch.is_current() {
            return Step::Settle { grow: false };
        }
        let decision = core::decide(&self.epoch.policy, &mut self.state.lock(), now, req);
        if let Some(c) = &self.counts {
            c.add(decision.allowed());
        }
        Step::Done(decision)
    }
}

/// Decides for a word state (ticks since `epoch`'s base) by the general
/// path: the decision and the next word state if it changed; `None` if that
/// needs more than 64 bits. `epoch` has no windows.
fn decide_word(
    epoch: &Epoch,
    word: u64,
    now: Nanos,
    req: Request,
) -> Option<(Decision, Option<u64>)> {
    let state = epoch.state_of_word(word);
    let (decision, next) = core::decide_tat(&epoch.policy, state.tat, now, req);
    match next {
        Some(tat) => {
            let next = epoch.word_of_state(&State {
                tat,
                windows: Vec::new(),
            })?;
            Some((decision, Some(next)))
        }
        None => Some((decision, None)),
    }
}
