//! Scatter-gather tables: a buffer's memory as a list of segments.
//!
//! A [`Segment`] is a page-aligned range of a shared-memory file ([`Memfd`]). An exporter
//! describes its buffer as segments ([`SgTable::segments`]); a device's IOMMU maps them
//! to one contiguous IOVA range and fills in each entry's device address.

use crate::error::{Error, Result};
use crate::memfd::{page_size, Memfd};
use std::sync::Arc;

/// A page-aligned range of a memfd.
#[derive(Clone)]
pub struct Segment {
    /// The memory.
    pub mem: Arc<Memfd>,
    /// Byte offset in `mem` (page-aligned).
    pub offset: usize,
    /// Length in bytes (whole pages).
    pub len: usize,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

impl Segment {
    /// A segment of `mem`.
    ///
    /// # Errors
    ///
    /// `Invalid` when offset or length is not page-aligned, the length is zero, or the
    /// range leaves `mem`.
    pub fn new(mem: Arc<Memfd>, offset: usize, len: usize) -> Result<Self> {
        let p = page_size();
        if len == 0 || offset % p != 0 || len % p != 0 {
            return Err(Error::Invalid("segment not page-aligned or empty"));
        }
        match offset.checked_add(len) {
            Some(end) if end <= mem.len() => Ok(Segment { mem, offset, len }),
            _ => Err(Error::Invalid("segment past the end of its memory")),
        }
    }
}

/// One entry of a mapped table: a segment and where the device sees it.
#[derive(Clone, Debug)]
pub struct SgEntry {
    /// The memory behind the entry.
    pub segment: Segment,
    /// The device (IOVA) address of its first byte.
    pub dma_addr: u64,
}

/// A scatter-gather table as `map_dma_buf` returns it: entries in buffer order.
#[derive(Clone, Debug, Default)]
pub struct SgTable {
    entries: Vec<SgEntry>,
}

impl SgTable {
    /// A table of `entries`.
    pub fn new(entries: Vec<SgEntry>) -> Self {
        SgTable { entries }
    }

    /// The entries, in buffer order.
    pub fn entries(&self) -> &[SgEntry] {
        &self.entries
    }

    /// Number of entries (the kernel's `nents`).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total bytes covered.
    pub fn total_len(&self) -> usize {
        self.entries.iter().map(|e| e.segment.len).sum()
    }

    /// The segments alone.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.entries.iter().map(|e| &e.segment)
    }
}
