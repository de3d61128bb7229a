//! The RLS configuration a server holds: loaded at start, applied to the
//! store (one bucket per rule), reloaded when its files change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashSet;
use drip::{Limiter, Policy, Store};
use parking_lot::RwLock;

use super::config::{BUCKET_PREFIX, RlsConfig, Unit, rule_policy};
use crate::metrics::Metrics;

/// Loaded configurations, counted by outcome (envoyproxy/ratelimit's
/// `config_load_success` / `config_load_error`).
pub const CONFIG_LOAD_SUCCESS: &str = "ratelimit_service_config_load_success";
/// Configurations that failed to load (the previous one stays).
pub const CONFIG_LOAD_ERROR: &str = "ratelimit_service_config_load_error";

/// How the RLS runs (`drip serve --rls-*`).
#[derive(Clone, Debug)]
pub struct RlsOptions {
    /// The files and directories of YAML configuration.
    pub paths: Vec<PathBuf>,
    /// Global shadow mode: every answer is OK; decisions are still made
    /// and counted.
    pub shadow_mode: bool,
    /// Add `RateLimit-Policy` / `RateLimit` (and `Retry-After` when over
    /// the limit) to `response_headers_to_add`.
    pub headers: bool,
    /// How often the files are checked for changes.
    pub reload_every: Duration,
}

/// The RLS state shared by the gRPC service, `GET /v1/rls` and the reloader.
pub struct RlsState {
    /// The options it runs with.
    pub options: RlsOptions,
    config: RwLock<Arc<RlsConfig>>,
    /// Override buckets (`descriptor.limit`) configured since the last
    /// load (at start the set is empty).
    overrides: DashSet<String>,
    /// The files' modification times when last loaded.
    stamp: RwLock<Vec<Stamp>>,
}

/// A shared handle on the RLS state.
#[derive(Clone)]
pub struct RlsHandle(pub Arc<RlsState>);

impl std::fmt::Debug for RlsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RlsHandle")
            .field("options", &self.0.options)
            .finish_non_exhaustive()
    }
}

impl RlsHandle {
    /// Loads the configuration (errors name file, line and field).
    pub fn load(options: RlsOptions) -> anyhow::Result<RlsHandle> {
        let stamp = stamps(&options.paths);
        let config = RlsConfig::load(&options.paths)?;
        Ok(RlsHandle(Arc::new(RlsState {
            options,
            config: RwLock::new(Arc::new(config)),
            overrides: DashSet::new(),
            stamp: RwLock::new(stamp),
        })))
    }
}

impl RlsState {
    /// The configuration now.
    pub fn config(&self) -> Arc<RlsConfig> {
        self.config.read().clone()
    }

    /// Configures the current rules' buckets in the store (state carries
    /// over for unchanged policies) and deletes the buckets of rules that
    /// are gone.
    pub async fn apply<S: Store>(&self, limiter: &Limiter<S>) -> anyhow::Result<()> {
        apply(limiter, &self.config()).await
    }

    /// Reloads when a file changed (by modification time, or files added or
    /// removed): the new configuration replaces the old only once it loaded
    /// and its buckets are configured. True when reloaded.
    pub async fn reload_if_changed<S: Store>(
        &self,
        limiter: &Limiter<S>,
        metrics: &Metrics,
    ) -> bool {
        let now = stamps(&self.options.paths);
        if *self.stamp.read() == now {
            return false;
        }
        *self.stamp.write() = now;
        let loaded = match RlsConfig::load(&self.options.paths) {
            Ok(c) => apply(limiter, &c).await.map(|()| c),
            Err(e) => Err(e),
        };
        match loaded {
            Ok(config) => {
                *self.config.write() = Arc::new(config);
                // Configured again on next use (state carries over): heals
                // an override bucket deleted meanwhile.
                self.overrides.clear();
                tracing::info!("RLS configuration reloaded");
                metrics.with_recorder(|| metrics::counter!(CONFIG_LOAD_SUCCESS).increment(1));
                true
            }
            Err(e) => {
                tracing::error!("RLS configuration not reloaded (the previous one stays): {e:#}");
                metrics.with_recorder(|| metrics::counter!(CONFIG_LOAD_ERROR).increment(1));
                false
            }
        }
    }

    /// The bucket for a descriptor's own `limit` (an override), configured
    /// on first use (by this node: configuring it again carries its state
    /// over, so nodes sharing a store do not reset each other's).
    pub async fn override_bucket<S: Store>(
        &self,
        limiter: &Limiter<S>,
        domain: &str,
        n: u32,
        unit: Unit,
    ) -> drip::Result<String> {
        let name = override_name(domain, n, unit);
        if !self.overrides.contains(&name) {
            let policy: Policy = rule_policy(n, unit)
                .map_err(|e| drip::Error::Store(format!("override limit: {e}")))?;
            limiter.configure(&name, policy).await?;
            self.overrides.insert(name.clone());
        }
        Ok(name)
    }

    /// Checks the files every `reload_every` until `stop`.
    pub async fn watch<S: Store>(
        self: Arc<Self>,
        limiter: Limiter<S>,
        metrics: Arc<crate::app::App<S>>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.options.reload_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.reload_if_changed(&limiter, metrics.metrics()).await;
                }
                _ = stop.cancelled() => return,
            }
        }
    }
}

async fn apply<S: Store>(limiter: &Limiter<S>, config: &RlsConfig) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut keep = std::collections::HashSet::new();
    for (bucket, policy) in config.buckets() {
        limiter
            .configure(bucket, policy.clone())
            .await
            .with_context(|| format!("configuring the RLS rule {bucket:?}"))?;
        keep.insert(bucket.to_owned());
    }
    for (bucket, _) in limiter.list().await.context("listing buckets")? {
        // Override buckets are named by their limit, the same on every
        // node: never stale, and other nodes sharing the store use them.
        if bucket.starts_with(BUCKET_PREFIX) && !keep.contains(&bucket) && !is_override(&bucket) {
            limiter
                .delete(&bucket)
                .await
                .context("deleting a removed RLS rule")?;
        }
    }
    Ok(())
}

/// The bucket of a descriptor's `limit` override of `n` per `unit`.
fn override_name(domain: &str, n: u32, unit: Unit) -> String {
    format!("{BUCKET_PREFIX}{domain}{OVERRIDE}{n}_per_{}", unit.name())
}

const OVERRIDE: &str = ".override.";

/// True for a bucket [`override_name`] makes: `rls:DOMAIN.override.N_per_UNIT`.
fn is_override(bucket: &str) -> bool {
    bucket.rsplit_once(OVERRIDE).is_some_and(|(_, tail)| {
        tail.split_once("_per_").is_some_and(|(n, unit)| {
            n.parse::<u32>().is_ok()
                && (1..=7)
                    .filter_map(Unit::from_envoy)
                    .any(|u| u.name() == unit)
        })
    })
}

/// Every configuration file with its modification time (directories are
/// listed again, so added and removed files count as changes).
fn stamps(paths: &[PathBuf]) -> Vec<Stamp> {
    let files = super::config::files_of(paths).unwrap_or_default();
    files
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(&f).ok();
            let t = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map(|m| m.len());
            (f, t, len)
        })
        .collect()
}

/// A file, its modification time and its length (a rewrite within the
/// file system's time resolution usually changes the length).
type Stamp = (PathBuf, Option<SystemTime>, Option<u64>);
