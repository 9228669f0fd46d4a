//! DMA-BUF: buffers that exporters hand out and importers attach to, map and share,
//! under the dynamic locking convention (6.2+):
//!
//! | importers must hold the reservation lock | must not hold it |
//! |---|---|
//! | [`Attachment::pin`], [`Attachment::unpin`], [`Attachment::map`], [`Attachment::unmap`], [`DmaBuf::vmap`], [`DmaBuf::vunmap`], [`DmaBuf::move_notify`] (exporters) | [`DmaBuf::attach`], [`DmaBuf::dynamic_attach`], detach, [`export`], [`DmaBuf::begin_cpu_access`], [`DmaBuf::end_cpu_access`], [`DmaBuf::mmap`], the `_unlocked` variants |
//!
//! Calls that need the lock take the [`ResvGuard`](crate::resv::ResvGuard) as proof — they
//! do not compile without one, and a guard of another buffer's reservation is refused
//! with `Invalid`. Calls that must run unlocked ask lockdep whether this thread holds a
//! reservation lock, and report (`Misuse`) and refuse with `Invalid` if it does.

mod attach;
pub mod bufinfo;
mod dmabuf;
pub mod ops;
mod tracker;

pub use attach::{wait_deferred_detaches, AttachGuard, Attachment, SgMapping};
pub use dmabuf::{
    export, live_buffer_count, live_buffers, must_not_hold_resv, sync_flags, CpuAccess, DmaBuf,
    ExportInfo, FileFlags, UserMapping, VMap, VMapGuard, Whence, NAME_MAX,
};
pub use dmabuf_mem::{sg, Direction, Segment, SgTable};
pub use ops::{Caps, Exporter, Importer};
pub use tracker::AccessTracker;
