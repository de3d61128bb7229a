//! The configurations a node has seen, with their versions, and the
//! deletions (tombstones), so the leader can write them back when Redis
//! comes back empty (DESIGN.md §5). Newest version wins; at equal versions
//! a deletion wins.

use std::collections::BTreeMap;

use drip::Policy;
use parking_lot::Mutex;

/// One bucket as last seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The configuration's version (the bucket's version counter).
    pub version: u64,
    /// Its generation (names its keys' state; kept so a restored policy
    /// reads the same state keys as the nodes' caches).
    pub generation: String,
    /// The policy text ([`Policy::encode`]), or `None` once deleted.
    pub text: Option<String>,
}

impl Entry {
    /// True when `self` should replace `old`.
    fn newer_than(&self, old: &Entry) -> bool {
        self.version > old.version
            || (self.version == old.version && self.text.is_none() && old.text.is_some())
    }
}

/// Every bucket this node has seen, by name.
#[derive(Debug, Default)]
pub struct Remembered {
    map: Mutex<BTreeMap<String, Entry>>,
}

impl Remembered {
    /// Nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `entry` for `bucket` if it is newer than what is kept; true
    /// if it was.
    pub fn merge(&self, bucket: &str, entry: Entry) -> bool {
        let mut map = self.map.lock();
        match map.get(bucket) {
            Some(old) if !entry.newer_than(old) => false,
            _ => {
                map.insert(bucket.to_owned(), entry);
                true
            }
        }
    }

    /// What is kept for `bucket`.
    pub fn get(&self, bucket: &str) -> Option<Entry> {
        self.map.lock().get(bucket).cloned()
    }

    /// Everything kept, by name.
    pub fn snapshot(&self) -> Vec<(String, Entry)> {
        self.map
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// How many configurations and deletions are kept.
    pub fn counts(&self) -> (u64, u64) {
        let map = self.map.lock();
        let live = map.values().filter(|e| e.text.is_some()).count() as u64;
        (live, map.len() as u64 - live)
    }

    /// The live policy of `bucket`, if it is kept and not deleted.
    pub fn policy(&self, bucket: &str) -> Option<Policy> {
        let text = self.get(bucket)?.text?;
        Policy::decode(&text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(version: u64, text: Option<&str>) -> Entry {
        Entry {
            version,
            generation: version.to_string(),
            text: text.map(str::to_owned),
        }
    }

    #[test]
    fn newest_wins_and_a_deletion_beats_its_own_version() {
        let r = Remembered::new();
        assert!(r.merge("a", e(2, Some("x"))));
        assert!(!r.merge("a", e(1, Some("y"))));
        assert!(r.merge("a", e(2, None)));
        assert!(!r.merge("a", e(2, Some("x"))));
        assert!(r.merge("a", e(3, Some("z"))));
        assert_eq!(r.get("a"), Some(e(3, Some("z"))));
    }
}
