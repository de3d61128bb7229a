//! The rate-limit header fields of a decision's response, built in one
//! place for every front end (the server's HTTP API, the tower layer, a
//! proxy): `Retry-After` and the IETF draft `RateLimit-Policy` /
//! `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers).
//!
//! - `Retry-After: <seconds>`: when the refused request could be admitted,
//!   rounded up to whole seconds, at least 1; only when it was limited (a
//!   cost the policy can never admit gets none: retrying cannot help);
//! - `RateLimit-Policy: "<bucket>";q=<capacity>;w=<seconds>`: the bucket
//!   holds `capacity` units and drains from full in `w` seconds (rounded
//!   up); on every refusal;
//! - `RateLimit: "<bucket>";r=<remaining>;t=<seconds>`: units that could
//!   still be admitted now (the least over all limits) and the seconds
//!   until every limit is back to full (rounded up); on every answer.
//!
//! Everything comes from the [`Decision`] (its [`Quota`]
//! names the policy), so no store is asked again. [`fields`] gives the
//! names and values as text; with the `http` feature (on with `tower`),
//! `Fields::append_to` writes them into an `http::HeaderMap`.

use crate::core::{NANOS_PER_SEC, Nanos, Outcome};
use crate::{Decision, Quota};

/// `retry-after`.
pub const RETRY_AFTER_NAME: &str = "retry-after";
/// `ratelimit-policy`: the quota of the bucket.
pub const RATELIMIT_POLICY_NAME: &str = "ratelimit-policy";
/// `ratelimit`: what is left of the quota.
pub const RATELIMIT_NAME: &str = "ratelimit";

/// The header fields one decision's response carries (see the
/// [module](self) documentation for which and when).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fields {
    /// `Retry-After` in seconds, when the request was limited.
    pub retry_after: Option<u64>,
    /// `RateLimit-Policy`, when the request was refused.
    pub ratelimit_policy: Option<String>,
    /// `RateLimit`, always.
    pub ratelimit: String,
}

/// The fields of `d`'s response; `label` is the bucket's name as a
/// structured-field string ([`sf_string`]; make it once per bucket).
pub fn fields(label: &str, d: &Decision) -> Fields {
    Fields {
        retry_after: (d.outcome == Outcome::Limited).then(|| retry_after_secs(d)),
        ratelimit_policy: (!d.allowed()).then(|| policy_value(label, &d.quota)),
        ratelimit: ratelimit_value(label, d),
    }
}

/// The `RateLimit` value of `d`: `"<bucket>";r=<remaining>;t=<seconds>`
/// (`label` as in [`fields`]).
pub fn ratelimit_value(label: &str, d: &Decision) -> String {
    format!("{label};r={};t={}", d.remaining, ceil_secs(d.reset_after))
}

/// `Retry-After` in whole seconds: `retry_after` rounded up, at least 1.
pub fn retry_after_secs(d: &Decision) -> u64 {
    ceil_secs(d.retry_after).max(1)
}

/// The `RateLimit-Policy` value of `quota`: `"<bucket>";q=<capacity>;w=<seconds>`.
pub fn policy_value(label: &str, quota: &Quota) -> String {
    format!("{label};q={};w={}", quota.capacity(), quota.drain_secs())
}

impl Fields {
    /// `(name, value)` pairs, lower-case names, in the order to send.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(3);
        if let Some(s) = self.retry_after {
            out.push((RETRY_AFTER_NAME, s.to_string()));
        }
        if let Some(p) = &self.ratelimit_policy {
            out.push((RATELIMIT_POLICY_NAME, p.clone()));
        }
        out.push((RATELIMIT_NAME, self.ratelimit.clone()));
        out
    }
}

#[cfg(feature = "http")]
mod http_map {
    use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

    use super::Fields;

    /// `RateLimit-Policy`.
    pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static(super::RATELIMIT_POLICY_NAME);
    /// `RateLimit`.
    pub static RATELIMIT: HeaderName = HeaderName::from_static(super::RATELIMIT_NAME);

    /// The `RateLimit` value of `d` for the bucket `name` (quoted here), the
    /// same text as [`ratelimit_value`](super::ratelimit_value)`(&sf_string(name), d)`
    /// built in one allocation, which the header value then keeps: the
    /// field every admitted request's answer carries.
    pub fn ratelimit_header(name: &str, d: &crate::Decision) -> HeaderValue {
        let mut remaining = itoa::Buffer::new();
        let remaining = remaining.format(d.remaining);
        let mut reset = itoa::Buffer::new();
        let reset = reset.format(super::ceil_secs(d.reset_after));
        let len = super::sf_len(name) + ";r=".len() + remaining.len() + ";t=".len() + reset.len();
        let mut value = String::with_capacity(len);
        super::push_sf_string(&mut value, name);
        for part in [";r=", remaining, ";t=", reset] {
            value.push_str(part);
        }
        debug_assert_eq!(value.len(), len);
        // Exactly full, so the conversion to `Bytes` keeps the allocation.
        HeaderValue::from_maybe_shared(bytes::Bytes::from(value.into_bytes()))
            .expect("a structured-field string and digits are a valid header value")
    }

    impl Fields {
        /// Appends the fields to `headers` (appended, so limits nested in
        /// one another list side by side). A value that is not a valid
        /// header value (it cannot be: labels are escaped) is left out.
        pub fn append_to(&self, headers: &mut HeaderMap) {
            if let Some(s) = self.retry_after {
                headers.append(RETRY_AFTER, HeaderValue::from(s));
            }
            if let Some(v) = self
                .ratelimit_policy
                .as_deref()
                .and_then(|p| HeaderValue::from_str(p).ok())
            {
                headers.append(RATELIMIT_POLICY.clone(), v);
            }
            if let Ok(v) = HeaderValue::from_str(&self.ratelimit) {
                headers.append(RATELIMIT.clone(), v);
            }
        }
    }
}

#[cfg(feature = "http")]
pub use http_map::{RATELIMIT, RATELIMIT_POLICY, ratelimit_header};

/// Nanoseconds as whole seconds, rounded up.
pub fn ceil_secs(ns: Nanos) -> u64 {
    ns.div_ceil(NANOS_PER_SEC)
}

/// `name` as a structured-field string (RFC 8941): quoted, with `"` and `\`
/// escaped and characters a string cannot hold replaced by `?`.
pub fn sf_string(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    push_sf_string(&mut s, name);
    s
}

/// Appends [`sf_string`]`(name)` to `out`.
fn push_sf_string(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}

/// The length of [`sf_string`]`(name)` in bytes.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
fn sf_len(name: &str) -> usize {
    let escaped = |c: char| if c == '"' || c == '\\' { 2 } else { 1 };
    2 + name.chars().map(escaped).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Limit, Policy, Rate, Request, State, decide};

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

    #[test]
    fn each_outcome_gets_its_fields() {
        // 2 units leaking 1 per second: two admitted, the third limited.
        let p = Policy::police(Limit::new(Rate::per_second(1).unwrap(), 2).unwrap());
        let mut s = State::default();
        let label = sf_string("api");
        let a = decide(&p, &mut s, 0, Request::check(1));
        assert_eq!(
            fields(&label, &a).pairs(),
            vec![(RATELIMIT_NAME, "\"api\";r=1;t=1".to_owned())]
        );
        decide(&p, &mut s, 0, Request::check(1));
        let l = decide(&p, &mut s, 0, Request::check(1));
        assert_eq!(
            fields(&label, &l).pairs(),
            vec![
                (RETRY_AFTER_NAME, "1".to_owned()),
                (RATELIMIT_POLICY_NAME, "\"api\";q=2;w=2".to_owned()),
                (RATELIMIT_NAME, "\"api\";r=0;t=2".to_owned()),
            ]
        );
        let e = decide(&p, &mut s, 0, Request::check(3));
        let f = fields(&label, &e);
        assert_eq!(f.retry_after, None);
        assert_eq!(f.ratelimit_policy.as_deref(), Some("\"api\";q=2;w=2"));
    }

    #[cfg(feature = "http")]
    #[test]
    fn the_one_allocation_ratelimit_is_the_same_text() {
        let p = Policy::police(Limit::new(Rate::per_second(3).unwrap(), 1_000_000).unwrap());
        let mut s = State::default();
        for (i, name) in ["api", "a\"b\\c", "é\n", "x.y:z-9_", ""].iter().enumerate() {
            let d = decide(
                &p,
                &mut s,
                i as u64 * 7_000_000_000,
                Request::check(1 + i as u64 * 99_999),
            );
            let v = ratelimit_header(name, &d);
            assert_eq!(
                v.to_str().unwrap(),
                ratelimit_value(&sf_string(name), &d),
                "{name:?}"
            );
        }
    }
}
