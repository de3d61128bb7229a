//! The OpenAPI document of the HTTP API, generated from the handlers'
//! annotations and the body types (served at `/openapi.json`, browsed at
//! `/docs`).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::dashboard::{self, events, sampler};
use crate::http::{buckets, pages};
use crate::model;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "drip",
        description = "An exact leaky-bucket rate limiter: HTTP/JSON contract of `drip serve`."
    ),
    paths(
        buckets::configure,
        buckets::allow,
        buckets::acquire,
        buckets::status,
        buckets::delete,
        buckets::list,
        buckets::cluster,
        buckets::leader,
        pages::healthz,
        pages::readyz,
        pages::metrics,
        dashboard::index,
        events::events,
    ),
    components(schemas(
        model::ConfigureBody,
        model::WindowSpec,
        model::AllowBody,
        model::AcquireBody,
        model::DecisionBody,
        model::BucketStatus,
        model::BucketList,
        model::ClusterStatus,
        model::NodeStatus,
        model::Leader,
        model::ErrorBody,
        model::ErrorDetail,
        events::SnapshotEvent,
        events::EventBucket,
        sampler::BucketSample,
    )),
    modifiers(&AdminToken),
    tags(
        (name = "buckets", description = "Configure buckets and ask them for decisions"),
        (name = "cluster", description = "The nodes sharing the store"),
        (name = "service", description = "Health, readiness, metrics and the live dashboard"),
    )
)]
struct ApiDoc;

/// The bearer token that admin calls need when the server has one.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
