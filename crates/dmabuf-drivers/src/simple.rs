//! A small, complete exporter over one memfd — for tests, examples and benchmarks, and a
//! model of what an exporter must do. Counts every callback so tests can check who was
//! called, with which lock state.
//!
//! Maps go through the attached device's DMA ([`crate::device::dma`]), so a
//! non-coherent device gets a bounce buffer. Like the kernel's system heap, begin CPU
//! access syncs every live mapping of the buffer for the CPU (after waiting for the
//! implicit fences the access must follow, since the core waits only after this hook)
//! and end CPU access syncs
//! them for the device (each in its mapping's direction), and reports each sync to the
//! buffer's ownership tracker: without the bracket a non-coherent device sees stale data.

use crate::buf::{Attachment, Direction, DmaBuf, ExportInfo, Segment, SgTable};
use crate::buf::{Caps, Exporter};
use crate::device::dma::DmaMap;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::resv::{ResvGuard, Usage, RESERVATION_WW_CLASS};
use dmabuf_mem::memfd::{page_size, Memfd};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Callback counters.
#[derive(Default, Debug)]
pub struct Calls {
    /// `attach`.
    pub attach: AtomicUsize,
    /// `detach`.
    pub detach: AtomicUsize,
    /// `pin`.
    pub pin: AtomicUsize,
    /// `unpin`.
    pub unpin: AtomicUsize,
    /// `map`.
    pub map: AtomicUsize,
    /// `unmap`.
    pub unmap: AtomicUsize,
    /// `release`.
    pub release: AtomicUsize,
    /// `begin_cpu_access`.
    pub begin_cpu: AtomicUsize,
    /// `end_cpu_access`.
    pub end_cpu: AtomicUsize,
    /// `vmap`.
    pub vmap: AtomicUsize,
    /// `vunmap`.
    pub vunmap: AtomicUsize,
    /// `mmap`.
    pub mmap: AtomicUsize,
    /// Callbacks that found the reservation lock in the wrong state (per lockdep).
    pub lock_state_wrong: AtomicUsize,
}

impl Calls {
    /// Read one counter.
    pub fn get(c: &AtomicUsize) -> usize {
        c.load(Ordering::SeqCst)
    }
}

/// A live DMA mapping the exporter made: the device, the mapping, the buffer and the
/// tracker key of the mapping.
struct LiveMap {
    dev: Arc<Device>,
    map: DmaMap,
    ino: u64,
    key: u64,
}

/// The exporter; see the module docs.
///
/// Lock: `live` (the DMA mappings it made, by attachment and address) is a leaf mutex,
/// held to record or forget a mapping and across the syncs of CPU access (which report
/// to the buffer's tracker) — never while waiting on fences.
pub struct SimpleExporter {
    mem: Arc<Memfd>,
    dynamic: bool,
    cache_sgt_mapping: bool,
    live: Mutex<HashMap<(u64, u64), LiveMap>>,
    /// Report syncs in the CPU access direction instead of each mapping's own
    /// direction — what the kernel's system heap passes to `dma_sync_sgtable_for_cpu` —
    /// so that a mapping of another direction draws a `SyncDirectionMismatch` report.
    pub sync_in_access_direction: AtomicBool,
    /// Make the next `attach` fail with `Busy`.
    pub fail_attach: AtomicBool,
    /// Make `map` fail with `NoMem`.
    pub fail_map: AtomicBool,
    /// Callback counters.
    pub calls: Calls,
}

impl SimpleExporter {
    fn build(pages: usize, dynamic: bool, cache: bool) -> Result<Arc<Self>> {
        let mem = Arc::new(Memfd::create("simple-exporter", pages, false)?);
        Ok(Arc::new(SimpleExporter {
            mem,
            dynamic,
            cache_sgt_mapping: cache,
            live: Mutex::new(HashMap::new()),
            sync_in_access_direction: AtomicBool::new(false),
            fail_attach: AtomicBool::new(false),
            fail_map: AtomicBool::new(false),
            calls: Calls::default(),
        }))
    }

    /// A static exporter of `pages` pages.
    ///
    /// # Errors
    ///
    /// Those of [`Memfd::create`]: `Invalid` for zero pages, `NoMem`, `Os`.
    pub fn new(pages: usize) -> Result<Arc<Self>> {
        Self::build(pages, false, false)
    }

    /// A dynamic exporter (implements pin/unpin).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn dynamic(pages: usize) -> Result<Arc<Self>> {
        Self::build(pages, true, false)
    }

    /// A static exporter that asks the core to cache the first mapping.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn caching(pages: usize) -> Result<Arc<Self>> {
        Self::build(pages, false, true)
    }

    /// Export a buffer over the whole memfd (each call a new buffer over the same
    /// memory). Takes no lock of the exporter.
    ///
    /// # Errors
    ///
    /// The core's export errors: `Os` when out of descriptors, injected
    /// [`Export`](crate::fault::Site::Export) faults.
    pub fn export(self: &Arc<Self>) -> Result<DmaBuf> {
        crate::buf::export(ExportInfo::new("simple", self.mem.len(), self.clone()))
    }

    /// The memory.
    pub fn memory(&self) -> &Arc<Memfd> {
        &self.mem
    }

    fn segments(&self) -> Vec<Segment> {
        vec![Segment::new(self.mem.clone(), 0, self.mem.len()).expect("whole memfd")]
    }

    /// Sync every live mapping of `buf` for the CPU (`for_cpu`) or for its device, and
    /// report each sync to the buffer's tracker.
    fn sync_all(&self, buf: &DmaBuf, access: Direction, for_cpu: bool) -> Result<()> {
        let live = self.live.lock();
        for m in live.values().filter(|m| m.ino == buf.ino()) {
            if for_cpu {
                m.dev.dma().sync_for_cpu(&m.map)?;
            } else {
                m.dev.dma().sync_for_device(&m.map)?;
            }
            if let Some(t) = buf.tracker() {
                let dir = if self.sync_in_access_direction.load(Ordering::Relaxed) {
                    access
                } else {
                    m.map.direction()
                };
                t.synced(m.ino, m.key, dir);
            }
        }
        Ok(())
    }

    fn expect_locked(&self, locked: bool) {
        if lockdep::enabled() && lockdep::is_held(RESERVATION_WW_CLASS.lock_class()) != locked {
            self.calls.lock_state_wrong.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Exporter for SimpleExporter {
    fn caps(&self) -> Caps {
        Caps {
            pin: self.dynamic,
            unpin: self.dynamic,
            vmap: true,
            mmap: true,
            cache_sgt_mapping: self.cache_sgt_mapping,
        }
    }

    fn attach(&self, _buf: &DmaBuf, _att: &Attachment) -> Result<()> {
        self.expect_locked(false);
        self.calls.attach.fetch_add(1, Ordering::SeqCst);
        if self.fail_attach.swap(false, Ordering::SeqCst) {
            return Err(Error::Busy("device cannot reach the memory"));
        }
        Ok(())
    }

    fn detach(&self, _buf: &DmaBuf, _att: &Attachment) {
        self.expect_locked(false);
        self.calls.detach.fetch_add(1, Ordering::SeqCst);
    }

    fn pin(&self, _lock: &ResvGuard<'_>, _att: &Attachment) -> Result<()> {
        self.expect_locked(true);
        self.calls.pin.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn unpin(&self, _lock: &ResvGuard<'_>, _att: &Attachment) {
        self.expect_locked(true);
        self.calls.unpin.fetch_add(1, Ordering::SeqCst);
    }

    fn map(&self, _lock: &ResvGuard<'_>, att: &Attachment, dir: Direction) -> Result<SgTable> {
        self.expect_locked(true);
        self.calls.map.fetch_add(1, Ordering::SeqCst);
        if self.fail_map.load(Ordering::SeqCst) {
            return Err(Error::NoMem);
        }
        let m =
            att.device()
                .dma()
                .map(&self.segments(), dir, &format!("buf{}", att.buf().ino()))?;
        let t = m.table().clone();
        let live = LiveMap {
            dev: att.device().clone(),
            ino: att.buf().ino(),
            key: att.mapping_key(&t),
            map: m,
        };
        self.live
            .lock()
            .insert((att.id(), live.map.dma_addr()), live);
        Ok(t)
    }

    fn unmap(&self, _lock: &ResvGuard<'_>, att: &Attachment, table: SgTable, _dir: Direction) {
        self.expect_locked(true);
        self.calls.unmap.fetch_add(1, Ordering::SeqCst);
        let key = (att.id(), table.entries()[0].dma_addr);
        if let Some(m) = self.live.lock().remove(&key) {
            let _ = att.device().dma().unmap(m.map);
        }
    }

    fn release(&self, _ino: u64) {
        self.calls.release.fetch_add(1, Ordering::SeqCst);
    }

    fn begin_cpu_access(&self, buf: &DmaBuf, dir: Direction) -> Result<()> {
        self.expect_locked(false);
        self.calls.begin_cpu.fetch_add(1, Ordering::SeqCst);
        if self.live.lock().values().any(|m| m.ino == buf.ino()) {
            // The core waits for the implicit fences only after this hook: a sync for
            // the CPU before a device job is done would copy its bounce buffer too early.
            // (Uninterruptible: the hook has no interrupt token.)
            let usage = Usage::rw(dir.is_write_for_implicit_sync());
            buf.resv().wait_timeout(usage, Duration::MAX, None)?;
        }
        self.sync_all(buf, dir, true)
    }

    fn end_cpu_access(&self, buf: &DmaBuf, dir: Direction) -> Result<()> {
        self.expect_locked(false);
        self.calls.end_cpu.fetch_add(1, Ordering::SeqCst);
        self.sync_all(buf, dir, false)
    }

    fn mmap(
        &self,
        _buf: &DmaBuf,
        pgoff: usize,
        pages: usize,
        _shared: bool,
    ) -> Result<Vec<Segment>> {
        self.expect_locked(false);
        self.calls.mmap.fetch_add(1, Ordering::SeqCst);
        Ok(vec![Segment::new(
            self.mem.clone(),
            pgoff * page_size(),
            pages * page_size(),
        )?])
    }

    fn vmap(&self, _lock: &ResvGuard<'_>, _buf: &DmaBuf) -> Result<Vec<Segment>> {
        self.expect_locked(true);
        self.calls.vmap.fetch_add(1, Ordering::SeqCst);
        Ok(self.segments())
    }

    fn vunmap(&self, _lock: &ResvGuard<'_>, _buf: &DmaBuf) {
        self.expect_locked(true);
        self.calls.vunmap.fetch_add(1, Ordering::SeqCst);
    }
}
