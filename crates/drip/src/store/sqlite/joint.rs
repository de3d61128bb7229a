//! Joint decisions in SQLite: every part read, planned and written back in
//! one `BEGIN IMMEDIATE` transaction, which holds the database's write lock
//! over all processes, so all parts are admitted and consumed or none is.

use std::sync::Arc;

use super::*;
use crate::clock::Clock;
use crate::core::{self, JointDecision, Policy, Request, State};
use crate::store::Counters;
use crate::{Error, Result};

/// One distinct key of a joint decision, as read.
struct Slot {
    bucket: String,
    key: String,
    policy: Arc<Policy>,
    state: State,
    counters: Counters,
}

impl<C: Clock> Worker<C> {
    /// Decides `parts` (bucket, key, request) jointly in one transaction.
    pub(super) fn decide_all(
        &mut self,
        parts: &[(String, String, Request, bool)],
    ) -> Result<JointDecision, Fail> {
        self.immediate(|w| w.decide_all_in(parts))
    }

    fn decide_all_in(
        &mut self,
        parts: &[(String, String, Request, bool)],
    ) -> Result<JointDecision, Fail> {
        let mut slots: Vec<Slot> = Vec::new();
        let mut part_slots = Vec::with_capacity(parts.len());
        for (bucket, key, req, advisory) in parts {
            let found = slots
                .iter()
                .position(|s| &s.bucket == bucket && &s.key == key);
            let i = match found {
                Some(i) => i,
                None => {
                    let (_, policy) = self
                        .policy(bucket)?
                        .ok_or_else(|| Error::UnknownBucket(bucket.clone()))?;
                    let (state, counters) = self.load_key(bucket, key)?.unwrap_or_default();
                    slots.push(Slot {
                        bucket: bucket.clone(),
                        key: key.clone(),
                        policy,
                        state,
                        counters,
                    });
                    slots.len() - 1
                }
            };
            part_slots.push((i, *req, *advisory));
        }
        // Read inside the lock, as a single decision does.
        let now = self.clock.now();
        let mut states: Vec<(&Policy, State)> = slots
            .iter()
            .map(|s| (&*s.policy, s.state.clone()))
            .collect();
        let joint = core::decide_joint(&mut states, &part_slots, now);
        let new_states: Vec<State> = states.into_iter().map(|(_, s)| s).collect();
        // Counters: every part when admitted; only the refusing ones if not.
        let mut touched = vec![false; slots.len()];
        for (d, &(i, _, _)) in joint.decisions.iter().zip(&part_slots) {
            let c = &mut slots[i].counters;
            if joint.admitted && d.allowed() {
                c.allowed = c.allowed.saturating_add(1);
                touched[i] = true;
            } else if !d.allowed() {
                c.rejected = c.rejected.saturating_add(1);
                touched[i] = true;
            }
        }
        for ((slot, state), touched) in slots.iter().zip(&new_states).zip(touched) {
            if !touched {
                continue;
            }
            let retention =
                u64::try_from(slot.policy.counter_retention().as_nanos()).unwrap_or(u64::MAX);
            let reset_after = core::level(&slot.policy, state, now).reset_after;
            let idle_at = now.saturating_add(reset_after.max(retention));
            self.save_key(&slot.bucket, &slot.key, state, slot.counters, idle_at)?;
        }
        Ok(joint)
    }
}

impl<C: Clock> SqliteStore<C> {
    /// [`Store::decide_all`] on the writer's thread.
    pub(super) async fn decide_all_now(
        &self,
        parts: &[crate::store::JointPart<'_>],
    ) -> Result<JointDecision> {
        crate::store::check_parts(parts)?;
        let owned: Vec<(String, String, Request, bool)> = parts
            .iter()
            .map(|p| (p.bucket.to_owned(), p.key.to_owned(), p.req, p.advisory))
            .collect();
        self.write("decide_all", move |w| w.decide_all(&owned))
            .await
    }
}
