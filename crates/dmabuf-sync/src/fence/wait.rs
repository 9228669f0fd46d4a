//! Waiting for fences: blocking (with timeout, interruptible), any-of, and async.
//!
//! Every blocking wait first calls [`might_wait`](super::might_wait) (lockdep: "a lock held
//! here is held across a fence wait"), enables signalling, spins briefly, then sleeps on
//! the fence's state word (a futex) until the fence is *complete*: signalled, timestamp
//! stored, every callback registered before the signal has run. No lock is taken and
//! nothing is allocated by a plain wait. Timeouts hold on every path: once the fence is
//! signalled the wait succeeds, and waiting for the signaller's callback run is bounded
//! by the deadline; on the thread running the fence's callbacks (a wait from inside one
//! of them) it is skipped, so such a wait never waits for itself (lockdep reports it as
//! sleeping in a callback, [`lockdep::ReportKind::SleepInAtomic`]).
//!
//! Return values follow the kernel's `dma_fence_wait_timeout`: `Ok(remaining)` with
//! `remaining` ≥ 1 ns when the fence signalled (also for a zero timeout on a signalled
//! fence), [`Error::TimedOut`] when the time ran out (the kernel's 0),
//! [`Error::Interrupted`] when the [`Interrupt`] fired or its own deadline passed (the
//! kernel's `-ERESTARTSYS`). The check order is the kernel's: signalled first, then
//! interrupted, then timeout. A negative timeout (the kernel's `-EINVAL`) cannot be
//! expressed with [`Duration`].

use super::annotations::might_wait;
use super::object::{Fence, WakerId, HAS_WAITERS, SIGNALED};
use crate::error::{Error, Result};
use crate::interrupt::Interrupt;
use crate::shim::{futex_wait, futex_wake_all, AtomicU32};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake};
use std::time::{Duration, Instant};

/// The smallest "time remaining" reported for a fence that signalled in time.
pub const MIN_REMAINING: Duration = Duration::from_nanos(1);

/// How many busy spin rounds a waiter makes before it starts yielding.
const SPIN_ROUNDS: u32 = 64;
/// How many times it then yields the CPU before it sleeps.
const YIELD_ROUNDS: u32 = 16;

impl Fence {
    /// Wait until the fence is signalled and its callbacks have run (`dma_fence_wait(f,
    /// false)`). Cannot fail.
    #[track_caller]
    pub fn wait(&self) {
        might_wait();
        let _ = self.wait_until(None, None);
    }

    /// Wait, returning early if `intr` fires or its deadline passes
    /// (`dma_fence_wait(f, true)`).
    ///
    /// # Errors
    ///
    /// [`Error::Interrupted`] (`EINTR`) if `intr` fired or its deadline passed first.
    #[track_caller]
    pub fn wait_interruptible(&self, intr: &Interrupt) -> Result<()> {
        might_wait();
        self.wait_until(None, Some(intr)).map(|_| ())
    }

    /// Wait at most `timeout` (`dma_fence_wait_timeout(f, false, t)`). A zero timeout
    /// only polls. `Ok(remaining)` (≥ 1 ns) if the fence signalled in time.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] (`ETIME`, the kernel's 0) if it did not.
    #[track_caller]
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Duration> {
        might_wait();
        self.wait_for(timeout, None)
    }

    /// [`wait_timeout`](Fence::wait_timeout) that also gives up if `intr` fires or its
    /// deadline passes first.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] as [`wait_timeout`](Fence::wait_timeout);
    /// [`Error::Interrupted`] (`EINTR`) if `intr` fired or its deadline passed first.
    #[track_caller]
    pub fn wait_timeout_interruptible(
        &self,
        timeout: Duration,
        intr: &Interrupt,
    ) -> Result<Duration> {
        might_wait();
        self.wait_for(timeout, Some(intr))
    }

    fn wait_for(&self, timeout: Duration, intr: Option<&Interrupt>) -> Result<Duration> {
        let start = Instant::now();
        let deadline = start.checked_add(timeout);
        if timeout.is_zero() {
            if self.is_signaled() {
                // A poll: signalled is the answer, whoever is still running callbacks.
                self.wait_callbacks(Some(start));
                return Ok(MIN_REMAINING);
            }
            if intr.is_some_and(|i| i.is_interrupted()) {
                return Err(Error::Interrupted);
            }
            return Err(Error::TimedOut);
        }
        self.wait_until(deadline, intr)?;
        let left = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
        Ok(left.max(MIN_REMAINING))
    }

    /// The core wait: until complete, `deadline` (→ TimedOut) or `intr` (→ Interrupted).
    /// Once the fence is signalled, the answer is `Ok` whatever happens next: the wait for
    /// the callback run is bounded by `deadline` and the interrupt's deadline, and skipped
    /// when this thread is the one running the callbacks.
    fn wait_until(&self, deadline: Option<Instant>, intr: Option<&Interrupt>) -> Result<()> {
        if self.is_complete() {
            return Ok(());
        }
        if !crate::trace::enabled() {
            return self.wait_until_inner(deadline, intr);
        }
        let t0 = crate::fence::ktime_now();
        let r = self.wait_until_inner(deadline, intr);
        crate::trace::fence_waited(self, t0, crate::fence::ktime_now());
        r
    }

    fn wait_until_inner(&self, deadline: Option<Instant>, intr: Option<&Interrupt>) -> Result<()> {
        let bound = earliest(deadline, intr.and_then(|i| i.deadline()));
        // Signalled wins over interrupted and timed out; then only the callback run of
        // the signaller is left to wait for.
        if self.test_signaled_flag() {
            self.wait_callbacks(bound);
            return Ok(());
        }
        self.enable_sw_signaling();
        if self.is_signaled() {
            self.wait_callbacks(bound);
            return Ok(());
        }
        if intr.is_some_and(|i| i.is_interrupted()) {
            return Err(Error::Interrupted);
        }
        for _ in 0..SPIN_ROUNDS {
            if self.test_signaled_flag() {
                self.wait_callbacks(bound);
                return Ok(());
            }
            std::hint::spin_loop();
        }
        for _ in 0..YIELD_ROUNDS {
            if self.test_signaled_flag() {
                self.wait_callbacks(bound);
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            std::thread::yield_now();
        }
        // A firing interrupt toggles a bit of the state word, so a sleep that began
        // before it returns at once.
        let _reg = intr.map(|i| {
            let me = self.clone();
            i.on_interrupt(move || me.kick())
        });
        loop {
            let Some(seen) = self.set_waiter_flag(HAS_WAITERS) else {
                self.spin_for_timestamp();
                return Ok(());
            };
            if seen & SIGNALED != 0 {
                self.wait_callbacks(bound);
                return Ok(());
            }
            if let Some(i) = intr {
                if i.is_interrupted() {
                    return Err(Error::Interrupted);
                }
            }
            let sleep = match bound {
                Some(l) => {
                    let now = Instant::now();
                    if now >= l {
                        return if self.test_signaled_flag() {
                            self.spin_for_timestamp();
                            Ok(())
                        } else if intr.is_some_and(|i| i.is_interrupted()) {
                            Err(Error::Interrupted)
                        } else {
                            Err(Error::TimedOut)
                        };
                    }
                    Some(l - now)
                }
                None => None,
            };
            futex_wait(&self.inner.state, seen, sleep);
        }
    }

    /// The fence is signalled: wait (uninterruptibly) for its callback run to finish, so
    /// that callbacks registered before the signal have run when a wait returns, but
    /// never past `bound` (a timed wait's deadline: the fence is signalled, so the wait
    /// succeeds then even though the signaller is still in its callbacks), and not at all
    /// on the thread running those callbacks (a wait from inside one of them, or from
    /// something it calls, would wait for itself: the kernel returns at once there too,
    /// its waits look only at the signalled bit). Returns with the timestamp stored.
    pub(crate) fn wait_callbacks(&self, bound: Option<Instant>) {
        if !self.running_callbacks_here() {
            // Callback runs are short by contract: spin a little before sleeping.
            for _ in 0..SPIN_ROUNDS {
                if self.is_complete() {
                    return;
                }
                std::hint::spin_loop();
            }
            while let Some(seen) = self.set_waiter_flag(HAS_WAITERS) {
                let sleep = match bound {
                    Some(b) => {
                        let now = Instant::now();
                        if now >= b {
                            break;
                        }
                        Some(b - now)
                    }
                    None => None,
                };
                futex_wait(&self.inner.state, seen, sleep);
            }
        }
        self.spin_for_timestamp();
    }

    /// A future that resolves once the fence is signalled and its callbacks have run.
    /// Registers a waker on first poll (enabling signalling); dropping the future
    /// unregisters it. Does not call `might_wait` (it never blocks a thread).
    pub fn wait_async(&self) -> FenceFuture {
        FenceFuture {
            fence: self.clone(),
            id: None,
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The future of [`Fence::wait_async`]; resolves to `()` (check
/// [`Fence::status`] for the error, as after a blocking wait).
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct FenceFuture {
    fence: Fence,
    id: Option<WakerId>,
}

impl FenceFuture {
    /// The fence waited for.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }
}

impl Future for FenceFuture {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.fence.is_complete() {
            return Poll::Ready(());
        }
        match self.id {
            None => match self.fence.add_waker(cx.waker()) {
                None => Poll::Ready(()),
                Some(id) => {
                    self.id = Some(id);
                    Poll::Pending
                }
            },
            Some(id) => {
                if self.fence.update_waker(id, cx.waker()) {
                    Poll::Pending
                } else {
                    // Woken wakers are removed only once the fence is complete.
                    self.id = None;
                    Poll::Ready(())
                }
            }
        }
    }
}

impl Drop for FenceFuture {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.fence.remove_waker(id);
        }
    }
}

/// Wakes a thread sleeping in [`wait_any_timeout`].
struct AnyWake {
    word: AtomicU32,
}

impl Wake for AnyWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.word.store(1, Release);
        futex_wake_all(&self.word);
    }
}

/// Wait until any of `fences` signals (`dma_fence_wait_any_timeout`), at most `timeout`
/// (`None` = forever; zero = poll), interruptibly if `intr` is given. Returns the index of
/// the first signalled fence in slice order and the time remaining (≥ 1 ns).
///
/// # Errors
///
/// [`Error::Invalid`] (`EINVAL`) for an empty slice; [`Error::TimedOut`];
/// [`Error::Interrupted`].
#[track_caller]
pub fn wait_any_timeout(
    fences: &[Fence],
    timeout: Option<Duration>,
    intr: Option<&Interrupt>,
) -> Result<(usize, Duration)> {
    if fences.is_empty() {
        return Err(Error::Invalid("wait_any on an empty set of fences"));
    }
    might_wait();
    let start = Instant::now();
    let deadline = timeout.and_then(|t| start.checked_add(t));
    let remaining = |done: Instant| -> Duration {
        match (timeout, deadline) {
            (Some(_), Some(d)) => d.saturating_duration_since(done).max(MIN_REMAINING),
            (Some(t), None) => t,
            (None, _) => Duration::MAX,
        }
    };
    let first = || fences.iter().position(|f| f.is_signaled());
    let bound = earliest(deadline, intr.and_then(|i| i.deadline()));
    if let Some(i) = first() {
        // A zero timeout polls: no waiting for the callback run then.
        let bound = if timeout.is_some_and(|t| t.is_zero()) {
            Some(start)
        } else {
            bound
        };
        fences[i].wait_callbacks(bound);
        return Ok((i, remaining(Instant::now())));
    }
    if timeout.is_some_and(|t| t.is_zero()) {
        return if intr.is_some_and(|i| i.is_interrupted()) {
            Err(Error::Interrupted)
        } else {
            Err(Error::TimedOut)
        };
    }
    let wake = Arc::new(AnyWake {
        word: AtomicU32::new(0),
    });
    let waker = std::task::Waker::from(wake.clone());
    let mut ids = Vec::with_capacity(fences.len());
    let _reg = intr.map(|i| {
        let w = wake.clone();
        i.on_interrupt(move || w.wake_by_ref())
    });
    let outcome = loop {
        ids.clear();
        let mut hit = None;
        for (i, f) in fences.iter().enumerate() {
            match f.add_waker(&waker) {
                Some(id) => ids.push((i, id)),
                None => {
                    hit = Some(i);
                    break;
                }
            }
        }
        if hit.is_none() {
            hit = first();
        }
        if hit.is_some() {
            break Ok(());
        }
        if intr.is_some_and(|i| i.is_interrupted()) {
            break Err(Error::Interrupted);
        }
        let limit = earliest(deadline, intr.and_then(|i| i.deadline()));
        let sleep = match limit {
            Some(l) => {
                let now = Instant::now();
                if now >= l {
                    break Err(if intr.is_some_and(|i| i.is_interrupted()) {
                        Error::Interrupted
                    } else {
                        Error::TimedOut
                    });
                }
                Some(l - now)
            }
            None => None,
        };
        if wake.word.load(Acquire) == 0 {
            futex_wait(&wake.word, 0, sleep);
        }
        if first().is_some() {
            break Ok(());
        }
        // Spurious or interrupt wake-up: unregister and go round again.
        for (i, id) in ids.drain(..) {
            fences[i].remove_waker(id);
        }
        wake.word.store(0, Release);
    };
    for (i, id) in ids.drain(..) {
        fences[i].remove_waker(id);
    }
    outcome?;
    let i = first().expect("a fence signalled");
    fences[i].wait_callbacks(bound);
    Ok((i, remaining(Instant::now())))
}

/// [`wait_any_timeout`] without a timeout; returns the index of the first signalled
/// fence.
///
/// # Errors
///
/// [`Error::Invalid`] (`EINVAL`) for an empty slice; [`Error::Interrupted`] (`EINTR`)
/// if `intr` fired or its deadline passed first.
#[track_caller]
pub fn wait_any(fences: &[Fence], intr: Option<&Interrupt>) -> Result<usize> {
    wait_any_timeout(fences, None, intr).map(|(i, _)| i)
}
