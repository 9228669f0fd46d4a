//! dmabuf-rs: the Linux DMA-BUF buffer-sharing framework as a userspace library.
//!
//! This crate is the one dependency users write: it re-exports the layered crates
//! underneath, lowest first — `lockdep` (lock-order validation), `dmabuf-sync` ([`ww`],
//! [`fence`], [`sync_file`], [`resv`]), `dmabuf-mem` ([`mem`]: memory, devices,
//! dma-mapping), `dmabuf-core` ([`buf`]: the dma-buf core) and `dmabuf-drivers`
//! ([`heap`], [`device`], [`debug`], [`buf::simple`]). With the `testing` feature,
//! `testing` holds mock fence ops and helpers for tests of drivers. See the
//! repository's `ARCHITECTURE.md`.

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
