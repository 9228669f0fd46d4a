//! Deferred completion: the userspace stand-in for the kernel's irq_work.
//!
//! Fence callbacks run under the fence's lock. A container (array, chain) whose last
//! member signals from inside such a callback must not signal itself right there: that
//! would run the container's own callbacks nested inside the member's, recursing once per
//! level of nesting and taking locks in callback order. Instead the completion is queued
//! on a per-thread work list ([`defer`]) and run after the outermost callback run on this
//! thread has finished and released its lock ([`drain`]). Work queued while the list is
//! being drained is appended and run by the same loop, so depth stays constant.

use crate::shim;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

type Work = Box<dyn FnOnce()>;

shim::tls! {
    /// Nesting depth of callback runs on this thread.
    static DEPTH: Cell<u32> = Cell::new(0);
}
shim::tls! {
    /// Whether a drain loop is active on this thread.
    static DRAINING: Cell<bool> = Cell::new(false);
}
shim::tls! {
    static QUEUE: RefCell<VecDeque<Work>> = RefCell::new(VecDeque::new());
}

/// Marks a callback run on this thread; dropping it leaves the run. Not `Send`.
pub(crate) struct CallbackRun {
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Enter a callback run.
pub(crate) fn enter() -> CallbackRun {
    DEPTH.with(|d| d.set(d.get() + 1));
    CallbackRun {
        _not_send: std::marker::PhantomData,
    }
}

impl Drop for CallbackRun {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Run `work` now if this thread is outside every callback run, else queue it for
/// [`drain`].
pub(crate) fn defer(work: impl FnOnce() + 'static) {
    if DEPTH.with(|d| d.get()) == 0 {
        work();
    } else {
        QUEUE.with(|q| q.borrow_mut().push_back(Box::new(work)));
    }
}

/// Run queued work if this thread is outside every callback run and no drain loop is
/// already active further up the stack. Call after releasing the fence lock.
pub(crate) fn drain() {
    if DEPTH.with(|d| d.get()) != 0 || DRAINING.with(|d| d.get()) {
        return;
    }
    DRAINING.with(|d| d.set(true));
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DRAINING.with(|d| d.set(false));
        }
    }
    let _reset = Reset;
    while let Some(w) = QUEUE.with(|q| q.borrow_mut().pop_front()) {
        w();
    }
}
