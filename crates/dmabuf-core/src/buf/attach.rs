//! Attachments: a device's link to a buffer, and the mappings made through it.
//!
//! An importer is *dynamic* when it passes [`Importer`] callbacks (it can follow the
//! memory when the exporter moves it), *static* otherwise; an exporter is dynamic when it
//! implements pin. When the two disagree, the buffer is mapped BIDIRECTIONAL at attach
//! under the reservation lock (pinned first for a dynamic exporter, so a static importer
//! keeps it pinned for the attachment's life) and that mapping is cached: later maps of a
//! compatible direction return it, others fail with `Busy` — the ≤6.14 rule this project
//! follows. With the exporter's `cache_sgt_mapping`, the first map is cached likewise.

use super::dmabuf::must_not_hold_resv;
use super::ops::Importer;
use super::{Direction, DmaBuf, SgTable};
use crate::error::{Error, Result};
use crate::resv::{ResvGuard, Usage, RESERVATION_WW_CLASS};
use dmabuf_mem::Device;
use parking_lot::Mutex;
use std::any::Any;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

static NEXT_ATT: AtomicU64 = AtomicU64::new(1);

/// State protected by the buffer's reservation lock.
#[derive(Default)]
struct AttLocked {
    cached: Option<(SgTable, Direction)>,
    cache_pinned: bool,
    pins: usize,
    /// Mappings dropped while their thread held a reservation lock: unmapped at the start
    /// of the next call holding this buffer's lock (`Attachment::settle`).
    owed: Vec<OwedUnmap>,
}

/// The state of a mapping whose unmap was deferred (see [`SgMapping`]'s drop).
struct OwedUnmap {
    table: SgTable,
    dir: Direction,
    cached: bool,
    pinned: bool,
}

struct AttInner {
    id: u64,
    buf: DmaBuf,
    dev: Arc<Device>,
    importer: Option<Arc<dyn Importer>>,
    peer2peer: bool,
    exporter_data: Mutex<Option<Box<dyn Any + Send + Sync>>>,
    locked: Mutex<AttLocked>,
    /// Whether `locked.cached` is set (read without the mutex on the map fast path;
    /// written under the reservation lock).
    has_cache: AtomicBool,
    /// Live mappings made through the attachment (the cached one counted per user).
    live_maps: AtomicUsize,
    detached: AtomicBool,
    /// Set when the guard was dropped with live mappings: the attachment stays listed
    /// (the list's count keeps it alive for its mappings), refuses new maps and pins, and
    /// is detached by the unmap of its last mapping (see [`AttachGuard`]'s drop). Written
    /// with the reservation lock and `locked` held.
    detach_pending: AtomicBool,
    /// Set once the buffer lists the attachment (the end of attach, under the lock):
    /// before that, the attachment may not be mapped or pinned (see `SgMapping`).
    listed: AtomicBool,
    /// Whether `locked.owed` is non-empty (one load on the map/unmap paths; set with the
    /// mutex held, cleared with it held by `Attachment::settle`).
    has_owed: AtomicBool,
}

/// A handle to an attachment (`struct dma_buf_attachment`); cheap to clone. The
/// attachment itself lives until [`AttachGuard`] detaches it.
#[derive(Clone)]
pub struct Attachment {
    inner: Arc<AttInner>,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("id", &self.inner.id)
            .field("buf", &self.inner.buf.ino())
            .field("device", &self.inner.dev.name())
            .field("dynamic", &self.is_dynamic())
            .finish()
    }
}

impl DmaBuf {
    /// Attach `dev` as a static importer (`dma_buf_attach`).
    ///
    /// Must not hold a reservation lock. Errors: those of
    /// [`dynamic_attach`](Self::dynamic_attach).
    #[track_caller]
    pub fn attach(&self, dev: &Arc<Device>) -> Result<AttachGuard> {
        self.dynamic_attach(dev, None)
    }

    /// Attach `dev`; with `importer` the attachment is dynamic (`dma_buf_dynamic_attach`).
    /// The exporter's attach runs unlocked, then — when importer and exporter disagree on
    /// being dynamic — the buffer is pinned (dynamic exporter) and mapped BIDIRECTIONAL
    /// under the lock and the mapping cached; then the attachment is listed.
    ///
    /// Must not hold a reservation lock. Errors: `Invalid` (and a lockdep report) when
    /// called holding one; the exporter's attach, pin and map errors (e.g. `Busy`), with
    /// everything undone.
    #[track_caller]
    pub fn dynamic_attach(
        &self,
        dev: &Arc<Device>,
        importer: Option<Arc<dyn Importer>>,
    ) -> Result<AttachGuard> {
        must_not_hold_resv("dma_buf_dynamic_attach")?;
        let att = Attachment {
            inner: Arc::new(AttInner {
                id: NEXT_ATT.fetch_add(1, Ordering::Relaxed),
                buf: self.clone(),
                dev: dev.clone(),
                peer2peer: importer.as_ref().is_some_and(|i| i.allow_peer2peer()),
                importer,
                exporter_data: Mutex::new(None),
                locked: Mutex::new(AttLocked::default()),
                has_cache: AtomicBool::new(false),
                live_maps: AtomicUsize::new(0),
                detached: AtomicBool::new(false),
                detach_pending: AtomicBool::new(false),
                listed: AtomicBool::new(false),
                has_owed: AtomicBool::new(false),
            }),
        };
        let ops = self.exporter().clone();
        ops.attach(self, &att)?;
        // Refused (EINVAL) when this thread holds the lock: undo the exporter's attach.
        let g = match self.resv().lock_no_ctx() {
            Ok(g) => g,
            Err(e) => {
                ops.detach(self, &att);
                return Err(e);
            }
        };
        self.settle_owed(&g);
        if att.is_dynamic() != self.is_dynamic() {
            if let Err(e) = att.map_at_attach(&g) {
                drop(g);
                ops.detach(self, &att);
                return Err(e);
            }
        }
        self.attach_state_push(&g, &att)?;
        att.inner.listed.store(true, Ordering::Release);
        drop(g);
        Ok(AttachGuard { att: Some(att) })
    }
}

impl Attachment {
    /// A unique id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The buffer.
    pub fn buf(&self) -> &DmaBuf {
        &self.inner.buf
    }

    /// The device.
    pub fn device(&self) -> &Arc<Device> {
        &self.inner.dev
    }

    /// The importer's callbacks, for a dynamic attachment.
    pub fn importer(&self) -> Option<&Arc<dyn Importer>> {
        self.inner.importer.as_ref()
    }

    /// Whether the importer is dynamic.
    pub fn is_dynamic(&self) -> bool {
        self.inner.importer.is_some()
    }

    /// Whether the importer accepts peer-to-peer memory (copied from the importer).
    pub fn peer2peer(&self) -> bool {
        self.inner.peer2peer
    }

    /// The exporter's private data for this attachment (`attach->priv`).
    pub fn exporter_data(&self) -> parking_lot::MutexGuard<'_, Option<Box<dyn Any + Send + Sync>>> {
        self.inner.exporter_data.lock()
    }

    /// Whether two handles name the same attachment.
    pub fn ptr_eq(a: &Attachment, b: &Attachment) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }

    /// Whether it has been detached.
    pub fn is_detached(&self) -> bool {
        self.inner.detached.load(Ordering::Acquire)
    }

    /// The id under which a mapping of this attachment with table `table` is known to
    /// the ownership tracker (`Tracker::mapped`, `synced`, `job_started`…): the
    /// attachment id in the high bits, the table's first device address (below 2^40) in
    /// the low ones. The core and the exporter both derive it from the table, so an
    /// exporter can report its syncs of a mapping the core registered.
    pub fn mapping_key(&self, table: &SgTable) -> u64 {
        let addr = table.entries().first().map_or(0, |e| e.dma_addr);
        (self.inner.id << 40) | (addr & ((1 << 40) - 1))
    }

    fn track_mapped(&self, table: &SgTable, dir: Direction) {
        if let Some(t) = self.inner.buf.tracker() {
            t.mapped(
                self.inner.buf.ino(),
                self.mapping_key(table),
                self.inner.dev.name(),
                dir,
            );
        }
    }

    fn track_unmapped(&self, table: &SgTable) {
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
    fn count_maps(&self, delta: isize) {
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
    fn settle_slow(&self, lock: &ResvGuard<'_>) -> Option<Attachment> {
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
    fn defer_unmap(&self, o: OwedUnmap) {
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

    /// Finish a detach left pending by a guard dropped with live mappings, once none is
    /// left: the locked half of detach (see [`detach_locked`](Self::detach_locked)).
    /// One atomic load when no detach is pending. Lock held.
    #[inline]
    fn complete_if_pending(&self, lock: &ResvGuard<'_>) -> Option<Attachment> {
        if !self.inner.detach_pending.load(Ordering::Relaxed) {
            return None;
        }
        self.complete_pending_slow(lock)
    }

    #[cold]
    fn complete_pending_slow(&self, lock: &ResvGuard<'_>) -> Option<Attachment> {
        if self.is_detached() || self.inner.live_maps.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(self.detach_locked(lock))
    }

    /// The locked half of detach: unlist, unmap (and unpin) the cached mapping, mark
    /// detached. Returns the handle the buffer's list owned (it keeps the attachment
    /// alive until the exporter's detach, next, has run unlocked). Lock held; no live
    /// mappings.
    fn detach_locked(&self, lock: &ResvGuard<'_>) -> Attachment {
        let buf = &self.inner.buf;
        let listed = buf.attach_state_take(lock, self);
        let cached = {
            let mut l = self.inner.locked.lock();
            self.inner.has_cache.store(false, Ordering::Release);
            l.cached.take().map(|c| (c, l.cache_pinned))
        };
        let ops = buf.exporter();
        if let Some(((t, d), pinned)) = cached {
            self.track_unmapped(&t);
            ops.unmap(lock, self, t, d);
            if pinned {
                ops.unpin(lock, self);
            }
        }
        self.inner.detached.store(true, Ordering::Release);
        listed.unwrap_or_else(|| self.clone())
    }

    /// The exporter's detach, the last step of a detach. Must run unlocked.
    fn detach_callback(self) {
        let buf = self.inner.buf.clone();
        buf.exporter().clone().detach(&buf, &self);
    }

    /// [`detach_callback`](Self::detach_callback) on a helper thread, for a caller that
    /// holds the reservation lock.
    fn detach_callback_elsewhere(self) {
        defer_to_thread("exporter detach", move || self.detach_callback());
    }

    /// Report a detach while mappings are live: to the ownership tracker, if any, and
    /// through `tracing`. `dropped`: the guard was dropped (the detach completes at the
    /// last unmap) rather than detached explicitly (refused).
    fn report_live_maps(&self, live: usize, dropped: bool) {
        let buf = &self.inner.buf;
        let dev = self.inner.dev.name();
        if dropped {
            tracing::warn!(
                ino = buf.ino(),
                attachment = self.id(),
                "attachment of {dev} dropped with {live} live mapping(s): unmap before \
                 detaching; the detach completes when the last mapping is unmapped"
            );
        } else {
            tracing::warn!(
                ino = buf.ino(),
                attachment = self.id(),
                "detach of {dev}'s attachment with {live} live mapping(s) refused (EBUSY)"
            );
        }
        if let Some(t) = buf.tracker() {
            t.detached_while_mapped(buf.ino(), dev, live, dropped);
        }
    }

    /// The unmap proper, lock held: the live count, then (unless cached) the tracker, the
    /// exporter's unmap and the unpin the map did.
    fn finish_unmap(
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
    fn uncounted(&self) -> ManuallyDrop<Attachment> {
        // SAFETY: `Arc::as_ptr` of a live `Arc` is a pointer `Arc::from_raw` accepts. The
        // `Arc` made here does not own a count of its own and is never dropped (it stays
        // in `ManuallyDrop`, and nothing takes it out), so the counts stay balanced; it is
        // used only while the allocation is alive, which `SgMapping`'s invariant
        // guarantees.
        ManuallyDrop::new(Attachment {
            inner: unsafe { Arc::from_raw(Arc::as_ptr(&self.inner)) },
        })
    }

    /// Whether the attachment may be mapped or pinned now. `lock` is its buffer's guard
    /// (checked once, when the [`LockedBuf`](super::LockedBuf) was made).
    #[inline]
    fn check(&self, lock: &ResvGuard<'_>) -> Result<()> {
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
    fn wait_kernel_fences(&self, lock: &ResvGuard<'_>) -> Result<()> {
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

    fn map_at_attach(&self, lock: &ResvGuard<'_>) -> Result<()> {
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

    fn mapping(&self, table: SgTable, dir: Direction, cached: bool, pinned: bool) -> SgMapping {
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
    fn unmap_inner(
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
    #[track_caller]
    pub fn map_unlocked(&self, dir: Direction) -> Result<SgMapping> {
        must_not_hold_resv("dma_buf_map_attachment_unlocked")?;
        let g = self.inner.buf.resv().lock_no_ctx()?;
        self.map_locked(&g, dir)
    }

    /// [`LockedBuf::unmap`](super::LockedBuf::unmap) taking the lock itself
    /// (`dma_buf_unmap_attachment_unlocked`). Dropping the mapping does the same.
    ///
    /// Must not hold a reservation lock.
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

    /// Detach (`dma_buf_detach`): unlist and drop the cached mapping (unpinning) under
    /// the lock, then the exporter's detach, unlocked.
    ///
    /// Must not hold a reservation lock. Errors: `Busy` while mappings made through the
    /// attachment are live (unmap them first; reported to the ownership tracker as
    /// `DetachWhileMapped`); `Invalid` when called holding a reservation lock or already
    /// detached. The attachment is unchanged on error.
    #[track_caller]
    fn detach_inner(&self) -> Result<()> {
        must_not_hold_resv("dma_buf_detach")?;
        let buf = &self.inner.buf;
        let g = buf.resv().lock_no_ctx()?;
        if self.is_detached() {
            return Err(Error::Invalid("attachment already detached"));
        }
        // Unmaps owed by mappings dropped under a reservation lock count as done.
        self.settle(&g);
        buf.settle_owed(&g);
        let live = self.inner.live_maps.load(Ordering::Relaxed);
        if live > 0 {
            drop(g);
            self.report_live_maps(live, false);
            return Err(Error::Busy("detach with live mappings"));
        }
        let att = self.detach_locked(&g);
        drop(g);
        att.detach_callback();
        Ok(())
    }

    /// Whether the attachment's guard was dropped while mappings were live and the
    /// detach waits for their unmaps (see [`AttachGuard`]). Such an attachment is still
    /// listed, refuses new maps and pins, and is detached by its last unmap.
    pub fn is_detach_pending(&self) -> bool {
        self.inner.detach_pending.load(Ordering::Relaxed) && !self.is_detached()
    }

    /// The detach of a dropped guard: never blocks on a lock this thread may hold.
    fn detach_dropped(self) {
        let class = RESERVATION_WW_CLASS.lock_class();
        if crate::resv::held_by_this_thread() > 0 || lockdep::is_held(class) {
            let whose = if self.inner.buf.resv().is_held_by_current_thread() {
                "its own buffer's"
            } else {
                "another buffer's"
            };
            let id = self.id();
            tracing::warn!(
                attachment = id,
                "attachment guard dropped while holding {whose} reservation lock: the \
                 detach is deferred until the lock is free"
            );
            // Defer first: the report may panic (the default policy).
            defer_to_thread("detach", move || self.detach_dropped_blocking());
            if lockdep::enabled() {
                lockdep::report(
                    lockdep::ReportKind::Misuse,
                    &[class],
                    &format!(
                        "attachment {id} dropped while holding {whose} reservation lock: \
                         dma_buf_detach must run unlocked; the detach is deferred until \
                         the lock is free"
                    ),
                );
            }
            return;
        }
        // This thread holds no reservation lock (its guards say so, lockdep on or off):
        // waiting for this one is safe.
        match self.inner.buf.resv().clone().lock_no_ctx() {
            Ok(g) => self.detach_dropped_locked(g),
            Err(_) => defer_to_thread("detach", move || self.detach_dropped_blocking()),
        }
    }

    /// [`detach_dropped`](Self::detach_dropped) on a helper thread, which holds nothing
    /// and so may wait for the lock.
    fn detach_dropped_blocking(self) {
        let resv = self.inner.buf.resv().clone();
        // A helper thread holds no lock: the lock is refused only for its holder.
        match resv.lock_no_ctx() {
            Ok(g) => self.detach_dropped_locked(g),
            Err(e) => tracing::error!("deferred detach: the reservation lock was refused: {e}"),
        };
    }

    /// The detach of a dropped guard, with this buffer's lock `g`: settle what is owed,
    /// mark the detach pending, and complete it at once when no mapping is live; else
    /// report, and leave it to the last unmap.
    fn detach_dropped_locked(&self, g: ResvGuard<'_>) {
        let buf = &self.inner.buf;
        if self.is_detached() || self.inner.detach_pending.load(Ordering::Relaxed) {
            return;
        }
        buf.settle_owed(&g);
        let owed = {
            let mut l = self.inner.locked.lock();
            self.inner.detach_pending.store(true, Ordering::Relaxed);
            self.inner.has_owed.store(false, Ordering::SeqCst);
            std::mem::take(&mut l.owed)
        };
        for o in owed {
            self.finish_unmap(&g, o.table, o.dir, o.cached, o.pinned);
        }
        match self.complete_if_pending(&g) {
            Some(att) => {
                drop(g);
                att.detach_callback();
            }
            None => {
                let live = self.inner.live_maps.load(Ordering::Relaxed);
                drop(g);
                self.report_live_maps(live, true);
            }
        }
    }
}

/// Deferred detach work (guards dropped under a reservation lock, exporter detaches
/// owed by a locked unmap) running or about to run on helper threads.
static DEFERRED: AtomicUsize = AtomicUsize::new(0);

/// Counts one deferred job until dropped (also when its thread could not start).
struct DeferredJob;

impl Drop for DeferredJob {
    fn drop(&mut self) {
        DEFERRED.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Run `job` on a helper thread that holds no lock (the kernel would use a worker).
fn defer_to_thread(what: &'static str, job: impl FnOnce() + Send + 'static) {
    DEFERRED.fetch_add(1, Ordering::SeqCst);
    let token = DeferredJob;
    let spawned = std::thread::Builder::new()
        .name("dmabuf-detach".into())
        .spawn(move || {
            let _token = token;
            job();
        });
    if let Err(e) = spawned {
        tracing::error!("no thread for the deferred {what}: {e}; it is not done");
    }
}

/// Wait, at most `timeout`, until no deferred detach work is left: the detaches of
/// guards dropped while holding a reservation lock (or, with lockdep off, while the lock
/// was busy) and the exporter detaches owed by a locked unmap of a dropped guard's last
/// mapping run on helper threads, each as soon as the lock is free. Returns whether none
/// is left. Takes no lock; call it unlocked (work waiting for a lock this thread holds
/// cannot finish).
pub fn wait_deferred_detaches(timeout: Duration) -> bool {
    let end = std::time::Instant::now() + timeout;
    loop {
        if DEFERRED.load(Ordering::SeqCst) == 0 {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Owns an attachment; detaches it when dropped (or by [`AttachGuard::detach`]).
///
/// The importer's obligations are the kernel's: unmap every mapping, then detach.
/// Dropping the guard with mappings still live is a mistake; it is reported (a `tracing`
/// warning, and `DetachWhileMapped` to the buffer's ownership tracker) and the detach
/// waits for the mappings: the attachment stays listed (bufinfo shows it) and refuses
/// new maps and pins ([`Attachment::is_detach_pending`]), and the unmap of its last
/// mapping — dropped or unmapped explicitly — detaches it: unlisted, cached mapping
/// unmapped, exporter's detach. The buffer's reference goes with the attachment, so the
/// exporter's release runs once every other reference is gone too.
///
/// Dropped while this thread holds a reservation lock (as lockdep sees it), it is
/// reported (lockdep `Misuse`) and the detach is done by a helper thread once the lock is
/// free. With lockdep off the drop cannot tell whether this thread holds the lock, so it
/// only tries it: when the lock stays busy, the helper thread does the detach. The
/// exporter's detach owed by an unmap made with the lock held runs on a helper thread too.
/// [`wait_deferred_detaches`] waits for such work.
pub struct AttachGuard {
    att: Option<Attachment>,
}

impl std::ops::Deref for AttachGuard {
    type Target = Attachment;
    fn deref(&self) -> &Attachment {
        self.att.as_ref().expect("attached until drop")
    }
}

impl AttachGuard {
    /// Detach now.
    ///
    /// Errors: see [`Attachment`]'s detach rules (`Busy` with live mappings, `Invalid`
    /// when holding a reservation lock); the guard is handed back then.
    #[track_caller]
    pub fn detach(mut self) -> std::result::Result<(), (Error, AttachGuard)> {
        let att = self.att.as_ref().expect("attached until drop");
        match att.detach_inner() {
            Ok(()) => {
                self.att = None;
                Ok(())
            }
            Err(e) => Err((e, self)),
        }
    }

    /// A handle to the attachment.
    pub fn attachment(&self) -> Attachment {
        (**self).clone()
    }
}

impl Drop for AttachGuard {
    fn drop(&mut self) {
        if let Some(att) = self.att.take() {
            att.detach_dropped();
        }
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
