//! A small, complete exporter over one memfd — for tests, examples and benchmarks, and a
//! model of what an exporter must do. Counts every callback so tests can check who was
//! called, with which lock state.

use super::ops::{Caps, Exporter};
use super::{dmabuf, Attachment, Direction, DmaBuf, ExportInfo, Segment, SgTable};
use crate::device::dma::DmaMap;
use crate::error::{Error, Result};
use crate::heap::memfd::{page_size, Memfd};
use crate::resv::{ResvGuard, RESERVATION_WW_CLASS};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

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

/// The exporter; see the module docs.
pub struct SimpleExporter {
    mem: Arc<Memfd>,
    dynamic: bool,
    cache_sgt_mapping: bool,
    /// With `trivial`, map returns a clone of a fixed table (no IOMMU), for benchmarks.
    trivial: Option<SgTable>,
    live: Mutex<HashMap<(u64, u64), DmaMap>>,
    /// Make the next `attach` fail with `Busy`.
    pub fail_attach: AtomicBool,
    /// Make `map` fail with `NoMem`.
    pub fail_map: AtomicBool,
    /// Callback counters.
    pub calls: Calls,
}

impl SimpleExporter {
    fn build(pages: usize, dynamic: bool, cache: bool, trivial: bool) -> Result<Arc<Self>> {
        let mem = Arc::new(Memfd::create("simple-exporter", pages, false)?);
        let trivial = trivial.then(|| {
            SgTable::new(vec![super::sg::SgEntry {
                segment: Segment::new(mem.clone(), 0, mem.len()).expect("whole memfd"),
                dma_addr: 0x1000,
            }])
        });
        Ok(Arc::new(SimpleExporter {
            mem,
            dynamic,
            cache_sgt_mapping: cache,
            trivial,
            live: Mutex::new(HashMap::new()),
            fail_attach: AtomicBool::new(false),
            fail_map: AtomicBool::new(false),
            calls: Calls::default(),
        }))
    }

    /// A static exporter of `pages` pages.
    pub fn new(pages: usize) -> Result<Arc<Self>> {
        Self::build(pages, false, false, false)
    }

    /// A dynamic exporter (implements pin/unpin).
    pub fn dynamic(pages: usize) -> Result<Arc<Self>> {
        Self::build(pages, true, false, false)
    }

    /// A static exporter that asks the core to cache the first mapping.
    pub fn caching(pages: usize) -> Result<Arc<Self>> {
        Self::build(pages, false, true, false)
    }

    /// A static exporter whose map returns a clone of a fixed table.
    pub fn trivial(pages: usize) -> Result<Arc<Self>> {
        Self::build(pages, false, false, true)
    }

    /// Export a buffer over the whole memfd.
    pub fn export(self: &Arc<Self>) -> Result<DmaBuf> {
        dmabuf::export(ExportInfo::new("simple", self.mem.len(), self.clone()))
    }

    /// The memory.
    pub fn memory(&self) -> &Arc<Memfd> {
        &self.mem
    }

    fn segments(&self) -> Vec<Segment> {
        vec![Segment::new(self.mem.clone(), 0, self.mem.len()).expect("whole memfd")]
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
        if let Some(t) = &self.trivial {
            return Ok(t.clone());
        }
        let m =
            att.device()
                .dma()
                .map(&self.segments(), dir, &format!("buf{}", att.buf().ino()))?;
        let t = m.table().clone();
        self.live.lock().insert((att.id(), m.dma_addr()), m);
        Ok(t)
    }

    fn unmap(&self, _lock: &ResvGuard<'_>, att: &Attachment, table: SgTable, _dir: Direction) {
        self.expect_locked(true);
        self.calls.unmap.fetch_add(1, Ordering::SeqCst);
        if self.trivial.is_some() {
            return;
        }
        let key = (att.id(), table.entries()[0].dma_addr);
        if let Some(m) = self.live.lock().remove(&key) {
            let _ = att.device().dma().unmap(m);
        }
    }

    fn release(&self, _ino: u64) {
        self.calls.release.fetch_add(1, Ordering::SeqCst);
    }

    fn begin_cpu_access(&self, _buf: &DmaBuf, _dir: Direction) -> Result<()> {
        self.expect_locked(false);
        self.calls.begin_cpu.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn end_cpu_access(&self, _buf: &DmaBuf, _dir: Direction) -> Result<()> {
        self.expect_locked(false);
        self.calls.end_cpu.fetch_add(1, Ordering::SeqCst);
        Ok(())
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
