//! Fences: one-shot completion events ordered within a context, the kernel's `dma_fence`
//! and its family.
//!
//! - [`Fence`]: a cheap handle (`clone` = get, drop = put) to a shared fence object whose
//!   behaviour a driver supplies through [`FenceOps`]. Signalling is lock-free when
//!   nobody waits; waiting spins briefly, then sleeps; a fence is also awaitable
//!   ([`Fence::wait_async`]).
//! - [`Context`]: a timeline. Fences of one context signal in seqno order; seqnos compare
//!   with 32-bit wrap-around, or as 64-bit numbers ([`Fence::new64`]).
//! - Signalling annotations ([`begin_signalling`], [`might_wait`]) feed lockdep, so "waits
//!   for a fence while holding a lock its signaller needs" is reported the first time both
//!   paths run.
//! - Containers: [`array`](mod@array) (all-of / any-of), [`chain`] (timeline points), [`unwrap`]
//!   (flatten, merge). [`timeline`] is the kernel's `sw_sync` test timeline.
//!
//! Times are `u64` nanoseconds of the monotonic clock ([`ktime_now`]), the kernel's ktime.

pub mod annotations;
pub mod array;
pub mod chain;
mod defer;
pub(crate) mod live;
mod object;
mod rc;
pub mod timeline;
pub mod unwrap;
mod wait;

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;

pub use annotations::{
    begin_signalling, end_signalling, in_signalling_section, might_wait, prime_fence_map,
    prime_fence_map_with_ctx, SignallingGuard, DMA_FENCE_MAP,
};
pub use array::FenceArray;
pub use chain::FenceChain;
pub use live::live_fences;
pub use object::{
    CallbackId, Fence, FenceOps, CALLBACK_SECTION, DETACHED_DRIVER, MAX_ERRNO, SIGNALED_TIMELINE,
};
pub use wait::{wait_any, wait_any_timeout, FenceFuture, MIN_REMAINING};

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The current monotonic time in ns (`ktime_get`): the clock of fence timestamps and
/// deadlines (`CLOCK_MONOTONIC`, the same clock as [`std::time::Instant`] on Linux).
#[inline]
pub fn ktime_now() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

/// A fence context (timeline) id. Fences of one context are totally ordered by seqno and
/// must signal in that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Context(u64);

/// The global context counter; 0 is the stub fence's context, so ids start at 1.
static NEXT_CONTEXT: AtomicU64 = AtomicU64::new(1);

impl Context {
    /// Reserve `n` consecutive context ids and return the first (`dma_fence_context_alloc`).
    /// Use [`nth`](Context::nth) for the others. Lock-free.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if `n` is 0 (the kernel warns); nothing is reserved.
    pub fn alloc(n: u64) -> Result<Context> {
        if n == 0 {
            return Err(Error::Invalid("context_alloc of 0 contexts"));
        }
        Ok(Context(NEXT_CONTEXT.fetch_add(n, Ordering::Relaxed)))
    }

    /// A single fresh context (`alloc(1)`).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Context {
        Context(NEXT_CONTEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The `i`-th context of a block reserved by [`alloc`](Context::alloc) (`self + i`,
    /// wrapping as the kernel's u64 does; an `i` past the block is the caller's mistake,
    /// not a panic).
    pub fn nth(self, i: u64) -> Context {
        Context(self.0.wrapping_add(i))
    }

    /// The raw id.
    pub fn id(self) -> u64 {
        self.0
    }

    /// The context of the stub fence (0; never handed out by `alloc`).
    pub const STUB: Context = Context(0);
}

/// Whether seqno `a` is later than `b` (`__dma_fence_is_later`): with `use64`, plain
/// `a > b`; otherwise the signed difference of the low 32 bits is positive, so that a
/// 32-bit timeline may wrap.
#[inline]
pub fn seqno_is_later(a: u64, b: u64, use64: bool) -> bool {
    if use64 {
        a > b
    } else {
        (a as u32).wrapping_sub(b as u32) as i32 > 0
    }
}

/// Whether `f1` is later than `f2` (`dma_fence_is_later`). Fences of different contexts
/// are not comparable: false (and a warning is logged).
pub fn is_later(f1: &Fence, f2: &Fence) -> bool {
    if f1.context() != f2.context() {
        tracing::warn!(
            "is_later on fences of different contexts ({} vs {})",
            f1.context().id(),
            f2.context().id()
        );
        return false;
    }
    seqno_is_later(f1.seqno(), f2.seqno(), f1.uses_64bit_seqno())
}

/// Whether `f1` is later than or the same as `f2` (`dma_fence_is_later_or_same`); the same
/// object is always "same".
pub fn is_later_or_same(f1: &Fence, f2: &Fence) -> bool {
    Fence::ptr_eq(f1, f2) || (f1.context() == f2.context() && !is_later(f2, f1))
}

/// The later of two fences of one context, or `None` if that one is already signalled
/// (`dma_fence_later`). Different contexts: `None` (and a warning).
pub fn later(f1: &Fence, f2: &Fence) -> Option<Fence> {
    if f1.context() != f2.context() {
        tracing::warn!("later() on fences of different contexts");
        return None;
    }
    let l = if is_later(f1, f2) { f1 } else { f2 };
    if l.is_signaled() {
        None
    } else {
        Some(l.clone())
    }
}

/// The status of a fence (`dma_fence_get_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not signalled yet (0).
    Pending,
    /// Signalled without error (1).
    Signaled,
    /// Signalled with this negative errno.
    Error(i32),
}

impl Status {
    /// The kernel's encoding: 0 pending, 1 signalled, negative errno.
    pub fn to_raw(self) -> i32 {
        match self {
            Status::Pending => 0,
            Status::Signaled => 1,
            Status::Error(e) => e,
        }
    }

    /// Decode the kernel's encoding (positive values other than 1 count as signalled).
    pub fn from_raw(v: i32) -> Status {
        match v {
            0 => Status::Pending,
            e if e < 0 => Status::Error(e),
            _ => Status::Signaled,
        }
    }
}

/// Ops of the stub fences: driver "stub", timeline "stub".
struct StubOps;

impl FenceOps for StubOps {
    fn driver_name(&self) -> &str {
        "stub"
    }
    fn timeline_name(&self) -> &str {
        "stub"
    }
}

impl Fence {
    /// The global, always-signalled stub fence (`dma_fence_get_stub`): context 0, seqno 0,
    /// timestamp of its first use.
    pub fn stub() -> Fence {
        static STUB: OnceLock<Fence> = OnceLock::new();
        STUB.get_or_init(|| {
            let f = Fence::new(StubOps, Context::STUB, 0);
            let _ = f.signal_unannotated();
            f
        })
        .clone()
    }

    /// A new signalled stub fence with timestamp `ts_ns` and a fresh context
    /// (`dma_fence_allocate_private_stub`).
    pub fn private_stub(ts_ns: u64) -> Fence {
        let f = Fence::new(StubOps, Context::new(), 0);
        let _ = f.signal_impl_ts(ts_ns);
        f
    }

    fn signal_impl_ts(&self, ts: u64) -> bool {
        let _s = annotations::begin_signalling();
        self.signal_timestamp(ts).is_err()
    }
}

static UNSIGNALLED_RELEASES: AtomicU64 = AtomicU64::new(0);

/// How many fences were released unsignalled with callbacks or waiters still registered
/// (each was force-signalled with `-EDEADLK`; a bug in the fence's owner).
pub fn unsignalled_releases() -> u64 {
    UNSIGNALLED_RELEASES.load(Ordering::Relaxed)
}

crate::shim::tls! {
    /// [`unsignalled_releases`] of this thread alone (for tests that run beside others).
    static LOCAL_UNSIGNALLED_RELEASES: std::cell::Cell<u64> = std::cell::Cell::new(0);
}

/// How many of [`unsignalled_releases`] happened on this thread.
#[cfg(test)]
pub(crate) fn unsignalled_releases_here() -> u64 {
    LOCAL_UNSIGNALLED_RELEASES.with(|c| c.get())
}

pub(crate) fn note_unsignalled_release(driver: &str, timeline: &str, ctx: Context, seqno: u64) {
    UNSIGNALLED_RELEASES.fetch_add(1, Ordering::Relaxed);
    LOCAL_UNSIGNALLED_RELEASES.with(|c| c.set(c.get() + 1));
    tracing::warn!(
        driver,
        timeline,
        context = ctx.id(),
        seqno,
        "fence released unsignalled with callbacks pending: signalled with -EDEADLK"
    );
}
