//! The key a request is limited under (`--key`).

use std::net::IpAddr;

use http::StatusCode;
use http::request::Parts;

use super::args::KeySpec;
use super::respond::Refusal;
use crate::limits::MAX_KEY_BYTES;

/// The key of the request `parts` from `client`.
pub fn key(spec: &KeySpec, client: IpAddr, parts: &Parts) -> Result<String, Refusal> {
    let key = match spec {
        KeySpec::Ip => client.to_string(),
        KeySpec::Const => String::new(),
        KeySpec::Path => parts.uri.path().to_owned(),
        // Requests without the header share the empty key.
        KeySpec::Header(name) => parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
    };
    if key.len() > MAX_KEY_BYTES {
        let what = match spec {
            KeySpec::Header(name) => format!("the {name} header"),
            _ => "the path".to_owned(),
        };
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_key",
            format!("{what} is the rate-limit key and must be at most {MAX_KEY_BYTES} bytes"),
        ));
    }
    Ok(key)
}
