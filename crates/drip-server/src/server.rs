//! `run`: serve HTTP and gRPC on bound listeners over one limiter until a
//! shutdown signal, then drain (mini-redis's `server::run` shape).

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use drip::{Limiter, Store};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::app::{App, Node};
use crate::cluster::ClusterHandle;
use crate::grpc::{self, Grpc};
use crate::http;

/// The bound listeners the server answers on.
pub struct Listeners {
    /// HTTP/JSON.
    pub http: TcpListener,
    /// gRPC.
    pub grpc: TcpListener,
}

/// Server settings that are not listeners or the store.
#[derive(Clone, Debug)]
pub struct Options {
    /// The bearer token admin calls need; none means they need nothing.
    pub admin_token: Option<String>,
    /// The node's id; default `hostname:http-port`.
    pub node_id: Option<String>,
    /// How often idle keys are forgotten.
    pub sweep_every: Duration,
    /// The cluster this node is part of (Redis stores); none: on its own.
    pub cluster: Option<ClusterHandle>,
    /// How long counters outlive the water in buckets that do not say.
    pub counter_retention: Duration,
    /// Envoy's rate limit service (`--rls-config`), if configured.
    pub rls: Option<crate::rls::RlsHandle>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            admin_token: None,
            node_id: None,
            sweep_every: Duration::from_secs(10),
            cluster: None,
            counter_retention: crate::limits::DEFAULT_COUNTER_RETENTION,
            rls: None,
        }
    }
}

/// Serves the contract on `listeners` over `limiter` until `shutdown`
/// completes. Then it stops accepting, answers waiting acquires with
/// `shutting_down`, lets in-flight requests finish, and returns.
pub async fn run<S: Store>(
    limiter: Limiter<S>,
    listeners: Listeners,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let http_addr = listeners.http.local_addr()?;
    let grpc_addr = listeners.grpc.local_addr()?;
    let node = node(&options, &listeners)?;
    let stop = CancellationToken::new();
    let app = App::with_counter_retention(
        limiter,
        options.admin_token.clone(),
        node,
        stop.clone(),
        options.cluster.clone(),
        options.counter_retention,
    );

    tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::select! {
                _ = shutdown => tracing::info!("shutting down: draining requests"),
                _ = stop.cancelled() => {}
            }
            stop.cancel();
        }
    });
    tokio::spawn(sweep(app.clone(), options.sweep_every));
    let rls = options.rls.as_ref().map(|h| h.0.clone());
    if let Some(state) = &rls {
        tokio::spawn(
            state
                .clone()
                .watch(app.limiter().clone(), app.clone(), stop.clone()),
        );
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<grpc::pb::rate_limiter_service_server::RateLimiterServiceServer<Grpc<S>>>()
        .await;
    // Both reflection versions: grpcurl and older tools still ask v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(grpc::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .context("building gRPC reflection")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("building gRPC reflection")?;

    tracing::info!("HTTP listening on http://{http_addr}");
    tracing::info!("gRPC listening on {grpc_addr}");

    let router = http::router(app.clone()).merge(crate::rls::http::router(rls.clone()));
    // TCP_NODELAY on every connection: an answer goes out at once, not
    // held by Nagle's algorithm until the client's delayed ACK (40 ms on
    // Linux; an HTTP/2 answer is several frames, so gRPC met it).
    let http_listener = listeners.http.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let http =
        axum::serve(http_listener, router).with_graceful_shutdown(stop.clone().cancelled_owned());
    let grpc_incoming = TcpListenerStream::new(listeners.grpc).map(|conn| {
        conn.inspect(|tcp| {
            let _ = tcp.set_nodelay(true);
        })
    });
    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(Grpc::server(app.clone()))
        .add_optional_service(rls.map(|state| crate::rls::Rls::server(app.clone(), state)))
        .serve_with_incoming_shutdown(grpc_incoming, stop.clone().cancelled_owned());
    let result = tokio::try_join!(async { http.await.context("HTTP server") }, async {
        grpc.await.context("gRPC server")
    },);
    // Either server failing stops the other.
    stop.cancel();
    health
        .set_not_serving::<grpc::pb::rate_limiter_service_server::RateLimiterServiceServer<Grpc<S>>>()
        .await;
    result.map(|_| ())
}

/// Who this node is: `options.node_id`, or `hostname:http-port`, with the
/// listeners' addresses.
pub fn node(options: &Options, listeners: &Listeners) -> anyhow::Result<Node> {
    let http_addr = listeners.http.local_addr()?;
    let grpc_addr = listeners.grpc.local_addr()?;
    Ok(Node {
        id: options.node_id.clone().unwrap_or_else(|| {
            let host = hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".to_owned());
            format!("{host}:{}", http_addr.port())
        }),
        http: http_addr.to_string(),
        grpc: grpc_addr.to_string(),
    })
}

/// Forgets idle keys every `every` until shutdown.
async fn sweep<S: Store>(app: std::sync::Arc<App<S>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => app.sweep().await,
            _ = app.shutdown().cancelled() => return,
        }
    }
}
