//! Extractors that turn every malformed request into the contract's JSON
//! error naming the field, instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio_stream::StreamExt;

use crate::error::ApiError;
use crate::limits::{self, DRAIN_MAX_BYTES, DRAIN_MAX_TIME, MAX_BODY_BYTES};

/// The `{bucket}` segment of the path, percent-decoded (checked by the app).
pub struct BucketPath(pub String);

impl<St: Send + Sync> FromRequestParts<St> for BucketPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(b)) => Ok(BucketPath(b)),
            Err(e) => Err(ApiError::invalid(
                "bucket_id",
                format!(
                    "bucket_id must be 1..={} characters of [A-Za-z0-9._:-] ({e})",
                    limits::MAX_BUCKET_ID_LEN
                ),
            )),
        }
    }
}

/// A JSON body of type `T`, or `None` when the body is empty or `null`. Any type
/// error names the field by its path (`windows[0].limit`).
pub struct JsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned, St: Send + Sync> FromRequest<St> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &St) -> Result<Self, ApiError> {
        JsonBytes::from_request(req, state)
            .await?
            .parse()
            .map(JsonBody)
    }
}

/// The bytes of a JSON body, read but not yet parsed: for a body type that
/// borrows its strings from them ([`parse`](Self::parse)).
pub struct JsonBytes(Bytes);

impl JsonBytes {
    /// As [`JsonBody`]: `None` when the body is empty or `null`.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<Option<T>, ApiError> {
        // No body, or JSON `null` (what the OpenAPI document's optional
        // bodies allow), means "all defaults".
        let body = self.0.trim_ascii();
        if body.is_empty() || body == b"null" {
            return Ok(None);
        }
        parse_json(&self.0).map(Some)
    }
}

impl<St: Send + Sync> FromRequest<St> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &St) -> Result<Self, ApiError> {
        read_body(req).await.map(JsonBytes)
    }
}

/// The body, at most [`MAX_BODY_BYTES`]. A larger one is a 413 that the
/// client can read: like nginx's lingering close, the rest of the body is
/// read and dropped (at most [`DRAIN_MAX_BYTES`] for [`DRAIN_MAX_TIME`])
/// before the answer, because closing a socket with unread data makes the
/// kernel reset it and a client still sending never sees the 413. A client
/// that waits for `100 Continue` has sent nothing yet and is answered at once.
async fn read_body(req: Request) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge {
        limit: MAX_BODY_BYTES,
    };
    let declared = content_length(req.headers());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64)
        && (expects_continue(req.headers()) || declared > Some(DRAIN_MAX_BYTES as u64))
    {
        // Nothing sent yet, or more than we would ever drain: answer now.
        return Err(too_large());
    }
    let mut body = req.into_body().into_data_stream();
    // The common case, a small body in one chunk, is kept as it came.
    let first = match body.next().await {
        None => return Ok(Bytes::new()),
        Some(chunk) => chunk
            .map_err(|e| ApiError::invalid("body", format!("the body could not be read: {e}")))?,
    };
    if first.len() > MAX_BODY_BYTES {
        drain(body, first.len()).await;
        return Err(too_large());
    }
    let Some(second) = body.next().await else {
        return Ok(first);
    };
    let mut buf = first.to_vec();
    let mut pending = Some(second);
    while let Some(chunk) = match pending.take() {
        Some(c) => Some(c),
        None => body.next().await,
    } {
        let chunk = chunk
            .map_err(|e| ApiError::invalid("body", format!("the body could not be read: {e}")))?;
        if buf.len() + chunk.len() > MAX_BODY_BYTES {
            drain(body, buf.len() + chunk.len()).await;
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Reads and drops the rest of a body, up to the drain bounds.
async fn drain(mut body: axum::body::BodyDataStream, mut read: usize) {
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
        while read <= DRAIN_MAX_BYTES {
            match body.next().await {
                Some(Ok(chunk)) => read += chunk.len(),
                _ => return,
            }
        }
    })
    .await;
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Parses JSON, naming the field at fault in any error.
pub fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    // serde would also read a struct from an array of its fields in order;
    // the contract's bodies are objects only.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid("body", "body must be a JSON object"));
    }
    // The common case, a valid body, without tracking the path; a bad one
    // is read again with it, to name the field.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    if let Ok(value) = T::deserialize(&mut de)
        && de.end().is_ok()
    {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // A number too large for a double is a "syntax" error to serde_json,
        // but it is the field's value that is wrong.
        let detail = inner.to_string();
        let syntax = (inner.is_syntax() || inner.is_eof() || inner.is_io())
            && !detail.starts_with("number out of range");
        limits::from_serde(&path, &detail, syntax)
    })?;
    // Trailing characters after the value make the body malformed too.
    de.end()
        .map_err(|e| limits::from_serde("", &e.to_string(), true))?;
    Ok(value)
}

/// The query string as `T`; unknown parameters are refused, naming them.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, St: Send + Sync> FromRequestParts<St> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let path = e.path().to_string();
                limits::from_serde(&path, &e.into_inner().to_string(), false)
            })
    }
}

fn form_urlencoded_parse(q: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(q.as_bytes())
}
