//! A minimal read-copy-update cell: the memory boundary of the reservation object's
//! lock-free readers.
//!
//! [`RcuCell<T>`] holds an `Arc<T>`. Readers take a reference with [`RcuCell::load`]
//! without blocking and without ever waiting for a writer; a writer publishes a new value
//! with [`RcuCell::store`], which returns the old one once no reader can still be about
//! to take a reference to it (its *grace period*), so the writer may reuse it.
//!
//! # How
//!
//! A reader announces itself in one of two counters, picked by the current *epoch*, then
//! loads the pointer and takes a reference, then leaves the counter. A writer swaps the
//! pointer, then waits for a moment when no reader is announced: a reader announced after
//! that moment loads the new pointer. When readers keep overlapping, the writer flips the
//! epoch and waits only until the counter of the old epoch drains: every reader that could
//! have loaded the old pointer is counted there (a reader re-checks the epoch after
//! announcing itself and retries if it changed, so it is never counted under an epoch
//! whose writer has already finished waiting), and readers arriving after the flip use the
//! other counter — so a writer waits only for readers already inside their
//! few-instruction window, never for new ones. Flips are rare, so readers rarely retry.
//!
//! Writers must not overlap: storing takes the cell's one [`Writer`] by `&mut`, which the
//! reservation object keeps inside its lock. The reader's "announce, then load the
//! pointer" and the writer's "swap the pointer, then read the counter" must not be
//! reordered (a Dekker-style handshake): both sides put a `SeqCst` fence between the two,
//! which is also what lets loom (which models `SeqCst` fences but not `SeqCst` accesses)
//! check the handshake.

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicPtr, AtomicUsize};
#[cfg(loom)]
use loom::sync::Arc;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicPtr, AtomicUsize};
#[cfg(not(loom))]
use std::sync::Arc;

use std::sync::atomic::Ordering::SeqCst;

/// Busy polls of the fast grace period before a writer flips the epoch. Under loom, at
/// once: so the model checks the flip path, not only the fast one.
const FLIP_AFTER: u32 = if cfg!(loom) { 1 } else { 32 };

/// The reference-counted pointer the cell holds (loom's under `--cfg loom`).
pub type Shared<T> = Arc<T>;

/// Keeps the two reader counters on separate cache lines.
#[repr(align(64))]
struct Padded(AtomicUsize);

/// A cell holding an `Arc<T>`, readable without locks; see the module docs.
pub struct RcuCell<T> {
    /// Invariant: always a pointer from `Arc::into_raw` whose reference the cell owns.
    ptr: AtomicPtr<T>,
    epoch: AtomicUsize,
    readers: [Padded; 2],
    /// Identifies the cell's [`Writer`]: only it may store.
    id: usize,
}

/// The right to store into one [`RcuCell`]: there is exactly one per cell, and `store`
/// takes it by `&mut`, so writers cannot overlap (keep it where the writers' lock is —
/// the reservation object keeps it inside its ww mutex).
#[derive(Debug)]
pub struct Writer {
    id: usize,
}

static NEXT_CELL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

// SAFETY: the cell hands out `Arc<T>` clones to any thread and drops values on whichever
// thread stores, exactly what `Arc<T>: Send + Sync` requires of `T`.
unsafe impl<T: Send + Sync> Send for RcuCell<T> {}
// SAFETY: as above; shared access only moves `Arc<T>`s between threads.
unsafe impl<T: Send + Sync> Sync for RcuCell<T> {}

impl<T> RcuCell<T> {
    /// A cell holding `value`, and the one right to store into it.
    pub fn new(value: Arc<T>) -> (Self, Writer) {
        let id = NEXT_CELL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cell = RcuCell {
            ptr: AtomicPtr::new(Arc::into_raw(value) as *mut T),
            epoch: AtomicUsize::new(0),
            readers: [Padded(AtomicUsize::new(0)), Padded(AtomicUsize::new(0))],
            id,
        };
        (cell, Writer { id })
    }

    /// A reference to the current value. Lock-free and wait-free for readers: it only
    /// retries when an epoch flip races with it, at most once per concurrent writer.
    pub fn load(&self) -> Arc<T> {
        let e = loop {
            let e = self.epoch.load(SeqCst);
            self.readers[e & 1].0.fetch_add(1, SeqCst);
            // Pairs with the writer's fence: either the writer sees this announcement,
            // or this reader sees the writer's new pointer and epoch.
            sc_fence();
            if self.epoch.load(SeqCst) == e {
                break e;
            }
            self.readers[e & 1].0.fetch_sub(1, SeqCst);
        };
        let p = self.ptr.load(SeqCst);
        // SAFETY: `p` came from `Arc::into_raw` (type invariant) and its reference is
        // still held by the cell or by a writer waiting for this reader: a writer that
        // swapped `p` out waits for the counter this reader is announced in before it
        // releases `p` (see the module docs), so the allocation is alive here.
        let value = unsafe {
            Arc::increment_strong_count(p);
            Arc::from_raw(p)
        };
        self.readers[e & 1].0.fetch_sub(1, SeqCst);
        value
    }

    /// Publish `value`; returns the previous value after its grace period (no reader
    /// can still take a new reference to it; readers that already have one keep it).
    ///
    /// # Panics
    /// When `writer` belongs to another cell (a bug in the caller).
    pub fn store(&self, writer: &mut Writer, value: Arc<T>) -> Arc<T> {
        assert_eq!(
            writer.id, self.id,
            "RcuCell::store with another cell's writer"
        );
        let old = self.ptr.swap(Arc::into_raw(value) as *mut T, SeqCst);
        // Pairs with the readers' fence (see there).
        sc_fence();
        // Fast grace period: a moment when neither counter holds a reader. A reader
        // counted later announces itself after the swap, so it loads the new pointer.
        let mut spins = 0u32;
        while self.readers[0].0.load(SeqCst) != 0 || self.readers[1].0.load(SeqCst) != 0 {
            spins += 1;
            #[cfg(loom)]
            loom::thread::yield_now();
            if spins >= FLIP_AFTER {
                // Readers keep overlapping: flip the epoch so that new ones count
                // elsewhere, and wait only for those announced under the old epoch.
                let e = self.epoch.fetch_add(1, SeqCst);
                sc_fence();
                let mut waits = 0u32;
                while self.readers[e & 1].0.load(SeqCst) != 0 {
                    waits += 1;
                    if waits < 64 {
                        std::hint::spin_loop();
                    } else {
                        yield_now();
                    }
                    #[cfg(loom)]
                    loom::thread::yield_now();
                }
                break;
            }
            std::hint::spin_loop();
        }
        // SAFETY: `old` came from `Arc::into_raw` and the cell owned its reference; no
        // reader can take a reference to it any more (grace period over), so ownership
        // of that reference moves to the caller.
        unsafe { Arc::from_raw(old) }
    }
}

/// The handshake's ordering point. Every access of the handshake is a `SeqCst` access,
/// which orders "store, then load of another location" by itself (they are all in the
/// single total order), so native builds need no extra fence (on x86 it would be an
/// `mfence` on every load and store). Loom models `SeqCst` accesses as acquire/release
/// only, so under loom the handshake gets an explicit `SeqCst` fence, which loom models.
#[inline(always)]
fn sc_fence() {
    #[cfg(loom)]
    fence(SeqCst);
}

#[cfg(not(loom))]
fn yield_now() {
    std::thread::yield_now();
}

#[cfg(loom)]
fn yield_now() {}

impl<T> Drop for RcuCell<T> {
    fn drop(&mut self) {
        let p = self.ptr.load(SeqCst);
        // SAFETY: the cell owns the reference behind `p` (type invariant) and no reader
        // can exist while we have `&mut self`.
        drop(unsafe { Arc::from_raw(p) });
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for RcuCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RcuCell").field(&self.load()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn load_store_and_reuse() {
        let (c, mut w) = RcuCell::new(Arc::new(1u64));
        assert_eq!(*c.load(), 1);
        let old = c.store(&mut w, Arc::new(2));
        assert_eq!(*old, 1);
        assert_eq!(
            Arc::strong_count(&old),
            1,
            "the grace period is over: unique"
        );
        let held = c.load();
        let mut old2 = c.store(&mut w, old);
        assert_eq!(*old2, 2);
        assert!(Arc::get_mut(&mut old2).is_none(), "a reader still holds it");
        assert_eq!(*held, 2);
        assert_eq!(*c.load(), 1);
    }

    #[test]
    fn readers_and_a_writer_never_see_torn_or_freed_values() {
        let (c, mut w) = RcuCell::new(Arc::new((0u64, 0u64)));
        let c = Arc::new(c);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (c, stop) = (c.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(SeqCst) {
                        let v = c.load();
                        assert_eq!(v.0, v.1);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
        let mut i = 0u64;
        let mut spare = Arc::new((0, 0));
        while std::time::Instant::now() < deadline && i < 200_000 {
            i += 1;
            match Arc::get_mut(&mut spare) {
                Some(v) => *v = (i, i),
                None => spare = Arc::new((i, i)),
            }
            spare = c.store(&mut w, spare);
        }
        stop.store(true, SeqCst);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicBool;

    /// A value that records its own drop in a flag that outlives it.
    struct Tracked {
        id: usize,
        dropped: Arc<[AtomicBool; 3]>,
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.dropped[self.id].store(true, SeqCst);
        }
    }

    /// A reader racing two stores whose old values are dropped at once: every value the
    /// reader gets is still alive (a reference taken to a dropped value would show up as
    /// its flag set), and values only move forward.
    #[test]
    fn loom_rcu_reader_vs_writer() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let dropped = Arc::new([
                AtomicBool::new(false),
                AtomicBool::new(false),
                AtomicBool::new(false),
            ]);
            let mk = |id| {
                Arc::new(Tracked {
                    id,
                    dropped: dropped.clone(),
                })
            };
            let (c, mut w) = RcuCell::new(mk(0));
            let c = Arc::new(c);
            let c2 = c.clone();
            let r = loom::thread::spawn(move || {
                let a = c2.load();
                assert!(!a.dropped[a.id].load(SeqCst), "got a dropped value");
                let b = c2.load();
                assert!(!b.dropped[b.id].load(SeqCst), "got a dropped value");
                assert!(a.id <= b.id, "values only move forward");
            });
            assert_eq!(c.store(&mut w, mk(1)).id, 0);
            assert_eq!(c.store(&mut w, mk(2)).id, 1);
            r.join().unwrap();
            assert_eq!(c.load().id, 2);
        });
    }
}
