//! Simulated devices. (So far: the IOMMU through which a device sees buffers.)

pub mod dma;
pub mod iommu;
