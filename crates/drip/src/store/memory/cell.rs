//! One key of a [`KeyedBucket`](super::KeyedBucket): its state and, if the
//! bucket counts, its counters.
//!
//! A key of a policy with a 64-bit path (no windows) is one atomic word,
//! its `tat` in ticks since the bucket's base, decided by compare-and-swap
//! ([`WordTat`]); any other key (windows, or a `tat` that no longer fits
//! the word) holds its whole [`State`] behind a lock. Which form a key has
//! changes only with exclusive access to it (a map entry written, or the
//! bucket's policy held alone), never under a decision.

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

/// One key: 16 bytes, so a map entry of a `u64` key is 24 (what deciding
/// over many keys pays for most is the cache lines its entries take).
pub(super) struct Cell {
    /// The `tat` in ticks since the bucket's base, unless `extra.full` is set.
    tat: WordTat,
    /// Counters and the whole state, for keys that have either.
    extra: Option<Box<Extra>>,
}

/// What not every key has.
struct Extra {
    /// The whole state, for keys the word cannot hold.
    full: Option<Mutex<State>>,
    /// Requests allowed and rejected, and when the last one came (clock
    /// ns; kept only under a counter retention), when the bucket counts.
    counts: Option<[AtomicU64; 3]>,
    /// The queued requests, when the policy tracks them (changed only
    /// with exclusive access: tracked keys decide under the write lock).
    /// Boxed: one word on keys that do not track.
    queue: Option<Box<VecDeque<Entry>>>,
}

impl Cell {
    /// A new, empty key under `config`.
    pub(super) fn new(config: &Config, counting: bool) -> Cell {
        let mut cell = Cell {
            tat: WordTat::new(0),
            extra: counting.then(|| {
                Box::new(Extra {
                    full: None,
                    counts: Some([const { AtomicU64::new(0) }; 3]),
                    queue: None,
                })
            }),
        };
        cell.store(config, State::default());
        cell
    }

    fn full(&self) -> Option<&Mutex<State>> {
        self.extra.as_ref().and_then(|e| e.full.as_ref())
    }

    fn set_full(&mut self, state: Option<State>) {
        let full = state.map(Mutex::new);
        match &mut self.extra {
            Some(e) => e.full = full,
            None if full.is_some() => {
                self.extra = Some(Box::new(Extra {
                    full,
                    counts: None,
                    queue: None,
                }));
            }
            None => {}
        }
    }

    /// Decides `req` at `now`, or `None` when the word cannot (a value
    /// beyond 64 bits, or `now` outside the base's range): then decide
    /// again with exclusive access ([`spill`](Self::spill) first).
    #[inline(always)]
    pub(super) fn decide<A: Answer>(&self, config: &Config, now: Nanos, req: Request) -> Option<A> {
        let answer = match self.full() {
            None => {
                let word = config.word.as_ref()?;
                let since = config.since_base(now)?;
                self.tat.decide(|tat| word.answer::<A>(tat, since, req))?
            }
            // A tracked key decides with its list, exclusively.
            Some(_) if config.track => return None,
            Some(state) => {
                let d = core::decide(&config.policy, &mut state.lock(), now, req);
                A::from_decision(d)
            }
        };
        self.count(config, now, answer.allowed());
        Some(answer)
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
        let extra = self.extra.as_mut().expect("a spilled key has its extra");
        let state = extra
            .full
            .as_mut()
            .expect("a spilled key holds its whole state")
            .get_mut();
        let d = core::decide(&config.policy, state, now, req);
        if d.allowed() {
            let entry = Entry::admitted(&config.policy, id, now, &d, req.cost, state.tat);
            let queue = extra.queue.get_or_insert_with(Box::default);
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
        let queue = self.extra.as_ref().and_then(|e| e.queue.as_deref());
        queue.map_or_else(Vec::new, |q| {
            q.iter().filter(|e| e.live(now)).cloned().collect()
        })
    }

    /// Takes `id` off the list and gives its place back when exact (see
    /// [`give_back`]); true when given back.
    pub(super) fn cancel(&mut self, config: &Config, now: Nanos, id: &str) -> bool {
        let Some(extra) = self.extra.as_mut() else {
            return false;
        };
        let Some(queue) = extra.queue.as_mut() else {
            return false;
        };
        let Some(i) = queue.iter().position(|e| e.live(now) && &*e.id == id) else {
            return false;
        };
        let entry = queue.remove(i).expect("found at i");
        let Some(state) = extra.full.as_mut().map(Mutex::get_mut) else {
            return false;
        };
        let now_t = config.policy.limit().rate().ticks(now);
        match give_back(&config.policy, &entry, state.tat, now_t) {
            Some(tat) => {
                state.tat = tat;
                true
            }
            None => false,
        }
    }

    /// Counts one decision (allowed or not) at `now`, when the bucket counts.
    #[inline(always)]
    pub(super) fn count(&self, config: &Config, now: Nanos, allowed: bool) {
        if let Some(counts) = self.extra.as_ref().and_then(|e| e.counts.as_ref()) {
            let i = usize::from(!allowed);
            counts[i].fetch_add(1, Ordering::Relaxed);
            if config.retention_ns > 0 {
                // Moved on at most once per `STAMP_NS` (sweeps allow that
                // much more), so a busy key's decisions mostly only read it;
                // `fetch_max`: of racing writers, the latest time wins.
                let last = &counts[2];
                if now >= last.load(Ordering::Relaxed).saturating_add(STAMP_NS) {
                    last.fetch_max(now, Ordering::Relaxed);
                }
            }
        }
    }

    /// Makes the key hold its whole state (after `decide` answered `None`).
    pub(super) fn spill(&mut self, config: &Config) {
        if self.full().is_none() {
            let state = self.state(config);
            self.set_full(Some(state));
        }
    }

    /// The key's whole state under `config`.
    pub(super) fn state(&self, config: &Config) -> State {
        match self.full() {
            Some(state) => state.lock().clone(),
            None => State {
                tat: config.base_ticks() + u128::from(self.tat.load()),
                windows: Vec::new(),
            },
        }
    }

    /// The key's `tat` in the policy's ticks under `config` (its whole
    /// state's, without copying its window logs).
    pub(super) fn tat(&self, config: &Config) -> u128 {
        match self.full() {
            Some(state) => state.lock().tat,
            None => config.base_ticks() + u128::from(self.tat.load()),
        }
    }

    /// Keeps `state` under `config`: as a word when the policy has a 64-bit
    /// path and the `tat` fits, else whole. Needs exclusive access.
    pub(super) fn store(&mut self, config: &Config, state: State) {
        if !config.track
            && let Some(e) = &mut self.extra
        {
            e.queue = None;
        }
        if config.word.is_some() && state.windows.is_empty() {
            // A `tat` behind the base is an empty bucket, as 0 is (now is
            // never behind the base on this path).
            let since = state.tat.saturating_sub(config.base_ticks());
            if let Ok(word) = u64::try_from(since) {
                self.tat.set(word);
                self.set_full(None);
                return;
            }
        }
        self.set_full(Some(state));
    }

    /// True when the key holds nothing worth keeping at `now`: its bucket
    /// is empty and its counters' retention (if any) has passed.
    pub(super) fn is_idle(&self, config: &Config, now: Nanos) -> bool {
        let retained = config.retention_ns > 0
            && self
                .extra
                .as_ref()
                .and_then(|e| e.counts.as_ref())
                .is_some_and(|c| {
                    now < c[2]
                        .load(Ordering::Relaxed)
                        .saturating_add(config.retention_ns)
                        .saturating_add(STAMP_NS)
                });
        !retained && core::is_idle(&config.policy, &self.state(config), now)
    }

    /// True while the key is one word (not its whole state).
    #[cfg(test)]
    pub(super) fn is_word(&self) -> bool {
        self.full().is_none()
    }

    /// The key's counters (zero when the bucket does not count).
    pub(super) fn counters(&self) -> Counters {
        let counts = self.extra.as_ref().and_then(|e| e.counts.as_ref());
        counts.map_or_else(Counters::default, |c| Counters {
            allowed: c[0].load(Ordering::Relaxed),
            rejected: c[1].load(Ordering::Relaxed),
        })
    }
}
