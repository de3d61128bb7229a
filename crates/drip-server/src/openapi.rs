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
        buckets::queue,
        buckets::delete,
        buckets::list,
        buckets::cluster,
        buckets::leader,
        pages::healthz,
        pages::readyz,
        pages::metrics,
        dashboard::index,
        events::events,
        crate::rls::http::rls,
    ),
    components(schemas(
        model::ConfigureBody,
        model::WindowSpec,
        model::AllowBody,
        model::AcquireBody,
        model::DecisionBody,
        model::BucketStatus,
        model::BucketList,
        model::QueueBody,
        model::QueuedRequestBody,
        model::ClusterStatus,
        model::NodeStatus,
        model::Leader,
        model::ErrorBody,
        model::ErrorDetail,
        events::SnapshotEvent,
        events::SnapshotSse,
        events::EventBucket,
        sampler::BucketSample,
        crate::rls::http::RlsView,
        crate::rls::http::RuleView,
        sampler::KeySample,
    )),
    modifiers(&AdminToken),
    tags(
        (name = "buckets", description = "Configure buckets and ask them for decisions"),
        (name = "cluster", description = "The nodes sharing the store"),
        (name = "rls", description = "Envoy's rate limit service: the loaded envoyproxy/ratelimit rules"),
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    /// The bounds the server enforces are in the document (schemathesis,
    /// in `.ci/run`, checks the rest against a real server).
    #[test]
    fn the_document_declares_the_bounds() {
        let doc: Value = serde_json::to_value(super::document()).unwrap();
        let schema = |name: &str, field: &str| {
            doc["components"]["schemas"][name]["properties"][field].clone()
        };
        let bounds = |v: &Value| (v["minimum"].clone(), v["maximum"].clone());
        assert_eq!(
            bounds(&schema("AllowBody", "cost")),
            (json!(1), json!(9007199254740991u64))
        );
        assert_eq!(
            bounds(&schema("AcquireBody", "timeout_ms")),
            (json!(0), json!(3600000))
        );
        assert_eq!(
            bounds(&schema("ConfigureBody", "capacity")),
            (json!(1), json!(4294967295u64))
        );
        assert_eq!(
            bounds(&schema("ConfigureBody", "leak_rate")),
            (json!(1e-9), json!(1_000_000_000_000_000u64))
        );
        assert_eq!(schema("ConfigureBody", "windows")["maxItems"], 8);
        assert_eq!(
            bounds(&schema("WindowSpec", "limit")),
            (json!(1), json!(9007199254740991u64))
        );
        assert_eq!(schema("AllowBody", "key")["maxLength"], 256);
        for body in ["AllowBody", "AcquireBody"] {
            let id = schema(body, "request_id");
            assert_eq!(
                (id["minLength"].clone(), id["maxLength"].clone()),
                (json!(1), json!(128))
            );
            assert_eq!(id["pattern"], "^[ -~]{1,128}$");
        }
        for (path, method) in [
            ("/v1/buckets/{bucket}", "get"),
            ("/v1/buckets/{bucket}", "put"),
            ("/v1/buckets/{bucket}", "delete"),
            ("/v1/buckets/{bucket}/allow", "post"),
            ("/v1/buckets/{bucket}/acquire", "post"),
        ] {
            let op = &doc["paths"][path][method];
            let p = &op["parameters"][0]["schema"];
            assert_eq!(p["pattern"], "^[A-Za-z0-9._:-]{1,128}$", "{method} {path}");
            assert!(op["responses"]["400"].is_object(), "{method} {path}: 400");
            assert!(
                op["responses"]["404"].is_object() || method == "put",
                "{method} {path}: 404"
            );
            if method != "get" && method != "delete" {
                assert!(op["responses"]["413"].is_object(), "{method} {path}: 413");
            }
        }
    }
}
