//! A buddy allocator of pages over one fixed region: the carving engine of the
//! contiguous heap (the kernel's CMA area plays this role).
//!
//! The region is `pages` pages long, not necessarily a power of two: it starts as the
//! largest naturally aligned power-of-two blocks that tile it. [`Buddy::alloc`] takes the
//! smallest free block of order `ceil(log2(n))`, splits it down, and gives the unused tail
//! back at once (as the kernel's `alloc_pages_exact` does), so an allocation of `n` pages
//! costs exactly `n` pages. [`Buddy::free`] returns a range as aligned blocks and merges
//! each with its buddy while the buddy is free, so freed space coalesces back into large
//! blocks and the region never fragments beyond what live allocations force.
//!
//! Invariants (checked by [`Buddy::check`] in tests):
//! - every free block of order `k` starts at a multiple of `2^k` and lies in the region;
//! - free blocks never overlap each other or a live allocation;
//! - two free buddies of the same order never coexist (they would have merged).

use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};

/// Largest block order kept (2^30 pages: far beyond any region here).
const MAX_ORDER: u32 = 30;

/// A page-granular buddy allocator. Not thread-safe by itself: the heap wraps it in a lock.
#[derive(Debug)]
pub struct Buddy {
    pages: usize,
    /// Free blocks by order: start page of each block.
    free: Vec<BTreeSet<usize>>,
    /// Live allocations: start page → length in pages.
    live: BTreeMap<usize, usize>,
    free_pages: usize,
}

/// `ceil(log2(n))` for `n >= 1`.
fn order_for(n: usize) -> u32 {
    n.next_power_of_two().trailing_zeros()
}

impl Buddy {
    /// An allocator over `pages` pages, all free.
    pub fn new(pages: usize) -> Self {
        let mut b = Buddy {
            pages,
            free: (0..=MAX_ORDER).map(|_| BTreeSet::new()).collect(),
            live: BTreeMap::new(),
            free_pages: 0,
        };
        b.release_range(0, pages);
        b
    }

    /// Pages free now.
    pub fn free_pages(&self) -> usize {
        self.free_pages
    }

    /// Free blocks sorted by address, as `(start, pages)`.
    fn free_blocks(&self) -> Vec<(usize, usize)> {
        let mut v: Vec<(usize, usize)> = self
            .free
            .iter()
            .enumerate()
            .flat_map(|(k, set)| set.iter().map(move |&s| (s, 1usize << k)))
            .collect();
        v.sort_unstable();
        v
    }

    /// Maximal runs of adjacent free blocks, as `(start, pages)`, by address.
    fn free_runs(&self) -> Vec<(usize, usize)> {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for (s, len) in self.free_blocks() {
            match runs.last_mut() {
                Some((rs, rl)) if *rs + *rl == s => *rl += len,
                _ => runs.push((s, len)),
            }
        }
        runs
    }

    /// The largest run of pages one allocation could get now.
    pub fn largest_free(&self) -> usize {
        self.free_runs().iter().map(|r| r.1).max().unwrap_or(0)
    }

    /// Allocate `n` contiguous pages; returns the first page. When a free block of order
    /// `ceil(log2(n))` exists the run is naturally aligned to it; otherwise the first run
    /// of adjacent free blocks long enough is carved (fragmentation never refuses a
    /// request that contiguous free space could serve).
    ///
    /// # Errors
    ///
    /// `Invalid` for `n == 0`; `NoMem` exactly when no `n` contiguous pages are
    /// free (the allocator is then unchanged).
    pub fn alloc(&mut self, n: usize) -> Result<usize> {
        if n == 0 {
            return Err(Error::Invalid("zero-page allocation"));
        }
        if n > self.pages {
            return Err(Error::NoMem);
        }
        let want = order_for(n);
        let Some(have) = (want..=MAX_ORDER).find(|&k| !self.free[k as usize].is_empty()) else {
            return self.alloc_from_run(n);
        };
        // Lowest address first: keeps allocations packed at the bottom.
        let start = *self.free[have as usize].iter().next().expect("non-empty");
        self.free[have as usize].remove(&start);
        self.free_pages -= 1 << have;
        // Split down to `want`, keeping the lower half each time.
        for k in (want..have).rev() {
            self.free[k as usize].insert(start + (1 << k));
            self.free_pages += 1 << k;
        }
        // Give back the tail beyond `n`.
        let block = 1usize << want;
        if block > n {
            self.release_range(start + n, block - n);
        }
        self.live.insert(start, n);
        Ok(start)
    }

    /// The fallback of [`alloc`](Self::alloc): carve `n` pages from the first long-enough
    /// run of adjacent free blocks.
    fn alloc_from_run(&mut self, n: usize) -> Result<usize> {
        let (start, _) = *self
            .free_runs()
            .iter()
            .find(|r| r.1 >= n)
            .ok_or(Error::NoMem)?;
        let end = start + n;
        let mut tail = None;
        for (s, len) in self.free_blocks() {
            if s >= end || s + len <= start {
                continue;
            }
            self.free[len.trailing_zeros() as usize].remove(&s);
            self.free_pages -= len;
            if s + len > end {
                tail = Some((end, s + len - end));
            }
        }
        if let Some((s, len)) = tail {
            self.release_range(s, len);
        }
        self.live.insert(start, n);
        Ok(start)
    }

    /// Free the allocation that starts at page `start`.
    ///
    /// # Errors
    ///
    /// `Invalid` if no live allocation starts there (double free or a wrong
    /// address); the allocator is unchanged.
    pub fn free(&mut self, start: usize) -> Result<()> {
        let n = self
            .live
            .remove(&start)
            .ok_or(Error::Invalid("free of a range that is not allocated"))?;
        self.release_range(start, n);
        Ok(())
    }

    /// The length in pages of the live allocation at `start`.
    pub fn len_of(&self, start: usize) -> Option<usize> {
        self.live.get(&start).copied()
    }

    /// Number of live allocations.
    #[cfg(test)]
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// Return `[start, start+len)` to the free lists as aligned blocks, merging buddies.
    fn release_range(&mut self, mut start: usize, mut len: usize) {
        while len > 0 {
            // The largest aligned block that starts at `start` and fits in `len`.
            let align = if start == 0 {
                MAX_ORDER
            } else {
                start.trailing_zeros().min(MAX_ORDER)
            };
            let fit = (usize::BITS - 1 - len.leading_zeros()).min(MAX_ORDER);
            let k = align.min(fit);
            self.free_block(start, k);
            start += 1 << k;
            len -= 1 << k;
        }
    }

    fn free_block(&mut self, mut start: usize, mut k: u32) {
        self.free_pages += 1 << k;
        while k < MAX_ORDER {
            let buddy = start ^ (1 << k);
            if buddy + (1 << k) > self.pages || !self.free[k as usize].remove(&buddy) {
                break;
            }
            start = start.min(buddy);
            k += 1;
        }
        self.free[k as usize].insert(start);
    }

    /// Verify the invariants; `Err` names the first broken one.
    #[cfg(test)]
    pub fn check(&self) -> std::result::Result<(), String> {
        let mut spans: Vec<(usize, usize, &str)> = Vec::new();
        let mut free_total = 0;
        for (k, set) in self.free.iter().enumerate() {
            for &s in set {
                let len = 1usize << k;
                if s % len != 0 {
                    return Err(format!("free block {s} of order {k} misaligned"));
                }
                if s + len > self.pages {
                    return Err(format!("free block {s} of order {k} past the region"));
                }
                if k < MAX_ORDER as usize
                    && set.contains(&(s ^ len))
                    && (s ^ len) + len <= self.pages
                {
                    return Err(format!(
                        "free buddies {s} and {} of order {k} unmerged",
                        s ^ len
                    ));
                }
                free_total += len;
                spans.push((s, len, "free"));
            }
        }
        if free_total != self.free_pages {
            return Err(format!(
                "free count {} != blocks {free_total}",
                self.free_pages
            ));
        }
        let live_total: usize = self.live.values().sum();
        spans.extend(self.live.iter().map(|(&s, &l)| (s, l, "live")));
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[0].0 + w[0].1 > w[1].0 {
                return Err(format!(
                    "{} span at {} overlaps {} span at {}",
                    w[0].2, w[0].0, w[1].2, w[1].0
                ));
            }
        }
        if live_total + free_total != self.pages {
            return Err(format!(
                "live {live_total} + free {free_total} != region {}",
                self.pages
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn whole_region_then_exhausted() {
        let mut b = Buddy::new(16);
        let a = b.alloc(16).unwrap();
        assert_eq!(a, 0);
        assert!(matches!(b.alloc(1), Err(Error::NoMem)));
        b.free(a).unwrap();
        assert_eq!(b.free_pages(), 16);
        assert_eq!(b.largest_free(), 16);
        b.check().unwrap();
    }

    #[test]
    fn exact_sizes_waste_nothing() {
        let mut b = Buddy::new(64);
        let a = b.alloc(3).unwrap();
        let c = b.alloc(5).unwrap();
        assert_eq!(b.free_pages(), 64 - 8);
        assert_eq!(b.len_of(a), Some(3));
        assert_eq!(b.len_of(c), Some(5));
        b.check().unwrap();
        b.free(a).unwrap();
        b.free(c).unwrap();
        assert_eq!(b.largest_free(), 64);
        b.check().unwrap();
    }

    #[test]
    fn odd_region_is_tiled() {
        let mut b = Buddy::new(100);
        b.check().unwrap();
        assert_eq!(b.free_pages(), 100);
        let x = b.alloc(64).unwrap();
        assert_eq!(x, 0);
        let y = b.alloc(32).unwrap();
        assert_eq!(y, 64);
        let z = b.alloc(4).unwrap();
        assert_eq!(z, 96);
        assert!(matches!(b.alloc(1), Err(Error::NoMem)));
        b.check().unwrap();
    }

    #[test]
    fn bad_input_leaves_state_alone() {
        let mut b = Buddy::new(8);
        let a = b.alloc(2).unwrap();
        assert!(matches!(b.alloc(0), Err(Error::Invalid(_))));
        assert!(matches!(b.alloc(9), Err(Error::NoMem)));
        assert!(matches!(b.free(a + 1), Err(Error::Invalid(_))));
        b.free(a).unwrap();
        assert!(matches!(b.free(a), Err(Error::Invalid(_))));
        assert_eq!(b.free_pages(), 8);
        assert_eq!(b.live_count(), 0);
        b.check().unwrap();
    }

    #[test]
    fn unaligned_free_run_is_used() {
        let mut b = Buddy::new(8);
        let v: Vec<usize> = (0..8).map(|_| b.alloc(1).unwrap()).collect();
        // Free pages 2..6: blocks [2,4) and [4,6) are not buddies, yet form a run of 4.
        for &s in &v[2..6] {
            b.free(s).unwrap();
        }
        assert_eq!(b.largest_free(), 4);
        let s = b.alloc(4).unwrap();
        assert_eq!(s, 2);
        assert_eq!(b.free_pages(), 0);
        b.check().unwrap();
        b.free(s).unwrap();
        let t = b.alloc(3).unwrap();
        assert_eq!(t, 2);
        assert_eq!(b.free_pages(), 1);
        b.check().unwrap();
    }

    #[test]
    fn fragmentation_heals_when_freed() {
        let mut b = Buddy::new(32);
        let v: Vec<usize> = (0..32).map(|_| b.alloc(1).unwrap()).collect();
        for (i, &s) in v.iter().enumerate() {
            if i % 2 == 0 {
                b.free(s).unwrap();
            }
        }
        assert_eq!(b.free_pages(), 16);
        assert_eq!(b.largest_free(), 1);
        assert!(matches!(b.alloc(2), Err(Error::NoMem)));
        for (i, &s) in v.iter().enumerate() {
            if i % 2 == 1 {
                b.free(s).unwrap();
            }
        }
        assert_eq!(b.largest_free(), 32);
        b.check().unwrap();
    }

    proptest! {
        #[test]
        fn random_alloc_free_keeps_invariants(
            pages in 1usize..300,
            ops in proptest::collection::vec((any::<bool>(), 1usize..40, any::<usize>()), 1..120)
        ) {
            let mut b = Buddy::new(pages);
            let mut live: Vec<(usize, usize)> = Vec::new();
            for (is_alloc, n, pick) in ops {
                if is_alloc || live.is_empty() {
                    let before = b.free_pages();
                    match b.alloc(n) {
                        Ok(s) => {
                            prop_assert!(s + n <= pages);
                            prop_assert_eq!(b.free_pages(), before - n);
                            live.push((s, n));
                        }
                        Err(Error::NoMem) => {
                            prop_assert_eq!(b.free_pages(), before);
                            prop_assert!(b.largest_free() < n, "NoMem with a free run of {}", b.largest_free());
                        }
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                } else {
                    let (s, _) = live.swap_remove(pick % live.len());
                    b.free(s).unwrap();
                }
                prop_assert_eq!(b.check(), Ok(()));
            }
            for (s, _) in live {
                b.free(s).unwrap();
            }
            prop_assert_eq!(b.free_pages(), pages);
            prop_assert_eq!(b.check(), Ok(()));
            // Fully coalesced: the free lists equal a fresh allocator's.
            let fresh = Buddy::new(pages);
            prop_assert_eq!(&b.free, &fresh.free);
        }
    }
}
