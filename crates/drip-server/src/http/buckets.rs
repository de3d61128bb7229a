//! The handlers of `/v1/buckets` and `/v1/cluster`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use drip::Store;
use drip::headers;
use serde::Deserialize;

use super::decision_json::decision_json;
use super::extract::{BucketPath, JsonBody, JsonBytes, Query};
use crate::app::{Answer, App};
use crate::error::ApiError;
use crate::model::{
    AcquireBody, AllowBody, BucketList, BucketStatus, ClusterStatus, ConfigureBody, DecisionBody,
    ErrorBody, Leader, QueueBody,
};

type AppState<S> = State<Arc<App<S>>>;

/// The `{bucket}` path segment, as the OpenAPI document declares it (the
/// handlers read it with [`BucketPath`] and check it in `limits::bucket_id`).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only its documentation is used.
pub struct BucketParam {
    /// The bucket's name: 1..=128 characters of `[A-Za-z0-9._:-]`.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._:-]{1,128}$",
        example = "api"
    )]
    bucket: String,
}

/// `?key=` of a status call.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyQuery {
    /// The bucket instance, at most 256 bytes of UTF-8; default `""`.
    #[serde(default)]
    #[param(max_length = 256)]
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
    params(BucketParam),
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
    params(BucketParam),
    request_body(content = Option<AllowBody>, description = "Optional; key defaults to \"\" and cost to 1"),
    responses(
        (status = 200, description = "Admitted; carries `RateLimit`", body = DecisionBody),
        (status = 429, description = "Not admitted; carries `Retry-After`, `RateLimit-Policy`, `RateLimit`", body = DecisionBody),
        (status = 400, description = "Bad input (including a cost the bucket can never admit); `field` names it", body = ErrorBody),
        (status = 404, description = "No such bucket", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 503, description = "Store unavailable (`error.code` `unavailable`), or a new key while the memory store holds its `--max-keys` (`key_limit`; held keys keep working)", body = ErrorBody),
    )
)]
pub async fn allow<S: Store>(
    State(app): AppState<S>,
    BucketPath(bucket): BucketPath,
    body: JsonBytes,
) -> Result<Response, ApiError> {
    let body: AllowBody = body.parse()?.unwrap_or_default();
    let answer = app
        .allow(&bucket, &body.key, body.cost, body.request_id)
        .await?;
    Ok(decision_response(&bucket, answer))
}

/// Wait until a request may go (its turn in shape mode, its admission in
/// police mode), at most `timeout_ms`.
#[utoipa::path(
    post,
    path = "/v1/buckets/{bucket}/acquire",
    tag = "buckets",
    params(BucketParam),
    request_body(content = Option<AcquireBody>, description = "Optional; timeout_ms defaults to 30000"),
    responses(
        (status = 200, description = "May go now; carries `RateLimit`", body = DecisionBody),
        (status = 429, description = "Could not go within the timeout", body = DecisionBody),
        (status = 400, description = "Bad input (including a cost the bucket can never admit); `field` names it", body = ErrorBody),
        (status = 404, description = "No such bucket", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 503, description = "Store unavailable (`error.code` `unavailable`), or a new key while the memory store holds its `--max-keys` (`key_limit`; held keys keep working), or the server is shutting down", body = ErrorBody),
    )
)]
pub async fn acquire<S: Store>(
    State(app): AppState<S>,
    BucketPath(bucket): BucketPath,
    JsonBody(body): JsonBody<AcquireBody>,
) -> Result<Response, ApiError> {
    let body = body.unwrap_or_default();
    let answer = app
        .acquire(
            &bucket,
            &body.key,
            body.cost,
            body.timeout_ms,
            body.request_id,
        )
        .await?;
    Ok(decision_response(&bucket, answer))
}

/// The header set on decisions made without the shared store.
pub const DEGRADED_HEADER: &str = "drip-degraded";

/// 200 with `RateLimit`, or 429 with `Retry-After`, `RateLimit-Policy` and
/// `RateLimit` (built by `drip::headers`, from the decision alone); the body
/// echoes `request_id`.
fn decision_response(bucket: &str, mut v: Answer) -> Response {
    let status = if v.decision.allowed() {
        StatusCode::OK
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    let content_type = [(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    )];
    let mut res = (status, content_type, decision_json(&v.take_body())).into_response();
    let d = &v.decision;
    if v.degraded {
        // Decided without the shared store: the body says so too.
        res.headers_mut()
            .insert(DEGRADED_HEADER, http::HeaderValue::from_static("true"));
    }
    if d.allowed() {
        // The common answer: one field, built in one allocation.
        res.headers_mut().append(
            headers::RATELIMIT.clone(),
            headers::ratelimit_header(bucket, d),
        );
    } else {
        headers::fields(&headers::sf_string(bucket), d).append_to(res.headers_mut());
    }
    res
}

/// Level and counters of one key of a bucket.
#[utoipa::path(
    get,
    path = "/v1/buckets/{bucket}",
    tag = "buckets",
    params(BucketParam, KeyQuery),
    responses(
        (status = 200, description = "The bucket and the state of the key", body = BucketStatus),
        (status = 400, description = "Bad bucket id, key or query parameter; `field` names it", body = ErrorBody),
        (status = 404, description = "No such bucket", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
pub async fn status<S: Store>(
    State(app): AppState<S>,
    BucketPath(bucket): BucketPath,
    Query(q): Query<KeyQuery>,
) -> Result<Json<BucketStatus>, ApiError> {
    Ok(Json(app.status(&bucket, &q.key).await?))
}

/// The requests of one key admitted and not yet departed, in departure
/// order (shape mode; empty for police buckets and untracked ones).
#[utoipa::path(
    get,
    path = "/v1/buckets/{bucket}/queue",
    tag = "buckets",
    params(BucketParam, KeyQuery),
    responses(
        (status = 200, description = "The key's queued requests, in departure order", body = QueueBody),
        (status = 400, description = "Bad bucket id, key or query parameter; `field` names it", body = ErrorBody),
        (status = 404, description = "No such bucket", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
pub async fn queue<S: Store>(
    State(app): AppState<S>,
    BucketPath(bucket): BucketPath,
    Query(q): Query<KeyQuery>,
) -> Result<Json<QueueBody>, ApiError> {
    Ok(Json(app.queue(&bucket, &q.key).await?))
}

/// Remove a bucket and all its keys.
#[utoipa::path(
    delete,
    path = "/v1/buckets/{bucket}",
    tag = "buckets",
    params(BucketParam),
    security((), ("admin_token" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad bucket id; `field` names it", body = ErrorBody),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody),
        (status = 404, description = "No such bucket", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
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
    responses(
        (status = 200, description = "Buckets sorted by name", body = BucketList),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
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
