//! drip: an exact leaky-bucket rate limiter.
//!
//! Every bucket is one number, its theoretical arrival time `tat`, and one
//! policy decides how to use it: **police** (a meter: admit now or reject
//! with `retry_after`; what token-bucket users expect) or **shape** (a queue:
//! admit with a `wait` and a `queue_position`, or reject when full). A
//! policy may AND exact rolling windows ("1000 per any hour") with its
//! bucket; requests cost whole units (1, or bytes for bandwidth).
//!
//! # Layout
//!
//! - [`core`]: the pure decision: [`Rate`], [`Limit`], [`Window`],
//!   [`Policy`], [`decide`](core::decide). No I/O, no clock, no async.
//! - [`clock`]: where `now` comes from ([`MonotonicClock`], [`ManualClock`]).
//! - [`store`]: the [`Store`] trait and the [`MemoryStore`] (with
//!   [`KeyedBucket`], the fastest in-process form).
//! - [`Limiter`]: check, acquire (waits), status, configure, delete, list.
//! - [`headers`]: the rate-limit response header fields of a decision.
//! - [`schedule`]: `limiter.schedule(bucket, key, cost, job)` runs a job at
//!   its request's turn (a leaky-bucket processor).
//! - [`blocking`]: the same without async.
//! - [`throttle`]: make calls wait their turn.
//! - `tower` (feature `tower`): a middleware for axum, tonic, hyper.

pub mod blocking;
pub mod clock;
pub mod core;
mod error;
pub mod headers;
mod limiter;
pub mod schedule;
pub mod store;
pub mod throttle;
#[cfg(feature = "tower")]
pub mod tower;

pub use clock::{Clock, ManualClock, MonotonicClock, SystemClock, TokioClock};
pub use core::{
    Decision, JointDecision, Limit, Mode, Outcome, Policy, Quota, Rate, Request, Verdict, Window,
};
pub use error::{ConfigError, Error, Result};
pub use limiter::{Limiter, wait_turn};
pub use schedule::{BlockingJobHandle, JobError, JobHandle, Scheduled};
pub use store::{JointPart, KeyStatus, KeyedBucket, MemoryStore, QueuedRequest, Store};
pub use throttle::{Throttle, Turn};

/// The README's examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
