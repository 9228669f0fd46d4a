//! Memory and DMA mapping below dma-buf: memfd-backed pages and their pool
//! ([`memfd`]), contiguous regions carved by a buddy allocator ([`region`]; the
//! allocator itself is internal), scatter-gather tables ([`sg`]), and the device /
//! dma-mapping layer: [`Device`], its [`iommu`] and its [`dma`] (bounce buffers for
//! non-coherent devices), [`Direction`].
//!
//! In the kernel, memory management and the dma-mapping layer sit below dma-buf; so they
//! do here: this crate imports only the sync core (`dmabuf-sync`, for errors and fault
//! injection). See the repository's `ARCHITECTURE.md`.

#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]

use dmabuf_sync::{error, fault};

mod buddy;
mod device;
mod direction;
pub mod dma;
pub mod iommu;
pub mod memfd;
pub mod region;
pub mod sg;

pub use device::Device;
pub use direction::Direction;
pub use memfd::page_size;
pub use sg::{Segment, SgTable};
