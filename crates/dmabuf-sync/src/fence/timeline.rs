//! Software timelines (`sw_sync`): a 32-bit counter whose points are fences signalled
//! when the counter reaches them. A test tool, as in the kernel: whoever holds the
//! timeline can stall every waiter of its points.
//!
//! Locks: `signal_lock` orders signalling (increments and close) so that points of the
//! context signal in order; the `pending` lock guards the value and the pending list and
//! is never held while a point signals, so a point's callback may create points on the
//! same timeline. A callback may also increment or close it: in the kernel that recursed
//! on the timeline lock (a deadlock, or a lockdep splat); here the thread that holds
//! `signal_lock` is known, and an increment or close it makes from a point's callback is
//! recorded and carried out by the signalling loop already running on it, after the point
//! being signalled, so points still signal in order and nothing waits for itself.

use super::object::{Container, Fence, FenceOps};
use super::{seqno_is_later, Context};
use crate::error::{Error, Result};
use crate::shim::{AtomicU32, Mutex};
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::Arc;

struct Inner {
    name: String,
    context: Context,
    /// The counter, readable without a lock for the points' `signaled` peek.
    value: AtomicU32,
    signal_lock: Mutex<()>,
    /// The [thread id](crate::shim::thread_id) holding `signal_lock`, 0 for none.
    signaller: AtomicU32,
    /// Work asked for by a point's callback on the signalling thread, for its loop.
    deferred: Mutex<Deferred>,
    /// Pending points, ordered by distance ahead of the value.
    pending: Mutex<Vec<Fence>>,
}

/// Increments and a close recorded while this timeline's points signal on this thread.
#[derive(Default)]
struct Deferred {
    inc: u64,
    close: bool,
}

/// One piece of signalling work.
enum Work {
    Inc(u64),
    Close,
}

/// A sw_sync timeline (one open of the kernel's `sw_sync` debugfs file). Dropping it is
/// the close: every pending point is signalled with `-ENOENT`.
pub struct Timeline {
    inner: Arc<Inner>,
}

/// The ops of a timeline point (`sync_pt`).
struct SyncPt {
    tl: Arc<Inner>,
}

impl FenceOps for SyncPt {
    fn driver_name(&self) -> &str {
        "sw_sync"
    }
    fn timeline_name(&self) -> &str {
        &self.tl.name
    }
    fn signaled(&self, fence: &Fence) -> bool {
        !seqno_is_later(fence.seqno(), u64::from(self.tl.value.load(Acquire)), false)
    }
    #[allow(private_interfaces)] // sealed: see `FenceOps::container`
    fn container(&self) -> Container<'_> {
        Container::SwSyncPoint
    }
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("name", &self.inner.name)
            .field("context", &self.inner.context)
            .field("value", &self.value())
            .finish()
    }
}

impl Timeline {
    /// A new timeline named `name` with a fresh context, at value 0.
    pub fn new(name: &str) -> Timeline {
        Timeline {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                context: Context::new(),
                value: AtomicU32::new(0),
                signal_lock: Mutex::new(()),
                signaller: AtomicU32::new(0),
                deferred: Mutex::new(Deferred::default()),
                pending: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The timeline name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The timeline's context.
    pub fn context(&self) -> Context {
        self.inner.context
    }

    /// The current value.
    pub fn value(&self) -> u32 {
        self.inner.value.load(Acquire)
    }

    /// Number of pending points (for tests and `sync/info`).
    pub fn pending_count(&self) -> usize {
        self.inner.pending.lock().len()
    }

    /// A point at `value` (`SW_SYNC_IOC_CREATE_FENCE`): a live pending point of the same
    /// value is reused (same fence object); a value already reached gives a point
    /// signalled at birth. Ordering is 32-bit with wrap-around. Takes the state lock.
    pub fn create_fence(&self, value: u32) -> Fence {
        let tl = &self.inner;
        let mut pending = tl.pending.lock();
        let cur = tl.value.load(Acquire);
        if !seqno_is_later(u64::from(value), u64::from(cur), false) {
            drop(pending);
            let f = Fence::new(SyncPt { tl: tl.clone() }, tl.context, u64::from(value));
            let _ = f.signal_unannotated();
            return f;
        }
        let ahead = |s: u64| (s as u32).wrapping_sub(cur);
        let pos = pending.partition_point(|p| ahead(p.seqno()) < value.wrapping_sub(cur));
        if let Some(p) = pending.get(pos) {
            if p.seqno() == u64::from(value) {
                return p.clone();
            }
        }
        let f = Fence::new(SyncPt { tl: tl.clone() }, tl.context, u64::from(value));
        pending.insert(pos, f.clone());
        f
    }

    /// Advance the counter by `inc` (`SW_SYNC_IOC_INC`), in steps of at most `i32::MAX`
    /// as the kernel does, signalling every point reached, in order. Takes the signal lock
    /// for the whole call. From a callback of one of this timeline's points (on the
    /// thread signalling it), the increment is recorded and made by that signalling
    /// loop once the current point's callbacks return; it has happened when the
    /// outermost `inc` (or close) returns.
    pub fn inc(&self, inc: u32) {
        self.signalling(Work::Inc(u64::from(inc)));
    }

    /// Run `first` under the signal lock, then whatever the points' callbacks asked for
    /// meanwhile; on the thread already doing so (a point's callback), only record it.
    fn signalling(&self, first: Work) {
        let tl = &self.inner;
        let me = crate::shim::thread_id();
        if tl.signaller.load(Acquire) == me {
            let mut d = tl.deferred.lock();
            match first {
                Work::Inc(n) => d.inc += n,
                Work::Close => d.close = true,
            }
            return;
        }
        let _order = tl.signal_lock.lock();
        tl.signaller.store(me, Release);
        let mut work = Some(first);
        while let Some(w) = work {
            match w {
                Work::Inc(mut left) => {
                    while left > 0 {
                        let n = left.min(i32::MAX as u64);
                        self.step(n as u32);
                        left -= n;
                    }
                }
                Work::Close => self.close_locked(),
            }
            let mut d = tl.deferred.lock();
            work = if d.inc > 0 {
                Some(Work::Inc(std::mem::take(&mut d.inc)))
            } else if std::mem::take(&mut d.close) {
                Some(Work::Close)
            } else {
                None
            };
        }
        tl.signaller.store(0, Release);
    }

    fn step(&self, inc: u32) {
        let tl = &self.inner;
        let reached: Vec<Fence> = {
            let mut pending = tl.pending.lock();
            let v = tl.value.load(Acquire).wrapping_add(inc);
            tl.value.store(v, Release);
            let n = pending
                .iter()
                .take_while(|p| !seqno_is_later(p.seqno(), u64::from(v), false))
                .count();
            pending.drain(..n).collect()
        };
        for p in reached {
            let _ = p.signal();
        }
    }
}

impl Timeline {
    /// Signal every pending point with `-ENOENT`, as the last close of the kernel's
    /// timeline file does (what dropping the timeline does); points made afterwards
    /// are pending again until the value reaches them. Takes the signal lock; from a
    /// point's callback, recorded like a nested [`inc`](Self::inc).
    pub(crate) fn close(&self) {
        self.signalling(Work::Close);
    }

    fn close_locked(&self) {
        let all = std::mem::take(&mut *self.inner.pending.lock());
        for p in all {
            let _ = p.set_error(-(rustix::io::Errno::NOENT.raw_os_error()));
            let _ = p.signal();
        }
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        self.close();
    }
}

/// The earliest deadline set on a sw_sync point (`SW_SYNC_GET_DEADLINE`).
///
/// # Errors
///
/// [`Error::Invalid`] (`EINVAL`) if `fence` is not a sw_sync point;
/// [`Error::NoEntry`] (`ENOENT`) if no deadline was set.
pub fn get_deadline(fence: &Fence) -> Result<u64> {
    if !matches!(fence.ops().container(), Container::SwSyncPoint) {
        return Err(Error::Invalid("not a sw_sync point"));
    }
    fence
        .deadline()
        .ok_or(Error::NoEntry("no deadline set on this point"))
}
