//! Self-healing configuration: every node remembers what Redis holds
//! (configurations and deletions, with versions); the leader writes back
//! what Redis lost, fenced per bucket by its token.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use redis::RedisResult;

use super::node::Cluster;
use super::remembered::Entry;

/// A policy hash's `text`, `version` and `gen`.
type PolicyFields = (Option<String>, Option<u64>, Option<String>);

impl Cluster {
    /// Writes back one lost configuration (or a deletion's version);
    /// false if the bucket's fence refused this token.
    pub(super) async fn restore(&self, token: u64, name: &str, entry: &Entry) -> RedisResult<bool> {
        let mut conn = self.conn.clone();
        let (a, p) = entry
            .text
            .as_deref()
            .and_then(|t| drip::Policy::decode(t).ok())
            .map_or((0, 0), |p| {
                (p.limit().rate().amount(), p.limit().rate().period_ns())
            });
        let done: i64 = self
            .scripts
            .restore
            .key(self.keys.policy(name))
            .key(self.keys.version(name))
            .key(self.keys.fence(name))
            .arg(token)
            .arg(entry.version)
            .arg(&entry.generation)
            .arg(entry.text.as_deref().unwrap_or(""))
            .arg(a)
            .arg(p)
            .invoke_async(&mut conn)
            .await?;
        match done {
            -1 => return Ok(false),
            1 => {
                let _: () = redis::cmd("SADD")
                    .arg(self.keys.registry())
                    .arg(name)
                    .query_async(&mut conn)
                    .await?;
                self.restored.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    bucket = name,
                    version = entry.version,
                    "restored a configuration Redis lost"
                );
            }
            2 => tracing::info!(
                bucket = name,
                version = entry.version,
                "restored a deletion's version"
            ),
            _ => {}
        }
        Ok(true)
    }

    /// Reads every bucket this node knows of or Redis lists, remembers
    /// what is configured (and what was deleted), and returns each
    /// bucket's version counter.
    pub(super) async fn observe(&self) -> RedisResult<Vec<(String, Option<u64>)>> {
        let mut conn = self.conn.clone();
        let listed: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.registry())
            .query_async(&mut conn)
            .await?;
        let names: BTreeSet<String> = listed
            .into_iter()
            .chain(self.remembered.snapshot().into_iter().map(|(n, _)| n))
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            // One slot per bucket: a pipeline of its two keys.
            let ((text, version, generation), counter): (PolicyFields, Option<u64>) = redis::pipe()
                .cmd("HMGET")
                .arg(self.keys.policy(&name))
                .arg(&["text", "version", "gen"])
                .cmd("GET")
                .arg(self.keys.version(&name))
                .query_async(&mut conn)
                .await?;
            match (text, version, generation, counter) {
                (Some(text), Some(version), Some(generation), _) => {
                    self.remembered.merge(
                        &name,
                        Entry {
                            version,
                            generation,
                            text: Some(text),
                        },
                    );
                }
                // No policy but the counter is there: deleted, not lost.
                (None, _, _, Some(c)) => {
                    if let Some(old) = self.remembered.get(&name)
                        && old.text.is_some()
                        && c >= old.version
                    {
                        self.remembered.merge(
                            &name,
                            Entry {
                                version: c,
                                generation: old.generation,
                                text: None,
                            },
                        );
                    }
                }
                _ => {}
            }
            out.push((name, counter));
        }
        Ok(out)
    }
}
