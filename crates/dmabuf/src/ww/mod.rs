//! Wound/wait mutexes: deadlock-free locking of any set of locks of one class.
//!
//! (API skeleton: bodies to be written.)

use crate::error::{Error, Result};
use crate::interrupt::Interrupt;
use lockdep::LockClass;
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

pub mod selftest;

/// Which algorithm resolves contention between acquire contexts of a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WwAlgorithm {
    /// An older context wounds a younger holder, which backs off at its next contended
    /// lock (`DEFINE_WW_CLASS`).
    WoundWait,
    /// A younger context that would wait for an older one dies (`DEFINE_WD_CLASS`);
    /// `dma_resv` uses this.
    WaitDie,
}

/// A class of wound/wait mutexes: the algorithm, the stamp counter of its contexts, and
/// the two lockdep classes (mutexes, and acquire contexts as their nest lock).
pub struct WwClass {
    name: &'static str,
    algorithm: WwAlgorithm,
    stamp: std::sync::atomic::AtomicU64,
    mutex_class: LockClass,
    acquire_class: LockClass,
}

impl WwClass {
    /// A wound-wait class.
    pub const fn wound_wait(name: &'static str, acquire_name: &'static str) -> Self {
        Self::new(name, acquire_name, WwAlgorithm::WoundWait)
    }

    /// A wait-die class.
    pub const fn wait_die(name: &'static str, acquire_name: &'static str) -> Self {
        Self::new(name, acquire_name, WwAlgorithm::WaitDie)
    }

    const fn new(name: &'static str, acquire_name: &'static str, algorithm: WwAlgorithm) -> Self {
        WwClass {
            name,
            algorithm,
            stamp: std::sync::atomic::AtomicU64::new(0),
            mutex_class: LockClass::new(name),
            acquire_class: LockClass::new(acquire_name),
        }
    }

    /// A class made at run time (tests, dynamic users); lives for the rest of the program.
    pub fn leak(name: &str, algorithm: WwAlgorithm) -> &'static WwClass {
        let n: &'static str = Box::leak(name.to_string().into_boxed_str());
        let a: &'static str = Box::leak(format!("{name}_acquire").into_boxed_str());
        Box::leak(Box::new(Self::new(n, a, algorithm)))
    }

    /// The class name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The algorithm.
    pub fn algorithm(&self) -> WwAlgorithm {
        self.algorithm
    }

    /// The lockdep class of the mutexes.
    pub fn lock_class(&'static self) -> &'static LockClass {
        &self.mutex_class
    }

    /// The lockdep class of the acquire contexts.
    pub fn acquire_class(&'static self) -> &'static LockClass {
        &self.acquire_class
    }

    #[allow(dead_code)]
    fn next_stamp(&self) -> u64 {
        self.stamp
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .wrapping_add(1)
    }
}

/// An acquire context: one locking transaction over mutexes of one class.
pub struct AcquireCtx {
    class: &'static WwClass,
    _not_send: PhantomData<*const ()>,
}

impl AcquireCtx {
    /// Begin a transaction (`ww_acquire_init`).
    #[track_caller]
    pub fn new(class: &'static WwClass) -> Self {
        let _ = class;
        todo!()
    }

    /// The class.
    pub fn class(&self) -> &'static WwClass {
        self.class
    }

    /// End the locking phase (`ww_acquire_done`).
    #[track_caller]
    pub fn done(&self) {
        todo!()
    }

    /// End the transaction (`ww_acquire_fini`).
    #[track_caller]
    pub fn fini(self) -> Result<()> {
        todo!()
    }
}

/// A wound/wait mutex protecting a `T`.
pub struct WwMutex<T: ?Sized> {
    class: &'static WwClass,
    data: UnsafeCell<T>,
}

// SAFETY: skeleton; the real type serialises access to `data`.
unsafe impl<T: ?Sized + Send> Send for WwMutex<T> {}
// SAFETY: skeleton; the real type serialises access to `data`.
unsafe impl<T: ?Sized + Send> Sync for WwMutex<T> {}

impl<T> WwMutex<T> {
    /// A new unlocked mutex of `class`.
    pub fn new(class: &'static WwClass, data: T) -> Self {
        WwMutex {
            class,
            data: UnsafeCell::new(data),
        }
    }
}

impl<T: ?Sized> WwMutex<T> {
    /// The class.
    pub fn class(&self) -> &'static WwClass {
        self.class
    }

    /// Lock within `ctx`.
    #[track_caller]
    pub fn lock<'a>(&'a self, ctx: &'a AcquireCtx) -> Result<WwGuard<'a, T>> {
        let _ = ctx;
        todo!()
    }

    /// Lock within `ctx`, interruptibly.
    #[track_caller]
    pub fn lock_interruptible<'a>(
        &'a self,
        ctx: &'a AcquireCtx,
        intr: &Interrupt,
    ) -> Result<WwGuard<'a, T>> {
        let _ = (ctx, intr);
        todo!()
    }

    /// Lock after `Deadlock` (`ww_mutex_lock_slow`).
    #[track_caller]
    pub fn lock_slow<'a>(&'a self, ctx: &'a AcquireCtx) -> Result<WwGuard<'a, T>> {
        let _ = ctx;
        todo!()
    }

    /// Lock after `Deadlock`, interruptibly.
    #[track_caller]
    pub fn lock_slow_interruptible<'a>(
        &'a self,
        ctx: &'a AcquireCtx,
        intr: &Interrupt,
    ) -> Result<WwGuard<'a, T>> {
        let _ = (ctx, intr);
        todo!()
    }

    /// Lock without a context, as a plain mutex.
    #[track_caller]
    pub fn lock_no_ctx(&self) -> WwGuard<'_, T> {
        todo!()
    }

    /// Try to lock, never blocking.
    #[track_caller]
    pub fn try_lock<'a>(&'a self, ctx: Option<&'a AcquireCtx>) -> Option<WwGuard<'a, T>> {
        let _ = ctx;
        todo!()
    }

    /// Whether some thread holds the lock.
    pub fn is_locked(&self) -> bool {
        todo!()
    }
}

/// Holds a [`WwMutex`] locked; unlocks on drop.
pub struct WwGuard<'a, T: ?Sized> {
    mutex: &'a WwMutex<T>,
    _ctx: Option<&'a AcquireCtx>,
}

impl<T: ?Sized> WwGuard<'_, T> {
    /// Unlock now (same as dropping the guard).
    #[track_caller]
    pub fn unlock(self) {}
}

impl<T: ?Sized> Drop for WwGuard<'_, T> {
    fn drop(&mut self) {}
}

impl<T: ?Sized> Deref for WwGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: skeleton; the real guard proves exclusive access.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T: ?Sized> DerefMut for WwGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: skeleton; the real guard proves exclusive access.
        unsafe { &mut *self.mutex.data.get() }
    }
}

/// Lock every mutex of `set` within `ctx` with the back-off protocol; duplicates are
/// locked once. Returns the guards in the order of the first occurrence of each mutex.
#[track_caller]
pub fn lock_all<'a, T: ?Sized>(
    ctx: &'a AcquireCtx,
    set: &[&'a WwMutex<T>],
) -> Result<Vec<WwGuard<'a, T>>> {
    let _ = (ctx, set);
    Err(Error::Invalid("skeleton"))
}
