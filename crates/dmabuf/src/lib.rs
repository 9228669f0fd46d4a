//! dmabuf-rs: the Linux DMA-BUF buffer-sharing framework as a userspace library.
//!
//! This crate is the one dependency users write: it re-exports the layered crates
//! underneath, lowest first — `lockdep` (lock-order validation), `dmabuf-sync` ([`ww`],
//! [`fence`], [`sync_file`], [`resv`]), `dmabuf-mem` ([`mem`]: memory, devices,
//! dma-mapping), `dmabuf-core` ([`buf`]: the dma-buf core) and `dmabuf-drivers`
//! ([`heap`], [`device`], [`debug`], [`buf::simple`]). With the `testing` feature,
//! [`testing`] holds mock fence ops and helpers for tests of drivers. See the
//! repository's `ARCHITECTURE.md`.

pub use dmabuf_sync::{error, fault, fence, interrupt, resv, sync_file, ww};
pub use dmabuf_sync::{Error, Interrupt, Result};

pub use dmabuf_mem as mem;

/// DMA-BUF: export, attachments, mappings, CPU access, implicit sync — the core
/// (`dmabuf-core`), with the [`simple`] exporter from the drivers' layer.
pub mod buf {
    pub use dmabuf_core::buf::*;
    pub use dmabuf_drivers::simple;
}

pub use dmabuf_drivers::{debug, device, heap};

#[cfg(feature = "testing")]
pub use dmabuf_sync::testing;
