//! The one place where the crate's concurrency primitives switch between the real ones
//! and [loom](https://docs.rs/loom)'s (the pattern of crossbeam's loom shim).
//!
//! The ww state machine ([`crate::ww`]), the fence state machine ([`crate::fence`]) and
//! the reservation object's RCU cell ([`crate::resv::rcu`]) are written against the names
//! below. A normal build gets `std` atomics and threads, `parking_lot`'s mutex and Linux
//! futexes; a build with `RUSTFLAGS="--cfg loom"` gets loom's, so that the loom models
//! (`ww::loom_tests`, `fence::loom_tests`, `resv::rcu::loom_tests`) explore every
//! interleaving of the very code that runs in production:
//!
//! ```text
//! LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p dmabuf-sync --release --lib loom
//! ```
//!
//! | name | normally | under loom |
//! |---|---|---|
//! | `Atomic*`, `fence`, [`Ordering`] | `std::sync::atomic` | `loom::sync::atomic` |
//! | [`Arc`] | `std::sync::Arc` | `loom::sync::Arc` |
//! | [`Mutex`] | `parking_lot::Mutex` | a wrapper of `loom::sync::Mutex` with the same infallible `lock()` |
//! | [`tls!`](tls) | `std::thread_local!` (const-initialised) | `loom::thread_local!` |
//! | [`Thread`], [`current`], [`park_until`] | `std::thread` (`park_timeout`) | `loom::thread` (deadlines ignored) |
//! | [`futex_wait`], [`futex_wake_all`] | `FUTEX_WAIT` / `FUTEX_WAKE` (private) | a yield / nothing |
//! | [`model_yield`], [`loom_seqcst_fence`] | nothing | a yield / a `SeqCst` fence |
//! | [`thread_id`] | a thread-local id | the same, on loom's thread-local |
//! | [`lockdep`] | the `lockdep` calls | no-ops, lockdep off |
//!
//! Why each differs under loom: loom runs every model thread on one OS thread and knows
//! only its own primitives. A real sleep (futex, park) or a real lock would block the
//! one OS thread and hang the model, so waits become loom parks or yields (callers loop
//! on their condition, so a spurious return is always allowed); a busy loop must yield
//! or loom explores it forever; thread-locals must be per model thread; and lockdep,
//! which keys its held-lock stacks by OS thread, would see every model thread as one.
//! Loom models `SeqCst` accesses only as acquire/release, hence the explicit fence.
//!
//! What is deliberately *not* switched: counters that need no model (class stamp
//! counters, the deadlock-injection switch, id allocators) stay plain `std` atomics, so
//! that they can live in `static`s; their users name `std::sync::atomic` directly.
//! What stays at the sites, as `cfg(loom)`: *model tuning*, not primitives — the ww
//! mutex skips its optimistic spin and does not model interrupts, the context slot table
//! is a small per-model one (`ww::slot`), the RCU writer flips and sleeps after one poll
//! instead of many, and fence annotations skip lockdep.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;

#[cfg(loom)]
pub(crate) use loom::thread::{current, Thread};
#[cfg(not(loom))]
pub(crate) use std::thread::{current, Thread};

use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Mutex

/// A small mutex for wait lists and bookkeeping, with an infallible `lock()`:
/// `parking_lot`'s. Poisoning does not exist: every user keeps its data consistent at
/// each step (one `Vec` call, one field store), so a panic while it is held leaves
/// nothing half-edited.
#[cfg(not(loom))]
pub(crate) type Mutex<T> = parking_lot::Mutex<T>;

/// Under loom: loom's mutex behind the same infallible `lock()` (a poisoned lock is
/// entered anyway, as `parking_lot` would; loom fails the model on the panic itself).
#[cfg(loom)]
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// ---------------------------------------------------------------------------------------
// Thread-locals

/// Declares one thread-local: `std`'s (const-initialised, so an access is a plain TLS
/// read with no lazy-init check), or loom's under loom (one per model thread).
///
/// ```text
/// shim::tls! {
///     /// Docs.
///     static DEPTH: Cell<u32> = Cell::new(0);
/// }
/// ```
macro_rules! tls {
    ($(#[$m:meta])* static $name:ident : $t:ty = $init:expr;) => {
        #[cfg(not(loom))]
        std::thread_local! { $(#[$m])* static $name: $t = const { $init }; }
        #[cfg(loom)]
        loom::thread_local! { $(#[$m])* static $name: $t = $init; }
    };
}
pub(crate) use tls;

// ---------------------------------------------------------------------------------------
// Thread ids

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

tls! {
    static THREAD_ID: std::cell::Cell<u32> = std::cell::Cell::new(0);
}

/// A number naming the calling thread (never 0), given on its first call: what a ww
/// mutex records as the owner of a lock taken without context (so that a relock by the
/// same thread is refused instead of waiting forever), and what a timeline records as
/// the thread signalling it. One thread-local read after the first call; no syscall.
/// Ids are not reused before 2^32 - 1 threads have asked for one.
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

// ---------------------------------------------------------------------------------------
// Sleeping and waking

/// Sleep until unparked (spurious returns allowed: callers loop on their condition), or
/// at the latest until `deadline`. Under loom a model park; models never use deadlines.
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
        let _ = deadline;
        loom::thread::park();
    }
}

/// Sleep while `*word == expected`, at most `timeout` (relative). Spurious returns are
/// allowed: callers loop on their condition. Under loom a yield (loom cannot block on a
/// futex; the caller's loop lets the model run the waker).
#[cfg(not(loom))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    use rustix::thread::futex;
    let ts = timeout.map(|d| rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    // EAGAIN (value changed), EINTR and ETIMEDOUT all mean "look again".
    let _ = futex::wait(word, futex::Flags::PRIVATE, expected, ts.as_ref());
}

/// Wake every thread sleeping in [`futex_wait`] on `word`. Under loom nothing (nobody
/// sleeps there).
#[cfg(not(loom))]
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    use rustix::thread::futex;
    let _ = futex::wake(word, futex::Flags::PRIVATE, i32::MAX as u32);
}

#[cfg(loom)]
pub(crate) fn futex_wait(_word: &AtomicU32, _expected: u32, _timeout: Option<Duration>) {
    loom::thread::yield_now();
}

#[cfg(loom)]
pub(crate) fn futex_wake_all(_word: &AtomicU32) {}

/// A point in a busy loop where a loom model must be allowed to run another thread
/// (else it would explore the loop forever). Natively nothing: callers that want a CPU
/// hint use `std::hint::spin_loop` themselves.
#[inline(always)]
pub(crate) fn model_yield() {
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// A `SeqCst` fence under loom only. Natively, a handshake made only of `SeqCst`
/// accesses needs no fence (they sit in one total order), but loom models `SeqCst`
/// accesses as acquire/release only, so such a handshake adds this on both sides.
#[inline(always)]
pub(crate) fn loom_seqcst_fence() {
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}

// ---------------------------------------------------------------------------------------
// Lockdep

/// Lockdep calls, or no-ops under loom (lockdep keys its held-lock stacks by OS thread,
/// and every loom model thread runs on the same one).
pub(crate) mod lockdep {
    #[cfg(not(loom))]
    pub(crate) use ::lockdep::{acquire, acquire_pseudo, enabled, release, report};

    #[cfg(loom)]
    pub(crate) fn acquire(_: &'static ::lockdep::LockClass, _: usize, _: ::lockdep::Acquire) {}
    #[cfg(loom)]
    pub(crate) fn acquire_pseudo(
        _: &'static ::lockdep::LockClass,
        _: usize,
        _: ::lockdep::Acquire,
    ) {
    }
    #[cfg(loom)]
    pub(crate) fn release(_: &'static ::lockdep::LockClass, _: usize) {}
    #[cfg(loom)]
    pub(crate) fn report(_: ::lockdep::ReportKind, _: &[&'static ::lockdep::LockClass], _: &str) {}
    #[cfg(loom)]
    pub(crate) fn enabled() -> bool {
        false
    }
}
