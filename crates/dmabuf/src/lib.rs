//! dmabuf-rs: the Linux DMA-BUF buffer-sharing framework as a userspace library.
//!
//! This crate is the one dependency users write: it re-exports the layered crates
//! underneath, lowest first — `lockdep` (lock-order validation), `dmabuf-sync` ([`ww`],
//! [`fence`], [`sync_file`], [`resv`], [`trace`]), `dmabuf-mem` ([`mem`]: memory,
//! devices, dma-mapping), `dmabuf-core` ([`buf`]: the dma-buf core) and
//! `dmabuf-drivers` ([`heap`], [`device`], [`debug`], [`buf::simple`]). With the
//! `testing` feature, `testing` holds mock fence ops and helpers for tests of drivers.
//! See the repository's `ARCHITECTURE.md`.
//!
//! # A guide for kernel developers
//!
//! ## The objects
//!
//! | here | the kernel's | what it is |
//! |---|---|---|
//! | [`buf::DmaBuf`] | `struct dma_buf` | a fixed-size buffer owned by its exporter ([`buf::Exporter`]); `clone` is `get_dma_buf`, drop is `dma_buf_put` |
//! | [`buf::Attachment`] / [`buf::AttachGuard`] | `struct dma_buf_attachment` | a device's attachment; static, or dynamic with [`buf::Importer`] ops |
//! | [`buf::SgMapping`] | `struct sg_table` from `dma_buf_map_attachment` | a device mapping, unmapped on drop |
//! | [`resv::Resv`] / [`resv::ResvGuard`] | `struct dma_resv` and its lock | fences by usage, locked with a wait-die [`ww`] mutex |
//! | [`fence::Fence`] | `struct dma_fence` | a one-shot completion in a context, with callbacks, waits, errors; arrays, chains |
//! | [`sync_file::SyncFile`] | `struct sync_file` | a fence as a descriptor: polls, merges, crosses processes |
//! | [`heap::HeapFile`] | `/dev/dma_heap/<name>` | allocation with `DMA_HEAP_IOCTL_ALLOC`'s checks |
//! | [`mem::Device`] | `struct device` + its IOMMU | a simulated device; non-coherent ones use bounce buffers |
//! | [`device::Engine`] | a driver's ring | runs jobs after their fences, signals its own |
//!
//! ## The locking convention, as types
//!
//! The 6.2+ convention: importers hold the reservation lock to map, unmap, pin, unpin,
//! vmap and vunmap; attach, detach, CPU access, mmap and the `_unlocked` variants run
//! without it. Here the locked calls are methods of the buffer's *locked view*
//! ([`buf::LockedBuf`], from [`buf::DmaBuf::locked`] and the guard), so they do not
//! compile without the lock; the unlocked ones refuse with `EINVAL` (and a lockdep
//! report) while the thread holds any reservation lock. Exporter callbacks that the
//! kernel calls locked receive the guard. See [`buf`] for the table.
//!
//! ## Errors
//!
//! One [`Error`]; [`Error::errno`] gives the errno the kernel returns in the same case
//! (`EINVAL` for bad input, `EBUSY`, `EDEADLK`/`EALREADY` from ww locks, `ENOENT` for a
//! callback on a signalled fence…). Bad input never panics and changes nothing.
//!
//! ## Lockdep
//!
//! On by default, with the kernel's reports: circular dependencies, recursive locking,
//! fence waits inside signalling sections, sleeping in fence callbacks. Choose what a
//! report does with `LOCKDEP=off|panic|print|collect` or [`lockdep::set_on_report`];
//! [`lockdep::Capture`] collects one test's reports; the cargo feature `lockdep-off`
//! compiles it out.
//!
//! ## A buffer from a heap, written by the CPU, read through a descriptor
//!
//! ```
//! use dmabuf::buf::{self, Direction};
//! use dmabuf::heap::{heaps, AllocData, O_CLOEXEC, O_RDWR};
//! # fn main() -> dmabuf::Result<()> {
//! let b = heaps().alloc("system", &AllocData::new(4096))?;
//! b.set_name("frame")?;
//! {
//!     // CPU access is bracketed, as with DMA_BUF_IOCTL_SYNC.
//!     let acc = b.cpu_access(Direction::ToDevice)?;
//!     b.vmap_unlocked()?.write_at(0, b"pixels")?;
//!     acc.end()?;
//! }
//! // dma_buf_fd / dma_buf_get: the same buffer comes back.
//! let fd = b.fd(O_RDWR | O_CLOEXEC)?;
//! let again = buf::get(std::os::fd::AsFd::as_fd(&fd))?;
//! assert!(buf::DmaBuf::ptr_eq(&b, &again));
//! assert_eq!(again.name().as_deref(), Some("frame"));
//! # Ok(()) }
//! ```
//!
//! ## A device maps it under the reservation lock; a fence orders the CPU after it
//!
//! ```
//! use dmabuf::buf::{sync_flags, Direction};
//! use dmabuf::device::Device;
//! use dmabuf::heap::{heaps, AllocData};
//! use dmabuf::resv::Usage;
//! use dmabuf::ww::AcquireCtx;
//!
//! // A driver's fences name their driver and timeline.
//! struct Ring;
//! impl dmabuf::fence::FenceOps for Ring {
//!     fn driver_name(&self) -> &str { "gpu" }
//!     fn timeline_name(&self) -> &str { "ring0" }
//! }
//! # fn main() -> dmabuf::Result<()> {
//! let b = heaps().alloc("system", &AllocData::new(8192))?;
//! let dev = Device::new("gpu", u32::MAX as u64, true, false)?;
//! let att = b.attach(&dev)?; // unlocked, as the kernel's attach
//! let ctx = AcquireCtx::try_new(&dmabuf::resv::RESERVATION_WW_CLASS)?;
//! let job_done = dmabuf::fence::Fence::new(Ring, dmabuf::fence::Context::new(), 1);
//! {
//!     let mut g = b.resv().lock(&ctx)?;
//!     let mut view = b.locked(&mut g)?; // checked once: this buffer's lock
//!     let map = view.map(&att, Direction::ToDevice)?;
//!     assert!(!map.table().is_empty());
//!     view.reserve_fences(1)?;
//!     view.add_fence(&job_done, Usage::Write)?; // the device will write
//!     // Unmapped under the lock too: dropping the mapping while the lock is held
//!     // would be reported (and the unmap deferred).
//!     view.unmap(&att, map).map_err(|(e, _)| e)?;
//! } // unlocked here
//! // The buffer polls busy until the writer signals.
//! assert_eq!(b.poll(), (false, false));
//! let sf = b.export_sync_file(sync_flags::READ)?; // DMA_BUF_IOCTL_EXPORT_SYNC_FILE
//! job_done.signal()?;
//! assert!(sf.fence().wait_timeout(std::time::Duration::from_secs(1)).is_ok());
//! assert_eq!(b.poll(), (true, true));
//! # Ok(()) }
//! ```
//!
//! ## Seeing inside
//!
//! [`trace`] records a Chrome/Perfetto trace of fences, waits, lock holds and engine
//! jobs; [`debug::server`] exposes a process's bufinfo, fences and lockdep state on a
//! Unix socket for `dmabuf bufinfo --pid N`; [`buf::bufinfo::bufinfo`] is the kernel's
//! debugfs `bufinfo` text.

#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

/// The lock validator, re-exported so that one dependency is enough: the public API
/// names its types (`lockdep::Capture` in engine configs, `lockdep::LockClass` of ww
/// classes), and a user's own locks join the same dependency graph.
pub use lockdep;

pub use dmabuf_sync::{error, fault, fence, interrupt, resv, sync_file, trace, ww};
pub use dmabuf_sync::{Error, Interrupt, Result};

/// Memory, devices and dma-mapping (`dmabuf-mem`): what a driver needs below the
/// dma-buf core — sealed memfds, their mappings and pool, the page size
/// ([`memfd`](mem::memfd)); scatter-gather tables ([`sg`](mem::sg)); the simulated
/// [`Device`](mem::Device) with its [`dma`](mem::dma) (bounce buffers for non-coherent
/// devices) and [`iommu`](mem::iommu) (device accesses, faults); the transfer
/// [`Direction`](mem::Direction).
///
/// The contiguous region and its buddy allocator are internals of the contiguous heap
/// and are not exported: the heap reports their counts
/// ([`ContigHeap::free_pages`](heap::contig::ContigHeap::free_pages),
/// [`ContigHeap::largest_free`](heap::contig::ContigHeap::largest_free)).
pub mod mem {
    pub use dmabuf_mem::{dma, iommu, memfd, sg};
    pub use dmabuf_mem::{page_size, Device, Direction, Segment, SgTable};
}

/// DMA-BUF: export, attachments, mappings, CPU access, implicit sync — the core
/// (`dmabuf-core`), with the [`simple`](crate::buf::simple) exporter from the drivers'
/// layer.
pub mod buf {
    pub use dmabuf_core::buf::*;
    pub use dmabuf_drivers::simple;
}

pub use dmabuf_drivers::{debug, device, heap};

#[cfg(feature = "testing")]
pub use dmabuf_sync::testing;
