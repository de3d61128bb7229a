//! The service pages: `/` (an HTML overview), `/healthz`, `/readyz` and
//! `/metrics`.

use std::fmt::Write;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
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

/// A small overview: the buckets and links to the API docs and metrics.
pub async fn index<S: Store>(State(app): State<Arc<App<S>>>) -> Html<String> {
    let mut rows = String::new();
    match app.list().await {
        Ok(list) if list.buckets.is_empty() => {
            rows.push_str("<tr><td colspan=\"8\">no buckets yet: <code>PUT /v1/buckets/{bucket}</code></td></tr>");
        }
        Ok(list) => {
            for b in list.buckets {
                let _ = write!(
                    rows,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&b.bucket_id),
                    b.mode,
                    b.capacity,
                    b.leak_rate,
                    b.level,
                    b.allowed_requests,
                    b.rejected_requests,
                    b.processed_requests
                );
            }
        }
        Err(e) => {
            let _ = write!(
                rows,
                "<tr><td colspan=\"8\">{}</td></tr>",
                escape(&e.public_message())
            );
        }
    }
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>drip</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child{{text-align:left}}</style>
</head><body>
<h1>drip</h1>
<p>An exact leaky-bucket rate limiter. <a href="/docs">API docs</a> · <a href="/openapi.json">OpenAPI</a> · <a href="/metrics">metrics</a> · <a href="/v1/cluster">cluster</a></p>
<table><thead><tr><th>bucket</th><th>mode</th><th>capacity</th><th>leak_rate/s</th><th>level (key "")</th><th>allowed</th><th>rejected</th><th>processed</th></tr></thead>
<tbody>{rows}</tbody></table>
</body></html>
"#
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
