//! The system heap: each buffer is one sealed memfd from a [`MemfdPool`], zero-filled,
//! described to devices as chunks of 1 MiB, 64 KiB and 4 KiB (the kernel's page orders
//! 8, 4 and 0; largest first) so its scatter-gather tables stay short.
//!
//! Freed buffers go back to the pool (zeroed there, touching only the pages that were
//! written), so steady-state allocation costs no syscall beyond one `lseek` at free. A
//! memfd reaches the pool only once nothing can reach it (no clone of the buffer's
//! table or vmap outlives the buffer), so no buffer ever shows another's data. Private
//! mappings are allowed, as in the kernel.

use super::{check_alloc, Heap};
use crate::buf::memory::{Backing, MemoryExporter, Rules};
use crate::buf::{export, DmaBuf, ExportInfo, FileFlags, Segment};
use crate::error::{Error, Result};
use dmabuf_mem::memfd::{page_size, Memfd, MemfdPool};
use rustix::io::Errno;
use std::sync::Arc;

/// Chunk orders, largest first (pages = 2^order).
pub(crate) const ORDERS: [u32; 3] = [8, 4, 0];

/// Options of a [`SystemHeap`].
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Most bytes of freed memfds kept for reuse.
    pub pool_limit: usize,
    /// Fault every page in at allocation (one store per page), so the first CPU or
    /// device access does not.
    pub prefault: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pool_limit: super::DEFAULT_SYSTEM_POOL_BYTES,
            prefault: false,
        }
    }
}

/// The system heap; see the module docs.
pub struct SystemHeap {
    name: String,
    /// `dmabuf:<name>`: what the buffers' descriptors are named (see `buf::get`).
    memfd_name: String,
    pool: Arc<MemfdPool>,
    prefault: bool,
}

impl std::fmt::Debug for SystemHeap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemHeap")
            .field("name", &self.name)
            .field("pooled_bytes", &self.pool.pooled_bytes())
            .finish()
    }
}

/// `len` bytes of `mem` as segments of the largest chunk sizes that fit, in order.
///
/// # Errors
///
/// `Invalid` when `len` is zero, not whole pages, or longer than `mem`.
pub(crate) fn chunk_segments(mem: &Arc<Memfd>, len: usize) -> Result<Vec<Segment>> {
    let p = page_size();
    if len == 0 || len % p != 0 || len > mem.len() {
        return Err(Error::Invalid(
            "chunked length zero, unaligned or past the memfd",
        ));
    }
    let mut out = Vec::new();
    let mut off = 0;
    while off < len {
        let left = len - off;
        let chunk = ORDERS
            .iter()
            .map(|&o| p << o)
            .find(|&c| c <= left)
            .unwrap_or(p);
        out.push(Segment::new(mem.clone(), off, chunk)?);
        off += chunk;
    }
    Ok(out)
}

impl SystemHeap {
    /// A system heap named `name` with default [`Options`].
    pub fn new(name: &str) -> Arc<Self> {
        Self::with_options(name, Options::default())
    }

    /// A system heap named `name` with `opts`.
    pub fn with_options(name: &str, opts: Options) -> Arc<Self> {
        Arc::new(SystemHeap {
            name: name.to_string(),
            memfd_name: format!("dmabuf:{name}"),
            pool: Arc::new(MemfdPool::new(opts.pool_limit)),
            prefault: opts.prefault,
        })
    }

    /// The pool of freed memfds.
    pub fn pool(&self) -> &Arc<MemfdPool> {
        &self.pool
    }
}

impl Heap for SystemHeap {
    fn name(&self) -> &str {
        &self.name
    }

    /// A pooled (or new) memfd, exported by the heaps' exporter; private mappings
    /// allowed. The pool's lock is held only to take a memfd out.
    ///
    /// # Errors
    ///
    /// `Invalid` as [`check_alloc`]; `NoMem` when the memory cannot be had
    /// (including sizes no file or address space can hold); descriptor exhaustion
    /// (`EMFILE`, `ENFILE`) as `Os`. The pool is unchanged on error.
    fn allocate(&self, len: usize, flags: FileFlags, heap_flags: u64) -> Result<DmaBuf> {
        check_alloc(len, heap_flags)?;
        let mem = self
            .pool
            .get(&self.memfd_name, len / page_size(), false)
            .map_err(|e| match e {
                // A size the file or the address space cannot hold: out of memory, as
                // the kernel says for a request beyond what it has.
                Error::Os(Errno::FBIG | Errno::INVAL | Errno::NOSPC | Errno::NOMEM) => Error::NoMem,
                e => e,
            })?;
        if self.prefault {
            mem.map().touch_pages();
        }
        let mem = Arc::new(mem);
        let segs = chunk_segments(&mem, len)?;
        let ops = MemoryExporter::new(
            segs,
            Rules {
                shared_only: false,
                begin_before_end: false,
            },
            Backing::Pooled {
                mem,
                pool: self.pool.clone(),
            },
        );
        let mut info = ExportInfo::new(&self.name, len, ops);
        info.flags = flags;
        // On error the exporter drops here and the memfd goes back to the pool.
        export(info)
    }
}
