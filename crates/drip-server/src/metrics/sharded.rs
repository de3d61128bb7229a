//! Counts that concurrent decisions add to without sharing a cache line:
//! each thread adds to its own slot (a line of its own) and a reader sums
//! the slots. Every decision records a count and a latency; when all of
//! them add to one shared atomic, the worker threads pass its cache line
//! back and forth on every request (`benches/metrics.rs` measures both).
//! Reading is rare: a scrape of `/metrics`.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;

/// Slots per set of counts: twice the machine's threads (threads other
/// than the runtime's workers record too), from 2 to 16 (so a bucket's
/// decision counts take at most 2 KiB); more threads share slots.
static SLOTS: LazyLock<usize> = LazyLock::new(|| {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_mul(2)
        .clamp(2, 16)
});

/// This thread's slot: threads take slots in turn as they first record.
fn slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % *SLOTS;
    }
    SLOT.with(|s| *s)
}

/// `N` counters, each the sum of its slots.
pub struct Counts<const N: usize> {
    slots: Box<[CachePadded<[AtomicU64; N]>]>,
}

impl<const N: usize> Default for Counts<N> {
    fn default() -> Self {
        Counts {
            slots: (0..*SLOTS)
                .map(|_| CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }
}

impl<const N: usize> Counts<N> {
    /// Adds `n` to counter `i`.
    #[inline]
    pub fn add(&self, i: usize, n: u64) {
        self.slots[slot()][i].fetch_add(n, Ordering::Relaxed);
    }

    /// Counter `i` now.
    pub fn get(&self, i: usize) -> u64 {
        self.slots
            .iter()
            .map(|s| s[i].load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// A Prometheus histogram of durations with fixed bucket bounds: a sample
/// adds one to its bucket and its nanoseconds to the sum, in this thread's
/// slot.
pub struct Latency {
    /// The buckets' upper bounds (inclusive), in seconds and nanoseconds.
    bounds: &'static [f64],
    bounds_ns: Vec<u64>,
    /// A count per bound, then the count past the last bound; the last
    /// column is the sum in nanoseconds.
    columns: Counts<MAX_COLUMNS>,
}

/// Bounds a [`Latency`] takes at most, plus its two other columns.
const MAX_BOUNDS: usize = 30;
const MAX_COLUMNS: usize = MAX_BOUNDS + 2;

impl Latency {
    /// A histogram whose buckets end at `bounds` seconds (ascending, at most
    /// 30).
    pub fn new(bounds: &'static [f64]) -> Latency {
        assert!(bounds.len() <= MAX_BOUNDS && bounds.is_sorted());
        Latency {
            bounds,
            bounds_ns: bounds.iter().map(|s| (s * 1e9).round() as u64).collect(),
            columns: Counts::default(),
        }
    }

    /// Records one sample.
    #[inline]
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.bounds_ns.partition_point(|&b| b < ns);
        let slot = &self.columns.slots[slot()];
        slot[bucket].fetch_add(1, Ordering::Relaxed);
        slot[MAX_COLUMNS - 1].fetch_add(ns, Ordering::Relaxed);
    }

    /// Appends the histogram in the Prometheus text format: `# HELP`,
    /// `# TYPE`, the cumulative buckets, `_sum` (seconds) and `_count`.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        use std::fmt::Write;
        let c = &self.columns;
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut below = 0u64;
        for (i, le) in self.bounds.iter().enumerate() {
            below += c.get(i);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {below}");
        }
        let count = below + c.get(self.bounds.len());
        let sum = c.get(MAX_COLUMNS - 1) as f64 / 1e9;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let counts = std::sync::Arc::new(Counts::<3>::default());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let counts = counts.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        counts.add(t % 3, 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            [counts.get(0), counts.get(1), counts.get(2)],
            [30_000, 30_000, 20_000]
        );
    }

    #[test]
    fn a_histogram_renders_cumulative_buckets_sum_and_count() {
        static BOUNDS: &[f64] = &[0.000_01, 0.001, 1.0];
        let h = Latency::new(BOUNDS);
        for us in [5, 10, 11, 1000, 2_000_000] {
            h.record(Duration::from_micros(us));
        }
        let mut text = String::new();
        h.render("t_seconds", "Test.", &mut text);
        assert_eq!(
            text,
            "# HELP t_seconds Test.\n\
             # TYPE t_seconds histogram\n\
             t_seconds_bucket{le=\"0.00001\"} 2\n\
             t_seconds_bucket{le=\"0.001\"} 4\n\
             t_seconds_bucket{le=\"1\"} 4\n\
             t_seconds_bucket{le=\"+Inf\"} 5\n\
             t_seconds_sum 2.001026\n\
             t_seconds_count 5\n"
        );
    }
}
