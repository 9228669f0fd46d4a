//! Locking many reservation objects at once with the back-off protocol built in — the
//! kernel's `drm_exec`.
//!
//! ```
//! use dmabuf_sync::resv::{exec::Exec, Resv, RESERVATION_WW_CLASS};
//! use dmabuf_sync::ww::AcquireCtx;
//!
//! let (a, b) = (Resv::new(), Resv::new());
//! let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
//! let mut exec = Exec::new(&ctx);
//! exec.until_all_locked(|e| {
//!     e.lock(&a)?;
//!     e.lock(&b)?;
//!     e.lock(&a)?; // duplicates are fine: locked once
//!     Ok(())
//! })
//! .unwrap();
//! assert_eq!(exec.guards().len(), 2);
//! ```
//!
//! When a lock loses to an older transaction ([`Error::Deadlock`]), [`Exec::lock`] drops
//! every lock the transaction holds and remembers the contended object;
//! [`Exec::until_all_locked`] then takes that object first with `lock_slow` and runs the
//! closure again, where locking it once more is a no-op.

use super::{Resv, ResvGuard};
use crate::error::{Error, Result};
use crate::interrupt::Interrupt;
use crate::ww::AcquireCtx;

/// A multi-object locking transaction over one acquire context. Dropping it unlocks
/// every object it holds.
#[must_use = "dropping an Exec unlocks every reservation object it locked"]
pub struct Exec<'a> {
    ctx: &'a AcquireCtx,
    locked: Vec<ResvGuard<'a>>,
    contended: Option<&'a Resv>,
    intr: Option<Interrupt>,
}

impl<'a> Exec<'a> {
    /// A transaction on `ctx` (which must be of [`super::RESERVATION_WW_CLASS`] and hold
    /// nothing yet).
    pub fn new(ctx: &'a AcquireCtx) -> Self {
        Exec {
            ctx,
            locked: Vec::new(),
            contended: None,
            intr: None,
        }
    }

    /// The same, with every wait interruptible by `intr` (`Interrupted`).
    pub fn interruptible(ctx: &'a AcquireCtx, intr: Interrupt) -> Self {
        Exec {
            intr: Some(intr),
            ..Self::new(ctx)
        }
    }

    /// Lock `obj`; a duplicate is a no-op.
    ///
    /// # Errors
    ///
    /// `Deadlock` — every lock of the transaction has been dropped and `obj`
    /// remembered: return it from the [`until_all_locked`](Self::until_all_locked)
    /// closure (the `?` operator does) to retry; `Interrupted`; `Invalid` for a context
    /// misuse.
    #[track_caller]
    pub fn lock(&mut self, obj: &'a Resv) -> Result<()> {
        let r = match &self.intr {
            Some(i) => obj.lock_interruptible(self.ctx, i),
            None => obj.lock(self.ctx),
        };
        match r {
            Ok(g) => {
                self.locked.push(g);
                Ok(())
            }
            Err(Error::Already) => Ok(()),
            Err(Error::Deadlock) => {
                self.locked.clear();
                self.contended = Some(obj);
                Err(Error::Deadlock)
            }
            Err(e) => Err(e),
        }
    }

    /// Run `f` until it has locked everything it wanted without contention. Before each
    /// retry, the object that was contended is locked first (`lock_slow`).
    ///
    /// # Errors
    ///
    /// Whatever `f` returns other than a contention `Deadlock`, and
    /// `Interrupted` from the slow lock; locks taken so far stay held in `self`.
    #[track_caller]
    pub fn until_all_locked<R>(&mut self, mut f: impl FnMut(&mut Self) -> Result<R>) -> Result<R> {
        loop {
            if let Some(c) = self.contended.take() {
                let g = match &self.intr {
                    Some(i) => c.lock_slow_interruptible(self.ctx, i)?,
                    None => c.lock_slow(self.ctx)?,
                };
                self.locked.push(g);
            }
            match f(self) {
                Err(Error::Deadlock) if self.contended.is_some() => continue,
                other => return other,
            }
        }
    }

    /// The guards held, in locking order.
    pub fn guards(&self) -> &[ResvGuard<'a>] {
        &self.locked
    }

    /// The guard of `obj`, if the transaction holds it.
    pub fn guard_mut(&mut self, obj: &Resv) -> Option<&mut ResvGuard<'a>> {
        self.locked.iter_mut().find(|g| g.resv().id() == obj.id())
    }

    /// Give up the transaction's locks as guards.
    #[must_use = "dropping the guards unlocks the reservation objects at once"]
    pub fn into_guards(self) -> Vec<ResvGuard<'a>> {
        self.locked
    }
}

/// Lock every object of `objs` (duplicates once) in one transaction on `ctx`, retrying on
/// contention; returns the guards in order of first occurrence.
///
/// # Errors
///
/// `Interrupted` (with `intr`), `Invalid` for a context misuse; nothing is held
/// then.
#[track_caller]
pub fn lock_all<'a>(
    ctx: &'a AcquireCtx,
    objs: &[&'a Resv],
    intr: Option<Interrupt>,
) -> Result<Vec<ResvGuard<'a>>> {
    let mut exec = match intr {
        Some(i) => Exec::interruptible(ctx, i),
        None => Exec::new(ctx),
    };
    exec.until_all_locked(|e| {
        for o in objs {
            e.lock(o)?;
        }
        Ok(())
    })?;
    let mut guards = exec.into_guards();
    // Order of first occurrence (the contended one may have been locked first).
    let pos = |g: &ResvGuard<'_>| {
        objs.iter()
            .position(|o| o.id() == g.resv().id())
            .unwrap_or(usize::MAX)
    };
    guards.sort_by_key(pos);
    Ok(guards)
}
