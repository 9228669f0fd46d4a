//! A lock-dependency validator in the manner of the Linux kernel's lockdep.
//!
//! Locks are grouped in *classes* ([`LockClass`], usually a `static`). Any lock type is
//! tracked by calling [`acquire`] before it blocks and [`release`] after it unlocks, naming
//! its class and an instance id (its address). Lockdep keeps a per-thread stack of held
//! locks and a global graph of class→class dependencies ("B was taken while A was held"),
//! and reports, in the shape of the kernel's splats:
//!
//! - a possible circular dependency (ABBA, ABC…: a cycle of any length), with the chain of
//!   acquisition sites that proves it, the first time the closing edge is seen — the
//!   deadlock itself never has to happen;
//! - recursive locking (AA) of a class that does not allow it, unless the lock is taken
//!   under a held *nest lock* ([`Acquire::nest`]), as wound/wait mutexes are under their
//!   acquire context;
//! - release of a lock that is not held;
//! - a thread that exits while holding locks;
//! - sleeping in an atomic section: a blocking acquisition or a [`might_sleep`] inside a
//!   section entered with [`atomic_enter`] (a fence callback, say).
//!
//! Read locks follow the kernel's rules: a recursive reader ([`Mode::RecursiveRead`]) may
//! take a lock its thread already holds for read, and a cycle is only a deadlock when it
//! is *strong*: no edge that ends in a recursive read is followed by an edge that starts
//! from a lock held shared.
//!
//! Validation runs only when the chain of held classes is new (chains are cached by a
//! hash key as in the kernel), so a program in steady state pays a thread-local lookup.
//!
//! Pseudo-locks ("maps") are classes acquired and released without a real lock, to teach
//! lockdep about cross-release dependencies; see [`LockClass::map_acquire`]. [`prime`]
//! records an order ahead of time, as the kernel primes `dma_resv` at boot.
//!
//! What happens on a report is the user's choice ([`set_on_report`]): panic (the
//! default), print once per kind-and-classes and carry on, or collect for
//! [`take_reports`]. [`Capture`] collects the reports of chosen threads only, which is
//! what tests use. The cargo feature `off` compiles everything out; at run time
//! [`set_enabled`] or the environment variable `LOCKDEP=off` turns checking off.
//! `LOCKDEP=panic`, `LOCKDEP=print` and `LOCKDEP=collect` choose the default policy.
//!
//! Every call that may raise a report may therefore panic: under [`OnReport::Panic`], on a
//! thread with no [`Capture`] installed, delivering the report *is* a panic (its `# Panics`
//! section says which reports). No call here returns an error: misuse of the API itself
//! is a [`ReportKind::BadAnnotation`] report, and no call blocks except the locks of
//! [`sync`].
//!
//! Lockdep keeps working after a report (the kernel turns itself off after the first
//! one): the dependency that would close a reported cycle is not recorded, and a chain
//! that raised a report is not cached, so later, different bugs are still found.
//!
//! [`sync::Mutex`] and [`sync::RwLock`] are tracked `parking_lot` locks, ready to use.
//!
//! ```
//! use lockdep::{capture, sync::Mutex, LockClass, ReportKind};
//! static A: LockClass = LockClass::new("A");
//! static B: LockClass = LockClass::new("B");
//! let (a, b) = (Mutex::new(&A, ()), Mutex::new(&B, ()));
//! let ((), reports) = capture(|| {
//!     drop((a.lock(), b.lock())); // A then B
//!     let _b = b.lock();
//!     let _a = a.lock(); // B then A: reported now, though it never deadlocked
//! });
//! # if lockdep::enabled() {
//! assert_eq!(reports[0].kind, ReportKind::CircularDependency);
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicU32, Ordering};

#[cfg(feature = "selftest")]
pub mod selftest;
pub mod sync;

/// Number of subclasses a class may be taken with (`0..MAX_SUBCLASSES`), as in the kernel.
pub const MAX_SUBCLASSES: u8 = 8;

/// A lock class: every lock of one kind shares one, and lockdep reasons about classes,
/// not instances. Declare classes as statics; [`LockClass::leak`] makes one at run time.
///
/// Invariant: a class is identified by its address, so it must never move — hence
/// `&'static LockClass` everywhere.
pub struct LockClass {
    name: &'static str,
    /// Lazily assigned small id (0 = not registered yet).
    id: AtomicU32,
}

impl LockClass {
    /// A new class named `name` (shown in reports). Declare it as a `static`: a class is
    /// known by its address, and it registers (gets an id) on its first acquisition.
    pub const fn new(name: &'static str) -> Self {
        LockClass {
            name,
            id: AtomicU32::new(0),
        }
    }

    /// A class created at run time (the kernel's dynamic lock keys). It lives for the rest
    /// of the program; use it for objects created in numbers or for isolated tests. Each
    /// call makes a distinct class (its own graph node), and its memory is never freed.
    pub fn leak(name: impl Into<String>) -> &'static LockClass {
        let name: &'static str = Box::leak(name.into().into_boxed_str());
        Box::leak(Box::new(LockClass::new(name)))
    }

    /// The class name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The class's registered id, assigning one on first use (0 with the feature `off`).
    #[cfg_attr(feature = "off", allow(dead_code))]
    pub(crate) fn id(&'static self) -> u32 {
        let id = self.id.load(Ordering::Acquire);
        if id != 0 {
            return id;
        }
        imp::register_class(self)
    }

    /// The id slot [`LockClass::id`] fills in (under the registry's lock).
    #[cfg_attr(feature = "off", allow(dead_code))]
    pub(crate) fn raw_id_slot(&self) -> &AtomicU32 {
        &self.id
    }

    /// Acquire this class as a pseudo-lock for write (the kernel's `lock_map_acquire`).
    /// A pseudo-lock never sleeps: it does not count as a sleep inside an atomic section.
    /// Release it with [`LockClass::map_release`] on the same thread.
    ///
    /// # Panics
    ///
    /// On a [`ReportKind::CircularDependency`] or [`ReportKind::RecursiveLocking`] report,
    /// under [`OnReport::Panic`] (the default) when no [`Capture`] is installed on this
    /// thread: the panic is how the report is delivered.
    #[track_caller]
    pub fn map_acquire(&'static self) {
        self.map_acquire_with(Acquire::write());
    }

    /// Acquire this class as a pseudo-lock for recursive read
    /// (`lock_map_acquire_read`): readers never conflict with each other.
    ///
    /// # Panics
    ///
    /// On a [`ReportKind::CircularDependency`] or [`ReportKind::RecursiveLocking`] report
    /// (a recursive read after a write of this class), under [`OnReport::Panic`] (the
    /// default) when no [`Capture`] is installed on this thread: the panic is how the
    /// report is delivered.
    #[track_caller]
    pub fn map_acquire_read(&'static self) {
        self.map_acquire_with(Acquire::recursive_read());
    }

    /// Try-acquire this class as a pseudo-lock (`lock_map_acquire_try`): no deadlock
    /// check, but later locks depend on it.
    #[track_caller]
    pub fn map_acquire_try(&'static self) {
        self.map_acquire_with(Acquire::write().trylock());
    }

    /// Acquire this class as a pseudo-lock with the given parameters (say, a
    /// non-recursive reader, as the kernel's fence signalling annotation takes its map).
    /// Validated as [`acquire`] is, but never counted as a sleep ([`might_sleep`]).
    ///
    /// # Panics
    ///
    /// On any report [`acquire_pseudo`] raises, under [`OnReport::Panic`] (the default)
    /// when no [`Capture`] is installed on this thread: the panic is how the report is
    /// delivered.
    #[track_caller]
    pub fn map_acquire_with(&'static self, how: Acquire) {
        acquire_pseudo(self, self.map_instance(), how);
    }

    /// Release the pseudo-lock (`lock_map_release`), taken by one of the `map_acquire*`
    /// calls on this thread.
    ///
    /// # Panics
    ///
    /// On a [`ReportKind::BadUnlock`] report (this thread does not hold it), under
    /// [`OnReport::Panic`] (the default) when no [`Capture`] is installed on this thread:
    /// the panic is how the report is delivered.
    #[track_caller]
    pub fn map_release(&'static self) {
        release(self, self.map_instance());
    }

    /// The instance id used by the `map_*` calls: the class's own address.
    pub fn map_instance(&'static self) -> usize {
        self as *const LockClass as usize
    }
}

impl fmt::Debug for LockClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockClass")
            .field("name", &self.name)
            .finish()
    }
}

/// How a lock is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Exclusive (a mutex, a write lock).
    Write,
    /// Shared, non-recursive (an rwsem reader): a writer queued between two readers
    /// blocks the second, so it counts as exclusive for the lock being taken.
    Read,
    /// Shared and recursive (an rwlock reader): may be retaken while held for read.
    RecursiveRead,
}

/// The parameters of one acquisition: subclass, mode, trylock, nest lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acquire {
    /// Subclass, `0..MAX_SUBCLASSES`: the kernel's `_nested(…, SINGLE_DEPTH_NESTING)`. One
    /// out of range is reported ([`ReportKind::BadAnnotation`]) when the lock is acquired.
    pub subclass: u8,
    /// How the lock is held.
    pub mode: Mode,
    /// A trylock never blocks, so it is never checked for deadlock; locks taken while
    /// it is held still depend on it.
    pub trylock: bool,
    /// Instance id of a held *nest lock*: several locks of this class taken under it are
    /// not recursion (the ww acquire context is the nest lock of its mutexes).
    ///
    /// The nest lock must be held, and must have been taken before the locks of this
    /// class that are already held (it serializes them only if it was); otherwise the
    /// acquisition is reported ([`ReportKind::BadAnnotation`] when the nest lock is not
    /// held at all, [`ReportKind::RecursiveLocking`] when it came too late). An
    /// acquisition allowed by its nest lock records no new dependency, as in the kernel.
    pub nest: Option<usize>,
}

impl Acquire {
    /// Exclusive, subclass 0, blocking, no nest lock.
    pub const fn write() -> Self {
        Acquire {
            subclass: 0,
            mode: Mode::Write,
            trylock: false,
            nest: None,
        }
    }
    /// Non-recursive read.
    pub const fn read() -> Self {
        Acquire {
            mode: Mode::Read,
            ..Self::write()
        }
    }
    /// Recursive read.
    pub const fn recursive_read() -> Self {
        Acquire {
            mode: Mode::RecursiveRead,
            ..Self::write()
        }
    }
    /// With a subclass.
    pub const fn subclass(self, subclass: u8) -> Self {
        Acquire { subclass, ..self }
    }
    /// As a trylock.
    pub const fn trylock(self) -> Self {
        Acquire {
            trylock: true,
            ..self
        }
    }
    /// Under the nest lock whose instance id is `nest`.
    pub const fn nest(self, nest: usize) -> Self {
        Acquire {
            nest: Some(nest),
            ..self
        }
    }
}

/// The kind of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReportKind {
    /// A new dependency closes a cycle in the class graph.
    CircularDependency,
    /// A class taken again while held (AA) without nesting allowed.
    RecursiveLocking,
    /// Release of a lock this thread does not hold.
    BadUnlock,
    /// A thread ended with locks still held (reported from its thread-local destructor,
    /// where a [`OnReport::Panic`] policy prints instead of panicking, since a panic there
    /// would abort the process). The main thread's end is not seen.
    HeldAtExit,
    /// `assert_held` / `assert_not_held` failed.
    AssertHeld,
    /// A subclass out of range, a nest lock that is not held, or similar misuse of the
    /// lockdep API itself.
    BadAnnotation,
    /// A lock-API misuse found by a lock implementation (e.g. wound/wait context rules),
    /// reported through [`report`].
    Misuse,
    /// Something that may sleep (a blocking lock acquisition, a [`might_sleep`] call such
    /// as a fence wait) ran inside an atomic section ([`atomic_enter`]), e.g. a fence
    /// callback: the kernel's "BUG: sleeping function called from invalid context". The
    /// report names the section first, then the lock class if a lock was taken.
    SleepInAtomic,
}

/// One report: its kind, the classes it names, and the full splat text.
#[derive(Clone, Debug)]
pub struct Report {
    /// What was found.
    pub kind: ReportKind,
    /// Names of the classes involved, in the order the splat names them.
    pub classes: Vec<String>,
    /// The thread that triggered it.
    pub thread: String,
    /// The kernel-style splat, with chains and source locations.
    pub text: String,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What lockdep does with a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnReport {
    /// Print the splat and panic (the default).
    Panic,
    /// Print each distinct report once (kind and classes) to stderr and carry on.
    PrintOnce,
    /// Keep it for [`take_reports`]; print nothing.
    Collect,
}

/// Choose what happens on a report, for threads without a [`Capture`] installed. The
/// default is [`OnReport::Panic`], or what the environment variable `LOCKDEP` says
/// (`panic`, `print`, `collect`). Setting it overrides the environment. The policy is
/// process-wide and applies from the next report on.
pub fn set_on_report(mode: OnReport) {
    imp::set_on_report(mode)
}

/// A function told of every report, on the reporting thread, before the report goes to
/// its capture or policy (a tracer records them, for one). `None` removes it. The
/// listener must not lock tracked locks or raise reports itself. With lockdep compiled
/// out there are no reports and this does nothing.
pub fn set_report_listener(listener: Option<fn(&Report)>) {
    *REPORT_LISTENER.write().unwrap_or_else(|e| e.into_inner()) = listener;
}

static REPORT_LISTENER: std::sync::RwLock<Option<fn(&Report)>> = std::sync::RwLock::new(None);

/// Tell the listener of `report`, if one is set.
#[allow(dead_code)]
pub(crate) fn tell_listener(report: &Report) {
    let l = *REPORT_LISTENER.read().unwrap_or_else(|e| e.into_inner());
    if let Some(l) = l {
        l(report);
    }
}

/// The current report policy.
pub fn on_report() -> OnReport {
    imp::on_report()
}

/// Reports collected under [`OnReport::Collect`] (from threads without a capture), oldest
/// first; the store is emptied.
pub fn take_reports() -> Vec<Report> {
    imp::take_reports()
}

/// Turn checking on or off at run time. Off, `acquire`/`release` cost one atomic load.
/// Held-lock stacks are cleared when it is turned off (every thread's, lazily). The
/// dependency graph and chain caches are kept. Overrides the environment variable.
///
/// Lockdep does not see what happens while it is off, so a thread that used it before
/// the switch (or made it) may afterwards release locks it never saw held (taken before the switch
/// and forgotten, or taken while off). Such a thread does not report the first release
/// of each lock that matches nothing held (a second one is a [`ReportKind::BadUnlock`]
/// as usual), and a lock it takes under a nest lock it does not hold (say, a ww acquire
/// context started while off) is neither validated nor reported, until that nest lock's
/// release is seen. This lasts until checking is next turned off. The kernel has no
/// way back on once lockdep is off, so it has no such rule.
pub fn set_enabled(on: bool) {
    imp::set_enabled(on)
}

/// Whether checking is on: compiled in, not switched off by [`set_enabled`], and the
/// environment variable `LOCKDEP` is not `off` or `0` (read once).
#[inline]
pub fn enabled() -> bool {
    imp::enabled()
}

/// Record that this thread is about to acquire a lock of `class` (instance `instance`,
/// usually its address), and validate it. Call it before blocking, so that a deadlock is
/// reported instead of hanging.
///
/// Validation (recursion, then new dependencies on the held locks from the top down to
/// the first non-trylock) runs only when this chain of held locks is new; a trylock is
/// never validated. A blocking acquisition (not a trylock) inside an atomic section
/// ([`atomic_enter`]) is first reported as [`ReportKind::SleepInAtomic`]. When the report it raises panics ([`OnReport::Panic`]), the
/// acquisition is not recorded, so the unwinding caller that never got the lock leaves
/// the held stack as it was; under the other policies it is recorded and must be
/// released as usual.
///
/// Contract: `instance` identifies one lock for as long as it may be held (its address
/// does); each acquisition is paired with one [`release`] of the same class and instance
/// on the same thread.
///
/// # Panics
///
/// On a [`ReportKind::SleepInAtomic`], [`ReportKind::RecursiveLocking`],
/// [`ReportKind::CircularDependency`] or [`ReportKind::BadAnnotation`] report, under
/// [`OnReport::Panic`] (the default) when no [`Capture`] is installed on this thread: the
/// panic is how the report is delivered.
#[track_caller]
#[inline]
pub fn acquire(class: &'static LockClass, instance: usize, how: Acquire) {
    if enabled() {
        if !how.trylock {
            imp::might_sleep(Some((class, how.subclass)), Location::caller());
        }
        imp::acquire(class, instance, how, Location::caller())
    }
}

/// [`acquire`] for a pseudo-lock that never blocks (a ww acquire context, a fence map):
/// validated and recorded the same way, but never counted as a sleep inside an atomic
/// section ([`atomic_enter`]), even when `how` is not a trylock. Released with [`release`].
///
/// # Panics
///
/// On a [`ReportKind::RecursiveLocking`], [`ReportKind::CircularDependency`] or
/// [`ReportKind::BadAnnotation`] report, under [`OnReport::Panic`] (the default) when no
/// [`Capture`] is installed on this thread: the panic is how the report is delivered.
#[track_caller]
#[inline]
pub fn acquire_pseudo(class: &'static LockClass, instance: usize, how: Acquire) {
    if enabled() {
        imp::acquire(class, instance, how, Location::caller())
    }
}

/// Record that this thread released the lock `instance` of `class`. A lock that is not
/// held is reported ([`ReportKind::BadUnlock`]). Locks may be released in any order; if
/// the instance is held several times (recursive reads), the innermost is released.
///
/// Releasing a lock below the innermost one acquires the locks above it again on the
/// shorter stack, as the kernel does: where that makes a chain of held locks lockdep has
/// not seen, it is validated, so the dependencies between the locks left adjacent are
/// recorded (and may be reported by this call).
///
/// Locks of one class (and subclass) taken one right after another under the same nest
/// lock share one held entry, as in the kernel, so a transaction of N ww mutexes costs
/// one chain validation, and releasing them in acquisition order or in reverse costs
/// O(1) each. Every query still sees each lock.
///
/// Contract: called on the thread that acquired the lock, after it is unlocked or right
/// before (the [`sync`] guards tell lockdep first).
///
/// # Panics
///
/// On a [`ReportKind::BadUnlock`] report, or on a report raised while re-validating the
/// locks left adjacent, under [`OnReport::Panic`] (the default) when no [`Capture`] is
/// installed on this thread: the panic is how the report is delivered.
#[track_caller]
#[inline]
pub fn release(class: &'static LockClass, instance: usize) {
    if enabled() {
        imp::release(class, instance, Location::caller())
    }
}

/// Whether this thread holds a lock of `class` (any instance, any subclass, any mode).
/// Always false when checking is off.
#[inline]
pub fn is_held(class: &'static LockClass) -> bool {
    enabled() && imp::is_held(class, None)
}

/// Whether this thread holds a lock of `class` in `mode`.
#[inline]
pub fn is_held_mode(class: &'static LockClass, mode: Mode) -> bool {
    enabled() && imp::is_held(class, Some(mode))
}

/// Whether this thread holds the lock instance `instance` of `class`.
#[inline]
pub fn is_instance_held(class: &'static LockClass, instance: usize) -> bool {
    enabled() && imp::is_instance_held(class, instance)
}

/// Report ([`ReportKind::AssertHeld`]) unless this thread holds a lock of `class` (the
/// kernel's `lockdep_assert_held`). Does nothing while checking is off.
///
/// # Panics
///
/// When the assertion fails, under [`OnReport::Panic`] (the default) when no [`Capture`] is
/// installed on this thread: the panic is how the report is delivered.
#[track_caller]
pub fn assert_held(class: &'static LockClass) {
    if enabled() {
        imp::assert_held(class, true, Location::caller())
    }
}

/// Report ([`ReportKind::AssertHeld`]) if this thread holds a lock of `class` (the
/// kernel's `lockdep_assert_not_held`). Does nothing while checking is off.
///
/// # Panics
///
/// When the assertion fails, under [`OnReport::Panic`] (the default) when no [`Capture`] is
/// installed on this thread: the panic is how the report is delivered.
#[track_caller]
pub fn assert_not_held(class: &'static LockClass) {
    if enabled() {
        imp::assert_held(class, false, Location::caller())
    }
}

/// Teach lockdep that `chain[0]` is taken before `chain[1]`, before `chain[2]`…, as if
/// one thread had taken them nested in that order (each for write, subclass 0). Any
/// later acquisition that contradicts the order is reported at once. The kernel does
/// this at boot for `dma_resv` so that one run of a driver validates it.
///
/// A primed order that contradicts dependencies already known is itself reported
/// ([`ReportKind::CircularDependency`]), and the contradicting step is not recorded.
/// The edges carry the caller's location as both acquisition sites. A class listed twice
/// in a row is a [`ReportKind::BadAnnotation`] report.
///
/// # Panics
///
/// On a [`ReportKind::CircularDependency`] or [`ReportKind::BadAnnotation`] report, under
/// [`OnReport::Panic`] (the default) when no [`Capture`] is installed on this thread: the
/// panic is how the report is delivered.
#[track_caller]
pub fn prime(chain: &[&'static LockClass]) {
    if enabled() {
        imp::prime(chain, Location::caller())
    }
}

/// Emit a report of `kind` about `classes` through the current policy. Lock
/// implementations use it for their own misuse checks (e.g. wound/wait context rules);
/// `detail` becomes the body of the splat, followed by this thread's held locks. Does
/// nothing while checking is off.
///
/// # Panics
///
/// Whenever checking is on (the report is always raised), under [`OnReport::Panic`] (the
/// default) when no [`Capture`] is installed on this thread: the panic is how the report is
/// delivered.
#[track_caller]
pub fn report(kind: ReportKind, classes: &[&'static LockClass], detail: &str) {
    if enabled() {
        imp::report_external(kind, classes, detail, Location::caller())
    }
}

/// Enter an *atomic section* on this thread: code that must not sleep, the kernel's
/// preempt-disabled / IRQ context (a fence callback runs under the fence's spinlock).
/// `what` names the section in reports. Until the guard drops, every blocking
/// [`acquire`] (not a trylock) and every [`might_sleep`] raises a
/// [`ReportKind::SleepInAtomic`] report through the report policy. Sections nest; the
/// innermost is the one reported. Cost: a per-thread flag flip on entry and exit; nothing
/// while checking is off (a section entered while off stays unchecked).
#[track_caller]
#[inline]
#[must_use = "the atomic section ends as soon as the returned guard is dropped"]
pub fn atomic_enter(what: &'static str) -> AtomicGuard {
    AtomicGuard {
        _private: if enabled() {
            imp::atomic_enter(what, Location::caller())
        } else {
            imp::AtomicToken::inert()
        },
    }
}

/// Leaves the atomic section entered by [`atomic_enter`] when dropped. It belongs to the
/// thread that entered the section (it is not `Send`); drop guards in reverse order of
/// entry (scoped use does).
#[must_use = "the atomic section ends as soon as the guard is dropped"]
pub struct AtomicGuard {
    _private: imp::AtomicToken,
}

impl fmt::Debug for AtomicGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AtomicGuard")
    }
}

/// Whether this thread is inside an atomic section ([`atomic_enter`]). Always false
/// while checking is off.
#[inline]
pub fn in_atomic() -> bool {
    enabled() && imp::in_atomic()
}

/// Annotate a point that may sleep (the kernel's `might_sleep`): inside an atomic
/// section it raises a [`ReportKind::SleepInAtomic`] report naming the caller and the
/// section; elsewhere it does nothing. Blocking [`acquire`]s call it implicitly.
///
/// # Panics
///
/// Inside an atomic section (the [`ReportKind::SleepInAtomic`] report), under
/// [`OnReport::Panic`] (the default) when no [`Capture`] is installed on this thread: the
/// panic is how the report is delivered.
#[track_caller]
#[inline]
pub fn might_sleep() {
    if enabled() {
        imp::might_sleep(None, Location::caller())
    }
}

/// The locks this thread holds, innermost last, as text (the kernel's
/// `lockdep_print_held_locks`).
pub fn held_locks_text() -> String {
    imp::held_locks_text()
}

/// Number of locks this thread holds (0 when checking is off).
pub fn held_count() -> usize {
    if enabled() {
        imp::held_count()
    } else {
        0
    }
}

/// Collects the reports of the threads it is installed on, whatever the global policy.
/// Tests use one per scenario, so concurrent tests never see each other's reports.
///
/// Clones share one store: install a clone on each thread of a scenario to collect them
/// all in one place.
#[derive(Clone, Default)]
pub struct Capture {
    inner: std::sync::Arc<parking_lot::Mutex<Vec<Report>>>,
}

impl Capture {
    /// A new, empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    /// Route this thread's reports to the capture until the guard drops (captures nest:
    /// the innermost wins). A report raised on this thread while it is installed is
    /// stored, never printed, and never panics.
    #[must_use = "the capture is uninstalled as soon as the returned guard is dropped"]
    pub fn install(&self) -> CaptureGuard {
        imp::install_capture(self.inner.clone())
    }

    /// The reports captured so far, oldest first; the capture is emptied.
    pub fn take(&self) -> Vec<Report> {
        std::mem::take(&mut *self.inner.lock())
    }

    /// Number of reports captured so far.
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Run `f` on this thread with a fresh capture installed; returns its result and the
/// reports it raised (only those of this thread: a thread `f` spawns needs its own
/// [`Capture::install`]).
///
/// # Panics
///
/// If `f` panics; the capture is uninstalled as the panic unwinds, and the reports it held
/// are lost.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<Report>) {
    let cap = Capture::new();
    let r = {
        let _g = cap.install();
        f()
    };
    (r, cap.take())
}

/// Uninstalls a [`Capture`] from this thread when dropped. It belongs to the thread that
/// installed it (it is not `Send`).
///
/// Leaking it (`std::mem::forget`) keeps the capture installed until the thread ends, so
/// that even the thread's [`ReportKind::HeldAtExit`] report goes to the capture.
#[must_use = "the capture is uninstalled as soon as the guard is dropped"]
pub struct CaptureGuard {
    _private: imp::CaptureToken,
}

/// Counters describing lockdep's state, for tests and diagnostics.
///
/// All counts are for the whole process except `thread_validations`. With the feature
/// `off` every field is zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lock classes registered so far (a class registers on its first acquisition).
    pub classes: usize,
    /// Dependency edges (class/subclass → class/subclass) in the graph.
    pub edges: usize,
    /// Distinct chains of held locks that were validated clean and are cached.
    pub chains: usize,
    /// Full validations run (chain-cache misses), process-wide.
    pub validations: u64,
    /// Full validations run by the calling thread.
    pub thread_validations: u64,
    /// Splats printed to stderr (by [`OnReport::Panic`] and [`OnReport::PrintOnce`]).
    pub printed: u64,
}

/// Lockdep's classes and their dependencies, as the kernel's `/proc/lockdep` lists
/// them: a line of counters, then per class (in registration order) its id, the
/// number of forward (`FD`) and backward (`BD`) dependencies and its name, and one
/// ` -> [id] name` line per class taken while it was held (with `/subclass` where not
/// 0). Takes the class list's and the graph's locks briefly.
pub fn classes_text() -> String {
    imp::classes_text()
}

/// A snapshot of lockdep's counters (see [`Stats`]).
pub fn stats() -> Stats {
    imp::stats()
}

mod imp;

#[cfg(test)]
mod tests {
    use super::*;

    /// The class id (crate-internal) is assigned once and differs between classes.
    #[test]
    fn class_ids_are_stable_and_distinct() {
        static S1: LockClass = LockClass::new("s1");
        static S2: LockClass = LockClass::new("s2");
        if !enabled() {
            return; // feature `off` or LOCKDEP=off: no ids are assigned
        }
        assert_ne!(S1.id(), S2.id());
        assert_eq!(S1.id(), S1.id());
        assert_eq!(S1.name(), "s1");
        assert_eq!(format!("{S1:?}"), "LockClass { name: \"s1\" }");
    }
}
