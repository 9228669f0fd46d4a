//! The buffer object: export, references, names, CPU access, vmap, mmap, implicit sync.

use super::ops::{Caps, Exporter};
use super::AccessTracker;
use super::{Attachment, Direction, Segment};
use crate::error::{Error, Result};
use crate::fence::{self, Fence};
use crate::interrupt::Interrupt;
use crate::resv::{Resv, ResvGuard, Usage, RESERVATION_WW_CLASS};
use dmabuf_mem::memfd::{page_size, Mapping};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

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
    pub fn bits(self) -> u32 {
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
    vmap_count: usize,
    vmap: Option<Arc<Vec<Segment>>>,
    /// vmaps whose [`VMapGuard`] was dropped while its thread held a reservation lock:
    /// vunmapped at the start of the next call holding this buffer's lock.
    /// Mappings of deferred vunmaps (kept without the buffer reference a `VMap` holds,
    /// so they do not keep the buffer alive).
    owed_vmaps: Vec<Arc<Vec<Segment>>>,
}

pub(super) struct BufInner {
    ino: u64,
    size: usize,
    exp_name: String,
    flags: FileFlags,
    caps: Caps,
    ops: Arc<dyn Exporter>,
    resv: Arc<Resv>,
    embedded_resv: bool,
    name: Mutex<Option<String>>,
    pub(super) locked: Mutex<BufLocked>,
    /// The ownership tracker told of this buffer's events, once set.
    tracker: OnceLock<Arc<dyn AccessTracker>>,
    /// Whether work is owed: `locked.owed_vmaps` non-empty, or an attachment has
    /// deferred unmaps (see [`DmaBuf::settle_owed`]).
    owed: AtomicBool,
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
/// Must not hold a reservation lock. Errors: `Invalid` when `ops` is `None`, `pin` and
/// `unpin` are not both implemented or both absent, `cache_sgt_mapping` is combined with
/// `pin`, or the size is zero; `Invalid` (with a lockdep report) when called holding a
/// reservation lock.
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
    });
    registry().lock().insert(ino, Arc::downgrade(&inner));
    Ok(DmaBuf { inner })
}

impl Drop for BufInner {
    fn drop(&mut self) {
        registry().lock().remove(&self.ino);
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
    pub const VALID: u64 = RW | END;
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
    pub fn exporter(&self) -> &Arc<dyn Exporter> {
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
    /// Errors: `Busy` when another tracker is already set (setting the same one again is
    /// a no-op); nothing changes.
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

    /// Set the name, any time (`DMA_BUF_SET_NAME`).
    ///
    /// Errors: `Invalid` for more than [`NAME_MAX`] bytes or an interior NUL; the name
    /// is unchanged.
    pub fn set_name(&self, name: &str) -> Result<()> {
        if name.len() > NAME_MAX {
            return Err(Error::Invalid("name longer than 31 bytes"));
        }
        if name.contains('\0') {
            return Err(Error::Invalid("name contains NUL"));
        }
        *self.inner.name.lock() = Some(name.to_string());
        Ok(())
    }

    /// `llseek`: only offset 0 from the start (→ 0) or the end (→ size).
    ///
    /// Errors: `Invalid` for any other offset or for `SEEK_CUR`.
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

    /// Prepare CPU access in `dir` (`dma_buf_begin_cpu_access`): the exporter's hook,
    /// then a wait — no timeout — for the implicit fences the access must follow
    /// (writers for a read; everyone but bookkeeping for a write). Once both succeeded,
    /// the buffer's ownership tracker (if any) records that the CPU owns the buffer.
    ///
    /// Must not hold a reservation lock. Errors: the exporter's, `Invalid` (with a
    /// lockdep report) when called holding a reservation lock.
    #[track_caller]
    pub fn begin_cpu_access(&self, dir: Direction) -> Result<()> {
        self.begin_cpu_access_inner(dir, None)
    }

    /// [`begin_cpu_access`](Self::begin_cpu_access), interruptibly: also `Interrupted`
    /// (the kernel's `-ERESTARTSYS`); the exporter hook has run and is not undone, as in
    /// the kernel.
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
    /// Must not hold a reservation lock. Errors: the exporter's; `Invalid` as above.
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
    /// Errors: those of [`begin_cpu_access`](Self::begin_cpu_access).
    #[track_caller]
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
    /// Errors: `Invalid` for bits outside READ|WRITE|END or no READ/WRITE bit; then
    /// those of begin/end CPU access.
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

    /// vmap proper ([`LockedBuf::vmap`](super::LockedBuf::vmap)); `lock` is this
    /// buffer's guard (checked by the caller).
    pub(super) fn vmap_locked(&self, lock: &ResvGuard<'_>) -> Result<VMap> {
        self.settle_owed(lock);
        if !self.inner.caps.vmap {
            return Err(Error::Invalid("exporter has no vmap"));
        }
        let mut l = self.inner.locked.lock();
        if let Some(v) = l.vmap.clone() {
            l.vmap_count += 1;
            return Ok(VMap {
                segs: v,
                _buf: self.clone(),
            });
        }
        drop(l);
        crate::fault::check(crate::fault::Site::Vmap)?;
        let segs = Arc::new(self.inner.ops.vmap(lock, self)?);
        let mut l = self.inner.locked.lock();
        l.vmap = Some(segs.clone());
        l.vmap_count = 1;
        Ok(VMap {
            segs,
            _buf: self.clone(),
        })
    }

    /// How many vmap references are live ([`LockedBuf::vmap`](super::LockedBuf::vmap)
    /// less [`LockedBuf::vunmap`](super::LockedBuf::vunmap)); 0 when the buffer is not vmapped. A snapshot: takes
    /// only the buffer's inner state lock, not the reservation lock.
    pub fn vmap_count(&self) -> usize {
        self.inner.locked.lock().vmap_count
    }

    /// vunmap proper, after settling ([`LockedBuf::vunmap`](super::LockedBuf::vunmap));
    /// `lock` is this buffer's guard (checked by the caller).
    pub(super) fn vunmap_locked(&self, lock: &ResvGuard<'_>, map: VMap) -> Result<()> {
        let mut l = self.inner.locked.lock();
        match &l.vmap {
            Some(v) if Arc::ptr_eq(v, &map.segs) && l.vmap_count > 0 => {}
            _ => return Err(Error::Invalid("vunmap of a mapping that is not live")),
        }
        l.vmap_count -= 1;
        if l.vmap_count == 0 {
            l.vmap = None;
            drop(l);
            self.inner.ops.vunmap(lock, self);
        }
        Ok(())
    }

    /// [`LockedBuf::vmap`](super::LockedBuf::vmap) taking the lock itself; the mapping is dropped (vunmapped,
    /// locking again) with the returned guard.
    ///
    /// Must not hold a reservation lock.
    #[track_caller]
    pub fn vmap_unlocked(&self) -> Result<VMapGuard> {
        must_not_hold_resv("dma_buf_vmap_unlocked")?;
        let g = self.inner.resv.lock_no_ctx()?;
        let map = self.vmap_locked(&g)?;
        Ok(VMapGuard {
            buf: self.clone(),
            map: Some(map),
        })
    }

    /// Map pages `pgoff .. pgoff+pages` into this process (`mmap` of the buffer's fd),
    /// shared; writable when `write`. Same as [`mmap_with`](Self::mmap_with) with
    /// `shared`.
    ///
    /// Errors: those of [`mmap_with`](Self::mmap_with).
    #[track_caller]
    pub fn mmap(&self, pgoff: usize, pages: usize, write: bool) -> Result<UserMapping> {
        self.mmap_with(pgoff, pages, write, true)
    }

    /// Map pages `pgoff .. pgoff+pages` into this process, `MAP_SHARED` when `shared`
    /// else `MAP_PRIVATE` (copy-on-write: writes stay in the mapping); writable when
    /// `write`. The mapping holds a buffer reference.
    ///
    /// Must not hold a reservation lock. Errors, in order: `Access` for a shared writable
    /// mapping of a read-only buffer or any mapping of a buffer that is not readable (the
    /// VFS rules, checked first); `Invalid` without an exporter mmap; `Overflow` when
    /// `pgoff + pages` wraps; `Invalid` for zero pages or past the last whole page; the
    /// exporter's errors (`Invalid` for a private
    /// mapping of a shared-only exporter); `Invalid` when the exporter's segments do not
    /// cover the range. Nothing is mapped on error.
    #[track_caller]
    pub fn mmap_with(
        &self,
        pgoff: usize,
        pages: usize,
        write: bool,
        shared: bool,
    ) -> Result<UserMapping> {
        must_not_hold_resv("dma_buf mmap")?;
        // The VFS checks the access mode before the file's mmap runs.
        if shared && write && !self.inner.flags.write {
            return Err(Error::Access("writable mapping of a read-only buffer"));
        }
        if !self.inner.flags.read {
            return Err(Error::Access("mapping of a buffer not open for reading"));
        }
        if !self.inner.caps.mmap {
            return Err(Error::Invalid("exporter has no mmap"));
        }
        let end = pgoff
            .checked_add(pages)
            .ok_or(Error::Overflow("pgoff + pages wraps"))?;
        // Whole pages of the buffer only (the kernel shifts the size down).
        let buf_pages = self.inner.size / page_size();
        if pages == 0 || end > buf_pages {
            return Err(Error::Invalid("mmap range past the end of the buffer"));
        }
        let segs = self.inner.ops.mmap(self, pgoff, pages, shared)?;
        let covered = segs
            .iter()
            .try_fold(0usize, |a, s| a.checked_add(s.len))
            .unwrap_or(usize::MAX);
        if covered != pages * page_size() {
            return Err(Error::Invalid(
                "exporter's mmap segments do not cover the range",
            ));
        }
        let pieces: Vec<_> = segs.iter().map(|s| (s.mem.fd(), s.offset, s.len)).collect();
        let map = Mapping::new_pieces(&pieces, write, shared)?;
        Ok(UserMapping {
            _buf: self.clone(),
            map,
        })
    }

    /// The fences an access would wait for, as one fence
    /// (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`): READ alone → the writers; WRITE → every
    /// implicit fence; none pending → a signalled stub. A snapshot: fences added later are
    /// not in it.
    ///
    /// Errors: `Invalid` unless `flags` is a non-empty subset of READ|WRITE.
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
    /// Must not hold a reservation lock. Errors: `Invalid` for bad flags; nothing added.
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
    /// as a sync-file descriptor (close-on-exec).
    ///
    /// Errors: `Invalid` for bad flags; descriptor errors (`EMFILE`) as `Os`.
    pub fn export_sync_file(&self, flags: u64) -> Result<crate::sync_file::SyncFile> {
        crate::sync_file::SyncFile::new(self.export_sync_fence(flags)?)
    }

    /// `DMA_BUF_IOCTL_IMPORT_SYNC_FILE`: [`import_sync_fence`](Self::import_sync_fence) of
    /// the fence behind the sync-file descriptor `fd`.
    ///
    /// Errors: `Invalid` for bad flags or when `fd` is not a sync file; nothing added.
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
    /// Bookkeeping fences never count.
    pub fn poll(&self) -> (bool, bool) {
        let r = &self.inner.resv;
        (r.test_signaled(Usage::Write), r.test_signaled(Usage::Read))
    }

    /// Wait until [`poll`](Self::poll) reports `read` / `write` readiness, at most
    /// `timeout`. Returns the readiness at the end.
    pub fn poll_wait(&self, read: bool, write: bool, timeout: Duration) -> (bool, bool) {
        let usage = if write { Usage::Read } else { Usage::Write };
        if read || write {
            let _ = self.inner.resv.wait_timeout(usage, timeout, None);
        }
        self.poll()
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

    fn defer_vunmap(&self, map: VMap) {
        let mut l = self.inner.locked.lock();
        l.owed_vmaps.push(map.segs.clone());
        self.inner.owed.store(true, Ordering::SeqCst);
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

/// A CPU mapping of a whole buffer ([`LockedBuf::vmap`](super::LockedBuf::vmap)). Reads
/// and writes copy; CPU access still needs begin/end CPU access for coherency.
#[derive(Clone)]
pub struct VMap {
    segs: Arc<Vec<Segment>>,
    /// Keeps the buffer — and so its memory — alive while any copy of the mapping is:
    /// a stale copy must never reach memory already given to another buffer.
    _buf: DmaBuf,
}

impl std::fmt::Debug for VMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VMap")
            .field("segments", &self.segs.len())
            .finish()
    }
}

impl VMap {
    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.segs.iter().map(|s| s.len).sum()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn pieces(&self, offset: usize, len: usize) -> Result<Vec<(Segment, usize, usize)>> {
        let end = offset
            .checked_add(len)
            .ok_or(Error::Overflow("offset + length wraps"))?;
        if end > self.len() {
            return Err(Error::Invalid("range past the end of the vmap"));
        }
        let mut out = Vec::new();
        let (mut at, mut base) = (offset, 0usize);
        for s in self.segs.iter() {
            let s_end = base + s.len;
            if at < s_end && at < end {
                let n = (end.min(s_end)) - at;
                out.push((s.clone(), at - base, n));
                at += n;
            }
            base = s_end;
        }
        Ok(out)
    }

    /// Copy bytes at `offset` into `buf`.
    ///
    /// Errors: `Invalid` past the end, `Overflow` if the range wraps; nothing copied.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        for (s, off, n) in self.pieces(offset, buf.len())? {
            s.mem
                .map()
                .read_at(s.offset + off, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// Copy `data` to `offset`.
    ///
    /// Errors: as [`read_at`](Self::read_at); nothing written.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        let mut done = 0;
        for (s, off, n) in self.pieces(offset, data.len())? {
            s.mem
                .map()
                .write_at(s.offset + off, &data[done..done + n])?;
            done += n;
        }
        Ok(())
    }
}

/// A vmap that is vunmapped (taking the reservation lock) when dropped.
///
/// Dropping it while the thread holds a reservation lock (this buffer's or another's, as
/// lockdep sees it) is reported once (lockdep `Misuse`) and the vunmap DEFERRED to the
/// next call holding this buffer's lock (`vmap`, `vunmap`, `move_notify`, `attachments`,
/// attach, detach — not an attachment's map/unmap, whose fast path stays one load); a
/// vunmap still owed when the last buffer reference
/// drops is counted done, the exporter's release freeing the memory. With lockdep off
/// this cannot be seen: the drop locks, and under its own buffer's lock it deadlocks,
/// as the kernel's violation would.
pub struct VMapGuard {
    buf: DmaBuf,
    map: Option<VMap>,
}

impl VMapGuard {
    /// The mapping.
    pub fn map(&self) -> &VMap {
        self.map.as_ref().expect("live until drop")
    }
}

impl std::ops::Deref for VMapGuard {
    type Target = VMap;
    fn deref(&self) -> &VMap {
        self.map()
    }
}

impl Drop for VMapGuard {
    fn drop(&mut self) {
        if let Some(m) = self.map.take() {
            if lockdep::is_held(RESERVATION_WW_CLASS.lock_class()) {
                // Defer first: the report may panic (the default policy).
                self.buf.defer_vunmap(m);
                let whose = if self.buf.resv().is_held_by_current_thread() {
                    "its own buffer's"
                } else {
                    "another buffer's"
                };
                lockdep::report(
                    lockdep::ReportKind::Misuse,
                    &[RESERVATION_WW_CLASS.lock_class()],
                    &format!(
                        "vmap of dma-buf {} dropped while holding {whose} reservation lock; \
                         the vunmap is deferred to the next locked call on the buffer",
                        self.buf.ino()
                    ),
                );
                return;
            }
            match self.buf.resv().lock_no_ctx() {
                Ok(g) => {
                    self.buf.settle_owed(&g);
                    let _ = self.buf.vunmap_locked(&g, m);
                }
                // This thread holds the buffer's lock and lockdep is off (else the
                // branch above ran): defer, as above, rather than wait forever.
                Err(_) => self.buf.defer_vunmap(m),
            }
        }
    }
}

/// Begun CPU access, ended when dropped (or by [`CpuAccess::end`]).
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

    /// End the access now, with the exporter's result.
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

/// A user mapping of (part of) a buffer ([`DmaBuf::mmap`]); holds a buffer reference.
pub struct UserMapping {
    _buf: DmaBuf,
    map: Mapping,
}

impl UserMapping {
    /// The mapping's memory.
    pub fn mapping(&self) -> &Mapping {
        &self.map
    }
}
