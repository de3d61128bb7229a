//! The atomics the memory store's concurrent parts use: the standard ones,
//! or loom's when the models run (`RUSTFLAGS="--cfg drip_loom"`, see
//! `loom_models.rs`), so the models check the very code the store runs.

#[cfg(drip_loom)]
pub(super) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(drip_loom))]
pub(super) use std::sync::atomic::{AtomicU64, Ordering};
