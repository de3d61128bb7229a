//! Request ids: the one a client gives with allow or acquire (checked and
//! echoed), or one this node makes, `req_<epoch ms>_<n>`.
//!
//! `n` counts the ids this process has made, so two ids made here never
//! agree; the start-time milliseconds keep a restarted node from repeating
//! the ids of its previous run (unless it restarts within the same ms).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::ApiError;
use crate::limits::MAX_REQUEST_ID_BYTES;

/// Ids made by this process so far.
static MADE: AtomicU64 = AtomicU64::new(0);

/// The request's id: `given` if it is valid (1..=128 bytes of printable
/// ASCII), a new one if it is absent, or a 400 naming `request_id`.
pub fn resolve(given: Option<String>) -> Result<String, ApiError> {
    match given {
        Some(id) => check(&id).map(|()| id),
        None => Ok(generate()),
    }
}

/// Checks a client's id: 1..=128 bytes of printable ASCII (space to `~`).
pub fn check(id: &str) -> Result<(), ApiError> {
    let ok = (1..=MAX_REQUEST_ID_BYTES).contains(&id.len())
        && id.bytes().all(|b| (b' '..=b'~').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid("request_id", rule()))
    }
}

/// What `request_id` accepts.
pub fn rule() -> String {
    format!("request_id must be 1..={MAX_REQUEST_ID_BYTES} bytes of printable ASCII (space to ~)")
}

/// A new id, unique among those this node makes: `req_<epoch ms>_<n>`,
/// the milliseconds those of the first id this process made.
pub fn generate() -> String {
    static STARTED_MS: LazyLock<u128> = LazyLock::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    });
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    let (mut ms, mut count) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (ms, n) = (ms.format(*STARTED_MS), count.format(n));
    let mut id = String::with_capacity(5 + ms.len() + n.len());
    id.push_str("req_");
    id.push_str(ms);
    id.push('_');
    id.push_str(n);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_printable_ascii_up_to_128_bytes() {
        for good in ["r1", " ", "~", "a b-c_d:e/f", &"x".repeat(128)] {
            assert_eq!(resolve(Some(good.to_owned())).unwrap(), good);
        }
        for bad in ["", "é", "a\tb", "a\nb", "\u{7f}", &"x".repeat(129)] {
            let e = resolve(Some(bad.to_owned())).unwrap_err();
            assert_eq!(e.field(), Some("request_id"), "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_are_unique_and_valid() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| resolve(None).unwrap()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in &ids {
            assert!(id.starts_with("req_"), "{id}");
            check(id).unwrap();
        }
    }
}
