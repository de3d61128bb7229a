//! Heap bytes per retained key: what a key of a `MemoryStore` bucket costs
//! while its counters outlive its water (`Policy::with_counter_retention`),
//! beside the same bucket without a retention, whose keys go at the sweep.
//!
//! A counting global allocator tracks the bytes requested from the system
//! allocator (headers and rounding not included), as `benches/memory.rs`
//! does. Each case: `N` keys of 21 bytes (as a server's keys are `String`s),
//! one check each in a shape bucket; the clock passes 1 s so every bucket
//! is empty; `sweep`; bytes still held per key.
//!
//! Run: `cargo bench -p drip --bench retention_memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use drip::{Limit, Limiter, ManualClock, MemoryStore, Policy, Rate};

/// Keys inserted per case.
const N: u64 = 100_000;

struct Counting;

static BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` with the caller's arguments;
// the counter is only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn held() -> isize {
    BYTES.load(Ordering::Relaxed)
}

/// (bytes per key with `N` keys held, bytes per key after drain + sweep).
fn case(retention: Duration) -> (f64, f64) {
    let keys: Vec<String> = (0..N).map(|i| format!("client-{i:014}")).collect();
    let clock = ManualClock::new(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let policy = Policy::shape(Limit::new(Rate::per_second(100).unwrap(), 20).unwrap())
        .with_counter_retention(retention)
        .unwrap();
    let before = held();
    let limiter = Limiter::new(MemoryStore::with_clock(clock.clone()));
    rt.block_on(async {
        limiter.configure("b", policy).await.unwrap();
        for k in &keys {
            limiter.check("b", k, 1).await.unwrap();
        }
    });
    let full = (held() - before) as f64 / N as f64;
    clock.advance(Duration::from_secs(1));
    let swept = rt.block_on(limiter.sweep_idle()).unwrap();
    let after = (held() - before) as f64 / N as f64;
    println!(
        "  retention {:>3} s: {full:6.1} bytes/key held, {after:6.1} bytes/key after drain + sweep ({swept} keys swept)",
        retention.as_secs()
    );
    drop(limiter);
    (full, after)
}

fn main() {
    println!("MemoryStore, {N} keys of 21 bytes, one check each, shape 20 at 100/s:");
    let (_, kept) = case(Duration::from_secs(60));
    let (_, gone) = case(Duration::ZERO);
    println!("  a retained key costs {:.1} bytes", kept - gone);
}
