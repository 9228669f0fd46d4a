//! The buffer object: export and release, references, names, the list of live buffers,
//! and the work deferred by drops under a reservation lock. CPU access, vmap, mmap and
//! implicit sync are in their own modules.

use super::ops::{Caps, Exporter};
use super::AccessTracker;
use super::{Attachment, Segment, VMap};
use crate::error::{Error, Result};
use crate::resv::{Resv, ResvGuard, RESERVATION_WW_CLASS};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

/// Longest buffer name, in bytes (the kernel's `DMA_BUF_NAME_LEN` less the NUL).
pub const NAME_MAX: usize = 31;

/// How the buffer's "file" was opened: the access mode and `O_NONBLOCK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileFlags {
    /// May be read (mapped readable).
    pub read: bool,
    /// May be written (mapped shared-writable).
    pub write: bool,
    /// `O_NONBLOCK`.
    pub nonblock: bool,
}

impl Default for FileFlags {
    fn default() -> Self {
        FileFlags::RDWR
    }
}

impl FileFlags {
    /// `O_RDWR`.
    pub const RDWR: FileFlags = FileFlags {
        read: true,
        write: true,
        nonblock: false,
    };
    /// `O_RDONLY`.
    pub const RDONLY: FileFlags = FileFlags {
        read: true,
        write: false,
        nonblock: false,
    };

    /// The `f_flags` word bufinfo prints (`O_ACCMODE | O_NONBLOCK` bits).
    pub(crate) fn bits(self) -> u32 {
        let acc = match (self.read, self.write) {
            (true, true) => 2,
            (false, true) => 1,
            _ => 0,
        };
        acc | if self.nonblock { 0o4000 } else { 0 }
    }
}

/// What [`export`] needs (`struct dma_buf_export_info`).
pub struct ExportInfo {
    /// The exporter's name (bufinfo's `exp_name`).
    pub exp_name: String,
    /// Size in bytes; fixed for the buffer's life.
    pub size: usize,
    /// File flags.
    pub flags: FileFlags,
    /// A reservation object to share; `None` embeds a new one.
    pub resv: Option<Arc<Resv>>,
    /// The exporter; `None` is refused (the kernel's NULL ops).
    pub ops: Option<Arc<dyn Exporter>>,
}

impl ExportInfo {
    /// Info for a buffer of `size` bytes exported by `ops`, read-write, own resv.
    pub fn new(exp_name: &str, size: usize, ops: Arc<dyn Exporter>) -> Self {
        ExportInfo {
            exp_name: exp_name.to_string(),
            size,
            flags: FileFlags::RDWR,
            resv: None,
            ops: Some(ops),
        }
    }
}

/// State protected by the reservation lock.
#[derive(Default)]
pub(super) struct BufLocked {
    pub(super) attachments: Vec<Attachment>,
    pub(super) vmap_count: usize,
    pub(super) vmap: Option<Arc<Vec<Segment>>>,
    /// vmaps whose [`VMapGuard`] was dropped while its thread held a reservation lock:
    /// vunmapped at the start of the next call holding this buffer's lock.
    /// Mappings of deferred vunmaps (kept without the buffer reference a `VMap` holds,
    /// so they do not keep the buffer alive).
    pub(super) owed_vmaps: Vec<Arc<Vec<Segment>>>,
}

pub(super) struct BufInner {
    pub(super) ino: u64,
    pub(super) size: usize,
    pub(super) exp_name: String,
    pub(super) flags: FileFlags,
    pub(super) caps: Caps,
    pub(super) ops: Arc<dyn Exporter>,
    pub(super) resv: Arc<Resv>,
    pub(super) embedded_resv: bool,
    pub(super) name: Mutex<Option<String>>,
    pub(super) locked: Mutex<BufLocked>,
    /// The ownership tracker told of this buffer's events, once set.
    pub(super) tracker: OnceLock<Arc<dyn AccessTracker>>,
    /// Whether work is owed: `locked.owed_vmaps` non-empty, or an attachment has
    /// deferred unmaps (see [`DmaBuf::settle_owed`]).
    pub(super) owed: AtomicBool,
    /// The identity of the buffer's file, once a descriptor of it left (or the buffer
    /// came in as one): the key of the buffer in `fd`'s table.
    pub(super) file_key: OnceLock<(u64, u64)>,
}

/// A DMA-BUF: a fixed-size buffer owned by its exporter, shared by reference. `clone`
/// takes a reference (`get_dma_buf`), dropping one puts it; the last drop calls the
/// exporter's `release`. Attachments hold a reference too.
#[derive(Clone)]
pub struct DmaBuf {
    pub(super) inner: Arc<BufInner>,
}

impl std::fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaBuf")
            .field("ino", &self.inner.ino)
            .field("size", &self.inner.size)
            .field("exp_name", &self.inner.exp_name)
            .finish()
    }
}

/// Every live buffer, by inode number (bufinfo's list).
fn registry() -> &'static Mutex<BTreeMap<u64, Weak<BufInner>>> {
    static R: std::sync::OnceLock<Mutex<BTreeMap<u64, Weak<BufInner>>>> =
        std::sync::OnceLock::new();
    R.get_or_init(Default::default)
}

static NEXT_INO: AtomicU64 = AtomicU64::new(1);

/// Refuse a call that must run without the reservation lock while this thread holds
/// one, with lockdep on or off (the guards count per thread); with lockdep on the misuse
/// is also reported (`Misuse`). Exporters and engines call it at their own entry points
/// that must run unlocked; `what` names the call in the error and the report.
///
/// # Errors
///
/// `Invalid` (`EINVAL`) when this thread holds any reservation lock.
#[track_caller]
pub fn must_not_hold_resv(what: &'static str) -> Result<()> {
    if crate::resv::held_by_this_thread() > 0 || lockdep::is_held(RESERVATION_WW_CLASS.lock_class())
    {
        if lockdep::enabled() {
            lockdep::report(
                lockdep::ReportKind::Misuse,
                &[RESERVATION_WW_CLASS.lock_class()],
                &format!("{what} called with a reservation lock held: it must run unlocked"),
            );
        }
        return Err(Error::Invalid("called with a reservation lock held"));
    }
    Ok(())
}

/// Export a buffer (`dma_buf_export`).
///
/// Must not hold a reservation lock.
///
/// # Errors
///
/// `Invalid` when `ops` is `None`, `pin` and `unpin` are not both implemented or both absent,
/// `cache_sgt_mapping` is combined with `pin`, or the size is zero; `Invalid` (with a lockdep
/// report) when called holding a reservation lock.
#[track_caller]
pub fn export(info: ExportInfo) -> Result<DmaBuf> {
    must_not_hold_resv("dma_buf_export")?;
    let ops = info
        .ops
        .ok_or(Error::Invalid("export without exporter ops"))?;
    let caps = ops.caps();
    if caps.pin != caps.unpin {
        return Err(Error::Invalid(
            "exporter implements pin without unpin or vice versa",
        ));
    }
    if caps.cache_sgt_mapping && caps.pin {
        return Err(Error::Invalid("cache_sgt_mapping with a dynamic exporter"));
    }
    if info.size == 0 {
        return Err(Error::Invalid("zero-sized buffer"));
    }
    crate::fault::check(crate::fault::Site::Export)?;
    let (resv, embedded_resv) = match info.resv {
        Some(r) => (r, false),
        None => (Arc::new(Resv::new()), true),
    };
    let ino = NEXT_INO.fetch_add(1, Ordering::Relaxed);
    let inner = Arc::new(BufInner {
        ino,
        size: info.size,
        exp_name: info.exp_name,
        flags: FileFlags {
            nonblock: info.flags.nonblock,
            ..info.flags
        },
        caps,
        ops,
        resv,
        embedded_resv,
        name: Mutex::new(None),
        locked: Mutex::new(BufLocked::default()),
        tracker: OnceLock::new(),
        owed: AtomicBool::new(false),
        file_key: OnceLock::new(),
    });
    registry().lock().insert(ino, Arc::downgrade(&inner));
    Ok(DmaBuf { inner })
}

impl Drop for BufInner {
    fn drop(&mut self) {
        registry().lock().remove(&self.ino);
        if let Some(&key) = self.file_key.get() {
            super::fd::unlist(key, self);
        }
        let l = self.locked.get_mut();
        // A vunmap still owed here (a VMapGuard dropped under a reservation lock, holding
        // the last reference, or with no locked call since) cannot reach the exporter —
        // its vunmap needs the buffer, which is gone — so it is counted done: the
        // exporter's release, next, frees the memory and whatever mapped it.
        // (Attachments hold a reference, so none has owed unmaps left by now.)
        if !l.owed_vmaps.is_empty() {
            let owed = std::mem::take(&mut l.owed_vmaps).len();
            l.vmap_count = l.vmap_count.saturating_sub(owed);
            if l.vmap_count == 0 {
                l.vmap = None;
            }
            tracing::warn!(
                ino = self.ino,
                "dma-buf released with {owed} deferred vunmap(s); release frees them"
            );
        }
        if l.vmap_count != 0 {
            tracing::error!(ino = self.ino, "dma-buf released with a live vmap");
        }
        if let Some(t) = self.tracker.get() {
            t.buffer_freed(self.ino);
        }
        self.ops.release(self.ino);
    }
}

/// `llseek` whence values the buffer understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whence {
    /// `SEEK_SET`.
    Set,
    /// `SEEK_CUR` (refused, as in the kernel).
    Cur,
    /// `SEEK_END`.
    End,
}

impl DmaBuf {
    /// The inode number: unique among all buffers ever exported.
    pub fn ino(&self) -> u64 {
        self.inner.ino
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// The exporter's name.
    pub fn exp_name(&self) -> &str {
        &self.inner.exp_name
    }

    /// The file flags.
    pub fn flags(&self) -> FileFlags {
        self.inner.flags
    }

    /// The reservation object.
    pub fn resv(&self) -> &Arc<Resv> {
        &self.inner.resv
    }

    /// Whether the reservation object was embedded at export (not shared).
    pub fn has_embedded_resv(&self) -> bool {
        self.inner.embedded_resv
    }

    /// The exporter.
    pub(crate) fn exporter(&self) -> &Arc<dyn Exporter> {
        &self.inner.ops
    }

    /// Whether the exporter is dynamic (implements pin).
    pub fn is_dynamic(&self) -> bool {
        self.inner.caps.pin
    }

    pub(super) fn caps(&self) -> Caps {
        self.inner.caps
    }

    /// Number of references (the file count bufinfo prints).
    pub fn ref_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Tell `tracker` of this buffer's ownership events from now on (see
    /// [`AccessTracker`]; `dmabuf-drivers` has one): begin/end CPU access, every mapping made and
    /// unmapped through an attachment, the exporter's syncs (exporters report them, see
    /// [`DmaBuf::tracker`]), device jobs (engines report them) and the release. The buffer
    /// is registered with its current name. Takes no lock; any thread.
    ///
    /// Set it before mapping: mappings made earlier are unknown to the tracker (jobs on
    /// them are reported as `UnknownMapping`).
    ///
    /// # Errors
    ///
    /// `Busy` when another tracker is already set (setting the same one again is a no-op);
    /// nothing changes.
    pub fn set_tracker<T: AccessTracker>(&self, tracker: &Arc<T>) -> Result<()> {
        let tracker: Arc<dyn AccessTracker> = tracker.clone();
        match self.inner.tracker.get() {
            Some(t) if std::ptr::addr_eq(Arc::as_ptr(t), Arc::as_ptr(&tracker)) => return Ok(()),
            Some(_) => return Err(Error::Busy("buffer already has an ownership tracker")),
            None => {}
        }
        if self.inner.tracker.set(tracker.clone()).is_err() {
            return Err(Error::Busy("buffer already has an ownership tracker"));
        }
        tracker.buffer_created(self.inner.ino, &self.name().unwrap_or_default());
        Ok(())
    }

    /// The ownership tracker, if one was set ([`set_tracker`](Self::set_tracker)).
    /// Exporters report their DMA syncs to it ([`AccessTracker::synced`] with
    /// [`Attachment::mapping_key`]); engines report device jobs.
    pub fn tracker(&self) -> Option<&Arc<dyn AccessTracker>> {
        self.inner.tracker.get()
    }

    /// Whether two handles are the same buffer.
    pub fn ptr_eq(a: &DmaBuf, b: &DmaBuf) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }

    /// Check that `lock` is the guard of this buffer's reservation object.
    pub(super) fn check_lock(&self, lock: &ResvGuard<'_>) -> Result<()> {
        lock.check(&self.inner.resv)
    }

    /// The user-visible name (`DMA_BUF_SET_NAME`), if set.
    pub fn name(&self) -> Option<String> {
        self.inner.name.lock().clone()
    }

    /// Set the name, any time (`DMA_BUF_SET_NAME`). Once a descriptor of the buffer has
    /// left ([`fd`](Self::fd)), the name is stored in its file too, where other
    /// processes' [`get`](super::get) read it.
    ///
    /// # Errors
    ///
    /// `Invalid` for more than [`NAME_MAX`] bytes or an interior NUL; the name is unchanged.
    pub fn set_name(&self, name: &str) -> Result<()> {
        if name.len() > NAME_MAX {
            return Err(Error::Invalid("name longer than 31 bytes"));
        }
        if name.contains('\0') {
            return Err(Error::Invalid("name contains NUL"));
        }
        let mut n = self.inner.name.lock();
        *n = Some(name.to_string());
        if self.inner.file_key.get().is_some() {
            if let Some(f) = self.inner.ops.file() {
                super::fd::write_name_attr(f, Some(name));
            }
        }
        Ok(())
    }

    /// `llseek`: only offset 0 from the start (→ 0) or the end (→ size).
    ///
    /// # Errors
    ///
    /// `Invalid` for any other offset or for `SEEK_CUR`.
    pub fn llseek(&self, offset: i64, whence: Whence) -> Result<u64> {
        match (offset, whence) {
            (0, Whence::Set) => Ok(0),
            (0, Whence::End) => Ok(self.inner.size as u64),
            _ => Err(Error::Invalid(
                "dma-buf seeks only to offset 0 of start or end",
            )),
        }
    }

    /// The attachments, in attach order. `lock` is this buffer's guard (checked by the
    /// caller: [`LockedBuf::attachments`](super::LockedBuf::attachments)).
    pub(super) fn attachments_locked(&self, lock: &ResvGuard<'_>) -> Vec<Attachment> {
        self.settle_owed(lock);
        self.inner.locked.lock().attachments.clone()
    }

    /// Tell every dynamic importer that the memory is moving; `lock` is this buffer's
    /// guard (checked by the caller: [`LockedBuf::move_notify`](super::LockedBuf::move_notify)).
    pub(super) fn move_notify_locked(&self, lock: &ResvGuard<'_>) {
        self.settle_owed(lock);
        let atts = self.inner.locked.lock().attachments.clone();
        for a in atts {
            if let Some(imp) = a.importer() {
                imp.move_notify(lock, &a);
            }
        }
    }

    /// Note that an attachment owes deferred unmaps (settled by the next buffer-level
    /// locked call too).
    pub(super) fn note_owed(&self) {
        self.inner.owed.store(true, Ordering::SeqCst);
    }

    /// Settle work deferred by drops under a reservation lock: owed vunmaps, then every
    /// attachment's owed unmaps. `lock` is this buffer's guard (checked by the caller).
    /// One atomic load when nothing is owed.
    #[inline]
    pub(super) fn settle_owed(&self, lock: &ResvGuard<'_>) {
        if self.inner.owed.load(Ordering::Acquire) {
            self.settle_owed_slow(lock);
        }
    }

    #[cold]
    fn settle_owed_slow(&self, lock: &ResvGuard<'_>) {
        let (vmaps, atts) = {
            let mut l = self.inner.locked.lock();
            self.inner.owed.store(false, Ordering::SeqCst);
            (std::mem::take(&mut l.owed_vmaps), l.attachments.clone())
        };
        for segs in vmaps {
            let v = VMap {
                segs,
                _buf: self.clone(),
            };
            if let Err(e) = self.vunmap_locked(lock, v) {
                tracing::error!(ino = self.inner.ino, "deferred vunmap failed: {e}");
            }
        }
        for a in atts {
            a.settle(lock);
        }
    }

    pub(super) fn attach_state_push(&self, lock: &ResvGuard<'_>, a: &Attachment) -> Result<()> {
        self.check_lock(lock)?;
        self.inner.locked.lock().attachments.push(a.clone());
        Ok(())
    }

    /// Unlist `a`, handing back the list's handle (`None` if it was not listed). `lock`
    /// is this buffer's guard (the caller took it).
    pub(super) fn attach_state_take(
        &self,
        lock: &ResvGuard<'_>,
        a: &Attachment,
    ) -> Option<Attachment> {
        debug_assert!(self.check_lock(lock).is_ok());
        let mut l = self.inner.locked.lock();
        let i = l
            .attachments
            .iter()
            .position(|x| Attachment::ptr_eq(x, a))?;
        Some(l.attachments.remove(i))
    }
}

/// Every live buffer, in inode order (bufinfo's walk).
pub fn live_buffers() -> Vec<DmaBuf> {
    registry()
        .lock()
        .values()
        .filter_map(Weak::upgrade)
        .map(|inner| DmaBuf { inner })
        .collect()
}

/// How many buffers are live (exported, not yet released): [`live_buffers`]' length,
/// counted without taking references.
pub fn live_buffer_count() -> usize {
    registry()
        .lock()
        .values()
        .filter(|w| w.strong_count() > 0)
        .count()
}
