//! Memory and DMA mapping below dma-buf: memfd-backed pages and their pool
//! ([`memfd`]), a buddy allocator ([`buddy`]) carving contiguous regions ([`region`]),
//! scatter-gather tables ([`sg`]), and the device / dma-mapping layer: [`Device`], its
//! [`iommu`] and its [`dma`] (bounce buffers for non-coherent devices), [`Direction`].
//!
//! In the kernel, memory management and the dma-mapping layer sit below dma-buf; so they
//! do here: this crate imports only the sync core (`dmabuf-sync`, for errors and fault
//! injection) and `lockdep`. See the repository's `ARCHITECTURE.md`.

use dmabuf_sync::{error, fault};

pub mod buddy;
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
