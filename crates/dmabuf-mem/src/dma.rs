//! DMA mapping for a device: through its IOMMU, and for a non-coherent device through
//! bounce buffers synchronised only at the sync points — as the kernel's swiotlb does.
//!
//! A coherent device's IOMMU maps the buffer's own memory: CPU and device see the same
//! bytes at all times. A non-coherent device gets a private copy (the bounce buffer); the
//! copies move only when the DMA API says so:
//!
//! | call | copies |
//! |---|---|
//! | [`Dma::map`] (any direction, as swiotlb) | memory → bounce |
//! | [`Dma::sync_for_device`] for `ToDevice` / `Bidirectional` | memory → bounce |
//! | [`Dma::sync_for_cpu`] for `FromDevice` / `Bidirectional` | bounce → memory |
//! | [`Dma::unmap`] for `FromDevice` / `Bidirectional` | bounce → memory |
//!
//! So a CPU write not followed by a sync-for-device (the exporter's `end_cpu_access`) is
//! invisible to the device, and a device write not followed by a sync-for-CPU
//! (`begin_cpu_access`) is invisible to the CPU: stale data, the bug the kernel's rules
//! exist to prevent.

use crate::error::{Error, Result};
use crate::iommu::Iommu;
use crate::memfd::{page_size, Memfd};
use crate::{Direction, Segment, SgTable};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A device's DMA: its IOMMU and whether it snoops CPU caches (is coherent). Made by
/// [`Device::new`](crate::Device::new); takes no lock of its own (the IOMMU's is a
/// leaf).
#[derive(Debug)]
pub struct Dma {
    id: u64,
    iommu: Iommu,
    coherent: bool,
}

/// Source of unique [`Dma`] ids, so a mapping knows which device made it.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A live DMA mapping of a list of segments for one device.
///
/// Must be handed back to [`Dma::unmap`] of the device that made it: it has no `Drop`,
/// so dropping it leaves its IOVA range mapped (and, for a bounced mapping, loses the
/// device's unsynced writes).
#[derive(Debug)]
#[must_use = "a DmaMap must be given back to Dma::unmap; dropping it leaks its IOVA range"]
pub struct DmaMap {
    owner: u64,
    table: SgTable,
    cpu: Vec<Segment>,
    bounce: Option<Vec<Segment>>,
    dir: Direction,
}

impl DmaMap {
    /// The table as the device sees it (device addresses).
    pub fn table(&self) -> &SgTable {
        &self.table
    }

    /// The device address of the first byte.
    pub fn dma_addr(&self) -> u64 {
        self.table.entries()[0].dma_addr
    }

    /// Total bytes mapped.
    pub fn len(&self) -> usize {
        self.table.total_len()
    }

    /// Whether nothing is mapped (never: maps have at least one page).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The direction it was mapped for.
    pub fn direction(&self) -> Direction {
        self.dir
    }

    /// Whether accesses go through a bounce buffer.
    pub fn is_bounced(&self) -> bool {
        self.bounce.is_some()
    }
}

/// Copy the contents of `from` segments into `to` segments (same total length).
fn copy_segments(from: &[Segment], to: &[Segment]) -> Result<()> {
    const CHUNK: usize = 64 * 1024;
    let mut buf = vec![0u8; CHUNK];
    let (mut fi, mut foff) = (0usize, 0usize);
    let (mut ti, mut toff) = (0usize, 0usize);
    while fi < from.len() && ti < to.len() {
        let (f, t) = (&from[fi], &to[ti]);
        let n = (f.len - foff).min(t.len - toff).min(CHUNK);
        f.mem.map().read_at(f.offset + foff, &mut buf[..n])?;
        t.mem.map().write_at(t.offset + toff, &buf[..n])?;
        foff += n;
        toff += n;
        if foff == f.len {
            fi += 1;
            foff = 0;
        }
        if toff == t.len {
            ti += 1;
            toff = 0;
        }
    }
    Ok(())
}

impl Dma {
    /// DMA for a device named `device` addressing `0..=dma_mask`, coherent or not.
    ///
    /// # Errors
    ///
    /// Those of [`Iommu::new`].
    pub(crate) fn new(device: &str, dma_mask: u64, coherent: bool) -> Result<Self> {
        Ok(Dma {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            iommu: Iommu::new(device, dma_mask)?,
            coherent,
        })
    }

    /// The IOMMU (device accesses, faults).
    pub fn iommu(&self) -> &Iommu {
        &self.iommu
    }

    /// Whether the device is coherent.
    pub fn is_coherent(&self) -> bool {
        self.coherent
    }

    /// Map `segments` for `dir`; `label` names the buffer in fault reports. For a
    /// non-coherent device the device sees a bounce copy of the memory, made now.
    ///
    /// # Errors
    ///
    /// `Invalid` for an empty list; `NoMem` when IOVA space or bounce memory runs out;
    /// `Os` when the bounce memfd cannot be made; injected faults of the sites on the
    /// way ([`IommuMap`](crate::fault::Site::IommuMap),
    /// [`MemfdCreate`](crate::fault::Site::MemfdCreate),
    /// [`Mmap`](crate::fault::Site::Mmap)). Nothing is mapped on error.
    pub fn map(&self, segments: &[Segment], dir: Direction, label: &str) -> Result<DmaMap> {
        if segments.is_empty() {
            return Err(Error::Invalid("empty scatter-gather list"));
        }
        if self.coherent {
            let table = self.iommu.map(segments, dir, label)?;
            return Ok(DmaMap {
                owner: self.id,
                table,
                cpu: segments.to_vec(),
                bounce: None,
                dir,
            });
        }
        let len: usize = segments.iter().map(|s| s.len).sum();
        let mem = Arc::new(Memfd::create("bounce", len / page_size(), false)?);
        let bounce = vec![Segment::new(mem, 0, len)?];
        // Always bounce the memory in, whatever the direction (as swiotlb does): a device
        // that writes only part of a FromDevice mapping must not clobber the rest with
        // the bounce buffer's old contents when it is copied back.
        copy_segments(segments, &bounce)?;
        let table = self.iommu.map(&bounce, dir, label)?;
        Ok(DmaMap {
            owner: self.id,
            table,
            cpu: segments.to_vec(),
            bounce: Some(bounce),
            dir,
        })
    }

    fn check_owner(&self, map: &DmaMap) -> Result<()> {
        if map.owner == self.id {
            Ok(())
        } else {
            Err(Error::Invalid("mapping made by another device"))
        }
    }

    /// Give the buffer to the device after CPU writes: memory → bounce when the
    /// mapping lets the device read. A no-op for coherent devices.
    ///
    /// # Errors
    ///
    /// `Invalid` for a mapping of another device; nothing is copied then.
    pub fn sync_for_device(&self, map: &DmaMap) -> Result<()> {
        self.check_owner(map)?;
        match &map.bounce {
            Some(b) if map.dir.device_reads() => copy_segments(&map.cpu, b),
            _ => Ok(()),
        }
    }

    /// Give the buffer to the CPU after device writes: bounce → memory when the mapping
    /// lets the device write. A no-op for coherent devices.
    ///
    /// # Errors
    ///
    /// `Invalid` for a mapping of another device; nothing is copied then.
    pub fn sync_for_cpu(&self, map: &DmaMap) -> Result<()> {
        self.check_owner(map)?;
        match &map.bounce {
            Some(b) if map.dir.device_writes() => copy_segments(b, &map.cpu),
            _ => Ok(()),
        }
    }

    /// Unmap: device writes reach memory (as [`sync_for_cpu`](Self::sync_for_cpu)), then
    /// the IOVA range is released.
    ///
    /// # Errors
    ///
    /// `Invalid` when `map` was not made by this device: the error comes with the
    /// mapping, handed back untouched and still live on the device that made it.
    pub fn unmap(&self, map: DmaMap) -> std::result::Result<(), (Error, DmaMap)> {
        if map.owner != self.id {
            let e = Error::Invalid("unmap of a mapping this device did not make");
            return Err((e, map));
        }
        if let Err(e) = self.sync_for_cpu(&map) {
            return Err((e, map));
        }
        // The owner check makes the IOMMU mapping ours and live: this cannot fail.
        self.iommu.unmap(map.dma_addr()).map_err(|e| (e, map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(pages: usize) -> Vec<Segment> {
        let m = Arc::new(Memfd::create("buf", pages, false).unwrap());
        vec![Segment::new(m, 0, pages * page_size()).unwrap()]
    }

    fn cpu_read(s: &[Segment], off: usize, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        s[0].mem.map().read_at(s[0].offset + off, &mut b).unwrap();
        b
    }

    #[test]
    fn coherent_device_sees_cpu_writes_at_once() {
        let d = Dma::new("coh", u32::MAX as u64, true).unwrap();
        let s = buffer(1);
        let m = d.map(&s, Direction::Bidirectional, "b").unwrap();
        assert!(!m.is_bounced());
        s[0].mem.map().write_at(0, b"abc").unwrap();
        let mut got = [0u8; 3];
        d.iommu().read(m.dma_addr(), &mut got).unwrap();
        assert_eq!(&got, b"abc");
        d.iommu().write(m.dma_addr(), b"xyz").unwrap();
        assert_eq!(cpu_read(&s, 0, 3), b"xyz");
        d.unmap(m).map_err(|e| e.0).unwrap();
    }

    #[test]
    fn non_coherent_device_needs_syncs() {
        let d = Dma::new("nc", u32::MAX as u64, false).unwrap();
        let s = buffer(2);
        s[0].mem.map().write_at(0, b"v1").unwrap();
        let m = d.map(&s, Direction::Bidirectional, "b").unwrap();
        assert!(m.is_bounced());
        let mut got = [0u8; 2];
        d.iommu().read(m.dma_addr(), &mut got).unwrap();
        assert_eq!(&got, b"v1", "map copied memory to the bounce buffer");
        // CPU writes without a sync: the device still sees the old data.
        s[0].mem.map().write_at(0, b"v2").unwrap();
        d.iommu().read(m.dma_addr(), &mut got).unwrap();
        assert_eq!(&got, b"v1", "stale without sync_for_device");
        d.sync_for_device(&m).unwrap();
        d.iommu().read(m.dma_addr(), &mut got).unwrap();
        assert_eq!(&got, b"v2");
        // Device writes without a sync: the CPU still sees the old data.
        d.iommu().write(m.dma_addr() + 4096, b"dev").unwrap();
        assert_eq!(cpu_read(&s, 4096, 3), [0, 0, 0]);
        d.sync_for_cpu(&m).unwrap();
        assert_eq!(cpu_read(&s, 4096, 3), b"dev");
        // Unmap copies back too.
        d.iommu().write(m.dma_addr(), b"zz").unwrap();
        d.unmap(m).map_err(|e| e.0).unwrap();
        assert_eq!(cpu_read(&s, 0, 2), b"zz");
    }

    #[test]
    fn direction_limits_the_copies() {
        let d = Dma::new("nc", u32::MAX as u64, false).unwrap();
        let s = buffer(1);
        s[0].mem.map().write_at(0, b"in").unwrap();
        // FromDevice: the device may not read, its writes are copied out at unmap.
        let m = d.map(&s, Direction::FromDevice, "b").unwrap();
        assert!(
            d.iommu().read(m.dma_addr(), &mut [0u8; 2]).is_err(),
            "device may not read"
        );
        d.iommu().write(m.dma_addr() + 2, b"out").unwrap();
        d.unmap(m).map_err(|e| e.0).unwrap();
        // The bounce buffer started as a copy of memory: the bytes the device did not
        // write keep their value.
        assert_eq!(cpu_read(&s, 0, 5), b"inout");
        // ToDevice: device writes fault; unmap copies nothing back.
        let m = d.map(&s, Direction::ToDevice, "b").unwrap();
        assert!(d.iommu().write(m.dma_addr(), b"no").is_err());
        d.unmap(m).map_err(|e| e.0).unwrap();
        assert_eq!(cpu_read(&s, 0, 5), b"inout");
    }

    #[test]
    fn unmap_on_the_wrong_device_is_refused() {
        let a = Dma::new("a", u32::MAX as u64, true).unwrap();
        let b = Dma::new("b", u32::MAX as u64, true).unwrap();
        let s = buffer(1);
        let m = a.map(&s, Direction::ToDevice, "x").unwrap();
        let _other = b.map(&s, Direction::ToDevice, "y").unwrap();
        assert!(matches!(b.sync_for_cpu(&m), Err(Error::Invalid(_))));
        assert!(matches!(b.sync_for_device(&m), Err(Error::Invalid(_))));
        let (e, m) = b.unmap(m).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)));
        assert_eq!(b.iommu().mapping_count(), 1);
        assert_eq!(a.iommu().mapping_count(), 1);
        a.unmap(m).map_err(|e| e.0).unwrap();
        assert_eq!(a.iommu().mapping_count(), 0);
        assert!(matches!(
            a.map(&[], Direction::ToDevice, "x"),
            Err(Error::Invalid(_))
        ));
    }
}
