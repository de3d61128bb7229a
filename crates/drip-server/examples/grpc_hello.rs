//! The gRPC baseline of `scripts/bench-server.sh`: the smallest tonic
//! server answering `drip.v1.RateLimiterService/AllowRequest` (the same
//! generated messages as `drip serve`, so the same sizes on the wire) with
//! a fixed admitted answer, no limiter behind it. Every other RPC is
//! `UNIMPLEMENTED`.
//!
//! `cargo run --release -p drip-server --example grpc_hello -- 127.0.0.1:50061`

use std::sync::atomic::{AtomicU64, Ordering};

use drip_server::grpc::pb;
use drip_server::grpc::pb::rate_limiter_service_server::{
    RateLimiterService, RateLimiterServiceServer,
};
use tonic::{Request, Response, Status};

/// Counts calls, so each answer carries an id as `drip serve` makes one.
#[derive(Default)]
struct Hello(AtomicU64);

type Answer<T> = Result<Response<T>, Status>;

fn no<T>() -> Answer<T> {
    Err(Status::unimplemented("only AllowRequest"))
}

#[tonic::async_trait]
impl RateLimiterService for Hello {
    async fn allow_request(
        &self,
        req: Request<pb::AllowRequestRequest>,
    ) -> Answer<pb::AllowRequestResponse> {
        let r = req.into_inner();
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(pb::AllowRequestResponse {
            allowed: true,
            queue_position: 0,
            estimated_wait_ms: 0,
            // As drip answers for the bench's bucket (capacity 2^32 - 1).
            remaining: 4_294_967_294,
            retry_after_ms: 0,
            reset_after_ms: 1,
            request_id: r
                .request_id
                .unwrap_or_else(|| format!("req_1764820000000_{n}")),
        }))
    }

    async fn configure_bucket(
        &self,
        _: Request<pb::ConfigureBucketRequest>,
    ) -> Answer<pb::ConfigureBucketResponse> {
        no()
    }

    async fn acquire(&self, _: Request<pb::AcquireRequest>) -> Answer<pb::AcquireResponse> {
        no()
    }

    async fn get_bucket_status(
        &self,
        _: Request<pb::GetBucketStatusRequest>,
    ) -> Answer<pb::GetBucketStatusResponse> {
        no()
    }

    async fn delete_bucket(
        &self,
        _: Request<pb::DeleteBucketRequest>,
    ) -> Answer<pb::DeleteBucketResponse> {
        no()
    }

    async fn list_buckets(
        &self,
        _: Request<pb::ListBucketsRequest>,
    ) -> Answer<pb::ListBucketsResponse> {
        no()
    }

    async fn get_leader(&self, _: Request<pb::GetLeaderRequest>) -> Answer<pb::GetLeaderResponse> {
        no()
    }

    async fn get_cluster_status(
        &self,
        _: Request<pb::GetClusterStatusRequest>,
    ) -> Answer<pb::GetClusterStatusResponse> {
        no()
    }

    async fn get_queued_requests(
        &self,
        _: Request<pb::GetQueuedRequestsRequest>,
    ) -> Answer<pb::GetQueuedRequestsResponse> {
        no()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50061".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("grpc hello listening on {}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(RateLimiterServiceServer::new(Hello::default()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}
