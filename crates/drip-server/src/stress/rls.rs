//! The RLS form of one request (`drip stress --grpc --rls`):
//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` with one
//! descriptor `(--rls-key, KEY)` in the domain `--bucket`.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use tonic::transport::Channel;

use super::outcome::Outcome;

/// An RLS client of one connection.
pub type Client = RateLimitServiceClient<Channel>;

/// Connects to `url` (`http://HOST:PORT`), one HTTP/2 connection.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    Ok(RateLimitServiceClient::new(
        super::grpc::channel(url).await?,
    ))
}

/// One `ShouldRateLimit` of one hit for `(entry_key, key)` in `domain`.
pub async fn should(client: &mut Client, domain: &str, entry_key: &str, key: &str) -> Outcome {
    let req = RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: entry_key.to_owned(),
                value: key.to_owned(),
            }],
            limit: None,
            hits_addend: None,
        }],
        hits_addend: 1,
    };
    match client.should_rate_limit(req).await {
        Ok(resp) => {
            let r = resp.into_inner();
            let remaining = r.statuses.first().map_or(0, |s| s.limit_remaining);
            let detail = format!(
                "{{\"overall_code\":{},\"limit_remaining\":{remaining}}}",
                r.overall_code
            );
            if r.overall_code == 1 {
                Outcome::Admitted {
                    status: "OK",
                    detail: detail.into(),
                }
            } else {
                Outcome::Rejected {
                    status: "OVER_LIMIT",
                    detail: detail.into(),
                }
            }
        }
        Err(status) => Outcome::grpc_error(&status),
    }
}
