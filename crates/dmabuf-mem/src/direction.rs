//! The direction of a DMA transfer, as the device sees it (`enum dma_data_direction`).

/// The direction of a DMA transfer, passed to exporters for cache maintenance (the
/// kernel's `enum dma_data_direction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Memory → device: the device reads.
    ToDevice,
    /// Device → memory: the device writes.
    FromDevice,
    /// Both.
    Bidirectional,
}

impl Direction {
    /// From the uapi's READ / WRITE bits as `DMA_BUF_IOCTL_SYNC` reads them: READ →
    /// `FromDevice` (the CPU reads what a device wrote), WRITE → `ToDevice`, both →
    /// `Bidirectional`.
    ///
    /// # Errors
    ///
    /// `Invalid` when neither bit is set.
    pub fn from_rw(read: bool, write: bool) -> dmabuf_sync::Result<Self> {
        match (read, write) {
            (true, true) => Ok(Direction::Bidirectional),
            (true, false) => Ok(Direction::FromDevice),
            (false, true) => Ok(Direction::ToDevice),
            (false, false) => Err(dmabuf_sync::Error::Invalid("neither READ nor WRITE")),
        }
    }

    /// Whether a device may read memory under this direction.
    pub fn device_reads(self) -> bool {
        matches!(self, Direction::ToDevice | Direction::Bidirectional)
    }

    /// Whether a device may write memory under this direction.
    pub fn device_writes(self) -> bool {
        matches!(self, Direction::FromDevice | Direction::Bidirectional)
    }

    /// Whether this direction counts as a write for implicit sync (the kernel's rule:
    /// `ToDevice` or `Bidirectional`).
    pub fn is_write_for_implicit_sync(self) -> bool {
        matches!(self, Direction::ToDevice | Direction::Bidirectional)
    }

    /// Whether a mapping made for `self` serves a request for `want` (the cached
    /// mapping rule: same direction, or the cached one is bidirectional).
    pub fn covers(self, want: Direction) -> bool {
        self == want || self == Direction::Bidirectional
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uapi_bits_map_like_the_kernel() {
        assert_eq!(
            Direction::from_rw(true, false).unwrap(),
            Direction::FromDevice
        );
        assert_eq!(
            Direction::from_rw(false, true).unwrap(),
            Direction::ToDevice
        );
        assert_eq!(
            Direction::from_rw(true, true).unwrap(),
            Direction::Bidirectional
        );
        let e = Direction::from_rw(false, false).unwrap_err();
        assert_eq!(e.errno(), 22);
    }

    #[test]
    fn coverage_and_access() {
        use Direction::*;
        assert!(Bidirectional.covers(ToDevice) && Bidirectional.covers(FromDevice));
        assert!(ToDevice.covers(ToDevice) && !ToDevice.covers(FromDevice));
        assert!(!FromDevice.covers(Bidirectional));
        assert!(ToDevice.device_reads() && !ToDevice.device_writes());
        assert!(FromDevice.device_writes() && !FromDevice.device_reads());
        assert!(ToDevice.is_write_for_implicit_sync() && !FromDevice.is_write_for_implicit_sync());
    }
}
