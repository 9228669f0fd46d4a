//! Mappings of an attachment: map/unmap under the reservation lock (through
//! [`LockedBuf`](super::LockedBuf)) or taking it (`_unlocked`), pin/unpin, the mapping
//! cache, and the unmaps deferred by mappings dropped under a reservation lock.
//!
//! When importer and exporter disagree on being dynamic, the buffer is mapped
//! BIDIRECTIONAL at attach under the reservation lock (pinned first for a dynamic
//! exporter, so a static importer keeps it pinned for the attachment's life) and that
//! mapping is cached: later maps of a compatible direction return it, others fail with
//! `Busy` — the ≤6.14 rule this project follows. With the exporter's
//! `cache_sgt_mapping`, the first map is cached likewise.

use super::attach::defer_to_thread;
use super::dmabuf::must_not_hold_resv;
use super::{Attachment, Direction, SgTable};
use crate::error::{Error, Result};
use crate::resv::{ResvGuard, Usage, RESERVATION_WW_CLASS};
use std::mem::ManuallyDrop;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The state of a mapping whose unmap was deferred (see [`SgMapping`]'s drop).
pub(super) struct OwedUnmap {
    pub(super) table: SgTable,
    pub(super) dir: Direction,
    pub(super) cached: bool,
    pub(super) pinned: bool,
}

impl Attachment {
    pub(super) fn track_mapped(&self, table: &SgTable, dir: Direction) {
        if let Some(t) = self.inner.buf.tracker() {
            t.mapped(
                self.inner.buf.ino(),
                self.mapping_key(table),
                self.inner.dev.name(),
                dir,
            );
        }
    }

    pub(super) fn track_unmapped(&self, table: &SgTable) {
        if let Some(t) = self.inner.buf.tracker() {
            t.unmapped(self.inner.buf.ino(), self.mapping_key(table));
        }
    }

    /// Whether a mapping is cached (made at attach, or the first with
    /// `cache_sgt_mapping`).
    pub fn has_cached_mapping(&self) -> bool {
        self.inner.has_cache.load(Ordering::Acquire)
    }

    /// Adjust the live-mapping count. Only called with the buffer's reservation lock held
    /// (map and unmap need it), so a plain load and store suffice: no read-modify-write.
    pub(super) fn count_maps(&self, delta: isize) {
        let n = self.inner.live_maps.load(Ordering::Relaxed);
        self.inner
            .live_maps
            .store(n.saturating_add_signed(delta), Ordering::Relaxed);
    }

    /// Settle the unmaps owed by mappings dropped while their thread held a reservation
    /// lock; `lock` is this buffer's guard (checked by the caller). One atomic load when
    /// nothing is owed.
    #[inline]
    pub(super) fn settle(&self, lock: &ResvGuard<'_>) {
        if self.inner.has_owed.load(Ordering::Acquire) {
            if let Some(done) = self.settle_slow(lock) {
                // The caller holds the lock; the exporter's detach must run unlocked.
                done.detach_callback_elsewhere();
            }
        }
    }

    /// The owed unmaps; then, if that unmapped the last mapping of an attachment whose
    /// guard was dropped, its detach under the lock: the handle returned still needs the
    /// exporter's detach, unlocked.
    #[cold]
    pub(super) fn settle_slow(&self, lock: &ResvGuard<'_>) -> Option<Attachment> {
        let owed = {
            let mut l = self.inner.locked.lock();
            self.inner.has_owed.store(false, Ordering::SeqCst);
            std::mem::take(&mut l.owed)
        };
        for o in owed {
            self.finish_unmap(lock, o.table, o.dir, o.cached, o.pinned);
        }
        self.complete_if_pending(lock)
    }

    /// Record the unmap of a mapping dropped while this thread holds a reservation lock,
    /// for the next locked call to settle. When the attachment's guard is gone (detach
    /// pending), nothing may ever make that call: a helper thread settles it as soon as
    /// the lock is free, and completes the detach.
    pub(super) fn defer_unmap(&self, o: OwedUnmap) {
        let pending = {
            let mut l = self.inner.locked.lock();
            l.owed.push(o);
            self.inner.has_owed.store(true, Ordering::SeqCst);
            // Read with `locked` held, as the drop of the guard sets it: either it took
            // this unmap with the others, or this sees the flag.
            self.inner.detach_pending.load(Ordering::Relaxed)
        };
        self.inner.buf.note_owed();
        if pending {
            let att = self.clone();
            defer_to_thread("settling of a deferred unmap", move || {
                // A helper thread holds no lock: the lock is refused only for its holder.
                let Ok(g) = att.inner.buf.resv().lock_no_ctx() else {
                    tracing::error!("deferred unmap: the reservation lock was refused");
                    return;
                };
                let done = att.settle_slow(&g);
                drop(g);
                if let Some(done) = done {
                    done.detach_callback();
                }
            });
        }
    }

    /// The unmap proper, lock held: the live count, then (unless cached) the tracker, the
    /// exporter's unmap and the unpin the map did.
    pub(super) fn finish_unmap(
        &self,
        lock: &ResvGuard<'_>,
        table: SgTable,
        dir: Direction,
        cached: bool,
        pinned: bool,
    ) {
        self.count_maps(-1);
        if !cached {
            self.track_unmapped(&table);
            let ops = self.inner.buf.exporter();
            ops.unmap(lock, self, table, dir);
            if pinned {
                ops.unpin(lock, self);
            }
        }
    }

    /// A handle to this attachment that owns no reference count, for a mapping made
    /// through it (no atomic read-modify-write on the map/unmap path). Only for
    /// [`SgMapping`], whose type invariant keeps the attachment alive: see there.
    pub(super) fn uncounted(&self) -> ManuallyDrop<Attachment> {
        // SAFETY: `Arc::as_ptr` of a live `Arc` is a pointer `Arc::from_raw` accepts. The
        // `Arc` made here does not own a count of its own and is never dropped (it stays
        // in `ManuallyDrop`, and nothing takes it out), so the counts stay balanced; it is
        // used only while the allocation is alive, which `SgMapping`'s invariant
        // guarantees.
        let inner = unsafe { Arc::from_raw(Arc::as_ptr(&self.inner)) };
        ManuallyDrop::new(Attachment { inner })
    }

    /// Whether the attachment may be mapped or pinned now. `lock` is its buffer's guard
    /// (checked once, when the [`LockedBuf`](super::LockedBuf) was made).
    #[inline]
    pub(super) fn check(&self, lock: &ResvGuard<'_>) -> Result<()> {
        debug_assert!(self.inner.buf.check_lock(lock).is_ok());
        if self.is_detached() {
            return Err(Error::Invalid("attachment is detached"));
        }
        if self.inner.detach_pending.load(Ordering::Relaxed) {
            // Its guard was dropped with live mappings: only unmaps are left to do.
            return Err(Error::Invalid("attachment is being detached"));
        }
        if !self.inner.listed.load(Ordering::Acquire) {
            // The exporter's attach callback is running, or failed: not attached yet.
            return Err(Error::Invalid("attachment is not attached yet"));
        }
        Ok(())
    }

    /// For a static importer: wait, with no timeout, for the KERNEL fences (the
    /// exporter's moves and clears); a dynamic importer waits itself. Lock held.
    pub(super) fn wait_kernel_fences(&self, lock: &ResvGuard<'_>) -> Result<()> {
        if self.is_dynamic() {
            return Ok(());
        }
        crate::fence::might_wait();
        if lock.has_unsignalled(Usage::Kernel) {
            self.inner
                .buf
                .resv()
                .wait_timeout(Usage::Kernel, Duration::MAX, None)?;
        }
        Ok(())
    }

    pub(super) fn map_at_attach(&self, lock: &ResvGuard<'_>) -> Result<()> {
        let buf = &self.inner.buf;
        let ops = buf.exporter();
        let pinned = buf.is_dynamic();
        if pinned {
            ops.pin(lock, self)?;
        }
        // A static importer waits for the KERNEL fences (moves, clears) before it may
        // use the memory, as every map of a static importer does.
        let mapped = ops.map(lock, self, Direction::Bidirectional).and_then(|t| {
            match self.wait_kernel_fences(lock) {
                Ok(()) => Ok(t),
                Err(e) => {
                    ops.unmap(lock, self, t, Direction::Bidirectional);
                    Err(e)
                }
            }
        });
        match mapped {
            Ok(t) => {
                self.track_mapped(&t, Direction::Bidirectional);
                let mut l = self.inner.locked.lock();
                l.cached = Some((t, Direction::Bidirectional));
                l.cache_pinned = pinned;
                self.inner.has_cache.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                if pinned {
                    ops.unpin(lock, self);
                }
                Err(e)
            }
        }
    }

    /// pin proper ([`LockedBuf::pin`](super::LockedBuf::pin)); `lock` is this
    /// attachment's buffer's guard (checked by the caller).
    pub(super) fn pin_locked(&self, lock: &ResvGuard<'_>) -> Result<()> {
        self.check(lock)?;
        self.settle(lock);
        if !self.is_dynamic() {
            return Err(Error::Invalid("pin by a static importer"));
        }
        let buf = &self.inner.buf;
        if buf.is_dynamic() {
            buf.exporter().pin(lock, self)?;
        }
        self.inner.locked.lock().pins += 1;
        Ok(())
    }

    /// unpin proper ([`LockedBuf::unpin`](super::LockedBuf::unpin)); `lock` as for
    /// [`pin_locked`](Self::pin_locked).
    pub(super) fn unpin_locked(&self, lock: &ResvGuard<'_>) -> Result<()> {
        self.check(lock)?;
        self.settle(lock);
        if !self.is_dynamic() {
            return Err(Error::Invalid("unpin by a static importer"));
        }
        {
            let mut l = self.inner.locked.lock();
            if l.pins == 0 {
                return Err(Error::Invalid("unpin without pin"));
            }
            l.pins -= 1;
        }
        let buf = &self.inner.buf;
        if buf.is_dynamic() {
            buf.exporter().unpin(lock, self);
        }
        Ok(())
    }

    /// map proper ([`LockedBuf::map`](super::LockedBuf::map)); `lock` is this
    /// attachment's buffer's guard (checked by the caller).
    #[inline]
    pub(super) fn map_locked(&self, lock: &ResvGuard<'_>, dir: Direction) -> Result<SgMapping> {
        self.check(lock)?;
        self.settle(lock);
        if self.inner.has_cache.load(Ordering::Acquire) {
            let l = self.inner.locked.lock();
            if let Some((t, cdir)) = &l.cached {
                if !cdir.covers(dir) {
                    return Err(Error::Busy("cached mapping of an incompatible direction"));
                }
                let table = t.clone();
                self.count_maps(1);
                return Ok(self.mapping(table, dir, true, false));
            }
        }
        let buf = &self.inner.buf;
        let ops = buf.exporter();
        let pin_on_map = buf.is_dynamic() && !self.is_dynamic();
        if pin_on_map {
            ops.pin(lock, self)?;
        }
        let table = match ops.map(lock, self, dir) {
            Ok(t) => t,
            Err(e) => {
                if pin_on_map {
                    ops.unpin(lock, self);
                }
                return Err(e);
            }
        };
        if !self.is_dynamic() {
            if let Err(e) = self.wait_kernel_fences(lock) {
                ops.unmap(lock, self, table, dir);
                if pin_on_map {
                    ops.unpin(lock, self);
                }
                return Err(e);
            }
        }
        self.count_maps(1);
        self.track_mapped(&table, dir);
        if buf.caps().cache_sgt_mapping {
            self.inner.locked.lock().cached = Some((table.clone(), dir));
            self.inner.has_cache.store(true, Ordering::Release);
            return Ok(self.mapping(table, dir, true, false));
        }
        Ok(self.mapping(table, dir, false, pin_on_map))
    }

    pub(super) fn mapping(
        &self,
        table: SgTable,
        dir: Direction,
        cached: bool,
        pinned: bool,
    ) -> SgMapping {
        SgMapping {
            att: self.uncounted(),
            table: Some(table),
            dir,
            cached,
            pinned,
        }
    }

    /// unmap proper ([`LockedBuf::unmap`](super::LockedBuf::unmap)); `lock` is this
    /// attachment's buffer's guard (checked by the caller). A detach this unmap completed
    /// has its exporter's detach run on a helper thread (the caller holds the lock).
    #[inline]
    pub(super) fn unmap_locked(
        &self,
        lock: &ResvGuard<'_>,
        m: SgMapping,
    ) -> std::result::Result<(), (Error, SgMapping)> {
        if let Some(done) = self.unmap_inner(lock, m)? {
            done.detach_callback_elsewhere();
        }
        Ok(())
    }

    /// [`unmap_locked`](Self::unmap_locked), handing back a detach this unmap completed
    /// (the exporter's detach still to run, unlocked).
    pub(super) fn unmap_inner(
        &self,
        lock: &ResvGuard<'_>,
        mut m: SgMapping,
    ) -> std::result::Result<Option<Attachment>, (Error, SgMapping)> {
        debug_assert!(self.inner.buf.check_lock(lock).is_ok());
        if !Attachment::ptr_eq(&m.att, self) {
            return Err((Error::Invalid("mapping of another attachment"), m));
        }
        self.settle(lock);
        let table = m.table.take().expect("live mapping");
        self.finish_unmap(lock, table, m.dir, m.cached, m.pinned);
        Ok(self.complete_if_pending(lock))
    }

    /// [`LockedBuf::map`](super::LockedBuf::map) taking the lock itself
    /// (`dma_buf_map_attachment_unlocked`).
    ///
    /// Must not hold a reservation lock.
    ///
    /// # Errors
    ///
    /// `Invalid` (with a lockdep report) when this thread holds a reservation lock; then
    /// those of [`LockedBuf::map`](super::LockedBuf::map).
    #[track_caller]
    #[must_use = "the mapping is unmapped when it drops"]
    pub fn map_unlocked(&self, dir: Direction) -> Result<SgMapping> {
        must_not_hold_resv("dma_buf_map_attachment_unlocked")?;
        let g = self.inner.buf.resv().lock_no_ctx()?;
        self.map_locked(&g, dir)
    }

    /// [`LockedBuf::unmap`](super::LockedBuf::unmap) taking the lock itself
    /// (`dma_buf_unmap_attachment_unlocked`). Dropping the mapping does the same.
    ///
    /// Must not hold a reservation lock.
    ///
    /// # Errors
    ///
    /// `Invalid` (with a lockdep report) when this thread holds a reservation lock, or when
    /// `m` is a mapping of another attachment; the mapping is handed back then, still
    /// mapped.
    #[track_caller]
    pub fn unmap_unlocked(&self, m: SgMapping) -> std::result::Result<(), (Error, SgMapping)> {
        if let Err(e) = must_not_hold_resv("dma_buf_unmap_attachment_unlocked") {
            return Err((e, m));
        }
        let g = match self.inner.buf.resv().lock_no_ctx() {
            Ok(g) => g,
            Err(e) => return Err((e, m)),
        };
        let done = self.unmap_inner(&g, m)?;
        drop(g);
        if let Some(done) = done {
            done.detach_callback();
        }
        Ok(())
    }
}

/// A mapping of an attachment: the device's scatter-gather table. Unmapped (taking the
/// reservation lock) when dropped, or explicitly with
/// [`LockedBuf::unmap`](super::LockedBuf::unmap).
///
/// Dropping it while the thread holds a reservation lock (this buffer's or another's, as
/// lockdep sees it) is a convention violation: it is reported once (lockdep `Misuse`)
/// and the unmap is DEFERRED — the table stays mapped and counted as live until the next
/// call holding this buffer's lock (`map`, `unmap`, `pin`, `unpin`, detach — which settles
/// before checking for live mappings —, `vmap`, `vunmap`, `move_notify`,
/// `attachments`) does it. With lockdep off, another buffer's lock cannot be seen (the
/// drop locks this buffer's and unmaps); under its own buffer's lock the drop's relock
/// is refused and the unmap is deferred the same way, unreported.
///
/// The mapping refers to its attachment without owning a reference count (so that map and
/// unmap make no atomic read-modify-write of their own). Invariant: a live mapping's
/// attachment is alive. It holds because a mapping is made only through an attachment
/// its buffer lists (`map` refuses others, even inside the exporter's attach callback),
/// the list owns a count,
/// and nothing takes an attachment off the list while it has live mappings: an explicit
/// detach refuses, and a dropped guard leaves the attachment listed until the unmap of
/// its last mapping; a mapping stops counting as live only inside its unmap, which is its
/// last use of the attachment (the detach that unmap may complete uses a counted handle).
#[must_use = "dropping the mapping unmaps it at once"]
pub struct SgMapping {
    att: ManuallyDrop<Attachment>,
    table: Option<SgTable>,
    dir: Direction,
    cached: bool,
    pinned: bool,
}

impl std::fmt::Debug for SgMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SgMapping")
            .field("att", &self.att.id())
            .field("dir", &self.dir)
            .field("cached", &self.cached)
            .finish()
    }
}

impl SgMapping {
    /// The table.
    pub fn table(&self) -> &SgTable {
        self.table.as_ref().expect("live mapping")
    }

    /// The direction asked for.
    pub fn direction(&self) -> Direction {
        self.dir
    }

    /// Whether this is the attachment's cached mapping.
    pub fn is_cached(&self) -> bool {
        self.cached
    }

    /// The attachment.
    pub fn attachment(&self) -> &Attachment {
        &self.att
    }

    /// The id the ownership tracker knows this mapping by
    /// ([`Attachment::mapping_key`] of its table; shared by every handle of a cached
    /// mapping).
    pub fn key(&self) -> u64 {
        self.att.mapping_key(self.table())
    }
}

impl Drop for SgMapping {
    fn drop(&mut self) {
        if self.table.is_none() {
            return;
        }
        // A counted handle: the unmap below ends the invariant that keeps it alive.
        let att: Attachment = (*self.att).clone();
        if lockdep::is_held(RESERVATION_WW_CLASS.lock_class()) {
            // Defer first: the report may panic (the default policy).
            att.defer_unmap(OwedUnmap {
                table: self.table.take().expect("live mapping"),
                dir: self.dir,
                cached: self.cached,
                pinned: self.pinned,
            });
            let whose = if att.buf().resv().is_held_by_current_thread() {
                "its own buffer's"
            } else {
                "another buffer's"
            };
            lockdep::report(
                lockdep::ReportKind::Misuse,
                &[RESERVATION_WW_CLASS.lock_class()],
                &format!(
                    "mapping of attachment {} dropped while holding {whose} reservation lock; \
                     the unmap is deferred to the next locked call on the attachment or buffer",
                    att.id()
                ),
            );
            return;
        }
        let m = SgMapping {
            att: att.uncounted(),
            table: self.table.take(),
            dir: self.dir,
            cached: self.cached,
            pinned: self.pinned,
        };
        if let Err((e, mut m)) = att.unmap_unlocked(m) {
            // With lockdep off, this thread may hold the buffer's lock after all (the
            // relock was refused): defer the unmap, as above, rather than leak the
            // mapping (a leaked one would block the detach forever).
            tracing::warn!(
                "mapping of attachment {} dropped but not unmapped now ({e}); deferred",
                att.id()
            );
            att.defer_unmap(OwedUnmap {
                table: m.table.take().expect("live mapping"),
                dir: m.dir,
                cached: m.cached,
                pinned: m.pinned,
            });
        }
    }
}
