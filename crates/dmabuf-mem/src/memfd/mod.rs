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
//!
//! The pieces: [`Mapping`] (`mapping.rs`), [`Memfd`] (here), [`MemfdPool`] (`pool.rs`).

mod mapping;
mod pool;

pub use mapping::Mapping;
pub use pool::MemfdPool;

use crate::error::{Error, Result};
use crate::fault::{self, Site};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{MemfdFlags, SealFlags, SeekFrom};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// The system page size.
pub fn page_size() -> usize {
    rustix::param::page_size()
}

/// `len` rounded up to whole pages, or `None` when that wraps.
pub fn round_to_pages(len: u64) -> Option<u64> {
    let p = page_size() as u64;
    len.checked_add(p - 1).map(|l| l / p * p)
}
/// The seals every memfd made here carries: it can neither shrink nor grow (so no
/// mapping of it ever reaches past its end, and no `SIGBUS`), and nobody — this process
/// or one it is sent to — can add another seal (a write seal would break our writable
/// mappings).
pub const SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// A sealed memfd of a fixed number of pages, with our own shared mapping of it.
///
/// Closed (and unmapped) on drop. No lock: the size never changes (sealed), and the
/// memory is reached through [`map`](Self::map).
///
/// A memfd is *shared* once its file may be held outside this object: a descriptor of
/// it handed out or sent away ([`mark_shared`](Self::mark_shared)), or another `Memfd`
/// of this process made of the same file ([`from_fd`](Self::from_fd) of a duplicate —
/// udmabuf, an imported descriptor). Other holders may then read and write it whenever
/// they like, so a [`MemfdPool`] (or a region) never takes it back for reuse. The
/// second case is tracked by file identity in a process-wide table, so the original
/// object sees it too. A duplicate of [`fd`](Self::fd) made by hand and kept is not
/// seen: call [`mark_shared`](Self::mark_shared) for it.
#[must_use = "dropping a Memfd closes it and unmaps its memory"]
pub struct Memfd {
    fd: OwnedFd,
    pages: usize,
    map: Mapping,
    shared: AtomicBool,
    id: OnceLock<(u64, u64)>,
}

impl std::fmt::Debug for Memfd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memfd").field("pages", &self.pages).finish()
    }
}

impl Memfd {
    /// A zero-filled memfd of `pages` pages named `name`, sealed against resizing, mapped.
    ///
    /// # Errors
    ///
    /// `Invalid` for zero pages; `NoMem` when the size overflows; `Os` for the OS's
    /// refusals (`EMFILE`, `ENOMEM`, `EFBIG`, ...); an injected
    /// [`Site::MemfdCreate`] or [`Site::Mmap`] fault. Nothing stays open on error.
    pub fn create(name: &str, pages: usize, populate: bool) -> Result<Self> {
        if pages == 0 {
            return Err(Error::Invalid("zero-page memfd"));
        }
        let len = pages.checked_mul(page_size()).ok_or(Error::NoMem)?;
        fault::hit(Site::MemfdCreate)?;
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SEALS)?;
        let map = Mapping::new(fd.as_fd(), len, populate)?;
        Ok(Memfd {
            fd,
            pages,
            map,
            shared: AtomicBool::new(false),
            id: OnceLock::new(),
        })
    }

    /// Wrap an existing shared-memory file (e.g. a caller's memfd, or a buffer's
    /// descriptor received from another process): map all of it, read-write when the
    /// descriptor is open for writing, else read-only. The result counts as
    /// [shared](Self::mark_shared): others hold the file too.
    ///
    /// # Errors
    ///
    /// `Invalid` for an empty file or one whose size is not whole pages; `NoMem` for a
    /// size beyond the address space; `Access` for a descriptor not open for reading;
    /// `Os` for `fstat`/`fcntl`/`mmap` errors. `fd` is closed on error.
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        let st = rustix::fs::fstat(&fd)?;
        let size = st.st_size as u64;
        let p = page_size() as u64;
        if size == 0 || size % p != 0 {
            return Err(Error::Invalid("file size is not whole pages"));
        }
        let len = usize::try_from(size).map_err(|_| Error::NoMem)?;
        let mode = rustix::fs::fcntl_getfl(&fd)? & rustix::fs::OFlags::ACCMODE;
        let map = if mode == rustix::fs::OFlags::RDWR {
            Mapping::new(fd.as_fd(), len, false)?
        } else if mode == rustix::fs::OFlags::RDONLY {
            Mapping::new_pieces(&[(fd.as_fd(), 0, len)], false, true)?
        } else {
            return Err(Error::Access("descriptor not open for reading"));
        };
        let m = Memfd {
            fd,
            pages: len / page_size(),
            map,
            shared: AtomicBool::new(false),
            id: OnceLock::new(),
        };
        let _ = m.id.set((st.st_dev, st.st_ino));
        m.mark_shared();
        Ok(m)
    }

    /// Note that the file may now be held outside this object (a descriptor handed out,
    /// sent away): the memory is never pooled for reuse again, by this object or any
    /// other `Memfd` of the same file in this process. Idempotent; takes the table's
    /// leaf lock the first time.
    pub fn mark_shared(&self) {
        if !self.shared.swap(true, Ordering::AcqRel) {
            match self.file_id() {
                Ok(id) => shared::add(id),
                // The file's identity cannot be read: other objects of the same file
                // cannot be told; this one is shared all the same.
                Err(e) => tracing::debug!("memfd shared without its identity: {e}"),
            }
        }
    }

    /// Whether the file may be held outside this object (see the type's docs). One
    /// atomic load while no file of this process is shared; else the file's identity
    /// (an `fstat`, once) and the table's leaf lock. A memfd whose identity cannot be
    /// read counts as shared.
    #[inline]
    pub fn is_shared(&self) -> bool {
        if self.shared.load(Ordering::Acquire) {
            return true;
        }
        if shared::none() {
            return false;
        }
        self.file_id().map_or(true, shared::contains)
    }

    /// The file's identity, `(st_dev, st_ino)`: equal for every descriptor of the same
    /// file, in any process, while the file lives. Read once (`fstat`), then cached.
    ///
    /// # Errors
    ///
    /// `fstat`'s, on the first call only.
    pub fn file_id(&self) -> Result<(u64, u64)> {
        if let Some(id) = self.id.get() {
            return Ok(*id);
        }
        let st = rustix::fs::fstat(&self.fd)?;
        let id = (st.st_dev, st.st_ino);
        let _ = self.id.set(id);
        Ok(id)
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

    /// The byte ranges that hold data (were ever written), by `SEEK_DATA`/`SEEK_HOLE`,
    /// as `(offset, len)` in file order.
    ///
    /// # Errors
    ///
    /// `Os` for an `lseek` error other than "no more data" (`ENXIO`).
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

    /// Make every byte zero again, touching only pages that hold data. Only call it when
    /// nobody else writes the memory, or the result is not all zeros.
    ///
    /// # Errors
    ///
    /// Those of [`data_ranges`](Self::data_ranges); the memory may then be partly
    /// cleared.
    pub fn zero(&self) -> Result<()> {
        for (off, len) in self.data_ranges()? {
            self.map.fill(off, len, 0)?;
        }
        Ok(())
    }
}

impl Drop for Memfd {
    fn drop(&mut self) {
        if *self.shared.get_mut() {
            if let Some(&id) = self.id.get() {
                shared::remove(id);
            }
        }
    }
}

/// Files of this process that are shared: by identity, how many `Memfd` objects marked
/// them. A leaf lock, held only to look up or count.
mod shared {
    use parking_lot::Mutex;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static TABLE: Mutex<Option<HashMap<(u64, u64), usize>>> = parking_lot::const_mutex(None);
    static LEN: AtomicUsize = AtomicUsize::new(0);

    pub(super) fn none() -> bool {
        LEN.load(Ordering::Acquire) == 0
    }

    pub(super) fn add(id: (u64, u64)) {
        let mut t = TABLE.lock();
        let t = t.get_or_insert_with(HashMap::new);
        *t.entry(id).or_insert(0) += 1;
        LEN.store(t.len(), Ordering::Release);
    }

    pub(super) fn remove(id: (u64, u64)) {
        let mut g = TABLE.lock();
        if let Some(t) = g.as_mut() {
            if let Some(n) = t.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    t.remove(&id);
                }
            }
            LEN.store(t.len(), Ordering::Release);
        }
    }

    pub(super) fn contains(id: (u64, u64)) -> bool {
        TABLE.lock().as_ref().is_some_and(|t| t.contains_key(&id))
    }
}

#[cfg(test)]
mod tests;
