//! The queue of waiting requests in SQLite (`drip_queue`, one row per
//! listed request, keyed `(bucket, key, seq)`): written in the decision's
//! transaction, trimmed of departed rows there, by sweeps, and with the
//! bucket; read in departure (`seq`) order.

use rusqlite::{OptionalExtension, params};

use super::*;
use crate::core::{Decision, Nanos, Policy, Request};
use crate::store::{Entry, QueuedRequest, give_back, max_entries};

impl<C: Clock> Worker<C> {
    /// Lists an admitted request of a tracked bucket (inside the
    /// decision's transaction): drops the key's departed rows, then appends
    /// this one unless the list already holds `capacity` rows.
    pub(super) fn record_queued(
        &mut self,
        bucket: &str,
        key: &str,
        policy: &Policy,
        entry: &Entry,
    ) -> Result<(), Fail> {
        self.conn
            .prepare_cached(
                "DELETE FROM drip_queue WHERE bucket = ?1 AND key = ?2 AND leaves <= ?3",
            )?
            .execute(params![bucket, key, to_i64(entry.enqueued)])?;
        self.conn
            .prepare_cached(
                "INSERT INTO drip_queue
                     (bucket, key, seq, id, enqueued, turn, leaves, end_tat, start_tat)
                 SELECT ?1, ?2, COALESCE(MAX(seq), 0) + 1, ?3, ?4, ?5, ?6, ?7, ?8
                 FROM drip_queue WHERE bucket = ?1 AND key = ?2
                 HAVING count(*) < ?9",
            )?
            .execute(params![
                bucket,
                key,
                &*entry.id,
                to_i64(entry.enqueued),
                to_i64(entry.turn),
                to_i64(entry.leaves),
                &entry.end_tat.to_le_bytes()[..],
                &entry.start_tat.to_le_bytes()[..],
                i64::try_from(max_entries(policy)).unwrap_or(i64::MAX),
            ])?;
        Ok(())
    }

    /// Decides `req` in a transaction of its own, listing it as `id`.
    pub(super) fn decide_tracked(
        &mut self,
        bucket: &str,
        key: &str,
        req: Request,
        id: &str,
    ) -> Result<Decision, Fail> {
        self.immediate(|w| w.decide_in_as(bucket, key, req, id))
    }

    /// The listed requests of `key` still queued now, in departure order
    /// (times on the store's clock, the system clock's epoch ns by default).
    pub(super) fn queued(&mut self, bucket: &str, key: &str) -> Result<Vec<QueuedRequest>, Fail> {
        self.conn.prepare_cached("BEGIN")?.execute([])?;
        let out = (|| {
            self.policy(bucket)?
                .ok_or_else(|| Error::UnknownBucket(bucket.to_owned()))?;
            let now = self.clock.now();
            let ms = |ns: i64| to_u64(ns) / 1_000_000;
            let rows = self
                .conn
                .prepare_cached(
                    "SELECT id, enqueued, turn FROM drip_queue
                     WHERE bucket = ?1 AND key = ?2 AND leaves > ?3 ORDER BY seq",
                )?
                .query_map(params![bucket, key, to_i64(now)], |r| {
                    Ok(QueuedRequest {
                        request_id: r.get(0)?,
                        enqueue_time_ms: ms(r.get(1)?),
                        estimated_process_time_ms: ms(r.get(2)?),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })();
        self.finish(out)
    }

    /// Takes the listed request `id` of `key` off the list and gives its
    /// place back when exact ([`give_back`]), in one transaction.
    pub(super) fn cancel(&mut self, bucket: &str, key: &str, id: &str) -> Result<bool, Fail> {
        self.immediate(|w| {
            let (_, policy) = w
                .policy(bucket)?
                .ok_or_else(|| Error::UnknownBucket(bucket.to_owned()))?;
            let now = w.clock.now();
            let row: Option<(i64, Vec<u8>, Vec<u8>)> = w
                .conn
                .prepare_cached(
                    "DELETE FROM drip_queue WHERE (bucket, key, seq) = (
                         SELECT bucket, key, seq FROM drip_queue
                         WHERE bucket = ?1 AND key = ?2 AND id = ?3 AND leaves > ?4
                         ORDER BY seq LIMIT 1)
                     RETURNING leaves, end_tat, start_tat",
                )?
                .query_row(params![bucket, key, id, to_i64(now)], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            let Some((leaves, end_tat, start_tat)) = row else {
                return Ok(false);
            };
            let Some((state, _)) = w.load_key(bucket, key)? else {
                return Ok(false);
            };
            let tat = |b: &[u8]| b.try_into().map(u128::from_le_bytes).unwrap_or(0);
            let entry = Entry {
                id: id.into(),
                enqueued: 0,
                turn: 0,
                leaves: to_u64(leaves),
                end_tat: tat(&end_tat),
                start_tat: tat(&start_tat),
            };
            let now_t = policy.limit().rate().ticks(now);
            let Some(new_tat) = give_back(&policy, &entry, state.tat, now_t) else {
                return Ok(false);
            };
            w.conn
                .prepare_cached("UPDATE drip_keys SET tat = ?3 WHERE bucket = ?1 AND key = ?2")?
                .execute(params![bucket, key, &new_tat.to_le_bytes()[..]])?;
            Ok(true)
        })
    }

    /// Drops every departed row (sweeps), in a transaction of its own.
    pub(super) fn sweep_queue(&mut self, now: Nanos) -> Result<u64, Fail> {
        self.immediate(|w| {
            Ok(w.conn
                .prepare_cached("DELETE FROM drip_queue WHERE leaves <= ?1")?
                .execute([to_i64(now)])? as u64)
        })
    }

    /// Drops every row of `bucket` (deleted or reset), in the caller's
    /// transaction.
    pub(super) fn clear_queue(&mut self, bucket: &str) -> Result<(), Fail> {
        self.conn
            .prepare_cached("DELETE FROM drip_queue WHERE bucket = ?1")?
            .execute([bucket])?;
        Ok(())
    }
}
