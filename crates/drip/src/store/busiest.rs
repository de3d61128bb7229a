//! The busiest keys of a bucket (the dashboard's top N): the `n` keys
//! holding the most water, picked in one pass with a bounded heap, so a
//! bucket of millions of keys costs `O(keys · log n)` time and `O(n)` memory.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::core::Level;
use crate::store::Counters;

/// Most keys a store that reads them one by one (a SQLite row each, a Redis
/// `SCAN` page) looks at for one [`busiest_keys`](crate::Store::busiest_keys)
/// call; beyond it the answer is the busiest of those looked at. The memory
/// store looks at every key.
pub const BUSIEST_SCAN: usize = 10_000;

/// One key of a bucket: how full it is now and what it has seen.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyLevel {
    /// The key.
    pub key: String,
    /// Its level now.
    pub level: Level,
    /// Its counters (zero where the store does not count).
    pub counters: Counters,
}

/// Keeps the `n` entries of greatest weight offered (a key's `tat` in its
/// policy's ticks: the same order as its level).
pub(crate) struct Top<T> {
    n: usize,
    /// The smallest weight kept is on top.
    heap: BinaryHeap<Reverse<Ranked<T>>>,
}

struct Ranked<T> {
    weight: u128,
    item: T,
}

impl<T> PartialEq for Ranked<T> {
    fn eq(&self, other: &Self) -> bool {
        self.weight == other.weight
    }
}
impl<T> Eq for Ranked<T> {}
impl<T> PartialOrd for Ranked<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Ranked<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.weight.cmp(&other.weight)
    }
}

impl<T> Top<T> {
    /// Keeps at most `n`.
    pub(crate) fn new(n: usize) -> Top<T> {
        Top {
            n,
            heap: BinaryHeap::with_capacity(n.min(1024) + 1),
        }
    }

    /// Offers an entry of `weight`; `make` builds it only if it is kept (so
    /// keys that lose are never cloned).
    pub(crate) fn offer(&mut self, weight: u128, make: impl FnOnce() -> T) {
        if self.n == 0 {
            return;
        }
        if self.heap.len() == self.n {
            match self.heap.peek() {
                Some(Reverse(least)) if weight > least.weight => {
                    self.heap.pop();
                }
                _ => return,
            }
        }
        self.heap.push(Reverse(Ranked {
            weight,
            item: make(),
        }));
    }

    /// What was kept, greatest weight first.
    pub(crate) fn into_sorted(self) -> Vec<T> {
        // Ascending `Reverse` order is descending weight.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(r)| r.item)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_heaviest_n_heaviest_first() {
        let mut top = Top::new(3);
        let mut built = 0;
        for (w, name) in [(5, "e"), (1, "a"), (9, "i"), (3, "c"), (7, "g"), (2, "b")] {
            top.offer(w, || {
                built += 1;
                name
            });
        }
        assert_eq!(top.into_sorted(), ["i", "g", "e"]);
        assert_eq!(
            built, 5,
            "entries lighter than the lightest kept are not built"
        );
    }

    #[test]
    fn zero_keeps_nothing() {
        let mut top = Top::new(0);
        top.offer(1, || ());
        assert!(top.into_sorted().is_empty());
    }
}
