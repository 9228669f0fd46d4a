//! [`MemoryExporter`]: the exporter of memory the core can reach — segments of memfds —
//! parameterised by a few per-exporter rules. Every heap buffer (system, contiguous,
//! udmabuf) is exported by it, and so is a buffer that came in as a descriptor
//! ([`get`](super::get) of another process's buffer).
//!
//! It follows the kernel's system heap:
//!
//! - each attachment gets its own state ([`Exporter::attach`]) with at most ONE live DMA
//!   mapping, made through the attachment's device ([`Dma::map`](dmabuf_mem::dma::Dma::map))
//!   when the importer maps and unmapped when it unmaps; the state's `Option<DmaMap>` is
//!   the kernel's per-attachment "mapped" flag;
//! - `begin_cpu_access` syncs every *mapped* attachment for the CPU, `end_cpu_access`
//!   for the device (bounce buffers of non-coherent devices move then); no fence waits
//!   here — the core does those;
//! - `vmap` hands out all segments (the core refcounts it); `mmap` hands out the range's
//!   segments.
//!
//! The buffer has a descriptor ([`Exporter::file`]) when its memory is one whole memfd
//! of ours: a pooled system-heap memfd, a contiguous region's block, or a file that
//! came in as a descriptor.
//!
//! Per-heap rules: a contiguous or udmabuf buffer maps shared only (a private mapping is
//! `Invalid`); a udmabuf buffer refuses `end_cpu_access` before any `begin_cpu_access`
//! (`Invalid`, as udmabuf does: its table only exists after the first begin).
//!
//! Memory goes back where it came from when the exporter is dropped, which happens after
//! the buffer's last reference is gone (its release): user mappings, attachments and
//! mappings all hold a buffer reference, so nobody reaches the memory through the
//! buffer any more. A system-heap memfd goes back to its pool only if no other handle to
//! it survives (a kept clone of a table or vmap); otherwise it is simply closed when the
//! last handle drops, so no buffer ever shows another's data.
//!
//! Locks: `attachments` is the buffer's own lock (the kernel's `buffer->lock`), a leaf
//! taken by attach/detach/begin/end CPU access, never held while calling into the core;
//! each attachment's `map` mutex is taken under it (CPU access) or alone (map/unmap,
//! which run under the reservation lock).

use super::{Attachment, Caps, Direction, DmaBuf, Exporter, Segment, SgTable};
use crate::error::{Error, Result};
use crate::resv::ResvGuard;
use dmabuf_mem::dma::DmaMap;
use dmabuf_mem::memfd::{page_size, Memfd, MemfdPool};
use dmabuf_mem::region::Block;
use dmabuf_mem::Device;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where a buffer's memory came from, and where it goes back.
pub enum Backing {
    /// A memfd of the system heap's pool: returned to the pool when unreachable.
    Pooled {
        /// The memfd.
        mem: Arc<Memfd>,
        /// Its pool.
        pool: Arc<MemfdPool>,
    },
    /// A block of a contiguous region (its own memfd): freed (and zeroed) when dropped.
    Block(Block),
    /// A caller's memory (udmabuf): the duplicated fds close when the segments drop.
    Imported,
    /// One whole memfd of ours that others hold too (a buffer that came in as a
    /// descriptor): closed when the buffer goes, never pooled. It is the buffer's file.
    File(Arc<Memfd>),
}

/// What differs between exporters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rules {
    /// Private mappings are refused with `Invalid` (CMA heap, udmabuf).
    pub shared_only: bool,
    /// `end_cpu_access` before any `begin_cpu_access` is `Invalid` (udmabuf).
    pub begin_before_end: bool,
}

/// One attachment's state: its device and its one live DMA mapping, if mapped.
struct HeapAttachment {
    id: u64,
    dev: Arc<Device>,
    map: Mutex<Option<DmaMap>>,
}

/// The exporter of one buffer of memfd memory; see the module docs.
pub struct MemoryExporter {
    segs: Vec<Segment>,
    len: usize,
    rules: Rules,
    backing: Option<Backing>,
    /// Whether the memory is one whole memfd of ours, the backing's ([`Exporter::file`]).
    whole_file: bool,
    /// The buffer lock: the attachments, in attach order.
    attachments: Mutex<Vec<Arc<HeapAttachment>>>,
    /// Whether `begin_cpu_access` ever ran (udmabuf's rule).
    begun: AtomicBool,
}

impl std::fmt::Debug for MemoryExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryExporter")
            .field("segments", &self.segs.len())
            .field("len", &self.len)
            .finish()
    }
}

impl MemoryExporter {
    /// An exporter over `segs` (non-empty, in buffer order), whose memory goes back to
    /// `backing` when the buffer is released.
    #[inline]
    pub fn new(segs: Vec<Segment>, rules: Rules, backing: Backing) -> Arc<Self> {
        let len = segs.iter().map(|s| s.len).sum();
        // A descriptor only for memory that is one whole memfd of ours from offset 0:
        // the file then shows exactly the buffer's bytes and size. A caller's memfd
        // (udmabuf) or a block of a region is not such a file.
        let whole = |m: &Arc<Memfd>| {
            m.len() == len
                && segs.iter().try_fold(0usize, |at, s| {
                    (Arc::ptr_eq(&s.mem, m) && s.offset == at).then_some(at + s.len)
                }) == Some(len)
        };
        let whole_file = match &backing {
            Backing::Pooled { mem, .. } | Backing::File(mem) => whole(mem),
            Backing::Block(b) => whole(b.memory()),
            Backing::Imported => false,
        };
        Arc::new(MemoryExporter {
            segs,
            len,
            rules,
            backing: Some(backing),
            whole_file,
            attachments: Mutex::new(Vec::new()),
            begun: AtomicBool::new(false),
        })
    }

    /// The segments covering bytes `off .. off+len` (both page-aligned, in range).
    fn range(&self, off: usize, len: usize) -> Result<Vec<Segment>> {
        let end = off
            .checked_add(len)
            .filter(|&e| e <= self.len)
            .ok_or(Error::Invalid("range past the end of the buffer"))?;
        let mut out = Vec::new();
        let mut base = 0usize;
        for s in &self.segs {
            let s_end = base + s.len;
            let (lo, hi) = (off.max(base), end.min(s_end));
            if lo < hi {
                out.push(Segment::new(s.mem.clone(), s.offset + lo - base, hi - lo)?);
            }
            base = s_end;
        }
        Ok(out)
    }

    fn state(att: &Attachment) -> Result<Arc<HeapAttachment>> {
        att.exporter_data()
            .as_ref()
            .and_then(|d| d.downcast_ref::<Arc<HeapAttachment>>())
            .cloned()
            .ok_or(Error::Invalid("attachment not made through this exporter"))
    }

    /// Sync every mapped attachment, for the CPU or for the device.
    fn sync_all(&self, for_cpu: bool) -> Result<()> {
        let atts = self.attachments.lock();
        for a in atts.iter() {
            if let Some(m) = a.map.lock().as_ref() {
                let dma = a.dev.dma();
                if for_cpu {
                    dma.sync_for_cpu(m)?;
                } else {
                    dma.sync_for_device(m)?;
                }
            }
        }
        Ok(())
    }
}

impl Exporter for MemoryExporter {
    fn caps(&self) -> Caps {
        Caps {
            vmap: true,
            mmap: true,
            ..Caps::default()
        }
    }

    /// Lists the attachment (buffer lock) with its own, unmapped state.
    fn attach(&self, _buf: &DmaBuf, att: &Attachment) -> Result<()> {
        let st = Arc::new(HeapAttachment {
            id: att.id(),
            dev: att.device().clone(),
            map: Mutex::new(None),
        });
        *att.exporter_data() = Some(Box::new(st.clone()));
        self.attachments.lock().push(st);
        Ok(())
    }

    /// Unlists the attachment; a mapping still live (the core unmaps first) is unmapped.
    fn detach(&self, _buf: &DmaBuf, att: &Attachment) {
        let mut atts = self.attachments.lock();
        if let Some(i) = atts.iter().position(|a| a.id == att.id()) {
            let st = atts.remove(i);
            drop(atts);
            let live = st.map.lock().take();
            if let Some(m) = live {
                let _ = st.dev.dma().unmap(m);
            }
        }
        *att.exporter_data() = None;
    }

    /// DMA-maps the buffer for the attachment's device (reservation lock held).
    ///
    /// # Errors
    ///
    /// `Busy` when the attachment is already mapped (one table per attachment);
    /// `Invalid` for an attachment this exporter did not see attach; the DMA API's
    /// `NoMem` (IOVA space or bounce memory exhausted). Nothing stays mapped on error.
    fn map(&self, _lock: &ResvGuard<'_>, att: &Attachment, dir: Direction) -> Result<SgTable> {
        let st = Self::state(att)?;
        let mut slot = st.map.lock();
        if slot.is_some() {
            return Err(Error::Busy("attachment already mapped"));
        }
        let label = format!("buf{}", att.buf().ino());
        let m = st.dev.dma().map(&self.segs, dir, &label)?;
        let table = m.table().clone();
        *slot = Some(m);
        Ok(table)
    }

    /// DMA-unmaps the attachment's mapping (reservation lock held); device writes reach
    /// memory first for a bounce-buffered device.
    fn unmap(&self, _lock: &ResvGuard<'_>, att: &Attachment, table: SgTable, _dir: Direction) {
        let Ok(st) = Self::state(att) else { return };
        let mut slot = st.map.lock();
        let ours = match (slot.as_ref(), table.entries().first()) {
            (Some(m), Some(e)) => m.dma_addr() == e.dma_addr,
            _ => false,
        };
        if ours {
            if let Some(m) = slot.take() {
                if let Err((e, m)) = st.dev.dma().unmap(m) {
                    tracing::error!("heap buffer: unmap failed: {e}");
                    *slot = Some(m);
                }
            }
        }
    }

    fn release(&self, _ino: u64) {}

    fn file(&self) -> Option<&Arc<Memfd>> {
        if !self.whole_file {
            return None;
        }
        match self.backing.as_ref()? {
            Backing::Pooled { mem, .. } | Backing::File(mem) => Some(mem),
            Backing::Block(b) => Some(b.memory()),
            Backing::Imported => None,
        }
    }

    /// Syncs every mapped attachment for the CPU.
    fn begin_cpu_access(&self, _buf: &DmaBuf, _dir: Direction) -> Result<()> {
        self.begun.store(true, Ordering::Release);
        self.sync_all(true)
    }

    /// Syncs every mapped attachment for the device.
    ///
    /// # Errors
    ///
    /// `Invalid` for a udmabuf buffer never begun.
    fn end_cpu_access(&self, _buf: &DmaBuf, _dir: Direction) -> Result<()> {
        if self.rules.begin_before_end && !self.begun.load(Ordering::Acquire) {
            return Err(Error::Invalid("end_cpu_access before begin_cpu_access"));
        }
        self.sync_all(false)
    }

    /// The range's segments.
    ///
    /// # Errors
    ///
    /// `Invalid` for a private mapping of a shared-only buffer.
    fn mmap(
        &self,
        _buf: &DmaBuf,
        pgoff: usize,
        pages: usize,
        shared: bool,
    ) -> Result<Vec<Segment>> {
        if self.rules.shared_only && !shared {
            return Err(Error::Invalid("this heap maps shared only"));
        }
        let p = page_size();
        let off = pgoff.checked_mul(p).ok_or(Error::Overflow("pgoff wraps"))?;
        let len = pages.checked_mul(p).ok_or(Error::Overflow("pages wrap"))?;
        self.range(off, len)
    }

    fn vmap(&self, _lock: &ResvGuard<'_>, _buf: &DmaBuf) -> Result<Vec<Segment>> {
        Ok(self.segs.clone())
    }
}

impl Drop for MemoryExporter {
    #[inline]
    fn drop(&mut self) {
        // Attachments outlive nothing: the core detached them all before the release.
        for a in self.attachments.get_mut().drain(..) {
            let live = a.map.lock().take();
            if let Some(m) = live {
                let _ = a.dev.dma().unmap(m);
            }
        }
        self.segs.clear();
        match self.backing.take() {
            Some(Backing::Pooled { mem, pool }) => {
                // Only memory nobody else can reach goes back to the pool.
                if let Ok(m) = Arc::try_unwrap(mem) {
                    pool.put(m);
                }
            }
            Some(Backing::Block(b)) => drop(b),
            Some(Backing::Imported | Backing::File(_)) | None => {}
        }
    }
}
