//! Heap bytes per idle key: drip's `KeyedBucket` beside governor's keyed
//! limiter, and what is left after the keys drain and are swept.
//!
//! A counting global allocator tracks the bytes requested from the system
//! allocator (allocator headers and rounding are not included). Each case
//! inserts `N` keys with one check each, lets the clock pass until every
//! bucket is empty, sweeps (drip `sweep`, governor `retain_recent`), and
//! reports the bytes still held. Keys are formatted into a reused buffer
//! made before the first measurement, so only what the limiter holds counts.
//!
//! Run: `cargo bench -p drip --bench memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use drip::{KeyedBucket, Limit, ManualClock, Policy, Rate};
use governor::clock::FakeRelativeClock;
use governor::{Quota, RateLimiter};

/// Keys inserted per case.
const N: u64 = 100_000;

/// Counts the bytes and allocations live on the heap.
struct Counting;

static BYTES: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` with the caller's arguments;
// the counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap bytes and allocations live now.
#[derive(Clone, Copy)]
struct Heap {
    bytes: isize,
    allocs: isize,
}

impl Heap {
    fn now() -> Heap {
        Heap {
            bytes: BYTES.load(Ordering::Relaxed),
            allocs: ALLOCS.load(Ordering::Relaxed),
        }
    }

    fn since(self, base: Heap) -> Heap {
        Heap {
            bytes: self.bytes - base.bytes,
            allocs: self.allocs - base.allocs,
        }
    }
}

/// What one case measured, relative to the heap before the limiter existed.
struct Report {
    name: &'static str,
    empty: Heap,
    full: Heap,
    held_after_check: usize,
    swept: Heap,
    held_after_sweep: usize,
    /// Governor only: after `shrink_to_fit`.
    shrunk: Option<Heap>,
    /// After checking `N` fresh keys again into the swept limiter.
    refilled: Heap,
    dropped: Heap,
}

impl Report {
    fn print(&self) {
        let per_key = |h: Heap| (h.bytes - self.empty.bytes) as f64 / N as f64;
        let allocs_per_key = |h: Heap| (h.allocs - self.empty.allocs) as f64 / N as f64;
        println!("{}", self.name);
        println!(
            "  empty limiter:               {:>10} bytes",
            self.empty.bytes
        );
        println!(
            "  {N} keys held ({:>6}):     {:>10} bytes  = {:.1} bytes/key, {:.2} allocations/key",
            self.held_after_check,
            self.full.bytes,
            per_key(self.full),
            allocs_per_key(self.full),
        );
        println!(
            "  drained and swept ({:>6} held): {:>10} bytes  = {:.1} bytes per swept key",
            self.held_after_sweep,
            self.swept.bytes,
            per_key(self.swept),
        );
        if let Some(s) = self.shrunk {
            println!(
                "  after shrink_to_fit:         {:>10} bytes  = {:.1} bytes per swept key",
                s.bytes,
                per_key(s),
            );
        }
        println!(
            "  {N} new keys after sweep:    {:>10} bytes  = {:.1} bytes/key",
            self.refilled.bytes,
            per_key(self.refilled),
        );
        println!(
            "  dropped:                     {:>10} bytes",
            self.dropped.bytes
        );
    }
}

fn drip_policy() -> Policy {
    Policy::police(Limit::new(Rate::per_second(10).unwrap(), 10).unwrap())
}

fn quota() -> Quota {
    Quota::per_second(NonZeroU32::new(10).unwrap())
}

/// Writes key `i` into `buf`: `user:` and 16 hex digits (21 bytes).
fn string_key(buf: &mut String, i: u64) -> &str {
    buf.clear();
    write!(buf, "user:{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).unwrap();
    buf
}

/// drip with `u64` keys; `counted`: with per-key counters, as the memory
/// store keeps them.
fn drip_u64(counted: bool) -> Report {
    let clock = ManualClock::new(0);
    let base = Heap::now();
    let bucket: KeyedBucket<u64, ManualClock> = KeyedBucket::new(drip_policy(), clock.clone());
    if counted {
        fill_u64(bucket.with_counters(), clock, base, counted)
    } else {
        fill_u64(bucket, clock, base, counted)
    }
}

/// Fills `bucket` with `N` keys, sweeps them, fills it again.
fn fill_u64<N: drip::store::Counting>(
    bucket: KeyedBucket<u64, ManualClock, N>,
    clock: ManualClock,
    base: Heap,
    counted: bool,
) -> Report {
    let empty = Heap::now().since(base);
    for i in 0..N {
        assert!(bucket.check(&i, 1).unwrap().allowed());
    }
    let full = Heap::now().since(base);
    let held_after_check = bucket.len();
    clock.advance(Duration::from_secs(1));
    bucket.sweep();
    let swept = Heap::now().since(base);
    let held_after_sweep = bucket.len();
    for i in N..2 * N {
        assert!(bucket.check(&i, 1).unwrap().allowed());
    }
    let refilled = Heap::now().since(base);
    drop(bucket);
    Report {
        name: if counted {
            "drip KeyedBucket<u64>, with_counters()"
        } else {
            "drip KeyedBucket<u64>"
        },
        empty,
        full,
        held_after_check,
        swept,
        held_after_sweep,
        shrunk: None,
        refilled,
        dropped: Heap::now().since(base),
    }
}

fn drip_string(buf: &mut String) -> Report {
    let clock = ManualClock::new(0);
    let base = Heap::now();
    let bucket: KeyedBucket<String, ManualClock> = KeyedBucket::new(drip_policy(), clock.clone());
    let empty = Heap::now().since(base);
    for i in 0..N {
        assert!(bucket.check(string_key(buf, i), 1).unwrap().allowed());
    }
    let full = Heap::now().since(base);
    let held_after_check = bucket.len();
    clock.advance(Duration::from_secs(1));
    bucket.sweep();
    let swept = Heap::now().since(base);
    let held_after_sweep = bucket.len();
    for i in N..2 * N {
        assert!(bucket.check(string_key(buf, i), 1).unwrap().allowed());
    }
    let refilled = Heap::now().since(base);
    drop(bucket);
    Report {
        name: "drip KeyedBucket<String> (21-byte keys, checked with &str)",
        empty,
        full,
        held_after_check,
        swept,
        held_after_sweep,
        shrunk: None,
        refilled,
        dropped: Heap::now().since(base),
    }
}

fn governor_u64() -> Report {
    let clock = FakeRelativeClock::default();
    let base = Heap::now();
    let lim = RateLimiter::dashmap_with_clock(quota(), clock.clone());
    let empty = Heap::now().since(base);
    for i in 0..N {
        assert!(lim.check_key(&i).is_ok());
    }
    let full = Heap::now().since(base);
    let held_after_check = lim.len();
    clock.advance(Duration::from_secs(1));
    lim.retain_recent();
    let swept = Heap::now().since(base);
    let held_after_sweep = lim.len();
    lim.shrink_to_fit();
    let shrunk = Heap::now().since(base);
    for i in N..2 * N {
        assert!(lim.check_key(&i).is_ok());
    }
    let refilled = Heap::now().since(base);
    drop(lim);
    Report {
        name: "governor keyed (DashMap) u64",
        empty,
        full,
        held_after_check,
        swept,
        held_after_sweep,
        shrunk: Some(shrunk),
        refilled,
        dropped: Heap::now().since(base),
    }
}

fn governor_string(buf: &mut String) -> Report {
    let clock = FakeRelativeClock::default();
    // governor takes `&K`, so the key is a `String`; keep one reused `String`
    // (made before `base`) so only the limiter's clones count.
    let mut key = String::with_capacity(32);
    let base = Heap::now();
    let lim = RateLimiter::dashmap_with_clock(quota(), clock.clone());
    let empty = Heap::now().since(base);
    let mut check = |i: u64| {
        key.clear();
        key.push_str(string_key(buf, i));
        lim.check_key(&key).is_ok()
    };
    for i in 0..N {
        assert!(check(i));
    }
    let full = Heap::now().since(base);
    let held_after_check = lim.len();
    clock.advance(Duration::from_secs(1));
    lim.retain_recent();
    let swept = Heap::now().since(base);
    let held_after_sweep = lim.len();
    lim.shrink_to_fit();
    let shrunk = Heap::now().since(base);
    for i in N..2 * N {
        assert!(check(i));
    }
    let refilled = Heap::now().since(base);
    drop(lim);
    Report {
        name: "governor keyed (DashMap) String (21-byte keys)",
        empty,
        full,
        held_after_check,
        swept,
        held_after_sweep,
        shrunk: Some(shrunk),
        refilled,
        dropped: Heap::now().since(base),
    }
}

fn main() {
    // `cargo bench` passes `--bench` (and any filter); this program takes none.
    let mut buf = String::with_capacity(32);
    println!(
        "heap bytes requested from the allocator, relative to before the limiter was made; \
         {N} keys, one check each, then the clock passes 1 s (every bucket drains) and \
         the limiter is swept"
    );
    let reports = [
        drip_u64(false),
        drip_u64(true),
        drip_string(&mut buf),
        governor_u64(),
        governor_string(&mut buf),
    ];
    for r in &reports {
        r.print();
    }
}
