//! drip as Envoy's rate limit service (RLS v3): envoyproxy/ratelimit's
//! configuration format (`config.rs`), mapped onto drip policies, and the
//! `envoy.service.ratelimit.v3.RateLimitService` gRPC service
//! (`service.rs`), which decides every descriptor of a request in one
//! joint store call.

pub mod config;
pub mod http;
pub mod service;
pub mod state;
pub mod status;

pub use service::Rls;
pub use state::{RlsHandle, RlsOptions, RlsState};
