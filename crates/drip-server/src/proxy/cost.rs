//! What a request costs (`--cost`).

use axum::body::{Body, HttpBody};
use http::StatusCode;

use super::args::CostSpec;
use super::respond::Refusal;

/// The cost of a request with `body`: 1, or the body's length as declared
/// (Content-Length, or an empty body) and at least 1, so an empty request
/// still counts. A body of unknown length (chunked) cannot be charged before
/// it is read, so it is refused with 411.
pub fn cost(spec: CostSpec, body: &Body) -> Result<u64, Refusal> {
    match spec {
        CostSpec::One => Ok(1),
        CostSpec::Bytes => body.size_hint().exact().map(|n| n.max(1)).ok_or_else(|| {
            Refusal::new(
                StatusCode::LENGTH_REQUIRED,
                "length_required",
                "this proxy charges requests by their size (--cost bytes): send a Content-Length",
            )
        }),
    }
}
