//! Simulated devices. (So far: the IOMMU through which a device sees buffers.)

pub mod iommu;
