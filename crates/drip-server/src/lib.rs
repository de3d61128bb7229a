//! The `drip` binary's library: the rate-limit server (`drip serve`), its
//! client (`drip status`) and the demo.
//!
//! # Layout
//!
//! - [`cli`]: the command line; `main.rs` only dispatches.
//! - [`serve`]: `drip serve`: store choice, config file, listeners, signals.
//! - [`server`]: [`server::run`]: HTTP and gRPC over one limiter until shutdown.
//! - [`app`]: the contract's operations, shared by both protocols;
//!   [`waiter`]: a waiting request's place, given back if it is dropped.
//! - [`cluster`]: membership, leader lease, remembered configurations and
//!   `on_store_error` for nodes sharing Redis.
//! - [`http`]: the axum routes, extractors and pages; [`openapi`]: its document.
//! - [`grpc`]: `drip.v1.RateLimiterService`, health and reflection.
//! - [`model`]: the JSON bodies; [`limits`]: input bounds and checks.
//! - [`error`]: [`ApiError`](error::ApiError) and its HTTP and gRPC forms.
//! - [`metrics`]: the Prometheus metrics of one server.
//! - [`dashboard`]: the live dashboard at `/` and its events, `/v1/events`.
//! - [`config`]: the TOML file declaring buckets.
//! - [`status_cmd`]: `drip status`; [`demo`]: `drip demo`.
//! - [`proxy`]: `drip proxy`, the rate-limiting HTTP reverse proxy.
//! - [`shaper`]: `drip shape`, the TCP bandwidth shaper.
//! - [`metrics_listener`]: `--metrics ADDR` of the traffic tools.
//! - [`simulate`]: `drip simulate`, packets through a bucket, with plots;
//!   [`stress`]: `drip stress`, a load generator with percentiles.

pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod error;
pub mod grpc;
pub mod http;
pub mod key_cap;
pub mod limits;
pub mod metrics;
pub mod metrics_listener;
pub mod model;
pub mod openapi;
pub mod precise;
pub mod proxy;
pub mod request_id;
pub mod rls;
pub mod serve;
pub mod server;
pub mod shaper;
pub mod simulate;
pub mod status_cmd;
pub mod stress;
pub mod waiter;
