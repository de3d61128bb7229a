//! The deny cache's background sync: every
//! [`RedisOptions::deny_cache_sync`](super::RedisOptions::deny_cache_sync)
//! it reads the policy version of each bucket with a live bound (a change
//! made by another node drops this node's policy, and with it the bounds of
//! the old version), and adds the local refusals to the keys' `rejected`
//! counters in Redis, one script call per bucket. It runs while the store
//! lives, from its first remembered refusal.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::*;
use crate::core::Request;

impl Inner {
    /// Starts the sync if it is not running.
    pub(super) fn start_deny_sync(self: &Arc<Self>) {
        let Some(deny) = &self.deny else { return };
        if deny.syncing.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let period = self.deny_sync;
        self.runtime.spawn(deny_sync(weak, period));
    }

    /// One round: versions, then tallies.
    async fn sync_once(&self) {
        let now = self.local_now();
        let live: Vec<Arc<Bucket>> = self
            .buckets
            .iter()
            .filter(|b| b.deny_until.load(Ordering::Acquire) > now)
            .map(|b| b.value().clone())
            .collect();
        for bucket in live {
            self.check_version(&bucket).await;
        }
        self.flush_tallies().await;
    }

    /// Drops the bucket's policy (and so its bounds) when the stored
    /// version is not the cached one (or the bucket is gone).
    async fn check_version(&self, bucket: &Bucket) {
        let Some(cached) = bucket.state.lock().cached.clone() else {
            return;
        };
        let stored: redis::RedisResult<Option<u64>> = redis::cmd("HGET")
            .arg(&cached.policy_key)
            .arg("version")
            .query_async(&mut self.conn.clone())
            .await;
        // Unreachable: the bounds stay (Redis holds the state; nothing can
        // change it while it cannot be reached).
        let Ok(stored) = stored else { return };
        if stored != Some(cached.version) {
            let mut state = bucket.state.lock();
            if state
                .cached
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &cached))
            {
                state.cached = None;
            }
            bucket.deny_until.store(0, Ordering::Release);
        }
    }

    /// Adds the local refusals to the keys' counters.
    async fn flush_tallies(&self) {
        let Some(deny) = &self.deny else { return };
        let mut by_bucket: HashMap<String, Vec<_>> = HashMap::new();
        for (tally, n) in deny.take_tallies() {
            by_bucket
                .entry(tally.bucket.clone())
                .or_default()
                .push((tally, n));
        }
        for (name, tallies) in by_bucket {
            let Some(bucket) = self.entry(&name) else {
                continue;
            };
            for chunk in tallies.chunks(self.max_batch) {
                let items: Vec<Item<'_>> =
                    chunk.iter().map(|(t, n)| Item::count(&t.key, *n)).collect();
                match self.run(&name, &bucket, &items).await {
                    Ok(_) | Err(crate::Error::UnknownBucket(_)) => {}
                    Err(_) => {
                        for (t, n) in chunk {
                            deny.untake(t, *n);
                        }
                    }
                }
            }
        }
    }
}

impl<'a> Item<'a> {
    /// Adds `n` refusals to `key`'s `rejected` counter; decides nothing.
    pub(super) fn count(key: &'a str, n: u64) -> Item<'a> {
        Item {
            key,
            req: Request::check(n),
            peek: false,
            count: true,
            id: "",
        }
    }
}

async fn deny_sync(weak: Weak<Inner>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        inner.sync_once().await;
    }
}
