//! The cluster's settings: heartbeat, member timeout, lease, store timeout
//! and what to do when the store does not answer.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What a node answers when the store does not answer within the store
/// timeout (DESIGN.md §5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// 503 / `UNAVAILABLE` naming the cause: never over-admits.
    #[default]
    Deny,
    /// Admit, flagged as degraded: never under-admits.
    Allow,
    /// Decide in a local in-memory bucket with the rate and capacity
    /// divided by the number of live nodes; charge what it admitted to the
    /// shared bucket when the store returns.
    Local,
}

impl OnStoreError {
    /// The name used in flags and config.
    pub fn as_str(&self) -> &'static str {
        match self {
            OnStoreError::Deny => "deny",
            OnStoreError::Allow => "allow",
            OnStoreError::Local => "local",
        }
    }
}

impl fmt::Display for OnStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OnStoreError {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "deny" => Ok(OnStoreError::Deny),
            "allow" => Ok(OnStoreError::Allow),
            "local" => Ok(OnStoreError::Local),
            _ => Err(format!(
                "on_store_error must be deny, allow or local, not {s:?}"
            )),
        }
    }
}

/// How a node takes part in the cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// How often a node writes its member record (and renews the lease).
    pub heartbeat: Duration,
    /// A member not heard from for this long is listed as not alive.
    pub member_timeout: Duration,
    /// How long the leader lease lasts without renewal.
    pub lease: Duration,
    /// Longest wait for the store before `on_store_error` applies.
    pub store_timeout: Duration,
    /// What to answer when the store does not answer.
    pub on_store_error: OnStoreError,
    /// Refusals the Redis store's exact local deny cache remembers (0: off).
    pub deny_cache: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            heartbeat: Duration::from_secs(1),
            member_timeout: Duration::from_secs(3),
            lease: Duration::from_secs(5),
            store_timeout: Duration::from_secs(1),
            on_store_error: OnStoreError::Deny,
            deny_cache: drip::store::RedisOptions::default().deny_cache,
        }
    }
}

impl ClusterOptions {
    /// Checks that the durations fit together; the error names the flag.
    pub fn check(&self) -> Result<(), String> {
        let ms = |d: Duration| d.as_millis();
        if !(10..=60_000).contains(&ms(self.heartbeat)) {
            return Err("--heartbeat must be in 10ms..=60s".to_owned());
        }
        if self.member_timeout <= self.heartbeat || ms(self.member_timeout) > 600_000 {
            return Err(
                "--member-timeout must be longer than --heartbeat and at most 10m".to_owned(),
            );
        }
        if self.lease <= self.heartbeat || ms(self.lease) > 600_000 {
            return Err("--lease must be longer than --heartbeat and at most 10m".to_owned());
        }
        if !(10..=60_000).contains(&ms(self.store_timeout)) {
            return Err("--store-timeout must be in 10ms..=60s".to_owned());
        }
        Ok(())
    }

    /// How long a dead member stays listed (as not alive) before the
    /// leader forgets it.
    pub fn forget_after(&self) -> Duration {
        self.member_timeout * 10
    }
}

/// Parses a duration flag such as `1s`, `250ms` or `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 1s or 250ms: {e}"))
}
