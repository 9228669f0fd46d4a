//! Exporters and simulated hardware on top of the dma-buf core: the dma-heaps
//! ([`heap`]: system, contig, udmabuf), the [`simple`] exporter, simulated DMA engines
//! and pipelines ([`device`]), and the debugging aids ([`debug`]: the ownership tracker,
//! live-object counts).
//!
//! This is the drivers' layer: it uses the dma-buf core (`dmabuf-core`), memory and
//! devices (`dmabuf-mem`) and the sync core (`dmabuf-sync`); nothing below imports it.
//! See the repository's `ARCHITECTURE.md`.

#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]

use dmabuf_core::buf;
use dmabuf_sync::{error, fault, fence, interrupt, resv, sync_file, trace, ww};

pub mod debug;
pub mod device;
pub mod heap;
pub mod simple;

pub use dmabuf_sync::{Error, Result};
