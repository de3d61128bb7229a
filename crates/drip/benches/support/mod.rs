//! What the in-process benchmarks share: the loads (one policy for drip,
//! the same quota for governor), the keys, and the check that both sides
//! give the load's verdict before timing.

#![allow(dead_code)]

use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use drip::{Limit, Policy, Rate};
use governor::Quota;

/// Keys in the many-keys groups.
pub const KEYS: usize = 10_000;

/// Keys of each thread in `two_threads_own_keys` (a power of two).
pub const OWN_KEYS: usize = 4096;

#[derive(Clone, Copy, Debug)]
pub enum Load {
    Admit,
    Admit3000PerS,
    Reject,
}

pub const LOADS: [Load; 3] = [Load::Admit, Load::Admit3000PerS, Load::Reject];

impl Load {
    pub fn name(self) -> &'static str {
        match self {
            Load::Admit => "admit",
            Load::Admit3000PerS => "admit_3000_per_s",
            Load::Reject => "reject",
        }
    }

    pub fn policy(self) -> Policy {
        let limit = match self {
            Load::Admit => Limit::new(
                Rate::per_second(1_000_000_000).unwrap(),
                u64::from(u32::MAX),
            ),
            Load::Admit3000PerS => Limit::new(Rate::per_second(3000).unwrap(), u64::from(u32::MAX)),
            Load::Reject => Limit::new(Rate::per_hour(1).unwrap(), 1),
        };
        Policy::police(limit.unwrap())
    }

    pub fn quota(self) -> Quota {
        match self {
            Load::Admit => Quota::per_second(nz(1_000_000_000)).allow_burst(nz(u32::MAX)),
            Load::Admit3000PerS => Quota::per_second(nz(3000)).allow_burst(nz(u32::MAX)),
            Load::Reject => Quota::per_hour(nz(1)),
        }
    }

    pub fn admits(self) -> bool {
        !matches!(self, Load::Reject)
    }
}

pub fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// Checks every key once (this primes the `reject` load: the one unit of
/// each key is used), then asserts that a second check of every key gives
/// the load's verdict.
pub fn prime<K>(load: Load, keys: &[K], check: impl Fn(&K) -> bool) {
    for k in keys {
        check(k);
    }
    for k in keys {
        assert_eq!(check(k), load.admits(), "{load:?}: unexpected verdict");
    }
}

/// `KEYS` u64 keys in a fixed shuffled order (the same order for both).
pub fn u64_keys() -> Vec<u64> {
    let mut keys: Vec<u64> = (0..KEYS as u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect();
    shuffle(&mut keys);
    keys
}

/// `KEYS` string keys of 21 bytes (`user:` and 16 hex digits), shuffled.
pub fn string_keys() -> Vec<String> {
    u64_keys()
        .iter()
        .map(|k| format!("user:{k:016x}"))
        .collect()
}

/// Fisher-Yates with a fixed xorshift seed.
pub fn shuffle<T>(v: &mut [T]) {
    let mut s: u64 = 0x2545_F491_4F6C_DD1D;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
}

/// Cycles through `keys`, one per call.
pub struct Cycle<'a, K> {
    keys: &'a [K],
    i: usize,
}

impl<'a, K> Cycle<'a, K> {
    pub fn new(keys: &'a [K]) -> Self {
        Cycle { keys, i: 0 }
    }

    #[inline]
    pub fn next_key(&mut self) -> &'a K {
        let k = &self.keys[self.i];
        self.i += 1;
        if self.i == self.keys.len() {
            self.i = 0;
        }
        k
    }
}

/// `n` checks made by two threads, half each (`check(thread, i)` for the
/// thread's `i`th check): the wall time of both, so a figure per check is
/// the inverse of the pair's throughput.
pub fn two_threads(n: u64, check: &(impl Fn(usize, u64) + Sync)) -> Duration {
    let per_thread = n.div_ceil(2);
    let barrier = Barrier::new(3);
    let start = std::thread::scope(|s| {
        for t in 0..2 {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for i in 0..per_thread {
                    check(t, i);
                }
            });
        }
        barrier.wait();
        Instant::now()
    });
    start.elapsed()
}
