//! The per-key log of one rolling window.
//!
//! Representation: admissions as `(time, cost)` in time order, entries at the
//! same (quantised) time merged, plus their running sum. Entries older than
//! one period are dropped on every decision, so a log holds at most
//! `min(limit, admissions in the last period)` entries (exact windows) or
//! `slots + 1` entries (approximate ones). Times may lie in the future: a
//! queued or reserved request is logged at the moment it leaves.

use std::collections::VecDeque;

use super::policy::Window;
use super::rate::Nanos;

/// Admissions still inside one rolling window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WindowLog {
    entries: VecDeque<(Nanos, u64)>,
    used: u64,
}

impl WindowLog {
    /// Units admitted within the window that ends at the last pruning time
    /// (including admissions logged for later moments).
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The logged `(time, cost)` entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = (Nanos, u64)> + '_ {
        self.entries.iter().copied()
    }

    /// Rebuilds a log from entries (oldest first), as a store read them back.
    pub fn from_entries(entries: impl IntoIterator<Item = (Nanos, u64)>) -> WindowLog {
        let entries: VecDeque<_> = entries.into_iter().collect();
        let used = entries.iter().map(|e| e.1).sum();
        WindowLog { entries, used }
    }

    /// True when nothing is logged.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets admissions that no window ending at or after `now` contains.
    pub(crate) fn prune(&mut self, window: &Window, now: Nanos) {
        while let Some(&(t, cost)) = self.entries.front() {
            if t.saturating_add(window.period_ns()) > now {
                break;
            }
            self.entries.pop_front();
            self.used -= cost;
        }
    }

    /// The earliest time at which `cost` more units fit in the window, and
    /// not before the last logged admission (so departures stay in order).
    /// The caller has checked `cost <= window.limit()`.
    pub(crate) fn ready_at(&self, window: &Window, cost: u64) -> Nanos {
        let last = self.entries.back().map_or(0, |e| e.0);
        let mut excess = (self.used + cost).saturating_sub(window.limit());
        if excess == 0 {
            return last;
        }
        for &(t, c) in &self.entries {
            excess = excess.saturating_sub(c);
            if excess == 0 {
                return last.max(t.saturating_add(window.period_ns()));
            }
        }
        // Only reached when cost > limit, which the caller rules out; the
        // window being entirely clear is still a correct (late) answer.
        self.clear_at(window)
    }

    /// Logs an admission of `cost` units leaving at `at`.
    pub(crate) fn record(&mut self, window: &Window, at: Nanos, cost: u64) {
        if cost == 0 {
            return;
        }
        // An admission less than one granularity after the last entry joins
        // it, and the entry moves forward to the later time: earlier
        // admissions then count as later ones, which only keeps them in the
        // window longer (admits less, never more), and entries stay at least
        // a granularity apart. Exact windows (granularity 1) merge only equal
        // times. The Redis script applies the same rule.
        let g = window.granularity_ns();
        match self.entries.back_mut() {
            Some(last) if at < last.0.saturating_add(g) => {
                last.0 = last.0.max(at);
                last.1 += cost;
            }
            _ => self.entries.push_back((at, cost)),
        }
        self.used += cost;
    }

    /// When the last logged admission leaves the window (0 if none).
    pub(crate) fn clear_at(&self, window: &Window) -> Nanos {
        self.entries
            .back()
            .map_or(0, |e| e.0.saturating_add(window.period_ns()))
    }
}
