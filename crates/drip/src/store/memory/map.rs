//! [`KeyMap`]: a bucket's keys, in shards whose reads write nothing other
//! threads read.
//!
//! A map with one reader-writer lock per shard (DashMap, which governor
//! uses) makes every read a write to that lock's word: threads deciding the
//! same hot key pass the word between their cores on every decision, and
//! a rejected key, which changes nothing, is decided no faster on two
//! threads than on one (BENCHMARKS.md). Here each shard is a hash table
//! behind a [`ShardedLock`]: a reader takes one of its eight read locks,
//! chosen by the reader's thread, and a writer (a new key, a settle, a
//! sweep) takes all eight. Reads on different threads then touch
//! different lock words (up to eight threads; more share them), and a
//! rejected key's decision writes no shared memory at all. Writes cost a few more atomic operations each; they are
//! the rare case (a key's first decision, or its first after a change of
//! policy).

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::PoisonError;

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use hashbrown::HashTable;
use hashbrown::hash_table;

/// Shards at most: each holds eight cache-padded locks (1 KiB).
const MAX_SHARDS: usize = 64;

/// One shard: its keys and their values.
type Shard<K, V> = ShardedLock<HashTable<(K, V)>>;

pub(super) struct KeyMap<K, V> {
    shards: Box<[Shard<K, V>]>,
    /// SipHash with random keys, as std's maps: keys often come from
    /// clients (addresses, user names), who must not be able to choose
    /// keys that collide.
    hasher: RandomState,
    /// A hash's shard is its bits below the seven hashbrown keeps in its
    /// control bytes: `(hash << 7) >> shift`.
    shift: u32,
}

/// A key's place in the map under its shard's write lock.
pub(super) enum Entry<'a, K, V> {
    Occupied(&'a mut V),
    Vacant(Vacant<'a, K, V>),
}

/// A missing key's place.
pub(super) struct Vacant<'a, K, V>(hash_table::VacantEntry<'a, (K, V)>);

impl<'a, K, V> Vacant<'a, K, V> {
    pub(super) fn insert(self, key: K, value: V) -> &'a mut V {
        &mut self.0.insert((key, value)).into_mut().1
    }
}

impl<K: Hash + Eq, V> KeyMap<K, V> {
    pub(super) fn new() -> Self {
        // As many shards as DashMap's default (four per core) up to a cap:
        // with reads spread over each shard's locks, shards only keep
        // writers on different keys apart.
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let n = (4 * cores).next_power_of_two().clamp(4, MAX_SHARDS);
        KeyMap {
            shards: (0..n).map(|_| ShardedLock::new(HashTable::new())).collect(),
            hasher: RandomState::new(),
            shift: 64 - n.trailing_zeros(),
        }
    }

    /// Written out: `hash_one` was left out of line in the hot path here.
    #[inline(always)]
    #[allow(clippy::manual_hash_one)]
    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        let mut h = self.hasher.build_hasher();
        key.hash(&mut h);
        h.finish()
    }

    #[inline(always)]
    fn shard(&self, hash: u64) -> &Shard<K, V> {
        &self.shards[((hash << 7) >> self.shift) as usize]
    }

    /// `f` of `key`'s value, under a read lock of its shard; `None` if the
    /// key is absent.
    #[inline(always)]
    pub(super) fn read<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        let table = read(self.shard(hash));
        table
            .find(hash, |(k, _)| k.borrow() == key)
            .map(|(_, v)| f(v))
    }

    /// `f` of `key`'s entry, under its shard's write lock.
    pub(super) fn write<Q, R>(&self, key: &Q, f: impl FnOnce(Entry<'_, K, V>) -> R) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        let mut table = write(self.shard(hash));
        let entry = table.entry(hash, |(k, _)| k.borrow() == key, |(k, _)| self.hash(k));
        f(match entry {
            hash_table::Entry::Occupied(e) => Entry::Occupied(&mut e.into_mut().1),
            hash_table::Entry::Vacant(e) => Entry::Vacant(Vacant(e)),
        })
    }

    /// `f` of every value, shard by shard under read locks (keys come and
    /// go meanwhile in the shards not being read).
    pub(super) fn for_each(&self, mut f: impl FnMut(&V)) {
        for shard in &self.shards {
            read(shard).iter().for_each(|(_, v)| f(v));
        }
    }

    /// Keeps the values for which `f` is true, shard by shard under write
    /// locks, and gives the memory of the rest back. Returns how many were
    /// removed.
    pub(super) fn retain(&self, mut f: impl FnMut(&mut V) -> bool) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut table = write(shard);
            let before = table.len();
            table.retain(|(_, v)| f(v));
            if table.len() < before {
                removed += before - table.len();
                table.shrink_to_fit(|(k, _)| self.hash(k));
            }
        }
        removed
    }

    /// Keys held now.
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| read(s).len()).sum()
    }
}

// A panic under a lock leaves a table whole (hashbrown's operations are
// panic-safe), so a poisoned lock is used as it is.
#[inline(always)]
pub(super) fn read<T>(lock: &ShardedLock<T>) -> ShardedLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn write<T>(lock: &ShardedLock<T>) -> ShardedLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_changed_and_removed_in_every_shard() {
        let map = KeyMap::<String, u64>::new();
        for i in 0..1000u64 {
            map.write(&*format!("k{i}"), |e| match e {
                Entry::Vacant(v) => *v.insert(format!("k{i}"), i),
                Entry::Occupied(_) => panic!("k{i} is new"),
            });
        }
        assert_eq!(map.len(), 1000);
        map.write("k7", |e| match e {
            Entry::Occupied(v) => *v += 1000,
            Entry::Vacant(_) => panic!("k7 is held"),
        });
        assert_eq!(map.read("k7", |v| *v), Some(1007));
        assert_eq!(map.read("k1000", |v| *v), None);
        let mut sum = 0;
        map.for_each(|v| sum += v);
        assert_eq!(sum, (0..1000).sum::<u64>() + 1000);
        assert_eq!(map.retain(|v| *v % 2 == 0), 500);
        assert_eq!(map.len(), 500);
        assert_eq!(map.read("k8", |v| *v), Some(8));
        assert_eq!(map.read("k9", |v| *v), None);
    }
}
