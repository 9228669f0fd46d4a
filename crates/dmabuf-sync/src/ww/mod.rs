//! Wound/wait mutexes: deadlock-free locking of any set of locks of one class.
//!
//! # DOC: the protocol
//!
//! Locks of one [`WwClass`] may be taken in any order by several threads at once, as
//! long as each thread takes them inside an [`AcquireCtx`] (the kernel's
//! `ww_acquire_ctx`). Every context gets a *stamp* from its class when it starts; a
//! smaller stamp is an older context, and older contexts win. When two contexts contend
//! in a way that could close a cycle, the younger one gets [`Error::Deadlock`]
//! (`-EDEADLK`) and must *back off*: drop every lock of the context, wait for the
//! contended lock with [`WwMutex::lock_slow`], then take the rest again. Locking a mutex
//! the context already holds gives [`Error::Already`] (`-EALREADY`), which doubles as
//! duplicate detection. [`lock_all`](fn@lock_all) implements the whole loop.
//!
//! ```
//! use dmabuf_sync::ww::{lock_all, AcquireCtx, WwClass, WwMutex};
//! static CLASS: WwClass = WwClass::wait_die("doc_obj", "doc_obj_ctx");
//! let (a, b) = (WwMutex::new(&CLASS, 1), WwMutex::new(&CLASS, 2));
//! let ctx = AcquireCtx::new(&CLASS);
//! let guards = lock_all(&ctx, &[&a, &b, &a]).unwrap(); // `a` twice: locked once
//! assert_eq!(guards.len(), 2);
//! ctx.done();
//! drop(guards);
//! ctx.fini().unwrap();
//! ```
//!
//! Two algorithms decide who backs off ([`WwAlgorithm`]):
//!
//! - **Wait-Die**: a context that holds locks and would wait for an older holder, or
//!   behind an older waiting context, dies at once. An older arrival wakes the younger
//!   lock-holding waiters so that they die.
//! - **Wound-Wait**: an older context that holds locks and waits for a younger holder
//!   *wounds* it (sets a flag and wakes its thread). The wounded context learns it
//!   lazily: its next lock that has to wait, while it holds other locks, returns
//!   `Deadlock`, so it knows which lock to `lock_slow`.
//!
//! A context that holds no lock never gets `Deadlock` (it cannot be part of a cycle), and
//! its wounded flag is cleared. Without a context ([`WwMutex::lock_no_ctx`]) a `WwMutex`
//! is a plain mutex; mixing both kinds in one class can deadlock undetected across
//! threads, as in the kernel.
//!
//! # DOC: a lock this thread already holds
//!
//! The mutex records its holder's thread (a context's slot names its thread; a lock
//! without context stores the thread's id), so a lock that could only be granted after
//! the asking thread lets go of it is refused instead of waiting forever, whether lockdep
//! is on or off:
//!
//! | the mutex is held by | and is locked | outcome |
//! |---|---|---|
//! | the same context | with that context (`lock`, `lock_interruptible`) | `Already` (EALREADY) |
//! | this thread, without context | with a context, or without (`lock_no_ctx`) | `Invalid` (EINVAL) |
//! | another context of this thread | with a context, or without | `Invalid` (EINVAL) |
//! | this thread | with `lock_slow` | `Invalid` (EINVAL) |
//!
//! The kernel hangs in the last three rows (lockdep, when on, reports them first).
//! EINVAL, not EDEADLK: in this API `Deadlock` means "back off and `lock_slow` the
//! contended mutex", and backing off cannot resolve a wait for oneself
//! ([`lock_all`](fn@lock_all) would `lock_slow` the same mutex); the refusal is a misuse, like the other debug
//! checks below, and has the errno the lockdep-on path (`must_not_hold_resv` of the
//! buffer layer, this module's own check) already returned. With lockdep on, the
//! context-less relock is also reported as recursive locking, the others as `Misuse`.
//! Nothing changes on a refusal. `try_lock` of a held mutex is `None` as always.
//!
//! # DOC: the state word
//!
//! Each mutex keeps its lock bit, its flags and its holder in one 64-bit word, so that
//! an uncontended lock or unlock is one compare-and-swap. The table of its bits, and the
//! wait list it guards, are documented beside the code that uses them, in `ww/mutex.rs`.
//!
//! # DOC: debug checks
//!
//! The kernel's `DEBUG_WW_MUTEXES` checks are always on: each misuse is reported to
//! lockdep as [`lockdep::ReportKind::Misuse`] and, where the call can refuse without
//! harm, refused with [`Error::Invalid`] (or `None` for [`WwMutex::try_lock`]):
//!
//! | misuse | outcome |
//! |---|---|
//! | lock after [`AcquireCtx::done`] | report, `Invalid` |
//! | after `Deadlock`, a lock while still holding locks | report, `Invalid` |
//! | after `Deadlock`, another lock before the contended one | report, `Invalid` |
//! | `lock_slow` without a preceding `Deadlock` | report, `Invalid` |
//! | mutex and context of different classes | report, `Invalid` |
//! | context ended with locks held (leaked guards) | report; `fini` returns `Invalid` |
//! | `done` twice | report |
//! | second context of a class on a thread that has one | report (`try_new`: `Invalid`) |
//! | lock of a mutex this thread holds outside the context (see above) | report, `Invalid` |
//!
//! A report follows lockdep's policy ([`lockdep::set_on_report`]): by default it
//! panics, with `LOCKDEP=print` or `collect` it is printed or kept and the call returns
//! its refusal. Every report is made where a panic leaves the mutex and the context as
//! they were (a refused lock changes nothing; `fini` has ended the context). With lockdep off nothing is reported and
//! only the refusal remains. The `# Panics` sections below mean exactly this.
//!
//! Optional deadlock injection ([`AcquireCtx::with_deadlock_injection`],
//! [`set_deadlock_injection`]) returns spurious `Deadlock`s, as the kernel's
//! `CONFIG_DEBUG_WW_MUTEX_SLOWPATH`, to exercise back-off paths.
//!
//! # DOC: lockdep
//!
//! Mutexes are of lockdep class [`WwClass::lock_class`]; a context is a lock of class
//! [`WwClass::acquire_class`], held from start to end, and is the *nest lock* of the
//! mutexes taken in it, so taking many mutexes of one class is not recursion. A
//! context-less lock is a plain write lock (so AA on it is reported before it would
//! hang); `try_lock` is a trylock.
//!
//! # DOC: where the code is
//!
//! `class` ([`WwClass`], [`WwAlgorithm`], stamps), `context` ([`AcquireCtx`], its
//! debug checks, deadlock injection), `mutex` ([`WwMutex`], the state word, the lock,
//! unlock, contended and hand-off paths, [`WwGuard`]), `lock_all`
//! ([`lock_all`](fn@lock_all)), `slot` (the part of a context other threads see). The
//! loom/std switch is the crate's `shim`.

use crate::error::Error;
use crate::shim::lockdep as ld;

mod class;
mod context;
mod lock_all;
mod mutex;
pub(crate) mod slot;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;

pub use class::{WwAlgorithm, WwClass};
pub use context::{set_deadlock_injection, AcquireCtx};
pub use lock_all::{lock_all, lock_all_interruptible};
pub use mutex::{WwGuard, WwMutex};
#[cfg(any(test, feature = "testing"))]
pub use slot::younger;

/// Report misuse `what` of a mutex or context of `class` to lockdep (which may panic,
/// see the module docs), and return the refusal for it.
#[track_caller]
fn misuse(class: &'static WwClass, what: &'static str) -> Error {
    ld::report(
        lockdep::ReportKind::Misuse,
        &[class.lock_class()],
        &format!("ww_mutex misuse ({}): {what}", class.name),
    );
    Error::Invalid(what)
}
