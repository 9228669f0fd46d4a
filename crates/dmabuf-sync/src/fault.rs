//! Per-thread fault injection: make a chosen call of one kind of resource acquisition
//! on this thread fail with a chosen errno, as the system call (or the kernel's
//! allocation) would — so that every error path that creates a descriptor, reads procfs,
//! maps or allocates memory can be run on purpose, from tests, from the self-test and
//! from users' tests of code built on these crates.
//!
//! An armed fault fires on the thread that armed it only; other threads never see it.
//! [`fail_nth`] fails one call, after `n` that succeed; [`fail_times`] fails a run of
//! calls (or every call, until [`disarm`]). Unarmed, a site costs one thread-local load.
//! The sites:
//!
//! | [`Site`] | where | stands for |
//! |---|---|---|
//! | `MemfdCreate` | `Memfd::create` in `dmabuf-mem` (system-heap memory, bounce buffers, regions) | `memfd_create` |
//! | `Dup` | every duplicate of a descriptor: udmabuf's duplicate of each caller memfd, the sync-file code's duplicates (which also count at `Fd`) | `fcntl(F_DUPFD_CLOEXEC)` |
//! | `Fd` | every new descriptor the sync-file code makes: a sync file's eventfd, a duplicate (after `Dup`), `sw_sync`'s pipes and timeline files, a watcher's epoll instance | `eventfd`, `pipe2`, `open`, `epoll_create1`, `fcntl(F_DUPFD_CLOEXEC)` |
//! | `FdInfo` | every read of a descriptor's `/proc/self/fdinfo` entry by the sync-file code (to tell a sync file, its record, its id) | the `open` of that file |
//! | `Mmap` | every `mmap` of buffer memory: our mapping of a memfd, each piece of a user mapping of a buffer and its reservation | `mmap` |
//! | `HeapAlloc` | a system-heap pool take, a contiguous region's carve | the heap's page allocation |
//! | `Export` | a dma-buf's export in `dmabuf-core` | the buffer's file and descriptor |
//! | `Vmap` | `LockedBuf::vmap` in `dmabuf-core`, before the exporter's vmap | `vmap` |
//! | `IommuMap` | `Iommu::map` in `dmabuf-mem` | IOVA allocation |
//! | `Thread` | an engine's worker thread in `dmabuf-drivers` | `clone` of a thread |
//!
//! A site that stands for a system call returns the errno exactly as the call would
//! (the caller then converts it as it converts a real failure: an injected `ENOENT` at
//! `FdInfo` reads as a closed descriptor, as a real one would); the others return it
//! through [`error`]: `ENOMEM` is [`Error::NoMem`], `EMFILE` [`Error::TooManyFiles`].

use crate::error::Error;
use rustix::io::Errno;
use std::cell::Cell;

/// Where a fault can be injected; see the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum Site {
    /// `memfd_create` of a new memfd.
    MemfdCreate,
    /// Duplicating a descriptor.
    Dup,
    /// `mmap` of buffer memory.
    Mmap,
    /// A heap's page allocation.
    HeapAlloc,
    /// A buffer's export.
    Export,
    /// A buffer's vmap.
    Vmap,
    /// An IOMMU mapping.
    IommuMap,
    /// Starting a thread.
    Thread,
    /// A new descriptor made by the sync-file code (eventfd, pipe, file, epoll instance,
    /// duplicate).
    Fd,
    /// Reading a descriptor's fdinfo (`/proc/self/fdinfo/<fd>`).
    FdInfo,
}

const SITES: usize = Site::FdInfo as usize + 1;

/// What is armed at one site.
#[derive(Clone, Copy)]
struct Arm {
    /// Calls that succeed before the first failure.
    skip: u32,
    /// Calls that fail then (`u32::MAX`: every call, until disarmed).
    fail: u32,
    errno: Errno,
}

type Arms = [Option<Arm>; SITES];

thread_local! {
    /// Whether any site is armed on this thread (the one load of an unarmed site).
    static ANY: Cell<bool> = const { Cell::new(false) };
    /// Per site, what is armed on this thread.
    static ARMS: Cell<Arms> = const { Cell::new([None; SITES]) };
}

fn arm(site: Site, a: Option<Arm>) {
    ARMS.with(|c| {
        let mut arms = c.get();
        arms[site as usize] = a;
        c.set(arms);
        ANY.with(|any| any.set(arms.iter().any(Option::is_some)));
    });
}

/// Let `n` more calls at `site` on this thread succeed, then fail the next one (once)
/// with `errno`. Replaces what was armed at `site` before.
pub fn fail_nth(site: Site, n: u32, errno: Errno) {
    arm(
        site,
        Some(Arm {
            skip: n,
            fail: 1,
            errno,
        }),
    );
}

/// Fail the next call at `site` on this thread (once) with `errno`.
pub fn fail_next(site: Site, errno: Errno) {
    fail_nth(site, 0, errno);
}

/// Fail the next `times` calls at `site` on this thread with `errno` (`u32::MAX`: every
/// call, until [`disarm`]); `times == 0` disarms `site`. Replaces what was armed at
/// `site` before.
pub fn fail_times(site: Site, times: u32, errno: Errno) {
    arm(
        site,
        (times > 0).then_some(Arm {
            skip: 0,
            fail: times,
            errno,
        }),
    );
}

/// Whether a failure armed at `site` on this thread is still to come.
#[must_use]
pub fn pending(site: Site) -> bool {
    ARMS.with(|c| c.get()[site as usize].is_some())
}

/// Disarm every site on this thread.
pub fn disarm() {
    ARMS.with(|c| c.set([None; SITES]));
    ANY.with(|c| c.set(false));
}

/// A call at `site`: `Err(errno)` when an armed failure is due now (one failure is
/// then spent).
///
/// # Errors
///
/// The armed errno, when this call is one that was armed to fail.
#[inline]
pub fn hit(site: Site) -> Result<(), Errno> {
    if !ANY.with(Cell::get) {
        return Ok(());
    }
    hit_slow(site)
}

#[cold]
fn hit_slow(site: Site) -> Result<(), Errno> {
    ARMS.with(|c| {
        let mut arms = c.get();
        let slot = &mut arms[site as usize];
        let r = match slot {
            None => Ok(()),
            Some(a) if a.skip > 0 => {
                a.skip -= 1;
                Ok(())
            }
            Some(a) => {
                let e = a.errno;
                match a.fail {
                    u32::MAX => {}
                    1 => *slot = None,
                    _ => a.fail -= 1,
                }
                Err(e)
            }
        };
        c.set(arms);
        if arms.iter().all(Option::is_none) {
            ANY.with(|c| c.set(false));
        }
        r
    })
}

/// [`hit`] for a site that is not a system call: the errno as the crate's error
/// ([`error`]).
///
/// # Errors
///
/// The armed errno as [`error`] converts it, when this call is one that was armed to
/// fail.
#[inline]
pub fn check(site: Site) -> crate::Result<()> {
    hit(site).map_err(error)
}

/// The crate's error for an injected errno at a site that is not a system call:
/// `ENOMEM` → [`Error::NoMem`], `EMFILE` → [`Error::TooManyFiles`], else
/// [`Error::Os`].
#[must_use]
pub fn error(e: Errno) -> Error {
    match e {
        Errno::NOMEM => Error::NoMem,
        Errno::MFILE => Error::TooManyFiles,
        e => Error::Os(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_call_fails_once_on_this_thread_only() {
        fail_nth(Site::Export, 2, Errno::MFILE);
        assert!(pending(Site::Export));
        assert!(!pending(Site::Vmap));
        std::thread::spawn(|| {
            assert!(!pending(Site::Export));
            assert_eq!(hit(Site::Export), Ok(()));
        })
        .join()
        .unwrap();
        assert_eq!(hit(Site::Vmap), Ok(()));
        assert_eq!(hit(Site::Export), Ok(()));
        assert_eq!(hit(Site::Export), Ok(()));
        assert_eq!(hit(Site::Export), Err(Errno::MFILE));
        assert!(!pending(Site::Export));
        assert_eq!(hit(Site::Export), Ok(()));
        assert!(!ANY.with(Cell::get), "nothing armed: the fast path again");
    }

    #[test]
    fn check_maps_errnos_and_disarm_clears() {
        fail_next(Site::HeapAlloc, Errno::NOMEM);
        fail_next(Site::IommuMap, Errno::MFILE);
        fail_next(Site::Thread, Errno::AGAIN);
        assert!(matches!(check(Site::HeapAlloc), Err(Error::NoMem)));
        assert_eq!(check(Site::IommuMap).unwrap_err().errno(), 24);
        assert_eq!(check(Site::Thread).unwrap_err().errno(), 11);
        fail_next(Site::Mmap, Errno::NOMEM);
        disarm();
        assert!(!pending(Site::Mmap));
        assert_eq!(hit(Site::Mmap), Ok(()));
    }

    #[test]
    fn fail_times_fails_a_run_or_every_call_until_disarmed() {
        fail_times(Site::FdInfo, 3, Errno::MFILE);
        for _ in 0..3 {
            assert_eq!(hit(Site::FdInfo), Err(Errno::MFILE));
        }
        assert!(!pending(Site::FdInfo));
        assert_eq!(hit(Site::FdInfo), Ok(()));
        assert!(!ANY.with(Cell::get), "nothing armed: the fast path again");
        fail_times(Site::Fd, u32::MAX, Errno::NOMEM);
        fail_next(Site::Dup, Errno::MFILE);
        for _ in 0..1000 {
            assert_eq!(hit(Site::Fd), Err(Errno::NOMEM));
        }
        // Another site spent leaves the run armed.
        assert_eq!(hit(Site::Dup), Err(Errno::MFILE));
        assert!(pending(Site::Fd) && ANY.with(Cell::get));
        fail_times(Site::Fd, 0, Errno::NOMEM);
        assert!(!pending(Site::Fd));
        assert!(
            !ANY.with(Cell::get),
            "disarming the last site clears the flag"
        );
        assert_eq!(hit(Site::Fd), Ok(()));
    }
}
