//! A tower middleware that rate limits HTTP requests with a [`Limiter`]:
//! put [`RateLimitLayer`] in front of any axum, tonic or hyper service.
//!
//! Each request is charged to one key of one configured bucket: the key
//! comes from a function of the request (a client IP, a user id, an API
//! key), and the cost is 1 unless a [`RequestCost`] says otherwise. The
//! bucket's mode decides what happens to a request that arrives while the
//! bucket holds water:
//!
//! - **police**: it goes now if it fits, else it is answered `429 Too Many
//!   Requests` at once;
//! - **shape**: it is held until its turn and then goes, or is answered 429
//!   when the queue is full.
//!
//! With [`RateLimitLayer::max_wait`], a request in either mode is held until
//! it may go, provided that is within the given time (see there).
//!
//! # Responses
//!
//! | situation | response |
//! |---|---|
//! | admitted | the inner service's response, plus a `RateLimit` field |
//! | limited (police: no room now; shape: queue full or turn too far off) | `429`, `Retry-After`, `RateLimit-Policy`, `RateLimit` |
//! | cost larger than the bucket can ever admit | `413`, `RateLimit-Policy`, `RateLimit`; no `Retry-After`, since retrying cannot help |
//! | the store failed ([`Error::Store`], [`Error::KeyLimit`]) | `503` |
//! | the bucket is not configured, or any other [`Error`] | `500` |
//!
//! Responses made by the middleware have an empty body
//! (`ResBody::default()`). The header fields follow the IETF draft
//! *RateLimit header fields for HTTP* (draft-ietf-httpapi-ratelimit-headers):
//!
//! - `Retry-After: <seconds>`: when the same request could be admitted,
//!   rounded up to whole seconds, at least 1;
//! - `RateLimit-Policy: "<bucket>";q=<capacity>;w=<seconds>`: the bucket
//!   holds `capacity` units and drains from full in `w` seconds (rounded up);
//! - `RateLimit: "<bucket>";r=<remaining>;t=<seconds>`: units that could
//!   still be admitted now (the least over all the policy's limits), and the
//!   seconds until every limit is back to full (rounded up).
//!
//! A shaped request whose client goes away while it waits keeps its place:
//! the units it took are not given back.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use axum::{Router, body::Body, extract::ConnectInfo, http::Request, routing::get};
//! use drip::{Limit, Limiter, Policy, Rate, tower::RateLimitLayer};
//!
//! fn client_ip(req: &Request<Body>) -> String {
//!     req.extensions()
//!         .get::<ConnectInfo<SocketAddr>>()
//!         .map(|ConnectInfo(addr)| addr.ip().to_string())
//!         .unwrap_or_default()
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = Limiter::memory();
//! limiter
//!     .configure("api", Policy::police(Limit::new(Rate::per_second(5)?, 10)?))
//!     .await?;
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(RateLimitLayer::new(limiter, "api", client_ip));
//! # Ok(())
//! # }
//! ```
//!
//! [`Limiter`]: crate::Limiter
//! [`Error`]: crate::Error
//! [`Error::Store`]: crate::Error::Store
//! [`Error::KeyLimit`]: crate::Error::KeyLimit

mod future;
pub mod headers;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::{RateLimitLayer, RequestCost};
pub use service::RateLimit;
