//! The gRPC form of one request: `RateLimiterService/AllowRequest` through the
//! tonic client generated from `proto/drip.proto`. Every message name the
//! stress tool uses is in this file, so a rename of the proto touches only it.

use tonic::transport::Channel;

use super::outcome::Outcome;
use crate::grpc::pb;
use crate::grpc::pb::rate_limiter_service_client::RateLimiterServiceClient;

/// A gRPC client of one connection.
pub type Client = RateLimiterServiceClient<Channel>;

/// One HTTP/2 connection to `url` (`http://HOST:PORT`), for any service.
pub async fn channel(url: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(url.to_string())
        .map_err(|e| anyhow::anyhow!("--url: {url} is not a valid URL: {e}"))?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {url}: {e}"))
}

/// Connects to `url` (`http://HOST:PORT`), one HTTP/2 connection.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    Ok(RateLimiterServiceClient::new(channel(url).await?))
}

/// One `AllowRequest` of cost 1 for `bucket`/`key`.
pub async fn allow(client: &mut Client, bucket: &str, key: &str) -> Outcome {
    let req = pb::AllowRequestRequest {
        bucket_id: bucket.to_string(),
        key: key.to_string(),
        cost: None,
        request_id: None,
    };
    match client.allow_request(req).await {
        Ok(resp) => {
            let r = resp.into_inner();
            let detail = format!(
                "{{\"allowed\":{},\"queue_position\":{},\"estimated_wait_ms\":{},\"remaining\":{},\"retry_after_ms\":{},\"reset_after_ms\":{}}}",
                r.allowed,
                r.queue_position,
                r.estimated_wait_ms,
                r.remaining,
                r.retry_after_ms,
                r.reset_after_ms
            );
            if r.allowed {
                Outcome::Admitted {
                    status: "OK",
                    detail: detail.into(),
                }
            } else {
                Outcome::Rejected {
                    status: "OK",
                    detail: detail.into(),
                }
            }
        }
        Err(status) => Outcome::grpc_error(&status),
    }
}
