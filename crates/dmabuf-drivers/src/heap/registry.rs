//! The heap registry (the kernel's heap list and minor table), open heaps, and the
//! process-wide registry with its two default heaps.

use super::uapi::{
    file_flags, AllocData, IOC_READ, IOC_WRITE, MAX_HEAPS, VALID_FD_FLAGS, VALID_HEAP_FLAGS,
};
use super::{contig, system, Heap};
use crate::buf::DmaBuf;
use crate::error::{Error, Result};
use dmabuf_mem::memfd;
use parking_lot::RwLock;
use rustix::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, OnceLock};

/// Heaps by name (the kernel's heap list and minor table). Heaps are added, never
/// removed.
///
/// Lock: one reader-writer lock, a leaf held only to look a heap up or add one — never
/// while a heap allocates.
pub struct HeapRegistry {
    heaps: RwLock<Vec<Arc<dyn Heap>>>,
}

impl std::fmt::Debug for HeapRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Default for HeapRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl HeapRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        HeapRegistry {
            heaps: RwLock::new(Vec::new()),
        }
    }

    /// Register `heap` (`dma_heap_add`).
    ///
    /// # Errors
    ///
    /// In the kernel's order: `Invalid` for an empty name; `Busy` when
    /// [`MAX_HEAPS`] are registered (no free minor); `Invalid` for a name already
    /// registered. The registry is unchanged on error.
    pub fn add(&self, heap: Arc<dyn Heap>) -> Result<()> {
        if heap.name().is_empty() {
            return Err(Error::Invalid("heap without a name"));
        }
        let mut g = self.heaps.write();
        if g.len() >= MAX_HEAPS {
            return Err(Error::Busy("no free heap minor"));
        }
        if g.iter().any(|h| h.name() == heap.name()) {
            return Err(Error::Invalid("a heap of that name is already registered"));
        }
        g.push(heap);
        Ok(())
    }

    /// The registered names, in registration order (the `/dev/dma_heap` listing).
    pub fn names(&self) -> Vec<String> {
        self.heaps
            .read()
            .iter()
            .map(|h| h.name().to_string())
            .collect()
    }

    /// Number of heaps.
    pub fn len(&self) -> usize {
        self.heaps.read().len()
    }

    /// Whether no heap is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The heap named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Heap>> {
        self.heaps.read().iter().find(|h| h.name() == name).cloned()
    }

    /// Open the heap named `name` (`open("/dev/dma_heap/<name>")`).
    ///
    /// # Errors
    ///
    /// `NoDev` when no heap has that name.
    pub fn open(&self, name: &str) -> Result<HeapFile> {
        self.get(name)
            .map(|heap| HeapFile { heap })
            .ok_or(Error::NoDev)
    }

    /// Open `name` and allocate: [`open`](Self::open) then [`HeapFile::alloc`], so an
    /// unknown heap is `NoDev` before any argument is looked at.
    ///
    /// # Errors
    ///
    /// `NoDev` for an unknown heap; then those of [`HeapFile::alloc`].
    pub fn alloc(&self, name: &str, data: &AllocData) -> Result<DmaBuf> {
        self.open(name)?.alloc(data)
    }
}

/// An open heap (the file of `/dev/dma_heap/<name>`).
#[derive(Clone)]
pub struct HeapFile {
    heap: Arc<dyn Heap>,
}

impl std::fmt::Debug for HeapFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapFile")
            .field("heap", &self.heap.name())
            .finish()
    }
}

impl HeapFile {
    /// The heap.
    pub fn heap(&self) -> &Arc<dyn Heap> {
        &self.heap
    }

    /// `DMA_HEAP_IOCTL_ALLOC`: check `data` in the kernel's order (see the
    /// [`heap`](crate::heap) module docs), round the length up to pages, allocate. The
    /// caller need hold no lock; none is held while the heap allocates.
    ///
    /// # Errors
    ///
    /// `Invalid` for `fd` ≠ 0, `fd_flags` outside `O_CLOEXEC | O_ACCMODE`,
    /// `heap_flags` ≠ 0, a length that rounds to 0 or wraps; then the heap's (`NoMem`).
    /// Nothing is allocated on error.
    pub fn alloc(&self, data: &AllocData) -> Result<DmaBuf> {
        if data.fd != 0 {
            return Err(Error::Invalid("fd must be 0 on input"));
        }
        if data.fd_flags & !VALID_FD_FLAGS != 0 {
            return Err(Error::Invalid("fd_flags outside O_CLOEXEC | O_ACCMODE"));
        }
        if data.heap_flags & !VALID_HEAP_FLAGS != 0 {
            return Err(Error::Invalid("unknown heap flags"));
        }
        let len = memfd::round_to_pages(data.len)
            .filter(|&l| l != 0)
            .ok_or(Error::Invalid("length rounds to zero"))?;
        let len = usize::try_from(len).map_err(|_| Error::NoMem)?;
        self.heap
            .allocate(len, file_flags(data.fd_flags), data.heap_flags)
    }

    /// `DMA_HEAP_IOCTL_ALLOC` as userspace sees it: [`alloc`](Self::alloc), then a new
    /// descriptor of the buffer ([`DmaBuf::fd`]) installed with `fd_flags` (close-on-exec
    /// with `O_CLOEXEC`; the access mode is the buffer's), its number written to
    /// `data.fd`. The buffer lives while the descriptor (or a buffer made from it with
    /// [`get`](crate::buf::get)) does; this call keeps no other reference.
    ///
    /// # Errors
    ///
    /// Those of [`alloc`](Self::alloc); then those of [`DmaBuf::fd`] (`EOPNOTSUPP` for
    /// a heap whose buffers are not one file, `EMFILE`).
    /// Nothing is allocated and `data` is unchanged on error.
    pub fn alloc_fd(&self, data: &mut AllocData) -> Result<OwnedFd> {
        let buf = self.alloc(data)?;
        let fd = buf.fd(data.fd_flags)?;
        data.fd = fd.as_raw_fd() as u32;
        Ok(fd)
    }

    /// The heap's ioctl as userspace calls it: [`ioctl`](Self::ioctl)'s dispatch and
    /// checks, then a descriptor as [`alloc_fd`](Self::alloc_fd) makes, its number
    /// written back into `arg`'s `fd` field when the command has the read direction.
    ///
    /// # Errors
    ///
    /// Those of [`ioctl`](Self::ioctl), then those of [`DmaBuf::fd`]; `arg` is unchanged
    /// on error.
    pub fn ioctl_fd(&self, cmd: u32, arg: &mut [u8]) -> Result<OwnedFd> {
        let mut data = Self::decode(cmd, arg)?;
        let fd = self.alloc_fd(&mut data)?;
        let size = ((cmd >> 16) & 0x3fff) as usize;
        if (cmd >> 30) & IOC_READ != 0 {
            if let Some(out) = arg.get_mut(8..12).filter(|_| size >= 12) {
                out.copy_from_slice(&data.fd.to_ne_bytes());
            }
        }
        Ok(fd)
    }

    /// The heap's ioctl dispatcher: `cmd` is an ioctl number whose nr selects the
    /// request (0 = ALLOC) and whose size says how much of `arg` userspace passed. As
    /// in the kernel, a shorter (older) struct is zero-extended and a longer (newer) one
    /// truncated to the fields known here.
    ///
    /// # Errors
    ///
    /// `Invalid` for an nr beyond the table (not `NoTty`); `Fault` when `arg` is
    /// shorter than the size `cmd` claims; then those of [`alloc`](Self::alloc).
    pub fn ioctl(&self, cmd: u32, arg: &[u8]) -> Result<DmaBuf> {
        self.alloc(&Self::decode(cmd, arg)?)
    }

    /// The argument of `cmd` as the kernel copies it in: dispatch checks, then a
    /// shorter struct zero-extended, a longer one truncated.
    fn decode(cmd: u32, arg: &[u8]) -> Result<AllocData> {
        if cmd & 0xff != 0 {
            return Err(Error::Invalid("unknown dma-heap ioctl nr"));
        }
        let size = ((cmd >> 16) & 0x3fff) as usize;
        let dir = cmd >> 30;
        let in_size = if dir & IOC_WRITE != 0 { size } else { 0 };
        let out_size = if dir & IOC_READ != 0 { size } else { 0 };
        if arg.len() < in_size.max(out_size) {
            return Err(Error::Fault("argument shorter than the ioctl size"));
        }
        let mut k = [0u8; AllocData::SIZE];
        let n = in_size.min(AllocData::SIZE);
        k[..n].copy_from_slice(&arg[..n]);
        Ok(AllocData::from_bytes(&k))
    }
}

/// Size of the process-wide contiguous heap's region.
pub const DEFAULT_CONTIG_BYTES: usize = 64 << 20;
/// Most free memory the process-wide system heap keeps pooled.
pub const DEFAULT_SYSTEM_POOL_BYTES: usize = 256 << 20;

/// The process-wide registry, made on first use with the `"system"` heap and the
/// `"contig"` heap ([`DEFAULT_CONTIG_BYTES`]; left out if its region cannot be
/// reserved). Making it also starts the debug socket when the environment asks for it
/// (`DMABUF_DEBUG_SOCKET=1`, see [`debug::server`](crate::debug::server)).
///
/// # Panics
///
/// Never in practice: the two default heaps have distinct non-empty names and the new
/// registry has room, so adding them cannot fail.
pub fn heaps() -> &'static HeapRegistry {
    static R: OnceLock<HeapRegistry> = OnceLock::new();
    R.get_or_init(|| {
        crate::debug::server::serve_if_asked();
        let r = HeapRegistry::new();
        let sys = system::SystemHeap::with_options(
            "system",
            system::Options {
                pool_limit: DEFAULT_SYSTEM_POOL_BYTES,
                prefault: false,
            },
        );
        r.add(sys).expect("first heap");
        match contig::ContigHeap::new("contig", DEFAULT_CONTIG_BYTES) {
            Ok(c) => r.add(c).expect("second heap"),
            Err(e) => tracing::warn!("contig heap not available: {e}"),
        }
        r
    })
}

/// Register `heap` in the process-wide registry ([`HeapRegistry::add`]).
///
/// # Errors
///
/// Those of [`HeapRegistry::add`]: `Invalid` for an empty or taken name, `Busy` when
/// the registry is full.
pub fn heap_add(heap: Arc<dyn Heap>) -> Result<()> {
    heaps().add(heap)
}
