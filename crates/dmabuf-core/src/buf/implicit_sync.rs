//! Implicit sync on buffers: the sync-file ioctls (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`,
//! `IMPORT_SYNC_FILE`) and `poll` of the buffer's file descriptor.

use super::{must_not_hold_resv, DmaBuf};
use crate::error::{Error, Result};
use crate::fence::{self, Fence};
use crate::resv::Usage;
use std::time::Duration;

/// The implicit-sync request flags of `DMA_BUF_IOCTL_EXPORT_SYNC_FILE` and
/// `IMPORT_SYNC_FILE` and of [`DmaBuf::sync_ioctl`].
pub mod sync_flags {
    /// `DMA_BUF_SYNC_READ`.
    pub const READ: u64 = 1;
    /// `DMA_BUF_SYNC_WRITE`.
    pub const WRITE: u64 = 2;
    /// `DMA_BUF_SYNC_RW`.
    pub const RW: u64 = 3;
    /// `DMA_BUF_SYNC_START` (0).
    pub const START: u64 = 0;
    /// `DMA_BUF_SYNC_END`.
    pub const END: u64 = 4;
    /// Every valid bit of the SYNC ioctl.
    pub(crate) const VALID: u64 = RW | END;
}

impl DmaBuf {
    /// The fences an access would wait for, as one fence
    /// (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`): READ alone → the writers; WRITE → every
    /// implicit fence; none pending → a signalled stub. A snapshot: fences added later are
    /// not in it. Takes no lock (an unlocked read of the reservation object); any thread,
    /// with or without a reservation lock held.
    ///
    /// # Errors
    ///
    /// `Invalid` unless `flags` is a non-empty subset of READ|WRITE; what creating the
    /// fence array reports (`NoMem`) when several fences are pending.
    pub fn export_sync_fence(&self, flags: u64) -> Result<Fence> {
        if flags == 0 || flags & !sync_flags::RW != 0 {
            return Err(Error::Invalid(
                "flags must be a non-empty subset of READ|WRITE",
            ));
        }
        let usage = Usage::rw(flags & sync_flags::WRITE != 0);
        Ok(self
            .inner
            .resv
            .get_singleton(usage)?
            .unwrap_or_else(Fence::stub))
    }

    /// Add `fence` as an implicit-sync fence (`DMA_BUF_IOCTL_IMPORT_SYNC_FILE`): WRITE
    /// usage when WRITE is set, else READ; containers are unwrapped and each unsignalled
    /// leaf added.
    ///
    /// Must not hold a reservation lock: takes the buffer's.
    ///
    /// # Errors
    ///
    /// `Invalid` for bad flags, or (with a lockdep report) when this thread holds a
    /// reservation lock; `NoMem` when room for the fences cannot be reserved. Nothing is
    /// added on error.
    #[track_caller]
    pub fn import_sync_fence(&self, flags: u64, fence: &Fence) -> Result<()> {
        if flags == 0 || flags & !sync_flags::RW != 0 {
            return Err(Error::Invalid(
                "flags must be a non-empty subset of READ|WRITE",
            ));
        }
        must_not_hold_resv("DMA_BUF_IOCTL_IMPORT_SYNC_FILE")?;
        let usage = if flags & sync_flags::WRITE != 0 {
            Usage::Write
        } else {
            Usage::Read
        };
        let leaves: Vec<Fence> = fence::unwrap::unwrap(fence)
            .filter(|f| !f.is_signaled())
            .collect();
        if leaves.is_empty() {
            return Ok(());
        }
        let mut g = self.inner.resv.lock_no_ctx()?;
        g.reserve_fences(leaves.len())?;
        for f in &leaves {
            g.add_fence(f, usage)?;
        }
        Ok(())
    }

    /// `DMA_BUF_IOCTL_EXPORT_SYNC_FILE`: [`export_sync_fence`](Self::export_sync_fence)
    /// as a sync-file descriptor (close-on-exec). Takes no lock.
    ///
    /// # Errors
    ///
    /// Those of [`export_sync_fence`](Self::export_sync_fence); OS errors creating the
    /// descriptor (`EMFILE`…).
    pub fn export_sync_file(&self, flags: u64) -> Result<crate::sync_file::SyncFile> {
        crate::sync_file::SyncFile::new(self.export_sync_fence(flags)?)
    }

    /// `DMA_BUF_IOCTL_IMPORT_SYNC_FILE`: [`import_sync_fence`](Self::import_sync_fence) of
    /// the fence behind the sync-file descriptor `fd`. Must not hold a reservation lock.
    ///
    /// # Errors
    ///
    /// `Invalid` for bad flags or when `fd` is not a sync file; OS errors reading the
    /// descriptor; then those of [`import_sync_fence`](Self::import_sync_fence). Nothing
    /// is added on error.
    #[track_caller]
    pub fn import_sync_file(&self, flags: u64, fd: rustix::fd::BorrowedFd<'_>) -> Result<()> {
        if flags == 0 || flags & !sync_flags::RW != 0 {
            return Err(Error::Invalid(
                "flags must be a non-empty subset of READ|WRITE",
            ));
        }
        let fence = crate::sync_file::get_fence(fd)?;
        self.import_sync_fence(flags, &fence)
    }

    /// Poll readiness (the buffer fd's `poll`): `(readable, writable)` — readable when no
    /// KERNEL or WRITE fence is pending, writable when no KERNEL, WRITE or READ fence is.
    /// Bookkeeping fences never count. Takes no lock.
    pub fn poll(&self) -> (bool, bool) {
        let r = &self.inner.resv;
        (r.test_signaled(Usage::Write), r.test_signaled(Usage::Read))
    }

    /// Wait until [`poll`](Self::poll) reports `read` / `write` readiness, at most
    /// `timeout`. Returns the readiness at the end. Takes no lock; sleeps up to `timeout`.
    pub fn poll_wait(&self, read: bool, write: bool, timeout: Duration) -> (bool, bool) {
        let usage = if write { Usage::Read } else { Usage::Write };
        if read || write {
            let _ = self.inner.resv.wait_timeout(usage, timeout, None);
        }
        self.poll()
    }
}
