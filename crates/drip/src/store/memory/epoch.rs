//! Policy epochs. A bucket's policy changes by appending a new epoch to a
//! chain; each key's state is kept in the epoch it was written in and is
//! carried over, change by change, when next touched (or swept), so a
//! reconfiguration never waits for decisions nor they for it.
//!
//! A key names its epoch in one of two ways (see `cell.rs`): an inline key
//! (one 64-bit word) by a 7-bit tag, looked up in [`Epochs`]' ring of the
//! last 128 epochs; a boxed key by holding the epoch itself. So that a tag
//! is never reused while a key still bears it, every 64th epoch is
//! preceded by a pass that carries every inline key to the current epoch
//! (`KeyedBucket::push_epoch`, under shared locks): live inline keys then
//! span at most 66 epochs.
//!
//! Word states are kept relative to their epoch's `base`, 2^53 ticks
//! before the epoch began, so they stay small however long the process
//! runs: ticks since `base`, not since the clock's origin. When `now` has
//! moved 2^55 ticks past `base` (about 13 s into the epoch for a 1 GiB/s
//! byte rate, 300 days at whole-nanosecond rates) the bucket appends an
//! epoch with the same policy and a fresh base (a rebase), and keys carry
//! over to it as to any other change. The lag keeps decisions exact for a
//! clock that steps back by less than 2^53 ticks (4 s at 1 GiB/s, 104 days
//! at whole-nanosecond rates); one stepping back further finds fresh keys
//! as if filled up to the base.

use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use parking_lot::RwLock;

use super::cell::head;
use crate::core::{self, Nanos, Policy, State, WordPolicy};
use crate::store::Counters;

/// Tags: a key's epoch id modulo this (fits the 7 bits an inline word has).
pub(super) const TAGS: u64 = 128;

/// Every epoch whose id is a multiple of this is preceded by a pass that
/// carries every key over, so live keys span fewer than `TAGS` ids.
pub(super) const PASS_EVERY: u64 = 64;

/// A bucket rebases when `now` is this many ticks past its epoch's base.
const REBASE_TICKS: u64 = 1 << 55;

/// A new epoch's base lies this many ticks before its start, so that a
/// clock stepping back by up to that much still finds the base behind it.
const LAG_TICKS: u64 = 1 << 53;

/// The largest full bucket (in ticks) an inline word serves: with `now`
/// below `REBASE_TICKS` past the base, a word's state stays below 2^56.
pub(super) const INLINE_CAP_TICKS: u64 = 1 << 54;

/// One policy of a bucket, from `at` until its successor's `at`.
pub(super) struct Epoch {
    pub(super) policy: Policy,
    /// The policy precomputed for the 64-bit path, when it allows one.
    pub(super) word: Option<WordPolicy>,
    /// Whether keys of this epoch may be inline words (a 64-bit path whose
    /// full bucket is at most `INLINE_CAP_TICKS`).
    pub(super) inline: bool,
    /// Position in the bucket's chain of epochs (the first is 0).
    pub(super) id: u64,
    /// Word states of this epoch count ticks from this moment.
    pub(super) base: Nanos,
    /// `now - base` up to which the 64-bit path serves this epoch.
    pub(super) max_since_base: Nanos,
    /// When this policy took effect: where state is carried over to it.
    at: Nanos,
    /// State written before this epoch is dropped (counters too).
    reset: bool,
    /// The epoch that replaced this one; set once. Its absence is what
    /// makes an epoch current.
    next: OnceLock<Arc<Epoch>>,
}

impl Epoch {
    fn new(policy: Policy, id: u64, at: Nanos, reset: bool) -> Epoch {
        let word = WordPolicy::new(&policy);
        let amount = policy.limit().rate().amount();
        Epoch {
            inline: word.is_some_and(|w| w.full_ticks() <= INLINE_CAP_TICKS),
            word,
            id,
            base: at.saturating_sub(LAG_TICKS / amount),
            max_since_base: (REBASE_TICKS - 1) / amount,
            at,
            reset,
            next: OnceLock::new(),
            policy,
        }
    }

    /// The tag an inline key of this epoch bears.
    pub(super) fn tag(&self) -> u64 {
        self.id % TAGS
    }

    /// True while no later policy exists.
    #[inline]
    pub(super) fn is_current(&self) -> bool {
        self.next.get().is_none()
    }

    /// True when `now` is too far past the base for the 64-bit path.
    pub(super) fn needs_rebase(&self, now: Nanos) -> bool {
        self.word.is_some() && now.saturating_sub(self.base) > self.max_since_base
    }

    /// The base in this epoch's ticks.
    fn base_ticks(&self) -> u128 {
        self.policy.limit().rate().ticks(self.base)
    }

    /// A word state of this epoch (ticks since the base) as a whole state.
    pub(super) fn state_of_word(&self, word: u64) -> State {
        State {
            tat: self.base_ticks() + u128::from(word),
            windows: Vec::new(),
        }
    }

    /// `state`'s `tat` as a word of this epoch: ticks since the base (none
    /// before it, where the bucket is empty anyway), if that fits 64 bits.
    pub(super) fn word_of_state(&self, state: &State) -> Option<u64> {
        u64::try_from(state.tat.saturating_sub(self.base_ticks())).ok()
    }

    /// This epoch's successor, with `policy` from `at` on; not linked yet
    /// ([`Epochs::push`] does that).
    pub(super) fn successor(&self, policy: Policy, at: Nanos, reset: bool) -> Arc<Epoch> {
        Arc::new(Epoch::new(policy, self.id + 1, at, reset))
    }

    /// Makes `next` this epoch's successor. Only the latest epoch is
    /// followed, one change at a time.
    fn link(&self, next: Arc<Epoch>) {
        let linked = self.next.set(next).is_ok();
        debug_assert!(linked, "only the latest epoch is followed");
    }

    /// The successor, linked: the chain alone, for tests.
    #[cfg(test)]
    fn follow(&self, policy: Policy, at: Nanos, reset: bool) -> Arc<Epoch> {
        let next = self.successor(policy, at, reset);
        self.link(next.clone());
        next
    }

    /// `state` and `counters`, written in `from`, carried over change by
    /// change to the latest epoch, which is returned with them. A reset on
    /// the way empties both.
    pub(super) fn carry(
        from: &Arc<Epoch>,
        mut state: State,
        mut counters: Counters,
    ) -> (Arc<Epoch>, State, Counters) {
        let mut at = from;
        while let Some(next) = at.next.get() {
            if next.reset {
                state = State::default();
                counters = Counters::default();
            } else {
                core::carry_over(&at.policy, &next.policy, &mut state, next.at);
            }
            at = next;
        }
        (at.clone(), state, counters)
    }
}

impl Drop for Epoch {
    // A long chain of unused epochs would otherwise be dropped by recursion.
    fn drop(&mut self) {
        let mut next = self.next.take();
        while let Some(e) = next {
            next = match Arc::try_unwrap(e) {
                Ok(mut e) => e.next.take(),
                Err(_) => None,
            };
        }
    }
}

/// The current epoch's numbers for inline keys, readable without a lock or
/// a reference count: a sequence lock over eight words in one cache line.
#[repr(align(64))]
struct Fast {
    /// Odd while being written.
    seq: AtomicU64,
    /// The tag and mark bits an inline key of the epoch has (`cell::head`),
    /// or 0, which no inline key has, when the policy has no inline keys.
    head: AtomicU64,
    base: AtomicU64,
    max_since_base: AtomicU64,
    word: [AtomicU64; 5],
}

/// A consistent copy of [`Fast`]. With `head` 0, which no key has, the
/// other numbers are meaningless.
#[derive(Clone, Copy)]
pub(super) struct FastEpoch {
    pub(super) head: u64,
    pub(super) base: Nanos,
    pub(super) max_since_base: Nanos,
    pub(super) word: WordPolicy,
}

impl Fast {
    fn new() -> Fast {
        Fast {
            seq: AtomicU64::new(0),
            head: AtomicU64::new(0),
            base: AtomicU64::new(0),
            max_since_base: AtomicU64::new(0),
            word: Default::default(),
        }
    }

    /// A consistent copy, and `key` (a key's word) read inside the same
    /// read, so the copy is of the epoch current when `key` was read.
    #[inline(always)]
    fn read(&self, key: &AtomicU64) -> (FastEpoch, u64) {
        loop {
            let seq = self.seq.load(Ordering::Acquire);
            let head = self.head.load(Ordering::Relaxed);
            let base = self.base.load(Ordering::Relaxed);
            let max_since_base = self.max_since_base.load(Ordering::Relaxed);
            let word = self.word.each_ref().map(|w| w.load(Ordering::Relaxed));
            let key = key.load(Ordering::Acquire);
            fence(Ordering::Acquire);
            if seq & 1 == 0 && self.seq.load(Ordering::Relaxed) == seq {
                let fast = FastEpoch {
                    head,
                    base,
                    max_since_base,
                    word: WordPolicy::from_words(word),
                };
                return (fast, key);
            }
            std::hint::spin_loop();
        }
    }

    /// Publishes `e` (one writer at a time: the caller holds the bucket's
    /// reconfiguration lock).
    fn publish(&self, e: &Epoch) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        let word = e.word.filter(|_| e.inline);
        let head = word.map_or(0, |_| head(e.tag()));
        self.head.store(head, Ordering::Relaxed);
        self.base.store(e.base, Ordering::Relaxed);
        self.max_since_base
            .store(e.max_since_base, Ordering::Relaxed);
        if let Some(word) = word {
            for (slot, w) in self.word.iter().zip(word.to_words()) {
                slot.store(w, Ordering::Relaxed);
            }
        }
        self.seq.store(seq + 2, Ordering::Release);
    }
}

/// A bucket's epochs: the current one (for inline keys also as [`Fast`]),
/// and the last `TAGS` by tag.
pub(super) struct Epochs {
    fast: Fast,
    current: ArcSwap<Epoch>,
    by_tag: RwLock<Vec<Option<Arc<Epoch>>>>,
}

impl Epochs {
    pub(super) fn new(policy: Policy, now: Nanos) -> Epochs {
        let first = Arc::new(Epoch::new(policy, 0, now, false));
        let epochs = Epochs {
            fast: Fast::new(),
            current: ArcSwap::new(first.clone()),
            by_tag: RwLock::new(vec![None; TAGS as usize]),
        };
        epochs.by_tag.write()[first.tag() as usize] = Some(first.clone());
        epochs.fast.publish(&first);
        epochs
    }

    /// The current epoch's numbers for inline keys (`head` 0 if its keys
    /// are not inline), with `key`, a key's word, read while they were
    /// current. A key bearing that epoch's tag is then of that epoch: had
    /// 128 epochs passed since the key was written (so that its tag was
    /// borne again), a pass would have re-tagged it first (see `push`).
    /// (Left open: a compare-and-swap after this read could still meet
    /// the very same word again if, while one decision was preempted, 128
    /// epochs passed and the key came back to the same tag with the same
    /// state bits, the classic limit of a tag this narrow.)
    #[inline(always)]
    pub(super) fn fast(&self, key: &AtomicU64) -> (FastEpoch, u64) {
        self.fast.read(key)
    }

    /// What an empty inline key of the current epoch is (`cell::head` of
    /// its tag: state 0 is the base, an empty bucket), or 0 if the current
    /// policy has no inline keys. One word, so no sequence is needed: it is
    /// the current epoch's or the one before (a key of that one is carried
    /// over when next decided).
    #[inline]
    pub(super) fn empty_inline(&self) -> u64 {
        self.fast.head.load(Ordering::Relaxed)
    }

    pub(super) fn current(&self) -> Arc<Epoch> {
        self.current.load_full()
    }

    /// The epoch an inline key tagged `tag` was written in.
    pub(super) fn by_tag(&self, tag: u64) -> Arc<Epoch> {
        self.by_tag.read()[tag as usize]
            .clone()
            .expect("a key's tag names a live epoch")
    }

    /// Makes `next`, the current epoch's `successor`, current. The caller
    /// holds the bucket's reconfiguration lock and, if `next.id` is a
    /// multiple of `PASS_EVERY`, has carried every key over first.
    pub(super) fn push(&self, next: Arc<Epoch>) {
        // By tag first, then linked: a key can bear the new tag only once it
        // can reach the new epoch (through the chain, or as the current
        // one), and by then its tag finds it.
        self.by_tag.write()[next.tag() as usize] = Some(next.clone());
        self.current.load().link(next.clone());
        self.current.store(next.clone());
        self.fast.publish(&next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limit, Rate};

    fn police(per_second: u64) -> Policy {
        Policy::police(Limit::new(Rate::per_second(per_second).unwrap(), 10).unwrap())
    }

    #[test]
    fn carry_replays_every_change_and_drops_across_a_reset() {
        let e0 = Arc::new(Epoch::new(police(10), 0, 0, false));
        // 5 units at t=0 under 10/s; at 100 ms, 4 remain: 1/s from then on.
        let e1 = e0.follow(police(1), 100_000_000, false);
        let e2 = e1.follow(police(2), 1_100_000_000, false);
        assert!(!e0.is_current() && !e1.is_current() && e2.is_current());
        let state = State {
            tat: 500_000_000,
            windows: Vec::new(),
        };
        let counters = Counters {
            allowed: 5,
            rejected: 1,
        };
        // At 1.1 s 3 units remain; at 2/s they are gone by 2.6 s.
        let (to, carried, kept) = Epoch::carry(&e0, state.clone(), counters);
        assert!(Arc::ptr_eq(&to, &e2));
        assert_eq!((carried.tat, kept), (2_600_000_000, counters));
        let e3 = e2.follow(police(2), 2_000_000_000, true);
        let (to, carried, kept) = Epoch::carry(&e1, state, counters);
        assert!(Arc::ptr_eq(&to, &e3));
        assert_eq!((carried, kept), Default::default());
    }

    #[test]
    fn word_states_count_from_the_base_and_rebase_when_far() {
        // 1 GiB/s of bytes: 2^21 ticks per ns.
        let rate = Rate::per_second(1 << 30).unwrap();
        let policy = Policy::police(Limit::new(rate, 1 << 20).unwrap());
        let at = 10_000_000_000_000; // ~2.8 h after the clock's origin
        let e = Epoch::new(policy, 0, at, false);
        assert!(e.inline && e.base < at);
        let state = State {
            tat: rate.ticks(at) + 77,
            windows: Vec::new(),
        };
        let word = e.word_of_state(&state).unwrap();
        assert!(word < 1 << 56, "small, however late the clock");
        assert_eq!(e.state_of_word(word), state);
        assert!(!e.needs_rebase(at + 4_000_000_000));
        assert!(e.needs_rebase(at + 20_000_000_000));
    }

    #[test]
    fn fast_copy_follows_the_current_epoch() {
        let epochs = Epochs::new(police(10), 5);
        let key = AtomicU64::new(77);
        let (f, k) = epochs.fast(&key);
        assert_eq!((f.head, f.base, k), (head(0), 0, 77));
        epochs.push(epochs.current().successor(police(20), 7, false));
        assert_eq!(epochs.fast(&key).0.head, head(1));
        assert!(epochs.current().is_current());
        assert_eq!(epochs.by_tag(1).id, 1);
        // A policy with windows has no inline keys.
        let windowed = police(20)
            .with_window(crate::Window::new(5, std::time::Duration::from_secs(1)).unwrap())
            .unwrap();
        epochs.push(epochs.current().successor(windowed, 9, false));
        assert_eq!(epochs.fast(&key).0.head, 0);
    }

    #[test]
    fn a_long_chain_drops_without_recursion() {
        let first = Arc::new(Epoch::new(police(1), 0, 0, false));
        let mut last = first.clone();
        for i in 0..200_000 {
            last = last.follow(police(1 + i % 7), i, false);
        }
        drop(last);
        drop(first);
    }
}
