//! Classes of wound/wait mutexes: the algorithm, the stamp counter, the lockdep classes.

use lockdep::LockClass;

/// Which algorithm resolves contention between acquire contexts of a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WwAlgorithm {
    /// An older context wounds a younger holder, which backs off at its next contended
    /// lock (`DEFINE_WW_CLASS`).
    WoundWait,
    /// A younger context that would wait for an older one dies (`DEFINE_WD_CLASS`);
    /// `dma_resv` uses this.
    WaitDie,
}

/// The stamp counter of a class, on a cache line of its own: every context start
/// increments it, from any thread, and the class's other fields are read by contended
/// lock paths on every thread.
#[repr(align(64))]
struct StampCounter(std::sync::atomic::AtomicU64);

impl std::ops::Deref for StampCounter {
    type Target = std::sync::atomic::AtomicU64;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// A class of wound/wait mutexes: the algorithm, the stamp counter of its contexts, and
/// the two lockdep classes (mutexes, and acquire contexts as their nest lock).
///
/// Declare one as a `static` (or make one with [`leak`](Self::leak)): mutexes and
/// contexts refer to their class by `&'static`. A context may lock only mutexes of its
/// own class; mutexes of different classes need different contexts, and their order is
/// lockdep's business.
pub struct WwClass {
    pub(super) name: &'static str,
    algorithm: WwAlgorithm,
    stamp: StampCounter,
    mutex_class: LockClass,
    acquire_class: LockClass,
    /// Records the class's boot-time lock order with lockdep; see
    /// [`with_lockdep_prime`](Self::with_lockdep_prime).
    pub(super) prime: Option<fn()>,
}

impl std::fmt::Debug for WwClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WwClass")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl WwClass {
    /// A wound-wait class (`DEFINE_WW_CLASS`): `name` names the lockdep class of its
    /// mutexes, `acquire_name` that of its acquire contexts.
    pub const fn wound_wait(name: &'static str, acquire_name: &'static str) -> Self {
        Self::new(name, acquire_name, WwAlgorithm::WoundWait)
    }

    /// A wait-die class (`DEFINE_WD_CLASS`): `name` names the lockdep class of its
    /// mutexes, `acquire_name` that of its acquire contexts.
    pub const fn wait_die(name: &'static str, acquire_name: &'static str) -> Self {
        Self::new(name, acquire_name, WwAlgorithm::WaitDie)
    }

    const fn new(name: &'static str, acquire_name: &'static str, algorithm: WwAlgorithm) -> Self {
        WwClass {
            name,
            algorithm,
            stamp: StampCounter(std::sync::atomic::AtomicU64::new(0)),
            mutex_class: LockClass::new(name),
            acquire_class: LockClass::new(acquire_name),
            prime: None,
        }
    }

    /// The class, with `prime` run (while lockdep is on) before each acquire context of
    /// the class starts: for a class whose lock order is primed ahead of use, as the
    /// kernel primes the reservation class at boot, so that a context started before any
    /// of its mutexes exists is already checked against that order. `prime` must be
    /// cheap once done (a flag check) and take no lock of the class.
    pub const fn with_lockdep_prime(self, prime: fn()) -> Self {
        WwClass {
            prime: Some(prime),
            ..self
        }
    }

    /// A class made at run time (tests, dynamic users), named `name` (its contexts
    /// `{name}_acquire`). It is never freed: make one per kind of object, not one per
    /// object.
    pub fn leak(name: &str, algorithm: WwAlgorithm) -> &'static WwClass {
        let n: &'static str = Box::leak(name.to_string().into_boxed_str());
        let a: &'static str = Box::leak(format!("{name}_acquire").into_boxed_str());
        Box::leak(Box::new(Self::new(n, a, algorithm)))
    }

    /// The class name (the lockdep class name of its mutexes).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The algorithm that decides who backs off.
    pub fn algorithm(&self) -> WwAlgorithm {
        self.algorithm
    }

    /// The lockdep class of the mutexes: what `lockdep::is_held` and lock-order
    /// priming name them by.
    pub fn lock_class(&'static self) -> &'static LockClass {
        &self.mutex_class
    }

    /// The lockdep class of the acquire contexts (the nest lock of the mutexes).
    pub fn acquire_class(&'static self) -> &'static LockClass {
        &self.acquire_class
    }

    #[cfg(any(test, feature = "testing"))]
    /// The stamp counter: the last stamp handed out (the next context gets one more).
    /// For tests that steer stamps with [`set_stamp_counter`](Self::set_stamp_counter).
    pub fn stamp_counter(&self) -> u64 {
        self.stamp.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[cfg(any(test, feature = "testing"))]
    /// Set the stamp counter, so that the next context gets `stamp + 1`. For tests of
    /// stamp wrap-around; never needed otherwise. Contexts already started keep their
    /// stamps, so setting it back can give a later context an *older* stamp.
    pub fn set_stamp_counter(&self, stamp: u64) {
        self.stamp
            .store(stamp, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn next_stamp(&self) -> u64 {
        self.stamp
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .wrapping_add(1)
    }

    pub(super) fn is_wait_die(&self) -> bool {
        self.algorithm == WwAlgorithm::WaitDie
    }
}
