//! What one request came back as.

use bytes::Bytes;

/// The outcome of one request, as counted in the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted (HTTP 200, gRPC `allowed: true`).
    Admitted {
        /// The status as shown by `--verbose` (`200`, `OK`).
        status: &'static str,
        /// The response body, for `--verbose` (kept as bytes: no copy).
        detail: Bytes,
    },
    /// Refused by the limit (HTTP 429, gRPC `allowed: false`): not an error.
    Rejected {
        /// The status as shown by `--verbose` (`429`, `OK`).
        status: &'static str,
        /// The response body, for `--verbose` (kept as bytes: no copy).
        detail: Bytes,
    },
    /// Anything else: a connection failure, a timeout, another status.
    Error {
        /// The kind, counted apart: `connect`, `timeout`, `http 404`, `grpc NotFound`...
        kind: String,
        /// What was said, for `--verbose`.
        detail: String,
    },
}

impl Outcome {
    /// A gRPC call that failed: counted by its status code.
    pub fn grpc_error(status: &tonic::Status) -> Outcome {
        Outcome::Error {
            kind: format!("grpc {:?}", status.code()),
            detail: status.message().to_string(),
        }
    }

    /// The `--verbose` line of request number `n`:
    /// `13: 429 - {"allowed":false,...}`.
    pub fn line(&self, n: u64) -> String {
        match self {
            Outcome::Admitted { status, detail } | Outcome::Rejected { status, detail } => {
                format!("{n}: {status} - {}", String::from_utf8_lossy(detail))
            }
            Outcome::Error { kind, detail } => format!("{n}: {kind} - {detail}"),
        }
    }
}
