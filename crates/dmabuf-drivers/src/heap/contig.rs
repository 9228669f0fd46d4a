//! The contiguous heap — the kernel's CMA heap in userspace: one [`Region`] reserved up
//! front and carved by the buddy allocator. Every buffer is one contiguous block (one
//! segment, its own memfd named `dmabuf:<heap name>`, so the buffer has descriptors),
//! zero when handed out; the block's pages return to the region (zeroed by hole
//! punching) when the buffer is released. Mappings are shared only, as the CMA heap
//! requires.

use super::{check_alloc, Heap};
use crate::buf::memory::{Backing, MemoryExporter, Rules};
use crate::buf::{export, DmaBuf, ExportInfo, FileFlags};
use crate::error::{Error, Result};
use dmabuf_mem::memfd::page_size;
use dmabuf_mem::region::Region;
use std::sync::Arc;

/// The contiguous heap; see the module docs.
pub struct ContigHeap {
    name: String,
    region: Arc<Region>,
}

impl std::fmt::Debug for ContigHeap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContigHeap")
            .field("name", &self.name)
            .field("region", &self.region)
            .finish()
    }
}

impl ContigHeap {
    /// A heap named `name` over a new region of `bytes` (rounded up to pages).
    ///
    /// # Errors
    ///
    /// `Invalid` for zero bytes; `Os` when the region's memfd cannot be made or mapped.
    pub fn new(name: &str, bytes: usize) -> Result<Arc<Self>> {
        let pages = bytes.div_ceil(page_size());
        if pages == 0 {
            return Err(Error::Invalid("empty contiguous region"));
        }
        Ok(Arc::new(ContigHeap {
            name: name.to_string(),
            region: Region::new(&format!("dmabuf:{name}"), pages)?,
        }))
    }

    /// Pages of the region free now (freed blocks cached for reuse count as free).
    /// Takes the region's lock briefly.
    pub fn free_pages(&self) -> usize {
        self.region.free_pages()
    }

    /// The longest contiguous run one allocation could get now, in pages. Takes the
    /// region's lock briefly.
    pub fn largest_free(&self) -> usize {
        self.region.largest_free()
    }
}

impl Heap for ContigHeap {
    fn name(&self) -> &str {
        &self.name
    }

    /// One contiguous zero-filled block, exported by the heaps' exporter, mapping shared
    /// only. The region's lock (the buddy's) is held only to carve or free.
    ///
    /// # Errors
    ///
    /// `Invalid` as [`check_alloc`]; `NoMem` when no contiguous run that long is
    /// free (the region unchanged).
    fn allocate(&self, len: usize, flags: FileFlags, heap_flags: u64) -> Result<DmaBuf> {
        check_alloc(len, heap_flags)?;
        let block = self.region.alloc(len / page_size())?;
        let seg = block.segment();
        let ops = MemoryExporter::new(
            vec![seg],
            Rules {
                shared_only: true,
                begin_before_end: false,
            },
            Backing::Block(block),
        );
        let mut info = ExportInfo::new(&self.name, len, ops);
        info.flags = flags;
        // On error the exporter drops here and the block returns to the region.
        export(info)
    }
}
