//! Per-thread fault injection: make the `n + 1`-th call of one kind of resource
//! acquisition on this thread fail with a chosen errno, as the system call (or the
//! kernel's allocation) would — so that every error path that creates a descriptor or
//! maps or allocates memory can be run on purpose, from tests and from the self-test.
//!
//! An armed fault fires once, on the thread that armed it only; other threads never see
//! it. Unarmed, a site costs one thread-local load. The sites:
//!
//! | [`Site`] | where | stands for |
//! |---|---|---|
//! | `MemfdCreate` | [`Memfd::create`](crate::heap::memfd::Memfd::create) (system-heap memory, bounce buffers, regions) | `memfd_create` |
//! | `Dup` | udmabuf's duplicate of each caller memfd | `fcntl(F_DUPFD_CLOEXEC)` |
//! | `Mmap` | every `mmap` of buffer memory: our mapping of a memfd, each piece of a user mapping of a buffer and its reservation | `mmap` |
//! | `HeapAlloc` | a system-heap pool take, a contiguous region's carve | the heap's page allocation |
//! | `Export` | [`export`](crate::buf::export) | the buffer's file and descriptor |
//! | `Vmap` | `LockedBuf::vmap` (dmabuf-core), before the exporter's vmap | `vmap` |
//! | `IommuMap` | [`Iommu::map`](crate::device::iommu::Iommu::map) | IOVA allocation |
//! | `Thread` | an engine's worker thread | `clone` of a thread |
//!
//! A site that stands for a system call returns the errno exactly as the call would
//! (the caller then converts it as it converts a real failure); the others return it
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
    /// Duplicating a caller's descriptor.
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
}

const SITES: usize = Site::Thread as usize + 1;

type Arms = [Option<(u32, Errno)>; SITES];

thread_local! {
    /// Whether any site is armed on this thread (the one load of an unarmed site).
    static ANY: Cell<bool> = const { Cell::new(false) };
    /// Per site: `Some((n, e))`: `n` more calls succeed, then one fails with `e`.
    static ARMS: Cell<Arms> = const { Cell::new([None; SITES]) };
}

/// Let `n` more calls at `site` on this thread succeed, then fail the next one (once)
/// with `errno`. Replaces what was armed at `site` before.
pub fn fail_nth(site: Site, n: u32, errno: Errno) {
    ARMS.with(|c| {
        let mut a = c.get();
        a[site as usize] = Some((n, errno));
        c.set(a);
    });
    ANY.with(|c| c.set(true));
}

/// Fail the next call at `site` on this thread (once) with `errno`.
pub fn fail_next(site: Site, errno: Errno) {
    fail_nth(site, 0, errno);
}

/// Whether a failure armed at `site` on this thread is still to come.
pub fn pending(site: Site) -> bool {
    ARMS.with(|c| c.get()[site as usize].is_some())
}

/// Disarm every site on this thread.
pub fn disarm() {
    ARMS.with(|c| c.set([None; SITES]));
    ANY.with(|c| c.set(false));
}

/// A call at `site`: `Err(errno)` when an armed failure is due now (it is then spent).
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
        let mut a = c.get();
        let r = match a[site as usize] {
            Some((0, e)) => {
                a[site as usize] = None;
                Err(e)
            }
            Some((n, e)) => {
                a[site as usize] = Some((n - 1, e));
                Ok(())
            }
            None => Ok(()),
        };
        c.set(a);
        if a.iter().all(Option::is_none) {
            ANY.with(|c| c.set(false));
        }
        r
    })
}

/// [`hit`] for a site that is not a system call: the errno as the crate's error
/// ([`error`]).
#[inline]
pub fn check(site: Site) -> crate::Result<()> {
    hit(site).map_err(error)
}

/// The crate's error for an injected errno at a site that is not a system call:
/// `ENOMEM` → [`Error::NoMem`], `EMFILE` → [`Error::TooManyFiles`], else
/// [`Error::Os`].
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
}
