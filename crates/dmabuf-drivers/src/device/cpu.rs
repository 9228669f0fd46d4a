//! The CPU's side of a buffer, watched by the ownership tracker: a vmap whose reads and
//! writes are reported to the buffer's tracker ([`crate::debug::ownership`]), so that an
//! access outside begin/end CPU access is named where it happens.
//!
//! Begin and end CPU access are the buffer's own calls ([`DmaBuf::begin_cpu_access`],
//! [`DmaBuf::cpu_access`]): the core reports them to the tracker, and the exporter syncs
//! the device mappings (bounce buffers of non-coherent devices) there.

use crate::buf::{DmaBuf, VMapGuard};
use crate::error::Result;

/// A CPU mapping of a whole buffer whose accesses are reported to the buffer's tracker
/// (if it has one). Holds a buffer reference and a vmap (vunmapped on drop, taking the
/// reservation lock: do not drop it while holding one). Reads and writes take no lock;
/// bracketing them with CPU access is the caller's part, and the tracker's subject.
#[must_use = "dropping a CpuView vunmaps the buffer at once"]
pub struct CpuView {
    buf: DmaBuf,
    map: VMapGuard,
}

impl std::fmt::Debug for CpuView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuView").field("buf", &self.buf).finish()
    }
}

impl CpuView {
    /// Map `buf` for the CPU ([`DmaBuf::vmap_unlocked`]); takes and releases the
    /// buffer's reservation lock, so the caller must not hold a reservation lock.
    ///
    /// # Errors
    ///
    /// Those of the unlocked vmap: `Invalid` when the exporter has no vmap or this
    /// thread holds a reservation lock; the exporter's and the mapping's errors
    /// (`NoMem`, `Os`). Nothing stays mapped on error.
    #[track_caller]
    pub fn new(buf: &DmaBuf) -> Result<CpuView> {
        Ok(CpuView {
            buf: buf.clone(),
            map: buf.vmap_unlocked()?,
        })
    }

    /// The buffer.
    pub fn buf(&self) -> &DmaBuf {
        &self.buf
    }

    /// Copy bytes at `offset` into `out`; reported to the tracker as a CPU read.
    ///
    /// # Errors
    ///
    /// `Invalid` past the end, `Overflow` when the range wraps; nothing copied
    /// and nothing reported.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.map.read_at(offset, out)?;
        if let Some(t) = self.buf.tracker() {
            t.cpu_access(self.buf.ino(), false);
        }
        Ok(())
    }

    /// Read `len` bytes at `offset`; as [`read_at`](Self::read_at).
    ///
    /// # Errors
    ///
    /// As [`read_at`](Self::read_at).
    pub fn read_vec(&self, offset: usize, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.read_at(offset, &mut v)?;
        Ok(v)
    }

    /// Copy `data` to `offset`; reported to the tracker as a CPU write.
    ///
    /// # Errors
    ///
    /// As [`read_at`](Self::read_at); nothing written, nothing reported.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.map.write_at(offset, data)?;
        if let Some(t) = self.buf.tracker() {
            t.cpu_access(self.buf.ino(), true);
        }
        Ok(())
    }

    /// Fill the whole buffer with `value`; a CPU write.
    ///
    /// # Errors
    ///
    /// None in practice: the range is the whole buffer.
    pub fn fill(&self, value: u8) -> Result<()> {
        self.write_at(0, &vec![value; self.map.len()])
    }

    /// The [`checksum`](super::job::checksum) of the whole buffer as the CPU sees it; a
    /// CPU read.
    ///
    /// # Errors
    ///
    /// None in practice: the range is the whole buffer.
    pub fn checksum(&self) -> Result<u64> {
        Ok(super::job::checksum(&self.read_vec(0, self.map.len())?))
    }
}
