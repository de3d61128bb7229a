//! The HTTP/JSON front end (DESIGN.md §4): the routes, with the bucket
//! handlers in [`buckets`], the request extractors in [`extract`] and the
//! service pages (health, metrics) in [`pages`]; `/` is the live
//! dashboard ([`crate::dashboard`]).

use std::sync::Arc;

use axum::Router;
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use drip::Store;
use utoipa_swagger_ui::SwaggerUi;

use crate::app::App;
use crate::error::ApiError;
use crate::openapi;

pub mod buckets;
mod decision_json;
pub mod extract;
pub mod pages;

/// The router of the whole HTTP API over `app`.
pub fn router<S: Store>(app: Arc<App<S>>) -> Router {
    let api = Router::new()
        .route("/v1/buckets", get(buckets::list::<S>))
        .route(
            "/v1/buckets/{bucket}",
            get(buckets::status::<S>)
                .put(buckets::configure::<S>)
                .delete(buckets::delete::<S>),
        )
        .route("/v1/buckets/{bucket}/allow", post(buckets::allow::<S>))
        .route("/v1/buckets/{bucket}/acquire", post(buckets::acquire::<S>))
        .route("/v1/buckets/{bucket}/queue", get(buckets::queue::<S>))
        .route("/v1/cluster", get(buckets::cluster::<S>))
        .route("/v1/cluster/leader", get(buckets::leader::<S>))
        .route("/healthz", get(pages::healthz))
        .route("/readyz", get(pages::readyz::<S>))
        .route("/metrics", get(pages::metrics::<S>))
        .with_state(app.clone());
    api.merge(crate::dashboard::router(app))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi::document()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

// The whole path: no router here is nested, so the request's URI is the
// one the client sent (axum's `OriginalUri` is off, saving two allocations
// on every request).
async fn not_found(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}
