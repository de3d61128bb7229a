//! What one request came back as.

/// The outcome of one request, as counted in the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted (HTTP 200, gRPC `allowed: true`).
    Admitted {
        /// The status as shown by `--verbose` (`200`, `OK`).
        status: &'static str,
        /// The response body, for `--verbose`.
        detail: String,
    },
    /// Refused by the limit (HTTP 429, gRPC `allowed: false`): not an error.
    Rejected {
        /// The status as shown by `--verbose` (`429`, `OK`).
        status: &'static str,
        /// The response body, for `--verbose`.
        detail: String,
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
    /// The `--verbose` line of request number `n`:
    /// `13: 429 - {"allowed":false,...}`.
    pub fn line(&self, n: u64) -> String {
        match self {
            Outcome::Admitted { status, detail } | Outcome::Rejected { status, detail } => {
                format!("{n}: {status} - {detail}")
            }
            Outcome::Error { kind, detail } => format!("{n}: {kind} - {detail}"),
        }
    }
}
