//! A device that DMA-maps buffers: its name, DMA mask, coherency and IOMMU.

use crate::dma::Dma;
use crate::error::Result;
use std::sync::Arc;

/// A simulated device that buffers attach to: shared as `Arc<Device>` by attachments,
/// mappings and engines. Immutable after creation; its [`dma`](Self::dma) locks
/// internally.
#[derive(Debug)]
pub struct Device {
    name: String,
    dma: Dma,
    peer2peer: bool,
}

impl Device {
    /// A device named `name` addressing `0..=dma_mask`, coherent or not, able to reach
    /// peer device memory or not.
    ///
    /// # Errors
    ///
    /// `Invalid` when the mask covers less than two pages (IOVA 0 is reserved, so no
    /// mapping would fit).
    pub fn new(name: &str, dma_mask: u64, coherent: bool, peer2peer: bool) -> Result<Arc<Self>> {
        Ok(Arc::new(Device {
            name: name.to_string(),
            dma: Dma::new(name, dma_mask, coherent)?,
            peer2peer,
        }))
    }

    /// A coherent 32-bit device without peer-to-peer: the common case in tests.
    ///
    /// # Panics
    ///
    /// Only where a 32-bit mask covers less than two pages (a page size above 2 GiB):
    /// on no real system.
    pub fn simple(name: &str) -> Arc<Self> {
        Self::new(name, u32::MAX as u64, true, false).expect("a 32-bit mask is valid")
    }

    /// The name (shown in bufinfo and reports).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// DMA through the device's IOMMU.
    pub fn dma(&self) -> &Dma {
        &self.dma
    }

    /// Whether the device snoops CPU caches.
    pub fn is_coherent(&self) -> bool {
        self.dma.is_coherent()
    }

    /// Whether the device can reach memory behind another device (PCI BARs).
    pub fn supports_peer2peer(&self) -> bool {
        self.peer2peer
    }
}
