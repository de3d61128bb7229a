//! The SQL operations a worker runs: policies, decisions, status, sweeps.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};

use super::*;
use crate::clock::Clock;
use crate::core::{self, Decision, Nanos, Policy, Request, State};
use crate::store::{Counters, Entry, KeyStatus};
use crate::{Error, Result};

/// Keys examined per transaction by [`SqliteStore::sweep`], so a sweep of
/// many keys never holds the write lock for long.
pub(super) const SWEEP_CHUNK: usize = 1000;

impl<C: Clock> Worker<C> {
    /// The policy of `bucket` as the database holds it now, with its version;
    /// decoded once per version.
    pub(super) fn policy(&mut self, bucket: &str) -> Result<Option<(i64, Arc<Policy>)>, Fail> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT version, policy FROM drip_buckets WHERE bucket = ?1")?;
        let cached = self.policies.get(bucket).map(|c| c.0);
        let found = stmt
            .query_row([bucket], |r| {
                let version: i64 = r.get(0)?;
                if cached == Some(version) {
                    return Ok((version, None));
                }
                Ok((version, Some(decode_policy(bucket, r.get_ref(1)?))))
            })
            .optional()?;
        match found {
            None => {
                self.policies.remove(bucket);
                Ok(None)
            }
            Some((version, None)) => Ok(self.policies.get(bucket).map(|c| (version, c.1.clone()))),
            Some((version, Some(decoded))) => {
                let policy = Arc::new(decoded?);
                self.policies
                    .insert(bucket.to_owned(), (version, policy.clone()));
                Ok(Some((version, policy)))
            }
        }
    }

    pub(super) fn load_key(
        &mut self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(State, Counters)>, Fail> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT tat, windows, allowed, rejected FROM drip_keys WHERE bucket = ?1 AND key = ?2",
        )?;
        let row = stmt
            .query_row([bucket, key], |r| {
                let state = decode_state(r.get_ref(0)?, r.get_ref(1)?);
                let counters = Counters {
                    allowed: to_u64(r.get(2)?),
                    rejected: to_u64(r.get(3)?),
                };
                Ok(state.map(|s| (s, counters)))
            })
            .optional()?;
        row.transpose()
            .map_err(|what| Fail::Invalid(format!("key {key:?} of bucket {bucket:?}: {what}")))
    }

    pub(super) fn save_key(
        &mut self,
        bucket: &str,
        key: &str,
        state: &State,
        counters: Counters,
        idle_at: Nanos,
    ) -> Result<(), Fail> {
        encode_windows(&state.windows, &mut self.buf);
        self.conn
            .prepare_cached(
                "INSERT INTO drip_keys (bucket, key, tat, windows, allowed, rejected, idle_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (bucket, key) DO UPDATE SET
                     tat = excluded.tat, windows = excluded.windows,
                     allowed = excluded.allowed, rejected = excluded.rejected,
                     idle_at = excluded.idle_at",
            )?
            .execute(params![
                bucket,
                key,
                &state.tat.to_le_bytes()[..],
                &self.buf[..],
                to_i64(counters.allowed),
                to_i64(counters.rejected),
                to_i64(idle_at),
            ])?;
        Ok(())
    }

    /// Starts a write transaction: takes the database's write lock now.
    pub(super) fn begin(&mut self) -> Result<(), Fail> {
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(())
    }

    /// Commits; on failure rolls back, so no transaction is left open.
    pub(super) fn commit(&mut self) -> Result<(), Fail> {
        let out = self
            .conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]));
        if let Err(e) = out {
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Commits on success, rolls back otherwise.
    pub(super) fn finish<T>(&mut self, out: Result<T, Fail>) -> Result<T, Fail> {
        match out {
            Ok(v) => self.commit().map(|()| v),
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                Err(e)
            }
        }
    }

    /// Runs `f` inside one write transaction.
    pub(super) fn immediate<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        self.begin()?;
        let out = f(self);
        self.finish(out)
    }

    /// Decides `req` in a transaction of its own.
    pub(super) fn decide(
        &mut self,
        bucket: &str,
        key: &str,
        req: Request,
    ) -> Result<Decision, Fail> {
        self.immediate(|w| w.decide_in(bucket, key, req))
    }

    /// Decides `req` inside the caller's write transaction. Its only write
    /// is the last statement, so an error leaves nothing of it behind.
    pub(super) fn decide_in(
        &mut self,
        bucket: &str,
        key: &str,
        req: Request,
    ) -> Result<Decision, Fail> {
        self.decide_in_as(bucket, key, req, "")
    }

    /// [`decide_in`](Self::decide_in), listing an admitted request of a
    /// bucket that tracks its queue as `id` (in the same transaction).
    pub(super) fn decide_in_as(
        &mut self,
        bucket: &str,
        key: &str,
        req: Request,
        id: &str,
    ) -> Result<Decision, Fail> {
        let (_, policy) = self
            .policy(bucket)?
            .ok_or_else(|| Error::UnknownBucket(bucket.to_owned()))?;
        let (mut state, mut counters) = self.load_key(bucket, key)?.unwrap_or_default();
        // Read inside the lock, so decisions of all processes see times in
        // the order they hold it.
        let now = self.clock.now();
        let d = core::decide(&policy, &mut state, now, req);
        if d.allowed() {
            counters.allowed = counters.allowed.saturating_add(1);
        } else {
            counters.rejected = counters.rejected.saturating_add(1);
        }
        // The row (counters with it) stays until the bucket is empty and
        // the counter retention has passed; a sweep removes it after both.
        let retention = u64::try_from(policy.counter_retention().as_nanos()).unwrap_or(u64::MAX);
        let idle_at = now.saturating_add(d.reset_after.max(retention));
        self.save_key(bucket, key, &state, counters, idle_at)?;
        if d.allowed() && policy.tracks_queue() {
            let entry = Entry::admitted(&policy, id, now, &d, req.cost, state.tat);
            self.record_queued(bucket, key, &policy, &entry)?;
        }
        Ok(d)
    }

    pub(super) fn configure(
        &mut self,
        bucket: &str,
        policy: Policy,
        reset: bool,
    ) -> Result<(), Fail> {
        let text = policy.encode();
        let policy = Arc::new(policy);
        let version = self.immediate(|w| {
            let old: Option<String> = w
                .conn
                .prepare_cached("SELECT policy FROM drip_buckets WHERE bucket = ?1")?
                .query_row([bucket], |r| r.get(0))
                .optional()?;
            let version: i64 = w
                .conn
                .prepare_cached(
                    "UPDATE drip_meta SET value = value + 1 WHERE name = 'policy_seq' RETURNING value",
                )?
                .query_row([], |r| r.get(0))?;
            w.conn
                .prepare_cached(
                    "INSERT INTO drip_buckets (bucket, policy, version) VALUES (?1, ?2, ?3)
                     ON CONFLICT (bucket) DO UPDATE SET
                         policy = excluded.policy, version = excluded.version",
                )?
                .execute(params![bucket, text, version])?;
            // A stored policy this version cannot read cannot be carried
            // over from: its keys start empty, as with a reset.
            let old = old.and_then(|t| Policy::decode(&t).ok());
            match old {
                Some(old) if !reset => w.carry_over(bucket, &old, &policy)?,
                _ => {
                    w.conn
                        .prepare_cached("DELETE FROM drip_keys WHERE bucket = ?1")?
                        .execute([bucket])?;
                    w.clear_queue(bucket)?;
                }
            }
            Ok(version)
        })?;
        self.policies.insert(bucket.to_owned(), (version, policy));
        Ok(())
    }

    /// Moves every key of `bucket` from `old` to `new` (inside the caller's
    /// transaction).
    pub(super) fn carry_over(
        &mut self,
        bucket: &str,
        old: &Policy,
        new: &Policy,
    ) -> Result<(), Fail> {
        let now = self.clock.now();
        let keys: Vec<(String, Result<State, String>)> = self
            .conn
            .prepare_cached("SELECT key, tat, windows FROM drip_keys WHERE bucket = ?1")?
            .query_map([bucket], |r| {
                Ok((r.get(0)?, decode_state(r.get_ref(1)?, r.get_ref(2)?)))
            })?
            .collect::<rusqlite::Result<_>>()?;
        for (key, state) in keys {
            // An unreadable state is dropped rather than blocking the change.
            let mut state = state.unwrap_or_default();
            core::carry_over(old, new, &mut state, now);
            let idle_at = now.saturating_add(core::level(new, &state, now).reset_after);
            encode_windows(&state.windows, &mut self.buf);
            self.conn
                .prepare_cached(
                    "UPDATE drip_keys SET tat = ?3, windows = ?4, idle_at = MAX(idle_at, ?5)
                     WHERE bucket = ?1 AND key = ?2",
                )?
                .execute(params![
                    bucket,
                    key,
                    &state.tat.to_le_bytes()[..],
                    &self.buf[..],
                    to_i64(idle_at)
                ])?;
        }
        Ok(())
    }

    pub(super) fn delete(&mut self, bucket: &str) -> Result<bool, Fail> {
        let existed = self.immediate(|w| {
            let n = w
                .conn
                .prepare_cached("DELETE FROM drip_buckets WHERE bucket = ?1")?
                .execute([bucket])?;
            w.conn
                .prepare_cached("DELETE FROM drip_keys WHERE bucket = ?1")?
                .execute([bucket])?;
            w.clear_queue(bucket)?;
            Ok(n > 0)
        })?;
        self.policies.remove(bucket);
        Ok(existed)
    }

    pub(super) fn status(&mut self, bucket: &str, key: &str) -> Result<KeyStatus, Fail> {
        // One read transaction: the policy and the state from one snapshot.
        self.conn.prepare_cached("BEGIN")?.execute([])?;
        let out = (|| {
            let (_, policy) = self
                .policy(bucket)?
                .ok_or_else(|| Error::UnknownBucket(bucket.to_owned()))?;
            let (state, counters) = self.load_key(bucket, key)?.unwrap_or_default();
            let now = self.clock.now();
            Ok(KeyStatus {
                level: core::level(&policy, &state, now),
                policy: Policy::clone(&policy),
                counters,
            })
        })();
        self.finish(out)
    }

    pub(super) fn list(&mut self) -> Result<Vec<(String, Policy)>, Fail> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT bucket, policy FROM drip_buckets ORDER BY bucket")?;
        let rows = stmt.query_map([], |r| {
            let bucket: String = r.get(0)?;
            let policy = decode_policy(&bucket, r.get_ref(1)?);
            Ok((bucket, policy))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (bucket, policy) = row?;
            out.push((bucket, policy?));
        }
        Ok(out)
    }

    /// Deletes idle keys and orphans, a chunk of keys per transaction.
    pub(super) fn sweep(&mut self) -> Result<u64, Fail> {
        let mut removed = 0;
        let mut after = (String::new(), String::new());
        loop {
            let (n, last) = self.immediate(|w| w.sweep_chunk(&after))?;
            removed += n;
            match last {
                Some(last) => after = last,
                None => break,
            }
        }
        let now = self.clock.now();
        self.sweep_queue(now)?;
        Ok(removed)
    }

    /// Sweeps up to [`SWEEP_CHUNK`] candidate keys after `after` (in key
    /// order); returns how many were removed and the last key examined, or
    /// `None` at the end.
    #[allow(clippy::type_complexity)]
    pub(super) fn sweep_chunk(
        &mut self,
        after: &(String, String),
    ) -> Result<(u64, Option<(String, String)>), Fail> {
        let now = self.clock.now();
        // Candidates by `idle_at`; `core::is_idle` has the last word.
        let rows: Vec<(String, String, Result<State, String>)> = self
            .conn
            .prepare_cached(
                "SELECT bucket, key, tat, windows FROM drip_keys
                 WHERE (bucket, key) > (?1, ?2) AND idle_at <= ?3
                 ORDER BY bucket, key LIMIT ?4",
            )?
            .query_map(
                params![after.0, after.1, to_i64(now), SWEEP_CHUNK as i64],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        decode_state(r.get_ref(2)?, r.get_ref(3)?),
                    ))
                },
            )?
            .collect::<rusqlite::Result<_>>()?;
        let mut removed = 0;
        for (bucket, key, state) in &rows {
            let idle = match self.policy(bucket)? {
                // Orphans (bucket deleted) and unreadable states go too.
                None => true,
                Some((_, policy)) => state
                    .as_ref()
                    .map_or(true, |s| core::is_idle(&policy, s, now)),
            };
            if idle {
                removed += self
                    .conn
                    .prepare_cached("DELETE FROM drip_keys WHERE bucket = ?1 AND key = ?2")?
                    .execute([bucket, key])? as u64;
            }
        }
        let last = (rows.len() == SWEEP_CHUNK)
            .then(|| rows.last().map(|r| (r.0.clone(), r.1.clone())))
            .flatten();
        Ok((removed, last))
    }
}
