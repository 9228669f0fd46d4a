//! [`Mapping`]: a mapping of (pieces of) files, unmapped on drop; every access copies
//! through raw pointers, bounds-checked.

use super::page_size;
use crate::error::{Error, Result};
use crate::fault::{self, Site};
use rustix::fd::BorrowedFd;
use rustix::mm::{MapFlags, ProtFlags};
use std::ptr::NonNull;

/// A mapping of a file (or of several file ranges back to back), unmapped on drop.
///
/// Shared memory: other mappings of the same file may change it at any time, so it is
/// never lent out as a slice; [`read_at`](Self::read_at), [`write_at`](Self::write_at)
/// and [`fill`](Self::fill) copy through raw pointers, bounds-checked. Takes no lock:
/// accesses from several threads (or processes) are not ordered against each other,
/// as with any shared memory; ordering them is the caller's business (fences, CPU
/// access brackets).
///
/// Invariant: `ptr` is the start of a live mapping of `len` bytes made by one of the
/// constructors (shared, or private for [`Mapping::new_pieces`]), unmapped only by
/// `Drop`.
#[must_use = "dropping a Mapping unmaps it at once"]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    write: bool,
}

// SAFETY: the mapping is plain shared memory; every access copies through raw pointers
// with bounds checked against `len`, so sharing the handle between threads is sound.
unsafe impl Send for Mapping {}
// SAFETY: as above: no reference into the memory is ever created.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Map `len` bytes of `fd` from offset 0, shared, read-write. With `populate`, the
    /// pages are faulted in now (`MAP_POPULATE`).
    ///
    /// # Errors
    ///
    /// `Invalid` for `len == 0`; `mmap`'s own errors as `Os` (`ENOMEM`, `EACCES` for an
    /// fd not open for reading and writing, ...); an injected [`Site::Mmap`] fault.
    /// Nothing is mapped on error.
    pub fn new(fd: BorrowedFd<'_>, len: usize, populate: bool) -> Result<Self> {
        if len == 0 {
            return Err(Error::Invalid("zero-length mapping"));
        }
        let mut flags = MapFlags::SHARED;
        if populate {
            flags |= MapFlags::POPULATE;
        }
        fault::hit(Site::Mmap)?;
        // SAFETY: a fresh mapping chosen by the kernel (null hint), so no existing memory
        // is replaced; the result is owned by the returned `Mapping` and unmapped once.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
                fd,
                0,
            )
        }?;
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(Error::NoMem)?;
        Ok(Mapping {
            ptr,
            len,
            write: true,
        })
    }

    /// Map several file ranges back to back as one mapping: `pieces` are
    /// `(fd, offset, len)`, each page-aligned and non-empty. `shared` picks
    /// `MAP_SHARED` (writes reach the files) or `MAP_PRIVATE` (copy-on-write: writes
    /// stay in this mapping); writable when `write`.
    ///
    /// # Errors
    ///
    /// `Invalid` for no pieces, an empty or unaligned piece; `NoMem` when the total
    /// length overflows; `mmap`'s own errors as `Os`; an injected [`Site::Mmap`] fault.
    /// Nothing stays mapped on error.
    pub fn new_pieces(
        pieces: &[(BorrowedFd<'_>, usize, usize)],
        write: bool,
        shared: bool,
    ) -> Result<Self> {
        let p = page_size();
        let mut total = 0usize;
        for &(_, off, len) in pieces {
            if len == 0 || len % p != 0 || off % p != 0 {
                return Err(Error::Invalid("mapping piece empty or not page-aligned"));
            }
            total = total.checked_add(len).ok_or(Error::NoMem)?;
        }
        let mut prot = ProtFlags::READ;
        if write {
            prot |= ProtFlags::WRITE;
        }
        let share = if shared {
            MapFlags::SHARED
        } else {
            MapFlags::PRIVATE
        };
        match pieces {
            [] => Err(Error::Invalid("mapping of no pieces")),
            [(fd, off, len)] => {
                fault::hit(Site::Mmap)?;
                // SAFETY: a fresh mapping chosen by the kernel (null hint): no existing
                // memory is replaced; owned by the returned `Mapping`, unmapped once.
                let a = unsafe {
                    rustix::mm::mmap(std::ptr::null_mut(), *len, prot, share, *fd, *off as u64)
                }?;
                let ptr = NonNull::new(a.cast::<u8>()).ok_or(Error::NoMem)?;
                Ok(Mapping {
                    ptr,
                    len: total,
                    write,
                })
            }
            _ => {
                // Reserve the whole range first, then map each piece over its part.
                fault::hit(Site::Mmap)?;
                // SAFETY: a fresh inaccessible reservation chosen by the kernel (null
                // hint); it replaces nothing.
                let base = unsafe {
                    rustix::mm::mmap_anonymous(
                        std::ptr::null_mut(),
                        total,
                        ProtFlags::empty(),
                        MapFlags::PRIVATE | MapFlags::NORESERVE,
                    )
                }?;
                let ptr = NonNull::new(base.cast::<u8>()).ok_or(Error::NoMem)?;
                // From here `map` owns the reservation: an early return unmaps it all.
                let map = Mapping {
                    ptr,
                    len: total,
                    write,
                };
                let mut at = 0usize;
                for &(fd, off, len) in pieces {
                    fault::hit(Site::Mmap)?;
                    // SAFETY: `at + len <= total`, so the target lies inside the
                    // reservation we own and nothing else refers to; MAP_FIXED replaces
                    // only our own reservation pages.
                    unsafe {
                        rustix::mm::mmap(
                            map.ptr.as_ptr().add(at).cast(),
                            len,
                            prot,
                            share | MapFlags::FIXED,
                            fd,
                            off as u64,
                        )
                    }?;
                    at += len;
                }
                Ok(map)
            }
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: mappings have at least one page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the mapping is writable.
    pub fn is_writable(&self) -> bool {
        self.write
    }

    fn check_write(&self) -> Result<()> {
        if self.write {
            Ok(())
        } else {
            Err(Error::Access("write through a read-only mapping"))
        }
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            Some(_) => Err(Error::Invalid("range past the end of the mapping")),
            None => Err(Error::Overflow("offset + length wraps")),
        }
    }

    /// Copy `buf.len()` bytes at `offset` into `buf`.
    ///
    /// # Errors
    ///
    /// `Invalid` when the range runs past the end, `Overflow` when `offset + len`
    /// wraps; nothing is copied then.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        // SAFETY: `offset + buf.len() <= self.len` (checked), so the source lies inside
        // the live mapping (type invariant); `buf` is a distinct Rust buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        Ok(())
    }

    /// Copy `data` into the mapping at `offset`.
    ///
    /// # Errors
    ///
    /// `Access` through a read-only mapping; otherwise as [`read_at`](Self::read_at).
    /// Nothing is written then.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_write()?;
        self.check(offset, data.len())?;
        // SAFETY: bounds checked as above; the destination is inside the live mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len())
        };
        Ok(())
    }

    /// Set `len` bytes at `offset` to `byte`.
    ///
    /// # Errors
    ///
    /// As [`write_at`](Self::write_at); nothing is written then.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<()> {
        self.check_write()?;
        self.check(offset, len)?;
        // SAFETY: bounds checked; the range is inside the live mapping.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(offset), byte, len) };
        Ok(())
    }

    /// Write one byte per page (a store, so each page is faulted in writable); a no-op
    /// on a read-only mapping.
    pub fn touch_pages(&self) {
        if !self.write {
            return;
        }
        let p = page_size();
        let mut off = 0;
        while off < self.len {
            // SAFETY: `off < self.len`: inside the live mapping. Volatile so the store is
            // not optimised away; writing the byte back keeps the contents unchanged.
            unsafe {
                let a = self.ptr.as_ptr().add(off);
                a.write_volatile(a.read_volatile());
            }
            off += p;
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made by a constructor and not yet
        // unmapped (type invariant); nothing refers into it once we are dropped.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
