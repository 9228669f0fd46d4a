//! CPU access to a buffer: begin/end CPU access (`DMA_BUF_IOCTL_SYNC`) and its guard.

use super::implicit_sync::sync_flags;
use super::{must_not_hold_resv, Direction, DmaBuf};
use crate::error::{Error, Result};
use crate::interrupt::Interrupt;
use crate::resv::Usage;
use std::time::Duration;

impl DmaBuf {
    /// Prepare CPU access in `dir` (`dma_buf_begin_cpu_access`): the exporter's hook,
    /// then a wait — no timeout — for the implicit fences the access must follow
    /// (writers for a read; everyone but bookkeeping for a write). Once both succeeded,
    /// the buffer's ownership tracker (if any) records that the CPU owns the buffer.
    ///
    /// Must not hold a reservation lock.
    ///
    /// # Errors
    ///
    /// The exporter's, `Invalid` (with a lockdep report) when called holding a reservation
    /// lock.
    #[track_caller]
    pub fn begin_cpu_access(&self, dir: Direction) -> Result<()> {
        self.begin_cpu_access_inner(dir, None)
    }

    /// [`begin_cpu_access`](Self::begin_cpu_access), interruptibly.
    ///
    /// Must not hold a reservation lock.
    ///
    /// # Errors
    ///
    /// Those of [`begin_cpu_access`](Self::begin_cpu_access), and `Interrupted` (the
    /// kernel's `-ERESTARTSYS`) when `intr` fires during the wait; the exporter hook has
    /// run then and is not undone, as in the kernel.
    #[track_caller]
    pub fn begin_cpu_access_interruptible(&self, dir: Direction, intr: &Interrupt) -> Result<()> {
        self.begin_cpu_access_inner(dir, Some(intr))
    }

    #[track_caller]
    fn begin_cpu_access_inner(&self, dir: Direction, intr: Option<&Interrupt>) -> Result<()> {
        must_not_hold_resv("dma_buf_begin_cpu_access")?;
        self.inner.ops.begin_cpu_access(self, dir)?;
        let usage = Usage::rw(dir.is_write_for_implicit_sync());
        self.inner.resv.wait_timeout(usage, Duration::MAX, intr)?;
        if let Some(t) = self.inner.tracker.get() {
            t.begin_cpu_access(self.inner.ino, dir);
        }
        Ok(())
    }

    /// End CPU access in `dir` (`dma_buf_end_cpu_access`): the exporter's hook; then the
    /// ownership tracker (if any) records the end, whatever the hook returned.
    ///
    /// Must not hold a reservation lock.
    ///
    /// # Errors
    ///
    /// The exporter's; `Invalid` as above.
    #[track_caller]
    pub fn end_cpu_access(&self, dir: Direction) -> Result<()> {
        must_not_hold_resv("dma_buf_end_cpu_access")?;
        let r = self.inner.ops.end_cpu_access(self, dir);
        if let Some(t) = self.inner.tracker.get() {
            t.end_cpu_access(self.inner.ino, dir);
        }
        r
    }

    /// Begin CPU access and end it when the returned guard drops.
    ///
    /// # Errors
    ///
    /// Those of [`begin_cpu_access`](Self::begin_cpu_access).
    #[track_caller]
    #[must_use = "the CPU access ends when the returned guard drops"]
    pub fn cpu_access(&self, dir: Direction) -> Result<CpuAccess> {
        self.begin_cpu_access(dir)?;
        Ok(CpuAccess {
            buf: self.clone(),
            dir,
            ended: false,
        })
    }

    /// `DMA_BUF_IOCTL_SYNC`: `flags` = READ/WRITE bits, plus END to end (else start).
    ///
    /// # Errors
    ///
    /// `Invalid` for bits outside READ|WRITE|END or no READ/WRITE bit; then those of begin/end
    /// CPU access.
    #[track_caller]
    pub fn sync_ioctl(&self, flags: u64) -> Result<()> {
        if flags & !sync_flags::VALID != 0 {
            return Err(Error::Invalid("unknown DMA_BUF_SYNC flags"));
        }
        let dir = Direction::from_rw(
            flags & sync_flags::READ != 0,
            flags & sync_flags::WRITE != 0,
        )?;
        if flags & sync_flags::END != 0 {
            self.end_cpu_access(dir)
        } else {
            self.begin_cpu_access(dir)
        }
    }
}

/// Begun CPU access, ended when dropped (or by [`CpuAccess::end`]).
#[must_use = "dropping the guard ends the CPU access at once"]
pub struct CpuAccess {
    buf: DmaBuf,
    dir: Direction,
    ended: bool,
}

impl CpuAccess {
    /// The direction.
    pub fn direction(&self) -> Direction {
        self.dir
    }

    /// End the access now (see [`DmaBuf::end_cpu_access`]).
    ///
    /// # Errors
    ///
    /// Those of [`DmaBuf::end_cpu_access`]: the exporter's, or `Invalid` when this thread
    /// holds a reservation lock. The access counts as ended either way (the drop does not
    /// end it again).
    pub fn end(mut self) -> Result<()> {
        self.ended = true;
        self.buf.end_cpu_access(self.dir)
    }
}

impl Drop for CpuAccess {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.buf.end_cpu_access(self.dir);
        }
    }
}
