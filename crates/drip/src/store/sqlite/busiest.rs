//! The busiest keys of a bucket: one read transaction over at most
//! [`BUSIEST_SCAN`] of its rows that still hold something, keeping the `n`
//! fullest. Runs on a reader thread, so decisions (on the writer) never
//! wait for it (WAL readers take no lock writers wait for).

use rusqlite::types::ValueRef;

use super::*;
use crate::clock::Clock;
use crate::core;
use crate::store::busiest::Top;
use crate::store::{BUSIEST_SCAN, Counters, KeyLevel};

impl<C: Clock> Worker<C> {
    pub(super) fn busiest(&mut self, bucket: &str, n: usize) -> Result<Vec<KeyLevel>, Fail> {
        self.conn.prepare_cached("BEGIN")?.execute([])?;
        let out = (|| {
            let (_, policy) = self
                .policy(bucket)?
                .ok_or_else(|| Error::UnknownBucket(bucket.to_owned()))?;
            let now = self.clock.now();
            // Rows idle from now on hold no water; the rest are candidates.
            let mut stmt = self.conn.prepare_cached(
                "SELECT key, tat, windows, allowed, rejected FROM drip_keys
                 WHERE bucket = ?1 AND idle_at > ?2 LIMIT ?3",
            )?;
            let mut rows = stmt.query(rusqlite::params![
                bucket,
                to_i64(now),
                to_i64(BUSIEST_SCAN as u64)
            ])?;
            let empty_below = policy.limit().rate().ticks(now);
            let mut top = Top::new(n);
            while let Some(r) = rows.next()? {
                let Some(tat) = tat_of(r.get_ref(1)?) else {
                    continue;
                };
                if tat > empty_below {
                    let key: String = r.get(0)?;
                    let state = decode_state(r.get_ref(1)?, r.get_ref(2)?);
                    let counters = Counters {
                        allowed: to_u64(r.get(3)?),
                        rejected: to_u64(r.get(4)?),
                    };
                    top.offer(tat, || (key, state, counters));
                }
            }
            top.into_sorted()
                .into_iter()
                .map(|(key, state, counters)| {
                    let state = state.map_err(|what| {
                        Fail::Invalid(format!("key {key:?} of bucket {bucket:?}: {what}"))
                    })?;
                    Ok(KeyLevel {
                        level: core::level(&policy, &state, now),
                        key,
                        counters,
                    })
                })
                .collect()
        })();
        self.finish(out)
    }
}

/// A row's `tat`, if it is the 16-byte blob it should be.
fn tat_of(v: ValueRef<'_>) -> Option<u128> {
    let b = v.as_blob().ok()?;
    <[u8; 16]>::try_from(b).ok().map(u128::from_le_bytes)
}
