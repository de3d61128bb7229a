//! A key decided in one atomic word, as governor does: its `tat` (ticks
//! since the bucket's base) is read, the decision computed from it, and
//! the new `tat` written by compare-and-swap; a lost race decides again on
//! what the winner wrote. Checked by the loom models in `loom_models.rs`.

use super::sync::{AtomicU64, Ordering};
use crate::core::{Answer, Nanos, Request, WordPolicy};

/// One key's `tat` in ticks since its bucket's base.
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

    /// Sets the `tat` (only with exclusive access to the key).
    pub(super) fn set(&mut self, tat: u64) {
        *self = WordTat::new(tat);
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
            self.0.store(next, Ordering::Relaxed);
        }
        Some(answer)
    }

    /// Decides `req` at `since` (ns after the bucket's base) by `word`,
    /// then writes the new `tat` only if no other decision wrote in
    /// between (compare-and-swap; otherwise decides again on the newer
    /// `tat`). `None` (a value that does not fit 64 bits) is passed back,
    /// nothing written. The policy's arithmetic is called here, not passed
    /// in as a closure: the compiler does not inline a closure that builds
    /// a whole decision, and the call is on every check's path.
    #[inline(always)]
    pub(super) fn decide<A: Answer>(
        &self,
        word: &WordPolicy,
        since: Nanos,
        req: Request,
    ) -> Option<A> {
        let mut tat = self.0.load(Ordering::Acquire);
        loop {
            let (answer, next) = word.answer::<A>(tat, since, req)?;
            let Some(next) = next else {
                // Nothing to write: the answer holds for the `tat` read,
                // which was current at the load (a refusal, or no cost).
                return Some(answer);
            };
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
