//! The queue of waiting requests of a shape bucket that tracks it
//! ([`Policy::with_track_queue`](crate::Policy::with_track_queue)): what
//! each store keeps beside a key's state, written in the same atomic step
//! as the decision, and how it is read back and given back.
//!
//! An entry is listed from its admission until its water has leaked out of
//! the bucket (`turn + cost / rate`), so for unit costs the list is as long
//! as the key's `queue_size` (`ceil(level)`): the request being served
//! counts until it is done, as it does in `queue_size`.

use crate::core::{Decision, Nanos, Policy};

/// A request admitted and not yet departed, as listed by
/// [`Store::queue`](crate::Store::queue).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedRequest {
    /// The id the request was decided with (`""` when it had none).
    pub request_id: String,
    /// When it was admitted (ms since the Unix epoch).
    pub enqueue_time_ms: u64,
    /// When its turn comes (ms since the Unix epoch): `enqueue + wait`.
    pub estimated_process_time_ms: u64,
}

/// One queued request as the memory and SQLite stores keep it, in their
/// clock's nanoseconds and the policy's ticks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) id: Box<str>,
    /// Admitted at (clock ns).
    pub(crate) enqueued: Nanos,
    /// Its turn (clock ns).
    pub(crate) turn: Nanos,
    /// When its water has leaked (clock ns): listed until then.
    pub(crate) leaves: Nanos,
    /// The key's `tat` right after its admission (ticks): while the `tat`
    /// is still this, nothing was admitted behind it.
    pub(crate) end_tat: u128,
    /// Where its water starts (ticks): the `tat` a cancellation leaves.
    pub(crate) start_tat: u128,
}

impl Entry {
    /// The entry for an admitted `decision` of `cost` units made at `now`,
    /// after which the key's `tat` is `tat`.
    pub(crate) fn admitted(
        policy: &Policy,
        id: &str,
        now: Nanos,
        decision: &Decision,
        cost: u64,
        tat: u128,
    ) -> Entry {
        let rate = policy.limit().rate();
        let turn = now.saturating_add(decision.wait);
        Entry {
            id: id.into(),
            enqueued: now,
            turn,
            leaves: turn.saturating_add(rate.ceil_ns(rate.cost_ticks(cost))),
            end_tat: tat,
            start_tat: tat.saturating_sub(rate.cost_ticks(cost)),
        }
    }

    /// Still waiting or being served at `now`.
    pub(crate) fn live(&self, now: Nanos) -> bool {
        self.leaves > now
    }

    /// The listed form, with clock times turned to epoch ms by `to_epoch_ns`.
    pub(crate) fn listed(&self, to_epoch_ns: impl Fn(Nanos) -> u64) -> QueuedRequest {
        QueuedRequest {
            request_id: self.id.to_string(),
            enqueue_time_ms: to_epoch_ns(self.enqueued) / 1_000_000,
            estimated_process_time_ms: to_epoch_ns(self.turn) / 1_000_000,
        }
    }
}

/// The most entries a key's list keeps: a shape queue holds at most
/// `capacity` unit requests. (Places [`acquire`](crate::Limiter::acquire)
/// reserves beyond the capacity are decided but not listed.)
pub(crate) fn max_entries(policy: &Policy) -> usize {
    usize::try_from(policy.limit().capacity()).unwrap_or(usize::MAX)
}

/// What a cancellation may do to a key whose `tat` is `tat` at `now` (in
/// ticks `now_t`): the new `tat` when `entry` is the last admitted request
/// (nothing queued behind it, no window to unwind), else `None` and its
/// place stays used. Giving back lowers the `tat` to where the entry's
/// water starts (not before now), which is exactly the state had it never
/// been admitted; behind later requests, lowering it would let a new
/// request overlap the turns already promised to them.
pub(crate) fn give_back(policy: &Policy, entry: &Entry, tat: u128, now_t: u128) -> Option<u128> {
    (policy.windows().is_empty() && tat == entry.end_tat).then(|| entry.start_tat.max(now_t))
}
