//! Joint decisions in memory ([`Store::decide_all`](crate::Store::decide_all)):
//! several keys, possibly of several buckets, admitted together or not at all.
//!
//! The involved shards are locked *exclusively*, all of them, in one global
//! order: by bucket name, then shard index (each once). Every other locker
//! takes locks in an order consistent with it (a single decision holds one
//! shard; a policy change or rebase takes one bucket's shards in index
//! order; a sweep one shard at a time), so no cycle of waits can form. With
//! every involved shard held alone, no decision runs on any involved key
//! (word keys are only changed under their shard's lock, shared or alone),
//! so the states read, planned on copies by [`core::decide_joint`] and
//! written back only if every part admits, are the keys' states from start
//! to end. Simple rather than clever: joint decisions are rarer than single
//! ones and pay for the exclusive locks.

use std::sync::Arc;

use parking_lot::RwLockWriteGuard;

use super::config::Config;
use super::shards::Shard;
use super::{Cell, Counted, MemoryStore, StoreBucket, read};
use crate::clock::Clock;
use crate::core::{self, JointDecision, State};
use crate::store::{JointPart, check_parts};
use crate::{Error, Result};

/// One distinct key of the parts: where it lives and its state.
struct Slot<'a> {
    bucket: &'a str,
    key: &'a str,
    hash: u64,
    /// Index into the held locks.
    lock: usize,
}

impl<C: Clock> MemoryStore<C> {
    /// Decides `parts` jointly (see the module's documentation).
    pub(super) fn decide_all_now(&self, parts: &[JointPart<'_>]) -> Result<JointDecision> {
        check_parts(parts)?;
        // The buckets, by name, sorted: the lock order's first key.
        let mut buckets: Vec<(&str, Arc<StoreBucket<C>>)> = Vec::new();
        {
            let map = read(&self.buckets);
            for p in parts {
                if buckets.iter().all(|(n, _)| *n != p.bucket) {
                    let b = map
                        .get(p.bucket)
                        .ok_or_else(|| Error::UnknownBucket(p.bucket.to_owned()))?;
                    buckets.push((p.bucket, b.clone()));
                }
            }
        }
        buckets.sort_by(|a, b| a.0.cmp(b.0));
        let bucket_of = |name: &str| {
            let i = buckets
                .binary_search_by(|(n, _)| (*n).cmp(name))
                .expect("every part's bucket was looked up");
            &buckets[i].1
        };
        let now = self.clock.now();
        // A rebase takes all of a bucket's shards: before any lock is held.
        for (_, b) in &buckets {
            if b.shards.config().needs_rebase(now) {
                b.rebase(now);
            }
        }
        // The distinct keys, and the shards they need, in lock order.
        let mut slots: Vec<Slot<'_>> = Vec::new();
        let mut part_slots = Vec::with_capacity(parts.len());
        for p in parts {
            let found = slots
                .iter()
                .position(|s| s.bucket == p.bucket && s.key == p.key);
            let i = found.unwrap_or_else(|| {
                let hash = bucket_of(p.bucket).shards.hash(p.key);
                slots.push(Slot {
                    bucket: p.bucket,
                    key: p.key,
                    hash,
                    lock: 0,
                });
                slots.len() - 1
            });
            part_slots.push((i, p.req, p.advisory));
        }
        let mut order: Vec<(&str, usize)> = slots
            .iter()
            .map(|s| (s.bucket, bucket_of(s.bucket).shards.index(s.hash)))
            .collect();
        order.sort_unstable();
        order.dedup();
        for s in &mut slots {
            let at = (s.bucket, bucket_of(s.bucket).shards.index(s.hash));
            s.lock = order
                .binary_search(&at)
                .expect("every slot's shard is in the order");
        }
        let mut guards: Vec<RwLockWriteGuard<'_, Shard<String, Counted>>> = order
            .iter()
            .map(|&(name, index)| bucket_of(name).shards.write_at(index))
            .collect();

        // Plan on the states as they are, under every lock.
        let configs: Vec<Arc<Config>> = slots
            .iter()
            .map(|s| guards[s.lock].config.clone())
            .collect();
        let mut states: Vec<(&core::Policy, State)> = slots
            .iter()
            .zip(&configs)
            .map(|(s, config)| {
                let state = guards[s.lock]
                    .find_state(s.hash, s.key, config)
                    .unwrap_or_default();
                (&config.policy, state)
            })
            .collect();
        let joint = core::decide_joint(&mut states, &part_slots, now);

        // Write back: every state when admitted; only the refusing parts'
        // counters otherwise.
        let touched: Vec<bool> = if joint.admitted {
            vec![true; slots.len()]
        } else {
            let mut t = vec![false; slots.len()];
            for (d, &(slot, _, _)) in joint.decisions.iter().zip(&part_slots) {
                t[slot] |= !d.allowed();
            }
            t
        };
        // New keys take from the budget first, so a full store refuses the
        // whole decision before anything is written.
        let mut taken = 0;
        for (s, t) in slots.iter().zip(&touched) {
            // (One budget per store, shared by its buckets.)
            if *t && !guards[s.lock].holds(s.hash, s.key) {
                if let Err(e) = self.budget.take() {
                    self.budget.give_back(taken);
                    return Err(e);
                }
                taken += 1;
            }
        }
        for (i, s) in slots.iter().enumerate() {
            if !touched[i] {
                continue;
            }
            let b = bucket_of(s.bucket);
            let shard = &mut *guards[s.lock];
            let config = &configs[i];
            if !shard.holds(s.hash, s.key) {
                let cell = Cell::new(config, &mut shard.spills);
                b.shards.insert(shard, s.hash, s.key.to_owned(), cell);
            }
            let Shard { keys, spills, .. } = shard;
            let cell = keys
                .find_mut(s.hash, |(k, _)| k == s.key)
                .map(|(_, c)| c)
                .expect("held or just inserted");
            if joint.admitted {
                cell.store(config, spills, states[i].1.clone());
            }
        }
        for (d, &(slot, _, _)) in joint.decisions.iter().zip(&part_slots) {
            if joint.admitted || !d.allowed() {
                let s = &slots[slot];
                let shard = &guards[s.lock];
                if let Some(cell) = shard.find_cell(s.hash, s.key) {
                    cell.count(&configs[slot], now, d.allowed());
                }
            }
        }
        drop(guards);
        Ok(joint)
    }
}

impl Shard<String, Counted> {
    fn find_cell(&self, hash: u64, key: &str) -> Option<&Cell<Counted>> {
        self.keys.find(hash, |(k, _)| k == key).map(|(_, c)| c)
    }

    fn holds(&self, hash: u64, key: &str) -> bool {
        self.find_cell(hash, key).is_some()
    }

    fn find_state(&self, hash: u64, key: &str, config: &Config) -> Option<State> {
        self.find_cell(hash, key)
            .map(|c| c.state(config, &self.spills))
    }
}
