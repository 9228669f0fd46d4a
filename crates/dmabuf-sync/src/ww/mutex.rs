//! Wound/wait mutexes: the state word, the lock and unlock paths (fast, contended,
//! hand-off), the wait list, and the guard.
//!
//! # DOC: the state word
//!
//! ```text
//!  63            32 31      4     3       2         1        0
//! +----------------+---------+-------+---------+---------+--------+
//! | holder         |    0    | NOCTX | HANDOFF | WAITERS | LOCKED |
//! +----------------+---------+-------+---------+---------+--------+
//! ```
//!
//! - `LOCKED`: someone holds the mutex.
//! - `WAITERS`: the wait list is not empty. While it is set, the word only changes with
//!   the wait-list lock held, so a contender under that lock sees a stable holder.
//! - `HANDOFF`: the first waiter was woken and found the mutex taken again; the next
//!   unlock hands the mutex to the first waiter. Only set with `LOCKED` and `WAITERS`.
//! - `NOCTX`: the holder took the mutex without a context.
//! - holder: with `NOCTX`, the holder's thread id; else the [context
//!   slot](super::slot) of the holder.
//!
//! Uncontended lock is one compare-and-swap `0 → LOCKED | slot` (or `LOCKED | NOCTX |
//! thread id`, the id a thread-local read), which takes the lock and publishes the holder
//! at once; uncontended unlock is the reverse swap. Any other case goes through the wait
//! list, ordered as in the kernel: waiters with a context by stamp (oldest first),
//! waiters without one first-in first-out, in between. Waiters sleep with `park`; unlock
//! wakes the first waiter. A free lock may be taken by a newcomer before the woken waiter
//! runs (lock stealing), as in the kernel, but at most once per wake-up: a first waiter
//! that wakes to find the mutex taken sets `HANDOFF`, and the next unlock writes that
//! waiter into the word as the holder and wakes it (the kernel's `MUTEX_FLAG_HANDOFF`).
//! The waiter's position in the list is unchanged by this, so wait-die and wound-wait
//! decide as before; a handed-over waiter takes the mutex even if it was about to die
//! or was wounded (it then holds it, and no longer waits), as in the kernel.

use super::context::AcquireCtx;
use super::slot::{self, younger};
use super::{ld, misuse, WwClass};
use crate::error::{Error, Result};
use crate::interrupt::Interrupt;
use crate::shim::{self, current, thread_id, AtomicU64, Mutex, Ordering, Thread};
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

const LOCKED: u64 = 1;
const WAITERS: u64 = 2;
/// Set by the first waiter when it was woken and found the mutex taken again: the next
/// unlock hands the mutex to the first waiter instead of freeing it. Only set together
/// with LOCKED and WAITERS.
pub(super) const HANDOFF: u64 = 4;
/// The holder took the mutex without a context; the holder field is its thread id.
const NOCTX: u64 = 8;
/// The bits that are not the holder's identity.
const FLAGS: u64 = WAITERS | HANDOFF;
/// How many times a contender polls a held mutex before it queues and sleeps: std's
/// mutex spins as many times. With one `PAUSE` each, about 2.5 µs on the reference VM
/// (Zen 5, ~24 ns per `PAUSE`), against tens of µs for a futex sleep and wake-up; long
/// enough for a holder that is running, short enough not to waste much on one that was
/// preempted. Between 25 and 400 the random-sets bench could not tell them apart.
#[cfg(not(loom))]
const SPIN_LIMIT: u32 = 100;
const SLOT_SHIFT: u32 = 32;

/// The context slot of the holder in `state`; 0 when the holder has no context.
fn holder_slot(state: u64) -> u32 {
    if state & NOCTX != 0 {
        0
    } else {
        (state >> SLOT_SHIFT) as u32
    }
}

/// What a lock without context by this thread writes into the state word.
#[inline]
fn no_ctx_bits() -> u64 {
    LOCKED | NOCTX | (u64::from(thread_id()) << SLOT_SHIFT)
}

/// Whether `state` says that the calling thread holds the mutex, with or without a
/// context. Exact, not a guess: this thread's own holds cannot change while it asks,
/// and another thread's hold never carries this thread's id (a context slot's thread id
/// is written by the thread it is bound to; thread ids are not reused).
fn held_by_this_thread(state: u64) -> bool {
    if state & LOCKED == 0 {
        return false;
    }
    let id = (state >> SLOT_SHIFT) as u32;
    let me = thread_id();
    if state & NOCTX != 0 {
        id == me
    } else {
        id != 0 && slot::get(id).tid.load(Ordering::Relaxed) == me
    }
}

/// The refusal of a lock that this thread already holds outside the asking context.
const SELF_DEADLOCK: &str = "this thread already holds the mutex: waiting for it would deadlock";

/// What a waiter's context looks like to others. `acquired` cannot change while the
/// context waits, so it is copied.
#[derive(Clone, Copy, Debug)]
struct WaiterCtx {
    slot: u32,
    stamp: u64,
    acquired: u32,
}

struct Waiter {
    id: u64,
    thread: Thread,
    ctx: Option<WaiterCtx>,
    /// What the waiter writes into the state word when it takes the mutex: what a
    /// hand-off writes for it.
    bits: u64,
}

#[derive(Default)]
struct WaitList {
    next_id: u64,
    list: Vec<Waiter>,
}

/// A wound/wait mutex protecting a `T`: locked within an [`AcquireCtx`] of its class
/// (deadlock-free, see the module docs), or without one as a plain mutex. Access to the
/// `T` is through the [`WwGuard`] a lock returns.
///
/// Invariant: `data` is accessed only through a [`WwGuard`], and a guard exists only
/// while its thread holds the lock (LOCKED set by that thread, not yet cleared).
pub struct WwMutex<T: ?Sized> {
    class: &'static WwClass,
    pub(super) state: AtomicU64,
    waiters: Mutex<WaitList>,
    data: UnsafeCell<T>,
}

// SAFETY: the mutex hands out access to `data` to one thread at a time (the lock
// serialises guards), so sending it moves a `T` between threads: `T: Send` suffices.
unsafe impl<T: ?Sized + Send> Send for WwMutex<T> {}
// SAFETY: shared references only reach `data` through a guard, and guards are mutually
// exclusive (the LOCKED bit), as for `std::sync::Mutex`: `T: Send` suffices.
unsafe impl<T: ?Sized + Send> Sync for WwMutex<T> {}

impl<T: ?Sized> std::fmt::Debug for WwMutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WwMutex")
            .field("class", &self.class.name)
            .field("locked", &self.is_locked())
            .finish_non_exhaustive()
    }
}

impl AcquireCtx {
    fn slot_bits(&self) -> u64 {
        LOCKED | (u64::from(self.slot) << SLOT_SHIFT)
    }

    fn waiter(&self) -> WaiterCtx {
        WaiterCtx {
            slot: self.slot,
            stamp: self.stamp,
            acquired: self.acquired.get(),
        }
    }

    /// Whether this context, contending for a mutex held in slot `hold` (0: a holder
    /// without context), would wait for it rather than die (wait-die) or wound
    /// (wound-wait). A context that holds nothing always waits. The holder's stamp is read
    /// without the wait lock, so the answer may be stale: it only decides whether to
    /// spin a little longer before the slow path decides for real.
    #[cfg(not(loom))]
    fn would_wait_for(&self, hold: u32) -> bool {
        if self.acquired.get() == 0 || hold == 0 {
            return true;
        }
        let theirs = slot::get(hold).stamp.load(Ordering::Relaxed);
        if self.class.is_wait_die() {
            // Dies at once for an older holder.
            younger(theirs, self.stamp)
        } else {
            // Wounds a younger holder at once; a wounded context backs off at once.
            younger(self.stamp, theirs) && !slot::get(self.slot).wounded.load(Ordering::Relaxed)
        }
    }
}

impl<T> WwMutex<T> {
    /// A new unlocked mutex of `class`. Never blocks; no lockdep call.
    pub fn new(class: &'static WwClass, data: T) -> Self {
        WwMutex {
            class,
            state: AtomicU64::new(0),
            waiters: Mutex::new(WaitList::default()),
            data: UnsafeCell::new(data),
        }
    }

    /// The protected value (no lock needed: the mutex is consumed).
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> WwMutex<T> {
    /// The class: the contexts that may lock it are of this class.
    pub fn class(&self) -> &'static WwClass {
        self.class
    }

    pub(super) fn addr(&self) -> usize {
        self as *const Self as *const u8 as usize
    }

    /// The protected value, through a unique borrow (no lock needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// Lock within `ctx` (`ww_mutex_lock`), waiting while another holder has it. On
    /// success the lock counts in `ctx` until the guard drops.
    ///
    /// # Errors
    ///
    /// In the order they are checked; on every error `ctx` does not hold the mutex and
    /// holds what it held before:
    /// - [`Error::Already`] (EALREADY): `ctx` already holds this mutex;
    /// - [`Error::Invalid`] (EINVAL): a misuse (see the module docs' tables: another
    ///   class, after `done`, no back-off after `Deadlock`, a mutex this thread holds
    ///   outside `ctx`), reported to lockdep;
    /// - [`Error::Deadlock`] (EDEADLK): back off — drop every guard of `ctx`, then
    ///   [`lock_slow`](Self::lock_slow) this mutex. Never returned while `ctx` holds
    ///   nothing.
    ///
    /// # Panics
    ///
    /// On a misuse, when lockdep is on and its policy is to panic (see the module docs'
    /// "debug checks"); the mutex and the context are then as they were.
    #[must_use = "dropping the guard unlocks at once"]
    #[track_caller]
    pub fn lock<'a>(&'a self, ctx: &'a AcquireCtx) -> Result<WwGuard<'a, T>> {
        self.lock_ctx(ctx, None, false)?;
        Ok(self.guard(Some(ctx)))
    }

    /// Lock within `ctx`, interruptibly (`ww_mutex_lock_interruptible`): as
    /// [`lock`](Self::lock), but a wait ends when `intr` fires or its deadline passes.
    ///
    /// # Errors
    ///
    /// As [`lock`](Self::lock), plus [`Error::Interrupted`] (EINTR) when `intr` fired
    /// (or its deadline passed) before the mutex was taken; nothing is held then.
    ///
    /// # Panics
    ///
    /// On a misuse, when lockdep is on and its policy is to panic (see the module docs'
    /// "debug checks"); the mutex and the context are then as they were.
    #[must_use = "dropping the guard unlocks at once"]
    #[track_caller]
    pub fn lock_interruptible<'a>(
        &'a self,
        ctx: &'a AcquireCtx,
        intr: &Interrupt,
    ) -> Result<WwGuard<'a, T>> {
        self.lock_ctx(ctx, Some(intr), false)?;
        Ok(self.guard(Some(ctx)))
    }

    /// Lock after `Deadlock` (`ww_mutex_lock_slow`): `ctx` must hold nothing, and this
    /// must be the mutex that returned `Deadlock`; it then waits for the lock as long as
    /// needed (a context that holds nothing is never told to back off).
    ///
    /// # Errors
    ///
    /// Nothing changes on an error:
    /// - [`Error::Already`] (EALREADY): `ctx` already holds this mutex;
    /// - [`Error::Invalid`] (EINVAL): a misuse, reported — no preceding `Deadlock`,
    ///   another mutex than the contended one, `ctx` still holds locks, another class,
    ///   after `done`, or a mutex this thread holds outside `ctx`.
    ///
    /// # Panics
    ///
    /// On a misuse, when lockdep is on and its policy is to panic (see the module docs'
    /// "debug checks"); the mutex and the context are then as they were.
    #[must_use = "dropping the guard unlocks at once"]
    #[track_caller]
    pub fn lock_slow<'a>(&'a self, ctx: &'a AcquireCtx) -> Result<WwGuard<'a, T>> {
        self.lock_ctx(ctx, None, true)?;
        Ok(self.guard(Some(ctx)))
    }

    /// Lock after `Deadlock`, interruptibly (`ww_mutex_lock_slow_interruptible`): as
    /// [`lock_slow`](Self::lock_slow), but the wait ends when `intr` fires.
    ///
    /// # Errors
    ///
    /// As [`lock_slow`](Self::lock_slow), plus [`Error::Interrupted`] (EINTR) when
    /// `intr` fired (or its deadline passed) before the mutex was taken; nothing is held
    /// then, and the context may `lock_slow` the same mutex again.
    ///
    /// # Panics
    ///
    /// On a misuse, when lockdep is on and its policy is to panic (see the module docs'
    /// "debug checks"); the mutex and the context are then as they were.
    #[must_use = "dropping the guard unlocks at once"]
    #[track_caller]
    pub fn lock_slow_interruptible<'a>(
        &'a self,
        ctx: &'a AcquireCtx,
        intr: &Interrupt,
    ) -> Result<WwGuard<'a, T>> {
        self.lock_ctx(ctx, Some(intr), true)?;
        Ok(self.guard(Some(ctx)))
    }

    /// Lock without a context, as a plain mutex (`ww_mutex_lock(lock, NULL)`); waits as
    /// long as needed. Wound/wait does not apply: mixing such locks with context locks
    /// of one class can deadlock undetected across threads, as in the kernel.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] (EINVAL) when this thread already holds the mutex (with or
    /// without a context): waiting would never end. The kernel would hang there (and
    /// lockdep would report it); here the mutex knows its holder's thread, so the relock
    /// is refused whether lockdep is on or off. Nothing changes.
    ///
    /// # Panics
    ///
    /// On that relock with lockdep on, which reports it as recursive locking first, when
    /// lockdep's policy is to panic; the mutex is then as it was.
    #[must_use = "dropping the guard unlocks at once"]
    #[track_caller]
    #[inline]
    pub fn lock_no_ctx(&self) -> Result<WwGuard<'_, T>> {
        let bits = no_ctx_bits();
        if ld::enabled()
            || self
                .state
                .compare_exchange(0, bits, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            self.lock_no_ctx_slow(bits)?;
        }
        Ok(self.guard(None))
    }

    /// `lock_no_ctx` with lockdep on or the mutex taken.
    #[track_caller]
    #[inline(never)]
    fn lock_no_ctx_slow(&self, bits: u64) -> Result<()> {
        // Only this thread can make or end its own holds: the answer holds until we act.
        let mine = held_by_this_thread(self.state.load(Ordering::Relaxed));
        if ld::enabled() {
            // Reports the recursion (AA) before anything changes.
            ld::acquire(
                self.class.lock_class(),
                self.addr(),
                lockdep::Acquire::write(),
            );
            if mine {
                ld::release(self.class.lock_class(), self.addr());
            }
        }
        if mine {
            return Err(Error::Invalid(SELF_DEADLOCK));
        }
        if self
            .state
            .compare_exchange(0, bits, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            // Without a context and without an interrupt nothing can fail.
            let _ = self.lock_contended(None, bits, None);
        }
        Ok(())
    }

    /// Try to lock, never blocking (`ww_mutex_trylock`). With a context, success counts
    /// as a lock of the context; `None` if the mutex is held (by anyone, this context included), or on a misuse
    /// (reported, as for `lock`). Wound/wait applies to a success as for a contended
    /// `lock`: queued waiters may be told to back off, or the context wounded.
    ///
    /// # Panics
    ///
    /// On a misuse, when lockdep is on and its policy is to panic.
    #[must_use = "dropping the guard unlocks at once"]
    #[track_caller]
    pub fn try_lock<'a>(&'a self, ctx: Option<&'a AcquireCtx>) -> Option<WwGuard<'a, T>> {
        let bits = match ctx {
            Some(c) => {
                if let Err(what) = c.lock_rule(self.addr(), self.class, false) {
                    let _ = misuse(c.class, what);
                    return None;
                }
                if c.acquired.get() == 0 {
                    slot::get(c.slot).wounded.store(false, Ordering::Relaxed);
                }
                c.slot_bits()
            }
            None => no_ctx_bits(),
        };
        // Lockdep first: a report that panics then leaves the mutex as it was.
        let how = lockdep::Acquire::write().trylock();
        let how = match ctx {
            Some(c) => how.nest(c.instance()),
            None => how,
        };
        ld::acquire(self.class.lock_class(), self.addr(), how);
        if self
            .state
            .compare_exchange(0, bits, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
            && !self.try_lock_waiters(ctx, bits)
        {
            ld::release(self.class.lock_class(), self.addr());
            return None;
        }
        if let Some(c) = ctx {
            c.acquired.set(c.acquired.get() + 1);
            c.contending.set(0);
        }
        Some(self.guard(ctx))
    }

    /// Whether some thread holds the lock (`ww_mutex_is_locked`). A snapshot: it may
    /// change as soon as it is read, unless this thread is the holder.
    pub fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & LOCKED != 0
    }

    /// Whether `ctx` holds this mutex (the kernel's `ww_mutex_locking_ctx() == ctx`).
    pub fn is_locked_by(&self, ctx: &AcquireCtx) -> bool {
        let s = self.state.load(Ordering::Relaxed);
        s & LOCKED != 0 && holder_slot(s) == ctx.slot
    }

    /// Whether lockdep knows this thread to hold the mutex. Always false with lockdep
    /// off: use it for diagnostics and convention checks only, never for correctness.
    pub fn is_held_by_current_thread(&self) -> bool {
        lockdep::is_instance_held(self.class.lock_class(), self.addr())
    }

    #[cfg(any(test, feature = "testing"))]
    /// How many threads wait for the mutex (tests and diagnostics); takes the wait-list
    /// lock for a moment. A snapshot.
    pub fn waiter_count(&self) -> usize {
        self.waiters.lock().list.len()
    }

    fn guard<'a>(&'a self, ctx: Option<&'a AcquireCtx>) -> WwGuard<'a, T> {
        WwGuard {
            mutex: self,
            ctx,
            _not_send: PhantomData,
        }
    }

    /// `lock_ctx`'s common case, inlined into the callers: the context may lock more
    /// (same class, not done, not backing off), already holds locks (so there is no
    /// wounded flag to reset), injects no deadlocks, lockdep is off, and the mutex is
    /// free. Everything else, including every error, goes to [`lock_ctx_full`].
    ///
    /// [`lock_ctx_full`]: Self::lock_ctx_full
    #[track_caller]
    #[inline]
    fn lock_ctx(&self, ctx: &AcquireCtx, intr: Option<&Interrupt>, slow: bool) -> Result<()> {
        let acquired = ctx.acquired.get();
        if !slow
            && acquired > 0
            && std::ptr::eq(self.class, ctx.class)
            && !ctx.done.get()
            && ctx.contending.get() == 0
            && ctx.inject.get().is_none()
            && !ld::enabled()
            && self
                .state
                .compare_exchange(0, ctx.slot_bits(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            ctx.acquired.set(acquired + 1);
            return Ok(());
        }
        self.lock_ctx_full(ctx, intr, slow)
    }

    #[track_caller]
    #[inline(never)]
    fn lock_ctx_full(&self, ctx: &AcquireCtx, intr: Option<&Interrupt>, slow: bool) -> Result<()> {
        let bits = ctx.slot_bits();
        // -EALREADY comes first: the holder's slot is written only by its own thread, so
        // "held by this context" is stable here whenever it is read. It is read from the
        // word only when something else failed or would be checked first; otherwise the
        // compare-and-swap below says it (a load before the swap would cost a second
        // cache-line transfer on a contended mutex).
        let already = |s: u64| s & !FLAGS == bits;
        if let Err(what) = ctx.lock_rule(self.addr(), self.class, slow) {
            if already(self.state.load(Ordering::Relaxed)) {
                return Err(Error::Already);
            }
            return Err(misuse(ctx.class, what));
        }
        if ctx.acquired.get() == 0 {
            // Nobody can wound a context that holds nothing: reset after a back-off.
            let wounded = &slot::get(ctx.slot).wounded;
            if wounded.load(Ordering::Relaxed) {
                wounded.store(false, Ordering::Relaxed);
            }
        }
        if ld::enabled() {
            if already(self.state.load(Ordering::Relaxed)) {
                return Err(Error::Already);
            }
            if held_by_this_thread(self.state.load(Ordering::Relaxed)) {
                return Err(misuse(self.class, SELF_DEADLOCK));
            }
            ld::acquire(
                self.class.lock_class(),
                self.addr(),
                lockdep::Acquire::write().nest(ctx.instance()),
            );
        }
        if let Err(s) = self
            .state
            .compare_exchange(0, bits, Ordering::AcqRel, Ordering::Relaxed)
        {
            // With lockdep on these were checked above (and cannot have become true since).
            if already(s) {
                return Err(Error::Already);
            }
            if held_by_this_thread(s) {
                // Held outside this context (without one, or by another context of this
                // thread): waiting would never end, whether lockdep is on or off.
                ld::release(self.class.lock_class(), self.addr());
                return Err(misuse(self.class, SELF_DEADLOCK));
            }
            if let Err(e) = self.lock_contended(Some(ctx), bits, intr) {
                if matches!(e, Error::Deadlock) {
                    ctx.contending.set(self.addr());
                }
                ld::release(self.class.lock_class(), self.addr());
                return Err(e);
            }
        }
        let acquired = ctx.acquired.get() + 1;
        ctx.acquired.set(acquired);
        ctx.contending.set(0);
        if acquired > 1 {
            if let Some(mut inj) = ctx.inject.get() {
                if inj.countdown == 0 {
                    inj.interval = if inj.interval > u32::MAX / 4 {
                        u32::MAX
                    } else {
                        inj.interval * 3 + inj.interval / 2
                    };
                    inj.countdown = inj.interval;
                    ctx.inject.set(Some(inj));
                    self.unlock(Some(ctx));
                    ctx.contending.set(self.addr());
                    return Err(Error::Deadlock);
                }
                inj.countdown -= 1;
                ctx.inject.set(Some(inj));
            }
        }
        Ok(())
    }

    /// `try_lock` when the fast path failed: the mutex may be free with waiters queued
    /// (the first one woken but not yet running). Take it, as the kernel's trylock
    /// would, and wake whoever must now die or wound.
    fn try_lock_waiters(&self, ctx: Option<&AcquireCtx>, bits: u64) -> bool {
        if self.is_locked() {
            return false;
        }
        let w = self.waiters.lock();
        let s = self.state.load(Ordering::SeqCst);
        if s & LOCKED != 0 {
            return false;
        }
        if self
            .state
            .compare_exchange(s, s | bits, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        if let Some(c) = ctx {
            self.check_waiters(&w, c.waiter());
        }
        true
    }

    /// The contended path: queue, sleep, and decide who dies. On success the mutex is
    /// held with `ctx`'s slot published; on error nothing changed.
    fn lock_contended(
        &self,
        ctx: Option<&AcquireCtx>,
        bits: u64,
        intr: Option<&Interrupt>,
    ) -> Result<()> {
        #[cfg(not(loom))]
        if self.spin(ctx, bits) {
            return Ok(());
        }
        let me = ctx.map(AcquireCtx::waiter);
        let wait_die = self.class.is_wait_die();
        let mut w = self.waiters.lock();

        // Once more under the wait lock; else announce a waiter. From the moment WAITERS
        // is set, the state word only changes under the wait lock.
        let mut s = self.state.load(Ordering::SeqCst);
        loop {
            if s & LOCKED == 0 {
                match self
                    .state
                    .compare_exchange(s, s | bits, Ordering::AcqRel, Ordering::SeqCst)
                {
                    Ok(_) => {
                        if let Some(me) = me {
                            self.check_waiters(&w, me);
                        }
                        return Ok(());
                    }
                    Err(x) => s = x,
                }
                continue;
            }
            if s & WAITERS != 0 {
                break;
            }
            match self
                .state
                .compare_exchange(s, s | WAITERS, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(x) => s = x,
            }
        }

        let id = w.next_id;
        w.next_id += 1;
        let waiter = Waiter {
            id,
            thread: current(),
            ctx: me,
            bits,
        };
        match me {
            None => w.list.push(waiter),
            Some(me) => {
                if let Err(e) = Self::add_ctx_waiter(&mut w, waiter, me, wait_die) {
                    if w.list.is_empty() {
                        self.state.fetch_and(!FLAGS, Ordering::SeqCst);
                    }
                    return Err(e);
                }
                if !wait_die {
                    // An older context waiting for a younger holder wounds it.
                    let s = self.state.load(Ordering::SeqCst);
                    Self::wound(holder_slot(s), me);
                }
            }
        }

        #[cfg(not(loom))]
        let mut registration = None;
        let mut woken = false;
        let result = loop {
            let s = self.state.load(Ordering::SeqCst);
            if s & LOCKED == 0 {
                self.state.fetch_or(bits, Ordering::AcqRel);
                break Ok(());
            }
            if s & !FLAGS == bits {
                // Handed over by the unlock (see `unlock_slow`).
                break Ok(());
            }
            #[cfg(not(loom))]
            if let Some(i) = intr {
                if registration.is_none() {
                    let t = current();
                    registration = Some(i.on_interrupt(move || t.unpark()));
                }
                if i.is_interrupted() {
                    break Err(Error::Interrupted);
                }
            }
            if let Some(me) = me {
                if let Err(e) = Self::check_kill(&w, id, me, wait_die, s) {
                    break Err(e);
                }
            }
            // Woken, first in line, and someone took the mutex meanwhile (lock stealing):
            // the next unlock hands it over to the first waiter, so that stealing is
            // bounded (the kernel's MUTEX_FLAG_HANDOFF).
            if woken && s & HANDOFF == 0 && w.list.first().is_some_and(|e| e.id == id) {
                self.state.fetch_or(HANDOFF, Ordering::SeqCst);
            }
            drop(w);
            shim::park_until(intr.and_then(Interrupt::deadline));
            woken = true;
            w = self.waiters.lock();
        };

        // Only this thread removes its own entry, so it is there; were it not, remove
        // nothing (never another waiter's entry) and treat it as not first.
        let first = match w.list.iter().position(|e| e.id == id) {
            Some(pos) => {
                w.list.remove(pos);
                pos == 0
            }
            None => false,
        };
        if let (Ok(()), Some(me)) = (&result, me) {
            // Wound-wait: a lock taken ahead of queued waiters may have to be given up.
            if !wait_die && !first {
                self.check_waiters(&w, me);
            }
        }
        if w.list.is_empty() {
            self.state.fetch_and(!FLAGS, Ordering::SeqCst);
        }
        result
    }

    /// Optimistic spinning (the kernel's `mutex_optimistic_spin`): while the mutex is
    /// held and nobody is queued, poll it a bounded number of times before queueing and
    /// sleeping, since a holder usually lets go within a few hundred nanoseconds and a
    /// sleep/wake-up pair costs tens of microseconds. Returns true with the mutex taken
    /// (`0 → bits`, as the fast path: no waiter was queued, so there is nobody to
    /// check); false to go and queue.
    ///
    /// Spinning changes nothing another thread can see: it is the same as arriving a
    /// little later, so every wound/wait decision is still made under the wait lock.
    /// Spinning stops as soon as a waiter is queued (never steal from queued waiters,
    /// which may be older), and is skipped where the slow path would not wait (see
    /// [`AcquireCtx::would_wait_for`]), so dying and wounding are not delayed.
    #[cfg(not(loom))]
    fn spin(&self, ctx: Option<&AcquireCtx>, bits: u64) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        for _ in 0..SPIN_LIMIT {
            if s & WAITERS != 0 {
                return false;
            }
            if s & LOCKED == 0 {
                match self
                    .state
                    .compare_exchange(s, s | bits, Ordering::AcqRel, Ordering::Relaxed)
                {
                    Ok(_) => return true,
                    Err(now) => {
                        s = now;
                        continue;
                    }
                }
            }
            if let Some(c) = ctx {
                if !c.would_wait_for(holder_slot(s)) {
                    return false;
                }
            }
            std::hint::spin_loop();
            s = self.state.load(Ordering::Relaxed);
        }
        false
    }

    /// Queue a context waiter in stamp order, behind the older contexts and before the
    /// younger ones (context-less waiters keep their places). Wait-die: a lock-holding
    /// requester with an older context ahead dies now; younger lock-holding waiters
    /// behind it are woken to die.
    fn add_ctx_waiter(
        w: &mut WaitList,
        waiter: Waiter,
        me: WaiterCtx,
        wait_die: bool,
    ) -> Result<()> {
        let mut pos = None;
        for i in (0..w.list.len()).rev() {
            let Some(cur) = w.list[i].ctx else { continue };
            if younger(me.stamp, cur.stamp) {
                if wait_die && me.acquired > 0 {
                    return Err(Error::Deadlock);
                }
                break;
            }
            pos = Some(i);
            if wait_die && cur.acquired > 0 && younger(cur.stamp, me.stamp) {
                w.list[i].thread.unpark();
            }
        }
        match pos {
            Some(i) => w.list.insert(i, waiter),
            None => w.list.push(waiter),
        }
        Ok(())
    }

    /// Wound-wait: `wounder` (waiting for the mutex) wounds the holder in `hold_slot` if
    /// it holds locks and the holder is younger. Called with the wait lock held and
    /// WAITERS set, so the holder cannot let go of the mutex (and its slot) meanwhile.
    fn wound(hold_slot: u32, wounder: WaiterCtx) {
        if hold_slot == 0 || wounder.acquired == 0 {
            return;
        }
        let holder = slot::get(hold_slot);
        if younger(holder.stamp.load(Ordering::Acquire), wounder.stamp) {
            holder.wounded.store(true, Ordering::SeqCst);
            holder.wake();
        }
    }

    /// After `holder` took the mutex while waiters were queued: wait-die wakes the first
    /// context waiter if it is younger and holds locks (it will die); wound-wait lets the
    /// first lock-holding older context waiter wound the new holder.
    fn check_waiters(&self, w: &WaitList, holder: WaiterCtx) {
        let wait_die = self.class.is_wait_die();
        for e in &w.list {
            let Some(cur) = e.ctx else { continue };
            if wait_die {
                if cur.acquired > 0 && younger(cur.stamp, holder.stamp) {
                    e.thread.unpark();
                }
                break;
            }
            if cur.acquired > 0 && younger(holder.stamp, cur.stamp) {
                // The holder is this thread: it sees the flag at its next wait.
                slot::get(holder.slot).wounded.store(true, Ordering::SeqCst);
                break;
            }
        }
    }

    /// Whether the waiter `id` (context `me`) must give up with `Deadlock` now.
    fn check_kill(w: &WaitList, id: u64, me: WaiterCtx, wait_die: bool, state: u64) -> Result<()> {
        if me.acquired == 0 {
            return Ok(());
        }
        if !wait_die {
            if slot::get(me.slot).wounded.load(Ordering::SeqCst) {
                return Err(Error::Deadlock);
            }
            return Ok(());
        }
        let hold = holder_slot(state);
        if hold != 0 && younger(me.stamp, slot::get(hold).stamp.load(Ordering::Acquire)) {
            return Err(Error::Deadlock);
        }
        for e in &w.list {
            if e.id == id {
                break;
            }
            if e.ctx.is_some() {
                return Err(Error::Deadlock);
            }
        }
        Ok(())
    }

    #[track_caller]
    #[inline]
    fn unlock(&self, ctx: Option<&AcquireCtx>) {
        let bits = match ctx {
            Some(c) => {
                c.acquired.set(c.acquired.get().saturating_sub(1));
                c.slot_bits()
            }
            None => no_ctx_bits(),
        };
        if self
            .state
            .compare_exchange(bits, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            self.unlock_slow();
        }
        // Lockdep after the mutex is free: a report that panics must not leave it locked.
        if ld::enabled() {
            self.lockdep_release();
        }
    }

    /// Lockdep's side of an unlock, out of line so that the unlock fast path stays small.
    #[track_caller]
    #[inline(never)]
    fn lockdep_release(&self) {
        ld::release(self.class.lock_class(), self.addr());
    }

    #[cold]
    fn unlock_slow(&self) {
        let w = self.waiters.lock();
        let first = w.list.first();
        if let Some(first) = first {
            if self.state.load(Ordering::SeqCst) & HANDOFF != 0 {
                // Hand the mutex to the first waiter: it stays locked, the holder
                // becomes the waiter, and nobody can steal it before the waiter runs.
                // With WAITERS set every change of the word is made under the wait
                // lock, which we hold: a plain store loses nothing.
                self.state.store(WAITERS | first.bits, Ordering::SeqCst);
                #[cfg(all(test, loom))]
                super::loom_tests::HANDOFFS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                first.thread.unpark();
                return;
            }
        }
        // Keep only WAITERS: the lock and the holder go.
        self.state.fetch_and(WAITERS, Ordering::SeqCst);
        if let Some(first) = first {
            first.thread.unpark();
        }
    }
}

/// Holds a [`WwMutex`] locked; unlocks on drop (`ww_mutex_unlock`), which also counts
/// the lock out of its context. Dereferences to the protected value.
///
/// It borrows the mutex and, for a lock within a context, the context, so neither can
/// go while it lives; it is `!Send` (the unlock must happen on the locking thread).
///
/// Invariant: while the guard lives, its thread holds the mutex.
#[must_use = "dropping the guard unlocks at once"]
pub struct WwGuard<'a, T: ?Sized> {
    mutex: &'a WwMutex<T>,
    ctx: Option<&'a AcquireCtx>,
    _not_send: PhantomData<*const ()>,
}

impl<T: ?Sized> WwGuard<'_, T> {
    /// Unlock now (same as dropping the guard): the first waiter, if any, is woken or
    /// handed the mutex.
    #[track_caller]
    pub fn unlock(self) {}

    /// The mutex this guard holds.
    pub fn mutex(&self) -> &WwMutex<T> {
        self.mutex
    }
}

impl<T: ?Sized> Drop for WwGuard<'_, T> {
    #[track_caller]
    #[inline]
    fn drop(&mut self) {
        self.mutex.unlock(self.ctx);
    }
}

impl<T: ?Sized> Deref for WwGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this thread holds the lock (type
        // invariant), so no other guard can reach `data` until it drops.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T: ?Sized> DerefMut for WwGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; `&mut self` makes this the only access through this
        // guard.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T: ?Sized + std::fmt::Debug> std::fmt::Debug for WwGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}
