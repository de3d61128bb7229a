//! The busiest keys of a bucket: `SCAN` for the bucket's state keys (its
//! hash tag and generation), at most [`BUSIEST_SCAN`] keys over at most
//! [`SCAN_PAGES`] pages, then peek at them with the decide script (a batch
//! per call, writing nothing) and keep the `n` fullest. On a Redis Cluster
//! `SCAN` visits one node, not the bucket's slot: the answer is `None`.

use super::*;
use crate::core::Request;
use crate::store::busiest::Top;
use crate::store::{BUSIEST_SCAN, KeyLevel};

/// Most `SCAN` pages (of about 1000 slots each) one call reads, so a Redis
/// holding many other keys bounds the walk too.
pub(super) const SCAN_PAGES: usize = 64;

impl Inner {
    pub(super) async fn busiest(&self, name: &str, n: usize) -> Result<Option<Vec<KeyLevel>>> {
        if matches!(self.conn, Conn::Cluster(_)) {
            return Ok(None);
        }
        let entry = self.bucket(name).await?;
        let cached = self.cached(name, &entry).await?;
        let pattern = format!("{}*", glob_escape(&cached.state_prefix));
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        for _ in 0..SCAN_PAGES {
            let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(store_error)?;
            keys.extend(
                page.iter()
                    .filter_map(|k| k.strip_prefix(cached.state_prefix.as_str()))
                    .map(str::to_owned),
            );
            cursor = next;
            if cursor == 0 || keys.len() >= BUSIEST_SCAN {
                break;
            }
        }
        keys.truncate(BUSIEST_SCAN);
        let mut top = Top::new(n);
        for chunk in keys.chunks(self.max_batch) {
            let items: Vec<Item<'_>> = chunk
                .iter()
                .map(|key| Item {
                    key,
                    req: Request::check(0),
                    peek: true,
                    count: false,
                    id: "",
                })
                .collect();
            let (replies, cached) = self.run(name, &entry, &items).await?;
            let p = cached.policy.limit().rate().period_ns();
            for (key, r) in chunk.iter().zip(replies) {
                if r.water_ticks > 0 {
                    top.offer(u128::from(r.water_ticks), || KeyLevel {
                        key: key.clone(),
                        level: Level {
                            level: r.water_ticks as f64 / p as f64,
                            queue_size: r.water_ticks.div_ceil(p),
                            remaining: r.remaining,
                            reset_after: r.reset_after,
                        },
                        counters: r.counters,
                    });
                }
            }
        }
        Ok(Some(top.into_sorted()))
    }
}

/// `s` matched literally by a `SCAN MATCH` glob.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn glob_escape_quotes_every_special_character() {
        assert_eq!(super::glob_escape("a*b?[c]\\d"), "a\\*b\\?\\[c\\]\\\\d");
        assert_eq!(
            super::glob_escape("drip:{b:api}:g1:s:"),
            "drip:{b:api}:g1:s:"
        );
    }
}
