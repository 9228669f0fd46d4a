//! The locked view of a buffer: the calls that need its reservation lock.

use super::{Attachment, Direction, DmaBuf, SgMapping, VMap};
use crate::error::{Error, Result};
use crate::resv::ResvGuard;

/// A buffer together with its reservation object's guard: the buffer's *locked view*, on
/// which every importer/exporter call that needs the reservation lock is a method
/// (`map`, `unmap`, `pin`, `unpin`, `vmap`, `vunmap`, `move_notify`, the attachment list),
/// as the guard ([`ResvGuard`]) is the reservation object's locked view. Made once by
/// [`DmaBuf::locked`], which checks that the guard locks this buffer's reservation
/// object; the calls then check only what is theirs (the attachment belongs to this
/// buffer, and so on).
///
/// It borrows the guard mutably and dereferences to it, so fences are added through the
/// view too (`view.reserve_fences(1)?; view.add_fence(&f, Usage::Write)?`). It cannot
/// outlive the guard, so it cannot outlive the lock: every method runs with the lock held.
///
/// Mappings ([`SgMapping`]) and vmaps ([`VMap`]) made through the view do not borrow it;
/// unmap them through a view (of this lock hold or a later one), or drop them (an
/// `SgMapping` then unmaps itself, taking the lock; see there).
#[must_use = "a locked view does nothing unless its methods are called"]
pub struct LockedBuf<'a, 'g> {
    buf: &'a DmaBuf,
    guard: &'a mut ResvGuard<'g>,
}

impl std::fmt::Debug for LockedBuf<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockedBuf")
            .field("buf", &self.buf.ino())
            .field("resv", &self.guard.resv().id())
            .finish()
    }
}

impl DmaBuf {
    /// The locked view of this buffer, from the guard of its reservation object (taken
    /// with [`Resv::lock`](crate::resv::Resv::lock) and friends on
    /// [`resv`](Self::resv)): the calls that need the lock are its methods. The guard
    /// is checked here, once.
    ///
    /// # Errors
    ///
    /// `Invalid` (`EINVAL`) when `guard` locks another reservation object than this
    /// buffer's; nothing changes.
    #[inline]
    #[must_use = "the locked view is the only way to the calls that need the lock"]
    pub fn locked<'a, 'g>(&'a self, guard: &'a mut ResvGuard<'g>) -> Result<LockedBuf<'a, 'g>> {
        self.check_lock(guard)?;
        Ok(LockedBuf { buf: self, guard })
    }
}

impl<'a, 'g> LockedBuf<'a, 'g> {
    /// The buffer.
    pub fn buf(&self) -> &'a DmaBuf {
        self.buf
    }

    /// Refuse an attachment of another buffer.
    #[inline]
    fn own(&self, att: &Attachment) -> Result<()> {
        if DmaBuf::ptr_eq(att.buf(), self.buf) {
            Ok(())
        } else {
            Err(Error::Invalid("attachment of another buffer"))
        }
    }

    /// Map the buffer for `att`'s device in `dir` (`dma_buf_map_attachment`). A cached
    /// mapping is returned when its direction covers `dir`. A dynamic exporter is pinned
    /// for a static importer first; a static importer waits (no timeout) for the KERNEL
    /// fences — moves and clears — before it gets the table; a dynamic importer must wait
    /// itself. A new mapping is reported to the buffer's ownership tracker, if any (a
    /// cached one once, when it is made).
    ///
    /// # Errors
    ///
    /// `Invalid` when `att` is an attachment of another buffer, detached, being detached
    /// ([`Attachment::is_detach_pending`]) or not attached yet (inside the exporter's
    /// attach); `Busy` when a cached mapping's direction does not cover `dir`; the
    /// exporter's errors, and `Interrupted` from the fence wait (nothing stays mapped or
    /// pinned then).
    #[inline]
    #[must_use = "the mapping is unmapped when it drops"]
    pub fn map(&self, att: &Attachment, dir: Direction) -> Result<SgMapping> {
        self.own(att)?;
        att.map_locked(self.guard, dir)
    }

    /// Unmap `m`, a mapping made through `att` (`dma_buf_unmap_attachment`): the unmap is
    /// reported to the buffer's ownership tracker, if any; then the exporter's unmap, then
    /// the unpin the map did. Unmapping a cached mapping does nothing (it is unmapped,
    /// and reported, at detach).
    ///
    /// The unmap of the last mapping of an attachment whose guard was dropped completes
    /// its detach: unlisted and the cached mapping unmapped here, the exporter's detach on
    /// a helper thread (it must run unlocked, and the caller holds the lock).
    ///
    /// # Errors
    ///
    /// `Invalid` when `att` is an attachment of another buffer or `m` a mapping of another
    /// attachment; the mapping is handed back then, still mapped.
    #[inline]
    pub fn unmap(
        &self,
        att: &Attachment,
        m: SgMapping,
    ) -> std::result::Result<(), (Error, SgMapping)> {
        if let Err(e) = self.own(att) {
            return Err((e, m));
        }
        att.unmap_locked(self.guard, m)
    }

    /// Pin the memory in place for `att` (`dma_buf_pin`): dynamic importers only; the
    /// exporter's pin when it is dynamic. Pins are counted.
    ///
    /// # Errors
    ///
    /// `Invalid` for a static importer, or an attachment of another buffer, detached,
    /// being detached or not attached yet; the exporter's errors. Nothing changes then.
    pub fn pin(&self, att: &Attachment) -> Result<()> {
        self.own(att)?;
        att.pin_locked(self.guard)
    }

    /// Undo one [`pin`](Self::pin) of `att` (`dma_buf_unpin`).
    ///
    /// # Errors
    ///
    /// `Invalid` as for [`pin`](Self::pin), or when `att` is not pinned; nothing changes.
    pub fn unpin(&self, att: &Attachment) -> Result<()> {
        self.own(att)?;
        att.unpin_locked(self.guard)
    }

    /// A CPU mapping of the whole buffer, reference-counted (`dma_buf_vmap`): the first
    /// caller gets it from the exporter, later callers share it. Give it back with
    /// [`vunmap`](Self::vunmap) (the count is not dropped with the [`VMap`]);
    /// [`DmaBuf::vmap_unlocked`] returns a guard that does.
    ///
    /// # Errors
    ///
    /// `Invalid` when the exporter has no vmap; an injected fault's error (the `Vmap`
    /// site of `fault`: `NoMem` for `ENOMEM`); the exporter's errors. Nothing is mapped
    /// then.
    #[must_use = "the vmap reference must be given back with vunmap"]
    pub fn vmap(&self) -> Result<VMap> {
        self.buf.vmap_locked(self.guard)
    }

    /// Drop one vmap reference (`dma_buf_vunmap`); the last calls the exporter's vunmap.
    ///
    /// # Errors
    ///
    /// `Invalid` when nothing is mapped or `map` is not the current mapping (the kernel's
    /// fatal checks); nothing changes.
    pub fn vunmap(&self, map: VMap) -> Result<()> {
        self.buf.settle_owed(self.guard);
        self.buf.vunmap_locked(self.guard, map)
    }

    /// Tell every dynamic importer that the memory is moving (`dma_buf_move_notify`):
    /// each attachment's [`Importer::move_notify`](super::Importer::move_notify), in
    /// attach order. The exporter calls it, holding the lock, before it moves the memory.
    pub fn move_notify(&self) {
        self.buf.move_notify_locked(self.guard);
    }

    /// The attachments, in attach order (the list the reservation lock protects).
    pub fn attachments(&self) -> Vec<Attachment> {
        self.buf.attachments_locked(self.guard)
    }
}

/// The view is the guard too: the reservation object's locked calls (add a fence,
/// reserve room, list fences) are reached through it.
impl<'g> std::ops::Deref for LockedBuf<'_, 'g> {
    type Target = ResvGuard<'g>;
    fn deref(&self) -> &ResvGuard<'g> {
        self.guard
    }
}

impl<'g> std::ops::DerefMut for LockedBuf<'_, 'g> {
    fn deref_mut(&mut self) -> &mut ResvGuard<'g> {
        self.guard
    }
}
