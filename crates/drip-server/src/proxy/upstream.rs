//! Forwarding to the upstream: one pooled keep-alive HTTP/1.1 client,
//! bodies streamed both ways frame by frame (never held whole), hop-by-hop
//! headers dropped, `X-Forwarded-For` appended. A dead upstream is a 502 and
//! a slow one a 504, never an error of the proxy itself.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::client_ip::X_FORWARDED_FOR;
use super::respond::{self, Refusal};

/// Idle upstream connections are kept this long for reuse.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The upstream and the client that reaches it.
pub struct Upstream {
    client: Client<HttpConnector, Body>,
    connect_timeout: Duration,
    scheme: Scheme,
    authority: Authority,
    /// The URL's path without its trailing `/`, prefixed to every request's.
    base_path: String,
    timeout: Duration,
    preserve_host: bool,
}

impl Upstream {
    /// A client for `url` (`http://HOST:PORT[/base]`).
    pub fn new(
        url: &str,
        connect_timeout: Duration,
        timeout: Duration,
        preserve_host: bool,
    ) -> Result<Upstream, String> {
        let rule = "--upstream must be an http:// URL such as http://127.0.0.1:9000 or http://app:9000/api";
        let uri: Uri = url.parse().map_err(|e| format!("{rule} ({url:?}: {e})"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(format!("{rule} (got {url:?})"));
        };
        if *scheme != Scheme::HTTP {
            return Err(format!(
                "{rule}: {scheme}:// upstreams are not supported (got {url:?})"
            ));
        }
        if uri.query().is_some() {
            return Err(format!("{rule}, without a query (got {url:?})"));
        }
        Ok(Upstream {
            client: client(connect_timeout),
            connect_timeout,
            scheme: scheme.clone(),
            authority: authority.clone(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
            timeout,
            preserve_host,
        })
    }

    /// The same upstream with a pool of its own: a worker thread's
    /// connections then stay on that thread (a pooled connection is driven
    /// by a task of the runtime that opened it).
    pub fn fresh(&self) -> Upstream {
        Upstream {
            client: client(self.connect_timeout),
            connect_timeout: self.connect_timeout,
            scheme: self.scheme.clone(),
            authority: self.authority.clone(),
            base_path: self.base_path.clone(),
            timeout: self.timeout,
            preserve_host: self.preserve_host,
        }
    }

    /// Forwards `req` from `client` and returns the upstream's response (its
    /// body streaming), or the proxy's 502/504.
    pub async fn forward(&self, req: Request<Body>, client: IpAddr) -> Response {
        let req = match self.rewrite(req, client) {
            Ok(r) => r,
            Err(r) => return r.into_response(),
        };
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => respond::error(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                &format!(
                    "the upstream did not answer within {} ms",
                    self.timeout.as_millis()
                ),
            ),
            Ok(Err(e)) if e.is_connect() => {
                tracing::warn!(upstream = %self.authority, "upstream unreachable: {e}");
                respond::error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    "the upstream refused or did not accept the connection",
                )
            }
            Ok(Err(e)) => {
                tracing::warn!(upstream = %self.authority, "upstream failed: {e}");
                respond::error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_failed",
                    "the upstream closed the connection or sent an invalid response",
                )
            }
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Body::new(body))
            }
        }
    }

    /// The request as the upstream gets it.
    fn rewrite(&self, req: Request<Body>, client: IpAddr) -> Result<Request<Body>, Refusal> {
        let (mut parts, body) = req.into_parts();
        // Without a base path the request's own (shared bytes) is reused.
        let path_and_query = match parts.uri.path_and_query() {
            Some(p) if self.base_path.is_empty() => p.clone(),
            p => {
                let p = p.map_or("/", |p| p.as_str());
                match format!("{}{}", self.base_path, p).parse::<PathAndQuery>() {
                    Ok(p) => p,
                    Err(_) => {
                        return Err(Refusal::new(
                            StatusCode::BAD_REQUEST,
                            "invalid_path",
                            "the request path cannot be forwarded",
                        ));
                    }
                }
            }
        };
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_path",
                    "the request path cannot be forwarded",
                )
            })?;
        // HTTP/2 carries the host in the URI, HTTP/1.1 in the header.
        let client_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        if self.preserve_host
            && let Some(host) = client_host
        {
            parts.headers.insert(header::HOST, host);
        }
        append_forwarded_for(&mut parts.headers, client);
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        Ok(Request::from_parts(parts, body))
    }
}

/// A pooled keep-alive client whose connections' tasks run on the runtime
/// that opens them.
fn client(connect_timeout: Duration) -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// Appends `client` to `X-Forwarded-For`, as every proxy in a chain does.
fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    if !headers.contains_key(&X_FORWARDED_FOR) {
        // The usual case: the first hop.
        if let Ok(v) = HeaderValue::from_str(&client.to_string()) {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
        return;
    }
    let joined = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let value = if joined.is_empty() {
        client.to_string()
    } else {
        format!("{joined}, {client}")
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
}

/// Removes the headers that belong to one connection (RFC 9110 §7.6.1),
/// including those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        strip_named_by_connection(headers);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// Removes the headers `Connection` names.
fn strip_named_by_connection(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let t = Duration::from_secs(1);
        assert!(Upstream::new("http://127.0.0.1:9000", t, t, false).is_ok());
        let u = Upstream::new("http://app:9000/api/", t, t, false).unwrap();
        assert_eq!(u.base_path, "/api");
        for bad in [
            "127.0.0.1:9000",
            "https://a:1",
            "http://a:1/?q",
            "not a url",
        ] {
            let e = Upstream::new(bad, t, t, false).err().unwrap();
            assert!(e.starts_with("--upstream"), "{e}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "1.2.3.4".parse().unwrap());
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4");
        append_forwarded_for(&mut h, "5.6.7.8".parse().unwrap());
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 5.6.7.8");
    }
}
