//! [`KeyMap`]: a bucket's keys, in shards whose reads write nothing other
//! threads read, with one atomic read-modify-write per read.
//!
//! A map with one reader-writer lock per shard (DashMap, which governor
//! uses) makes every read two atomic read-modify-writes on that lock's
//! word: threads deciding the same hot key pass the word between their
//! cores on every decision, and a rejected key, which changes nothing, is
//! decided no faster on two threads than on one (BENCHMARKS.md). Here each
//! thread that reads the map owns a reader mark (per map, cache-padded)
//! and each shard has a `writing` flag:
//!
//! - a read stores the shard's number in the thread's mark (one swap: the
//!   store must be seen before the flag is read), reads the flag, and, if
//!   no writer is there, reads the table and clears the mark (a plain
//!   store). If a writer is there it clears the mark, waits on the
//!   writer's mutex and begins again;
//! - a write (a new key, a settle, a sweep) takes the shard's mutex, sets
//!   the flag and waits until no thread's mark names the shard.
//!
//! Each side stores before it loads the other's word, both sequentially
//! consistent: at least one sees the other, so a reader and a writer are
//! never in a shard at once (Dekker's argument). A rejected key's decision
//! then writes only its own thread's mark, and a read costs one swap where
//! a lock costs two read-modify-writes (BENCHMARKS.md). Writes cost a scan
//! of the marks of the threads that read the map; they are the rare case
//! (a key's first decision, or its first after a change of policy). A
//! thread's first read of a map adds its mark to every shard's list of
//! marks, under the shard's mutex (`register`): a write sees every mark
//! added before it, and a thread whose mark it missed reads only after it.
//!
//! Reads of one map must not nest on a thread (a thread has one mark per
//! map), nor may a thread write a shard it reads: the map's callers in
//! this module never do either. (Marks are found through the
//! `thread_local` crate's thread ids, which a thread gives back when it
//! exits: a read from a thread-local destructor that runs after that
//! crate's own would panic there, as `thread_local` does.)

use std::borrow::Borrow;
use std::cell::UnsafeCell;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};

use crossbeam_utils::{Backoff, CachePadded};
use hashbrown::HashTable;
use hashbrown::hash_table;
use parking_lot::Mutex;
use thread_local::ThreadLocal;

/// Shards at most.
const MAX_SHARDS: usize = 64;

/// One shard: its keys and values, and what keeps readers and writers apart.
struct Shard<K, V> {
    /// Set while a writer holds the shard or waits for its readers.
    writing: AtomicBool,
    /// The marks of the threads that read the map, held by a writer from
    /// before it sets `writing` until after it clears it: writers take
    /// turns, and readers that met one wait here.
    writer: Mutex<Vec<Mark>>,
    table: UnsafeCell<HashTable<(K, V)>>,
}

// SAFETY: the table is read only under the read protocol (no writer in the
// shard) or `writer`, and changed only by a writer that saw no reader: as
// `RwLock<HashTable<(K, V)>>`, which is `Sync` for `K, V: Send + Sync`.
unsafe impl<K: Send + Sync, V: Send + Sync> Sync for Shard<K, V> {}

/// A reading thread's mark, in its map's `readers`.
struct Mark(NonNull<AtomicUsize>);

// SAFETY: a mark is an atomic, in the map's `readers`, which keeps every
// thread's value until the map is dropped (a thread's value passes on to
// the next thread given its id); shards, which hold `Mark`s, go first.
unsafe impl Send for Mark {}
unsafe impl Sync for Mark {}

pub(super) struct KeyMap<K, V> {
    shards: Box<[CachePadded<Shard<K, V>>]>,
    /// Each reading thread's mark: 1 + the number of the shard it reads
    /// now, or 0.
    readers: ThreadLocal<CachePadded<AtomicUsize>>,
    /// SipHash with random keys, as std's maps: keys often come from
    /// clients (addresses, user names), who must not be able to choose
    /// keys that collide.
    hasher: RandomState,
    /// A hash's shard is its bits below the seven hashbrown keeps in its
    /// control bytes: `(hash << 7) >> shift`.
    shift: u32,
}

/// A key's hash in one map (`KeyMap::key_hash`).
#[derive(Clone, Copy)]
pub(super) struct KeyHash(u64);

/// A key's place in the map, alone in its shard.
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

/// Clears a reader's mark when its read ends, even by a panic.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.store(0, Release);
    }
}

/// Clears a shard's `writing` when its write ends, even by a panic.
struct Written<'a>(&'a AtomicBool);

impl Drop for Written<'_> {
    fn drop(&mut self) {
        self.0.store(false, Release);
    }
}

impl<K: Hash + Eq, V> KeyMap<K, V> {
    pub(super) fn new() -> Self {
        // As many shards as DashMap's default (four per core) up to a cap:
        // reads do not contend, so shards only keep writers on different
        // keys apart.
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let n = (4 * cores).next_power_of_two().clamp(4, MAX_SHARDS);
        KeyMap {
            shards: (0..n)
                .map(|_| {
                    CachePadded::new(Shard {
                        writing: AtomicBool::new(false),
                        writer: Mutex::new(Vec::new()),
                        table: UnsafeCell::new(HashTable::new()),
                    })
                })
                .collect(),
            readers: ThreadLocal::new(),
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
    fn shard_of(&self, hash: u64) -> usize {
        ((hash << 7) >> self.shift) as usize
    }

    /// `key`'s hash in this map, for [`read_hashed`](Self::read_hashed) and
    /// [`write_hashed`](Self::write_hashed): a key read, then written, is
    /// hashed once.
    #[inline(always)]
    pub(super) fn key_hash<Q: Hash + ?Sized>(&self, key: &Q) -> KeyHash {
        KeyHash(self.hash(key))
    }

    /// `f` of `key`'s value, with no writer in its shard meanwhile; `None`
    /// if the key is absent.
    #[inline(always)]
    pub(super) fn read<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.read_hashed(self.key_hash(key), key, f)
    }

    /// [`read`](Self::read) of a key whose hash is `hash`.
    #[inline(always)]
    pub(super) fn read_hashed<Q, R>(
        &self,
        KeyHash(hash): KeyHash,
        key: &Q,
        f: impl FnOnce(&V) -> R,
    ) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.shard_of(hash);
        let _leave = self.enter(i);
        // SAFETY: `enter` returned with this thread's mark naming shard
        // `i` and no writer in it; until `_leave` clears the mark, a writer
        // waits (see the module's comment).
        let table = unsafe { &*self.shards[i].table.get() };
        table
            .find(hash, |(k, _)| k.borrow() == key)
            .map(|(_, v)| f(v))
    }

    /// Marks this thread as reading shard `i` once no writer is in it.
    #[inline(always)]
    fn enter(&self, i: usize) -> Leave<'_> {
        let mine = match self.readers.get() {
            Some(mark) => mark,
            None => self.register(),
        };
        debug_assert_eq!(mine.load(Relaxed), 0, "reads of a map nest");
        loop {
            mine.store(i + 1, SeqCst);
            if !self.shards[i].writing.load(SeqCst) {
                return Leave(mine);
            }
            mine.store(0, Release);
            self.wait_for_writer(i);
        }
    }

    #[cold]
    #[inline(never)]
    fn wait_for_writer(&self, i: usize) {
        drop(self.shards[i].writer.lock());
    }

    /// This thread's first read: its mark, made and added to every
    /// shard's list.
    #[cold]
    #[inline(never)]
    fn register(&self) -> &AtomicUsize {
        let mine = self.readers.get_or_default();
        for shard in self.shards.iter() {
            shard.writer.lock().push(Mark(NonNull::from(&**mine)));
        }
        mine
    }

    /// `f` of shard `i`'s table, alone in it.
    fn exclusive<R>(&self, i: usize, f: impl FnOnce(&mut HashTable<(K, V)>) -> R) -> R {
        let shard = &self.shards[i];
        let marks = shard.writer.lock();
        shard.writing.store(true, SeqCst);
        let _written = Written(&shard.writing);
        for Mark(mark) in marks.iter() {
            // SAFETY: see `Mark`.
            let mark = unsafe { mark.as_ref() };
            let backoff = Backoff::new();
            while mark.load(SeqCst) == i + 1 {
                backoff.snooze();
            }
        }
        // SAFETY: every reader that marked shard `i` before `writing` was
        // set has left it, and every later one sees `writing` and waits
        // for `writer`, held here; other writers wait for it too.
        f(unsafe { &mut *shard.table.get() })
    }

    /// `f` of shard `i`'s table with no writer in it (readers may be).
    fn shared<R>(&self, i: usize, f: impl FnOnce(&HashTable<(K, V)>) -> R) -> R {
        let _turn = self.shards[i].writer.lock();
        // SAFETY: a writer changes the table only while holding `writer`.
        f(unsafe { &*self.shards[i].table.get() })
    }

    /// `f` of `key`'s entry, alone in its shard.
    #[cfg(test)]
    pub(super) fn write<Q, R>(&self, key: &Q, f: impl FnOnce(Entry<'_, K, V>) -> R) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.write_hashed(self.key_hash(key), key, f)
    }

    /// [`write`](Self::write) of a key whose hash is `hash`.
    pub(super) fn write_hashed<Q, R>(
        &self,
        KeyHash(hash): KeyHash,
        key: &Q,
        f: impl FnOnce(Entry<'_, K, V>) -> R,
    ) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.exclusive(self.shard_of(hash), |table| {
            let entry = table.entry(hash, |(k, _)| k.borrow() == key, |(k, _)| self.hash(k));
            f(match entry {
                hash_table::Entry::Occupied(e) => Entry::Occupied(&mut e.into_mut().1),
                hash_table::Entry::Vacant(e) => Entry::Vacant(Vacant(e)),
            })
        })
    }

    /// `f` of every value, shard by shard with no writer in it (readers go
    /// on; keys come and go meanwhile in the shards not being read).
    pub(super) fn for_each(&self, mut f: impl FnMut(&V)) {
        for i in 0..self.shards.len() {
            self.shared(i, |table| table.iter().for_each(|(_, v)| f(v)));
        }
    }

    /// Keeps the values for which `f` is true, shard by shard, alone in
    /// each, and gives the memory of the rest back. Returns how many were
    /// removed.
    pub(super) fn retain(&self, mut f: impl FnMut(&mut V) -> bool) -> usize {
        let mut removed = 0;
        for i in 0..self.shards.len() {
            self.exclusive(i, |table| {
                let before = table.len();
                table.retain(|(_, v)| f(v));
                if table.len() < before {
                    removed += before - table.len();
                    table.shrink_to_fit(|(k, _)| self.hash(k));
                }
            });
        }
        removed
    }

    /// Keys held now.
    pub(super) fn len(&self) -> usize {
        (0..self.shards.len())
            .map(|i| self.shared(i, HashTable::len))
            .sum()
    }
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

    #[test]
    fn a_writer_is_never_in_a_shard_with_a_reader() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
        use std::time::{Duration, Instant};

        // Keys of one shard: two writers, or a reader and a writer, meet
        // in it; readers are new threads again and again, so marks are
        // registered while writers scan.
        let map = KeyMap::<u64, u64>::new();
        let keys: Vec<u64> = (0..)
            .filter(|k| map.shard_of(map.hash(k)) == 0)
            .take(128)
            .collect();
        let keys = &keys;
        let readers_in = AtomicUsize::new(0);
        let writer_in = AtomicBool::new(false);
        let (reads, writes) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let until = Instant::now() + Duration::from_millis(600);
        let spin = || (0..50).for_each(|_| std::hint::spin_loop());
        std::thread::scope(|s| {
            for t in 0..2u64 {
                let (map, writer_in, readers_in, writes) = (&map, &writer_in, &readers_in, &writes);
                s.spawn(move || {
                    let mut i = 0;
                    while Instant::now() < until {
                        i += 1;
                        // New keys (the table grows), then removals.
                        let key = keys[(i % 64 + t * 64) as usize];
                        map.write(&key, |e| {
                            assert!(!writer_in.swap(true, SeqCst), "two writers");
                            assert_eq!(readers_in.load(SeqCst), 0, "a reader is in");
                            spin();
                            assert_eq!(readers_in.load(SeqCst), 0, "a reader came in");
                            if let Entry::Vacant(v) = e {
                                v.insert(key, i);
                            }
                            writer_in.store(false, SeqCst);
                        });
                        if i % 256 == 0 {
                            map.retain(|v| *v % 2 == 0);
                        }
                        writes.fetch_add(1, SeqCst);
                    }
                });
            }
            for _ in 0..2 {
                let (map, writer_in, readers_in, reads) = (&map, &writer_in, &readers_in, &reads);
                s.spawn(move || {
                    while Instant::now() < until {
                        // A fresh thread each round: its first read registers.
                        std::thread::scope(|s| {
                            s.spawn(|| {
                                for k in 0..2000u64 {
                                    map.read(&keys[k as usize % 128], |_| {
                                        readers_in.fetch_add(1, SeqCst);
                                        assert!(!writer_in.load(SeqCst), "a writer is in");
                                        spin();
                                        assert!(!writer_in.load(SeqCst), "a writer came in");
                                        readers_in.fetch_sub(1, SeqCst);
                                    });
                                    reads.fetch_add(1, SeqCst);
                                }
                            });
                        });
                    }
                });
            }
        });
        // Both sides must have run a lot for the test to mean anything.
        assert!(writes.load(SeqCst) > 1000, "{writes:?} writes");
        assert!(reads.load(SeqCst) > 10_000, "{reads:?} reads");
    }
}
