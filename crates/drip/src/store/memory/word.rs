//! A key decided in one atomic word, as governor does: its `tat` (ticks
//! since the bucket's base) is read, the decision computed from it, and
//! the new `tat` written by compare-and-swap; a lost race decides again on
//! what the winner wrote. Checked by the loom models in `loom_models.rs`.
//!
//! A word with its top bit set ([`SPILLED`]) holds no `tat`: it marks a key
//! whose whole state is kept in its shard's side table, at the index in the
//! word's other bits (`cell.rs`). A decision never writes such a value: a
//! `tat` that would reach the top bit makes it answer `None`, and the key
//! spills.

use super::sync::{AtomicU64, Ordering};
use crate::core::{Answer, Nanos, Request, WordPolicy};

/// The top bit of a word: set, the word marks a spilled key (the rest is
/// its index in the shard's side table); clear, it is the key's `tat`.
pub(super) const SPILLED: u64 = 1 << 63;

/// One key's `tat` in ticks since its bucket's base, or its spill mark.
#[derive(Debug, Default)]
pub(super) struct WordTat(AtomicU64);

impl WordTat {
    pub(super) fn new(tat: u64) -> WordTat {
        WordTat(AtomicU64::new(tat))
    }

    /// The `tat` now (for status and carry-over, which need no ordering
    /// with decisions beyond what the bucket's locks give).
    pub(super) fn load(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Sets the word (only with exclusive access to the key).
    pub(super) fn set(&mut self, word: u64) {
        *self = WordTat::new(word);
    }

    /// [`decide`](Self::decide) with exclusive access to the key: no
    /// decision can come in between, so a plain read and write stand for
    /// the compare-and-swap.
    #[inline(always)]
    pub(super) fn decide_alone<A: Answer>(
        &mut self,
        word: &WordPolicy,
        since: Nanos,
        req: Request,
    ) -> Option<A> {
        let (answer, next) = word.answer::<A>(self.0.load(Ordering::Relaxed), since, req)?;
        if let Some(next) = next {
            if next & SPILLED != 0 {
                return None;
            }
            self.0.store(next, Ordering::Relaxed);
        }
        Some(answer)
    }

    /// Decides `req` at `since` (ns after the bucket's base) by `word`,
    /// then writes the new `tat` only if no other decision wrote in
    /// between (compare-and-swap; otherwise decides again on the newer
    /// `tat`). `None` (a value that does not fit 64 bits, or would set the
    /// top bit) is passed back, nothing written. The policy's arithmetic is
    /// called here, not passed in as a closure: the compiler does not
    /// inline a closure that builds a whole decision, and the call is on
    /// every check's path.
    #[cfg_attr(not(drip_loom), allow(dead_code))]
    #[inline(always)]
    pub(super) fn decide<A: Answer>(
        &self,
        word: &WordPolicy,
        since: Nanos,
        req: Request,
    ) -> Option<A> {
        self.decide_from(self.load(), word, since, req)
    }

    /// [`decide`](Self::decide), starting from `tat`, the word as just
    /// loaded (with `Acquire`; a `tat`, not a spill mark).
    #[inline(always)]
    pub(super) fn decide_from<A: Answer>(
        &self,
        mut tat: u64,
        word: &WordPolicy,
        since: Nanos,
        req: Request,
    ) -> Option<A> {
        loop {
            let (answer, next) = word.answer::<A>(tat, since, req)?;
            let Some(next) = next else {
                // Nothing to write: the answer holds for the `tat` read,
                // which was current at the load (a refusal, or no cost).
                return Some(answer);
            };
            if next & SPILLED != 0 {
                return None;
            }
            match self
                .0
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(answer),
                Err(newer) => tat = newer,
            }
        }
    }
}
