//! The synchronisation primitives the wound/wait state machine is written against.
//!
//! Normally these are `std` atomics and threads plus a `parking_lot` mutex for the wait
//! lists. Built with `RUSTFLAGS="--cfg loom"`, the same names come from `loom`, so the
//! models in `ww::loom_tests` explore every interleaving of the very code that runs in
//! production (the crossbeam shim pattern).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use loom::thread::{current, Thread};
#[cfg(not(loom))]
pub(crate) use std::thread::{current, Thread};

use std::time::Instant;

/// Hands out thread ids: 1, 2, ... (0 is "none"). Not modelled under loom: the ids are
/// only compared for equality.
static NEXT_THREAD_ID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

#[cold]
fn fresh_thread_id() -> u32 {
    loop {
        let id = NEXT_THREAD_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if id != 0 {
            return id;
        }
    }
}

#[cfg(not(loom))]
std::thread_local! {
    static THREAD_ID: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}
#[cfg(loom)]
loom::thread_local! {
    static THREAD_ID: std::cell::Cell<u32> = std::cell::Cell::new(0);
}

/// A number naming the calling thread (never 0), given on its first call: what a mutex
/// records as the owner of a lock taken without context, so that a relock by the same
/// thread is refused instead of waiting forever. One thread-local read after the first
/// call; no syscall. Ids are not reused before 2^32 - 1 threads have asked for one.
#[inline]
pub(crate) fn thread_id() -> u32 {
    THREAD_ID
        .try_with(|c| match c.get() {
            0 => {
                let id = fresh_thread_id();
                c.set(id);
                id
            }
            id => id,
        })
        // Thread-local storage already torn down (a lock taken in a TLS destructor): an
        // id of its own, that names no other thread.
        .unwrap_or_else(|_| fresh_thread_id())
}

/// A small mutex for wait lists and slot bookkeeping. Poisoning does not exist here: a
/// panic while it is held cannot leave the wait list half-edited (every edit is one
/// `Vec` call).
pub(crate) struct Mutex<T> {
    #[cfg(not(loom))]
    inner: parking_lot::Mutex<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
}

#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex {
            #[cfg(not(loom))]
            inner: parking_lot::Mutex::new(value),
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(value),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(loom))]
        {
            self.inner.lock()
        }
        #[cfg(loom)]
        {
            self.inner.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

/// Sleep until unparked (spurious returns allowed), or at the latest until `deadline`.
pub(crate) fn park_until(deadline: Option<Instant>) {
    #[cfg(not(loom))]
    match deadline {
        Some(d) => {
            let now = Instant::now();
            if d > now {
                std::thread::park_timeout(d - now);
            }
        }
        None => std::thread::park(),
    }
    #[cfg(loom)]
    {
        // Models never use deadlines.
        let _ = deadline;
        loom::thread::park();
    }
}
