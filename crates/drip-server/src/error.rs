//! The errors the server answers with, and how each becomes an HTTP
//! response (`{"error": {"code", "field", "message"}}`) or a gRPC `Status`.
//!
//! Being rate limited is not an error: a 429 is a decision, written by the
//! handlers. Internal errors become 500 / `INTERNAL` without their text,
//! which is logged instead.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::model::{ErrorBody, ErrorDetail};

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_argument` (gRPC `INVALID_ARGUMENT`): an input outside its
    /// accepted range; `message` names `field` and the range.
    #[error("{message}")]
    InvalidArgument {
        /// The input, e.g. `capacity` or `windows[0].limit`.
        field: String,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// 401 `unauthenticated` (gRPC `UNAUTHENTICATED`): an admin call without
    /// the right `Authorization: Bearer` token.
    #[error("this call needs the admin token: Authorization: Bearer <token>")]
    Unauthenticated,
    /// 404 `not_found` (gRPC `NOT_FOUND`): no bucket of that name.
    #[error("no bucket named {0:?}")]
    UnknownBucket(String),
    /// 404 `not_found`: no such path.
    #[error("no such path: {0}")]
    NoRoute(String),
    /// 405 `method_not_allowed`: the path exists, the method does not (the
    /// `Allow` header lists those it accepts).
    #[error("method {method} is not allowed on {path}; the Allow header lists those that are")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The path asked for.
        path: String,
    },
    /// 413 `payload_too_large`: the body is over the size limit.
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 503 `key_limit` (gRPC `RESOURCE_EXHAUSTED`): a new key while the
    /// memory store holds its `--max-keys`; keys it holds keep working.
    #[error("{}", crate::key_cap::refusal(*limit))]
    KeyLimit {
        /// The cap.
        limit: usize,
    },
    /// 503 `unavailable` (gRPC `UNAVAILABLE`): the store could not be
    /// reached.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// 503 `shutting_down` (gRPC `UNAVAILABLE`): the server is stopping and
    /// answers waiting requests before it does.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// 500 `internal` (gRPC `INTERNAL`): a bug; the text is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::UnknownBucket(_) | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) | ApiError::ShuttingDown | ApiError::KeyLimit { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable `code` of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument { .. } => "invalid_argument",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::UnknownBucket(_) | ApiError::NoRoute(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::KeyLimit { .. } => "key_limit",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The input the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::InvalidArgument { field, .. } => Some(field),
            ApiError::Unauthenticated => Some("authorization"),
            ApiError::UnknownBucket(_) => Some("bucket_id"),
            ApiError::KeyLimit { .. } => Some("key"),
            ApiError::PayloadTooLarge { .. } => Some("body"),
            _ => None,
        }
    }

    /// The message sent to the client: internal and store details (which
    /// may name hosts) stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => "internal error".to_owned(),
            // A known outage names its cause (written without hosts).
            ApiError::Unavailable(text) if text.contains("on_store_error") => {
                format!("{text}; try again later")
            }
            ApiError::Unavailable(_) => "the store is unavailable; try again later".to_owned(),
            e => e.to_string(),
        }
    }

    /// The JSON body of the error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                field: self.field().map(str::to_owned),
                message: self.public_message(),
            },
        }
    }
}

impl From<drip::Error> for ApiError {
    fn from(e: drip::Error) -> Self {
        use drip::Error as E;
        match e {
            E::Config(c) => ApiError::InvalidArgument {
                field: c.field,
                message: c.message,
            },
            E::UnknownBucket(b) => ApiError::UnknownBucket(b),
            E::KeyLimit { limit } => ApiError::KeyLimit { limit },
            E::Store(_) | E::Unsupported(_) => ApiError::Unavailable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(text) = &self {
            tracing::error!(error = %text, "internal error");
        }
        let mut res = (self.status(), Json(self.body())).into_response();
        if matches!(self, ApiError::Unauthenticated) {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        use tonic::Code;
        let code = match &e {
            ApiError::InvalidArgument { .. } => Code::InvalidArgument,
            ApiError::Unauthenticated => Code::Unauthenticated,
            ApiError::UnknownBucket(_) | ApiError::NoRoute(_) => Code::NotFound,
            ApiError::MethodNotAllowed { .. } => Code::Unimplemented,
            ApiError::PayloadTooLarge { .. } | ApiError::KeyLimit { .. } => Code::ResourceExhausted,
            ApiError::Unavailable(_) | ApiError::ShuttingDown => Code::Unavailable,
            ApiError::Internal(text) => {
                tracing::error!(error = %text, "internal error");
                Code::Internal
            }
        };
        let mut status = tonic::Status::new(code, e.public_message());
        // The field travels as metadata too, so clients need not parse text.
        if let Some(field) = e.field()
            && let Ok(v) = field.parse()
        {
            status.metadata_mut().insert("drip-field", v);
        }
        status
    }
}
