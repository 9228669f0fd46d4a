//! Context slots: the part of an acquire context that other threads see.
//!
//! A holder's context must be visible to contenders (its stamp, to decide who dies or
//! who is wounded; its `wounded` flag, to wound it; its thread, to wake it). The kernel
//! keeps a pointer to the context in the mutex. Here every live context owns a *slot* in
//! a process-wide table of `'static` records, and a mutex stores the slot number in its
//! state word next to the LOCKED bit, so that one compare-and-swap both takes the lock
//! and publishes the holder: the uncontended path stays one atomic, as in the kernel.
//!
//! Invariants:
//! - slot 0 is never handed out: 0 in a state word means "no context";
//! - a slot belongs to one live context at a time; it is recycled only after that
//!   context ended with no lock held (a context ended with locks held — leaked guards —
//!   keeps its slot forever, since a mutex may still name it);
//! - a slot's `thread` (and `tid`) is the thread of the context using it (contexts are
//!   `!Send`).
//!
//! Slots are cached per thread (bound to that thread) so that starting a context costs
//! no global lock; a thread's cache returns to the global free list when it exits.

use crate::shim::{current, thread_id, AtomicBool, AtomicU32, AtomicU64, Mutex, Ordering, Thread};

/// The shared record of one acquire context. One cache line each: every context writes
/// its own record when it starts, and records of contexts on different threads must not
/// share a line (false sharing made each start a cache-line transfer between cores).
#[repr(align(64))]
pub(crate) struct CtxSlot {
    /// The context's stamp (written before the context locks anything).
    pub(crate) stamp: AtomicU64,
    /// Wound-wait: set by an older context that wants a lock this one holds.
    pub(crate) wounded: AtomicBool,
    /// The thread to wake when wounding.
    thread: Mutex<Option<Thread>>,
    /// The [`thread_id`] of that thread (0: none), so that a mutex held in this slot
    /// can tell whether the thread asking for it is the holder's. Written only by the
    /// bound thread, so that thread always reads its own id here.
    pub(crate) tid: AtomicU32,
}

impl CtxSlot {
    fn new() -> Self {
        CtxSlot {
            stamp: AtomicU64::new(0),
            wounded: AtomicBool::new(false),
            thread: Mutex::new(None),
            tid: AtomicU32::new(0),
        }
    }

    /// Wake the context's thread (it re-checks whether it was wounded).
    pub(crate) fn wake(&self) {
        if let Some(t) = self.thread.lock().as_ref() {
            t.unpark();
        }
    }

    fn bind(&self) {
        *self.thread.lock() = Some(current());
        self.tid.store(thread_id(), Ordering::Relaxed);
    }

    #[cfg(not(loom))]
    fn unbind(&self) {
        *self.thread.lock() = None;
        self.tid.store(0, Ordering::Relaxed);
    }
}

#[cfg(not(loom))]
mod table {
    use super::CtxSlot;
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;

    const SEG_SHIFT: u32 = 10;
    const SEG_LEN: usize = 1 << SEG_SHIFT;
    const SEGS: usize = 4096;
    /// Slots that can be alive at once (about four million).
    const MAX: u32 = (SEGS * SEG_LEN) as u32;

    static SEGMENTS: [OnceLock<Box<[CtxSlot]>>; SEGS] = [const { OnceLock::new() }; SEGS];
    static NEXT: AtomicU32 = AtomicU32::new(1);
    static FREE: parking_lot::Mutex<Vec<u32>> = parking_lot::const_mutex(Vec::new());

    #[inline]
    pub(crate) fn get(id: u32) -> &'static CtxSlot {
        let seg = SEGMENTS[(id >> SEG_SHIFT) as usize]
            .get_or_init(|| (0..SEG_LEN).map(|_| CtxSlot::new()).collect());
        &seg[id as usize & (SEG_LEN - 1)]
    }

    /// Per-thread state: cached slots bound to this thread, and the classes of the
    /// contexts active on it (for the nested-context check).
    pub(crate) struct Local {
        free: Vec<u32>,
        pub(crate) active: Vec<usize>,
    }

    impl Drop for Local {
        fn drop(&mut self) {
            for &id in &self.free {
                get(id).unbind();
            }
            FREE.lock().append(&mut self.free);
        }
    }

    thread_local! {
        static LOCAL: RefCell<Local> = const {
            RefCell::new(Local { free: Vec::new(), active: Vec::new() })
        };
    }

    fn global_alloc() -> u32 {
        loop {
            if let Some(id) = FREE.lock().pop() {
                get(id).bind();
                return id;
            }
            let id = NEXT.load(Ordering::Relaxed);
            if id < MAX {
                if NEXT
                    .compare_exchange(id, id + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    get(id).bind();
                    return id;
                }
                continue;
            }
            // Millions of live contexts: wait for one to end rather than fail.
            std::thread::yield_now();
        }
    }

    /// A slot bound to this thread, and whether a context of `class` (an address) was
    /// already active on this thread. Records `class` as active.
    pub(crate) fn alloc(class: usize) -> (u32, bool) {
        LOCAL
            .try_with(|l| {
                let mut l = l.borrow_mut();
                let nested = l.active.contains(&class);
                l.active.push(class);
                let id = match l.free.pop() {
                    Some(id) => id,
                    None => global_alloc(),
                };
                (id, nested)
            })
            .unwrap_or_else(|_| (global_alloc(), false))
    }

    /// End a context of `class` that used slot `id`. With `leak`, the slot is never
    /// reused (a mutex may still name it).
    pub(crate) fn free(id: u32, class: usize, leak: bool) {
        let done = LOCAL.try_with(|l| {
            let mut l = l.borrow_mut();
            // `active` is a multiset (only `contains` is asked of it): no order to keep,
            // so no shifting (`remove` called memmove on every context end).
            if let Some(i) = l.active.iter().rposition(|&c| c == class) {
                l.active.swap_remove(i);
            }
            if !leak {
                l.free.push(id);
            }
        });
        if done.is_err() && !leak {
            get(id).unbind();
            FREE.lock().push(id);
        }
    }
}

#[cfg(loom)]
mod table {
    //! Under loom: a small table per model execution, no thread-local cache.
    use super::CtxSlot;
    use crate::shim::Mutex;

    const MAX: usize = 8;

    struct Table {
        slots: Vec<CtxSlot>,
        free: Mutex<Vec<u32>>,
    }

    loom::lazy_static! {
        static ref TABLE: Table = Table {
            slots: (0..MAX).map(|_| CtxSlot::new()).collect(),
            free: Mutex::new((1..MAX as u32).rev().collect()),
        };
    }

    pub(crate) fn get(id: u32) -> &'static CtxSlot {
        &TABLE.slots[id as usize]
    }

    pub(crate) fn alloc(_class: usize) -> (u32, bool) {
        let id = TABLE
            .free
            .lock()
            .pop()
            .expect("loom models use at most 7 contexts at once");
        get(id).bind();
        (id, false)
    }

    pub(crate) fn free(id: u32, _class: usize, leak: bool) {
        if !leak {
            TABLE.free.lock().push(id);
        }
    }
}

pub(crate) use table::{alloc, free, get};

/// Whether `a` is younger than `b`: stamps grow with time and wrap, so compare the
/// signed difference (the kernel's `__ww_ctx_less`).
#[inline]
pub fn younger(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) > 0
}
