//! `drip serve --store redis://...`: the Redis store behind
//! [`Resilient`](super::Resilient), and this node's cluster loop.

use std::sync::Arc;

use anyhow::{Context, Result};
use drip::Limiter;
use drip::store::redis::{RedisOptions, RedisStore};

use super::conn::Conn;
use super::{Cluster, ClusterHandle, ClusterOptions, Health, Remembered, Resilient};
use crate::serve::{Args, StartCluster, serve};
use crate::server::{self, Options};

/// Connects to Redis (one server, or a Redis Cluster when `urls` has
/// several seeds) and serves as a node of the cluster it holds.
pub async fn serve_redis(
    urls: &[String],
    args: &Args,
    buckets: Vec<(String, drip::Policy)>,
    options: Options,
    cluster: ClusterOptions,
) -> Result<()> {
    let shown = urls.join(",");
    let redis_options = RedisOptions {
        connection_timeout: cluster.store_timeout,
        response_timeout: cluster.store_timeout,
        deny_cache: cluster.deny_cache,
        ..RedisOptions::default()
    };
    let prefix = redis_options.prefix.clone();
    let store = match urls {
        [url] => RedisStore::connect(url, redis_options).await,
        _ => RedisStore::connect_cluster(urls, redis_options).await,
    }
    .with_context(|| format!("connecting to the Redis store {shown}"))?;
    let conn = Conn::connect(urls, cluster.store_timeout)
        .await
        .with_context(|| format!("connecting to the Redis store {shown}"))?;
    let stats = store.clone();
    let health = Arc::new(Health::new(cluster.on_store_error));
    let remembered = Arc::new(Remembered::new());
    let store = Resilient::new(
        store,
        health.clone(),
        cluster.store_timeout,
        remembered.clone(),
    );
    let start: StartCluster = Box::new(move |listeners, options, stop| {
        let node = server::node(options, listeners)?;
        let c = Cluster::new(conn, &prefix, &node, cluster, health, remembered);
        c.export_deny_cache(stats);
        let task = tokio::spawn(c.clone().run(stop));
        Ok((ClusterHandle(c), task))
    });
    serve(Limiter::new(store), args, buckets, options, Some(start)).await
}
