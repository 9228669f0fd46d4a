//! Shareable memory for the system heap: sealed memfds, mapped once, recycled through a
//! pool that never hands out another buffer's data.
//!
//! A [`Memfd`] is an anonymous shared-memory file of a fixed number of pages, sealed
//! against growing and shrinking (so every mapping of it stays valid), with one shared
//! read-write mapping of our own through which the library (and simulated devices) read
//! and write. The fd can be handed to other processes and mapped there.
//!
//! [`MemfdPool`] keeps freed memfds by size. Before one goes back to the pool it is made
//! zero again, cheaply: `SEEK_DATA`/`SEEK_HOLE` find the pages that were ever written
//! (never-touched pages of a memfd are holes and read as zero), and only those are
//! cleared — with a `memset`, which keeps them resident, so a reused buffer does not
//! page-fault again. A buffer nobody touched costs one `lseek` to recycle.
//!
//! Our mapping is shared memory that other mappings may write at any time, so it is never
//! exposed as a Rust slice: reads and writes copy through raw pointers
//! ([`Mapping::read_at`], [`Mapping::write_at`], [`Mapping::fill`]).

use crate::error::{Error, Result};
use crate::fault::{self, Site};
use parking_lot::Mutex;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{MemfdFlags, SealFlags, SeekFrom};
use rustix::mm::{MapFlags, ProtFlags};
use std::collections::HashMap;
use std::ptr::NonNull;

/// The system page size.
pub fn page_size() -> usize {
    rustix::param::page_size()
}

/// `len` rounded up to whole pages, or `None` when that wraps.
pub fn round_to_pages(len: u64) -> Option<u64> {
    let p = page_size() as u64;
    len.checked_add(p - 1).map(|l| l / p * p)
}

/// A shared read-write mapping of a file, unmapped on drop.
///
/// Invariant: `ptr` is the start of a live mapping of `len` bytes made by one of the
/// constructors (shared, or private for [`Mapping::new_pieces`]), unmapped only by
/// `Drop`.
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
    pub fn new(fd: BorrowedFd<'_>, len: usize, populate: bool) -> Result<Self> {
        Self::map(fd, 0, len, true, populate)
    }

    /// Map `len` bytes of `fd` from `offset` (page-aligned), shared; writable when
    /// `write`.
    pub fn new_at(fd: BorrowedFd<'_>, offset: usize, len: usize, write: bool) -> Result<Self> {
        Self::map(fd, offset, len, write, false)
    }

    /// Map several file ranges back to back as one mapping: `pieces` are
    /// `(fd, offset, len)`, each page-aligned and non-empty. `shared` picks
    /// `MAP_SHARED` (writes reach the files) or `MAP_PRIVATE` (copy-on-write: writes
    /// stay in this mapping); writable when `write`.
    ///
    /// Errors: `Invalid` for no pieces, an empty or unaligned piece; `NoMem` when the
    /// total length overflows; OS errors of `mmap`. Nothing stays mapped on error.
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

    fn map(
        fd: BorrowedFd<'_>,
        offset: usize,
        len: usize,
        write: bool,
        populate: bool,
    ) -> Result<Self> {
        if len == 0 {
            return Err(Error::Invalid("zero-length mapping"));
        }
        if offset % page_size() != 0 {
            return Err(Error::Invalid("mapping offset not page-aligned"));
        }
        let mut flags = MapFlags::SHARED;
        if populate {
            flags |= MapFlags::POPULATE;
        }
        let mut prot = ProtFlags::READ;
        if write {
            prot |= ProtFlags::WRITE;
        }
        fault::hit(Site::Mmap)?;
        // SAFETY: a fresh mapping chosen by the kernel (null hint), so no existing memory
        // is replaced; the result is owned by the returned `Mapping` and unmapped once.
        let p =
            unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, prot, flags, fd, offset as u64) }?;
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(Error::NoMem)?;
        Ok(Mapping { ptr, len, write })
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
    /// Errors: `Invalid` past the end, `Overflow` if the range wraps; nothing is copied.
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
    /// Errors: as [`read_at`](Self::read_at); nothing is written.
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
    /// Errors: as [`read_at`](Self::read_at); nothing is written.
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
        // SAFETY: `ptr`/`len` describe a mapping made by `Mapping::new` and not yet
        // unmapped (type invariant); nothing refers into it once we are dropped.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A sealed memfd of a fixed number of pages, with our own shared mapping of it.
pub struct Memfd {
    fd: OwnedFd,
    pages: usize,
    map: Mapping,
}

impl std::fmt::Debug for Memfd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memfd").field("pages", &self.pages).finish()
    }
}

impl Memfd {
    /// A zero-filled memfd of `pages` pages named `name`, sealed against resizing, mapped.
    ///
    /// Errors: `Invalid` for zero pages, `NoMem` if the size overflows, OS errors
    /// (`EMFILE`, `ENOMEM`) as `Os`.
    pub fn create(name: &str, pages: usize, populate: bool) -> Result<Self> {
        if pages == 0 {
            return Err(Error::Invalid("zero-page memfd"));
        }
        let len = pages.checked_mul(page_size()).ok_or(Error::NoMem)?;
        fault::hit(Site::MemfdCreate)?;
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW)?;
        let map = Mapping::new(fd.as_fd(), len, populate)?;
        Ok(Memfd { fd, pages, map })
    }

    /// Wrap an existing shared-memory file (e.g. a caller's memfd): map all of it.
    ///
    /// Errors: `Invalid` for an empty file or one whose size is not whole pages; OS
    /// errors from `fstat`/`mmap`.
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        let size = rustix::fs::fstat(&fd)?.st_size as u64;
        let p = page_size() as u64;
        if size == 0 || size % p != 0 {
            return Err(Error::Invalid("file size is not whole pages"));
        }
        let len = usize::try_from(size).map_err(|_| Error::NoMem)?;
        let map = Mapping::new(fd.as_fd(), len, false)?;
        Ok(Memfd {
            fd,
            pages: len / page_size(),
            map,
        })
    }

    /// Size in pages.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the memfd is empty (never).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The file descriptor (map it, or send it to another process).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Our mapping of the whole file.
    pub fn map(&self) -> &Mapping {
        &self.map
    }

    /// The byte ranges that hold data (were ever written), by `SEEK_DATA`/`SEEK_HOLE`.
    pub fn data_ranges(&self) -> Result<Vec<(usize, usize)>> {
        let mut out = Vec::new();
        let len = self.len() as u64;
        let mut off = 0u64;
        while off < len {
            let data = match rustix::fs::seek(&self.fd, SeekFrom::Data(off)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => break,
                Err(e) => return Err(e.into()),
            };
            let hole = rustix::fs::seek(&self.fd, SeekFrom::Hole(data))?.min(len);
            out.push((data as usize, (hole - data) as usize));
            off = hole;
        }
        Ok(out)
    }

    /// Make every byte zero again, touching only pages that hold data.
    pub fn zero(&self) -> Result<()> {
        for (off, len) in self.data_ranges()? {
            self.map.fill(off, len, 0)?;
        }
        Ok(())
    }
}

/// Freed memfds by size, reused by later allocations of the same size — always zeroed
/// first. Bounded: past `limit_bytes` freed memfds are closed instead.
pub struct MemfdPool {
    inner: Mutex<PoolInner>,
    limit_bytes: usize,
}

struct PoolInner {
    by_pages: HashMap<usize, Vec<Memfd>>,
    bytes: usize,
}

impl MemfdPool {
    /// An empty pool holding at most `limit_bytes` of free memory.
    pub fn new(limit_bytes: usize) -> Self {
        MemfdPool {
            inner: Mutex::new(PoolInner {
                by_pages: HashMap::new(),
                bytes: 0,
            }),
            limit_bytes,
        }
    }

    /// A zero-filled memfd of `pages` pages: a pooled one if any, else a new one.
    ///
    /// Errors: those of [`Memfd::create`].
    pub fn get(&self, name: &str, pages: usize, populate: bool) -> Result<Memfd> {
        fault::hit(Site::HeapAlloc)?;
        let pooled = {
            let mut g = self.inner.lock();
            let m = g.by_pages.get_mut(&pages).and_then(Vec::pop);
            if let Some(m) = &m {
                g.bytes -= m.len();
            }
            m
        };
        match pooled {
            Some(m) => Ok(m),
            None => Memfd::create(name, pages, populate),
        }
    }

    /// Give `m` back: it is zeroed and kept for reuse, or closed when the pool is full
    /// or zeroing fails. Only call it when nobody else holds the memory (no other
    /// mapping or fd of it is live), or another user could see the next owner's data.
    pub fn put(&self, m: Memfd) {
        if m.len() > self.limit_bytes || m.zero().is_err() {
            return;
        }
        let mut g = self.inner.lock();
        if g.bytes + m.len() > self.limit_bytes {
            return;
        }
        g.bytes += m.len();
        g.by_pages.entry(m.pages()).or_default().push(m);
    }

    /// Bytes held free in the pool.
    pub fn pooled_bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_is_zero_sealed_and_sized() {
        let m = Memfd::create("t", 3, false).unwrap();
        assert_eq!(m.len(), 3 * page_size());
        let mut b = vec![1u8; m.len()];
        m.map().read_at(0, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0));
        // Sealed: resizing fails with EPERM, size unchanged.
        let e = rustix::fs::ftruncate(m.fd(), 0).unwrap_err();
        assert_eq!(e, rustix::io::Errno::PERM);
        let e = rustix::fs::ftruncate(m.fd(), (4 * page_size()) as u64).unwrap_err();
        assert_eq!(e, rustix::io::Errno::PERM);
        assert_eq!(rustix::fs::fstat(m.fd()).unwrap().st_size as usize, m.len());
    }

    #[test]
    fn bad_ranges_are_refused_and_change_nothing() {
        let m = Memfd::create("t", 1, false).unwrap();
        let p = page_size();
        assert!(matches!(
            m.map().write_at(p - 1, &[7, 7]),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            m.map().fill(usize::MAX, 2, 7),
            Err(Error::Overflow(_))
        ));
        let mut b = [9u8; 2];
        assert!(matches!(m.map().read_at(p, &mut b), Err(Error::Invalid(_))));
        assert_eq!(b, [9, 9]);
        assert!(m.data_ranges().unwrap().is_empty(), "nothing was written");
        assert!(matches!(
            Memfd::create("t", 0, false),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn data_ranges_follow_writes_and_zero_clears_them() {
        let m = Memfd::create("t", 8, false).unwrap();
        let p = page_size();
        m.map().write_at(2 * p + 5, b"hello").unwrap();
        m.map().fill(6 * p, p, 0xAA).unwrap();
        let r = m.data_ranges().unwrap();
        let covered: usize = r.iter().map(|x| x.1).sum();
        assert!(r.iter().any(|&(o, l)| o <= 2 * p && o + l > 2 * p + 5));
        assert!(r.iter().any(|&(o, l)| o <= 6 * p && o + l >= 7 * p));
        assert!(covered <= 8 * p);
        m.zero().unwrap();
        let mut b = vec![1u8; m.len()];
        m.map().read_at(0, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0));
    }

    #[test]
    fn pool_reuses_and_never_leaks_data() {
        let pool = MemfdPool::new(1 << 20);
        let a = pool.get("a", 2, false).unwrap();
        a.map().write_at(10, b"secret").unwrap();
        let ino = rustix::fs::fstat(a.fd()).unwrap().st_ino;
        pool.put(a);
        assert_eq!(pool.pooled_bytes(), 2 * page_size());
        let b = pool.get("b", 2, false).unwrap();
        assert_eq!(rustix::fs::fstat(b.fd()).unwrap().st_ino, ino, "reused");
        assert_eq!(pool.pooled_bytes(), 0);
        let mut buf = [1u8; 6];
        b.map().read_at(10, &mut buf).unwrap();
        assert_eq!(buf, [0; 6]);
        // A different size is a fresh memfd.
        let c = pool.get("c", 3, true).unwrap();
        assert_ne!(rustix::fs::fstat(c.fd()).unwrap().st_ino, ino);
    }

    #[test]
    fn pool_limit_is_kept() {
        let pool = MemfdPool::new(3 * page_size());
        pool.put(Memfd::create("a", 2, false).unwrap());
        pool.put(Memfd::create("b", 2, false).unwrap());
        assert_eq!(pool.pooled_bytes(), 2 * page_size());
        pool.put(Memfd::create("c", 4, false).unwrap());
        assert_eq!(pool.pooled_bytes(), 2 * page_size());
    }

    #[test]
    fn round_to_pages_wraps_to_none() {
        let p = page_size() as u64;
        assert_eq!(round_to_pages(1), Some(p));
        assert_eq!(round_to_pages(p), Some(p));
        assert_eq!(round_to_pages(0), Some(0));
        assert_eq!(round_to_pages(u64::MAX), None);
    }
}
