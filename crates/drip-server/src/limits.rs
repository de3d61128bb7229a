//! The server's input limits, and the checks both protocols run on input
//! before it reaches the limiter. Every refusal names the field and the
//! accepted range.

use std::time::Duration;

use drip::core::{MAX_CAPACITY, MAX_EXACT, MAX_WINDOWS};
use drip::{Mode, Policy};

use crate::error::ApiError;
use crate::model::WindowSpec;

/// Longest bucket id, in characters (of `[A-Za-z0-9._:-]`).
pub const MAX_BUCKET_ID_LEN: usize = 128;
/// Longest key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest cost: integers above it do not survive JSON doubles.
pub const MAX_COST: u64 = MAX_EXACT;
/// Longest an acquire may wait, in milliseconds (one hour).
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// How long an acquire waits when it does not say.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Longest request id, in bytes (of printable ASCII).
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// Largest request body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most of a too-large body read and dropped before its 413 (so that a
/// client still sending can read the answer), in bytes...
pub const DRAIN_MAX_BYTES: usize = 16 * 1024 * 1024;
/// ...and in time.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(5);

/// Checks a bucket id: 1..=128 characters of `[A-Za-z0-9._:-]`.
pub fn bucket_id(id: &str) -> Result<&str, ApiError> {
    let ok = (1..=MAX_BUCKET_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(id)
    } else {
        Err(ApiError::invalid("bucket_id", bucket_id_rule()))
    }
}

fn bucket_id_rule() -> String {
    format!("bucket_id must be 1..={MAX_BUCKET_ID_LEN} characters of [A-Za-z0-9._:-]")
}

/// Checks a key: at most 256 bytes.
pub fn key(key: &str) -> Result<&str, ApiError> {
    if key.len() <= MAX_KEY_BYTES {
        Ok(key)
    } else {
        Err(ApiError::invalid("key", key_rule()))
    }
}

fn key_rule() -> String {
    format!("key must be a string of at most {MAX_KEY_BYTES} bytes")
}

/// The cost asked for (default 1), in 1..=2^53-1.
pub fn cost(cost: Option<u64>) -> Result<u64, ApiError> {
    match cost.unwrap_or(1) {
        c @ 1..=MAX_COST => Ok(c),
        _ => Err(ApiError::invalid("cost", cost_rule())),
    }
}

fn cost_rule() -> String {
    format!("cost must be an integer in 1..={MAX_COST}")
}

/// The refusal of a cost larger than the bucket can ever admit.
pub fn cost_exceeds(bucket: &str, max_cost: u64) -> ApiError {
    ApiError::invalid(
        "cost",
        format!(
            "cost must be an integer in 1..={max_cost} for bucket {bucket:?} (its capacity, or its smallest window limit)"
        ),
    )
}

/// The acquire timeout (default 30 s), in 0..=3600000 ms.
pub fn timeout(timeout_ms: Option<u64>) -> Result<Duration, ApiError> {
    match timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS) {
        t @ 0..=MAX_TIMEOUT_MS => Ok(Duration::from_millis(t)),
        _ => Err(ApiError::invalid("timeout_ms", timeout_rule())),
    }
}

fn timeout_rule() -> String {
    format!("timeout_ms must be an integer in 0..={MAX_TIMEOUT_MS}")
}

/// The server's counter retention when neither the bucket nor the server
/// sets one: a drained queue still reports what it processed for a minute.
pub const DEFAULT_COUNTER_RETENTION: Duration = Duration::from_secs(60);

/// Longest counter retention, in seconds (30 days).
pub const MAX_COUNTER_RETENTION_S: u64 = drip::core::MAX_COUNTER_RETENTION.as_secs();

fn retention_rule() -> String {
    format!("counter_retention_s must be a number of seconds in 0..={MAX_COUNTER_RETENTION_S}")
}

/// A `counter_retention_s` value (bucket body, TOML or `--counter-retention`).
pub fn counter_retention(seconds: f64) -> Result<Duration, ApiError> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| d.as_secs_f64() <= MAX_COUNTER_RETENTION_S as f64)
        .ok_or_else(|| ApiError::invalid("counter_retention_s", retention_rule()))
}

/// Builds the policy of a configure call (HTTP body, gRPC message or
/// config file). `mode` may be empty or absent (police); a bucket without
/// `counter_retention_s` keeps its counters for `default_retention`.
pub fn policy(
    mode: Option<&str>,
    capacity: u64,
    leak_rate: f64,
    windows: &[WindowSpec],
    counter_retention_s: Option<f64>,
    default_retention: Duration,
) -> Result<Policy, ApiError> {
    let mode = match mode {
        None | Some("") => Mode::Police,
        Some(m) => m.parse::<Mode>()?,
    };
    if windows.len() > MAX_WINDOWS {
        return Err(ApiError::invalid(
            "windows",
            format!("windows must hold at most {MAX_WINDOWS} windows"),
        ));
    }
    let parts: Vec<(u64, f64)> = windows.iter().map(|w| (w.limit, w.period_s)).collect();
    let retention = match counter_retention_s {
        Some(s) => counter_retention(s)?,
        None => default_retention,
    };
    Ok(Policy::from_parts(mode, capacity, leak_rate, &parts)?.with_counter_retention(retention)?)
}

impl From<drip::ConfigError> for ApiError {
    fn from(e: drip::ConfigError) -> Self {
        ApiError::InvalidArgument {
            field: e.field,
            message: e.message,
        }
    }
}

/// What a field accepts, by its name as the contract spells it (the last
/// segment of a path such as `windows[0].limit`).
pub fn rule(field: &str) -> Option<String> {
    let name = field.rsplit('.').next().unwrap_or(field);
    let name = name.split('[').next().unwrap_or(name);
    let range = match name {
        "capacity" => format!("an integer in 1..={MAX_CAPACITY}"),
        "leak_rate" => "a positive number of units per second in 1e-9..=1e15".to_owned(),
        "limit" => format!("an integer in 1..={MAX_EXACT}"),
        "period_s" => "a positive number of seconds, at most 100 years".to_owned(),
        "mode" => "\"police\" or \"shape\"".to_owned(),
        "reset" => "true or false".to_owned(),
        "windows" => format!(
            "a list of at most {MAX_WINDOWS} objects {{\"limit\": integer, \"period_s\": number}}"
        ),
        "key" => format!("a string of at most {MAX_KEY_BYTES} bytes"),
        "cost" => format!("an integer in 1..={MAX_COST}"),
        "timeout_ms" => format!("an integer in 0..={MAX_TIMEOUT_MS}"),
        "counter_retention_s" => format!("a number of seconds in 0..={MAX_COUNTER_RETENTION_S}"),
        "request_id" => format!("a string of 1..={MAX_REQUEST_ID_BYTES} bytes of printable ASCII"),
        _ => return None,
    };
    Some(format!("{field} must be {range}"))
}

/// Turns a deserialization error at `path` into a 400 naming the field:
/// the field's accepted range when it is one we know, else serde's words.
pub fn from_serde(path: &str, detail: &str, syntax: bool) -> ApiError {
    if syntax {
        return ApiError::invalid("body", format!("body is not valid JSON: {detail}"));
    }
    // serde_json appends " at line L column C"; a named field says more.
    let detail = match detail.rfind(" at line ") {
        Some(i) if detail[i..].contains(" column ") => &detail[..i],
        _ => detail,
    };
    let join = |name: &str| {
        let ends_with_name = path == name || path.ends_with(&format!(".{name}"));
        if path.is_empty() || path == "." || ends_with_name {
            if ends_with_name {
                path.to_owned()
            } else {
                name.to_owned()
            }
        } else {
            format!("{path}.{name}")
        }
    };
    if let Some(name) = quoted(detail, "unknown field `") {
        let field = join(name);
        let expected = detail
            .split_once(", expected ")
            .map(|(_, e)| format!("; expected {e}"))
            .unwrap_or_default();
        return ApiError::invalid(&field, format!("unknown field {field}{expected}"));
    }
    if let Some(name) = quoted(detail, "missing field `") {
        let field = join(name);
        let message = match rule(&field) {
            Some(r) => format!("{field} is required: {r}"),
            None => format!("{field} is required"),
        };
        return ApiError::invalid(&field, message);
    }
    let field = if path.is_empty() || path == "." {
        "body".to_owned()
    } else {
        path.to_owned()
    };
    let message = match rule(&field) {
        Some(r) => format!("{r} ({detail})"),
        None if field == "body" => format!("body must be a JSON object ({detail})"),
        None => format!("{field}: {detail}"),
    };
    ApiError::invalid(field, message)
}

/// The name in `` prefix`name` `` at the start of `s`.
fn quoted<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    s.strip_prefix(prefix)?.split('`').next()
}

/// Whether a bucket lists its queued requests: as asked, else on (the
/// server's default: beside an HTTP or gRPC round trip the tracking costs
/// little; BENCHMARKS.md). Only shape buckets have a queue to list.
pub fn track_queue(asked: Option<bool>) -> bool {
    asked.unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_ids() {
        assert!(bucket_id("api.v1:users_-").is_ok());
        assert!(bucket_id(&"a".repeat(128)).is_ok());
        for bad in ["", "a b", "a/b", "é", &"a".repeat(129)] {
            let e = bucket_id(bad).unwrap_err();
            assert_eq!(e.field(), Some("bucket_id"));
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(cost(None).unwrap(), 1);
        assert!(cost(Some(0)).is_err());
        assert!(cost(Some(MAX_COST + 1)).is_err());
        assert_eq!(timeout(None).unwrap(), Duration::from_secs(30));
        assert!(timeout(Some(MAX_TIMEOUT_MS + 1)).is_err());
        assert!(key(&"k".repeat(257)).is_err());
    }

    #[test]
    fn serde_errors_name_fields() {
        let e = from_serde(
            "capacity",
            "invalid type: string \"x\", expected u64",
            false,
        );
        assert_eq!(e.field(), Some("capacity"));
        assert!(
            e.to_string()
                .starts_with("capacity must be an integer in 1..=4294967295")
        );
        let e = from_serde(".", "unknown field `foo`, expected `key` or `cost`", false);
        assert_eq!(e.field(), Some("foo"));
        let e = from_serde("windows[0]", "missing field `limit`", false);
        assert_eq!(e.field(), Some("windows[0].limit"));
        assert!(
            e.to_string().contains("windows[0].limit is required"),
            "{e}"
        );
    }
}
