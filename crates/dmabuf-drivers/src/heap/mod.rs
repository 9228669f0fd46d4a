//! Heaps: where buffer memory comes from (the kernel's dma-heaps, `/dev/dma_heap/*`).
//!
//! A [`Heap`] allocates whole-page buffers and exports them as [`DmaBuf`]s. Heaps are
//! registered by name in a [`HeapRegistry`] — [`heaps()`] is the process-wide one, with
//! the [`system`] heap (`"system"`: memfd-backed, pooled) and the [`contig`] heap
//! (`"contig"`: one reserved region carved by a buddy allocator, the CMA heap's
//! stand-in). [`udmabuf`] turns a caller's memfd ranges into a buffer.
//!
//! The user-facing path is the uapi's: [`HeapRegistry::open`] a heap by name (the
//! `open` of `/dev/dma_heap/<name>`: `NoDev` when unknown), then
//! [`HeapFile::alloc`] (`DMA_HEAP_IOCTL_ALLOC`), which checks its argument in the
//! kernel's order:
//!
//! | check | error |
//! |---|---|
//! | `fd` ≠ 0 on input | `Invalid` (EINVAL) |
//! | `fd_flags` ⊄ `O_CLOEXEC \| O_ACCMODE` | `Invalid` |
//! | `heap_flags` ≠ 0 (none are defined) | `Invalid` |
//! | `len` rounded up to pages is 0 (or wraps) | `Invalid` |
//! | the heap's allocation | the heap's (`NoMem`, …) |
//!
//! The access mode of `fd_flags` becomes the buffer's [`FileFlags`]: an `O_RDONLY`
//! buffer refuses a shared writable mapping with `Access` (EACCES). The buffer itself
//! is returned where the kernel returns a new fd.
//!
//! Every buffer of these heaps is exported by [`exporter::HeapBuffer`].

pub mod contig;
pub mod exporter;
pub mod system;
pub mod udmabuf;

use crate::buf::{DmaBuf, FileFlags};
use crate::error::{Error, Result};
use dmabuf_mem::memfd;
use parking_lot::RwLock;
use std::sync::{Arc, OnceLock};

/// Most heaps a registry holds (the kernel's `NUM_HEAP_MINORS`).
pub const MAX_HEAPS: usize = 128;

/// `O_ACCMODE`.
pub const O_ACCMODE: u32 = 0o3;
/// `O_RDONLY`.
pub const O_RDONLY: u32 = 0o0;
/// `O_WRONLY`.
pub const O_WRONLY: u32 = 0o1;
/// `O_RDWR`.
pub const O_RDWR: u32 = 0o2;
/// `O_CLOEXEC`.
pub const O_CLOEXEC: u32 = 0o2_000_000;
/// The `fd_flags` an allocation accepts (`DMA_HEAP_VALID_FD_FLAGS`).
pub const VALID_FD_FLAGS: u32 = O_CLOEXEC | O_ACCMODE;
/// The `heap_flags` an allocation accepts (`DMA_HEAP_VALID_HEAP_FLAGS`): none.
pub const VALID_HEAP_FLAGS: u64 = 0;
/// `DMA_HEAP_IOCTL_ALLOC`: `_IOWR('H', 0, struct dma_heap_allocation_data)`.
pub const DMA_HEAP_IOCTL_ALLOC: u32 = ioc(IOC_READ | IOC_WRITE, b'H', 0, AllocData::SIZE);

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// An ioctl command number (`_IOC(dir, type, nr, size)`).
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    (dir << 30) | ((size as u32 & 0x3fff) << 16) | ((ty as u32) << 8) | nr as u32
}

/// A heap: allocates whole-page buffers (`struct dma_heap_ops`).
pub trait Heap: Send + Sync + 'static {
    /// The heap's name: its node under `/dev/dma_heap/`, and the buffers' `exp_name`.
    fn name(&self) -> &str;

    /// Allocate a zero-filled buffer of `len` bytes whose file has `flags`
    /// (`allocate(heap, len, fd_flags, heap_flags)`). Called with no lock held; the
    /// entry point has already checked the request, but a direct caller gets the same
    /// errors: `Invalid` for a zero or unaligned `len` or unknown `heap_flags`; `NoMem`
    /// when the heap cannot serve it. Nothing is allocated on error.
    fn allocate(&self, len: usize, flags: FileFlags, heap_flags: u64) -> Result<DmaBuf>;
}

/// The checks every heap makes of a direct [`Heap::allocate`] call.
///
/// Errors: `Invalid` for unknown `heap_flags`, a zero `len` or one that is not whole
/// pages.
pub fn check_alloc(len: usize, heap_flags: u64) -> Result<()> {
    if heap_flags & !VALID_HEAP_FLAGS != 0 {
        return Err(Error::Invalid("unknown heap flags"));
    }
    if len == 0 || len % memfd::page_size() != 0 {
        return Err(Error::Invalid("length zero or not whole pages"));
    }
    Ok(())
}

/// The file flags of a buffer allocated with `fd_flags` (its access mode; close-on-exec
/// concerns only the fd). Access mode 3 opens for neither reading nor writing, as in the
/// kernel.
pub fn file_flags(fd_flags: u32) -> FileFlags {
    let (read, write) = match fd_flags & O_ACCMODE {
        O_RDONLY => (true, false),
        O_WRONLY => (false, true),
        O_RDWR => (true, true),
        _ => (false, false),
    };
    FileFlags {
        read,
        write,
        nonblock: false,
    }
}

/// The argument of `DMA_HEAP_IOCTL_ALLOC` (`struct dma_heap_allocation_data`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocData {
    /// Length in bytes (rounded up to pages).
    pub len: u64,
    /// Output in the kernel; must be 0 on input.
    pub fd: u32,
    /// `O_CLOEXEC` and an access mode.
    pub fd_flags: u32,
    /// Heap flags: none defined, must be 0.
    pub heap_flags: u64,
}

impl AllocData {
    /// Size of the uapi struct.
    pub const SIZE: usize = 24;

    /// A request for `len` bytes, `O_RDWR | O_CLOEXEC`, no heap flags (what the
    /// kernel's selftest asks for).
    pub fn new(len: u64) -> Self {
        AllocData {
            len,
            fd: 0,
            fd_flags: O_RDWR | O_CLOEXEC,
            heap_flags: 0,
        }
    }

    /// Decode the uapi layout (native endian) from exactly [`Self::SIZE`] bytes.
    fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let u64_at = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        AllocData {
            len: u64_at(0),
            fd: u32_at(8),
            fd_flags: u32_at(12),
            heap_flags: u64_at(16),
        }
    }

    /// Encode in the uapi layout (native endian).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..8].copy_from_slice(&self.len.to_ne_bytes());
        b[8..12].copy_from_slice(&self.fd.to_ne_bytes());
        b[12..16].copy_from_slice(&self.fd_flags.to_ne_bytes());
        b[16..24].copy_from_slice(&self.heap_flags.to_ne_bytes());
        b
    }
}

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
    /// Errors, in the kernel's order: `Invalid` for an empty name; `Busy` when
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
    /// Errors: `NoDev` when no heap has that name.
    pub fn open(&self, name: &str) -> Result<HeapFile> {
        self.get(name)
            .map(|heap| HeapFile { heap })
            .ok_or(Error::NoDev)
    }

    /// Open `name` and allocate: [`open`](Self::open) then [`HeapFile::alloc`], so an
    /// unknown heap is `NoDev` before any argument is looked at.
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

    /// `DMA_HEAP_IOCTL_ALLOC`: check `data` in the kernel's order (see the module docs),
    /// round the length up to pages, allocate. No lock is held.
    ///
    /// Errors: `Invalid` for `fd` ≠ 0, `fd_flags` outside `O_CLOEXEC | O_ACCMODE`,
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

    /// The heap's ioctl dispatcher: `cmd` is an ioctl number whose nr selects the
    /// request (0 = ALLOC) and whose size says how much of `arg` userspace passed. As
    /// in the kernel, a shorter (older) struct is zero-extended and a longer (newer) one
    /// truncated to the fields known here.
    ///
    /// Errors: `Invalid` for an nr beyond the table (not `NoTty`); `Fault` when `arg` is
    /// shorter than the size `cmd` claims; then those of [`alloc`](Self::alloc).
    pub fn ioctl(&self, cmd: u32, arg: &[u8]) -> Result<DmaBuf> {
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
        self.alloc(&AllocData::from_bytes(&k))
    }
}

/// Size of the process-wide contiguous heap's region.
pub const DEFAULT_CONTIG_BYTES: usize = 64 << 20;
/// Most free memory the process-wide system heap keeps pooled.
pub const DEFAULT_SYSTEM_POOL_BYTES: usize = 256 << 20;

/// The process-wide registry, made on first use with the `"system"` heap and the
/// `"contig"` heap ([`DEFAULT_CONTIG_BYTES`]; left out if its region cannot be
/// reserved).
pub fn heaps() -> &'static HeapRegistry {
    static R: OnceLock<HeapRegistry> = OnceLock::new();
    R.get_or_init(|| {
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
/// Errors: those of [`HeapRegistry::add`].
pub fn heap_add(heap: Arc<dyn Heap>) -> Result<()> {
    heaps().add(heap)
}

#[cfg(test)]
mod tests;
