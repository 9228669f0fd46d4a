//! Interruption of blocking calls: the userspace stand-in for a pending signal.
//!
//! The kernel's interruptible waits return `-ERESTARTSYS`/`-EINTR` when a signal arrives.
//! Here a caller passes an [`Interrupt`] to the `_interruptible` forms of waits and locks;
//! firing it ([`Interrupt::interrupt`]) or reaching its deadline makes every wait that
//! watches it return [`Error::Interrupted`](crate::Error::Interrupted).
//!
//! A waiter registers a wake-up with [`Interrupt::on_interrupt`], *then* checks
//! [`Interrupt::is_interrupted`], then sleeps no later than [`Interrupt::deadline`]: the
//! registration before the check is what makes a concurrent `interrupt()` impossible to
//! miss.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Waker = Arc<dyn Fn() + Send + Sync>;

struct Inner {
    fired: AtomicBool,
    deadline: Option<Instant>,
    next_id: AtomicU64,
    wakers: Mutex<Vec<(u64, Waker)>>,
}

/// A cancellation token for interruptible waits, cheap to clone; clones share state.
#[derive(Clone)]
pub struct Interrupt {
    inner: Arc<Inner>,
}

impl Default for Interrupt {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupt")
            .field("fired", &self.inner.fired.load(Ordering::Relaxed))
            .field("deadline", &self.inner.deadline)
            .finish()
    }
}

impl Interrupt {
    /// A token that fires only when [`interrupt`](Self::interrupt) is called.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// A token that also counts as fired from `deadline` on.
    pub fn with_deadline(deadline: Instant) -> Self {
        Self::build(Some(deadline))
    }

    /// A token that counts as fired `after` from now.
    pub fn after(after: Duration) -> Self {
        Self::build(Instant::now().checked_add(after))
    }

    fn build(deadline: Option<Instant>) -> Self {
        Interrupt {
            inner: Arc::new(Inner {
                fired: AtomicBool::new(false),
                deadline,
                next_id: AtomicU64::new(0),
                wakers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Fire: every current and future wait watching this token returns
    /// `Error::Interrupted`. Idempotent.
    pub fn interrupt(&self) {
        if self.inner.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        let wakers: Vec<Waker> = self
            .inner
            .wakers
            .lock()
            .iter()
            .map(|(_, w)| w.clone())
            .collect();
        for w in wakers {
            w();
        }
    }

    /// Whether the token fired or its deadline passed.
    pub fn is_interrupted(&self) -> bool {
        self.inner.fired.load(Ordering::SeqCst)
            || self.inner.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The deadline, if any: waiters must not sleep past it.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// Call `wake` when the token fires (at most once per firing, from the firing
    /// thread). Deadlines do not call it: waiters bound their sleep by
    /// [`deadline`](Self::deadline). The registration ends when the returned value drops.
    pub fn on_interrupt(&self, wake: impl Fn() + Send + Sync + 'static) -> Registration {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.wakers.lock().push((id, Arc::new(wake)));
        Registration {
            inner: self.inner.clone(),
            id,
        }
    }
}

/// A wake-up registered with [`Interrupt::on_interrupt`]; dropping it unregisters.
#[must_use = "the wake-up is unregistered as soon as its registration drops"]
pub struct Registration {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.inner.wakers.lock().retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn fires_once_and_wakes_registered() {
        let i = Interrupt::new();
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let reg = i.on_interrupt(move || {
            n2.fetch_add(1, Ordering::SeqCst);
        });
        assert!(!i.is_interrupted());
        i.interrupt();
        i.interrupt();
        assert!(i.is_interrupted());
        assert_eq!(n.load(Ordering::SeqCst), 1);
        drop(reg);
        assert!(i.inner.wakers.lock().is_empty());
    }

    #[test]
    fn deadline_counts_as_fired() {
        let i = Interrupt::after(Duration::ZERO);
        assert!(i.is_interrupted());
        let j = Interrupt::after(Duration::from_secs(3600));
        assert!(!j.is_interrupted());
        assert!(j.deadline().is_some());
    }
}
