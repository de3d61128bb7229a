//! What a worker's call can fail with, and its message for the caller.

use std::path::Path;

use rusqlite::ErrorCode;

use super::*;
use crate::Error;

/// What a worker's call can fail with, before it is given the store's path.
#[derive(Debug)]
pub(super) enum Fail {
    Sql(rusqlite::Error),
    /// Bad data in the file, or a file drip cannot use.
    Invalid(String),
    Drip(Error),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Drip(e)
    }
}

impl Fail {
    pub(super) fn into_error(self, path: &Path, op: &str) -> Error {
        match self {
            Fail::Drip(e) => e,
            Fail::Sql(e) => {
                Error::Store(format!("sqlite {}: {op}: {}", path.display(), explain(&e)))
            }
            Fail::Invalid(what) => Error::Store(format!("sqlite {}: {op}: {what}", path.display())),
        }
    }
}

/// SQLite's message, with a hint for the errors users meet most.
pub(super) fn explain(e: &rusqlite::Error) -> String {
    if is_busy(e) {
        format!("{e} (another connection held the write lock for longer than the busy timeout)")
    } else if e.sqlite_error_code() == Some(ErrorCode::ReadOnly) {
        format!("{e} (the file or its directory is not writable)")
    } else {
        e.to_string()
    }
}
