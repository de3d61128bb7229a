//! The exact local deny cache: a refusal remembered as a bound, so that a
//! flood of one key is refused on the node, without a script call, until
//! the bound passes.
//!
//! Why it is exact. For one key and one policy version, the earliest
//! moment a request of cost `c` could be admitted (`go`: for police and
//! shape reservations when it may go, for a shape check when it fits in
//! the queue) is an absolute time that only moves later: `tat` only grows,
//! window logs only gain entries, and a larger cost only waits longer. A
//! refusal answered "retry after R" (a reservation: after R past its
//! `max_wait` W) therefore tells this node that, until `go = R + W` past
//! the moment Redis decided, every request of the same kind and a cost at
//! least as large is refused too, under the same version.
//!
//! The node keeps that bound on its own monotonic clock, taken from the
//! moment it *sent* the call (Redis decided after it), less 1 µs (Redis
//! `TIME` is read to the µs) and less `go/1024` (the two clocks may run at
//! rates up to ~0.1% apart). So a request refused here is refused by the
//! store, and its `retry_after` is never later than the store's own. A
//! Redis clock stepped forward (e.g. a failover to a host whose clock is
//! ahead) breaks the assumption for the bounds cached before the step.
//!
//! A configuration change (configure, reset, delete) gets a new version
//! (or none): a node's own change drops its cached policy at once, and
//! another node's is seen by the background sync (`deny_sync.rs`), which
//! reads the version of every bucket with a live bound every
//! [`RedisOptions::deny_cache_sync`](super::RedisOptions::deny_cache_sync)
//! (25 ms by default, so well within 100 ms). A bound counts only while its
//! version is the bucket's cached one.
//!
//! Counters stay exact: each local refusal is tallied and the sync adds
//! the tallies to the keys' `rejected` counters in one script call per
//! bucket (a `status` asked on the node adds the key's tally first).
//! A node that stops abruptly loses at most one sync period of tallies.
//!
//! What a local refusal answers beside `retry_after`: `remaining` and
//! `queue_position` as at the refusal that was cached, `reset_after` a
//! lower bound (the water of that refusal, leaked since).

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use quick_cache::Equivalent;

use super::*;
use crate::clock::Clock;
use crate::core::{Mode, Nanos, Outcome, Quota, Request};
use crate::store::Counters;

/// The cache's counters, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenyCacheStats {
    /// Requests refused on the node without a script call.
    pub hits: u64,
    /// Refusals remembered (bounds inserted).
    pub inserts: u64,
    /// Bounds held now (at most the configured size).
    pub entries: u64,
}

/// A key's local refusals not yet added to its `rejected` counter in Redis.
pub(super) struct Tally {
    pub(super) bucket: String,
    pub(super) key: String,
    pub(super) pending: AtomicU64,
    /// In the list of tallies to flush.
    queued: AtomicBool,
}

/// One remembered refusal.
pub(super) struct Denial {
    /// The policy version it was decided under.
    version: u64,
    /// A shape reservation (its bound is on the start, not on the entry
    /// into the queue); police checks and reservations share one bound.
    shape_reserve: bool,
    /// Requests of at least this cost are refused by the bound.
    cost: u64,
    /// Local ns: a request with `now + max_wait < until` is refused.
    until: Nanos,
    /// Local ns: a lower bound of when the key is back to full.
    reset_until: Nanos,
    remaining: u64,
    queue_position: u64,
    quota: Quota,
    tally: Arc<Tally>,
}

/// (bucket, key) without building owned strings for a lookup.
#[derive(Hash)]
struct Pair<'a>(&'a str, &'a str);

impl Equivalent<(String, String)> for Pair<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// The bounds this node holds, at most `size` of them (older and colder
/// ones are evicted first).
pub(super) struct DenyCache {
    map: quick_cache::sync::Cache<(String, String), Arc<Denial>>,
    hits: AtomicU64,
    inserts: AtomicU64,
    /// Tallies with refusals to flush.
    to_flush: Mutex<Vec<Arc<Tally>>>,
    /// The background sync is running.
    pub(super) syncing: AtomicBool,
}

/// The bound a refusal gives: local ns before which the same request is
/// refused, or `None` when it tells nothing (no retry, or already past).
/// `sent`: local ns when the call was sent; `go`: `retry_after + max_wait`.
pub(super) fn bound(sent: Nanos, go: Nanos) -> Option<Nanos> {
    // 1 µs for Redis reading TIME to the µs (and the retry rounded up to
    // the ns), go/1024 for the clocks' rates.
    let margin = 1001 + go / 1024;
    go.checked_sub(margin).map(|g| sent.saturating_add(g))
}

impl DenyCache {
    pub(super) fn new(size: usize) -> DenyCache {
        DenyCache {
            map: quick_cache::sync::Cache::new(size),
            hits: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            to_flush: Mutex::new(Vec::new()),
            syncing: AtomicBool::new(false),
        }
    }

    pub(super) fn stats(&self) -> DenyCacheStats {
        DenyCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            inserts: self.inserts.load(Ordering::Relaxed),
            entries: self.map.len() as u64,
        }
    }

    /// The store's answer to `req` if a bound of `version` already refuses
    /// it at local time `now`; the refusal is tallied.
    pub(super) fn check(
        &self,
        bucket: &str,
        key: &str,
        req: Request,
        now: Nanos,
        cached: &Cached,
    ) -> Option<Reply> {
        let d = self.map.get(&Pair(bucket, key))?;
        let shape_reserve = cached.policy.mode() == Mode::Shape && req.max_wait.is_some();
        if d.version != cached.version
            || d.shape_reserve != shape_reserve
            || req.cost < d.cost
            || req.cost > cached.policy.max_cost()
        {
            return None;
        }
        let at = now.saturating_add(req.max_wait.unwrap_or(0));
        if at >= d.until {
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        d.tally.pending.fetch_add(1, Ordering::Relaxed);
        if !d.tally.queued.swap(true, Ordering::AcqRel) {
            self.to_flush.lock().push(d.tally.clone());
        }
        Some(Reply {
            outcome: Outcome::Limited,
            wait: 0,
            queue_position: d.queue_position,
            remaining: d.remaining,
            retry_after: d.until - at,
            reset_after: d.reset_until.saturating_sub(now),
            quota: d.quota,
            water_ticks: 0,
            counters: Counters::default(),
        })
    }

    /// Remembers the refusal `reply` of `req`, decided under `cached` in a
    /// call sent at local time `sent`; returns its bound when kept.
    pub(super) fn record(
        &self,
        bucket: &str,
        key: &str,
        req: Request,
        reply: &Reply,
        sent: Nanos,
        cached: &Cached,
    ) -> Option<Nanos> {
        // A refusal without a retry (a reservation too far for the script's
        // doubles) tells nothing about later requests.
        if reply.outcome != Outcome::Limited || reply.retry_after == 0 {
            return None;
        }
        let go = reply.retry_after.saturating_add(req.max_wait.unwrap_or(0));
        let until = bound(sent, go)?;
        let reset_until = bound(sent, reply.reset_after).unwrap_or(0);
        let tally = match self.map.peek(&Pair(bucket, key)) {
            Some(old) => old.tally.clone(),
            None => Arc::new(Tally {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                pending: AtomicU64::new(0),
                queued: AtomicBool::new(false),
            }),
        };
        let denial = Denial {
            version: cached.version,
            shape_reserve: cached.policy.mode() == Mode::Shape && req.max_wait.is_some(),
            cost: req.cost,
            until,
            reset_until,
            remaining: reply.remaining,
            queue_position: reply.queue_position,
            quota: reply.quota,
            tally,
        };
        self.map
            .insert((bucket.to_owned(), key.to_owned()), Arc::new(denial));
        self.inserts.fetch_add(1, Ordering::Relaxed);
        Some(until)
    }

    /// Takes the refusals tallied since the last flush: (bucket, key, n).
    pub(super) fn take_tallies(&self) -> Vec<(Arc<Tally>, u64)> {
        let list = std::mem::take(&mut *self.to_flush.lock());
        list.into_iter()
            .filter_map(|t| {
                // Unqueue before taking: a refusal counted after the take
                // queues the tally again.
                t.queued.store(false, Ordering::Release);
                let n = t.pending.swap(0, Ordering::AcqRel);
                (n > 0).then_some((t, n))
            })
            .collect()
    }

    /// Puts back refusals that could not be flushed.
    pub(super) fn untake(&self, tally: &Arc<Tally>, n: u64) {
        tally.pending.fetch_add(n, Ordering::AcqRel);
        if !tally.queued.swap(true, Ordering::AcqRel) {
            self.to_flush.lock().push(tally.clone());
        }
    }

    /// Takes the tally of one key (for its status).
    pub(super) fn take_key(&self, bucket: &str, key: &str) -> Option<(Arc<Tally>, u64)> {
        let d = self.map.peek(&Pair(bucket, key))?;
        let n = d.tally.pending.swap(0, Ordering::AcqRel);
        (n > 0).then(|| (d.tally.clone(), n))
    }
}

impl Inner {
    /// Local time for the deny cache's bounds: the test clock when set.
    pub(super) fn local_now(&self) -> Nanos {
        match self.test_clock.get() {
            Some(c) => c(),
            None => self.clock.now(),
        }
    }

    /// Remembers the refusals among `replies` to `items`.
    pub(super) fn remember_refusals(
        &self,
        name: &str,
        bucket: &Bucket,
        items: &[Item<'_>],
        replies: &[Reply],
        sent: Nanos,
        cached: &Cached,
    ) {
        let Some(deny) = &self.deny else { return };
        let mut latest = 0;
        for (item, reply) in items.iter().zip(replies) {
            if item.peek || item.count || reply.outcome != Outcome::Limited {
                continue;
            }
            if let Some(until) = deny.record(name, item.key, item.req, reply, sent, cached) {
                latest = latest.max(until);
            }
        }
        if latest > 0 {
            bucket.deny_until.fetch_max(latest, Ordering::AcqRel);
            if let Some(me) = self.me.upgrade() {
                me.start_deny_sync();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bound;

    #[test]
    fn a_bound_starts_at_the_send_less_the_margins() {
        // 1 ms: 1001 ns and 1000000/1024 = 976 ns of margin.
        assert_eq!(
            bound(5_000, 1_000_000),
            Some(5_000 + 1_000_000 - 1001 - 976)
        );
        // Below a microsecond nothing is known.
        assert_eq!(bound(5_000, 1_000), None);
        assert_eq!(bound(u64::MAX - 10, 1 << 40).unwrap(), u64::MAX);
    }
}
