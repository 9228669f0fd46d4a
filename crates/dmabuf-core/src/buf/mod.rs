//! DMA-BUF: buffers that exporters hand out and importers attach to, map and share,
//! under the dynamic locking convention (6.2+):
//!
//! | importers must hold the reservation lock | must not hold it |
//! |---|---|
//! | [`LockedBuf::pin`], [`LockedBuf::unpin`], [`LockedBuf::map`], [`LockedBuf::unmap`], [`LockedBuf::vmap`], [`LockedBuf::vunmap`], [`LockedBuf::move_notify`] (exporters), [`LockedBuf::attachments`] | [`DmaBuf::attach`], [`DmaBuf::dynamic_attach`], detach, [`export`], [`DmaBuf::begin_cpu_access`], [`DmaBuf::end_cpu_access`], [`DmaBuf::mmap`], the `_unlocked` variants |
//!
//! Calls that need the lock are methods of the buffer's *locked view*, [`LockedBuf`],
//! as the reservation object's own locked calls (add a fence…) are methods of its guard,
//! [`ResvGuard`](crate::resv::ResvGuard). The view is made once from the buffer and the
//! guard ([`DmaBuf::locked`]), which checks that the guard locks this buffer's
//! reservation object (`Invalid` if not, nothing changes); it borrows the guard, so the
//! calls do not compile without the lock, and it dereferences to the guard, so fences
//! are added through it too:
//!
//! ```text
//! let mut g = buf.resv().lock(&ctx)?;
//! let mut view = buf.locked(&mut g)?;
//! let m = view.map(&att, Direction::ToDevice)?;
//! view.reserve_fences(1)?;
//! view.add_fence(&job_done, Usage::Write)?;
//! ```
//!
//! Calls that must run unlocked refuse with `Invalid` while this thread holds any
//! reservation lock (the guards are counted per thread), and with lockdep on also report
//! the misuse (`Misuse`).
//!
//! A call whose doc names no lock takes no reservation lock and may be made with or
//! without one held (the getters, names, `poll`, `export_sync_fence`…).
//!
//! The exporter's and importer's callbacks that the core invokes with the lock held
//! ([`Exporter::map`], [`Importer::move_notify`]…, see [`ops`]) receive the lock as the
//! reservation object's guard, `&ResvGuard`: the core has already checked that it is the
//! buffer's. They must not lock it again, nor call back into the buffer's locked calls.

mod attach;
pub mod bufinfo;
mod cpu_access;
mod dmabuf;
mod fd;
mod implicit_sync;
mod locked;
mod map;
pub mod memory;
mod mmap;
pub mod ops;
mod tracker;
mod vmap;

pub use attach::{wait_deferred_detaches, AttachGuard, Attachment};
pub use cpu_access::CpuAccess;
pub use dmabuf::{
    export, live_buffer_count, live_buffers, must_not_hold_resv, DmaBuf, ExportInfo, FileFlags,
    Whence, NAME_MAX,
};
pub use dmabuf_mem::{sg, Direction, Segment, SgTable};
pub use fd::{fdinfo, get, get_raw, ioctl, ioctl_nr, recv, send, Received, FD_VALID_FLAGS};
pub use implicit_sync::sync_flags;
pub use locked::LockedBuf;
pub use map::SgMapping;
pub use memory::{Backing, MemoryExporter, Rules};
pub use mmap::UserMapping;
pub use ops::{Caps, Exporter, Importer};
pub use tracker::AccessTracker;
pub use vmap::{VMap, VMapGuard};
