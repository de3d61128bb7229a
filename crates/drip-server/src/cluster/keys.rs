//! The Redis keys of the cluster. Every cluster key carries the hash tag
//! `{cluster}`, so on a Redis Cluster they share one slot and one script
//! can use them together; a bucket's keys carry the bucket's tag, as the
//! library's Redis store writes them.

/// The key names under one prefix (default `drip`, as the Redis store's).
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// Sorted set: member id -> last heartbeat (Redis TIME, ms).
    pub fn members(&self) -> String {
        format!("{}:{{cluster}}:members", self.prefix)
    }

    /// String: a member's record (JSON), expiring unless refreshed.
    pub fn node(&self, id: &str) -> String {
        format!("{}:{{cluster}}:node:{id}", self.prefix)
    }

    /// String: the leader lease, `"TOKEN NODE_ID"`, with an expiry.
    pub fn lease(&self) -> String {
        format!("{}:{{cluster}}:lease", self.prefix)
    }

    /// Counter: the last fencing token handed out.
    pub fn epoch(&self) -> String {
        format!("{}:{{cluster}}:epoch", self.prefix)
    }

    /// Set: the bucket names (the Redis store's registry).
    pub fn registry(&self) -> String {
        format!("{}:buckets", self.prefix)
    }

    /// The hash-tagged stem of a bucket's keys (the Redis store's rule).
    fn tag(&self, bucket: &str) -> String {
        if bucket.is_empty() || bucket.contains(['{', '}']) {
            let hex: String = bucket.bytes().map(|b| format!("{b:02x}")).collect();
            format!("{}:{{h:{hex}}}", self.prefix)
        } else {
            format!("{}:{{b:{bucket}}}", self.prefix)
        }
    }

    /// Hash: a bucket's policy (`text`, `version`, `gen`, `hist`).
    pub fn policy(&self, bucket: &str) -> String {
        format!("{}:policy", self.tag(bucket))
    }

    /// Counter: a bucket's version (never deleted by the store).
    pub fn version(&self, bucket: &str) -> String {
        format!("{}:version", self.tag(bucket))
    }

    /// String: the highest fencing token that restored this bucket.
    pub fn fence(&self, bucket: &str) -> String {
        format!("{}:fence", self.tag(bucket))
    }
}
