//! What the store-down policy and the cluster loop share: whether the store
//! is known down, how many nodes are alive, and decisions counted by mode.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::options::OnStoreError;

tokio::task_local! {
    /// Set by [`super::Resilient`] when it answers a decision without the
    /// shared store, read by the front end that asked (in the same task)
    /// to flag its response.
    static DEGRADED: Cell<bool>;
}

/// Runs `fut` and tells whether a decision in it was made without the
/// shared store (by `on_store_error = allow | local`).
pub async fn watch_degraded<F: std::future::Future>(fut: F) -> (F::Output, bool) {
    DEGRADED
        .scope(Cell::new(false), async move {
            let out = fut.await;
            (out, DEGRADED.with(Cell::get))
        })
        .await
}

/// Marks the current decision as degraded (no-op outside `watch_degraded`).
pub(crate) fn mark_degraded() {
    let _ = DEGRADED.try_with(|c| c.set(true));
}

/// Decisions by where they were made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// By the shared store.
    Shared,
    /// Admitted without the store (`allow`).
    Allow,
    /// By the local bucket (`local`).
    Local,
    /// Refused with 503 because the store is down (`deny`).
    Deny,
}

impl Mode {
    /// The `mode` label of the metric.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Shared => "shared",
            Mode::Allow => "allow",
            Mode::Local => "local",
            Mode::Deny => "deny",
        }
    }

    /// Every mode, in metric order.
    pub const ALL: [Mode; 4] = [Mode::Shared, Mode::Allow, Mode::Local, Mode::Deny];
}

/// State shared by the store wrapper, the cluster loop and the front ends.
#[derive(Debug)]
pub struct Health {
    policy: OnStoreError,
    down: AtomicBool,
    live_nodes: AtomicUsize,
    by_mode: [AtomicU64; 4],
    outages: AtomicU64,
}

impl Health {
    /// Up, one live node, nothing counted.
    pub fn new(policy: OnStoreError) -> Self {
        Health {
            policy,
            down: AtomicBool::new(false),
            live_nodes: AtomicUsize::new(1),
            by_mode: Default::default(),
            outages: AtomicU64::new(0),
        }
    }

    /// The configured `on_store_error`.
    pub fn policy(&self) -> OnStoreError {
        self.policy
    }

    /// True while the store is known down (decisions follow the policy).
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Marks the store down; true if it was up (a new outage).
    pub(crate) fn set_down(&self) -> bool {
        let was_up = !self.down.swap(true, Ordering::AcqRel);
        if was_up {
            self.outages.fetch_add(1, Ordering::Relaxed);
        }
        was_up
    }

    /// Marks the store up again.
    pub(crate) fn set_up(&self) {
        self.down.store(false, Ordering::Release);
    }

    /// Nodes last seen alive (at least 1: this one).
    pub fn live_nodes(&self) -> usize {
        self.live_nodes.load(Ordering::Relaxed).max(1)
    }

    /// Records how many nodes are alive.
    pub fn set_live_nodes(&self, n: usize) {
        self.live_nodes.store(n.max(1), Ordering::Relaxed);
    }

    /// Counts one decision made in `mode`.
    pub(crate) fn count(&self, mode: Mode) {
        self.by_mode[mode as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Decisions made in `mode` so far.
    pub fn decisions(&self, mode: Mode) -> u64 {
        self.by_mode[mode as usize].load(Ordering::Relaxed)
    }

    /// Times the store was found down.
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }
}
