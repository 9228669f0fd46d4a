//! Acquire contexts: one locking transaction over mutexes of one class, its stamp, its
//! debug checks, and deadlock injection.

use super::slot;
use super::{ld, misuse, WwClass};
use crate::error::{Error, Result};
use crate::shim::Ordering;
use std::cell::Cell;
use std::marker::PhantomData;

static INJECT_ALL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turn deadlock injection on or off for every context started from now on, on every
/// thread (the kernel's `CONFIG_DEBUG_WW_MUTEX_SLOWPATH`); contexts already started
/// keep what they had. See [`AcquireCtx::with_deadlock_injection`].
pub fn set_deadlock_injection(on: bool) {
    INJECT_ALL.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Spurious-`Deadlock` countdown of one context.
#[derive(Clone, Copy, Debug)]
pub(super) struct Inject {
    pub(super) countdown: u32,
    pub(super) interval: u32,
}

/// Frees a context slot when dropped (see [`AcquireCtx::start`]).
struct FreeSlot {
    slot: u32,
    key: usize,
}

impl Drop for FreeSlot {
    fn drop(&mut self) {
        slot::free(self.slot, self.key, false);
    }
}

/// An acquire context: one locking transaction over mutexes of one class.
///
/// Start it with [`new`](Self::new), lock mutexes with it, optionally mark the end of the
/// locking phase with [`done`](Self::done), unlock everything, and end it with
/// [`fini`](Self::fini) (dropping it ends it too). Guards borrow the context, so it
/// cannot end while they live. It belongs to the thread that started it (`!Send`).
///
/// The context holds no lock itself (to lockdep it is a pseudo-lock of
/// [`WwClass::acquire_class`], held from start to end); the mutexes locked with it are
/// counted in [`acquired`](Self::acquired) until their guards drop.
pub struct AcquireCtx {
    pub(super) class: &'static WwClass,
    pub(super) slot: u32,
    pub(super) stamp: u64,
    pub(super) acquired: Cell<u32>,
    pub(super) done: Cell<bool>,
    /// Address of the mutex that returned `Deadlock`, until it is locked again (0: none).
    pub(super) contending: Cell<usize>,
    ended: Cell<bool>,
    pub(super) inject: Cell<Option<Inject>>,
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for AcquireCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcquireCtx")
            .field("class", &self.class.name)
            .field("stamp", &self.stamp)
            .field("acquired", &self.acquired.get())
            .field("done", &self.done.get())
            .finish()
    }
}

impl AcquireCtx {
    #[cfg(any(test, feature = "testing"))]
    /// Whether deadlock injection is armed on this context (made while
    /// [`set_deadlock_injection`] was on, or with [`AcquireCtx::with_deadlock_injection`]).
    pub fn deadlock_injection_armed(&self) -> bool {
        self.inject.get().is_some()
    }

    /// Begin a transaction (`ww_acquire_init`): takes the next stamp of `class`. Never
    /// blocks. Deadlock injection is armed if [`set_deadlock_injection`] is on.
    ///
    /// Starting a second context of a class on a thread where one is active is the
    /// kernel's nested-context misuse (two contexts of one thread can deadlock each
    /// other undetected): it is reported, and the context is still made;
    /// [`try_new`](Self::try_new) refuses it instead.
    ///
    /// # Panics
    ///
    /// On that misuse, when lockdep is on and its policy is to panic (the module docs'
    /// "debug checks"); the thread then has no new context.
    #[must_use = "dropping the context ends it at once"]
    #[track_caller]
    pub fn new(class: &'static WwClass) -> Self {
        let inject = INJECT_ALL.load(std::sync::atomic::Ordering::Relaxed);
        Self::start(class, inject, false).unwrap_or_else(|(ctx, _)| ctx)
    }

    /// Like [`new`](Self::new), but a nested context of the same class on this thread is
    /// refused.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] (EINVAL): this thread already has an active context of
    /// `class` (reported first); no context is made.
    ///
    /// # Panics
    ///
    /// On that refusal, when lockdep is on and its policy is to panic.
    #[must_use = "dropping the context ends it at once"]
    #[track_caller]
    pub fn try_new(class: &'static WwClass) -> Result<Self> {
        let inject = INJECT_ALL.load(std::sync::atomic::Ordering::Relaxed);
        Self::start(class, inject, true).map_err(|(_, e)| e)
    }

    /// A context with deadlock injection on: after every few successful locks (while it
    /// holds more than one), `lock` unlocks what it just took and returns a spurious
    /// `Deadlock`. The countdown starts from the low 4 bits of the stamp and the
    /// interval grows by 3.5× each time, as the kernel's
    /// `CONFIG_DEBUG_WW_MUTEX_SLOWPATH`. Otherwise as [`new`](Self::new).
    ///
    /// # Panics
    ///
    /// As [`new`](Self::new).
    #[must_use = "dropping the context ends it at once"]
    #[track_caller]
    pub fn with_deadlock_injection(class: &'static WwClass) -> Self {
        Self::start(class, true, false).unwrap_or_else(|(ctx, _)| ctx)
    }

    #[track_caller]
    fn start(
        class: &'static WwClass,
        inject: bool,
        refuse_nested: bool,
    ) -> std::result::Result<Self, (Self, Error)> {
        let stamp = class.next_stamp();
        let key = class as *const WwClass as usize;
        let (slot, nested) = slot::alloc(key);
        // Until lockdep knows the context, a report that panics must only free the slot:
        // `ended` stays set (so dropping `ctx` does nothing) and `unwind` frees it.
        let unwind = FreeSlot { slot, key };
        let shared = slot::get(slot);
        shared.stamp.store(stamp, Ordering::Relaxed);
        shared.wounded.store(false, Ordering::Relaxed);
        let ctx = AcquireCtx {
            class,
            slot,
            stamp,
            acquired: Cell::new(0),
            done: Cell::new(false),
            contending: Cell::new(0),
            ended: Cell::new(true),
            inject: Cell::new(inject.then_some(Inject {
                countdown: (stamp & 0xf) as u32,
                interval: 1,
            })),
            _not_send: PhantomData,
        };
        let what = "a second acquire context of this class started on a thread that has one";
        if nested && refuse_nested {
            drop(unwind);
            return Err((ctx, misuse(class, what)));
        }
        let err = if nested {
            Some(misuse(class, what))
        } else {
            None
        };
        if let Some(prime) = class.prime {
            if ld::enabled() {
                prime();
            }
        }
        // A pseudo-lock: starting a context never sleeps (its locks do).
        ld::acquire_pseudo(
            class.acquire_class(),
            ctx.instance(),
            lockdep::Acquire::write(),
        );
        std::mem::forget(unwind);
        ctx.ended.set(false);
        match err {
            Some(err) => Err((ctx, err)),
            None => Ok(ctx),
        }
    }

    /// The lockdep instance id of the context: unique among live contexts, and never an
    /// address.
    pub(super) fn instance(&self) -> usize {
        (1usize << (usize::BITS - 1)) | self.slot as usize
    }

    /// The class of the context (the only class it can lock).
    pub fn class(&self) -> &'static WwClass {
        self.class
    }

    /// The stamp: smaller (in wrap-around order) is older.
    pub fn stamp(&self) -> u64 {
        self.stamp
    }

    /// How many mutexes the context holds: locks taken with it whose guards are alive.
    pub fn acquired(&self) -> u32 {
        self.acquired.get()
    }

    /// Whether an older context wounded this one (wound-wait; cleared when the context
    /// locks while holding nothing).
    pub fn is_wounded(&self) -> bool {
        slot::get(self.slot).wounded.load(Ordering::Relaxed)
    }

    /// End the locking phase (`ww_acquire_done`): locking with this context afterwards is
    /// a misuse, refused with [`Error::Invalid`]. The locks it holds stay held. Calling
    /// it twice is reported (and changes nothing).
    ///
    /// # Panics
    ///
    /// On a second call, when lockdep is on and its policy is to panic.
    #[track_caller]
    pub fn done(&self) {
        if self.done.replace(true) {
            let _ = misuse(self.class, "ww_acquire_done called twice");
        }
    }

    /// End the transaction (`ww_acquire_fini`). Every guard must be gone (the borrow
    /// checker sees to it, short of `mem::forget`). Dropping the context does the same,
    /// ignoring the error.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] (EINVAL): the context still holds locks (guards leaked with
    /// `mem::forget`); it is reported, the context ends anyway, and its locks stay
    /// locked forever.
    ///
    /// # Panics
    ///
    /// On that misuse, when lockdep is on and its policy is to panic (the context has
    /// ended by then).
    #[track_caller]
    pub fn fini(self) -> Result<()> {
        self.end()
    }

    #[track_caller]
    fn end(&self) -> Result<()> {
        if self.ended.replace(true) {
            return Ok(());
        }
        let held = self.acquired.get();
        // Free the slot before telling lockdep and reporting: a report may panic.
        slot::free(self.slot, self.class as *const WwClass as usize, held > 0);
        ld::release(self.class.acquire_class(), self.instance());
        if held > 0 {
            return Err(misuse(
                self.class,
                "acquire context ended while it still holds locks",
            ));
        }
        Ok(())
    }

    /// The debug checks made before locking `m` (the kernel makes them after, and
    /// warns); `slow` for `lock_slow`. Returns the misuse, for the caller to report.
    pub(super) fn lock_rule(
        &self,
        m: usize,
        class: &'static WwClass,
        slow: bool,
    ) -> std::result::Result<(), &'static str> {
        if !std::ptr::eq(class, self.class) {
            return Err("mutex and acquire context are of different classes");
        }
        if self.done.get() {
            return Err("lock after ww_acquire_done");
        }
        let contending = self.contending.get();
        if slow && contending == 0 {
            return Err("lock_slow without a preceding Deadlock");
        }
        if contending != 0 {
            if self.acquired.get() > 0 {
                return Err("lock after Deadlock while still holding locks: back off first");
            }
            if contending != m {
                return Err("after Deadlock, another lock taken before the contended one");
            }
        }
        Ok(())
    }
}

impl Drop for AcquireCtx {
    fn drop(&mut self) {
        let _ = self.end();
    }
}
