//! One key of a [`KeyedBucket`](super::KeyedBucket): its state and, if the
//! bucket counts, its counters.
//!
//! A key of a policy with a 64-bit path (no windows) is one atomic word,
//! its `tat` in ticks since the bucket's base, decided by compare-and-swap
//! ([`WordTat`]); any other key (windows, or a `tat` that no longer fits
//! the word) is spilled: its word holds a mark ([`SPILLED`] and an index)
//! and its whole [`State`] lives behind a lock in its shard's side table
//! ([`Spills`]), which every method of a cell is given. Which form a key
//! has changes only with exclusive access to it (a map entry written, or
//! the bucket's policy held alone), never under a decision.
//!
//! The counters are the cell's own fields, in a counting bucket
//! ([`Counted`], 24 bytes) or nothing at all ([`NoCounts`]): a key is then
//! one map entry of one word (and its counters), as small as governor's,
//! with no allocation of its own and no pointer to follow on a decision.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::config::Config;
use super::word::{SPILLED, WordTat};
use crate::core::{self, Answer, Decision, Nanos, Request, State};
use crate::store::{Counters, Entry, give_back, max_entries};

/// How stale a key's last-request time may be (1 ms): it is written at
/// most this often, and a retention is counted from it plus this.
const STAMP_NS: Nanos = 1_000_000;

mod sealed {
    pub trait Sealed {}
}

/// What a [`KeyedBucket`](super::KeyedBucket) keeps per key besides its
/// state: [`NoCounts`] (nothing) or [`Counted`] (allowed and rejected
/// requests, and when the last one came).
pub trait Counting: sealed::Sealed + Send + Sync + Sized + 'static {
    #[doc(hidden)]
    fn zero() -> Self;
    #[doc(hidden)]
    fn record(&self, allowed: bool, now: Nanos, retention_ns: Nanos);
    /// [`record`](Self::record) with exclusive access to the key.
    #[doc(hidden)]
    fn record_alone(&mut self, allowed: bool, now: Nanos, retention_ns: Nanos) {
        self.record(allowed, now, retention_ns);
    }
    #[doc(hidden)]
    fn counters(&self) -> Counters;
    #[doc(hidden)]
    fn retained(&self, now: Nanos, retention_ns: Nanos) -> bool;
}

/// Keys keep no counters (status reports zero): the cheapest decisions.
#[derive(Debug, Default)]
pub struct NoCounts;

impl sealed::Sealed for NoCounts {}

impl Counting for NoCounts {
    #[inline(always)]
    fn zero() -> Self {
        NoCounts
    }

    #[inline(always)]
    fn record(&self, _: bool, _: Nanos, _: Nanos) {}

    fn counters(&self) -> Counters {
        Counters::default()
    }

    fn retained(&self, _: Nanos, _: Nanos) -> bool {
        false
    }
}

/// Each key counts its allowed and rejected requests and keeps when the
/// last one came (for the policy's counter retention).
#[derive(Debug, Default)]
pub struct Counted([AtomicU64; 3]);

impl sealed::Sealed for Counted {}

impl Counting for Counted {
    #[inline(always)]
    fn zero() -> Self {
        Counted::default()
    }

    #[inline(always)]
    fn record(&self, allowed: bool, now: Nanos, retention_ns: Nanos) {
        let counts = &self.0;
        counts[usize::from(!allowed)].fetch_add(1, Ordering::Relaxed);
        if retention_ns > 0 {
            // Moved on at most once per `STAMP_NS` (sweeps allow that much
            // more), so a busy key's decisions mostly only read it;
            // `fetch_max`: of racing writers, the latest time wins.
            let last = &counts[2];
            if now >= last.load(Ordering::Relaxed).saturating_add(STAMP_NS) {
                last.fetch_max(now, Ordering::Relaxed);
            }
        }
    }

    #[inline(always)]
    fn record_alone(&mut self, allowed: bool, now: Nanos, retention_ns: Nanos) {
        // No other access: plain reads and writes, no read-modify-write.
        let counts = &self.0;
        let i = usize::from(!allowed);
        counts[i].store(counts[i].load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if retention_ns > 0 && now > counts[2].load(Ordering::Relaxed) {
            counts[2].store(now, Ordering::Relaxed);
        }
    }

    fn counters(&self) -> Counters {
        Counters {
            allowed: self.0[0].load(Ordering::Relaxed),
            rejected: self.0[1].load(Ordering::Relaxed),
        }
    }

    fn retained(&self, now: Nanos, retention_ns: Nanos) -> bool {
        retention_ns > 0
            && now
                < self.0[2]
                    .load(Ordering::Relaxed)
                    .saturating_add(retention_ns)
                    .saturating_add(STAMP_NS)
    }
}

/// One key: 8 bytes uncounted, so a map entry of a `u64` key is 16 (what
/// deciding over many keys pays for most is the cache lines its entries
/// take, and a growing table's pages); 32 bytes counted.
pub(super) struct Cell<N> {
    /// The `tat` in ticks since the bucket's base, or the spill mark.
    tat: WordTat,
    /// The key's counters, in a counting bucket.
    counts: N,
}

/// The whole states of a shard's spilled keys: keys the word cannot hold
/// (and every key of a policy that tracks its queue, which lists it there
/// too), each at the index its word's mark gives. Changed only with the
/// shard held alone.
pub(super) type Spills = slab::Slab<Full>;

/// A key's whole state and, when its policy tracks them, its queued
/// requests (changed only with exclusive access: tracked keys decide under
/// the write lock).
pub(super) struct Full {
    state: Mutex<State>,
    queue: VecDeque<Entry>,
}

impl Full {
    fn new(state: State) -> Full {
        Full {
            state: Mutex::new(state),
            queue: VecDeque::new(),
        }
    }
}

/// The index a word marks, if it marks a spilled key.
#[inline(always)]
fn spill_index(word: u64) -> Option<usize> {
    (word & SPILLED != 0).then_some((word & !SPILLED) as usize)
}

impl<N: Counting> Cell<N> {
    /// A new, empty key under `config` (spilled into `spills` when the
    /// policy has no 64-bit path).
    #[inline]
    pub(super) fn new(config: &Config, spills: &mut Spills) -> Cell<N> {
        let mut cell = Cell {
            // An empty bucket: a word at the base, what `store` makes of
            // the default state when the policy has a 64-bit path.
            tat: WordTat::new(0),
            counts: N::zero(),
        };
        if config.word.is_none() {
            cell.store(config, spills, State::default());
        }
        cell
    }

    /// The same key, counting from zero with `M`.
    pub(super) fn recount<M: Counting>(self) -> Cell<M> {
        Cell {
            tat: self.tat,
            counts: M::zero(),
        }
    }

    /// Where the key's whole state is in its shard's `Spills`, if spilled.
    #[inline(always)]
    fn spilled(&self) -> Option<usize> {
        spill_index(self.tat.load())
    }

    /// Decides `req` at `now`, or `None` when the word cannot (a value
    /// beyond 63 bits, or `now` outside the base's range): then decide
    /// again with exclusive access ([`spill`](Self::spill) first).
    #[inline(always)]
    pub(super) fn decide<A: Answer>(
        &self,
        config: &Config,
        spills: &Spills,
        now: Nanos,
        req: Request,
    ) -> Option<A> {
        let word = self.tat.load();
        let answer = match spill_index(word) {
            None => {
                let policy = config.word.as_ref()?;
                let since = config.since_base(now)?;
                self.tat.decide_from::<A>(word, policy, since, req)?
            }
            // A tracked key decides with its list, exclusively.
            Some(_) if config.track => return None,
            Some(i) => {
                let d = core::decide(&config.policy, &mut spills[i].state.lock(), now, req);
                A::from_decision(d)
            }
        };
        self.count(config, now, answer.allowed());
        Some(answer)
    }

    /// [`decide`](Self::decide) with exclusive access to the key (its
    /// shard's write lock): nothing can race it, so the word is read and
    /// written plainly, without a compare-and-swap.
    #[inline(always)]
    pub(super) fn decide_alone<A: Answer>(
        &mut self,
        config: &Config,
        spills: &mut Spills,
        now: Nanos,
        req: Request,
    ) -> Option<A> {
        let answer = match self.spilled() {
            None => {
                let word = config.word.as_ref()?;
                let since = config.since_base(now)?;
                self.tat.decide_alone::<A>(word, since, req)?
            }
            Some(_) if config.track => return None,
            Some(i) => {
                let d = core::decide(&config.policy, spills[i].state.get_mut(), now, req);
                A::from_decision(d)
            }
        };
        self.counts
            .record_alone(answer.allowed(), now, config.retention_ns);
        Some(answer)
    }

    /// Counts one decision (allowed or not) at `now`, when the bucket counts.
    #[inline(always)]
    pub(super) fn count(&self, config: &Config, now: Nanos, allowed: bool) {
        self.counts.record(allowed, now, config.retention_ns);
    }

    /// Decides `req` at `now` for a key of a policy that tracks its queue,
    /// and lists it as `id` if admitted: state and list change together,
    /// under the exclusive access the caller holds.
    pub(super) fn decide_tracked(
        &mut self,
        config: &Config,
        spills: &mut Spills,
        now: Nanos,
        req: Request,
        id: &str,
    ) -> Decision {
        let i = self.spill(config, spills);
        let full = &mut spills[i];
        let state = full.state.get_mut();
        let d = core::decide(&config.policy, state, now, req);
        if d.allowed() {
            let entry = Entry::admitted(&config.policy, id, now, &d, req.cost, state.tat);
            let queue = &mut full.queue;
            // Entries leave in list order: drop the departed head.
            while queue.front().is_some_and(|e| !e.live(now)) {
                queue.pop_front();
            }
            if queue.len() < max_entries(&config.policy) {
                queue.push_back(entry);
            }
        }
        self.count(config, now, d.allowed());
        d
    }

    /// The listed requests still live at `now`, in departure order.
    pub(super) fn queued(&self, spills: &Spills, now: Nanos) -> Vec<Entry> {
        self.spilled().map_or_else(Vec::new, |i| {
            spills[i]
                .queue
                .iter()
                .filter(|e| e.live(now))
                .cloned()
                .collect()
        })
    }

    /// Takes `id` off the list and gives its place back when exact (see
    /// [`give_back`]); true when given back.
    pub(super) fn cancel(
        &mut self,
        config: &Config,
        spills: &mut Spills,
        now: Nanos,
        id: &str,
    ) -> bool {
        let Some(full) = self.spilled().map(|i| &mut spills[i]) else {
            return false;
        };
        let Some(i) = full.queue.iter().position(|e| e.live(now) && &*e.id == id) else {
            return false;
        };
        let entry = full.queue.remove(i).expect("found at i");
        let state = full.state.get_mut();
        let now_t = config.policy.limit().rate().ticks(now);
        match give_back(&config.policy, &entry, state.tat, now_t) {
            Some(tat) => {
                state.tat = tat;
                true
            }
            None => false,
        }
    }

    /// Makes the key hold its whole state in `spills` (after `decide`
    /// answered `None`); returns its index there.
    pub(super) fn spill(&mut self, config: &Config, spills: &mut Spills) -> usize {
        if let Some(i) = self.spilled() {
            return i;
        }
        let state = self.state(config, spills);
        self.put_whole(spills, state)
    }

    /// Puts `state` in `spills` and marks the word with its place (the key
    /// not spilled yet); returns the place.
    fn put_whole(&mut self, spills: &mut Spills, state: State) -> usize {
        let i = spills.insert(Full::new(state));
        self.tat.set(SPILLED | i as u64);
        i
    }

    /// Gives back the key's place in `spills`, if it has one (the key is
    /// being removed).
    pub(super) fn release(&mut self, spills: &mut Spills) {
        if let Some(i) = self.spilled() {
            spills.remove(i);
            self.tat.set(0);
        }
    }

    /// The key's whole state under `config`.
    pub(super) fn state(&self, config: &Config, spills: &Spills) -> State {
        match self.spilled() {
            Some(i) => spills[i].state.lock().clone(),
            None => State {
                tat: config.base_ticks() + u128::from(self.tat.load()),
                windows: Vec::new(),
            },
        }
    }

    /// The key's `tat` in the policy's ticks under `config` (its whole
    /// state's, without copying its window logs).
    pub(super) fn tat(&self, config: &Config, spills: &Spills) -> u128 {
        match self.spilled() {
            Some(i) => spills[i].state.lock().tat,
            None => config.base_ticks() + u128::from(self.tat.load()),
        }
    }

    /// Keeps `state` under `config`: as a word when the policy has a 64-bit
    /// path and the `tat` fits below the top bit, else whole in `spills`
    /// (with the key's list, kept only while the policy tracks it). Needs
    /// exclusive access.
    pub(super) fn store(&mut self, config: &Config, spills: &mut Spills, state: State) {
        if config.word.is_some() && state.windows.is_empty() {
            // A `tat` behind the base is an empty bucket, as 0 is (now is
            // never behind the base on this path).
            let since = state.tat.saturating_sub(config.base_ticks());
            if let Ok(word) = u64::try_from(since)
                && word & SPILLED == 0
            {
                self.release(spills);
                self.tat.set(word);
                return;
            }
        }
        match self.spilled() {
            Some(i) => {
                let full = &mut spills[i];
                *full.state.get_mut() = state;
                if !config.track {
                    full.queue = VecDeque::new();
                }
            }
            None => {
                self.put_whole(spills, state);
            }
        }
    }

    /// True when the key holds nothing worth keeping at `now`: its bucket
    /// is empty and its counters' retention (if any) has passed.
    pub(super) fn is_idle(&self, config: &Config, spills: &Spills, now: Nanos) -> bool {
        !self.counts.retained(now, config.retention_ns)
            && core::is_idle(&config.policy, &self.state(config, spills), now)
    }

    /// True while the key is one word (not its whole state).
    #[cfg(test)]
    pub(super) fn is_word(&self) -> bool {
        self.spilled().is_none()
    }

    /// The key's counters (zero when the bucket does not count).
    pub(super) fn counters(&self) -> Counters {
        self.counts.counters()
    }
}
