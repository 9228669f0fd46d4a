//! Attachments: a device's link to a buffer — attach, detach, and the detaches deferred
//! by guards dropped under a reservation lock or with live mappings. The mappings made
//! through an attachment are in `map.rs`.
//!
//! An importer is *dynamic* when it passes [`Importer`] callbacks (it can follow the
//! memory when the exporter moves it), *static* otherwise; an exporter is dynamic when it
//! implements pin.

use super::dmabuf::must_not_hold_resv;
use super::map::OwedUnmap;
use super::ops::Importer;
use super::{Direction, DmaBuf, SgTable};
use crate::error::{Error, Result};
use crate::resv::{ResvGuard, RESERVATION_WW_CLASS};
use dmabuf_mem::Device;
use parking_lot::Mutex;
use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

static NEXT_ATT: AtomicU64 = AtomicU64::new(1);

/// State protected by the buffer's reservation lock.
#[derive(Default)]
pub(super) struct AttLocked {
    pub(super) cached: Option<(SgTable, Direction)>,
    pub(super) cache_pinned: bool,
    pub(super) pins: usize,
    /// Mappings dropped while their thread held a reservation lock: unmapped at the start
    /// of the next call holding this buffer's lock (`Attachment::settle`).
    pub(super) owed: Vec<OwedUnmap>,
}

pub(super) struct AttInner {
    pub(super) id: u64,
    pub(super) buf: DmaBuf,
    pub(super) dev: Arc<Device>,
    pub(super) importer: Option<Arc<dyn Importer>>,
    pub(super) peer2peer: bool,
    pub(super) exporter_data: Mutex<Option<Box<dyn Any + Send + Sync>>>,
    pub(super) locked: Mutex<AttLocked>,
    /// Whether `locked.cached` is set (read without the mutex on the map fast path;
    /// written under the reservation lock).
    pub(super) has_cache: AtomicBool,
    /// Live mappings made through the attachment (the cached one counted per user).
    pub(super) live_maps: AtomicUsize,
    pub(super) detached: AtomicBool,
    /// Set when the guard was dropped with live mappings: the attachment stays listed
    /// (the list's count keeps it alive for its mappings), refuses new maps and pins, and
    /// is detached by the unmap of its last mapping (see [`AttachGuard`]'s drop). Written
    /// with the reservation lock and `locked` held.
    pub(super) detach_pending: AtomicBool,
    /// Set once the buffer lists the attachment (the end of attach, under the lock):
    /// before that, the attachment may not be mapped or pinned (see `SgMapping`).
    pub(super) listed: AtomicBool,
    /// Whether `locked.owed` is non-empty (one load on the map/unmap paths; set with the
    /// mutex held, cleared with it held by `Attachment::settle`).
    pub(super) has_owed: AtomicBool,
}

/// A handle to an attachment (`struct dma_buf_attachment`); cheap to clone. The
/// attachment itself lives until [`AttachGuard`] detaches it.
#[derive(Clone)]
pub struct Attachment {
    pub(super) inner: Arc<AttInner>,
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
    /// Must not hold a reservation lock.
    ///
    /// # Errors
    ///
    /// Those of [`dynamic_attach`](Self::dynamic_attach).
    #[track_caller]
    #[must_use = "the attachment is detached when the returned guard drops"]
    pub fn attach(&self, dev: &Arc<Device>) -> Result<AttachGuard> {
        self.dynamic_attach(dev, None)
    }

    /// Attach `dev`; with `importer` the attachment is dynamic (`dma_buf_dynamic_attach`).
    /// The exporter's attach runs unlocked, then — when importer and exporter disagree on
    /// being dynamic — the buffer is pinned (dynamic exporter) and mapped BIDIRECTIONAL
    /// under the lock and the mapping cached; then the attachment is listed.
    ///
    /// Must not hold a reservation lock.
    ///
    /// # Errors
    ///
    /// `Invalid` (and a lockdep report) when called holding a reservation lock; the
    /// exporter's attach, pin and map errors (e.g. `Busy`), with everything undone.
    #[track_caller]
    #[must_use = "the attachment is detached when the returned guard drops"]
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
    pub(crate) fn importer(&self) -> Option<&Arc<dyn Importer>> {
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

    /// The exporter's private data for this attachment (`attach->priv`), behind the
    /// attachment's own mutex (not the reservation lock): any thread, with or without the
    /// reservation lock; do not hold the returned guard across calls into the core.
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

    /// Finish a detach left pending by a guard dropped with live mappings, once none is
    /// left: the locked half of detach (see [`detach_locked`](Self::detach_locked)).
    /// One atomic load when no detach is pending. Lock held.
    #[inline]
    pub(super) fn complete_if_pending(&self, lock: &ResvGuard<'_>) -> Option<Attachment> {
        if !self.inner.detach_pending.load(Ordering::Relaxed) {
            return None;
        }
        self.complete_pending_slow(lock)
    }

    #[cold]
    pub(super) fn complete_pending_slow(&self, lock: &ResvGuard<'_>) -> Option<Attachment> {
        if self.is_detached() || self.inner.live_maps.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(self.detach_locked(lock))
    }

    /// The locked half of detach: unlist, unmap (and unpin) the cached mapping, mark
    /// detached. Returns the handle the buffer's list owned (it keeps the attachment
    /// alive until the exporter's detach, next, has run unlocked). Lock held; no live
    /// mappings.
    pub(super) fn detach_locked(&self, lock: &ResvGuard<'_>) -> Attachment {
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
    pub(super) fn detach_callback(self) {
        let buf = self.inner.buf.clone();
        buf.exporter().clone().detach(&buf, &self);
    }

    /// [`detach_callback`](Self::detach_callback) on a helper thread, for a caller that
    /// holds the reservation lock.
    pub(super) fn detach_callback_elsewhere(self) {
        defer_to_thread("exporter detach", move || self.detach_callback());
    }

    /// Report a detach while mappings are live: to the ownership tracker, if any, and
    /// through `tracing`. `dropped`: the guard was dropped (the detach completes at the
    /// last unmap) rather than detached explicitly (refused).
    pub(super) fn report_live_maps(&self, live: usize, dropped: bool) {
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

    /// Detach (`dma_buf_detach`): unlist and drop the cached mapping (unpinning) under
    /// the lock, then the exporter's detach, unlocked.
    ///
    /// Must not hold a reservation lock.
    ///
    /// # Errors
    ///
    /// `Busy` while mappings made through the attachment are live (unmap them first; reported
    /// to the ownership tracker as `DetachWhileMapped`); `Invalid` when called holding a
    /// reservation lock or already detached. The attachment is unchanged on error.
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
pub(super) fn defer_to_thread(what: &'static str, job: impl FnOnce() + Send + 'static) {
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
#[must_use = "dropping the guard detaches the attachment at once"]
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
    /// # Errors
    ///
    /// See [`Attachment`]'s detach rules (`Busy` with live mappings, `Invalid` when holding a
    /// reservation lock); the guard is handed back then.
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
