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
//! Every buffer of these heaps is exported by the core's
//! [`MemoryExporter`](crate::buf::MemoryExporter), parameterised
//! by a few per-heap rules: contiguous and udmabuf buffers map shared only; udmabuf
//! refuses `end_cpu_access` before the first `begin_cpu_access`.

pub mod contig;
mod registry;
pub mod system;
mod uapi;
pub mod udmabuf;

pub use registry::{
    heap_add, heaps, HeapFile, HeapRegistry, DEFAULT_CONTIG_BYTES, DEFAULT_SYSTEM_POOL_BYTES,
};
pub use uapi::{
    ioc, AllocData, DMA_HEAP_IOCTL_ALLOC, MAX_HEAPS, O_ACCMODE, O_CLOEXEC, O_RDONLY, O_RDWR,
    O_WRONLY, VALID_FD_FLAGS, VALID_HEAP_FLAGS,
};

use crate::buf::{DmaBuf, FileFlags};
use crate::error::{Error, Result};
use dmabuf_mem::memfd;

/// A heap: allocates whole-page buffers (`struct dma_heap_ops`).
pub trait Heap: Send + Sync + 'static {
    /// The heap's name: its node under `/dev/dma_heap/`, and the buffers' `exp_name`.
    fn name(&self) -> &str;

    /// Allocate a zero-filled buffer of `len` bytes whose file has `flags`
    /// (`allocate(heap, len, fd_flags, heap_flags)`). Called with no lock held; the
    /// entry point has already checked the request, but a direct caller gets the same
    /// errors (implementations start with [`check_alloc`]).
    ///
    /// # Errors
    ///
    /// `Invalid` for a zero or unaligned `len` or unknown `heap_flags`; `NoMem` when
    /// the heap cannot serve it; export errors (`Os` when out of descriptors). Nothing
    /// is allocated on error.
    fn allocate(&self, len: usize, flags: FileFlags, heap_flags: u64) -> Result<DmaBuf>;
}

/// The checks every heap makes of a direct [`Heap::allocate`] call.
///
/// # Errors
///
/// `Invalid` for unknown `heap_flags`, a zero `len` or one that is not whole
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

#[cfg(test)]
mod tests;
