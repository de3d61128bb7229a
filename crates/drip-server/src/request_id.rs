//! Request ids: the one a client gives with allow or acquire (checked and
//! echoed), or one this node makes, `req_<epoch ms>_<n>`.
//!
//! `n` is unique among the ids this process makes: each thread takes a
//! block of [`BLOCK`] numbers from one shared counter and hands them out
//! itself, so only one id in `BLOCK` writes to memory other threads use;
//! kept inline ([`RequestId::Made`]), an id allocates nothing. Ids made on
//! different threads are unique, not in order. The start-time
//! milliseconds keep a restarted node from repeating the ids of its
//! previous run (unless it restarts within the same ms).

use std::cell::Cell;
use std::fmt;
use std::ops::Deref;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arrayvec::ArrayString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ApiError;
use crate::limits::MAX_REQUEST_ID_BYTES;

/// Numbers a thread takes at once for the ids it makes.
const BLOCK: u64 = 1024;

/// The first number no thread has taken yet.
static TAKEN: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's next number and the end of its block.
    static NEXT: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Room for the longest id made here: `req_`, two `u64`s and a `_`.
const MADE_BYTES: usize = 48;

/// A request's id: the client's, or one this node made (inline). Reads as
/// a `&str`; serialized as a JSON string.
#[derive(Clone, PartialEq, Eq)]
pub enum RequestId {
    /// The id the client gave (checked), or read back from an answer.
    Given(String),
    /// An id this node made.
    Made(ArrayString<MADE_BYTES>),
}

impl Deref for RequestId {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            RequestId::Given(s) => s,
            RequestId::Made(s) => s,
        }
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::Given(String::new())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl PartialEq<&str> for RequestId {
    fn eq(&self, other: &&str) -> bool {
        **self == **other
    }
}

impl From<String> for RequestId {
    fn from(s: String) -> Self {
        RequestId::Given(s)
    }
}

impl From<RequestId> for String {
    fn from(id: RequestId) -> String {
        match id {
            RequestId::Given(s) => s,
            RequestId::Made(s) => s.as_str().to_owned(),
        }
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self)
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(RequestId::Given)
    }
}

/// The request's id: `given` if it is valid (1..=128 bytes of printable
/// ASCII), a new one if it is absent, or a 400 naming `request_id`.
pub fn resolve(given: Option<String>) -> Result<RequestId, ApiError> {
    match given {
        Some(id) => check(&id).map(|()| RequestId::Given(id)),
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
pub fn generate() -> RequestId {
    static STARTED_MS: LazyLock<u64> = LazyLock::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    });
    let (mut ms, mut n) = (itoa::Buffer::new(), itoa::Buffer::new());
    let mut id = ArrayString::new();
    // 4 + 20 + 1 + 20 bytes at most: always fits.
    for part in ["req_", ms.format(*STARTED_MS), "_", n.format(next_number())] {
        id.push_str(part);
    }
    RequestId::Made(id)
}

/// The next number of this thread's block (a new block when it is used up).
fn next_number() -> u64 {
    NEXT.with(|next| {
        let (mut n, mut end) = next.get();
        if n == end {
            n = TAKEN.fetch_add(BLOCK, Ordering::Relaxed);
            end = n + BLOCK;
        }
        next.set((n + 1, end));
        n
    })
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
    fn generated_ids_are_unique_valid_and_inline() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|_| {
                let id = resolve(None).unwrap();
                assert!(matches!(id, RequestId::Made(_)), "{id:?}");
                id.into()
            })
            .collect();
        assert_eq!(ids.len(), 10_000);
        for id in &ids {
            assert!(id.starts_with("req_"), "{id}");
            check(id).unwrap();
        }
    }

    #[test]
    fn ids_made_on_many_threads_at_once_are_unique() {
        // Each thread crosses several blocks, and the threads take theirs
        // from the one counter at the same time.
        let per_thread = 3 * BLOCK as usize + 7;
        let barrier = std::sync::Barrier::new(4);
        let ids: Vec<String> = std::thread::scope(|s| {
            let made: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        (0..per_thread)
                            .map(|_| String::from(generate()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            made.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), 4 * per_thread);
    }

    #[test]
    fn serializes_as_a_string_and_reads_back() {
        let made = generate();
        let json = serde_json::to_string(&made).unwrap();
        assert_eq!(json, format!("\"{made}\""));
        let back: RequestId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, &*made);
        assert_eq!(String::from(back), made.to_string());
    }
}
