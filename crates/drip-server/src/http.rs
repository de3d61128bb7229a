//! The HTTP/JSON front end (DESIGN.md §4): the routes, with the bucket
//! handlers in [`buckets`], the request extractors in [`extract`] and the
//! service pages (health, metrics) in [`pages`]; `/` is the live
//! dashboard ([`crate::dashboard`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::OriginalUri;
use axum::http::Method;
use axum::routing::{get, post};
use drip::Store;
use utoipa_swagger_ui::SwaggerUi;

use crate::app::App;
use crate::error::ApiError;
use crate::openapi;

pub mod buckets;
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

async fn not_found(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}
