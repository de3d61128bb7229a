//! A harness that runs the server on `127.0.0.1:0` listeners in this
//! process and talks to it over HTTP and gRPC, as any client would.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use drip::{Limiter, Store};
use drip_server::grpc::pb;
use drip_server::grpc::pb::rate_limiter_service_client::RateLimiterServiceClient;
use drip_server::model::{BucketStatus, DecisionBody};
use drip_server::server::{self, Listeners, Options};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A running server.
pub struct TestServer {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// A server on a fresh memory store.
    pub async fn memory() -> TestServer {
        TestServer::start(Limiter::memory(), Options::default()).await
    }

    /// A server over `limiter`, once it answers `/healthz`.
    pub async fn start<S: Store>(limiter: Limiter<S>, options: Options) -> TestServer {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (http_addr, grpc_addr) = (http.local_addr().unwrap(), grpc.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(
            limiter,
            Listeners { http, grpc },
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        let server = TestServer {
            http: http_addr,
            grpc: grpc_addr,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        };
        server.wait_ready().await;
        server
    }

    /// Polls `/healthz` until it answers (never a fixed sleep).
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = self.client.get(self.url("/healthz")).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// A gRPC client.
    pub async fn grpc(&self) -> RateLimiterServiceClient<Channel> {
        RateLimiterServiceClient::new(self.channel().await)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Starts the shutdown; `finish` waits for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and returns what `run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        self.task.take().unwrap().await.unwrap()
    }

    pub async fn put(&self, bucket: &str, body: Value) -> reqwest::Response {
        self.client
            .put(self.url(&format!("/v1/buckets/{bucket}")))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The value of a metric line that starts with `prefix`.
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// What the scenarios need of a protocol.
pub trait Client {
    async fn configure(&self, bucket: &str, mode: &str, capacity: u64, leak_rate: f64, reset: bool);
    async fn allow(&self, bucket: &str, key: &str) -> DecisionBody;
    async fn status(&self, bucket: &str, key: &str) -> BucketStatus;
}

/// The HTTP/JSON contract.
pub struct Http<'a>(pub &'a TestServer);

impl Client for Http<'_> {
    async fn configure(
        &self,
        bucket: &str,
        mode: &str,
        capacity: u64,
        leak_rate: f64,
        reset: bool,
    ) {
        let r = self
            .0
            .put(
                bucket,
                json!({"mode": mode, "capacity": capacity, "leak_rate": leak_rate, "reset": reset}),
            )
            .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    async fn allow(&self, bucket: &str, key: &str) -> DecisionBody {
        let r = self
            .0
            .post(&format!("/v1/buckets/{bucket}/allow"), json!({"key": key}))
            .await;
        let code = r.status().as_u16();
        let d: DecisionBody = r.json().await.unwrap();
        assert_eq!(code, if d.allowed { 200 } else { 429 });
        d
    }

    async fn status(&self, bucket: &str, key: &str) -> BucketStatus {
        let r = self
            .0
            .client
            .get(self.0.url(&format!("/v1/buckets/{bucket}")))
            .query(&[("key", key)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

/// The gRPC contract.
pub struct Grpc(pub RateLimiterServiceClient<Channel>);

impl Client for Grpc {
    async fn configure(
        &self,
        bucket: &str,
        mode: &str,
        capacity: u64,
        leak_rate: f64,
        reset: bool,
    ) {
        self.0
            .clone()
            .configure_bucket(pb::ConfigureBucketRequest {
                bucket_id: bucket.into(),
                mode: mode.into(),
                capacity,
                leak_rate,
                windows: vec![],
                reset,
                counter_retention_s: None,
                track_queue: None,
            })
            .await
            .unwrap();
    }

    async fn allow(&self, bucket: &str, key: &str) -> DecisionBody {
        let r = self
            .0
            .clone()
            .allow_request(pb::AllowRequestRequest {
                bucket_id: bucket.into(),
                key: key.into(),
                cost: None,
                request_id: None,
            })
            .await
            .unwrap()
            .into_inner();
        DecisionBody {
            allowed: r.allowed,
            queue_position: r.queue_position,
            estimated_wait_ms: r.estimated_wait_ms,
            remaining: r.remaining,
            retry_after_ms: r.retry_after_ms,
            reset_after_ms: r.reset_after_ms,
            request_id: r.request_id.into(),
            degraded: false,
        }
    }

    async fn status(&self, bucket: &str, key: &str) -> BucketStatus {
        let b = self
            .0
            .clone()
            .get_bucket_status(pb::GetBucketStatusRequest {
                bucket_id: bucket.into(),
                key: key.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .bucket
            .unwrap();
        BucketStatus {
            bucket_id: b.bucket_id,
            key: b.key,
            mode: b.mode,
            capacity: b.capacity,
            leak_rate: b.leak_rate,
            windows: vec![],
            level: b.level,
            queue_size: b.queue_size,
            total_requests: b.total_requests,
            allowed_requests: b.allowed_requests,
            rejected_requests: b.rejected_requests,
            processed_requests: b.processed_requests,
            counter_retention_s: b.counter_retention_s,
            track_queue: b.track_queue,
        }
    }
}
