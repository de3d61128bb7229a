//! The HTTP/JSON form of one request: `POST /v1/buckets/{bucket}/allow` on a
//! kept-alive HTTP/1.1 connection of its own (one per worker, as wrk does),
//! reconnecting after a failure.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::outcome::Outcome;

/// Where requests go: host and port, and the path of the bucket's allow.
#[derive(Clone, Debug)]
pub struct Target {
    /// `HOST:PORT` to connect to.
    pub authority: String,
    /// `/v1/buckets/{bucket}/allow`.
    pub path: String,
}

impl Target {
    /// The target of `url` (`http://HOST:PORT`, a path prefix allowed) and `bucket`.
    pub fn new(url: &str, bucket: &str) -> anyhow::Result<Target> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("--url: {url} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            anyhow::bail!("--url: {url} must start with http:// (https is not supported)");
        }
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow::anyhow!("--url: {url} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let prefix = uri.path().trim_end_matches('/');
        Ok(Target {
            authority: format!("{}:{port}", authority.host()),
            path: format!("{prefix}/v1/buckets/{bucket}/allow"),
        })
    }
}

/// One worker's connection.
pub struct Conn {
    target: Target,
    /// The last body sent and its key: with one key, encoded once.
    body: Option<(String, Bytes)>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// A connection to `target`, opened on first use.
    pub fn new(target: Target) -> Conn {
        Conn {
            target,
            body: None,
            sender: None,
        }
    }

    async fn open(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, Outcome> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = TcpStream::connect(&self.target.authority)
                .await
                .map_err(|e| error("connect", e))?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| error("connect", e))?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("just opened"))
    }

    /// One allow of cost 1 for `key`.
    pub async fn allow(&mut self, key: &str) -> Outcome {
        match self.try_allow(key).await {
            Ok(o) => o,
            Err(o) => {
                // Start afresh next time: the connection may be broken.
                self.sender = None;
                o
            }
        }
    }

    async fn try_allow(&mut self, key: &str) -> Result<Outcome, Outcome> {
        let body = match &self.body {
            Some((k, b)) if k == key => b.clone(),
            _ => {
                let b = Bytes::from(
                    serde_json::to_vec(&serde_json::json!({ "key": key }))
                        .map_err(|e| error("encode", e))?,
                );
                self.body = Some((key.to_owned(), b.clone()));
                b
            }
        };
        let req = http::Request::post(&self.target.path)
            .header(http::header::HOST, &self.target.authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| error("request", e))?;
        let sender = self.open().await?;
        sender.ready().await.map_err(|e| error("io", e))?;
        let resp = sender.send_request(req).await.map_err(|e| error("io", e))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| error("io", e))?
            .to_bytes();
        let detail = body;
        Ok(match status.as_u16() {
            200 => Outcome::Admitted {
                status: "200",
                detail,
            },
            429 => Outcome::Rejected {
                status: "429",
                detail,
            },
            code => Outcome::Error {
                kind: format!("http {code}"),
                detail: String::from_utf8_lossy(&detail).into_owned(),
            },
        })
    }
}

fn error(kind: &str, e: impl std::fmt::Display) -> Outcome {
    Outcome::Error {
        kind: kind.to_string(),
        detail: e.to_string(),
    }
}
