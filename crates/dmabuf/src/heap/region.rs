//! A reserved contiguous region — the userspace stand-in for a CMA area — carved into
//! physically contiguous blocks by the [`Buddy`] allocator.
//!
//! The region is one sealed memfd reserved up front. [`Region::alloc`] returns a
//! [`Block`]: whole pages, contiguous, zero-filled; dropping the block returns its pages.
//! Zeroing happens on the way back: the pages of the block that hold data
//! (`SEEK_DATA`) are punched out of the memfd (`FALLOC_FL_PUNCH_HOLE`), which both
//! zeroes them and gives their memory back to the system, so an untouched block costs
//! one `lseek` to recycle and an idle region holds no memory.

use crate::buf::Segment;
use crate::error::{Error, Result};
use crate::heap::buddy::Buddy;
use crate::heap::memfd::{page_size, Memfd};
use parking_lot::Mutex;
use rustix::fs::{FallocateFlags, SeekFrom};
use std::sync::Arc;

/// A contiguous region and its allocator.
pub struct Region {
    mem: Arc<Memfd>,
    alloc: Mutex<Buddy>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("pages", &self.mem.pages())
            .field("free_pages", &self.free_pages())
            .finish()
    }
}

/// A contiguous run of a region's pages, zero when allocated; freed on drop.
pub struct Block {
    region: Arc<Region>,
    first: usize,
    pages: usize,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("first", &self.first)
            .field("pages", &self.pages)
            .finish()
    }
}

impl Region {
    /// Reserve a region of `pages` pages.
    ///
    /// Errors: those of [`Memfd::create`] (`Invalid` for zero pages).
    pub fn new(name: &str, pages: usize) -> Result<Arc<Self>> {
        Ok(Arc::new(Region {
            mem: Arc::new(Memfd::create(name, pages, false)?),
            alloc: Mutex::new(Buddy::new(pages)),
        }))
    }

    /// Pages in the region.
    pub fn total_pages(&self) -> usize {
        self.mem.pages()
    }

    /// Pages free now.
    pub fn free_pages(&self) -> usize {
        self.alloc.lock().free_pages()
    }

    /// The longest contiguous run that could be allocated now.
    pub fn largest_free(&self) -> usize {
        self.alloc.lock().largest_free()
    }

    /// The region's memory.
    pub fn memory(&self) -> &Arc<Memfd> {
        &self.mem
    }

    /// Allocate `pages` contiguous zero-filled pages.
    ///
    /// Errors: `Invalid` for zero pages; `NoMem` when no contiguous run that long is
    /// free (the region is unchanged).
    pub fn alloc(self: &Arc<Self>, pages: usize) -> Result<Block> {
        let first = self.alloc.lock().alloc(pages)?;
        Ok(Block {
            region: self.clone(),
            first,
            pages,
        })
    }

    /// Zero `[off, off+len)` of the memfd by punching out the pages that hold data.
    fn punch(&self, off: usize, len: usize) -> Result<()> {
        let end = (off + len) as u64;
        let mut at = off as u64;
        while at < end {
            let data = match rustix::fs::seek(self.mem.fd(), SeekFrom::Data(at)) {
                Ok(d) if d < end => d,
                Ok(_) | Err(rustix::io::Errno::NXIO) => break,
                Err(e) => return Err(e.into()),
            };
            let hole = rustix::fs::seek(self.mem.fd(), SeekFrom::Hole(data))?.min(end);
            rustix::fs::fallocate(
                self.mem.fd(),
                FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                data,
                hole - data,
            )?;
            at = hole;
        }
        Ok(())
    }
}

impl Block {
    /// First page within the region.
    pub fn first_page(&self) -> usize {
        self.first
    }

    /// Length in pages.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.pages * page_size()
    }

    /// Whether the block is empty (never).
    pub fn is_empty(&self) -> bool {
        self.pages == 0
    }

    /// The block as one scatter-gather segment.
    pub fn segment(&self) -> Segment {
        Segment::new(
            self.region.mem.clone(),
            self.first * page_size(),
            self.len(),
        )
        .expect("a block lies inside its region")
    }

    /// The region it came from.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let p = page_size();
        // Zero before the pages can be handed out again. Should punching fail, clear
        // with stores instead: no block ever shows another's data.
        if self.region.punch(self.first * p, self.len()).is_err() {
            let _ = self.region.mem.map().fill(self.first * p, self.len(), 0);
        }
        let freed = self.region.alloc.lock().free(self.first);
        debug_assert!(freed.is_ok(), "block freed twice");
    }
}

/// Reject a request of `pages` pages as the contiguous heap does before allocating.
pub fn check_request(pages: usize) -> Result<()> {
    if pages == 0 {
        return Err(Error::Invalid("zero-length allocation"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_contiguous_zeroed_and_recycled() {
        let r = Region::new("cma", 64).unwrap();
        let a = r.alloc(16).unwrap();
        let p = page_size();
        assert_eq!(a.segment().offset, a.first_page() * p);
        assert_eq!(a.segment().len, 16 * p);
        r.memory()
            .map()
            .fill(a.first_page() * p, a.len(), 0x5A)
            .unwrap();
        let first = a.first_page();
        drop(a);
        assert_eq!(r.free_pages(), 64);
        // The punched pages hold no memory.
        assert!(r.memory().data_ranges().unwrap().is_empty());
        let b = r.alloc(16).unwrap();
        assert_eq!(b.first_page(), first, "lowest address reused");
        let mut buf = vec![1u8; b.len()];
        r.memory()
            .map()
            .read_at(b.first_page() * p, &mut buf)
            .unwrap();
        assert!(buf.iter().all(|&x| x == 0), "no block shows another's data");
    }

    #[test]
    fn exhaustion_is_nomem_and_changes_nothing() {
        let r = Region::new("cma", 8).unwrap();
        let a = r.alloc(5).unwrap();
        assert!(matches!(r.alloc(4), Err(Error::NoMem)));
        assert!(matches!(r.alloc(0), Err(Error::Invalid(_))));
        assert_eq!(r.free_pages(), 3);
        let b = r.alloc(3).unwrap();
        assert_eq!(r.free_pages(), 0);
        drop(a);
        drop(b);
        assert_eq!(r.largest_free(), 8);
        assert!(matches!(check_request(0), Err(Error::Invalid(_))));
        assert!(check_request(1).is_ok());
    }

    #[test]
    fn fragmentation_is_handled() {
        let r = Region::new("cma", 16).unwrap();
        let v: Vec<Block> = (0..16).map(|_| r.alloc(1).unwrap()).collect();
        // Keep every fourth page: runs of 3 free pages remain.
        let kept: Vec<Block> = v
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % 4 == 0)
            .map(|x| x.1)
            .collect();
        assert_eq!(r.free_pages(), 12);
        assert_eq!(r.largest_free(), 3);
        let three = r.alloc(3).unwrap();
        assert_eq!(three.pages(), 3);
        assert!(matches!(r.alloc(4), Err(Error::NoMem)));
        drop(kept);
        drop(three);
        assert_eq!(r.largest_free(), 16);
    }
}
