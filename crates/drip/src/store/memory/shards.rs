//! The keys of a [`KeyedBucket`](super::KeyedBucket): hash tables behind
//! one read-write lock each (as a `DashMap` keeps them), each shard also
//! holding the bucket's policy. A decision reads the policy under the lock
//! it already holds for its key; a change of policy locks every shard
//! (in order) and carries all their keys over before any decision sees it.
//! So no lock but the key's shard is on a decision's path.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::cell::{Cell, Counting, Spills};
use super::config::Config;

/// One shard: its keys, the whole states of those spilled, and the
/// bucket's policy (the same in every shard, changed only with every shard
/// locked).
pub(super) struct Shard<K, N> {
    pub(super) config: Arc<Config>,
    pub(super) keys: HashTable<(K, Cell<N>)>,
    pub(super) spills: Spills,
}

impl<K: Borrow<Q>, Q: Eq + ?Sized, N> FindIn<Q, N> for Shard<K, N> {
    fn find(&self, hash: u64, key: &Q) -> Option<&Cell<N>> {
        self.keys
            .find(hash, |(k, _)| k.borrow() == key)
            .map(|(_, c)| c)
    }
}

/// Looking a key up in a shard by a borrowed form.
pub(super) trait FindIn<Q: ?Sized, N> {
    /// The key's cell, if held.
    fn find(&self, hash: u64, key: &Q) -> Option<&Cell<N>>;
}

/// One shard behind its lock, on cache lines of its own.
type Padded<K, N> = CachePadded<RwLock<Shard<K, N>>>;

/// The shards and the hasher that spreads keys over them.
pub(super) struct Shards<K, N> {
    shards: Box<[Padded<K, N>]>,
    /// SipHash with random keys, as std's maps: keys often come from
    /// clients.
    hasher: RandomState,
    /// `hash >> shift` picks the shard.
    shift: u32,
}

impl<K: Hash + Eq, N: Counting> Shards<K, N> {
    /// Shards for `config`: four per available core, a power of two.
    pub(super) fn new(config: Config) -> Shards<K, N> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = (cores * 4).next_power_of_two().max(2);
        let config = Arc::new(config);
        Shards {
            shards: (0..n)
                .map(|_| {
                    CachePadded::new(RwLock::new(Shard {
                        config: config.clone(),
                        keys: HashTable::new(),
                        spills: Spills::new(),
                    }))
                })
                .collect(),
            hasher: RandomState::new(),
            shift: 64 - n.trailing_zeros(),
        }
    }

    /// The hash of `key` (also of any borrowed form of it).
    #[inline(always)]
    pub(super) fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard of `hash`, shared.
    #[inline(always)]
    pub(super) fn read(&self, hash: u64) -> RwLockReadGuard<'_, Shard<K, N>> {
        self.shards[(hash >> self.shift) as usize].read()
    }

    /// The index of the shard of `hash` (the order joint decisions lock
    /// shards in, see `joint.rs`).
    pub(super) fn index(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    /// The shard at `index`, alone.
    pub(super) fn write_at(&self, index: usize) -> RwLockWriteGuard<'_, Shard<K, N>> {
        self.shards[index].write()
    }

    /// The shard of `hash`, alone.
    pub(super) fn write(&self, hash: u64) -> RwLockWriteGuard<'_, Shard<K, N>> {
        self.shards[(hash >> self.shift) as usize].write()
    }

    /// Inserts a key not held yet into its (locked) shard.
    pub(super) fn insert<'a>(
        &self,
        shard: &'a mut Shard<K, N>,
        hash: u64,
        key: K,
        cell: Cell<N>,
    ) -> &'a mut Cell<N> {
        let entry = shard
            .keys
            .insert_unique(hash, (key, cell), |(k, _)| self.hasher.hash_one(k));
        &mut entry.into_mut().1
    }

    /// The cell of `key` in its (locked) shard's `keys`, made by `make`
    /// when the shard does not hold the key yet (`make` may refuse), in one
    /// probe of the table.
    pub(super) fn find_or_insert<'a, Q, E>(
        &self,
        keys: &'a mut HashTable<(K, Cell<N>)>,
        hash: u64,
        key: &Q,
        make: impl FnOnce() -> Result<Cell<N>, E>,
    ) -> Result<&'a mut Cell<N>, E>
    where
        K: Borrow<Q>,
        Q: Eq + ToOwned<Owned = K> + ?Sized,
    {
        let entry = keys.entry(
            hash,
            |(k, _)| k.borrow() == key,
            |(k, _)| self.hasher.hash_one(k),
        );
        Ok(match entry {
            Entry::Occupied(e) => &mut e.into_mut().1,
            Entry::Vacant(v) => &mut v.insert((key.to_owned(), make()?)).into_mut().1,
        })
    }

    /// Every shard, alone, locked in order (decisions lock one shard at a
    /// time, so this order cannot deadlock with them).
    pub(super) fn write_all(&self) -> Vec<RwLockWriteGuard<'_, Shard<K, N>>> {
        self.shards.iter().map(|s| s.write()).collect()
    }

    /// Runs `f` on each shard in turn, alone.
    pub(super) fn each_alone(&self, mut f: impl FnMut(&mut Shard<K, N>, &BuildHasherOf<'_>)) {
        let hasher = BuildHasherOf(&self.hasher);
        for s in self.shards.iter() {
            f(&mut s.write(), &hasher);
        }
    }

    /// Runs `f` on each shard in turn, shared (decisions on held keys go
    /// on meanwhile; only a new key of the shard waits).
    pub(super) fn each_shared(&self, mut f: impl FnMut(&Shard<K, N>)) {
        for s in self.shards.iter() {
            f(&s.read());
        }
    }

    /// The policy (read from the first shard; all hold the same).
    pub(super) fn config(&self) -> Arc<Config> {
        self.shards[0].read().config.clone()
    }

    /// Keys held now.
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().keys.len()).sum()
    }

    /// Every key moved over to counting with `M` (from zero), each in the
    /// same shard (same hasher); needs the shards alone (owned).
    pub(super) fn recount<M: Counting>(self) -> Shards<K, M> {
        let shards = self
            .shards
            .into_vec()
            .into_iter()
            .map(|s| {
                let shard = CachePadded::into_inner(s).into_inner();
                let mut keys = HashTable::with_capacity(shard.keys.len());
                for (k, cell) in shard.keys {
                    let hash = self.hasher.hash_one(&k);
                    keys.insert_unique(hash, (k, cell.recount::<M>()), |(k, _)| {
                        self.hasher.hash_one(k)
                    });
                }
                CachePadded::new(RwLock::new(Shard {
                    config: shard.config,
                    keys,
                    spills: shard.spills,
                }))
            })
            .collect();
        Shards {
            shards,
            hasher: self.hasher,
            shift: self.shift,
        }
    }
}

/// The hasher, for rehashing a shard's keys when it shrinks.
pub(super) struct BuildHasherOf<'a>(&'a RandomState);

impl BuildHasherOf<'_> {
    pub(super) fn hash<K: Hash>(&self, key: &K) -> u64 {
        self.0.hash_one(key)
    }
}
