//! The fence object: state word, signalling, errors, callbacks, deadlines, stubs.
//!
//! # The state word
//!
//! Everything the fast paths need is one `AtomicU32`, so that signalling a fence nobody
//! waits for takes no lock and makes no syscall, and `is_signaled` on a signalled fence is
//! one load. The slow state (callback list, async wakers) sits behind a mutex that only
//! the bits below send anyone to.
//!
//! | bit | name            | set by                                  | cleared  |
//! |-----|-----------------|-----------------------------------------|----------|
//! | 0   | `SIGNALED`      | the one successful signal               | never    |
//! | 1   | (unused; the timestamp word has its own "not yet stored" value) |  |  |
//! | 2   | `ENABLE_SIGNAL` | first enable (callback, wait, explicit) | never    |
//! | 3   | `HAS_CALLBACKS` | `add_callback`, only while !SIGNALED    | never    |
//! | 4   | `CALLBACKS_RUN` | the signaller, after the callback run   | never    |
//! | 5   | `HAS_WAITERS`   | a thread about to sleep on the word, only while !COMPLETE | never |
//! | 6   | `HAS_WAKERS`    | an async/any waiter, only while !COMPLETE | never  |
//! | 7   | `SETTING_ERROR` | `set_error`, only while !SIGNALED       | by `set_error` |
//! | 8   | `SEQNO64`       | construction (64-bit seqno ordering)    | never    |
//! | 9   | `KICK`          | toggled by an interrupt to wake sleepers | toggled |
//!
//! `COMPLETE` = `SIGNALED` ∧ (¬`HAS_CALLBACKS` ∨ `CALLBACKS_RUN`): the signal is visible
//! and every callback registered before it has run. The timestamp lives in its own word,
//! which holds `NO_TS` until the signaller stores the time right after setting
//! `SIGNALED`; readers that see `SIGNALED` spin the few instructions until it is there.
//! So signalling a fence nobody waits for is one read-modify-write and one store.
//! Waits return only once the fence is complete and its timestamp stored, with two
//! exceptions where waiting for the callback run would break a promise: a timed wait
//! whose time runs out while the signaller is still in the callbacks returns then (the
//! fence is signalled: success), and a wait on the thread that is running the callbacks
//! returns at once (it would wait for itself).
//!
//! Why the protocol is race-free: `HAS_CALLBACKS`, `HAS_WAITERS` and `HAS_WAKERS` are only
//! ever set by a compare-and-swap that fails if the signal already happened, and the
//! signaller learns which of them are set from the value its own read-modify-writes
//! return. So either the registration came first and the signaller sees its bit (and
//! takes the slow path), or the signal came first and the registration sees it and backs
//! off. Sleepers sleep on the word itself (futex), so a signal that changes it after a
//! sleeper read it makes the sleep return at once.

use super::annotations;
use super::defer;
use super::rc::{Block, Rc};
use super::{ktime_now, Context, Status};
use crate::error::{Error, Result};
use crate::shim::{self, futex_wake_all, AtomicI32, AtomicU32, AtomicU64, Mutex};
use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::task::Waker;

pub(crate) const SIGNALED: u32 = 1 << 0;
pub(crate) const ENABLE_SIGNAL: u32 = 1 << 2;
pub(crate) const HAS_CALLBACKS: u32 = 1 << 3;
pub(crate) const CALLBACKS_RUN: u32 = 1 << 4;
pub(crate) const HAS_WAITERS: u32 = 1 << 5;
pub(crate) const HAS_WAKERS: u32 = 1 << 6;
pub(crate) const SETTING_ERROR: u32 = 1 << 7;
pub(crate) const SEQNO64: u32 = 1 << 8;
pub(crate) const KICK: u32 = 1 << 9;
/// The ops have no `signaled` peek (learned from the default's first call): the kernel's
/// `ops->signaled == NULL`, so [`Fence::is_signaled`] stops calling it.
pub(crate) const NO_PEEK: u32 = 1 << 10;

/// Whether the state word says the fence is complete (see the module table).
#[inline]
pub(crate) const fn is_complete(s: u32) -> bool {
    s & SIGNALED != 0 && (s & HAS_CALLBACKS == 0 || s & CALLBACKS_RUN != 0)
}

/// The largest errno magnitude (`MAX_ERRNO`).
pub const MAX_ERRNO: i32 = 4095;

/// The timestamp word before the signaller stores the time.
const NO_TS: u64 = u64::MAX;

/// What a signalled fence's driver name reads (the kernel's, since 6.17): a signalled
/// fence no longer calls its ops.
pub const DETACHED_DRIVER: &str = "detached-driver";

/// What a signalled fence's timeline name reads (the kernel's, since 6.17).
pub const SIGNALED_TIMELINE: &str = "signaled-timeline";

/// The lockdep atomic section a fence callback runs in: the kernel runs callbacks under
/// the fence's spinlock, where nothing may sleep.
pub const CALLBACK_SECTION: &str = "dma_fence callback";

shim::tls! {
    /// Addresses of the fences whose callbacks this thread is running, innermost last.
    static RUNNING: RefCell<Vec<usize>> = RefCell::new(Vec::new());
}

/// Marks a callback run of one fence on this thread: the fence is on [`RUNNING`], the
/// thread is inside a lockdep atomic section ([`CALLBACK_SECTION`]) and inside a deferred
/// work scope ([`defer::enter`]). Dropping it (also on unwind) leaves all three.
struct CallbackScope {
    _atomic: Option<lockdep::AtomicGuard>,
    _defer: defer::CallbackRun,
}

impl CallbackScope {
    #[track_caller]
    fn enter(addr: usize) -> CallbackScope {
        RUNNING.with(|r| r.borrow_mut().push(addr));
        CallbackScope {
            _atomic: annotations::lockdep_on().then(|| lockdep::atomic_enter(CALLBACK_SECTION)),
            _defer: defer::enter(),
        }
    }
}

impl Drop for CallbackScope {
    fn drop(&mut self) {
        RUNNING.with(|r| r.borrow_mut().pop());
    }
}

/// The operations of a fence, the kernel's `dma_fence_ops`: what makes a fence a
/// particular driver's fence. `driver_name` and `timeline_name` are mandatory; the rest
/// have defaults that suit a fence signalled explicitly by its owner.
///
/// None of these is called with a fence lock held; they may take their own locks. They
/// must not wait on the fence they are called for.
///
/// None of them is called once the fence is signalled (the kernel since 6.17): the
/// names read [`DETACHED_DRIVER`] / [`SIGNALED_TIMELINE`] instead, and peeks, enables and
/// deadlines stop at the signalled flag (one that raced with the signal may still arrive
/// just after it). Only [`release`](FenceOps::release) comes later, at the last put,
/// after which the ops value is dropped: it is not dropped at signal, because
/// [`Fence::ops`] lends it out for as long as a reference lives (the kernel likewise keeps
/// the ops of a fence that has a `release` op).
pub trait FenceOps: Send + Sync + 'static {
    /// Name of the driver that created the fence (for debugging and sync-file info).
    fn driver_name(&self) -> &str;

    /// Name of the timeline (context) the fence belongs to.
    fn timeline_name(&self) -> &str;

    /// Called once, the first time somebody needs the fence to signal on its own (a
    /// callback is added, a wait begins, or [`Fence::enable_sw_signaling`]). Return
    /// `false` if the fence is already done or cannot be armed: the core then signals it
    /// at once (set an error with [`Fence::set_error`] first if it failed). Default: `true`.
    fn enable_signaling(&self, fence: &Fence) -> bool {
        let _ = fence;
        true
    }

    /// A peek used by [`Fence::is_signaled`] for fences that complete without telling
    /// anyone (polling hardware). Returning `true` makes the core signal the fence; once
    /// true it must stay true. May set an error first.
    ///
    /// Default: `false`, and the fence remembers that its ops have no peek (the kernel's
    /// `ops->signaled == NULL`), so it is not asked again. Hence an implementation must not
    /// call the default `signaled` of other ops and still expect to be asked later.
    fn signaled(&self, fence: &Fence) -> bool {
        fence.inner.state.fetch_or(NO_PEEK, Relaxed);
        false
    }

    /// A waiter would like the fence signalled by `deadline_ns` (absolute, monotonic
    /// clock, see [`ktime_now`]). Forwarded only while the fence is unsignalled and only
    /// when it is earlier than any deadline already given. Default: ignored.
    fn set_deadline(&self, fence: &Fence, deadline_ns: u64) {
        let _ = (fence, deadline_ns);
    }

    /// Called once when the last reference is gone, before the ops value is dropped.
    /// Default: nothing (dropping the ops frees them).
    fn release(&self) {}

    /// Which container this is. Implemented by the crate's arrays, chains and
    /// `sw_sync` points only: the type is crate-private, so no other implementation can
    /// name it to override this (the method is sealed), and it is not documented.
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn container(&self) -> Container<'_> {
        Container::None
    }
}

/// Which kind of container a fence is (crate-internal downcast).
#[derive(Clone, Copy)]
pub(crate) enum Container<'a> {
    /// A plain fence.
    None,
    /// A fence array.
    Array(&'a super::array::FenceArray),
    /// A chain node.
    Chain(&'a super::chain::FenceChain),
    /// A sw_sync timeline point (not a container; tagged for `get_deadline`).
    SwSyncPoint,
}

type Callback = Box<dyn FnOnce(&Fence) + Send>;

/// The mutex-protected slow state. Kept small, since every fence carries it and most
/// never use it: the first callback inline (the common case of one callback allocates
/// no list), everything else in a box made on first use.
#[derive(Default)]
struct Slow {
    /// The first callback.
    first: Option<(u64, Callback)>,
    /// Further callbacks and the async wakers.
    rest: Option<Box<Rest>>,
    next_id: u64,
}

#[derive(Default)]
struct Rest {
    /// Callbacks after `first`, in registration order.
    callbacks: Vec<(u64, Callback)>,
    wakers: Vec<(u64, Waker)>,
}

impl Slow {
    fn rest(&mut self) -> &mut Rest {
        self.rest.get_or_insert_with(Box::default)
    }

    fn has_more_callbacks(&self) -> bool {
        self.rest.as_ref().is_some_and(|r| !r.callbacks.is_empty())
    }

    fn take_callbacks(&mut self) -> Vec<(u64, Callback)> {
        self.rest
            .as_mut()
            .map(|r| std::mem::take(&mut r.callbacks))
            .unwrap_or_default()
    }

    fn take_wakers(&mut self) -> Vec<(u64, Waker)> {
        self.rest
            .as_mut()
            .map(|r| std::mem::take(&mut r.wakers))
            .unwrap_or_default()
    }
}

/// The shared fence object. `O` is the ops; fences are used as `Inner<dyn FenceOps>`.
pub(crate) struct Inner<O: ?Sized + FenceOps> {
    pub(crate) state: AtomicU32,
    error: AtomicI32,
    context: Context,
    seqno: u64,
    /// Monotonic ns; `NO_TS` until stored by the signaller.
    timestamp: AtomicU64,
    /// Earliest deadline asked for (0 = none).
    deadline: AtomicU64,
    slow: Mutex<Slow>,
    ops: O,
}

/// A fence: a one-shot completion, ordered by `seqno` within its [`Context`].
///
/// `Fence` is a cheap handle to a shared object: `clone` is the kernel's `dma_fence_get`,
/// drop is `dma_fence_put`. All methods take `&self` and are safe from any thread.
///
/// The fence holds one internal lock, taken only on slow paths (a callback or an async
/// waiter exists): callbacks run under it, inside a lockdep atomic section
/// ([`CALLBACK_SECTION`]), as the kernel runs them under its spinlock. So a callback must
/// not sleep: a fence wait, [`might_wait`](super::might_wait) or a blocking lock taken
/// there is reported by lockdep ([`lockdep::ReportKind::SleepInAtomic`]) the first time
/// it runs. It cannot deadlock on its own fence either: a wait on it from inside its
/// callbacks returns at once (the fence is signalled), [`remove_callback`](Fence::remove_callback)
/// returns false (nothing is pending any more), and adding a callback is refused
/// (`ENOENT`, it is signalled). Other methods never block on the lock for long.
///
/// Once signalled, a fence no longer calls its [`FenceOps`] (the kernel's rule since
/// 6.17): its names read [`DETACHED_DRIVER`] and [`SIGNALED_TIMELINE`], and no peek,
/// enable or deadline reaches the ops. The ops value itself stays in the object until the
/// last reference is dropped; then `release` is called and it is dropped.
///
/// Dropping the last reference to an unsignalled fence that still has callbacks is a bug
/// (the kernel warns): the fence is signalled with `-EDEADLK`, its callbacks run (they see
/// a signalled snapshot of the fence with that error), and the event is counted in
/// [`unsignalled_releases`](super::unsignalled_releases) and logged.
#[derive(Clone)]
pub struct Fence {
    pub(crate) inner: Rc<Inner<dyn FenceOps>>,
}

/// Identifies a registered callback, for [`Fence::remove_callback`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallbackId(u64);

/// Identifies a registered waker (async and any-of waits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WakerId(u64);

impl Fence {
    /// A new unsignalled fence of `context` at `seqno`, ordered by the low 32 bits of the
    /// seqno with wrap-around (the kernel's `dma_fence_init`). One allocation; no lock.
    pub fn new<O: FenceOps>(ops: O, context: Context, seqno: u64) -> Fence {
        Self::build(ops, context, seqno, 0)
    }

    /// Like [`new`](Fence::new), but seqnos compare as plain 64-bit numbers
    /// (`dma_fence_init64`).
    pub fn new64<O: FenceOps>(ops: O, context: Context, seqno: u64) -> Fence {
        Self::build(ops, context, seqno, SEQNO64)
    }

    fn build<O: FenceOps>(ops: O, context: Context, seqno: u64, flags: u32) -> Fence {
        let block: Box<Block<Inner<dyn FenceOps>>> = Block::boxed(Inner {
            state: AtomicU32::new(flags),
            error: AtomicI32::new(0),
            context,
            seqno,
            timestamp: AtomicU64::new(NO_TS),
            deadline: AtomicU64::new(0),
            slow: Mutex::new(Slow::default()),
            ops,
        });
        crate::fence::live::fence_made();
        let f = Fence {
            inner: Rc::from_box(block),
        };
        if crate::trace::enabled() {
            crate::trace::fence_created(&f);
        }
        f
    }

    /// The fence's context (timeline).
    pub fn context(&self) -> Context {
        self.inner.context
    }

    /// The fence's sequence number within its context.
    pub fn seqno(&self) -> u64 {
        self.inner.seqno
    }

    /// Whether seqnos of this fence compare as 64-bit numbers (else 32-bit wrapping).
    pub fn uses_64bit_seqno(&self) -> bool {
        self.inner.state.load(Relaxed) & SEQNO64 != 0
    }

    /// The fence's ops, the driver's object (alive until the last reference is dropped).
    /// Calling them directly bypasses the rule that a signalled fence no longer calls its
    /// ops: use [`driver_name`](Fence::driver_name) and friends for that.
    pub fn ops(&self) -> &dyn FenceOps {
        &self.inner.ops
    }

    /// The driver name (`dma_fence_driver_name`): `ops.driver_name` while the fence is
    /// unsignalled, [`DETACHED_DRIVER`] (`"detached-driver"`) once it is signalled, as in
    /// the kernel since 6.17 (a signalled fence no longer calls its ops). A reader racing
    /// with the signal gets either name; both stay valid as long as the `&self` borrow.
    pub fn driver_name(&self) -> &str {
        if self.test_signaled_flag() {
            DETACHED_DRIVER
        } else {
            self.inner.ops.driver_name()
        }
    }

    /// The timeline name (`dma_fence_timeline_name`): `ops.timeline_name` while the fence
    /// is unsignalled, [`SIGNALED_TIMELINE`] (`"signaled-timeline"`) once it is signalled.
    pub fn timeline_name(&self) -> &str {
        if self.test_signaled_flag() {
            SIGNALED_TIMELINE
        } else {
            self.inner.ops.timeline_name()
        }
    }

    /// The address identifying this fence object on [`RUNNING`].
    fn addr(&self) -> usize {
        &*self.inner as *const Inner<dyn FenceOps> as *const () as usize
    }

    /// Whether this thread is running this fence's callbacks right now (it is inside one
    /// of them, or inside something one of them called). The fence is signalled then, and
    /// waiting for its callback run to finish would wait for itself.
    pub(crate) fn running_callbacks_here(&self) -> bool {
        let me = self.addr();
        RUNNING.with(|r| r.borrow().contains(&me))
    }

    /// Whether `a` and `b` are the same fence object.
    pub fn ptr_eq(a: &Fence, b: &Fence) -> bool {
        Rc::ptr_eq(&a.inner, &b.inner)
    }

    /// Number of references (for tests and debugging).
    pub fn ref_count(&self) -> usize {
        Rc::count(&self.inner)
    }

    // ---- signalling -------------------------------------------------------------

    /// Signal the fence with the current time (the kernel's `dma_fence_signal`): mark it
    /// signalled, record the timestamp, run the callbacks in registration order on this
    /// thread, wake every waiter. Runs inside a signalling section
    /// ([`begin_signalling`](super::begin_signalling)).
    ///
    /// With nobody waiting and no callback this is two atomic operations and a clock read:
    /// no lock, no syscall.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadySignaled`] (`EINVAL`) if the fence was already signalled;
    /// nothing changes then.
    #[track_caller]
    pub fn signal(&self) -> Result<()> {
        self.signal_in_section(None)
    }

    /// Signal with a given timestamp (`dma_fence_signal_timestamp`): `ts_ns` is a
    /// monotonic time in ns (see [`ktime_now`]).
    ///
    /// # Errors
    ///
    /// As [`signal`](Fence::signal).
    #[track_caller]
    pub fn signal_timestamp(&self, ts_ns: u64) -> Result<()> {
        self.signal_in_section(Some(ts_ns))
    }

    /// Signal unless already signalled (the kernel's 7.x `dma_fence_check_and_signal`).
    /// Returns whether the fence **was already** signalled. Never fails.
    #[track_caller]
    pub fn check_and_signal(&self) -> bool {
        self.signal_in_section(None).is_err()
    }

    /// Signal inside a signalling section. With lockdep on, the section spans the whole
    /// signal, so that the locks the signaller holds are recorded against the fence map,
    /// as the kernel's `dma_fence_signal` does. With lockdep off the section records
    /// nothing and only code running inside it can tell it is there
    /// ([`in_signalling_section`](super::in_signalling_section) from a callback or a
    /// waker), so it is opened around that code only: a signal with no callback and no
    /// async waiter skips it.
    #[track_caller]
    fn signal_in_section(&self, ts: Option<u64>) -> Result<()> {
        if annotations::lockdep_on() {
            let _section = annotations::begin_signalling();
            self.signal_impl(ts, false)
        } else {
            self.signal_impl(ts, true)
        }
    }

    /// Signal without opening a signalling section (for opportunistic signalling from
    /// wait/peek paths, which the kernel exempts from the annotation).
    pub(crate) fn signal_unannotated(&self) -> bool {
        self.signal_impl(None, false).is_err()
    }

    /// The signal itself; with `section`, a signalling section is opened around the
    /// callbacks and wakers (when the caller has not opened one around everything).
    fn signal_impl(&self, ts: Option<u64>, section: bool) -> Result<()> {
        // The time is read before the flag goes in, as the kernel evaluates `ktime_get()`
        // before its test-and-set: the signal happens at this instant at the earliest,
        // and readers that see SIGNALED wait only for the store below, not for a clock
        // read.
        let t = ts.unwrap_or_else(ktime_now).min(NO_TS - 1);
        if crate::trace::enabled() {
            // While the names can still be read (they detach at the signal).
            crate::trace::fence_named(self);
        }
        let st = &self.inner.state;
        let old = st.fetch_or(SIGNALED, AcqRel);
        if old & SIGNALED != 0 {
            return Err(Error::AlreadySignaled);
        }
        if old & SETTING_ERROR != 0 {
            // A set_error that started before us finishes its store; wait for it.
            while st.load(Acquire) & SETTING_ERROR != 0 {
                std::hint::spin_loop();
            }
        }
        self.inner.timestamp.store(t, Release);
        if crate::trace::enabled() {
            crate::trace::fence_signalled(self, t);
        }
        let _section = (section && old & (HAS_CALLBACKS | HAS_WAKERS) != 0)
            .then(annotations::begin_signalling);
        if old & HAS_CALLBACKS != 0 {
            // Waiters may register until the callbacks have run: take their bits from the
            // word as it was when CALLBACKS_RUN went in.
            let old = self.run_callbacks();
            self.wake_all(old);
            defer::drain();
        } else if old & (HAS_WAITERS | HAS_WAKERS) != 0 {
            // Without callbacks the fence was complete the moment SIGNALED went in: no
            // waiter registers after that, so `old` names them all.
            self.wake_all(old);
        }
        Ok(())
    }

    /// Run the callback list under the slow lock; returns the state word from before
    /// `CALLBACKS_RUN` was set.
    fn run_callbacks(&self) -> u32 {
        // Declared before the lock guard, so that on unwind it runs after the unlock.
        let mut unwind = CompleteOnUnwind(Some(self));
        let mut slow = self.inner.slow.lock();
        let first = slow.first.take();
        let cbs = slow.take_callbacks();
        {
            let _run = CallbackScope::enter(self.addr());
            for (_, cb) in first.into_iter().chain(cbs) {
                cb(self);
            }
        }
        let old = self.inner.state.fetch_or(CALLBACKS_RUN, AcqRel);
        drop(slow);
        unwind.0 = None;
        old
    }

    /// Wake sleepers and async waiters after the fence became complete; `old` is the state
    /// word returned by the read-modify-write that completed it.
    fn wake_all(&self, old: u32) {
        if old & HAS_WAKERS != 0 {
            let wakers = self.inner.slow.lock().take_wakers();
            for (_, w) in wakers {
                w.wake();
            }
        }
        if old & HAS_WAITERS != 0 {
            futex_wake_all(&self.inner.state);
        }
    }

    // ---- errors and status --------------------------------------------------------

    /// Set the error the fence will signal with (`dma_fence_set_error`). Only before the
    /// fence is signalled; `errno` must be a negative errno in `[-4095, -1]`
    /// (`-ENODATA`, `-ECANCELED`, `-ETIME`… are customary). A later call overwrites an
    /// earlier one.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if `errno` is out of range or the fence is already
    /// signalled; the error is unchanged then.
    pub fn set_error(&self, errno: i32) -> Result<()> {
        if !(-MAX_ERRNO..=-1).contains(&errno) {
            return Err(Error::Invalid(
                "fence error must be a negative errno in [-4095, -1]",
            ));
        }
        self.store_error(errno, false)
    }

    /// Store `errno` unless the fence is signalled; with `first_only`, only if no error
    /// is set yet (containers: first member error wins).
    pub(crate) fn store_error(&self, errno: i32, first_only: bool) -> Result<()> {
        let st = &self.inner.state;
        let mut s = st.load(Relaxed);
        loop {
            if s & SIGNALED != 0 {
                return Err(Error::Invalid("set_error on a signalled fence"));
            }
            if s & SETTING_ERROR != 0 {
                std::hint::spin_loop();
                s = st.load(Relaxed);
                continue;
            }
            match st.compare_exchange_weak(s, s | SETTING_ERROR, Acquire, Relaxed) {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        if !first_only || self.inner.error.load(Relaxed) == 0 {
            self.inner.error.store(errno, Relaxed);
        }
        st.fetch_and(!SETTING_ERROR, Release);
        Ok(())
    }

    /// The error set so far (0 if none). Final once the fence is signalled.
    pub fn error(&self) -> i32 {
        self.inner.error.load(Acquire)
    }

    /// The status (`dma_fence_get_status`): pending, signalled, or signalled with an
    /// error. Uses [`is_signaled`](Fence::is_signaled), so it may signal a fence whose
    /// ops report completion.
    pub fn status(&self) -> Status {
        if !self.is_signaled() {
            return Status::Pending;
        }
        match self.error() {
            0 => Status::Signaled,
            e => Status::Error(e),
        }
    }

    /// The kernel's raw status: 0 pending, 1 signalled, negative errno on error.
    pub fn get_status(&self) -> i32 {
        self.status().to_raw()
    }

    /// Whether the fence is signalled (`dma_fence_is_signaled`): the flag, else the ops'
    /// `signaled` peek, which signals the fence when it says yes. Does not enable
    /// signalling. On a signalled fence: one atomic load.
    #[inline]
    pub fn is_signaled(&self) -> bool {
        if self.inner.state.load(Acquire) & SIGNALED != 0 {
            return true;
        }
        self.is_signaled_slow()
    }

    /// [`is_signaled`](Self::is_signaled) for internal loops over many fences: the "no
    /// peek" answer inline too, at the price of a second test on every call.
    #[inline]
    pub(crate) fn is_signaled_inline(&self) -> bool {
        let s = self.inner.state.load(Acquire);
        if s & SIGNALED != 0 {
            return true;
        }
        if s & NO_PEEK != 0 {
            return false;
        }
        self.is_signaled_slow()
    }

    #[cold]
    fn is_signaled_slow(&self) -> bool {
        if self.inner.state.load(Acquire) & NO_PEEK != 0 {
            return false;
        }
        if self.inner.ops.signaled(self) {
            let _ = self.signal_unannotated();
            return true;
        }
        false
    }

    /// Only the flag, no peek (`test_bit(SIGNALED)`).
    #[inline]
    pub fn test_signaled_flag(&self) -> bool {
        self.inner.state.load(Acquire) & SIGNALED != 0
    }

    /// Whether the fence is complete: signalled, timestamp stored, callbacks run.
    #[inline]
    pub fn is_complete(&self) -> bool {
        is_complete(self.inner.state.load(Acquire)) && {
            self.spin_for_timestamp();
            true
        }
    }

    /// The fence is signalled: spin until the signaller's timestamp store is visible
    /// (it follows the SIGNALED bit by a few instructions). Returns the timestamp.
    #[inline]
    pub(crate) fn spin_for_timestamp(&self) -> u64 {
        loop {
            let t = self.inner.timestamp.load(Acquire);
            if t != NO_TS {
                return t;
            }
            std::hint::spin_loop();
        }
    }

    /// The signal timestamp in monotonic ns (`dma_fence_timestamp`), or `None` while
    /// unsignalled. Briefly spins if the signaller has set the flag but not yet stored
    /// the time.
    pub fn timestamp(&self) -> Option<u64> {
        if self.inner.state.load(Acquire) & SIGNALED == 0 {
            return None;
        }
        Some(self.spin_for_timestamp())
    }

    // ---- enabling, callbacks ------------------------------------------------------

    /// Ask the fence to signal on its own (`dma_fence_enable_sw_signaling`): calls
    /// `ops.enable_signaling` once per fence lifetime; if it returns false, signals now.
    pub fn enable_sw_signaling(&self) {
        let old = self.inner.state.fetch_or(ENABLE_SIGNAL, AcqRel);
        if old & (ENABLE_SIGNAL | SIGNALED) == 0 && !self.inner.ops.enable_signaling(self) {
            let _ = self.signal_unannotated();
        }
    }

    /// Register `cb` to run once when the fence signals (`dma_fence_add_callback`); it
    /// runs on the signalling thread, after earlier-registered callbacks, under the
    /// fence's lock (so: no waiting on this fence, no `remove_callback` on it, keep it
    /// short). Enables signalling first.
    ///
    /// # Errors
    ///
    /// `Err((Error::NoEntry, cb))` (`ENOENT`) if the fence is already signalled:
    /// the callback is handed back uncalled and nothing is registered.
    pub fn add_callback<F>(&self, cb: F) -> std::result::Result<CallbackId, (Error, F)>
    where
        F: FnOnce(&Fence) + Send + 'static,
    {
        if self.test_signaled_flag() {
            return Err((Error::NoEntry("fence already signalled"), cb));
        }
        self.enable_sw_signaling();
        let mut slow = self.inner.slow.lock();
        if !self.try_set_flag(HAS_CALLBACKS, SIGNALED) {
            return Err((Error::NoEntry("fence already signalled"), cb));
        }
        // SIGNALED was clear when HAS_CALLBACKS went in, so the signaller will see the bit
        // and take this lock to run the list after us.
        let id = slow.next_id;
        slow.next_id += 1;
        if slow.first.is_none() && !slow.has_more_callbacks() {
            slow.first = Some((id, Box::new(cb)));
        } else {
            slow.rest().callbacks.push((id, Box::new(cb)));
        }
        Ok(CallbackId(id))
    }

    /// Unregister a callback (`dma_fence_remove_callback`). Returns `true` if it was still
    /// pending (it will never run), `false` if it already ran or was never registered on
    /// this fence. When this returns `false` for a callback that was registered, the
    /// callback has finished running. Must not be called from a callback of this fence.
    pub fn remove_callback(&self, id: CallbackId) -> bool {
        if self.running_callbacks_here() {
            // From one of its own callbacks: the list was taken for this run, so no
            // callback is pending any more (and the lock is held further up this stack).
            return false;
        }
        let mut slow = self.inner.slow.lock();
        if slow.first.as_ref().is_some_and(|(i, _)| *i == id.0) {
            let removed = slow.first.take();
            // Keep registration order: the oldest remaining moves up.
            if slow.has_more_callbacks() {
                slow.first = Some(slow.rest().callbacks.remove(0));
            }
            drop(slow);
            drop(removed);
            return true;
        }
        let Some(rest) = slow.rest.as_mut() else {
            return false;
        };
        match rest.callbacks.iter().position(|(i, _)| *i == id.0) {
            Some(pos) => {
                let removed = rest.callbacks.remove(pos);
                drop(slow);
                drop(removed);
                true
            }
            None => false,
        }
    }

    /// Register an async waker, woken once the fence is complete. `None` if it already is.
    pub(crate) fn add_waker(&self, waker: &Waker) -> Option<WakerId> {
        // From one of its own callbacks the fence is signalled and its lock is held
        // further up this stack: treat it as complete.
        if self.is_complete() || self.running_callbacks_here() {
            return None;
        }
        self.enable_sw_signaling();
        let mut slow = self.inner.slow.lock();
        if !self.try_set_flag_until_complete(HAS_WAKERS) {
            return None;
        }
        let id = slow.next_id;
        slow.next_id += 1;
        slow.rest().wakers.push((id, waker.clone()));
        Some(WakerId(id))
    }

    /// Replace the waker registered under `id`; false if it was already woken.
    pub(crate) fn update_waker(&self, id: WakerId, waker: &Waker) -> bool {
        if self.running_callbacks_here() {
            return false;
        }
        let mut slow = self.inner.slow.lock();
        let Some(rest) = slow.rest.as_mut() else {
            return false;
        };
        match rest.wakers.iter_mut().find(|(i, _)| *i == id.0) {
            Some((_, w)) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                true
            }
            None => false,
        }
    }

    /// Drop a waker registration (no-op if already woken).
    pub(crate) fn remove_waker(&self, id: WakerId) {
        if self.running_callbacks_here() {
            // Left for the signaller, which wakes and drops every waker after the run.
            return;
        }
        let mut slow = self.inner.slow.lock();
        if let Some(rest) = slow.rest.as_mut() {
            rest.wakers.retain(|(i, _)| *i != id.0);
        }
    }

    /// Set `flag` unless any bit of `unless` is set; true on success.
    fn try_set_flag(&self, flag: u32, unless: u32) -> bool {
        let st = &self.inner.state;
        let mut s = st.load(Relaxed);
        loop {
            if s & unless != 0 {
                return false;
            }
            if s & flag != 0 {
                return true;
            }
            match st.compare_exchange_weak(s, s | flag, AcqRel, Relaxed) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    /// Set `flag` unless the fence is complete; returns the word it was set in (with the
    /// flag), or `None` if complete.
    pub(crate) fn set_waiter_flag(&self, flag: u32) -> Option<u32> {
        let st = &self.inner.state;
        let mut s = st.load(Acquire);
        loop {
            if is_complete(s) {
                return None;
            }
            if s & flag != 0 {
                return Some(s);
            }
            match st.compare_exchange_weak(s, s | flag, AcqRel, Acquire) {
                Ok(_) => return Some(s | flag),
                Err(now) => s = now,
            }
        }
    }

    fn try_set_flag_until_complete(&self, flag: u32) -> bool {
        self.set_waiter_flag(flag).is_some()
    }

    /// Toggle `KICK` and wake sleepers so they re-check an interrupt.
    pub(crate) fn kick(&self) {
        self.inner.state.fetch_xor(KICK, AcqRel);
        futex_wake_all(&self.inner.state);
    }

    // ---- deadlines ----------------------------------------------------------------

    /// Ask for the fence to be signalled by `deadline_ns` (absolute monotonic ns, see
    /// [`ktime_now`]; a deadline in the past means "as soon as possible")
    /// (`dma_fence_set_deadline`). The earliest deadline is kept; it is forwarded to
    /// `ops.set_deadline` while the fence is unsignalled and only when it is earlier than
    /// any given before. A no-op on a signalled fence. Never fails.
    pub fn set_deadline(&self, deadline_ns: u64) {
        if self.test_signaled_flag() {
            return;
        }
        // 0 means "none" internally; a deadline of 0 is as urgent as 1.
        let d = deadline_ns.max(1);
        let prev = self.inner.deadline.fetch_min_or_set(d);
        if prev == 0 || d < prev {
            self.inner.ops.set_deadline(self, d);
        }
    }

    /// The earliest deadline asked for, if any.
    pub fn deadline(&self) -> Option<u64> {
        match self.inner.deadline.load(Acquire) {
            0 => None,
            d => Some(d),
        }
    }
}

trait FetchMinOrSet {
    fn fetch_min_or_set(&self, v: u64) -> u64;
}

impl FetchMinOrSet for AtomicU64 {
    /// Store `v` if the cell is 0 or larger than `v`; returns the previous value.
    fn fetch_min_or_set(&self, v: u64) -> u64 {
        let mut cur = self.load(Acquire);
        loop {
            if cur != 0 && cur <= v {
                return cur;
            }
            match self.compare_exchange_weak(cur, v, AcqRel, Acquire) {
                Ok(p) => return p,
                Err(now) => cur = now,
            }
        }
    }
}

impl<O: ?Sized + FenceOps> Drop for Inner<O> {
    fn drop(&mut self) {
        crate::fence::live::fence_freed();
        let s = self.state.load(Acquire);
        if s & SIGNALED == 0 {
            let mut slow = self.slow.lock();
            let mut cbs: Vec<(u64, Callback)> = slow.first.take().into_iter().collect();
            cbs.append(&mut slow.take_callbacks());
            let wakers = slow.take_wakers();
            drop(slow);
            if !cbs.is_empty() || !wakers.is_empty() {
                super::note_unsignalled_release(
                    self.ops.driver_name(),
                    self.ops.timeline_name(),
                    self.context,
                    self.seqno,
                );
                // The object is going away: hand the callbacks a signalled snapshot that
                // carries the same identity and the -EDEADLK error.
                let snap = Fence::build(
                    Detached {
                        driver: self.ops.driver_name().to_owned(),
                        timeline: self.ops.timeline_name().to_owned(),
                    },
                    self.context,
                    self.seqno,
                    s & SEQNO64,
                );
                let _ = snap.store_error(-(rustix::io::Errno::DEADLK.raw_os_error()), false);
                let _ = snap.signal_unannotated();
                {
                    let _run = CallbackScope::enter(snap.addr());
                    for (_, cb) in cbs {
                        cb(&snap);
                    }
                }
                for (_, w) in wakers {
                    w.wake();
                }
                defer::drain();
            }
        }
        self.ops.release();
    }
}

/// Completes a fence whose callback run unwinds (a callback panicked, or a lockdep report
/// panicked inside one): marks the callbacks run and wakes every waiter, so that nobody
/// waits forever for a run that will not finish. The callbacks after the panicking one
/// are dropped uncalled.
struct CompleteOnUnwind<'a>(Option<&'a Fence>);

impl Drop for CompleteOnUnwind<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.0 {
            let old = f.inner.state.fetch_or(CALLBACKS_RUN, AcqRel);
            f.wake_all(old);
        }
    }
}

/// Ops of a snapshot handed to callbacks of a fence released unsignalled.
struct Detached {
    driver: String,
    timeline: String,
}

impl FenceOps for Detached {
    fn driver_name(&self) -> &str {
        &self.driver
    }
    fn timeline_name(&self) -> &str {
        &self.timeline
    }
}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.inner.state.load(Relaxed);
        f.debug_struct("Fence")
            .field("driver", &self.driver_name())
            .field("timeline", &self.timeline_name())
            .field("context", &self.inner.context.id())
            .field("seqno", &self.inner.seqno)
            .field("signaled", &(s & SIGNALED != 0))
            .field("error", &self.inner.error.load(Relaxed))
            .finish()
    }
}
