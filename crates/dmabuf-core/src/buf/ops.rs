//! The exporter's and the importer's callbacks (`struct dma_buf_ops`, `struct
//! dma_buf_attach_ops`).
//!
//! Each callback the core calls with the reservation lock held receives the lock as the
//! reservation object's locked view, `lock: &ResvGuard` (already checked to be the
//! buffer's); those it calls unlocked receive none and may lock. A locked callback must not
//! lock the same reservation object again (it gets `Invalid`, and lockdep's
//! recursive-locking report when on, instead of a hang), nor call the buffer's locked calls
//! (a [`LockedBuf`](super::LockedBuf) is made only from a guard borrowed mutably, which a
//! callback does not have).
//!
//! | callback | lock | required |
//! |---|---|---|
//! | [`Exporter::attach`], [`Exporter::detach`] | not held | optional |
//! | [`Exporter::pin`], [`Exporter::unpin`] | held | both or neither (makes the exporter dynamic) |
//! | [`Exporter::map`], [`Exporter::unmap`] | held | yes |
//! | [`Exporter::release`] | not held | yes |
//! | [`Exporter::begin_cpu_access`], [`Exporter::end_cpu_access`] | not held | optional |
//! | [`Exporter::mmap`] | not held | optional |
//! | [`Exporter::vmap`], [`Exporter::vunmap`] | held | optional |
//! | [`Importer::move_notify`] | held | yes, for dynamic importers |
//! | [`Exporter::file`] | any | optional (no descriptor without it) |

use super::{Attachment, Direction, DmaBuf, Segment, SgTable};
use crate::error::{Error, Result};
use crate::resv::ResvGuard;
use dmabuf_mem::memfd::Memfd;
use std::sync::Arc;

/// Which optional callbacks an exporter implements — the NULL/non-NULL pointers of the
/// kernel's ops table, checked at export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    /// Implements [`Exporter::pin`]: the exporter is *dynamic* (can move its memory).
    pub pin: bool,
    /// Implements [`Exporter::unpin`]; must equal `pin`.
    pub unpin: bool,
    /// Implements [`Exporter::vmap`].
    pub vmap: bool,
    /// Implements [`Exporter::mmap`].
    pub mmap: bool,
    /// Let the core cache the first mapping of each attachment (the ≤6.14
    /// `cache_sgt_mapping`); refused together with `pin`.
    pub cache_sgt_mapping: bool,
}

/// The exporter of a buffer: owns its memory and maps it for devices.
///
/// Errors a callback returns are passed through to the caller unchanged.
pub trait Exporter: Send + Sync + 'static {
    /// Which optional callbacks are implemented (default: none).
    fn caps(&self) -> Caps {
        Caps::default()
    }

    /// A device attaches (unlocked): check it can reach the memory.
    ///
    /// # Errors
    ///
    /// `Busy` when the device cannot reach the memory and the memory cannot move; any
    /// error fails the attach (nothing is left attached).
    fn attach(&self, buf: &DmaBuf, att: &Attachment) -> Result<()> {
        let _ = (buf, att);
        Ok(())
    }

    /// Undo [`attach`](Self::attach) (unlocked).
    fn detach(&self, buf: &DmaBuf, att: &Attachment) {
        let _ = (buf, att);
    }

    /// Keep the memory in place and reachable by every device until unpinned (locked).
    ///
    /// # Errors
    ///
    /// Any error (e.g. `Busy` when the memory cannot be pinned now) fails the pin, or the
    /// map or attach that pins; nothing stays pinned.
    fn pin(&self, lock: &ResvGuard<'_>, att: &Attachment) -> Result<()> {
        let _ = (lock, att);
        Ok(())
    }

    /// Let the memory move again (locked).
    fn unpin(&self, lock: &ResvGuard<'_>, att: &Attachment) {
        let _ = (lock, att);
    }

    /// Map the buffer for `att`'s device in `dir` (locked): a new table the caller owns,
    /// page-aligned, the memory ready (a static exporter's moves and clears finished).
    ///
    /// # Errors
    ///
    /// Any error (e.g. `NoMem`, `Interrupted`) fails the map; the core undoes the pin it
    /// made for it.
    fn map(&self, lock: &ResvGuard<'_>, att: &Attachment, dir: Direction) -> Result<SgTable>;

    /// Free what [`map`](Self::map) returned (locked).
    fn unmap(&self, lock: &ResvGuard<'_>, att: &Attachment, table: SgTable, dir: Direction);

    /// The last reference to buffer `ino` is gone (unlocked): free what backs it.
    fn release(&self, ino: u64);

    /// Make the CPU's view coherent for access in `dir` (unlocked).
    ///
    /// # Errors
    ///
    /// Any error fails the begin before the core waits for fences; it is not undone.
    fn begin_cpu_access(&self, buf: &DmaBuf, dir: Direction) -> Result<()> {
        let _ = (buf, dir);
        Ok(())
    }

    /// Flush CPU access in `dir` for devices (unlocked).
    ///
    /// # Errors
    ///
    /// Returned to the caller; the access counts as ended anyway.
    fn end_cpu_access(&self, buf: &DmaBuf, dir: Direction) -> Result<()> {
        let _ = (buf, dir);
        Ok(())
    }

    /// The memory behind pages `pgoff .. pgoff+pages` for a user mapping (unlocked; the
    /// range is already bounds-checked and the access mode checked): the segments, in
    /// buffer order, covering exactly `pages` pages. `shared` says whether the mapping is
    /// `MAP_SHARED` (else `MAP_PRIVATE`); an exporter that allows only shared mappings
    /// refuses a private one with `Invalid`, as the kernel's CMA heap and udmabuf do.
    ///
    /// # Errors
    ///
    /// `Invalid` by default (no mmap) and for a refused private mapping; any error fails
    /// the mmap, nothing mapped.
    fn mmap(&self, buf: &DmaBuf, pgoff: usize, pages: usize, shared: bool) -> Result<Vec<Segment>> {
        let _ = (buf, pgoff, pages, shared);
        Err(Error::Invalid("exporter has no mmap"))
    }

    /// A CPU mapping of the whole buffer (locked): its segments, in buffer order.
    ///
    /// # Errors
    ///
    /// `Invalid` by default (no vmap); any error fails the vmap, nothing mapped.
    fn vmap(&self, lock: &ResvGuard<'_>, buf: &DmaBuf) -> Result<Vec<Segment>> {
        let _ = (lock, buf);
        Err(Error::Invalid("exporter has no vmap"))
    }

    /// Undo [`vmap`](Self::vmap) (locked).
    fn vunmap(&self, lock: &ResvGuard<'_>, buf: &DmaBuf) {
        let _ = (lock, buf);
    }

    /// The one file that holds the whole buffer — a memfd of exactly the buffer's size
    /// whose bytes from offset 0 are the buffer's — which the buffer's descriptors are
    /// ([`DmaBuf::fd`]). No lock; any thread. The core marks it
    /// [shared](Memfd::mark_shared) before a descriptor of it leaves, so an exporter
    /// that pools memory must not reuse a shared one.
    ///
    /// `None` (the default) means the memory is not one such file (a caller's memory
    /// ranges, memory shared between buffers): the buffer has no descriptor and [`DmaBuf::fd`] returns
    /// `EOPNOTSUPP`.
    fn file(&self) -> Option<&Arc<Memfd>> {
        None
    }
}

/// A dynamic importer's callbacks (`struct dma_buf_attach_ops`).
pub trait Importer: Send + Sync + 'static {
    /// The importer copes with memory that has no struct pages (peer device BARs).
    fn allow_peer2peer(&self) -> bool {
        false
    }

    /// The exporter is moving the memory (called with the reservation lock held):
    /// existing mappings stay valid for now; rebuild them as soon as possible. Accesses that
    /// cannot stop at once must be covered by fences in the reservation object (added when
    /// they were submitted: `lock` is borrowed shared and adds none), which the exporter
    /// waits for before it moves the memory.
    fn move_notify(&self, lock: &ResvGuard<'_>, att: &Attachment);
}
