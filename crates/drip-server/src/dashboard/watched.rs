//! Which pages of buckets browsers watch now, so the sampler reads the
//! busiest keys of those buckets only (a key walk per bucket is the
//! dashboard's one cost that grows with the keys held).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

/// The pages watched: `(page, per_page)` and how many browsers show it.
#[derive(Debug, Default)]
pub struct Watched {
    pages: Mutex<BTreeMap<(usize, usize), usize>>,
}

impl Watched {
    /// Counts a browser showing `page` of `per_page` buckets until the
    /// returned guard drops.
    pub fn watch(self: &Arc<Self>, page: usize, per_page: usize) -> Watch {
        *self.lock().entry((page, per_page)).or_default() += 1;
        Watch {
            watched: self.clone(),
            page: (page, per_page),
        }
    }

    /// The positions (in busiest-first order) of the buckets some browser
    /// shows, merged and sorted, at most `limit` positions in all.
    pub fn positions(&self, len: usize, limit: usize) -> Vec<Range<usize>> {
        let mut ranges: Vec<Range<usize>> = self
            .lock()
            .keys()
            .map(|&(page, per)| {
                let start = page.saturating_mul(per).min(len);
                start..start.saturating_add(per).min(len)
            })
            .filter(|r| !r.is_empty())
            .collect();
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<usize>> = Vec::new();
        for r in ranges {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        let mut left = limit;
        merged
            .into_iter()
            .filter_map(|r| {
                let take = r.len().min(left);
                left -= take;
                (take > 0).then(|| r.start..r.start + take)
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(usize, usize), usize>> {
        self.pages.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One browser's page, counted while this lives.
#[derive(Debug)]
pub struct Watch {
    watched: Arc<Watched>,
    page: (usize, usize),
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut pages = self.watched.lock();
        if let Some(n) = pages.get_mut(&self.page) {
            *n -= 1;
            if *n == 0 {
                pages.remove(&self.page);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_watched_merge_and_stop_counting_when_dropped() {
        let w = Arc::new(Watched::default());
        assert!(w.positions(50, 100).is_empty());
        let a = w.watch(0, 20);
        let b = w.watch(1, 10); // 10..20, inside page 0 of 20
        let c = w.watch(2, 20); // 40..60, cut to 40..50
        let d = w.watch(9, 20); // past the end
        assert_eq!(w.positions(50, 100), [0..20, 40..50]);
        assert_eq!(w.positions(50, 25), [0..20, 40..45]);
        drop((a, c, d));
        assert_eq!(w.positions(50, 100), vec![10..20]);
        drop(b);
        assert!(w.positions(50, 100).is_empty());
    }
}
