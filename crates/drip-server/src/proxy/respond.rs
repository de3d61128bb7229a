//! The answers the proxy gives itself (never the upstream's): each a small
//! JSON body `{"error": {"code", "message"}}` with its status.
//!
//! | status | code               | when                                              |
//! |--------|--------------------|---------------------------------------------------|
//! | 429    | `rate_limited`     | police: no room now; shape: turn beyond the timeout |
//! | 429    | `exceeds_capacity` | the cost is more than the bucket can ever admit   |
//! | 400    | `invalid_key`      | the key header is longer than 256 bytes           |
//! | 411    | `length_required`  | `--cost bytes` and no `Content-Length`            |
//! | 502    | `upstream_unreachable` / `upstream_failed` | no connection / broken answer |
//! | 503    | `store_unavailable`| the store did not answer                          |
//! | 503    | `key_limit`        | a new client key beyond `--max-keys`              |
//! | 504    | `upstream_timeout` | no response head within `--upstream-timeout`      |

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use drip::Decision;
use drip::tower::headers::{RATELIMIT, RATELIMIT_POLICY, retry_after};
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde::Serialize;

/// A request the proxy answers itself, before any decision: a small error
/// to carry, turned into its JSON answer by [`IntoResponse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status.
    pub status: StatusCode,
    /// The `code` of the body.
    pub code: &'static str,
    /// The `message` of the body.
    pub message: String,
}

impl Refusal {
    /// A refusal with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.status, self.code, &self.message)
    }
}

/// A JSON error answer.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    error_with(status, code, message, None)
}

/// The body of every answer the proxy gives itself.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

fn error_with(
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after_ms: Option<u64>,
) -> Response {
    let body = ErrorBody {
        error: ErrorDetail { code, message },
        retry_after_ms,
    };
    let json = serde_json::to_vec(&body).expect("strings and numbers serialize");
    let mut r = Response::new(Body::from(json));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// 429 for a request the bucket refused now: `Retry-After`,
/// `RateLimit-Policy` and `RateLimit`.
pub fn limited(
    d: &Decision,
    policy: Option<&HeaderValue>,
    ratelimit: Option<HeaderValue>,
) -> Response {
    let retry_ms = d.retry_after.div_ceil(1_000_000);
    let message = format!("too many requests: retry in {retry_ms} ms");
    let mut r = error_with(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        &message,
        Some(retry_ms),
    );
    let h = r.headers_mut();
    h.insert(RETRY_AFTER, retry_after(d));
    if let Some(p) = policy {
        h.insert(RATELIMIT_POLICY.clone(), p.clone());
    }
    if let Some(v) = ratelimit {
        h.insert(RATELIMIT.clone(), v);
    }
    r
}

/// 429 for a cost the bucket can never admit.
pub fn exceeds(cost: u64, policy: Option<&HeaderValue>) -> Response {
    let message =
        format!("this request costs {cost}, more than the bucket can ever admit: it will never go");
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, "exceeds_capacity", &message);
    if let Some(p) = policy {
        r.headers_mut().insert(RATELIMIT_POLICY.clone(), p.clone());
    }
    r
}
