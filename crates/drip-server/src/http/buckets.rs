//! The handlers of `/v1/buckets` and `/v1/cluster`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use drip::Store;
use drip::tower::headers;
use serde::Deserialize;

use super::extract::{BucketPath, JsonBody, Query};
use crate::app::{App, Verdict};
use crate::error::ApiError;
use crate::model::{
    AcquireBody, AllowBody, BucketList, BucketStatus, ClusterStatus, ConfigureBody, DecisionBody,
    ErrorBody, Leader,
};

type AppState<S> = State<Arc<App<S>>>;

/// `?key=` of a status call.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyQuery {
    /// The bucket instance, at most 256 bytes; default `""`.
    #[serde(default)]
    pub key: String,
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// Create or replace a bucket.
#[utoipa::path(
    put,
    path = "/v1/buckets/{bucket}",
    tag = "buckets",
    params(("bucket" = String, Path, description = "1..=128 characters of [A-Za-z0-9._:-]")),
    request_body = ConfigureBody,
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "The bucket as configured, with the state of its key \"\"", body = BucketStatus),
        (status = 400, description = "Bad input; `field` names it", body = ErrorBody),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
pub async fn configure<S: Store>(
    State(app): AppState<S>,
    BucketPath(bucket): BucketPath,
    headers: HeaderMap,
    body: Result<JsonBody<ConfigureBody>, ApiError>,
) -> Result<Json<BucketStatus>, ApiError> {
    // Authorization first: a caller without the token learns nothing more.
    app.authorize(authorization(&headers))?;
    let JsonBody(body) = body?;
    let body = body.ok_or_else(|| {
        ApiError::invalid(
            "body",
            "body is required: {\"mode\", \"capacity\", \"leak_rate\", \"windows\", \"reset\"}",
        )
    })?;
    Ok(Json(app.configure(&bucket, &body).await?))
}

/// Decide now whether a request may go.
#[utoipa::path(
    post,
    path = "/v1/buckets/{bucket}/allow",
    tag = "buckets",
    params(("bucket" = String, Path, description = "The bucket's name")),
    request_body(content = Option<AllowBody>, description = "Optional; key defaults to \"\" and cost to 1"),
    responses(
        (status = 200, description = "Admitted; carries `RateLimit`", body = DecisionBody),
        (status = 429, description = "Not admitted; carries `Retry-After`, `RateLimit-Policy`, `RateLimit`", body = DecisionBody),
        (status = 400, description = "Bad input (including a cost the bucket can never admit)", body = ErrorBody),
        (status = 404, description = "No such bucket", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
pub async fn allow<S: Store>(
    State(app): AppState<S>,
    BucketPath(bucket): BucketPath,
    JsonBody(body): JsonBody<AllowBody>,
) -> Result<Response, ApiError> {
    let body = body.unwrap_or_default();
    let verdict = app.allow(&bucket, &body.key, body.cost).await?;
    Ok(decision_response(&verdict))
}

/// Wait until a request may go (its turn in shape mode, its admission in
/// police mode), at most `timeout_ms`.
#[utoipa::path(
    post,
    path = "/v1/buckets/{bucket}/acquire",
    tag = "buckets",
    params(("bucket" = String, Path, description = "The bucket's name")),
    request_body(content = Option<AcquireBody>, description = "Optional; timeout_ms defaults to 30000"),
    responses(
        (status = 200, description = "May go now; carries `RateLimit`", body = DecisionBody),
        (status = 429, description = "Could not go within the timeout", body = DecisionBody),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 404, description = "No such bucket", body = ErrorBody),
        (status = 503, description = "Store unavailable, or the server is shutting down", body = ErrorBody),
    )
)]
pub async fn acquire<S: Store>(
    State(app): AppState<S>,
    BucketPath(bucket): BucketPath,
    JsonBody(body): JsonBody<AcquireBody>,
) -> Result<Response, ApiError> {
    let body = body.unwrap_or_default();
    let verdict = app
        .acquire(&bucket, &body.key, body.cost, body.timeout_ms)
        .await?;
    Ok(decision_response(&verdict))
}

/// The header set on decisions made without the shared store.
pub const DEGRADED_HEADER: &str = "drip-degraded";

/// 200 with `RateLimit`, or 429 with `Retry-After`, `RateLimit-Policy` and
/// `RateLimit`.
fn decision_response(v: &Verdict) -> Response {
    let d = &v.decision;
    let status = if d.allowed() {
        StatusCode::OK
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    let mut res = if v.degraded {
        // Decided without the shared store: say so in the body and a header.
        let mut body = serde_json::to_value(v.body()).unwrap_or_default();
        body["degraded"] = serde_json::Value::Bool(true);
        let mut res = (status, Json(body)).into_response();
        res.headers_mut()
            .insert(DEGRADED_HEADER, http::HeaderValue::from_static("true"));
        res
    } else {
        (status, Json(v.body())).into_response()
    };
    let h = res.headers_mut();
    if !d.allowed() {
        h.insert(header::RETRY_AFTER, headers::retry_after(d));
        if let Some(p) = v
            .policy
            .as_ref()
            .and_then(|p| headers::ratelimit_policy(&v.bucket, p))
        {
            h.insert(headers::RATELIMIT_POLICY.clone(), p);
        }
    }
    if let Some(r) = headers::ratelimit(&v.bucket, d) {
        h.insert(headers::RATELIMIT.clone(), r);
    }
    res
}

/// Level and counters of one key of a bucket.
#[utoipa::path(
    get,
    path = "/v1/buckets/{bucket}",
    tag = "buckets",
    params(("bucket" = String, Path, description = "The bucket's name"), KeyQuery),
    responses(
        (status = 200, description = "The bucket and the state of the key", body = BucketStatus),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 404, description = "No such bucket", body = ErrorBody),
    )
)]
pub async fn status<S: Store>(
    State(app): AppState<S>,
    BucketPath(bucket): BucketPath,
    Query(q): Query<KeyQuery>,
) -> Result<Json<BucketStatus>, ApiError> {
    Ok(Json(app.status(&bucket, &q.key).await?))
}

/// Remove a bucket and all its keys.
#[utoipa::path(
    delete,
    path = "/v1/buckets/{bucket}",
    tag = "buckets",
    params(("bucket" = String, Path, description = "The bucket's name")),
    security((), ("admin_token" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody),
        (status = 404, description = "No such bucket", body = ErrorBody),
    )
)]
pub async fn delete<S: Store>(
    State(app): AppState<S>,
    BucketPath(bucket): BucketPath,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    app.authorize(authorization(&headers))?;
    app.delete(&bucket).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every bucket, with the state of its key `""`.
#[utoipa::path(
    get,
    path = "/v1/buckets",
    tag = "buckets",
    responses((status = 200, description = "Buckets sorted by name", body = BucketList))
)]
pub async fn list<S: Store>(State(app): AppState<S>) -> Result<Json<BucketList>, ApiError> {
    Ok(Json(app.list().await?))
}

/// The nodes of the cluster (on its own, a node is its only member and leader).
#[utoipa::path(
    get,
    path = "/v1/cluster",
    tag = "cluster",
    responses((status = 200, description = "The cluster", body = ClusterStatus))
)]
pub async fn cluster<S: Store>(State(app): AppState<S>) -> Json<ClusterStatus> {
    Json(app.cluster().await)
}

/// The node holding the leader lease.
#[utoipa::path(
    get,
    path = "/v1/cluster/leader",
    tag = "cluster",
    responses((status = 200, description = "The leader", body = Leader))
)]
pub async fn leader<S: Store>(State(app): AppState<S>) -> Json<Leader> {
    Json(app.leader().await)
}
