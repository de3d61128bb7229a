//! The gRPC front end: `drip.v1.RateLimiterService` over the same [`App`]
//! as HTTP, plus `grpc.health.v1` and server reflection.

use std::sync::Arc;

use drip::Store;
use tonic::{Request, Response, Status};

use crate::app::{Answer, App};
use crate::model::{self, BucketStatus, ConfigureBody};

/// The code generated from `proto/drip.proto`.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("drip.v1");

    /// The encoded descriptors of `drip.proto`, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/drip_descriptor.bin"));
}

use pb::rate_limiter_service_server::{RateLimiterService, RateLimiterServiceServer};

/// The gRPC service over `app`.
pub struct Grpc<S: Store> {
    app: Arc<App<S>>,
}

impl<S: Store> Grpc<S> {
    /// The service, ready to add to a tonic server.
    pub fn server(app: Arc<App<S>>) -> RateLimiterServiceServer<Self> {
        RateLimiterServiceServer::new(Grpc { app })
    }
}

/// The `authorization` metadata of a call, for admin calls.
fn authorization<T>(req: &Request<T>) -> Option<&str> {
    req.metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
}

fn state(s: BucketStatus) -> pb::BucketState {
    pb::BucketState {
        bucket_id: s.bucket_id,
        key: s.key,
        mode: s.mode,
        capacity: s.capacity,
        leak_rate: s.leak_rate,
        windows: s
            .windows
            .into_iter()
            .map(|w| pb::Window {
                limit: w.limit,
                period_s: w.period_s,
            })
            .collect(),
        level: s.level,
        queue_size: s.queue_size,
        total_requests: s.total_requests,
        allowed_requests: s.allowed_requests,
        rejected_requests: s.rejected_requests,
        processed_requests: s.processed_requests,
        counter_retention_s: s.counter_retention_s,
        track_queue: s.track_queue,
    }
}

/// A refusal is an answer (`allowed: false`), not an error, as over HTTP.
fn decision(mut v: Answer) -> pb::AllowRequestResponse {
    let b = v.take_body();
    pb::AllowRequestResponse {
        allowed: b.allowed,
        queue_position: b.queue_position,
        estimated_wait_ms: b.estimated_wait_ms,
        remaining: b.remaining,
        retry_after_ms: b.retry_after_ms,
        reset_after_ms: b.reset_after_ms,
        request_id: b.request_id.into(),
    }
}

/// Acquire answers with the same fields as AllowRequest (its own message,
/// so that every RPC has its own response type).
impl From<pb::AllowRequestResponse> for pb::AcquireResponse {
    fn from(r: pb::AllowRequestResponse) -> Self {
        pb::AcquireResponse {
            allowed: r.allowed,
            queue_position: r.queue_position,
            estimated_wait_ms: r.estimated_wait_ms,
            remaining: r.remaining,
            retry_after_ms: r.retry_after_ms,
            reset_after_ms: r.reset_after_ms,
            request_id: r.request_id,
        }
    }
}

/// The response to allow and acquire; a decision made without the shared
/// store carries `drip-degraded: true` metadata.
fn respond<T: From<pb::AllowRequestResponse>>(v: Answer) -> Response<T> {
    let degraded = v.degraded;
    let mut res = Response::new(decision(v).into());
    if degraded {
        res.metadata_mut().insert(
            crate::http::buckets::DEGRADED_HEADER,
            tonic::metadata::MetadataValue::from_static("true"),
        );
    }
    res
}

#[tonic::async_trait]
impl<S: Store> RateLimiterService for Grpc<S> {
    async fn configure_bucket(
        &self,
        req: Request<pb::ConfigureBucketRequest>,
    ) -> Result<Response<pb::ConfigureBucketResponse>, Status> {
        self.app.authorize(authorization(&req))?;
        let r = req.into_inner();
        let body = ConfigureBody {
            mode: Some(r.mode),
            capacity: r.capacity,
            leak_rate: r.leak_rate,
            windows: r
                .windows
                .into_iter()
                .map(|w| model::WindowSpec {
                    limit: w.limit,
                    period_s: w.period_s,
                })
                .collect(),
            reset: r.reset,
            counter_retention_s: r.counter_retention_s,
            track_queue: r.track_queue,
        };
        let s = self.app.configure(&r.bucket_id, &body).await?;
        Ok(Response::new(pb::ConfigureBucketResponse {
            bucket: Some(state(s)),
        }))
    }

    async fn allow_request(
        &self,
        req: Request<pb::AllowRequestRequest>,
    ) -> Result<Response<pb::AllowRequestResponse>, Status> {
        let r = req.into_inner();
        let v = self
            .app
            .allow(&r.bucket_id, &r.key, r.cost, r.request_id)
            .await?;
        Ok(respond(v))
    }

    async fn acquire(
        &self,
        req: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let r = req.into_inner();
        let v = self
            .app
            .acquire(&r.bucket_id, &r.key, r.cost, r.timeout_ms, r.request_id)
            .await?;
        Ok(respond(v))
    }

    async fn get_bucket_status(
        &self,
        req: Request<pb::GetBucketStatusRequest>,
    ) -> Result<Response<pb::GetBucketStatusResponse>, Status> {
        let r = req.into_inner();
        let s = self.app.status(&r.bucket_id, &r.key).await?;
        Ok(Response::new(pb::GetBucketStatusResponse {
            bucket: Some(state(s)),
        }))
    }

    async fn get_queued_requests(
        &self,
        req: Request<pb::GetQueuedRequestsRequest>,
    ) -> Result<Response<pb::GetQueuedRequestsResponse>, Status> {
        let r = req.into_inner();
        let q = self.app.queue(&r.bucket_id, &r.key).await?;
        Ok(Response::new(pb::GetQueuedRequestsResponse {
            bucket_id: q.bucket_id,
            key: q.key,
            requests: q
                .requests
                .into_iter()
                .map(|e| pb::QueuedRequest {
                    request_id: e.request_id,
                    enqueue_time_ms: e.enqueue_time_ms,
                    estimated_process_time_ms: e.estimated_process_time_ms,
                })
                .collect(),
        }))
    }

    async fn delete_bucket(
        &self,
        req: Request<pb::DeleteBucketRequest>,
    ) -> Result<Response<pb::DeleteBucketResponse>, Status> {
        self.app.authorize(authorization(&req))?;
        self.app.delete(&req.into_inner().bucket_id).await?;
        Ok(Response::new(pb::DeleteBucketResponse {}))
    }

    async fn list_buckets(
        &self,
        _req: Request<pb::ListBucketsRequest>,
    ) -> Result<Response<pb::ListBucketsResponse>, Status> {
        let list = self.app.list().await?;
        Ok(Response::new(pb::ListBucketsResponse {
            buckets: list.buckets.into_iter().map(state).collect(),
        }))
    }

    async fn get_leader(
        &self,
        _req: Request<pb::GetLeaderRequest>,
    ) -> Result<Response<pb::GetLeaderResponse>, Status> {
        Ok(Response::new(pb::GetLeaderResponse {
            leader: self.app.leader().await.leader,
        }))
    }

    async fn get_cluster_status(
        &self,
        _req: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::GetClusterStatusResponse>, Status> {
        let c = self.app.cluster().await;
        Ok(Response::new(pb::GetClusterStatusResponse {
            node_id: c.node_id,
            leader: c.leader,
            nodes: c
                .nodes
                .into_iter()
                .map(|n| pb::Node {
                    node_id: n.node_id,
                    http: n.http,
                    grpc: n.grpc,
                    last_seen_ms: n.last_seen_ms,
                    alive: n.alive,
                })
                .collect(),
        }))
    }
}
