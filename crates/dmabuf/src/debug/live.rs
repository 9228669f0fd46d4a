//! Live-object counts for leak checks: buffers, fences, open descriptors, memory
//! mappings and resident memory of this process ([`live`]), and the difference between
//! two samples ([`Live::drift`]).
//!
//! Buffers come from the buffer list bufinfo walks. Fences are counted as they are made
//! and freed, per thread (a fence made on one thread and freed on another moves one
//! thread's count up and another's down; only the sum means anything), so that the
//! count costs the fence paths a plain load and store of a thread's own cache line. Descriptors,
//! mappings and resident memory are read from `/proc/self` (0 where it cannot be read).

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What is alive in this process now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// Exported buffers not yet released.
    pub buffers: usize,
    /// Fence objects not yet freed (every kind: plain, arrays, chains, stubs...).
    pub fences: usize,
    /// Open descriptors (`/proc/self/fd`).
    pub open_fds: usize,
    /// Memory mappings (lines of `/proc/self/maps`).
    pub mappings: usize,
    /// Resident memory in bytes (`/proc/self/statm`).
    pub rss_bytes: u64,
}

/// The difference between two [`Live`] samples, later less earlier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drift {
    /// Buffers.
    pub buffers: i64,
    /// Fences.
    pub fences: i64,
    /// Open descriptors.
    pub open_fds: i64,
    /// Memory mappings.
    pub mappings: i64,
    /// Resident bytes.
    pub rss_bytes: i64,
}

impl Drift {
    /// Whether no buffer, fence or descriptor was gained or lost (mappings and resident
    /// memory move with the allocator's own caches and are not judged).
    pub fn objects_zero(&self) -> bool {
        self.buffers == 0 && self.fences == 0 && self.open_fds == 0
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fds {:+}, buffers {:+}, fences {:+}, maps {:+}, rss {:+} KiB",
            self.open_fds,
            self.buffers,
            self.fences,
            self.mappings,
            self.rss_bytes / 1024
        )
    }
}

impl Live {
    /// `self` less `earlier`.
    pub fn drift(&self, earlier: &Live) -> Drift {
        let d = |a: usize, b: usize| a as i64 - b as i64;
        Drift {
            buffers: d(self.buffers, earlier.buffers),
            fences: d(self.fences, earlier.fences),
            open_fds: d(self.open_fds, earlier.open_fds),
            mappings: d(self.mappings, earlier.mappings),
            rss_bytes: self.rss_bytes as i64 - earlier.rss_bytes as i64,
        }
    }

    /// Whether buffers, fences, descriptors and mappings equal `other`'s (resident
    /// memory is not compared).
    pub fn same_objects(&self, other: &Live) -> bool {
        (self.buffers, self.fences, self.open_fds, self.mappings)
            == (other.buffers, other.fences, other.open_fds, other.mappings)
    }
}

/// Sample the counts now. Reads three `/proc/self` files and takes the buffer list's
/// lock briefly; not for hot paths.
pub fn live() -> Live {
    Live {
        buffers: crate::buf::live_buffer_count(),
        fences: live_fences(),
        open_fds: open_fds(),
        mappings: std::fs::read("/proc/self/maps")
            .map(|m| m.iter().filter(|&&b| b == b'\n').count())
            .unwrap_or(0),
        rss_bytes: rss_bytes(),
    }
}

/// Sample until two samples `interval` apart agree on buffers, fences, descriptors and
/// mappings (background work — engines, watchers, deferred drops — has quiesced), at
/// most until `timeout`; returns the last sample.
pub fn live_settled(interval: Duration, timeout: Duration) -> Live {
    let end = Instant::now() + timeout;
    let mut last = live();
    loop {
        std::thread::sleep(interval);
        let now = live();
        if now.same_objects(&last) || Instant::now() >= end {
            return now;
        }
        last = now;
    }
}

fn open_fds() -> usize {
    // The listing includes the directory's own descriptor.
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}

fn rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * crate::heap::memfd::page_size() as u64
}

// ---- the fence count -------------------------------------------------------------
//
// Each thread counts in its own slot, which only that thread writes (a plain load and
// store, no locked instruction). A thread's slot is handed back when the thread ends —
// its count moved to `RETIRED` — and reused by a later thread, so the slots are bounded
// by the most threads alive at once. A fence freed after its thread's slot is gone (a
// thread-local destructor) counts in `RETIRED` directly.

/// One thread's count, on its own cache line pair (adjacent-line prefetch).
#[repr(align(128))]
struct Slot(AtomicIsize);

/// Every slot ever made (never freed; reused through `FREE`).
static ALL: Mutex<Vec<&'static Slot>> = Mutex::new(Vec::new());
/// Slots of ended threads, zeroed, for the next thread.
static FREE: Mutex<Vec<&'static Slot>> = Mutex::new(Vec::new());
/// The counts of ended threads, and of frees after a thread's slot was handed back.
static RETIRED: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// This thread's slot, once it has one. A const cell with no destructor: reading
    /// it is one thread-local load, and it stays readable while the thread ends.
    static SLOT: Cell<Option<&'static Slot>> = const { Cell::new(None) };
    /// Hands this thread's slot back when the thread ends.
    static OWNER: Owner = const { Owner };
}

struct Owner;

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(s) = SLOT.with(Cell::take) {
            RETIRED.fetch_add(s.0.swap(0, Relaxed), Relaxed);
            FREE.lock().unwrap_or_else(|e| e.into_inner()).push(s);
        }
    }
}

#[inline]
fn count(d: isize) {
    match SLOT.with(Cell::get) {
        // Only this thread writes its slot while it owns it: no read-modify-write.
        Some(s) => s.0.store(s.0.load(Relaxed) + d, Relaxed),
        None => count_slow(d),
    }
}

/// This thread's first count: take a slot — unless the thread is ending (its owner
/// already gone), when the count goes to `RETIRED`.
#[cold]
fn count_slow(d: isize) {
    if OWNER.try_with(|_| ()).is_err() {
        RETIRED.fetch_add(d, Relaxed);
        return;
    }
    let reuse = FREE.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let s = reuse.unwrap_or_else(|| {
        let s: &'static Slot = Box::leak(Box::new(Slot(AtomicIsize::new(0))));
        ALL.lock().unwrap_or_else(|e| e.into_inner()).push(s);
        s
    });
    s.0.store(s.0.load(Relaxed) + d, Relaxed);
    SLOT.with(|c| c.set(Some(s)));
}

/// A fence object was made.
#[inline]
pub(crate) fn fence_made() {
    count(1);
}

/// A fence object was freed.
#[inline]
pub(crate) fn fence_freed() {
    count(-1);
}

fn fence_sum() -> isize {
    let slots: isize = ALL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|s| s.0.load(Relaxed))
        .sum();
    slots + RETIRED.load(Relaxed)
}

/// Fence objects made and not yet freed. Exact once the threads that make and free
/// fences are quiet; while a thread is ending its count may be missed for an instant.
pub fn live_fences() -> usize {
    fence_sum().max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ops;
    impl crate::fence::FenceOps for Ops {
        fn driver_name(&self) -> &str {
            "live"
        }
        fn timeline_name(&self) -> &str {
            "live"
        }
    }

    #[test]
    fn fences_made_on_one_thread_and_freed_on_another_balance() {
        // Other tests make and free fences concurrently, by far fewer than these.
        let make = |n: u64| -> Vec<crate::fence::Fence> {
            (0..n)
                .map(|i| crate::fence::Fence::new(Ops, crate::fence::Context::new(), i))
                .collect()
        };
        let before = fence_sum();
        let v = make(10_000);
        let mid = fence_sum();
        std::thread::spawn(move || drop(v)).join().unwrap();
        let after = fence_sum();
        assert!(mid - before > 5_000, "made: {}", mid - before);
        assert!(
            mid - after > 5_000,
            "freed on another thread: {}",
            mid - after
        );
        // Made on a thread that has ended (its count retired), freed here.
        let v = std::thread::spawn(move || make(10_000)).join().unwrap();
        let made = fence_sum();
        assert!(
            made - after > 5_000,
            "made by an ended thread: {}",
            made - after
        );
        drop(v);
        assert!(made - fence_sum() > 5_000, "freed: {}", made - fence_sum());
    }

    #[test]
    fn proc_counts_follow_descriptors() {
        let l = live();
        assert!(
            l.open_fds >= 3 && l.mappings > 0 && l.rss_bytes > 0,
            "{l:?}"
        );
        let d = l.drift(&l);
        assert!(d.objects_zero());
        assert_eq!(
            d.to_string(),
            "fds +0, buffers +0, fences +0, maps +0, rss +0 KiB"
        );
    }
}
