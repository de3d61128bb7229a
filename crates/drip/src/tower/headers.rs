//! The header fields of the middleware's responses: [`crate::headers`]
//! (where they are built for every front end), re-exported here with
//! the `HeaderValue` forms earlier versions offered.

use http::header::HeaderValue;

pub use crate::headers::{
    Fields, RATELIMIT, RATELIMIT_NAME, RATELIMIT_POLICY, RATELIMIT_POLICY_NAME, RETRY_AFTER_NAME,
    ceil_secs, fields, policy_value, ratelimit_value, retry_after_secs, sf_string,
};
use crate::{Decision, Policy};

/// `Retry-After: <seconds>`, rounded up, at least 1 (see [`fields`]).
pub fn retry_after(d: &Decision) -> HeaderValue {
    HeaderValue::from(retry_after_secs(d))
}

/// `RateLimit: "bucket";r=<remaining>;t=<seconds until full again>` (see [`fields`]).
pub fn ratelimit(bucket: &str, d: &Decision) -> Option<HeaderValue> {
    HeaderValue::from_str(&ratelimit_value(&sf_string(bucket), d)).ok()
}

/// `RateLimit-Policy: "bucket";q=<capacity>;w=<seconds to drain when full>`.
pub fn ratelimit_policy(bucket: &str, policy: &Policy) -> Option<HeaderValue> {
    HeaderValue::from_str(&policy_value(&sf_string(bucket), &policy.quota())).ok()
}
