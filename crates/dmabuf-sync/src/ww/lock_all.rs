//! Locking a set of mutexes with the whole back-off protocol.

use super::{AcquireCtx, WwGuard, WwMutex};
use crate::error::{Error, Result};
use crate::interrupt::Interrupt;

/// Lock every mutex of `set` within `ctx` with the back-off protocol.
///
/// Mutexes are locked in the order given. On `Deadlock` every guard taken here is
/// dropped, the contended mutex is taken first with [`WwMutex::lock_slow`] (which waits
/// as long as needed), and the rest are taken again; this repeats until all are held.
/// A mutex that appears several times is locked once (`Already` from the context is how
/// duplicates are found). Returns the guards in the order of the first occurrence of
/// each mutex.
///
/// `ctx` should hold nothing else: if it does, a `Deadlock` cannot be resolved here, so
/// every guard taken here is dropped and `Deadlock` is returned — drop the rest, then
/// call `lock_all` again (it takes the contended mutex first when it is in `set`).
///
/// # Errors
///
/// With nothing taken here held (the guards of earlier calls stay):
/// - [`Error::Deadlock`] (EDEADLK): only when `ctx` held other locks on entry (see
///   above);
/// - [`Error::Invalid`] (EINVAL): a misuse (a mutex of another class, `ctx` done, a
///   mutex this thread holds outside `ctx`, ...), reported to lockdep.
///
/// # Panics
///
/// On a misuse, when lockdep is on and its policy is to panic (see the module docs).
#[must_use = "dropping the guards unlocks at once"]
#[track_caller]
pub fn lock_all<'a, T: ?Sized>(
    ctx: &'a AcquireCtx,
    set: &[&'a WwMutex<T>],
) -> Result<Vec<WwGuard<'a, T>>> {
    lock_all_inner(ctx, set, None)
}

/// [`lock_all`], interruptibly: a wait ends when `intr` fires.
///
/// # Errors
///
/// As [`lock_all`], plus [`Error::Interrupted`] (EINTR), with nothing taken here held,
/// when `intr` fired (or its deadline passed) while waiting.
///
/// # Panics
///
/// As [`lock_all`].
#[must_use = "dropping the guards unlocks at once"]
#[track_caller]
pub fn lock_all_interruptible<'a, T: ?Sized>(
    ctx: &'a AcquireCtx,
    set: &[&'a WwMutex<T>],
    intr: &Interrupt,
) -> Result<Vec<WwGuard<'a, T>>> {
    lock_all_inner(ctx, set, Some(intr))
}

#[track_caller]
fn lock_all_inner<'a, T: ?Sized>(
    ctx: &'a AcquireCtx,
    set: &[&'a WwMutex<T>],
    intr: Option<&Interrupt>,
) -> Result<Vec<WwGuard<'a, T>>> {
    let mut contended = match ctx.contending.get() {
        0 => None,
        addr => set.iter().position(|m| m.addr() == addr),
    };
    'retry: loop {
        let mut guards: Vec<WwGuard<'a, T>> = Vec::with_capacity(set.len());
        // The contended mutex is locked first; `slow_at` is where its guard belongs in
        // the order of `set`.
        let mut slow_at = 0;
        if let Some(c) = contended {
            let g = match intr {
                Some(i) => set[c].lock_slow_interruptible(ctx, i)?,
                None => set[c].lock_slow(ctx)?,
            };
            guards.push(g);
        }
        for (i, m) in set.iter().enumerate() {
            if Some(i) == contended {
                slow_at = guards.len() - 1;
                continue;
            }
            let r = match intr {
                Some(intr) => m.lock_interruptible(ctx, intr),
                None => m.lock(ctx),
            };
            match r {
                Ok(g) => guards.push(g),
                Err(Error::Already) => {}
                Err(Error::Deadlock) => {
                    drop(guards);
                    if ctx.acquired() > 0 {
                        return Err(Error::Deadlock);
                    }
                    contended = Some(i);
                    continue 'retry;
                }
                Err(e) => return Err(e),
            }
        }
        if contended.is_some() {
            guards[..=slow_at].rotate_left(1);
        }
        return Ok(guards);
    }
}
