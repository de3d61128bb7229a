//! The policies this node has read, per bucket, with what each script call
//! sends precomputed; read again when a script answers `stale`.

use std::sync::Arc;

use super::*;
use crate::core::Policy;
use crate::{Error, Result};

/// A bucket's policy as this node last read it, with what each decision
/// sends precomputed (shared, not rebuilt, by every call).
pub(super) struct Cached {
    pub(super) policy: Policy,
    /// The policy's version in Redis.
    pub(super) version: u64,
    /// `PREFIX:{b:BUCKET}:policy`.
    pub(super) policy_key: String,
    /// `PREFIX:{b:BUCKET}:gGEN:s:`, followed by the key.
    pub(super) state_prefix: String,
    /// `PREFIX:{b:BUCKET}:gGEN:q:`, followed by the key: its queue list.
    pub(super) queue_prefix: String,
    /// The version and the policy as the decide script reads them after
    /// `now` (packed doubles).
    pub(super) args: Vec<u8>,
}

impl Cached {
    pub(super) fn new(tag: &str, policy: Policy, version: u64, generation: &str) -> Arc<Cached> {
        Arc::new(Cached {
            args: script_args(&policy, version),
            policy,
            version,
            policy_key: format!("{tag}:policy"),
            state_prefix: format!("{tag}:g{generation}:s:"),
            queue_prefix: format!("{tag}:g{generation}:q:"),
        })
    }
}

impl Inner {
    /// `now_us` for the decide script's packed argument: -1 means "use
    /// Redis TIME".
    pub(super) fn now_us(&self) -> f64 {
        self.test_clock.get().map_or(-1.0, |c| (c() / 1000) as f64)
    }

    /// `now_us` for a script: empty means "use Redis TIME".
    pub(super) fn now_arg(&self) -> String {
        self.test_clock
            .get()
            .as_ref()
            .map_or_else(String::new, |c| (c() / 1000).to_string())
    }

    pub(super) fn tag(&self, bucket: &str) -> String {
        if bucket.is_empty() || bucket.contains(['{', '}']) {
            let hex: String = bucket.bytes().map(|b| format!("{b:02x}")).collect();
            format!("{}:{{h:{hex}}}", self.prefix)
        } else {
            format!("{}:{{b:{bucket}}}", self.prefix)
        }
    }

    pub(super) fn registry(&self) -> String {
        format!("{}:buckets", self.prefix)
    }

    /// Reads `bucket`'s policy from Redis and caches it.
    pub(super) async fn load(&self, bucket: &str) -> Result<Option<Arc<Cached>>> {
        let tag = self.tag(bucket);
        let (text, version, generation): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("HMGET")
                .arg(format!("{tag}:policy"))
                .arg(&["text", "version", "gen"])
                .query_async(&mut self.conn.clone())
                .await
                .map_err(store_error)?;
        let (Some(text), Some(version), Some(generation)) = (text, version, generation) else {
            self.forget(bucket);
            return Ok(None);
        };
        let policy = Policy::decode(&text)?;
        let version = version
            .parse()
            .map_err(|_| Error::Store(format!("bucket {bucket:?} has version {version:?}")))?;
        let cached = Cached::new(&tag, policy, version, &generation);
        self.remember(bucket, cached.clone());
        Ok(Some(cached))
    }

    /// The entry of a bucket this node has seen.
    pub(super) fn entry(&self, name: &str) -> Option<Arc<Bucket>> {
        self.buckets.get(name).map(|b| b.clone())
    }

    /// Keeps `cached` as the bucket's policy.
    pub(super) fn remember(&self, name: &str, cached: Arc<Cached>) {
        let bucket = match self.entry(name) {
            Some(b) => b,
            None => self.buckets.entry(name.to_owned()).or_default().clone(),
        };
        bucket.state.lock().cached = Some(cached);
    }

    /// Forgets the bucket's policy: its next call reads it again.
    pub(super) fn forget(&self, name: &str) {
        if let Some(b) = self.entry(name) {
            b.state.lock().cached = None;
        }
    }

    /// The entry of a bucket that exists (read from Redis when this node
    /// has not seen it: only buckets that exist get an entry).
    pub(super) async fn bucket(&self, name: &str) -> Result<Arc<Bucket>> {
        if let Some(b) = self.entry(name) {
            return Ok(b);
        }
        self.load(name).await?;
        self.entry(name)
            .ok_or_else(|| Error::UnknownBucket(name.to_owned()))
    }

    pub(super) async fn cached(&self, name: &str, bucket: &Bucket) -> Result<Arc<Cached>> {
        let cached = bucket.state.lock().cached.clone();
        match cached {
            Some(c) => Ok(c),
            None => self
                .load(name)
                .await?
                .ok_or_else(|| Error::UnknownBucket(name.to_owned())),
        }
    }
}
