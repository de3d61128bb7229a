//! The service pages: `/healthz`, `/readyz` and `/metrics` (`/` is the
//! live dashboard, [`crate::dashboard`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use drip::Store;
use serde_json::{Value, json};

use crate::app::App;
use crate::error::ApiError;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "Up", body = Object, example = json!({"status": "ok"}))))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The store answers (or, while it is down, the node answers by
/// `on_store_error = allow | local`: ready but degraded).
#[utoipa::path(get, path = "/readyz", tag = "service",
    responses(
        (status = 200, description = "Ready; `{\"status\": \"degraded\", \"on_store_error\": \"local\"}` while the store is down under allow or local", body = Object, example = json!({"status": "ready"})),
        (status = 503, description = "The store does not answer (on_store_error = deny)", body = crate::model::ErrorBody),
    ))]
pub async fn readyz<S: Store>(State(app): State<Arc<App<S>>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(match app.ready().await? {
        None => json!({"status": "ready"}),
        Some(policy) => json!({"status": "degraded", "on_store_error": policy.as_str()}),
    }))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics<S: Store>(State(app): State<Arc<App<S>>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.render_metrics().await,
    )
}
