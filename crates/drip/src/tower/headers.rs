//! The response header fields of a rate-limit decision, for any HTTP
//! server to send: `Retry-After` and the IETF draft `RateLimit-Policy` /
//! `RateLimit` fields (see the [module](super) documentation for their form).

use http::header::{HeaderName, HeaderValue};

use crate::core::{NANOS_PER_SEC, Nanos};
use crate::{Decision, Policy};

/// `RateLimit-Policy`: the quota of the bucket.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: what is left of the quota.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// `Retry-After: <seconds>`: when the refused request could be admitted,
/// rounded up to whole seconds, at least 1.
pub fn retry_after(d: &Decision) -> HeaderValue {
    HeaderValue::from(ceil_secs(d.retry_after).max(1))
}

/// `RateLimit: "bucket";r=<remaining>;t=<seconds until full again>`.
pub fn ratelimit(bucket: &str, d: &Decision) -> Option<HeaderValue> {
    ratelimit_labelled(&sf_string(bucket), d)
}

/// `RateLimit-Policy: "bucket";q=<capacity>;w=<seconds to drain when full>`.
pub fn ratelimit_policy(bucket: &str, policy: &Policy) -> Option<HeaderValue> {
    ratelimit_policy_labelled(&sf_string(bucket), policy)
}

/// [`ratelimit`] with the bucket already a structured-field string.
pub(super) fn ratelimit_labelled(label: &str, d: &Decision) -> Option<HeaderValue> {
    let value = format!("{label};r={};t={}", d.remaining, ceil_secs(d.reset_after));
    HeaderValue::from_str(&value).ok()
}

/// [`ratelimit_policy`] with the bucket already a structured-field string.
pub(super) fn ratelimit_policy_labelled(label: &str, policy: &Policy) -> Option<HeaderValue> {
    let limit = policy.limit();
    let rate = limit.rate();
    let drain_ns = u128::from(limit.capacity()) * u128::from(rate.period_ns());
    let per_sec = u128::from(rate.amount()) * u128::from(NANOS_PER_SEC);
    let w = drain_ns.div_ceil(per_sec);
    let value = format!("{label};q={};w={}", limit.capacity(), w);
    HeaderValue::from_str(&value).ok()
}

/// Nanoseconds as whole seconds, rounded up.
pub(super) fn ceil_secs(ns: Nanos) -> u64 {
    ns.div_ceil(NANOS_PER_SEC)
}

/// `name` as a structured-field string (RFC 8941): quoted, with `"` and `\`
/// escaped and characters a string cannot hold replaced by `?`.
pub fn sf_string(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                s.push('\\');
                s.push(c);
            }
            ' '..='~' => s.push(c),
            _ => s.push('?'),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_become_valid_sf_strings() {
        assert_eq!(sf_string("api"), "\"api\"");
        assert_eq!(sf_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(sf_string("é\n"), "\"??\"");
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(0), 0);
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(NANOS_PER_SEC), 1);
        assert_eq!(ceil_secs(NANOS_PER_SEC + 1), 2);
    }
}
