//! A simulated IOMMU: each device sees buffers only through the I/O virtual address
//! (IOVA) ranges it mapped, and any access outside a live mapping — or against the
//! mapping's direction — is a fault, recorded with the device, the address and the
//! buffer, and returned to the caller as `Error::Fault`.
//!
//! Mapping a scatter-gather list allocates one contiguous IOVA range (page-granular, from
//! a buddy allocator over the device's addressable space, bounded by its DMA mask) and
//! places the segments in it back to back, as an IOMMU that merges a table into one
//! device-contiguous range does. IOVA 0 is never handed out.

use crate::buddy::Buddy;
use crate::error::{Error, Result};
use crate::memfd::page_size;
use crate::sg::SgEntry;
use crate::{Direction, Segment, SgTable};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt;

/// Addressable space is capped at 2^40 bytes whatever the mask says (plenty, and keeps
/// the allocator's page counts small).
const MAX_SPACE: u64 = 1 << 40;

/// Why an access faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultReason {
    /// No live mapping contains the address.
    Unmapped,
    /// The access runs past the end of the mapping it starts in.
    PastEnd,
    /// A read of a mapping the device may only write, or the reverse.
    Direction,
}

/// A recorded IOMMU fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The device that faulted.
    pub device: String,
    /// The first address of the access.
    pub iova: u64,
    /// Its length in bytes.
    pub len: usize,
    /// Whether it was a write.
    pub write: bool,
    /// Why it faulted.
    pub reason: FaultReason,
    /// The label of the mapping involved (the buffer), if the address fell in one.
    pub buffer: Option<String>,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: IOMMU fault: {} of {} bytes at iova {:#x} ({:?}), buffer {}",
            self.device,
            if self.write { "write" } else { "read" },
            self.len,
            self.iova,
            self.reason,
            self.buffer.as_deref().unwrap_or("<none>")
        )
    }
}

struct IoMap {
    len: usize,
    dir: Direction,
    label: String,
    entries: Vec<SgEntry>,
}

struct State {
    space: Buddy,
    maps: BTreeMap<u64, IoMap>,
    faults: Vec<Fault>,
}

/// A device's IOMMU: its IOVA space, its live mappings and its fault record.
///
/// Mappings are normally made and removed through the device's
/// [`Dma`](crate::dma::Dma), which bounces for non-coherent devices; [`map`](Self::map)
/// and [`unmap`](Self::unmap) here are the raw IOMMU, with no bounce buffer. The
/// device's side is [`read`](Self::read) and [`write`](Self::write) at device
/// addresses, checked against the live mappings, and the fault record. Lock: one mutex over the state, a leaf held for one map, unmap, translation
/// or fault record; device accesses copy memory after dropping it.
pub struct Iommu {
    device: String,
    dma_mask: u64,
    state: Mutex<State>,
}

impl fmt::Debug for Iommu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iommu")
            .field("device", &self.device)
            .field("dma_mask", &format_args!("{:#x}", self.dma_mask))
            .finish()
    }
}

impl Iommu {
    /// An IOMMU for `device` addressing `0..=dma_mask`.
    ///
    /// # Errors
    ///
    /// `Invalid` when the mask covers less than two pages.
    pub(crate) fn new(device: &str, dma_mask: u64) -> Result<Self> {
        let p = page_size() as u64;
        let space = dma_mask.saturating_add(1).min(MAX_SPACE) / p;
        if space < 2 {
            return Err(Error::Invalid("DMA mask smaller than two pages"));
        }
        let mut buddy = Buddy::new(space as usize);
        // Reserve IOVA 0 so no mapping starts at the null device address.
        let zero = buddy.alloc(1)?;
        debug_assert_eq!(zero, 0);
        Ok(Iommu {
            device: device.to_string(),
            dma_mask,
            state: Mutex::new(State {
                space: buddy,
                maps: BTreeMap::new(),
                faults: Vec::new(),
            }),
        })
    }

    /// The device name.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The DMA mask.
    pub fn dma_mask(&self) -> u64 {
        self.dma_mask
    }

    /// Map `segments` for `dir` as one contiguous IOVA range; `label` names the buffer in
    /// fault reports. Returns the table with each entry's device address; the range
    /// stays mapped until [`unmap`](Self::unmap) is given the first entry's address
    /// (dropping the table does not unmap it).
    ///
    /// # Errors
    ///
    /// `Invalid` for an empty list; `NoMem` when the IOVA space has no room; an injected
    /// [`IommuMap`](crate::fault::Site::IommuMap) fault. Nothing is mapped on error.
    pub fn map(&self, segments: &[Segment], dir: Direction, label: &str) -> Result<SgTable> {
        if segments.is_empty() {
            return Err(Error::Invalid("empty scatter-gather list"));
        }
        crate::fault::check(crate::fault::Site::IommuMap)?;
        let p = page_size();
        let len: usize = segments.iter().map(|s| s.len).sum();
        let mut st = self.state.lock();
        let first = st.space.alloc(len / p)?;
        let base = (first * p) as u64;
        let mut at = base;
        let entries: Vec<SgEntry> = segments
            .iter()
            .map(|s| {
                let e = SgEntry {
                    segment: s.clone(),
                    dma_addr: at,
                };
                at += s.len as u64;
                e
            })
            .collect();
        st.maps.insert(
            base,
            IoMap {
                len,
                dir,
                label: label.to_string(),
                entries: entries.clone(),
            },
        );
        Ok(SgTable::new(entries))
    }

    /// Unmap the range that starts at `iova` (the first entry's address of a table this
    /// IOMMU returned).
    ///
    /// # Errors
    ///
    /// `Invalid` if no mapping starts there; nothing changes.
    pub fn unmap(&self, iova: u64) -> Result<()> {
        let p = page_size() as u64;
        let mut st = self.state.lock();
        if st.maps.remove(&iova).is_none() {
            return Err(Error::Invalid("unmap of an address that starts no mapping"));
        }
        st.space.free((iova / p) as usize)?;
        Ok(())
    }

    /// Number of live mappings.
    pub fn mapping_count(&self) -> usize {
        self.state.lock().maps.len()
    }

    /// Find the mapping containing `[iova, iova+len)` and check the access, recording
    /// a fault on failure. Returns the pieces `(segment, offset in segment, len)`.
    fn translate(
        &self,
        iova: u64,
        len: usize,
        write: bool,
    ) -> Result<Vec<(Segment, usize, usize)>> {
        let mut st = self.state.lock();
        let found = st
            .maps
            .range(..=iova)
            .next_back()
            .and_then(|(&base, m)| (iova < base + m.len as u64).then_some((base, m)));
        let (reason, buffer) = match found {
            None => (FaultReason::Unmapped, None),
            Some((base, m)) => {
                let end = (iova - base).checked_add(len as u64);
                if end.is_none_or(|e| e > m.len as u64) {
                    (FaultReason::PastEnd, Some(m.label.clone()))
                } else if (write && !m.dir.device_writes()) || (!write && !m.dir.device_reads()) {
                    (FaultReason::Direction, Some(m.label.clone()))
                } else {
                    let mut out = Vec::new();
                    let (mut at, mut left) = (iova, len);
                    for e in &m.entries {
                        let e_end = e.dma_addr + e.segment.len as u64;
                        if left == 0 {
                            break;
                        }
                        if at >= e_end {
                            continue;
                        }
                        let off = (at - e.dma_addr) as usize;
                        let n = left.min(e.segment.len - off);
                        out.push((e.segment.clone(), off, n));
                        at += n as u64;
                        left -= n;
                    }
                    return Ok(out);
                }
            }
        };
        let fault = Fault {
            device: self.device.clone(),
            iova,
            len,
            write,
            reason,
            buffer,
        };
        tracing::warn!("{fault}");
        if dmabuf_sync::trace::enabled() {
            dmabuf_sync::trace::instant(
                dmabuf_sync::trace::Track::Thread,
                "IOMMU fault",
                "error",
                dmabuf_sync::fence::ktime_now(),
                vec![("fault", fault.to_string())],
            );
        }
        st.faults.push(fault);
        Err(Error::Fault("IOMMU fault"))
    }

    /// A device read of `buf.len()` bytes at `iova`.
    ///
    /// # Errors
    ///
    /// `Fault` (recorded, see [`faults`](Self::faults)) when the range is not inside one
    /// live mapping the device may read; `buf` is then untouched.
    pub fn read(&self, iova: u64, buf: &mut [u8]) -> Result<()> {
        let pieces = self.translate(iova, buf.len(), false)?;
        let mut done = 0;
        for (seg, off, n) in pieces {
            seg.mem
                .map()
                .read_at(seg.offset + off, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// A device write of `data` at `iova`.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read), for a range the device may write; memory is then
    /// untouched.
    pub fn write(&self, iova: u64, data: &[u8]) -> Result<()> {
        let pieces = self.translate(iova, data.len(), true)?;
        let mut done = 0;
        for (seg, off, n) in pieces {
            seg.mem
                .map()
                .write_at(seg.offset + off, &data[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// The faults recorded so far, oldest first.
    pub fn faults(&self) -> Vec<Fault> {
        self.state.lock().faults.clone()
    }

    /// The faults recorded so far; the record is emptied.
    pub fn take_faults(&self) -> Vec<Fault> {
        std::mem::take(&mut self.state.lock().faults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memfd::Memfd;
    use std::sync::Arc;

    fn segs(pages: &[usize]) -> Vec<Segment> {
        let p = page_size();
        pages
            .iter()
            .map(|&n| {
                let m = Arc::new(Memfd::create("seg", n, false).unwrap());
                Segment::new(m, 0, n * p).unwrap()
            })
            .collect()
    }

    #[test]
    fn map_places_segments_back_to_back_and_never_at_zero() {
        let io = Iommu::new("dev0", u32::MAX as u64).unwrap();
        let s = segs(&[1, 2, 1]);
        let t = io.map(&s, Direction::Bidirectional, "buf1").unwrap();
        let p = page_size() as u64;
        assert_eq!(t.len(), 3);
        assert_ne!(t.entries()[0].dma_addr, 0);
        assert_eq!(t.entries()[1].dma_addr, t.entries()[0].dma_addr + p);
        assert_eq!(t.entries()[2].dma_addr, t.entries()[0].dma_addr + 3 * p);
        assert_eq!(t.total_len(), 4 * p as usize);
        // A write spanning segments lands in each memfd.
        let base = t.entries()[0].dma_addr;
        let data: Vec<u8> = (0..(2 * p as usize)).map(|i| i as u8).collect();
        io.write(base + p / 2, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        io.read(base + p / 2, &mut back).unwrap();
        assert_eq!(back, data);
        let mut first = vec![0u8; p as usize / 2];
        s[0].mem.map().read_at(p as usize / 2, &mut first).unwrap();
        assert_eq!(&first[..], &data[..p as usize / 2]);
        assert!(io.faults().is_empty());
    }

    #[test]
    fn accesses_outside_mappings_fault_with_details() {
        let io = Iommu::new("dev1", u32::MAX as u64).unwrap();
        let s = segs(&[1]);
        let t = io.map(&s, Direction::ToDevice, "frame7").unwrap();
        let base = t.entries()[0].dma_addr;
        let p = page_size();
        let mut b = [0xEEu8; 8];
        // Unmapped address.
        assert!(matches!(
            io.read(base + 10 * p as u64, &mut b),
            Err(Error::Fault(_))
        ));
        // Runs past the end.
        assert!(matches!(
            io.read(base + p as u64 - 4, &mut b),
            Err(Error::Fault(_))
        ));
        // ToDevice: the device may read, not write.
        assert!(matches!(io.write(base, &b), Err(Error::Fault(_))));
        assert_eq!(b, [0xEE; 8], "a faulting read leaves the buffer alone");
        let f = io.take_faults();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].reason, FaultReason::Unmapped);
        assert_eq!(f[0].buffer, None);
        assert_eq!(f[1].reason, FaultReason::PastEnd);
        assert_eq!(f[1].buffer.as_deref(), Some("frame7"));
        assert_eq!(f[2].reason, FaultReason::Direction);
        assert!(f[2].write);
        assert!(f[2].to_string().contains("dev1"));
        assert!(f[2].to_string().contains("frame7"));
        // After unmap, the old address faults too.
        io.unmap(base).unwrap();
        assert!(io.read(base, &mut b).is_err());
        assert_eq!(io.take_faults()[0].reason, FaultReason::Unmapped);
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(matches!(Iommu::new("d", 0), Err(Error::Invalid(_))));
        let io = Iommu::new("d", u32::MAX as u64).unwrap();
        assert!(matches!(
            io.map(&[], Direction::ToDevice, "x"),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(io.unmap(12345), Err(Error::Invalid(_))));
        let t = io.map(&segs(&[1]), Direction::ToDevice, "x").unwrap();
        let base = t.entries()[0].dma_addr;
        assert!(matches!(io.unmap(base + 1), Err(Error::Invalid(_))));
        assert_eq!(io.mapping_count(), 1);
        io.unmap(base).unwrap();
        assert!(matches!(io.unmap(base), Err(Error::Invalid(_))));
        assert_eq!(io.mapping_count(), 0);
        let m = Arc::new(Memfd::create("s", 1, false).unwrap());
        assert!(matches!(
            Segment::new(m.clone(), 1, page_size()),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            Segment::new(m.clone(), 0, 0),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            Segment::new(m, page_size(), page_size()),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn dma_mask_bounds_the_space() {
        let p = page_size() as u64;
        // Room for 3 pages beyond the reserved zero page.
        let io = Iommu::new("small", 4 * p - 1).unwrap();
        let t = io.map(&segs(&[2]), Direction::FromDevice, "a").unwrap();
        assert!(t.entries()[0].dma_addr + 2 * p <= 4 * p);
        assert!(matches!(
            io.map(&segs(&[2]), Direction::FromDevice, "b"),
            Err(Error::NoMem)
        ));
        assert_eq!(io.mapping_count(), 1);
        let u = io.map(&segs(&[1]), Direction::FromDevice, "c").unwrap();
        assert!(u.entries()[0].dma_addr <= 4 * p - p);
    }
}
