//! Who the client is: the peer address, or, behind `N` trusted proxies
//! (`--trust-forwarded N`), the N-th address from the right of
//! `X-Forwarded-For` (else of `Forwarded: for=`).
//!
//! Each proxy appends the address it received the request from, so the
//! last `N` entries were written by proxies we trust and the one they name
//! first is the client; anything left of it was written by the client and
//! is ignored. With `N = 0` the headers are never read: a client cannot pick
//! its own key.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::FORWARDED;

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// The client's address for a request from `peer` with `headers`.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: usize) -> IpAddr {
    let peer_ip = canonical(peer.ip());
    if trusted == 0 {
        return peer_ip;
    }
    let mut hops = forwarded_for(headers);
    if hops.is_empty() {
        hops = forwarded(headers);
    }
    if hops.is_empty() {
        return peer_ip;
    }
    // Fewer hops than trusted proxies: the chain was shorter than
    // configured, and its first entry is the earliest address known.
    let i = hops.len().saturating_sub(trusted);
    hops[i].map(canonical).unwrap_or(peer_ip)
}

/// The entries of every `X-Forwarded-For` line, in order (`None` for one
/// that is not an address).
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(parse_node)
        .collect()
}

/// The `for=` parameters of every `Forwarded` element (RFC 7239), in order.
fn forwarded(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(FORWARDED)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(v.trim()))
            })
        })
        .collect()
}

/// An address as the headers write it: `1.2.3.4`, `1.2.3.4:80`,
/// `"[2001:db8::1]:80"`, `2001:db8::1`.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim_matches('"');
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.split(']').next())
        .and_then(|r| r.parse().ok())
}

/// IPv4-mapped IPv6 addresses as IPv4, so one client has one key.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const PEER: &str = "10.0.0.9:5000";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_headers_are_ignored() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(client_ip(PEER.parse().unwrap(), &h, 0), ip("10.0.0.9"));
    }

    #[test]
    fn the_nth_hop_from_the_right() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        let peer = PEER.parse().unwrap();
        assert_eq!(client_ip(peer, &h, 1), ip("2.2.2.2"));
        assert_eq!(client_ip(peer, &h, 2), ip("1.1.1.1"));
        assert_eq!(client_ip(peer, &h, 9), ip("6.6.6.6"));
        let h = headers(&[("x-forwarded-for", "junk")]);
        assert_eq!(client_ip(peer, &h, 1), ip("10.0.0.9"));
    }

    #[test]
    fn forwarded_for_parameters() {
        let h = headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=http, for=\"[2001:db8:cafe::17]:4711\"",
        )]);
        let peer = PEER.parse().unwrap();
        assert_eq!(client_ip(peer, &h, 1), ip("2001:db8:cafe::17"));
        assert_eq!(client_ip(peer, &h, 2), ip("192.0.2.60"));
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let peer = "[::ffff:127.0.0.1]:80".parse().unwrap();
        assert_eq!(client_ip(peer, &HeaderMap::new(), 0), ip("127.0.0.1"));
    }
}
