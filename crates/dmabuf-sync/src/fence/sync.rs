//! A small shim so the fence state machine runs both on real threads and under `loom`
//! (`RUSTFLAGS="--cfg loom"`), in the manner of crossbeam's `loom` shims.
//!
//! Under loom the atomics, the mutex and thread-locals are loom's; futex waits become
//! yields (loom runs every model thread on one OS thread, so a real sleep would hang the
//! model) and futex wakes do nothing. Lockdep is skipped under loom for the same reason.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize};

/// A mutex with parking_lot's infallible `lock()`.
#[cfg(not(loom))]
pub(crate) type Mutex<T> = parking_lot::Mutex<T>;

#[cfg(loom)]
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(t: T) -> Self {
        Mutex(loom::sync::Mutex::new(t))
    }
    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0.lock().unwrap()
    }
}

/// Declares a thread-local (std's, or loom's under loom).
macro_rules! fence_thread_local {
    ($(#[$m:meta])* static $name:ident : $t:ty = $init:expr;) => {
        #[cfg(not(loom))]
        std::thread_local! { $(#[$m])* static $name: $t = const { $init }; }
        #[cfg(loom)]
        loom::thread_local! { $(#[$m])* static $name: $t = $init; }
    };
}
pub(crate) use fence_thread_local;

/// Sleep while `*word == expected`, at most `timeout` (relative). Spurious returns are
/// allowed: callers loop on their condition.
#[cfg(not(loom))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<std::time::Duration>) {
    use rustix::thread::futex;
    let ts = timeout.map(|d| rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    // EAGAIN (value changed), EINTR and ETIMEDOUT all mean "look again".
    let _ = futex::wait(word, futex::Flags::PRIVATE, expected, ts.as_ref());
}

/// Wake every thread sleeping in [`futex_wait`] on `word`.
#[cfg(not(loom))]
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    use rustix::thread::futex;
    let _ = futex::wake(word, futex::Flags::PRIVATE, i32::MAX as u32);
}

#[cfg(loom)]
pub(crate) fn futex_wait(_word: &AtomicU32, _expected: u32, _timeout: Option<std::time::Duration>) {
    loom::thread::yield_now();
}

#[cfg(loom)]
pub(crate) fn futex_wake_all(_word: &AtomicU32) {}
