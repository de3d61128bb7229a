//! Errors of the library: bad configuration, and failures of a store.

use thiserror::Error;

/// A configuration value outside its accepted range. `field` names the
/// offending input as a user wrote it (`capacity`, `leak_rate`,
/// `windows[0].limit`, ...) and `message`, which starts with that name,
/// states the accepted range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct ConfigError {
    /// The input that is wrong, e.g. `capacity`.
    pub field: String,
    /// What is wrong and what is accepted, e.g. `capacity must be an integer in 1..=4294967295`.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error for a field nested under `prefix` (e.g. `windows[2]`);
    /// the message names the full path too.
    pub(crate) fn within(mut self, prefix: &str) -> Self {
        let field = format!("{prefix}.{}", self.field);
        if let Some(rest) = self.message.strip_prefix(self.field.as_str()) {
            self.message = format!("{field}{rest}");
        }
        self.field = field;
        self
    }
}

/// Everything a [`Limiter`](crate::Limiter) or a store can fail with.
///
/// Being rate limited is *not* an error: it is a [`Decision`](crate::Decision)
/// with `allowed == false`.
#[derive(Debug, Error)]
pub enum Error {
    /// A policy, rate or request value is out of range. (Boxed: two
    /// strings inline would make every `Result` of this crate 48 bytes or
    /// more, moved on every check; BENCHMARKS.md.)
    #[error(transparent)]
    Config(#[from] Box<ConfigError>),
    /// No bucket of that name has been configured.
    #[error("no bucket named {0:?}")]
    UnknownBucket(String),
    /// The store holds as many keys as it was allowed to; new keys are refused
    /// until idle ones expire (existing keys are never reset to make room).
    #[error(
        "key limit reached: the store holds {limit} keys; new keys are refused until idle keys expire"
    )]
    KeyLimit {
        /// The configured maximum number of keys.
        limit: usize,
    },
    /// The store could not be reached or answered badly.
    #[error("store error: {0}")]
    Store(String),
    /// The store cannot do this at all, however often asked (not a
    /// failure of the store: it stays up), e.g. a joint decision across
    /// buckets on Redis Cluster.
    #[error("not supported by this store: {0}")]
    Unsupported(String),
    /// The request was not admitted within the time allowed (throttles and
    /// `acquire_or_err`; a plain check answers with a [`Decision`](crate::Decision)).
    #[error("rate limited: retry after {retry_after:?}")]
    Limited {
        /// When the same request could be admitted.
        retry_after: std::time::Duration,
    },
    /// The request's cost is more than the bucket can ever admit.
    #[error("cost {cost} exceeds what the bucket can ever admit")]
    Exceeds {
        /// The cost asked for.
        cost: u64,
    },
    /// A blocking call was made from inside an async runtime, where it would
    /// stall the runtime's worker; use the async API there.
    #[error("blocking call made inside an async runtime; use the async Limiter instead")]
    BlockingInAsync,
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(Box::new(e))
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
