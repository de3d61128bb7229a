//! The live dashboard at `/`: a page (HTML + the vendored uPlot chart
//! library, served from the binary: no CDN, works offline) fed by
//! Server-Sent Events at `/v1/events`.
//!
//! - [`sampler`]: reads the buckets once a second, only while someone watches.
//! - [`events`]: the SSE stream of one browser, cut to its page of buckets.
//! - [`watched`]: the pages browsers show, whose buckets' busiest keys are read.

pub mod events;
pub mod sampler;
pub mod watched;

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use drip::Store;

use crate::app::App;
use sampler::Sampler;

/// The page.
static INDEX: &str = include_str!("assets/index.html");
/// uPlot 1.6.32 (MIT, `assets/uPlot-LICENSE`), from the npm registry.
static UPLOT_JS: &str = include_str!("assets/uPlot.iife.min.js");
static UPLOT_CSS: &str = include_str!("assets/uPlot.min.css");
static UPLOT_LICENSE: &str = include_str!("assets/uPlot-LICENSE");

/// The dashboard's routes over `app`: `/`, its assets, and `/v1/events`.
pub fn router<S: Store>(app: Arc<App<S>>) -> Router {
    router_with(Sampler::new(app))
}

/// The routes over an existing sampler (tests watch it start and stop).
pub fn router_with<S: Store>(sampler: Arc<Sampler<S>>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/dashboard/uPlot.iife.min.js", get(uplot_js))
        .route("/dashboard/uPlot.min.css", get(uplot_css))
        .route("/dashboard/uPlot-LICENSE", get(uplot_license))
        .route("/v1/events", get(events::events::<S>))
        .with_state(sampler)
}

/// The live dashboard.
#[utoipa::path(get, path = "/", tag = "service",
    responses((status = 200, description = "The live dashboard (HTML); its data comes from /v1/events", content_type = "text/html")))]
pub async fn index() -> Html<&'static str> {
    Html(INDEX)
}

async fn uplot_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        UPLOT_JS,
    )
}

async fn uplot_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        UPLOT_CSS,
    )
}

async fn uplot_license() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        UPLOT_LICENSE,
    )
}
