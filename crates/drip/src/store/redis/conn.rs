//! The connection (one Redis or a cluster) and sending commands on it.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisFuture, ServerErrorKind, Value};

use super::*;
use crate::{Error, Result};

/// One multiplexed connection (pipelining concurrent callers), to a single
/// Redis or to a cluster. Both reconnect by themselves. Public for other
/// users of the same Redis (drip's cluster membership).
#[derive(Clone)]
pub enum Conn {
    /// One Redis.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects to `urls`: one URL is one Redis, several are the seed
    /// nodes of a Redis Cluster. `timeout` bounds connecting and each answer.
    pub async fn connect(urls: &[String], timeout: Duration) -> redis::RedisResult<Conn> {
        if let [url] = urls {
            let client = redis::Client::open(url.as_str())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(timeout);
            Ok(Conn::Single(
                ConnectionManager::new_with_config(client, config).await?,
            ))
        } else {
            let client = redis::cluster::ClusterClient::builder(urls.to_vec())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(1)
                .build()?;
            Ok(Conn::Cluster(client.get_async_connection().await?))
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Inner {
    /// Sends `cmd` on the connection (on a single Redis straight to it,
    /// without a boxed future per call).
    pub(super) async fn query(&self, cmd: &Cmd) -> redis::RedisResult<Value> {
        match &self.conn {
            Conn::Single(c) => c.clone().send_packed_command(cmd).await?.extract_error(),
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }

    /// Sends `cmd`, an `EVALSHA` of the decide script, loading the script
    /// first if Redis does not have it (`NOSCRIPT`: restarted, flushed, or
    /// a new cluster node).
    pub(super) async fn eval_decide(&self, cmd: &Cmd) -> Result<Value> {
        match self.query(cmd).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.decide
                    .load_async(&mut self.conn.clone())
                    .await
                    .map_err(store_error)?;
                self.query(cmd).await.map_err(store_error)
            }
            r => r.map_err(store_error),
        }
    }
}

/// Polls `fut`, yielding to the runtime between polls for up to `limit`,
/// then awaits it (see `RedisOptions::spin`).
pub(super) async fn spin<F: std::future::Future>(fut: F, limit: Duration) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let deadline = std::time::Instant::now() + limit;
    loop {
        let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await;
        if let std::task::Poll::Ready(out) = polled {
            return out;
        }
        if std::time::Instant::now() >= deadline {
            return fut.await;
        }
        tokio::task::yield_now().await;
    }
}

pub(super) fn store_error(e: redis::RedisError) -> Error {
    Error::Store(format!("redis: {e}"))
}
