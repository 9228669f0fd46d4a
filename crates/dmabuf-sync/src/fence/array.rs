//! Fence arrays: one fence standing for a set of fences (`dma_fence_array`), signalled
//! when all of them have signalled, or when any one has (`signal_on_any`).
//!
//! The array keeps a counter of members still pending (n, or 1 for any-of). Signalling is
//! armed lazily: the first callback, wait or explicit enable adds one callback per member,
//! each holding a reference to the array. A member that signals decrements the counter;
//! the member that takes it to zero completes the array — not inline, but through the
//! per-thread deferred work list, so that a member signalled from inside another fence's
//! callback does not run the array's callbacks nested in its own (no recursion, no lock
//! nesting; the kernel uses irq_work for the same reason). The first member error is the
//! array's error.

use super::defer;
use super::object::{Container, Fence, FenceOps, ENABLE_SIGNAL};
use super::Context;
use crate::error::{Error, Result};
use crate::shim::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};

/// The ops (and state) of an array fence; reach it with [`Fence::as_array`].
pub struct FenceArray {
    fences: Vec<Fence>,
    /// Members still to signal before the array does (saturates at 0).
    num_pending: AtomicUsize,
    signal_on_any: bool,
}

impl FenceArray {
    /// Create an array fence over `fences` (ownership taken), in `context` at `seqno`
    /// (`dma_fence_array_create`). With `signal_on_any` it signals when the first member
    /// does, else when all have.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] (`EINVAL`) if `fences` is empty, or if a member is itself
    /// an array or a chain (flatten with [`unwrap`](super::unwrap) instead; the kernel
    /// warns). Nothing is created then.
    pub fn create(
        fences: Vec<Fence>,
        context: Context,
        seqno: u64,
        signal_on_any: bool,
    ) -> Result<Fence> {
        if fences.is_empty() {
            return Err(Error::Invalid("fence array of no fences"));
        }
        if fences.iter().any(|f| f.is_container()) {
            return Err(Error::Invalid(
                "fence array member is a container; flatten it first",
            ));
        }
        let n = if signal_on_any { 1 } else { fences.len() };
        Ok(Fence::new(
            FenceArray {
                fences,
                num_pending: AtomicUsize::new(n),
                signal_on_any,
            },
            context,
            seqno,
        ))
    }

    /// The members.
    pub fn fences(&self) -> &[Fence] {
        &self.fences
    }

    /// Number of members.
    pub fn num_fences(&self) -> usize {
        self.fences.len()
    }

    /// Whether the array signals on the first member (else on all).
    pub fn signal_on_any(&self) -> bool {
        self.signal_on_any
    }

    /// Whether every member belongs to `context` (`dma_fence_match_context`).
    pub fn match_context(&self, context: Context) -> bool {
        self.fences.iter().all(|f| f.context() == context)
    }

    /// Decrement the pending counter; true if this call took it to zero.
    fn dec_and_test(&self) -> bool {
        let mut cur = self.num_pending.load(Acquire);
        loop {
            if cur == 0 {
                return false;
            }
            match self
                .num_pending
                .compare_exchange_weak(cur, cur - 1, AcqRel, Acquire)
            {
                Ok(_) => return cur == 1,
                Err(now) => cur = now,
            }
        }
    }

    /// A member signalled with `error`: record it, and complete the array at zero.
    fn member_done(array: &Fence, error: i32) {
        let Some(a) = array.as_array() else { return };
        if error != 0 {
            let _ = array.store_error(error, true);
        }
        if a.dec_and_test() {
            let array = array.clone();
            defer::defer(move || {
                // Someone may have signalled it through the peek path first.
                let _ = array.signal();
            });
        }
    }

    /// Number of members still pending per the counter (for tests).
    pub fn pending(&self) -> usize {
        self.num_pending.load(Relaxed)
    }
}

impl FenceOps for FenceArray {
    fn driver_name(&self) -> &str {
        "dma_fence_array"
    }

    fn timeline_name(&self) -> &str {
        "unbound"
    }

    fn enable_signaling(&self, fence: &Fence) -> bool {
        for m in &self.fences {
            let array = fence.clone();
            if let Err((_, _cb)) =
                m.add_callback(move |m: &Fence| FenceArray::member_done(&array, m.error()))
            {
                // Already signalled: account for it here.
                if m.error() != 0 {
                    let _ = fence.store_error(m.error(), true);
                }
                if self.dec_and_test() {
                    return false;
                }
            }
        }
        true
    }

    fn signaled(&self, fence: &Fence) -> bool {
        if fence.inner.state.load(Acquire) & ENABLE_SIGNAL != 0 {
            // Armed: the counter is authoritative (acquire pairs with the decrements).
            return self.num_pending.load(Acquire) == 0;
        }
        let need = if self.signal_on_any {
            1
        } else {
            self.fences.len()
        };
        let mut done = 0;
        let mut first_err = 0;
        for m in &self.fences {
            if m.is_signaled() {
                done += 1;
                if first_err == 0 {
                    first_err = m.error();
                }
            }
        }
        if done >= need {
            if first_err != 0 {
                let _ = fence.store_error(first_err, true);
            }
            return true;
        }
        false
    }

    fn set_deadline(&self, _fence: &Fence, deadline_ns: u64) {
        for m in &self.fences {
            m.set_deadline(deadline_ns);
        }
    }

    #[allow(private_interfaces)] // sealed: see `FenceOps::container`
    fn container(&self) -> Container<'_> {
        Container::Array(self)
    }
}

impl Fence {
    /// The array state if this fence is an array (`to_dma_fence_array`).
    pub fn as_array(&self) -> Option<&FenceArray> {
        match self.ops().container() {
            Container::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Whether this fence is an array or a chain (`dma_fence_is_container`).
    pub fn is_container(&self) -> bool {
        matches!(
            self.ops().container(),
            Container::Array(_) | Container::Chain(_)
        )
    }
}
