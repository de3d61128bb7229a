//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`: every
//! descriptor of a request matched to its rule, then all of them decided
//! in one joint store call through [`drip::Limiter::decide_all`]: the
//! request is admitted only if every matched (binding) limit admits, and
//! then all consume; refused by one, none consumes.

use std::sync::Arc;

use drip::{Decision, JointPart, Request, Store};
use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::{Response, Status};

use super::config::{Matched, Quota, Rule, Unit};
use super::state::RlsState;
use crate::app::App;

/// Hits counted against each matched rule, by `domain` and `key` (the
/// rule's key path), as envoyproxy/ratelimit's
/// `ratelimit.service.rate_limit.<domain>.<key>.total_hits`.
pub const TOTAL_HITS: &str = "ratelimit_service_rate_limit_total_hits";
/// Hits of descriptors over their limit.
pub const OVER_LIMIT: &str = "ratelimit_service_rate_limit_over_limit";
/// Hits admitted with less than 20% of the limit left after them.
pub const NEAR_LIMIT: &str = "ratelimit_service_rate_limit_near_limit";
/// Hits over the limit that shadow mode let through.
pub const SHADOW_MODE: &str = "ratelimit_service_rate_limit_shadow_mode";
/// Requests over the limit that the global shadow mode let through.
pub const GLOBAL_SHADOW_MODE: &str = "ratelimit_service_global_shadow_mode";

/// The share of a limit under which an admission counts as near it.
const NEAR_LIMIT_RATIO: f64 = 0.8;

/// The RLS gRPC service over a server's [`App`].
pub struct Rls<S: Store> {
    app: Arc<App<S>>,
    state: Arc<RlsState>,
}

impl<S: Store> Rls<S> {
    /// The service, ready to add to a tonic server.
    pub fn server(app: Arc<App<S>>, state: Arc<RlsState>) -> RateLimitServiceServer<Self> {
        RateLimitServiceServer::new(Rls { app, state })
    }
}

/// What one descriptor asks of the store, if anything.
enum Ask<'a> {
    /// No rule matched (or it was replaced): OK, no limit.
    Free,
    /// `unlimited: true`: OK, remaining u32::MAX.
    Unlimited,
    /// `requests_per_unit: 0`: always over the limit.
    Deny {
        rule: Option<&'a Rule>,
        limit: RateLimit,
    },
    /// A part of the joint decision.
    Part {
        rule: Option<&'a Rule>,
        limit: RateLimit,
        /// Index into the parts.
        part: usize,
    },
}

fn rate_limit(name: Option<&str>, n: u32, unit: Unit) -> RateLimit {
    RateLimit {
        name: name.unwrap_or_default().to_owned(),
        requests_per_unit: n,
        unit: unit.envoy(),
    }
}

#[tonic::async_trait]
impl<S: Store> RateLimitService for Rls<S> {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let req = request.into_inner();
        if req.domain.is_empty() {
            return Err(Status::invalid_argument("domain must not be empty"));
        }
        if req.descriptors.is_empty() {
            return Err(Status::invalid_argument(
                "descriptors must hold at least one descriptor",
            ));
        }
        if req.descriptors.len() > drip::store::MAX_JOINT_PARTS {
            return Err(Status::invalid_argument(format!(
                "descriptors must be at most {} per request",
                drip::store::MAX_JOINT_PARTS
            )));
        }
        let config = self.state.config();
        let limiter = self.app.limiter();
        let hits_of =
            |d: &envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor| {
                d.hits_addend.map_or(
                    if req.hits_addend == 0 {
                        1
                    } else {
                        u64::from(req.hits_addend)
                    },
                    |v| v.value,
                )
            };

        // Match each descriptor to its rule (or its own override).
        let mut matched: Vec<(Option<Matched<'_>>, Option<(u32, Unit)>)> = Vec::new();
        for (i, d) in req.descriptors.iter().enumerate() {
            if d.entries.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "descriptors[{i}].entries must not be empty"
                )));
            }
            if let Some(o) = &d.limit {
                let unit = Unit::from_envoy(o.unit).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "descriptors[{i}].limit.unit must be SECOND, MINUTE, HOUR, DAY, WEEK, MONTH or YEAR"
                    ))
                })?;
                matched.push((None, Some((o.requests_per_unit, unit))));
                continue;
            }
            let entries: Vec<(&str, &str)> = d
                .entries
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_str()))
                .collect();
            matched.push((config.matching(&req.domain, &entries), None));
        }
        // `replaces`: a matched rule named by another matched rule's
        // `replaces` is dropped (envoyproxy/ratelimit's constructLimitsToCheck).
        let replaced: std::collections::HashSet<&str> = matched
            .iter()
            .filter_map(|m| m.0.as_ref())
            .flat_map(|m| m.rule.replaces.iter().map(String::as_str))
            .collect();

        let mut asks = Vec::with_capacity(matched.len());
        let mut parts: Vec<(String, String, u64, bool)> = Vec::new();
        let mut denied = false;
        for (d, (m, over)) in req.descriptors.iter().zip(&matched) {
            let rule = m.as_ref().map(|m| m.rule);
            // An entry matched through a `share_threshold` wildcard counts
            // under the pattern, shared by every value it matches.
            let key = d
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| match m.as_ref().and_then(|m| m.shared[i]) {
                    Some(pattern) => pattern.to_owned(),
                    None => format!("{}_{}", e.key, e.value),
                })
                .collect::<Vec<_>>()
                .join(".");
            let shadow = rule.is_some_and(|r| r.shadow);
            let ask = match (rule, over) {
                (_, Some((n, unit))) if *n == 0 => {
                    denied = true;
                    Ask::Deny {
                        rule: None,
                        limit: rate_limit(None, 0, *unit),
                    }
                }
                (_, Some((n, unit))) => {
                    let bucket = self
                        .state
                        .override_bucket(limiter, &req.domain, *n, *unit)
                        .await
                        .map_err(|e| Status::unavailable(format!("store error: {e}")))?;
                    parts.push((bucket.clone(), key, hits_of(d), false));
                    Ask::Part {
                        rule: None,
                        limit: rate_limit(None, *n, *unit),
                        part: parts.len() - 1,
                    }
                }
                (None, None) => Ask::Free,
                (Some(r), None) if r.name.as_deref().is_some_and(|n| replaced.contains(n)) => {
                    Ask::Free
                }
                (Some(r), None) => match (r.quota, &r.bucket) {
                    (Quota::Unlimited, _) => Ask::Unlimited,
                    (Quota::Limited { n, unit }, None) => {
                        denied |= !shadow;
                        Ask::Deny {
                            rule: Some(r),
                            limit: rate_limit(r.name.as_deref(), n, unit),
                        }
                    }
                    (Quota::Limited { n, unit }, Some((bucket, _))) => {
                        parts.push((bucket.clone(), key, hits_of(d), shadow));
                        Ask::Part {
                            rule: Some(r),
                            limit: rate_limit(r.name.as_deref(), n, unit),
                            part: parts.len() - 1,
                        }
                    }
                },
            };
            asks.push(ask);
        }

        // One store call for every part. A request a `requests_per_unit:
        // 0` rule refuses consumes nothing: its parts only look (cost 0).
        let joint_parts: Vec<JointPart<'_>> = parts
            .iter()
            .map(|(bucket, key, hits, advisory)| JointPart {
                bucket,
                key,
                req: Request::check(if denied { 0 } else { *hits }),
                advisory: *advisory,
            })
            .collect();
        let joint = if joint_parts.is_empty() {
            drip::JointDecision {
                admitted: true,
                decisions: Vec::new(),
            }
        } else {
            limiter.decide_all(&joint_parts).await.map_err(|e| {
                self.app.metrics().store_error("rls");
                Status::unavailable(format!("store error: {e}"))
            })?
        };

        // The answer, descriptor by descriptor, and the metrics.
        let metrics = self.app.metrics();
        let mut statuses = Vec::with_capacity(asks.len());
        let mut over = false;
        // The descriptor the headers describe: a refusing one before any
        // other, then the fewest remaining.
        let mut tightest: Option<(&RateLimit, &Decision, bool)> = None;
        for (d, ask) in req.descriptors.iter().zip(&asks) {
            let hits = hits_of(d);
            let status = match ask {
                Ask::Free => DescriptorStatus {
                    code: Code::Ok as i32,
                    ..Default::default()
                },
                Ask::Unlimited => DescriptorStatus {
                    code: Code::Ok as i32,
                    limit_remaining: u32::MAX,
                    ..Default::default()
                },
                Ask::Deny { rule, limit } => {
                    let shadow = rule.is_some_and(|r| r.shadow);
                    if let Some(r) = rule {
                        count(metrics, r, hits, true, false);
                    }
                    over |= !shadow;
                    DescriptorStatus {
                        code: if shadow { Code::Ok } else { Code::OverLimit } as i32,
                        current_limit: Some(limit.clone()),
                        ..Default::default()
                    }
                }
                Ask::Part {
                    rule, limit, part, ..
                } => {
                    let dec = &joint.decisions[*part];
                    let refused = !dec.allowed() && hits > 0;
                    let shadow = rule.is_some_and(|r| r.shadow);
                    if let Some(r) = rule {
                        let near = dec.allowed()
                            && (dec.remaining as f64)
                                < f64::from(limit.requests_per_unit) * (1.0 - NEAR_LIMIT_RATIO);
                        count(metrics, r, hits, refused, near);
                    }
                    over |= refused && !shadow;
                    let binding = refused && !shadow;
                    let tighter = tightest.is_none_or(|(_, t, t_binding)| {
                        (binding && !t_binding)
                            || (binding == t_binding && dec.remaining < t.remaining)
                    });
                    if tighter {
                        tightest = Some((limit, dec, binding));
                    }
                    DescriptorStatus {
                        code: if refused && !shadow {
                            Code::OverLimit
                        } else {
                            Code::Ok
                        } as i32,
                        current_limit: Some(limit.clone()),
                        limit_remaining: u32::try_from(dec.remaining).unwrap_or(u32::MAX),
                        duration_until_reset: Some(duration(dec.reset_after)),
                        ..Default::default()
                    }
                }
            };
            statuses.push(status);
        }
        let mut code = if over { Code::OverLimit } else { Code::Ok };
        if over && self.state.options.shadow_mode {
            metrics.with_recorder(|| metrics::counter!(GLOBAL_SHADOW_MODE).increment(1));
            code = Code::Ok;
        }
        let response_headers_to_add = match (self.state.options.headers, tightest) {
            (true, Some((limit, dec, _))) => headers(limit, dec, code == Code::OverLimit),
            _ => Vec::new(),
        };
        Ok(Response::new(RateLimitResponse {
            overall_code: code as i32,
            statuses,
            response_headers_to_add,
            ..Default::default()
        }))
    }
}

/// Counts one descriptor's hits against its rule.
fn count(metrics: &crate::metrics::Metrics, rule: &Rule, hits: u64, refused: bool, near: bool) {
    let key = rule
        .full_key
        .strip_prefix(&format!("{}.", rule.domain))
        .unwrap_or(&rule.full_key)
        .to_owned();
    let labels = [("domain", rule.domain.clone()), ("key", key)];
    metrics.with_recorder(|| {
        metrics::counter!(TOTAL_HITS, &labels).increment(hits);
        if refused {
            metrics::counter!(OVER_LIMIT, &labels).increment(hits);
            if rule.shadow {
                metrics::counter!(SHADOW_MODE, &labels).increment(hits);
            }
        } else if near {
            metrics::counter!(NEAR_LIMIT, &labels).increment(hits);
        }
    });
}

fn duration(ns: u64) -> envoy_types::pb::google::protobuf::Duration {
    envoy_types::pb::google::protobuf::Duration {
        seconds: (ns / 1_000_000_000) as i64,
        nanos: (ns % 1_000_000_000) as i32,
    }
}

/// The IETF `RateLimit-Policy` / `RateLimit` fields of the tightest
/// descriptor, and `Retry-After` when over the limit.
fn headers(limit: &RateLimit, d: &Decision, over: bool) -> Vec<HeaderValue> {
    let unit = Unit::from_envoy(limit.unit).map_or(1, Unit::seconds);
    let label = drip::headers::sf_string(if limit.name.is_empty() {
        "rls"
    } else {
        &limit.name
    });
    let mut out = vec![
        (
            "ratelimit-policy",
            format!("{label};q={};w={unit}", limit.requests_per_unit),
        ),
        (
            "ratelimit",
            format!(
                "{label};r={};t={}",
                d.remaining,
                drip::headers::ceil_secs(d.reset_after)
            ),
        ),
    ];
    if over {
        out.push((
            "retry-after",
            drip::headers::ceil_secs(d.retry_after).max(1).to_string(),
        ));
    }
    out.into_iter()
        .map(|(key, value)| HeaderValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        })
        .collect()
}
