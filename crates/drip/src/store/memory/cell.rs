//! One key of a [`KeyedBucket`](super::KeyedBucket): its state and, if the
//! bucket counts, its counters.
//!
//! A key of a policy with a 64-bit path (no windows) is one atomic word,
//! its `tat` in ticks since the bucket's base, decided by compare-and-swap
//! ([`WordTat`]); any other key (windows, or a `tat` that no longer fits
//! the word) holds its whole [`State`] behind a lock. Which form a key has
//! changes only with exclusive access to it (a map entry written, or the
//! bucket's policy held alone), never under a decision.
//!
//! The counters are the cell's own fields, in a counting bucket
//! ([`Counted`], 24 bytes) or nothing at all ([`NoCounts`]): a counted key
//! is then one map entry with no allocation of its own and no pointer to
//! follow on a decision.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::config::Config;
use super::word::WordTat;
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

/// One key: 16 bytes uncounted, so a map entry of a `u64` key is 24 (what
/// deciding over many keys pays for most is the cache lines its entries
/// take); 40 bytes counted.
pub(super) struct Cell<N> {
    /// The `tat` in ticks since the bucket's base, unless `full` is set.
    tat: WordTat,
    /// The whole state, for keys the word cannot hold (and every key of a
    /// policy that tracks its queue, which lists it there too).
    full: Option<Box<Full>>,
    /// The key's counters, in a counting bucket.
    counts: N,
}

/// A key's whole state and, when its policy tracks them, its queued
/// requests (changed only with exclusive access: tracked keys decide under
/// the write lock).
struct Full {
    state: Mutex<State>,
    queue: VecDeque<Entry>,
}

impl Full {
    fn new(state: State) -> Box<Full> {
        Box::new(Full {
            state: Mutex::new(state),
            queue: VecDeque::new(),
        })
    }
}

impl<N: Counting> Cell<N> {
    /// A new, empty key under `config`.
    #[inline]
    pub(super) fn new(config: &Config) -> Cell<N> {
        let mut cell = Cell {
            // An empty bucket: a word at the base, what `store` makes of
            // the default state when the policy has a 64-bit path.
            tat: WordTat::new(0),
            full: None,
            counts: N::zero(),
        };
        if config.word.is_none() {
            cell.store(config, State::default());
        }
        cell
    }

    /// The same key, counting from zero with `M`.
    pub(super) fn recount<M: Counting>(self) -> Cell<M> {
        Cell {
            tat: self.tat,
            full: self.full,
            counts: M::zero(),
        }
    }

    /// Decides `req` at `now`, or `None` when the word cannot (a value
    /// beyond 64 bits, or `now` outside the base's range): then decide
    /// again with exclusive access ([`spill`](Self::spill) first).
    #[inline(always)]
    pub(super) fn decide<A: Answer>(&self, config: &Config, now: Nanos, req: Request) -> Option<A> {
        let answer = match &self.full {
            None => {
                let word = config.word.as_ref()?;
                let since = config.since_base(now)?;
                self.tat.decide::<A>(word, since, req)?
            }
            // A tracked key decides with its list, exclusively.
            Some(_) if config.track => return None,
            Some(full) => {
                let d = core::decide(&config.policy, &mut full.state.lock(), now, req);
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
        now: Nanos,
        req: Request,
    ) -> Option<A> {
        let answer = match &mut self.full {
            None => {
                let word = config.word.as_ref()?;
                let since = config.since_base(now)?;
                self.tat.decide_alone::<A>(word, since, req)?
            }
            Some(_) if config.track => return None,
            Some(full) => {
                let d = core::decide(&config.policy, full.state.get_mut(), now, req);
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
        now: Nanos,
        req: Request,
        id: &str,
    ) -> Decision {
        self.spill(config);
        let full = self
            .full
            .as_mut()
            .expect("a spilled key holds its whole state");
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
    pub(super) fn queued(&self, now: Nanos) -> Vec<Entry> {
        self.full.as_ref().map_or_else(Vec::new, |f| {
            f.queue.iter().filter(|e| e.live(now)).cloned().collect()
        })
    }

    /// Takes `id` off the list and gives its place back when exact (see
    /// [`give_back`]); true when given back.
    pub(super) fn cancel(&mut self, config: &Config, now: Nanos, id: &str) -> bool {
        let Some(full) = self.full.as_mut() else {
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

    /// Makes the key hold its whole state (after `decide` answered `None`).
    pub(super) fn spill(&mut self, config: &Config) {
        if self.full.is_none() {
            let state = self.state(config);
            self.full = Some(Full::new(state));
        }
    }

    /// The key's whole state under `config`.
    pub(super) fn state(&self, config: &Config) -> State {
        match &self.full {
            Some(full) => full.state.lock().clone(),
            None => State {
                tat: config.base_ticks() + u128::from(self.tat.load()),
                windows: Vec::new(),
            },
        }
    }

    /// The key's `tat` in the policy's ticks under `config` (its whole
    /// state's, without copying its window logs).
    pub(super) fn tat(&self, config: &Config) -> u128 {
        match &self.full {
            Some(full) => full.state.lock().tat,
            None => config.base_ticks() + u128::from(self.tat.load()),
        }
    }

    /// Keeps `state` under `config`: as a word when the policy has a 64-bit
    /// path and the `tat` fits, else whole (with the key's list, kept only
    /// while the policy tracks it). Needs exclusive access.
    pub(super) fn store(&mut self, config: &Config, state: State) {
        if config.word.is_some() && state.windows.is_empty() {
            // A `tat` behind the base is an empty bucket, as 0 is (now is
            // never behind the base on this path).
            let since = state.tat.saturating_sub(config.base_ticks());
            if let Ok(word) = u64::try_from(since) {
                self.tat.set(word);
                self.full = None;
                return;
            }
        }
        match &mut self.full {
            Some(full) => {
                *full.state.get_mut() = state;
                if !config.track {
                    full.queue = VecDeque::new();
                }
            }
            None => self.full = Some(Full::new(state)),
        }
    }

    /// True when the key holds nothing worth keeping at `now`: its bucket
    /// is empty and its counters' retention (if any) has passed.
    pub(super) fn is_idle(&self, config: &Config, now: Nanos) -> bool {
        !self.counts.retained(now, config.retention_ns)
            && core::is_idle(&config.policy, &self.state(config), now)
    }

    /// True while the key is one word (not its whole state).
    #[cfg(test)]
    pub(super) fn is_word(&self) -> bool {
        self.full.is_none()
    }

    /// The key's counters (zero when the bucket does not count).
    pub(super) fn counters(&self) -> Counters {
        self.counts.counters()
    }
}
