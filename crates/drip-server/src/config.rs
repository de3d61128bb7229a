//! The TOML file that declares buckets at start:
//!
//! ```toml
//! [buckets.api]
//! mode = "police"          # or "shape"; default police
//! capacity = 10
//! leak_rate = 5            # units per second
//! windows = [{ limit = 1000, period_s = 3600 }]
//! counter_retention_s = 60 # optional: counters outlive the water this long
//! ```
//!
//! A top-level `max_keys = 500000` caps the keys a memory store holds
//! (`--max-keys` / `DRIP_MAX_KEYS` win over it; `key_cap.rs`).
//!
//! A top-level `counter_retention_s` sets the server's default for buckets
//! that do not say (`--counter-retention` / `DRIP_COUNTER_RETENTION` win
//! over it).
//!
//! Every mistake is reported with the bucket and the field it is in.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use drip::Policy;
use serde::Deserialize;

use crate::limits;
use crate::model::WindowSpec;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    counter_retention_s: Option<f64>,
    #[serde(default)]
    buckets: BTreeMap<String, BucketSpec>,
    #[serde(default)]
    cluster: ClusterSection,
    #[serde(default)]
    max_keys: Option<u64>,
}

/// The `[cluster]` table: the cluster settings, each overridden by its
/// flag or `DRIP_*` variable.
///
/// ```toml
/// [cluster]
/// heartbeat = "1s"
/// member_timeout = "3s"
/// lease = "5s"
/// store_timeout = "1s"
/// on_store_error = "deny"   # or "allow", "local"
/// deny_cache = 65536        # entries of the Redis deny cache; 0: off
/// ```
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// How often a node heartbeats.
    pub heartbeat: Option<String>,
    /// When a silent member counts as dead.
    pub member_timeout: Option<String>,
    /// The leader lease's length.
    pub lease: Option<String>,
    /// Longest wait for the store.
    pub store_timeout: Option<String>,
    /// `deny`, `allow` or `local`.
    pub on_store_error: Option<crate::cluster::OnStoreError>,
    /// Entries of the Redis store's deny cache (0: off).
    pub deny_cache: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BucketSpec {
    #[serde(default)]
    mode: Option<String>,
    capacity: u64,
    leak_rate: f64,
    #[serde(default)]
    windows: Vec<WindowSpec>,
    #[serde(default)]
    counter_retention_s: Option<f64>,
    /// Shape buckets: list the queued requests (default true).
    #[serde(default)]
    track_queue: Option<bool>,
}

/// A mistake in the file, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML, or not of the expected shape.
    #[error("{file}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong, naming the bucket and field.
        message: String,
    },
}

/// What a config file declares: the server's counter retention (the
/// flag's, else the file's, else the default) and the buckets.
#[derive(Debug)]
pub struct Declared {
    /// The retention of buckets that do not set one.
    pub counter_retention: Duration,
    /// The buckets, in name order.
    pub buckets: Vec<(String, Policy)>,
    /// The `[cluster]` table.
    pub cluster: ClusterSection,
    /// The top-level `max_keys` (memory store key cap), if given.
    pub max_keys: Option<usize>,
}

/// Reads the buckets declared in `path`, in name order; `flag` is the
/// retention given on the command line or in the environment, if any.
pub fn load(path: &Path, flag: Option<Duration>) -> Result<Declared, ConfigFileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        file: file.clone(),
        source,
    })?;
    parse_with(&text, flag).map_err(|message| ConfigFileError::Invalid { file, message })
}

/// Parses the text of a config file; the error names the bucket and field.
pub fn parse(text: &str) -> Result<Vec<(String, Policy)>, String> {
    parse_with(text, None).map(|d| d.buckets)
}

/// Parses a config file, with the retention `flag` (if given) in place of
/// the file's top-level `counter_retention_s`.
pub fn parse_with(text: &str, flag: Option<Duration>) -> Result<Declared, String> {
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.map(|s| {
            format!(
                " (line {})",
                text[..s.start.min(text.len())].lines().count().max(1)
            )
        })
        .unwrap_or_default()
    };
    let de = toml::de::Deserializer::parse(text)
        .map_err(|e| format!("not valid TOML: {}{}", e.message(), line_of(e.span())))?;
    let file: File = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let detail = inner.message().to_owned();
        let at = line_of(inner.span());
        // `buckets.NAME.field...`: report the bucket, then the field.
        let mut parts = path.splitn(3, '.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("buckets"), Some(bucket), rest) => {
                let err = limits::from_serde(rest.unwrap_or(""), &detail, false);
                format!("bucket {bucket:?}: {}{at}", err.public_message())
            }
            (Some("max_keys"), None, None) => {
                format!("{}{at}", crate::key_cap::rule("max_keys"))
            }
            _ => format!("{detail}{at}"),
        }
    })?;
    let counter_retention = match (flag, file.counter_retention_s) {
        (Some(d), _) => d,
        (None, Some(s)) => limits::counter_retention(s).map_err(|e| e.public_message())?,
        (None, None) => limits::DEFAULT_COUNTER_RETENTION,
    };
    let mut out = Vec::with_capacity(file.buckets.len());
    for (name, spec) in file.buckets {
        limits::bucket_id(&name).map_err(|e| format!("bucket {name:?}: {}", e.public_message()))?;
        let policy = limits::policy(
            spec.mode.as_deref(),
            spec.capacity,
            spec.leak_rate,
            &spec.windows,
            spec.counter_retention_s,
            counter_retention,
        )
        .map_err(|e| format!("bucket {name:?}: {}", e.public_message()))?
        .with_track_queue(limits::track_queue(spec.track_queue));
        out.push((name, policy));
    }
    let max_keys = file
        .max_keys
        .map(|n| crate::key_cap::check("max_keys", n))
        .transpose()?;
    Ok(Declared {
        counter_retention,
        buckets: out,
        cluster: file.cluster,
        max_keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_retention_per_bucket_file_and_flag() {
        let text = "counter_retention_s = 5\n[buckets.a]\ncapacity = 1\nleak_rate = 1\n\
                    [buckets.b]\ncapacity = 1\nleak_rate = 1\ncounter_retention_s = 0\n";
        let secs = |d: &Declared| -> Vec<u64> {
            d.buckets
                .iter()
                .map(|(_, p)| p.counter_retention().as_secs())
                .collect()
        };
        let d = parse_with(text, None).unwrap();
        assert_eq!((d.counter_retention.as_secs(), secs(&d)), (5, vec![5, 0]));
        let d = parse_with(text, Some(Duration::from_secs(7))).unwrap();
        assert_eq!((d.counter_retention.as_secs(), secs(&d)), (7, vec![7, 0]));
        let d = parse_with("[buckets.a]\ncapacity = 1\nleak_rate = 1\n", None).unwrap();
        assert_eq!((d.counter_retention.as_secs(), secs(&d)), (60, vec![60]));
        let e = parse("[buckets.a]\ncapacity = 1\nleak_rate = 1\ncounter_retention_s = -1\n")
            .unwrap_err();
        assert!(
            e.contains("bucket \"a\"") && e.contains("counter_retention_s"),
            "{e}"
        );
        let e = parse("counter_retention_s = 1e12\n").unwrap_err();
        assert!(e.contains("counter_retention_s"), "{e}");
    }

    #[test]
    fn max_keys_is_read_and_checked() {
        let d = parse_with("max_keys = 500000\n", None).unwrap();
        assert_eq!(d.max_keys, Some(500_000));
        assert_eq!(parse_with("", None).unwrap().max_keys, None);
        let e = parse_with("max_keys = 0\n", None).unwrap_err();
        assert!(e.contains("max_keys must be an integer in 1..="), "{e}");
        let e = parse_with("max_keys = -5\n", None).unwrap_err();
        assert!(e.contains("max_keys"), "{e}");
    }

    #[test]
    fn reads_the_design_example() {
        let b = parse(
            "[buckets.api]\nmode = \"police\"\ncapacity = 10\nleak_rate = 5\n\
             windows = [{ limit = 1000, period_s = 3600 }]\n\n[buckets.q]\nmode = \"shape\"\ncapacity = 5\nleak_rate = 0.5\n",
        )
        .unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].0, "api");
        assert_eq!(b[0].1.limit().capacity(), 10);
        assert_eq!(b[0].1.windows().len(), 1);
        assert_eq!(b[1].1.mode(), drip::Mode::Shape);
    }

    #[test]
    fn reads_the_cluster_table() {
        let d = parse_with(
            "[cluster]\nheartbeat = \"250ms\"\nlease = \"4s\"\non_store_error = \"local\"\n",
            None,
        )
        .unwrap();
        let (b, c) = (d.buckets, d.cluster);
        assert!(b.is_empty());
        assert_eq!(c.heartbeat.as_deref(), Some("250ms"));
        assert_eq!(c.lease.as_deref(), Some("4s"));
        assert_eq!(c.on_store_error, Some(crate::cluster::OnStoreError::Local));
        let e = parse_with("[cluster]\non_store_error = \"maybe\"\n", None).unwrap_err();
        assert!(e.contains("deny") && e.contains("local"), "{e}");
        let e = parse_with("[cluster]\nbeat = \"1s\"\n", None).unwrap_err();
        assert!(e.contains("beat"), "{e}");
    }

    #[test]
    fn errors_name_bucket_and_field() {
        let e = parse("[buckets.api]\ncapacity = 0\nleak_rate = 5\n").unwrap_err();
        assert!(
            e.contains("bucket \"api\": capacity must be an integer in 1..=4294967295"),
            "{e}"
        );
        let e = parse("[buckets.api]\ncapacity = -3\nleak_rate = 5\n").unwrap_err();
        assert!(e.contains("bucket \"api\": capacity must be"), "{e}");
        let e = parse("[buckets.api]\ncapacity = 3\nleak_rate = \"fast\"\n").unwrap_err();
        assert!(e.contains("bucket \"api\": leak_rate must be"), "{e}");
        let e = parse(
            "[buckets.api]\ncapacity = 3\nleak_rate = 1\nwindows = [{ limit = 0, period_s = 1 }]\n",
        )
        .unwrap_err();
        assert!(
            e.contains("bucket \"api\": windows[0].limit must be"),
            "{e}"
        );
        let e = parse("[buckets.api]\ncapacity = 3\nleak_rate = 1\nburst = 4\n").unwrap_err();
        assert!(e.contains("bucket \"api\": unknown field burst"), "{e}");
        let e = parse("[buckets.api]\nleak_rate = 1\n").unwrap_err();
        assert!(e.contains("bucket \"api\": capacity is required"), "{e}");
        let e = parse("[buckets.\"a b\"]\ncapacity = 1\nleak_rate = 1\n").unwrap_err();
        assert!(e.contains("bucket \"a b\": bucket_id must be"), "{e}");
        assert!(
            parse("[buckets.api\n")
                .unwrap_err()
                .contains("not valid TOML")
        );
    }
}
