//! Fence signalling annotations: teaching lockdep which locks a fence's signaller needs.
//!
//! A fence is a cross-release "lock": one thread waits, another signals. Lockdep cannot
//! see that by itself, so both sides take a pseudo-lock, the class [`DMA_FENCE_MAP`]:
//!
//! - the code that will eventually signal runs inside a *signalling section*
//!   ([`begin_signalling`]), which holds the map for (recursive) read;
//! - every wait first calls [`might_wait`], which takes the map for write and releases it.
//!
//! So "lock A held, then wait on a fence" records A → map, and "in a signalling section,
//! take lock A" records map → A: the cycle is reported the first time both paths have
//! run, even if they never raced. Sections nest (an inner [`begin_signalling`] is a no-op),
//! and signalling outside any section ("opportunistic" signalling, e.g. from a wait
//! path that notices completion) is allowed and records nothing.
//!
//! [`Fence::signal`](super::Fence::signal) and the completion paths of arrays and chains
//! run inside a section. Annotate from the moment a fence is published (added to a
//! reservation object, exported as a sync file…) until it is signalled.
//!
//! The kernel also primes an order at boot so that one run of a driver validates it:
//! mmap lock → reservation lock → reclaim → (mmu notifier) → fence wait. That is: under a
//! reservation lock you may allocate with reclaim and wait for fences; reclaim and mmu
//! notifiers may wait for fences; and therefore signalling paths must take none of them.
//! [`prime_fence_map`] records that chain for a reservation class;
//! [`prime_fence_map_with_ctx`] puts the class's acquire context ahead of its lock, as
//! the kernel does (mmap lock → acquire context → reservation lock → …): the resv layer
//! primes that one.

use crate::shim;
use lockdep::LockClass;
use std::cell::Cell;
use std::marker::PhantomData;

/// The fence-signalling pseudo-lock ("dma_fence_map"): held for recursive read inside
/// signalling sections, taken for write by every wait.
pub static DMA_FENCE_MAP: LockClass = LockClass::new("dma_fence_map");

/// Stand-in class for the process's memory-map lock in the primed chain ("mmap_lock").
pub static MMAP_LOCK: LockClass = LockClass::new("mmap_lock");

/// Pseudo-lock for "may allocate with reclaim" in the primed chain ("fs_reclaim").
pub static FS_RECLAIM: LockClass = LockClass::new("fs_reclaim");

/// Pseudo-lock for mmu-notifier invalidation in the primed chain.
pub static MMU_NOTIFIER: LockClass = LockClass::new("mmu_notifier_invalidate_range_start");

shim::tls! {
    /// Depth of signalling sections on this thread (0 = outside).
    static SECTION_DEPTH: Cell<u32> = Cell::new(0);
}

/// Whether this thread is inside a fence-signalling section. A debug aid for code that
/// must not run there (allocation with reclaim, reservation locks, waits on fences the
/// section itself must signal).
pub fn in_signalling_section() -> bool {
    SECTION_DEPTH.with(|d| d.get() > 0)
}

/// A signalling section; it ends when the guard drops (the kernel's
/// `dma_fence_end_signalling`). Not `Send`: a section belongs to its thread.
#[must_use = "the signalling section ends when the guard drops"]
pub struct SignallingGuard {
    /// Whether this guard took the lockdep map (false when nested or lockdep is off).
    acquired: bool,
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for SignallingGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignallingGuard")
            .field("outermost", &self.acquired)
            .finish()
    }
}

/// Begin a fence-signalling section on this thread (the kernel's
/// `dma_fence_begin_signalling`). Nesting is allowed: a section begun inside another is
/// a no-op for lockdep. Holds no real lock; cannot fail.
#[track_caller]
pub fn begin_signalling() -> SignallingGuard {
    let outer = SECTION_DEPTH.with(|d| {
        let n = d.get();
        d.set(n + 1);
        n == 0
    });
    let acquired = outer && lockdep_on();
    if acquired {
        take_section();
    }
    SignallingGuard {
        acquired,
        _not_send: PhantomData,
    }
}

/// End a section explicitly (same as dropping the guard).
pub fn end_signalling(guard: SignallingGuard) {
    drop(guard);
}

impl Drop for SignallingGuard {
    #[track_caller]
    fn drop(&mut self) {
        SECTION_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        if self.acquired && lockdep_on() {
            DMA_FENCE_MAP.map_release();
        }
    }
}

/// Tell lockdep this thread might wait for a fence here (the kernel's
/// `dma_fence_might_wait`): takes [`DMA_FENCE_MAP`] for write and releases it, so any lock
/// held now is recorded as "held across a fence wait". Every wait calls it. Inside a
/// signalling section the section's read hold is dropped around the check, as the kernel
/// does, so the wait itself is not reported as recursion.
///
/// A wait may sleep: inside a lockdep atomic section (a fence callback runs in one) it is
/// reported as [`lockdep::ReportKind::SleepInAtomic`], as the kernel's `might_sleep`.
#[track_caller]
pub fn might_wait() {
    if !lockdep_on() {
        return;
    }
    lockdep::might_sleep();
    let inside = lockdep::is_held(&DMA_FENCE_MAP);
    if inside {
        DMA_FENCE_MAP.map_release();
    }
    DMA_FENCE_MAP.map_acquire();
    DMA_FENCE_MAP.map_release();
    if inside {
        take_section();
    }
}

/// Hold [`DMA_FENCE_MAP`] as a signalling section does: a *non-recursive* reader, as the
/// kernel's `dma_fence_begin_signalling` takes it. So a lock held across the start of a
/// section and also taken inside another section is an ordering the kernel reports
/// (L → map → L); a recursive reader would hide it. Nesting never reaches here: nested
/// sections are counted, not re-acquired.
#[track_caller]
fn take_section() {
    DMA_FENCE_MAP.map_acquire_with(lockdep::Acquire::read());
}

/// Record the kernel's boot-time order ahead of any real use: [`MMAP_LOCK`] →
/// `resv_class` → [`FS_RECLAIM`] → [`MMU_NOTIFIER`] → [`DMA_FENCE_MAP`] (a fence wait).
/// The reservation layer calls it once with its lock class; calling it again is harmless.
/// Afterwards, taking the reservation lock (or reclaiming) inside a signalling section is
/// reported the first time it happens, and waiting for a fence under a reservation lock
/// is known to be legal.
#[track_caller]
pub fn prime_fence_map(resv_class: &'static LockClass) {
    if lockdep_on() {
        lockdep::prime(&[
            &MMAP_LOCK,
            resv_class,
            &FS_RECLAIM,
            &MMU_NOTIFIER,
            &DMA_FENCE_MAP,
        ]);
    }
}

/// [`prime_fence_map`] with the acquire-context class of the reservation locks ahead of
/// them, as the kernel's boot-time priming takes a context before the lock:
/// [`MMAP_LOCK`] → `acquire_class` → `resv_class` → [`FS_RECLAIM`] → [`MMU_NOTIFIER`] →
/// [`DMA_FENCE_MAP`]. Afterwards starting an acquire context of the class inside a
/// signalling section is reported too, the first time it happens.
#[track_caller]
pub fn prime_fence_map_with_ctx(acquire_class: &'static LockClass, resv_class: &'static LockClass) {
    if lockdep_on() {
        lockdep::prime(&[
            &MMAP_LOCK,
            acquire_class,
            resv_class,
            &FS_RECLAIM,
            &MMU_NOTIFIER,
            &DMA_FENCE_MAP,
        ]);
    }
}

#[inline]
pub(crate) fn lockdep_on() -> bool {
    // Loom runs all model threads on one OS thread: per-thread lock stacks would mix.
    !cfg!(loom) && lockdep::enabled()
}
