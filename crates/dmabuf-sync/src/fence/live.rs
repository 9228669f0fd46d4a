//! The count of live fence objects, for leak checks ([`live_fences`]).
//!
//! Fences are counted as they are made and freed, per thread (a fence made on one thread
//! and freed on another moves one thread's count up and another's down; only the sum
//! means anything), so that the count costs the fence paths a plain load and store of a
//! thread's own cache line.

use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::sync::Mutex;

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
    impl super::super::FenceOps for Ops {
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
        let make = |n: u64| -> Vec<super::super::Fence> {
            (0..n)
                .map(|i| super::super::Fence::new(Ops, super::super::Context::new(), i))
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
}
