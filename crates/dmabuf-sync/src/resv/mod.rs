//! Reservation objects (`dma_resv`): a wound/wait lock plus a list of fences, each tagged
//! with a [`Usage`], that orders every access to a buffer.
//!
//! # Locking
//!
//! Writers lock the object ([`Resv::lock`] and friends, all taking the global wait-die
//! class [`RESERVATION_WW_CLASS`]) and mutate through the returned [`ResvGuard`]. The guard
//! is also the *proof* that the lock is held: calls of other layers that need the lock
//! take `&ResvGuard` and check that it is the guard of *their* object.
//!
//! Readers never lock. As in the kernel, the fences live in a fixed-capacity array that
//! unlocked readers walk (an RCU-style cell of slots, crate-private) while the lock holder appends into reserved
//! slots and replaces entries in place; a replaced fence's reference is dropped only after
//! a grace period, so a reader that is cloning it meanwhile is safe. Grace periods are
//! batched, as the kernel's `call_rcu` batches them: a replaced fence stays referenced by
//! the object until its slot is replaced again, the array is replaced, or the object is
//! dropped — at most one such fence per slot. (Like any reader's reference, this may make
//! a fence outlive its removal; nothing may rely on a prompt release.) A reader takes its
//! references inside a short read-side section and works on them after it. As in the
//! kernel, an unlocked walk *restarts* when the array itself was replaced (a
//! [`ResvGuard::reserve_fences`] that had to grow, which also prunes signalled fences) —
//! [`UnlockedIter::is_restarted`] marks the first fence after a (re)start so accumulators
//! can reset. Adding or replacing a fence within the reserved room does not restart
//! readers.
//!
//! # Slots and reservations
//!
//! Appending a fence needs a slot reserved under the same lock hold
//! ([`ResvGuard::reserve_fences`]); reservations die at unlock, and adding past them is
//! refused (`Error::Invalid` and a lockdep report) instead of corrupting anything.
//! [`ResvGuard::add_fence`] first tries to overwrite an entry: the first one that is
//! signalled, or of the same context with an equal-or-weaker usage that the new fence is
//! later than or the same as. So a READ fence never replaces its own context's WRITE fence.

pub mod exec;
pub(crate) mod rcu;

use crate::error::{Error, Result};
use crate::fence::{self, array::FenceArray, is_later_or_same, Context, Fence};
use crate::interrupt::Interrupt;
use crate::ww::{AcquireCtx, WwClass, WwGuard, WwMutex};
use rcu::RcuSlots;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The wait-die class of every reservation lock (`reservation_ww_class`). Its lock
/// order is primed before the first reservation object or acquire context of the class
/// exists (see `prime_lockdep`).
pub static RESERVATION_WW_CLASS: WwClass =
    WwClass::wait_die("reservation_ww_class_mutex", "reservation_ww_class_acquire")
        .with_lockdep_prime(prime_lockdep);

/// Teach lockdep, once, the order the kernel primes at boot: the mmap lock, then an
/// acquire context of the reservation class, then a reservation lock, then reclaim, mmu
/// notifiers, and fence waits ([`fence::prime_fence_map_with_ctx`]). So waiting for a
/// fence under a reservation lock (or context) is known legal, and starting a context or
/// taking a reservation lock inside a signalling section is reported the first time it
/// happens, in any process — and a correct order is never blamed for a bad one that ran
/// before. Runs when the first reservation object is made and before each acquire
/// context of the class starts (one flag load once done); a no-op while lockdep is off,
/// so it primes the first time it runs with lockdep on.
fn prime_lockdep() {
    static PRIMED: AtomicBool = AtomicBool::new(false);
    if PRIMED.load(Ordering::Relaxed) || !fence::annotations::lockdep_on() {
        return;
    }
    // Claimed before priming: a report from `prime` (an order recorded earlier that
    // contradicts it) may panic, and must not leave priming half-claimed.
    if !PRIMED.swap(true, Ordering::Relaxed) {
        fence::prime_fence_map_with_ctx(
            RESERVATION_WW_CLASS.acquire_class(),
            RESERVATION_WW_CLASS.lock_class(),
        );
    }
}

/// How a fence in a reservation object is used, in the kernel's order: a query for a
/// usage returns every fence of that usage *and the stronger ones* (smaller values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Usage {
    /// Memory management (moves, clears): everyone waits, unless pinned.
    Kernel = 0,
    /// Implicit-sync writers.
    Write = 1,
    /// Implicit-sync readers.
    Read = 2,
    /// No implicit sync (preemption, page tables, explicit-sync jobs).
    Bookkeep = 3,
}

impl Usage {
    /// What a new access must wait for (`dma_resv_usage_rw`): a write waits for readers
    /// and writers (`Read`), a read waits for writers (`Write`).
    pub fn rw(write: bool) -> Usage {
        if write {
            Usage::Read
        } else {
            Usage::Write
        }
    }

    /// The name `describe` and bufinfo print.
    pub fn name(self) -> &'static str {
        match self {
            Usage::Kernel => "kernel",
            Usage::Write => "write",
            Usage::Read => "read",
            Usage::Bookkeep => "bookkeep",
        }
    }
}

/// Writer-side state, only touched with the lock held. The fences themselves are read
/// from the published array ([`RcuSlots::entries`]): the writer keeps no references of
/// its own, so replacing a fence touches it only when its grace period is over.
struct Locked {
    /// Identity of the current array (see [`Resv::storage`]).
    storage: u64,
    /// Entries may be appended while `len < reserved_to`; reset to `len` at unlock.
    reserved_to: usize,
    /// The right to publish into `Resv::list`, kept under the lock.
    writer: rcu::Writer,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A reservation object.
pub struct Resv {
    id: u64,
    lock: WwMutex<Locked>,
    /// The published fences, tagged with the id of their array.
    list: RcuSlots<(Fence, Usage)>,
    /// The newest array id, bumped after a grown array is published: an unlocked walk
    /// of an older one restarts (one atomic load per step).
    storage: AtomicU64,
}

impl Default for Resv {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Resv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resv")
            .field("id", &self.id)
            .field("fences", &self.num_fences())
            .finish()
    }
}

impl Resv {
    /// An unlocked object with no fences (`dma_resv_init`).
    pub fn new() -> Self {
        prime_lockdep();
        let (list, writer) = RcuSlots::new(0, 0, Vec::new());
        Resv {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            lock: WwMutex::new(
                &RESERVATION_WW_CLASS,
                Locked {
                    storage: 0,
                    reserved_to: 0,
                    writer,
                },
            ),
            list,
            storage: AtomicU64::new(0),
        }
    }

    /// A unique id of this object (what proofs are checked against).
    pub fn id(&self) -> u64 {
        self.id
    }

    #[inline]
    fn guard<'a>(&'a self, g: WwGuard<'a, Locked>) -> ResvGuard<'a> {
        HELD_HERE.with(|n| n.set(n.get() + 1));
        ResvGuard {
            resv: self,
            g,
            since: hold_start(),
        }
    }

    /// Lock within `ctx` (`dma_resv_lock`).
    ///
    /// # Errors
    ///
    /// `Deadlock` (EDEADLK) — drop every lock of `ctx`, then
    /// [`lock_slow`](Self::lock_slow) this one; `Already` (EALREADY) — `ctx` holds it;
    /// `Invalid` for a context misuse (see [`crate::ww`]), or when this thread already
    /// holds the lock outside `ctx` (without a context, or in another context): waiting
    /// would never end, so it is refused, with lockdep on or off.
    #[track_caller]
    pub fn lock<'a>(&'a self, ctx: &'a AcquireCtx) -> Result<ResvGuard<'a>> {
        Ok(self.guard(self.lock.lock(ctx)?))
    }

    /// [`lock`](Self::lock), interruptibly.
    ///
    /// # Errors
    ///
    /// As [`lock`](Self::lock); also `Interrupted` (EINTR) when `intr` fires or its
    /// deadline passes before the lock is had (nothing is held then).
    #[track_caller]
    pub fn lock_interruptible<'a>(
        &'a self,
        ctx: &'a AcquireCtx,
        intr: &Interrupt,
    ) -> Result<ResvGuard<'a>> {
        Ok(self.guard(self.lock.lock_interruptible(ctx, intr)?))
    }

    /// Lock after a `Deadlock`, with nothing else of `ctx` held (`dma_resv_lock_slow`).
    ///
    /// # Errors
    ///
    /// `Invalid` when `ctx` still holds locks or saw no `Deadlock`, or when this
    /// thread holds the lock outside `ctx` (refused rather than waiting forever).
    #[track_caller]
    pub fn lock_slow<'a>(&'a self, ctx: &'a AcquireCtx) -> Result<ResvGuard<'a>> {
        Ok(self.guard(self.lock.lock_slow(ctx)?))
    }

    /// [`lock_slow`](Self::lock_slow), interruptibly.
    ///
    /// # Errors
    ///
    /// As [`lock_slow`](Self::lock_slow); also `Interrupted` (EINTR) when `intr` fires or
    /// its deadline passes before the lock is had (nothing is held then).
    #[track_caller]
    pub fn lock_slow_interruptible<'a>(
        &'a self,
        ctx: &'a AcquireCtx,
        intr: &Interrupt,
    ) -> Result<ResvGuard<'a>> {
        Ok(self.guard(self.lock.lock_slow_interruptible(ctx, intr)?))
    }

    /// Lock without a context, as a plain mutex (`dma_resv_lock(obj, NULL)`). Never
    /// mix with context locking of the same objects in one transaction.
    ///
    /// # Errors
    ///
    /// `Invalid` when this thread already holds the lock (with or without a
    /// context): the kernel would wait forever; here it is refused, with lockdep on or
    /// off (with lockdep on it is also reported as recursive locking). Nothing changes.
    #[inline]
    #[track_caller]
    pub fn lock_no_ctx(&self) -> Result<ResvGuard<'_>> {
        Ok(self.guard(self.lock.lock_no_ctx()?))
    }

    /// Try to lock without blocking (`dma_resv_trylock`).
    #[track_caller]
    #[must_use = "the reservation object is unlocked as soon as its guard drops"]
    pub fn try_lock(&self) -> Option<ResvGuard<'_>> {
        self.lock.try_lock(None).map(|g| self.guard(g))
    }

    /// Whether some thread holds the lock (`dma_resv_is_locked`).
    pub fn is_locked(&self) -> bool {
        self.lock.is_locked()
    }

    /// Whether `ctx` holds the lock (`dma_resv_locking_ctx(obj) == ctx`).
    pub fn is_locked_by(&self, ctx: &AcquireCtx) -> bool {
        self.lock.is_locked_by(ctx)
    }

    /// Whether lockdep knows this thread to hold this object's lock (false with lockdep
    /// off): for convention checks only.
    pub fn is_held_by_current_thread(&self) -> bool {
        self.lock.is_held_by_current_thread()
    }

    /// Number of entries in the published list, signalled ones included. Takes no lock
    /// (a read-side section).
    pub fn num_fences(&self) -> usize {
        self.list.read(|v| v.len())
    }

    /// Walk the unsignalled fences of usage `usage` or stronger without the lock
    /// (`dma_resv_for_each_fence_unlocked`); works whether or not anybody holds it.
    pub fn iter_unlocked(&self, usage: Usage) -> UnlockedIter<'_> {
        UnlockedIter {
            resv: self,
            usage,
            snap: None,
            restarted: false,
        }
    }

    /// References to the unsignalled fences of usage `usage` or stronger
    /// (`dma_resv_get_fences`); a restarted walk starts the collection over. Takes no
    /// lock.
    pub fn get_fences(&self, usage: Usage) -> Vec<Fence> {
        loop {
            // References are taken inside a read-side section; the signalled ones are
            // dropped after it, because checking may run a driver's `signaled` hook and
            // the callbacks of a fence it signals.
            let (mut out, storage) = self.list.read(|v| {
                let mut out = Vec::with_capacity(v.len());
                out.extend(
                    v.iter()
                        .filter(|(_, u)| *u <= usage)
                        .map(|(f, _)| f.clone()),
                );
                (out, v.tag())
            });
            out.retain(|f| !f.is_signaled_inline());
            // The restart rule, checked once at the end of the walk.
            if self.storage.load(Ordering::Acquire) <= storage {
                return out;
            }
        }
    }

    /// One fence standing for all of [`get_fences`](Self::get_fences)
    /// (`dma_resv_get_singleton`): `None` when there is none, the fence itself when there
    /// is one, else a new all-signal array (fresh context, seqno 1). Never add the result
    /// back into a reservation object: add its members.
    ///
    /// # Errors
    ///
    /// `NoMem` in the kernel; here only what array creation reports.
    pub fn get_singleton(&self, usage: Usage) -> Result<Option<Fence>> {
        let mut v = self.get_fences(usage);
        match v.len() {
            0 => Ok(None),
            1 => Ok(v.pop()),
            _ => Ok(Some(FenceArray::create(v, Context::alloc(1)?, 1, false)?)),
        }
    }

    /// Whether no unsignalled fence of usage `usage` or stronger remains
    /// (`dma_resv_test_signaled`). Takes no lock.
    pub fn test_signaled(&self, usage: Usage) -> bool {
        self.iter_unlocked(usage).next().is_none()
    }

    /// Wait for every fence of usage `usage` or stronger, each with what is left of
    /// `timeout` (`dma_resv_wait_timeout`). A zero timeout only polls. Takes no lock; a
    /// wait while holding a lock the fences' signallers need is reported by lockdep
    /// (every wait is a [`fence::might_wait`]).
    ///
    /// Returns the time left (at least 1 ns when everything had signalled).
    ///
    /// # Errors
    ///
    /// `TimedOut` (the kernel's 0), `Interrupted` when `intr` fires.
    #[track_caller]
    pub fn wait_timeout(
        &self,
        usage: Usage,
        timeout: Duration,
        intr: Option<&Interrupt>,
    ) -> Result<Duration> {
        fence::might_wait();
        // Fast path: nothing to wait for (no clock read, no references taken). Only the
        // signalled flags are read inside the section; a fence that has completed but
        // not yet been marked is found by the walk below, which peeks.
        if self
            .list
            .read(|v| v.iter().all(|(f, u)| *u > usage || f.test_signaled_flag()))
        {
            return Ok(timeout.max(fence::MIN_REMAINING));
        }
        let start = Instant::now();
        let mut left = timeout;
        for (f, _) in self.iter_unlocked(usage) {
            if timeout.is_zero() {
                return Err(Error::TimedOut);
            }
            let r = match intr {
                Some(i) => f.wait_timeout_interruptible(left, i),
                None => f.wait_timeout(left),
            };
            r?;
            left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                left = fence::MIN_REMAINING;
            }
        }
        Ok(left.max(fence::MIN_REMAINING))
    }

    /// Pass `deadline_ns` (monotonic) to every unsignalled fence of usage `usage` or
    /// stronger (`dma_resv_set_deadline`). Takes no lock.
    pub fn set_deadline(&self, usage: Usage, deadline_ns: u64) {
        for (f, _) in self.iter_unlocked(usage) {
            f.set_deadline(deadline_ns);
        }
    }
}

/// Holds a reservation object locked: its locked view, on which the calls that need the
/// lock are methods (a buffer's locked view, `DmaBuf::locked`, is made from it). Unlocks on drop,
/// and any unused reservations die with it.
#[must_use = "the reservation object is unlocked as soon as its guard drops"]
pub struct ResvGuard<'a> {
    resv: &'a Resv,
    g: WwGuard<'a, Locked>,
    /// When the lock was taken, if a trace was being recorded then (else 0).
    since: u64,
}

impl std::fmt::Debug for ResvGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResvGuard")
            .field("resv", &self.resv.id)
            .finish()
    }
}

std::thread_local! {
    /// Reservation locks this thread holds (guards alive: a guard never leaves its
    /// thread). Lets the calls that must run unlocked refuse with lockdep off too.
    static HELD_HERE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// How many reservation locks this thread holds, counted by their guards: the answer
/// does not depend on lockdep (which, when on, also knows, and reports).
pub fn held_by_this_thread() -> u32 {
    HELD_HERE.with(std::cell::Cell::get)
}

impl Drop for ResvGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        HELD_HERE.with(|n| n.set(n.get().saturating_sub(1)));
        // Reservations die at unlock: a missing re-reserve is caught next time.
        let g = &mut *self.g;
        let len = self.resv.list.len(&g.writer);
        if g.reserved_to != len {
            g.reserved_to = len;
        }
        if self.since != 0 {
            trace_hold(self.resv.id, self.since);
        }
    }
}

/// Record a lock hold in the trace (out of line: the unlock path stays small).
#[cold]
#[inline(never)]
fn trace_hold(id: u64, since: u64) {
    crate::trace::complete(
        crate::trace::Track::Thread,
        &format!("resv {id} held"),
        "lock",
        since,
        crate::fence::ktime_now(),
        Vec::new(),
    );
}

/// When a traced lock hold began: now, if a trace is recording, else 0.
#[inline]
fn hold_start() -> u64 {
    if crate::trace::enabled() {
        trace_now()
    } else {
        0
    }
}

#[cold]
#[inline(never)]
fn trace_now() -> u64 {
    crate::fence::ktime_now()
}

impl<'a> ResvGuard<'a> {
    /// The locked object.
    pub fn resv(&self) -> &'a Resv {
        self.resv
    }

    /// Check that this guard is the proof for `resv`.
    ///
    /// # Errors
    ///
    /// `Invalid` when it locks another object.
    pub fn check(&self, resv: &Resv) -> Result<()> {
        if std::ptr::eq(self.resv, resv) || self.resv.id == resv.id {
            Ok(())
        } else {
            Err(Error::Invalid("lock proof of another reservation object"))
        }
    }

    /// Unlock now (same as dropping the guard).
    pub fn unlock(self) {}

    /// Make room to append `n` more fences under this lock hold
    /// (`dma_resv_reserve_fences`). Growing the storage prunes signalled fences and
    /// makes concurrent unlocked walks restart.
    ///
    /// # Errors
    ///
    /// `Invalid` for `n == 0` (the kernel warns); `NoMem` (`ENOMEM`) when the
    /// room cannot be allocated (a huge `n`); nothing changes then.
    #[inline]
    pub fn reserve_fences(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::Invalid("reserve_fences(0)"));
        }
        let len = self.len();
        let want = len.checked_add(n).ok_or(Error::NoMem)?;
        let capacity = self.resv.list.capacity(&self.g.writer);
        if want > capacity {
            let cap = if capacity == 0 {
                n.next_power_of_two().max(4)
            } else {
                want.max(capacity.saturating_mul(2))
            };
            let kept: Vec<(Fence, Usage)> = self
                .resv
                .list
                .entries(&self.g.writer)
                .filter(|(f, _)| !f.is_signaled())
                .cloned()
                .collect();
            let reserved_to = kept.len() + n;
            // A request too large to allocate is the kernel's -ENOMEM, not an abort.
            let g = &mut *self.g;
            self.resv
                .list
                .try_republish(&mut g.writer, g.storage + 1, cap, kept)
                .map_err(|_| Error::NoMem)?;
            g.storage += 1;
            self.resv.storage.store(g.storage, Ordering::Release);
            g.reserved_to = reserved_to;
            return Ok(());
        }
        self.g.reserved_to = self.g.reserved_to.max(want);
        Ok(())
    }

    /// Number of entries (signalled ones included).
    #[inline]
    fn len(&self) -> usize {
        self.resv.list.len(&self.g.writer)
    }

    /// Publish `entries` as a new array of `capacity` slots for unlocked readers, then
    /// announce it, so walks of the old one restart.
    fn republish(&mut self, capacity: usize, entries: Vec<(Fence, Usage)>) {
        let g = &mut *self.g;
        g.storage += 1;
        self.resv
            .list
            .republish(&mut g.writer, g.storage, capacity, entries);
        self.resv.storage.store(g.storage, Ordering::Release);
    }

    /// Add `fence` with `usage` (`dma_resv_add_fence`): overwrite the first entry that is
    /// signalled, or of the same context with an equal-or-weaker usage that `fence` is
    /// later than or the same as; else append into a reserved slot. Published at once:
    /// unlocked readers see it before the unlock.
    ///
    /// # Errors
    ///
    /// `Invalid` when `fence` is a container (add its leaves: see
    /// [`crate::fence::unwrap`]) or when appending needs a slot that was not reserved
    /// (also a lockdep `Misuse` report); nothing changes.
    #[inline]
    #[track_caller]
    pub fn add_fence(&mut self, fence: &Fence, usage: Usage) -> Result<()> {
        // `dma_fence_is_container`: arrays and chains only. A sw_sync point carries a
        // tag of its own in the same enum (for `get_deadline`) and is a plain fence.
        if fence.is_container() {
            return Err(Error::Invalid(
                "container fence added to a reservation object; add its leaves",
            ));
        }
        let slot = self
            .resv
            .list
            .entries(&self.g.writer)
            .position(|(old, old_usage)| {
                (old.context() == fence.context()
                    && *old_usage >= usage
                    && is_later_or_same(fence, old))
                    || old.is_signaled()
            });
        match slot {
            Some(i) => {
                let g = &mut *self.g;
                let r = self
                    .resv
                    .list
                    .replace(&mut g.writer, i, (fence.clone(), usage));
                debug_assert!(r.is_ok(), "an index of the array");
            }
            None => {
                if self.len() >= self.g.reserved_to {
                    lockdep::report(
                        lockdep::ReportKind::Misuse,
                        &[RESERVATION_WW_CLASS.lock_class()],
                        "dma_resv_add_fence without a reserved slot: call reserve_fences \
                         under the same lock hold first",
                    );
                    return Err(Error::Invalid("add_fence without a reserved slot"));
                }
                let g = &mut *self.g;
                let r = self.resv.list.push(&mut g.writer, (fence.clone(), usage));
                debug_assert!(r.is_ok(), "reserved slots fit the array");
            }
        }
        Ok(())
    }

    /// Replace every fence of `context` with `replacement` at `usage`
    /// (`dma_resv_replace_fences`). Only valid when the old work stops touching the
    /// buffer once `replacement` signals (e.g. a preemption fence).
    pub fn replace_fences(&mut self, context: Context, replacement: &Fence, usage: Usage) {
        let g = &mut *self.g;
        let hits: Vec<usize> = self
            .resv
            .list
            .entries(&g.writer)
            .enumerate()
            .filter(|(_, (f, _))| f.context() == context)
            .map(|(i, _)| i)
            .collect();
        for i in hits {
            let r = self
                .resv
                .list
                .replace(&mut g.writer, i, (replacement.clone(), usage));
            debug_assert!(r.is_ok(), "an index of the array");
        }
    }

    /// Make this object's fences a copy of `src`'s unsignalled ones, usages kept
    /// (`dma_resv_copy_fences`; `src` is read without its lock).
    pub fn copy_fences(&mut self, src: &Resv) {
        let mut out: Vec<(Fence, Usage)> = Vec::new();
        let mut it = src.iter_unlocked(Usage::Bookkeep);
        while let Some(e) = it.next() {
            if it.is_restarted() {
                out.clear();
            }
            out.push(e);
        }
        let n = out.len();
        self.g.reserved_to = n;
        self.republish(n, out);
    }

    /// The fences of usage `usage` or stronger, signalled ones included, with their usage
    /// (`dma_resv_for_each_fence`, locked).
    pub fn fences(&self, usage: Usage) -> Vec<(Fence, Usage)> {
        self.resv
            .list
            .entries(&self.g.writer)
            .filter(|(_, u)| *u <= usage)
            .cloned()
            .collect()
    }

    /// Whether an unsignalled fence of usage `usage` or stronger is present (read as the
    /// writer: no read-side section, no references taken).
    pub fn has_unsignalled(&self, usage: Usage) -> bool {
        self.resv
            .list
            .entries(&self.g.writer)
            .any(|(f, u)| *u <= usage && !f.is_signaled())
    }

    /// Slots appendable now without another reservation.
    pub fn reserved_free(&self) -> usize {
        self.g.reserved_to.saturating_sub(self.len())
    }

    /// The debugfs description (`dma_resv_describe`): one line per fence up to `Read`,
    /// `\t<usage> fence: <driver> <timeline> seq <n> [un]signalled`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (f, u) in self.fences(Usage::Read) {
            let _ = writeln!(
                s,
                "\t{} fence: {} {} seq {} {}",
                u.name(),
                f.driver_name(),
                f.timeline_name(),
                f.seqno(),
                if f.is_signaled() {
                    "signalled"
                } else {
                    "unsignalled"
                }
            );
        }
        s
    }
}

/// An unlocked walk over a reservation object's unsignalled fences; see the module docs
/// for the restart rule. Each (re)start takes references to the entries of the usage
/// asked for in one read-side section, then hands them out one by one.
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct UnlockedIter<'a> {
    resv: &'a Resv,
    usage: Usage,
    /// The references taken at the last (re)start, and the id of their array.
    snap: Option<(std::vec::IntoIter<(Fence, Usage)>, u64)>,
    restarted: bool,
}

impl UnlockedIter<'_> {
    /// Whether the fence last returned is the first of a (re)started walk
    /// (`dma_resv_iter_is_restarted`): drop whatever was accumulated before it.
    pub fn is_restarted(&self) -> bool {
        self.restarted
    }
}

impl Iterator for UnlockedIter<'_> {
    type Item = (Fence, Usage);

    fn next(&mut self) -> Option<(Fence, Usage)> {
        let stale = match &self.snap {
            None => true,
            Some((_, tag)) => self.resv.storage.load(Ordering::Acquire) > *tag,
        };
        self.restarted = stale;
        if stale {
            let usage = self.usage;
            self.snap = Some(self.resv.list.read(|v| {
                let refs: Vec<(Fence, Usage)> =
                    v.iter().filter(|(_, u)| *u <= usage).cloned().collect();
                (refs.into_iter(), v.tag())
            }));
        }
        let (it, _) = self.snap.as_mut().expect("set above");
        it.find(|(f, _)| !f.is_signaled_inline())
    }
}

#[cfg(test)]
mod tests;
