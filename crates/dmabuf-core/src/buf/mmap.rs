//! User mappings of a buffer (`mmap` of its file descriptor).

use super::{must_not_hold_resv, DmaBuf};
use crate::error::{Error, Result};
use dmabuf_mem::memfd::{page_size, Mapping};

impl DmaBuf {
    /// Map pages `pgoff .. pgoff+pages` into this process (`mmap` of the buffer's fd),
    /// shared; writable when `write`. Same as [`mmap_with`](Self::mmap_with) with
    /// `shared`.
    ///
    /// # Errors
    ///
    /// Those of [`mmap_with`](Self::mmap_with).
    #[track_caller]
    #[must_use = "the mapping is unmapped when it drops"]
    pub fn mmap(&self, pgoff: usize, pages: usize, write: bool) -> Result<UserMapping> {
        self.mmap_with(pgoff, pages, write, true)
    }

    /// Map pages `pgoff .. pgoff+pages` into this process, `MAP_SHARED` when `shared`
    /// else `MAP_PRIVATE` (copy-on-write: writes stay in the mapping); writable when
    /// `write`. The mapping holds a buffer reference.
    ///
    /// Must not hold a reservation lock.
    ///
    /// # Errors
    ///
    /// In order: `Access` for a shared writable mapping of a read-only buffer or any mapping of
    /// a buffer that is not readable (the VFS rules, checked first); `Invalid` without an
    /// exporter mmap; `Overflow` when `pgoff + pages` wraps; `Invalid` for zero pages or past
    /// the last whole page; the exporter's errors (`Invalid` for a private mapping of a
    /// shared-only exporter); `Invalid` when the exporter's segments do not cover the range.
    /// Nothing is mapped on error.
    #[track_caller]
    #[must_use = "the mapping is unmapped when it drops"]
    pub fn mmap_with(
        &self,
        pgoff: usize,
        pages: usize,
        write: bool,
        shared: bool,
    ) -> Result<UserMapping> {
        must_not_hold_resv("dma_buf mmap")?;
        // The VFS checks the access mode before the file's mmap runs.
        if shared && write && !self.inner.flags.write {
            return Err(Error::Access("writable mapping of a read-only buffer"));
        }
        if !self.inner.flags.read {
            return Err(Error::Access("mapping of a buffer not open for reading"));
        }
        if !self.inner.caps.mmap {
            return Err(Error::Invalid("exporter has no mmap"));
        }
        let end = pgoff
            .checked_add(pages)
            .ok_or(Error::Overflow("pgoff + pages wraps"))?;
        // Whole pages of the buffer only (the kernel shifts the size down).
        let buf_pages = self.inner.size / page_size();
        if pages == 0 || end > buf_pages {
            return Err(Error::Invalid("mmap range past the end of the buffer"));
        }
        let segs = self.inner.ops.mmap(self, pgoff, pages, shared)?;
        let covered = segs
            .iter()
            .try_fold(0usize, |a, s| a.checked_add(s.len))
            .unwrap_or(usize::MAX);
        if covered != pages * page_size() {
            return Err(Error::Invalid(
                "exporter's mmap segments do not cover the range",
            ));
        }
        let pieces: Vec<_> = segs.iter().map(|s| (s.mem.fd(), s.offset, s.len)).collect();
        let map = Mapping::new_pieces(&pieces, write, shared)?;
        Ok(UserMapping {
            _buf: self.clone(),
            map,
        })
    }
}

/// A user mapping of (part of) a buffer ([`DmaBuf::mmap`]); holds a buffer reference.
#[must_use = "dropping the mapping unmaps it at once"]
pub struct UserMapping {
    _buf: DmaBuf,
    map: Mapping,
}

impl UserMapping {
    /// The mapping's memory.
    pub fn mapping(&self) -> &Mapping {
        &self.map
    }
}
