//! `Mutex` and `RwLock` that lockdep tracks: [`parking_lot`] locks carrying a
//! [`LockClass`].
//!
//! Each lock calls [`crate::acquire`] *before* it blocks, so a deadlock is reported
//! instead of hanging (under [`OnReport::Panic`](crate::OnReport::Panic) the call panics
//! before blocking), and [`crate::release`] when its guard drops. The instance id of a
//! lock is its address, which cannot change while a guard borrows it.
//!
//! ```
//! use lockdep::{sync::Mutex, LockClass};
//! static ACCOUNTS: LockClass = LockClass::new("accounts");
//! let m = Mutex::new(&ACCOUNTS, 0u32);
//! *m.lock() += 1;
//! assert_eq!(*m.lock(), 1);
//! ```

use crate::{Acquire, LockClass};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::panic::Location;

/// A mutual-exclusion lock whose acquisitions lockdep validates, as
/// [`Mode::Write`](crate::Mode::Write).
pub struct Mutex<T: ?Sized> {
    class: &'static LockClass,
    inner: parking_lot::Mutex<T>,
}

/// Holds a [`Mutex`] locked; unlocks and tells lockdep when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized> {
    class: &'static LockClass,
    instance: usize,
    at: &'static Location<'static>,
    guard: parking_lot::MutexGuard<'a, T>,
}

impl<T> Mutex<T> {
    /// A new unlocked mutex of class `class` holding `value`.
    pub const fn new(class: &'static LockClass, value: T) -> Self {
        Mutex {
            class,
            inner: parking_lot::Mutex::new(value),
        }
    }

    /// Consume the mutex and return its value.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// The lock's class.
    pub fn class(&self) -> &'static LockClass {
        self.class
    }

    /// The instance id lockdep knows this lock by (its address).
    pub fn instance(&self) -> usize {
        self as *const Self as *const u8 as usize
    }

    /// Lock, blocking until the lock is free. Lockdep validates the acquisition first.
    ///
    /// # Panics
    ///
    /// On a report from [`crate::acquire`] (recursive locking, a circular dependency, a
    /// blocking acquisition inside an atomic section), under
    /// [`OnReport::Panic`](crate::OnReport::Panic) (the default) with no
    /// [`Capture`](crate::Capture) installed on this thread: it panics before blocking, so a
    /// deadlock lockdep foresees is a panic, not a hang. Under the other policies the lock is
    /// then taken as usual, and a real deadlock blocks for ever.
    #[track_caller]
    #[must_use = "dropping the returned guard at once unlocks the mutex again"]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.lock_with(Acquire::write())
    }

    /// Lock with a subclass (`0..MAX_SUBCLASSES`), for nesting two locks of one class in
    /// a fixed order (the kernel's `mutex_lock_nested`).
    ///
    /// # Panics
    ///
    /// On a report from [`crate::acquire`] (recursive locking, a circular dependency, a
    /// blocking acquisition inside an atomic section, a subclass out of range), under
    /// [`OnReport::Panic`](crate::OnReport::Panic) (the default) with no
    /// [`Capture`](crate::Capture) installed on this thread: it panics before blocking, so a
    /// deadlock lockdep foresees is a panic, not a hang. Under the other policies the lock is
    /// then taken as usual, and a real deadlock blocks for ever.
    #[track_caller]
    #[must_use = "dropping the returned guard at once unlocks the mutex again"]
    pub fn lock_nested(&self, subclass: u8) -> MutexGuard<'_, T> {
        self.lock_with(Acquire::write().subclass(subclass))
    }

    /// Lock under the held nest lock whose instance id is `nest` (the kernel's
    /// `mutex_lock_nest_lock`): several locks of this class may then be held at once.
    ///
    /// # Panics
    ///
    /// On a report from [`crate::acquire`] (recursive locking, a circular dependency, a
    /// blocking acquisition inside an atomic section, a nest lock this thread does not hold),
    /// under [`OnReport::Panic`](crate::OnReport::Panic) (the default) with no
    /// [`Capture`](crate::Capture) installed on this thread: it panics before blocking, so a
    /// deadlock lockdep foresees is a panic, not a hang. Under the other policies the lock is
    /// then taken as usual, and a real deadlock blocks for ever.
    #[track_caller]
    #[must_use = "dropping the returned guard at once unlocks the mutex again"]
    pub fn lock_nest(&self, nest: usize) -> MutexGuard<'_, T> {
        self.lock_with(Acquire::write().nest(nest))
    }

    #[track_caller]
    fn lock_with(&self, how: Acquire) -> MutexGuard<'_, T> {
        let at = Location::caller();
        crate::acquire(self.class, self.instance(), how);
        MutexGuard {
            class: self.class,
            instance: self.instance(),
            at,
            guard: self.inner.lock(),
        }
    }

    /// Lock if free, without blocking. A trylock is never reported as a deadlock, but
    /// locks taken while it is held depend on it.
    #[track_caller]
    #[must_use = "if the lock was free, dropping the returned guard at once unlocks the mutex again"]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        let at = Location::caller();
        let guard = self.inner.try_lock()?;
        crate::acquire(self.class, self.instance(), Acquire::write().trylock());
        Some(MutexGuard {
            class: self.class,
            instance: self.instance(),
            at,
            guard,
        })
    }

    /// Whether some thread holds the lock.
    pub fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }

    /// Mutable access without locking: `&mut self` proves no one else holds it.
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("class", &self.class.name())
            .field("locked", &self.inner.is_locked())
            .finish_non_exhaustive()
    }
}

impl<T: ?Sized> MutexGuard<'_, T> {
    /// Where the lock was taken.
    pub fn location(&self) -> &'static Location<'static> {
        self.at
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // Tell lockdep first, as the kernel does; the inner guard unlocks right after.
        crate::release(self.class, self.instance);
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// A reader-writer lock whose acquisitions lockdep validates.
///
/// [`read`](RwLock::read) is a non-recursive read ([`Mode::Read`](crate::Mode::Read)): a
/// writer queued between two readers blocks the second, so retaking it for read while
/// holding it is reported. [`read_recursive`](RwLock::read_recursive) is a recursive read
/// ([`Mode::RecursiveRead`](crate::Mode::RecursiveRead)), which parking_lot lets through
/// even with writers waiting.
pub struct RwLock<T: ?Sized> {
    class: &'static LockClass,
    inner: parking_lot::RwLock<T>,
}

/// Holds an [`RwLock`] for read; unlocks and tells lockdep when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    class: &'static LockClass,
    instance: usize,
    guard: parking_lot::RwLockReadGuard<'a, T>,
}

/// Holds an [`RwLock`] for write; unlocks and tells lockdep when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    class: &'static LockClass,
    instance: usize,
    guard: parking_lot::RwLockWriteGuard<'a, T>,
}

impl<T> RwLock<T> {
    /// A new unlocked lock of class `class` holding `value`.
    pub const fn new(class: &'static LockClass, value: T) -> Self {
        RwLock {
            class,
            inner: parking_lot::RwLock::new(value),
        }
    }

    /// Consume the lock and return its value.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// The lock's class.
    pub fn class(&self) -> &'static LockClass {
        self.class
    }

    /// The instance id lockdep knows this lock by (its address).
    pub fn instance(&self) -> usize {
        self as *const Self as *const u8 as usize
    }

    /// Lock for shared, non-recursive read (an rwsem reader).
    ///
    /// # Panics
    ///
    /// On a report from [`crate::acquire`] (recursive locking, a circular dependency, a
    /// blocking acquisition inside an atomic section), under
    /// [`OnReport::Panic`](crate::OnReport::Panic) (the default) with no
    /// [`Capture`](crate::Capture) installed on this thread: it panics before blocking, so a
    /// deadlock lockdep foresees is a panic, not a hang. Under the other policies the lock is
    /// then taken as usual, and a real deadlock blocks for ever.
    #[track_caller]
    #[must_use = "dropping the returned guard at once unlocks the lock again"]
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        crate::acquire(self.class, self.instance(), Acquire::read());
        RwLockReadGuard {
            class: self.class,
            instance: self.instance(),
            guard: self.inner.read(),
        }
    }

    /// Lock for shared, non-recursive read with a subclass.
    ///
    /// # Panics
    ///
    /// On a report from [`crate::acquire`] (recursive locking, a circular dependency, a
    /// blocking acquisition inside an atomic section, a subclass out of range), under
    /// [`OnReport::Panic`](crate::OnReport::Panic) (the default) with no
    /// [`Capture`](crate::Capture) installed on this thread: it panics before blocking, so a
    /// deadlock lockdep foresees is a panic, not a hang. Under the other policies the lock is
    /// then taken as usual, and a real deadlock blocks for ever.
    #[track_caller]
    #[must_use = "dropping the returned guard at once unlocks the lock again"]
    pub fn read_nested(&self, subclass: u8) -> RwLockReadGuard<'_, T> {
        crate::acquire(
            self.class,
            self.instance(),
            Acquire::read().subclass(subclass),
        );
        RwLockReadGuard {
            class: self.class,
            instance: self.instance(),
            guard: self.inner.read(),
        }
    }

    /// Lock for recursive read (an rwlock reader): may be retaken while this thread
    /// holds it for read.
    ///
    /// # Panics
    ///
    /// On a report from [`crate::acquire`] (recursive locking, a circular dependency, a
    /// blocking acquisition inside an atomic section), under
    /// [`OnReport::Panic`](crate::OnReport::Panic) (the default) with no
    /// [`Capture`](crate::Capture) installed on this thread: it panics before blocking, so a
    /// deadlock lockdep foresees is a panic, not a hang. Under the other policies the lock is
    /// then taken as usual, and a real deadlock blocks for ever.
    #[track_caller]
    #[must_use = "dropping the returned guard at once unlocks the lock again"]
    pub fn read_recursive(&self) -> RwLockReadGuard<'_, T> {
        crate::acquire(self.class, self.instance(), Acquire::recursive_read());
        RwLockReadGuard {
            class: self.class,
            instance: self.instance(),
            guard: self.inner.read_recursive(),
        }
    }

    /// Lock for exclusive write.
    ///
    /// # Panics
    ///
    /// On a report from [`crate::acquire`] (recursive locking, a circular dependency, a
    /// blocking acquisition inside an atomic section), under
    /// [`OnReport::Panic`](crate::OnReport::Panic) (the default) with no
    /// [`Capture`](crate::Capture) installed on this thread: it panics before blocking, so a
    /// deadlock lockdep foresees is a panic, not a hang. Under the other policies the lock is
    /// then taken as usual, and a real deadlock blocks for ever.
    #[track_caller]
    #[must_use = "dropping the returned guard at once unlocks the lock again"]
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        crate::acquire(self.class, self.instance(), Acquire::write());
        RwLockWriteGuard {
            class: self.class,
            instance: self.instance(),
            guard: self.inner.write(),
        }
    }

    /// Lock for exclusive write with a subclass.
    ///
    /// # Panics
    ///
    /// On a report from [`crate::acquire`] (recursive locking, a circular dependency, a
    /// blocking acquisition inside an atomic section, a subclass out of range), under
    /// [`OnReport::Panic`](crate::OnReport::Panic) (the default) with no
    /// [`Capture`](crate::Capture) installed on this thread: it panics before blocking, so a
    /// deadlock lockdep foresees is a panic, not a hang. Under the other policies the lock is
    /// then taken as usual, and a real deadlock blocks for ever.
    #[track_caller]
    #[must_use = "dropping the returned guard at once unlocks the lock again"]
    pub fn write_nested(&self, subclass: u8) -> RwLockWriteGuard<'_, T> {
        crate::acquire(
            self.class,
            self.instance(),
            Acquire::write().subclass(subclass),
        );
        RwLockWriteGuard {
            class: self.class,
            instance: self.instance(),
            guard: self.inner.write(),
        }
    }

    /// Lock for read if possible without blocking (a read trylock).
    #[track_caller]
    #[must_use = "if the lock was free, dropping the returned guard at once unlocks the lock again"]
    pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
        let guard = self.inner.try_read()?;
        crate::acquire(self.class, self.instance(), Acquire::read().trylock());
        Some(RwLockReadGuard {
            class: self.class,
            instance: self.instance(),
            guard,
        })
    }

    /// Lock for write if possible without blocking (a write trylock).
    #[track_caller]
    #[must_use = "if the lock was free, dropping the returned guard at once unlocks the lock again"]
    pub fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
        let guard = self.inner.try_write()?;
        crate::acquire(self.class, self.instance(), Acquire::write().trylock());
        Some(RwLockWriteGuard {
            class: self.class,
            instance: self.instance(),
            guard,
        })
    }

    /// Mutable access without locking: `&mut self` proves no one else holds it.
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwLock")
            .field("class", &self.class.name())
            .finish_non_exhaustive()
    }
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        crate::release(self.class, self.instance);
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        crate::release(self.class, self.instance);
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
