//! `GET /v1/rls`: the loaded domains and rules, each with the drip policy
//! it became (and whether its window is exact).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::config::{Quota, Rule};
use super::state::RlsState;

/// What `GET /v1/rls` answers.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RlsView {
    /// False when the server runs without `--rls-config`.
    pub enabled: bool,
    /// Global shadow mode (`--rls-shadow-mode`).
    pub shadow_mode: bool,
    /// Whether answers carry RateLimit headers (`--rls-headers`).
    pub headers: bool,
    /// The configuration files read.
    pub files: Vec<String>,
    /// Every rule, by domain then load order.
    pub rules: Vec<RuleView>,
}

/// One rule and the drip policy it became.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RuleView {
    /// The domain.
    pub domain: String,
    /// The rule's key path within the domain (`key_value.key`...).
    pub key: String,
    /// `rate_limit.name`, if any.
    pub name: Option<String>,
    /// `requests_per_unit`; absent for `unlimited`.
    pub requests_per_unit: Option<u32>,
    /// `second`, `minute`, `hour`, `day`, `week`, `month` or `year`; absent for `unlimited`.
    pub unit: Option<String>,
    /// `unlimited: true`.
    pub unlimited: bool,
    /// `shadow_mode: true`.
    pub shadow_mode: bool,
    /// Names of the rules this one replaces.
    pub replaces: Vec<String>,
    /// The drip bucket it decides in (absent for unlimited and 0 rules).
    pub bucket: Option<String>,
    /// The drip policy in its stored text form, e.g. `police rate=1/1000000
    /// capacity=10 window=10/1000000000/1` (window = limit/period_ns/granularity_ns).
    pub policy: Option<String>,
    /// `exact` (a rolling window of one unit, exact to the nanosecond),
    /// `approximate` (admits at most the limit, possibly less), or `none`.
    pub window: String,
    /// The file it came from.
    pub file: String,
}

fn view(r: &Rule) -> RuleView {
    let (n, unit) = match r.quota {
        Quota::Unlimited => (None, None),
        Quota::Limited { n, unit } => (Some(n), Some(unit.name().to_owned())),
    };
    let policy = r.bucket.as_ref().map(|(_, p)| p);
    RuleView {
        domain: r.domain.clone(),
        key: r
            .full_key
            .strip_prefix(&format!("{}.", r.domain))
            .unwrap_or(&r.full_key)
            .to_owned(),
        name: r.name.clone(),
        requests_per_unit: n,
        unit,
        unlimited: r.quota == Quota::Unlimited,
        shadow_mode: r.shadow,
        replaces: r.replaces.clone(),
        bucket: r.bucket.as_ref().map(|(b, _)| b.clone()),
        policy: policy.map(|p| p.encode()),
        window: match policy.and_then(|p| p.windows().first()) {
            Some(w) if w.is_exact() => "exact",
            Some(_) => "approximate",
            None => "none",
        }
        .to_owned(),
        file: r.file.display().to_string(),
    }
}

/// The loaded RLS configuration.
#[utoipa::path(get, path = "/v1/rls", tag = "rls",
    responses((status = 200, description = "The loaded domains and rules, each with the drip policy it became", body = RlsView)))]
pub async fn rls(State(state): State<Option<Arc<RlsState>>>) -> Json<RlsView> {
    let Some(state) = state else {
        return Json(RlsView {
            enabled: false,
            shadow_mode: false,
            headers: false,
            files: Vec::new(),
            rules: Vec::new(),
        });
    };
    let config = state.config();
    let mut rules: Vec<RuleView> = config.rules.iter().map(view).collect();
    rules.sort_by(|a, b| a.domain.cmp(&b.domain));
    Json(RlsView {
        enabled: true,
        shadow_mode: state.options.shadow_mode,
        headers: state.options.headers,
        files: config
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect(),
        rules,
    })
}

/// The route, over the server's RLS state (none without `--rls-config`).
pub fn router(state: Option<Arc<RlsState>>) -> Router {
    Router::new().route("/v1/rls", get(rls)).with_state(state)
}
