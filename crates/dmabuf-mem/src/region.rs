//! A reserved contiguous region — the userspace stand-in for a CMA area — carved into
//! physically contiguous blocks by a buddy allocator (internal to this crate). The
//! contiguous heap is its user; drivers reach it only through that heap.
//!
//! The region is a range of "physical" pages reserved up front, which the buddy
//! allocator carves. [`Region::alloc`] returns a [`Block`]: whole pages, contiguous in
//! that range, zero-filled; dropping the block returns its pages. Each block's memory is
//! a sealed memfd of exactly the block's size, so that a block can be shared as a
//! buffer's descriptor (its file shows just the block, nothing of its neighbours).
//! Zeroing happens on the way back: the pages of the memfd that hold data (`SEEK_DATA`)
//! are punched out (`FALLOC_FL_PUNCH_HOLE`), which both zeroes them and gives their
//! memory back to the system, and the empty memfd is kept for the next block of that
//! size; so an untouched block costs one `lseek` to recycle and an idle region holds no
//! memory. A memfd that was [shared](Memfd::mark_shared) (its descriptor left) is
//! never kept: it is closed, and freed once its last holder anywhere goes.
//!
//! Freed (already zeroed) blocks first wait in a small cache of recently freed runs —
//! the kernel's per-CPU page lists play this role — and an allocation of the same
//! length takes one from there without splitting and re-merging buddies. A cached run
//! counts as free: when the buddy cannot serve a request, the cache is flushed back
//! into it and the request retried, so caching never refuses a request that the free
//! space could serve.

use crate::buddy::Buddy;
use crate::error::{Error, Result};
use crate::memfd::{page_size, Memfd};
use crate::Segment;
use parking_lot::Mutex;
use rustix::fs::{FallocateFlags, SeekFrom};
use std::collections::HashMap;
use std::sync::Arc;

/// Most freed runs kept in the cache.
const CACHE_RUNS: usize = 16;
/// Most empty memfds of freed blocks kept for reuse (each holds a descriptor and a
/// mapping, no memory).
const SPARE_MAX: usize = 64;

/// A contiguous region and its allocator.
///
/// Lock: one mutex over the buddy allocator and the cache of freed runs, a leaf held
/// only to carve or return a run — never while zeroing, never by a caller.
pub struct Region {
    pages: usize,
    /// What the blocks' memfds are named.
    name: String,
    /// The buddy, its cache of freed runs, and the empty memfds of freed blocks: one
    /// lock for a block's carve and its memory.
    alloc: Mutex<Carver>,
}

/// The buddy allocator and the cache of freed, zeroed runs in front of it.
struct Carver {
    buddy: Buddy,
    /// Empty (zeroed, punched) memfds of freed blocks, by pages, for reuse.
    spare: HashMap<usize, Vec<Memfd>>,
    /// `(first page, pages)` of runs freed but still live in `buddy`.
    cache: Vec<(usize, usize)>,
}

impl Carver {
    fn alloc(&mut self, pages: usize) -> Result<usize> {
        if let Some(i) = self.cache.iter().position(|c| c.1 == pages) {
            return Ok(self.cache.swap_remove(i).0);
        }
        match self.buddy.alloc(pages) {
            Err(Error::NoMem) if !self.cache.is_empty() => {
                self.flush();
                self.buddy.alloc(pages)
            }
            r => r,
        }
    }

    fn free(&mut self, first: usize, pages: usize) -> Result<()> {
        if self.cache.len() < CACHE_RUNS {
            debug_assert_eq!(self.buddy.len_of(first), Some(pages), "not a live run");
            self.cache.push((first, pages));
            return Ok(());
        }
        self.buddy.free(first)
    }

    fn flush(&mut self) {
        for (first, _) in self.cache.drain(..) {
            let freed = self.buddy.free(first);
            debug_assert!(freed.is_ok(), "cached run not live in the buddy");
        }
    }

    fn free_pages(&self) -> usize {
        self.buddy.free_pages() + self.cache.iter().map(|c| c.1).sum::<usize>()
    }
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("pages", &self.pages)
            .field("free_pages", &self.free_pages())
            .finish()
    }
}

/// A contiguous run of a region's pages, zero when allocated; zeroed and freed on drop
/// (taking the region's lock briefly).
#[must_use = "dropping a Block gives its pages back to the region at once"]
pub struct Block {
    region: Arc<Region>,
    first: usize,
    pages: usize,
    /// The block's memory; taken back at drop.
    mem: Option<Arc<Memfd>>,
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
    /// Reserve a region of `pages` pages whose blocks' memfds are named `name`.
    ///
    /// # Errors
    ///
    /// `Invalid` for zero pages. Nothing is reserved on error.
    pub fn new(name: &str, pages: usize) -> Result<Arc<Self>> {
        if pages == 0 {
            return Err(Error::Invalid("empty region"));
        }
        Ok(Arc::new(Region {
            pages,
            name: name.to_string(),
            alloc: Mutex::new(Carver {
                buddy: Buddy::new(pages),
                cache: Vec::with_capacity(CACHE_RUNS),
                spare: HashMap::new(),
            }),
        }))
    }

    /// Pages in the region.
    pub fn total_pages(&self) -> usize {
        self.pages
    }

    /// Pages free now.
    pub fn free_pages(&self) -> usize {
        self.alloc.lock().free_pages()
    }

    /// The longest contiguous run that could be allocated now (cached runs are
    /// flushed back to the buddy first, so they count).
    pub fn largest_free(&self) -> usize {
        let mut c = self.alloc.lock();
        c.flush();
        c.buddy.largest_free()
    }

    /// Allocate `pages` contiguous zero-filled pages.
    ///
    /// # Errors
    ///
    /// `Invalid` for zero pages; `NoMem` when no contiguous run that long is free; an
    /// injected [`HeapAlloc`](crate::fault::Site::HeapAlloc) fault; those of
    /// [`Memfd::create`] when no spare memfd of that size exists. The region is
    /// unchanged on error.
    pub fn alloc(self: &Arc<Self>, pages: usize) -> Result<Block> {
        crate::fault::check(crate::fault::Site::HeapAlloc)?;
        let (first, spare) = {
            let mut c = self.alloc.lock();
            let first = c.alloc(pages)?;
            (first, c.spare.get_mut(&pages).and_then(Vec::pop))
        };
        let made = match spare {
            Some(m) => Ok(m),
            None => Memfd::create(&self.name, pages, false).or_else(|e| match e {
                // Out of descriptors: the spares hold some; give them back and retry.
                Error::Os(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)
                    if self.alloc.lock().spare.values().any(|v| !v.is_empty()) =>
                {
                    let spares = std::mem::take(&mut self.alloc.lock().spare);
                    drop(spares);
                    Memfd::create(&self.name, pages, false)
                }
                e => Err(e),
            }),
        };
        let mem = match made {
            Ok(m) => m,
            Err(e) => {
                let freed = self.alloc.lock().free(first, pages);
                debug_assert!(freed.is_ok(), "fresh run not live");
                return Err(e);
            }
        };
        Ok(Block {
            region: self.clone(),
            first,
            pages,
            mem: Some(Arc::new(mem)),
        })
    }

    /// Zero `[off, off+len)` of `mem` by punching out the pages that hold data.
    fn punch(mem: &Memfd, off: usize, len: usize) -> Result<()> {
        let end = (off + len) as u64;
        let mut at = off as u64;
        while at < end {
            let data = match rustix::fs::seek(mem.fd(), SeekFrom::Data(at)) {
                Ok(d) if d < end => d,
                Ok(_) | Err(rustix::io::Errno::NXIO) => break,
                Err(e) => return Err(e.into()),
            };
            let hole = rustix::fs::seek(mem.fd(), SeekFrom::Hole(data))?.min(end);
            rustix::fs::fallocate(
                mem.fd(),
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
        // The block's own memfd, whole: a valid segment by construction.
        Segment {
            mem: self.memory().clone(),
            offset: 0,
            len: self.len(),
        }
    }

    /// The block's memory: a memfd of exactly the block's size.
    ///
    /// # Panics
    ///
    /// Never: the memory is taken only by the block's drop.
    pub fn memory(&self) -> &Arc<Memfd> {
        self.mem.as_ref().expect("taken only at drop")
    }

    /// The region it came from.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // Only memory nobody else holds, and whose descriptor never left, is kept for
        // reuse, zeroed; anything else closes here and is freed by its last holder.
        let keep = match self.mem.take().map(Arc::try_unwrap) {
            Some(Ok(m)) if !m.is_shared() && Region::punch(&m, 0, m.len()).is_ok() => Some(m),
            _ => None,
        };
        let mut c = self.region.alloc.lock();
        if let Some(m) = keep {
            if c.spare.values().map(Vec::len).sum::<usize>() < SPARE_MAX {
                c.spare.entry(self.pages).or_default().push(m);
            }
        }
        let freed = c.free(self.first, self.pages);
        debug_assert!(freed.is_ok(), "block freed twice");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_contiguous_zeroed_and_recycled() {
        let r = Region::new("cma", 64).unwrap();
        let a = r.alloc(16).unwrap();
        let p = page_size();
        assert_eq!(a.segment().offset, 0);
        assert_eq!(a.segment().len, 16 * p);
        assert_eq!(
            a.memory().len(),
            16 * p,
            "the block's own file, just the block"
        );
        a.memory().map().fill(0, a.len(), 0x5A).unwrap();
        let first = a.first_page();
        let file = a.memory().file_id().unwrap();
        drop(a);
        assert_eq!(r.free_pages(), 64);
        let b = r.alloc(16).unwrap();
        assert_eq!(b.first_page(), first, "lowest address reused");
        assert_eq!(
            b.memory().file_id().unwrap(),
            file,
            "the spare memfd reused"
        );
        // The punched pages hold no memory, and read as zero.
        assert!(b.memory().data_ranges().unwrap().is_empty());
        let mut buf = vec![1u8; b.len()];
        b.memory().map().read_at(0, &mut buf).unwrap();
        assert!(buf.iter().all(|&x| x == 0), "no block shows another's data");
        // A shared memfd is never reused.
        b.memory().mark_shared();
        drop(b);
        let c = r.alloc(16).unwrap();
        assert_ne!(c.memory().file_id().unwrap(), file);
    }

    #[test]
    fn out_of_descriptors_gives_the_spares_back_first() {
        use crate::fault::{fail_next, Site};
        use rustix::io::Errno;
        let r = Region::new("cma", 16).unwrap();
        drop(r.alloc(2).unwrap());
        // With a spare to give back, an EMFILE from the memfd's creation is retried.
        fail_next(Site::MemfdCreate, Errno::MFILE);
        let b = r.alloc(4).unwrap();
        assert_eq!(b.pages(), 4);
        drop(b);
        // The spare of 4 pages stays; one of 2 pages is gone. Without spares of any
        // use, the error is the caller's.
        let r2 = Region::new("cma", 16).unwrap();
        fail_next(Site::MemfdCreate, Errno::MFILE);
        assert!(matches!(r2.alloc(4), Err(Error::Os(Errno::MFILE))));
        assert_eq!(r2.free_pages(), 16, "unchanged on error");
    }

    #[test]
    fn spares_are_bounded() {
        let r = Region::new("cma", 256).unwrap();
        let v: Vec<Block> = (0..100).map(|_| r.alloc(1).unwrap()).collect();
        drop(v);
        let kept: usize = r.alloc.lock().spare.values().map(Vec::len).sum();
        assert_eq!(kept, SPARE_MAX);
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
    }

    #[test]
    fn cached_runs_are_reused_and_flushed_when_needed() {
        let r = Region::new("cma", 8).unwrap();
        let a = r.alloc(4).unwrap();
        let b = r.alloc(4).unwrap();
        let (fa, fb) = (a.first_page(), b.first_page());
        drop(a);
        drop(b);
        assert_eq!(r.free_pages(), 8, "cached runs count as free");
        let c = r.alloc(4).unwrap();
        assert!(
            c.first_page() == fa || c.first_page() == fb,
            "a cached run reused"
        );
        drop(c);
        // Only flushing the cache makes 8 contiguous pages: it happens on demand.
        let whole = r.alloc(8).unwrap();
        assert_eq!(whole.first_page(), 0);
        assert!(matches!(r.alloc(1), Err(Error::NoMem)));
        drop(whole);
        assert_eq!(r.largest_free(), 8);
        assert!(matches!(r.alloc(0), Err(Error::Invalid(_))));
        assert_eq!(r.free_pages(), 8);
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
