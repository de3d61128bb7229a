//! A bucket's policy with the numbers its 64-bit path needs: the base its
//! words count from, and how far past it that arithmetic stays in range.

use crate::core::{Nanos, Policy, WordPolicy};

/// A new base lies this many ticks before the moment it is set, so a clock
/// that steps back by less still finds it behind (4 s at 1 GiB/s of bytes,
/// 104 days at whole-nanosecond rates); further back, keys spill to their
/// whole state and stay exact.
const LAG_TICKS: u64 = 1 << 53;

/// The base moves on when `now` is this many ticks past it: a word's
/// `tat` then stays below 2^62 plus the full bucket, below the top bit
/// that marks a spilled key unless the full bucket passes 2^62 ticks (such
/// a key spills when its `tat` would reach that bit, and stays exact).
const REBASE_TICKS: u64 = 1 << 62;

/// The policy a bucket's decisions read (under its lock: shared by
/// decisions, held alone to change).
pub(super) struct Config {
    pub(super) policy: Policy,
    /// The policy's 64-bit path, when it has one (no windows).
    pub(super) word: Option<WordPolicy>,
    /// Word `tat`s count ticks from this moment (ns).
    pub(super) base: Nanos,
    /// `now - base` up to which the 64-bit path serves.
    max_since_base: Nanos,
    /// The policy's counter retention in ns (0: none; read per decision).
    pub(super) retention_ns: Nanos,
    /// The policy tracks its queue: its keys keep their whole state and
    /// decide under their shard's write lock, beside their list.
    pub(super) track: bool,
}

impl Config {
    /// `policy`, its base set for decisions from `at` on.
    pub(super) fn new(policy: Policy, at: Nanos) -> Config {
        let amount = policy.limit().rate().amount();
        let track = policy.tracks_queue();
        Config {
            word: if track {
                None
            } else {
                WordPolicy::new(&policy)
            },
            track,
            base: at.saturating_sub(LAG_TICKS / amount),
            max_since_base: REBASE_TICKS / amount,
            retention_ns: u64::try_from(policy.counter_retention().as_nanos()).unwrap_or(u64::MAX),
            policy,
        }
    }

    /// `now - base`, when the 64-bit path serves `now`.
    #[inline(always)]
    pub(super) fn since_base(&self, now: Nanos) -> Option<Nanos> {
        now.checked_sub(self.base)
            .filter(|&s| s <= self.max_since_base)
    }

    /// True when `now` is past the base's range: move the base on.
    pub(super) fn needs_rebase(&self, now: Nanos) -> bool {
        self.word.is_some() && now.saturating_sub(self.base) > self.max_since_base
    }

    /// The base in the policy's ticks.
    pub(super) fn base_ticks(&self) -> u128 {
        self.policy.limit().rate().ticks(self.base)
    }
}
