//! [`MemfdPool`]: freed memfds by size, zeroed before reuse.

use super::Memfd;
use crate::error::Result;
use crate::fault::{self, Site};
use parking_lot::Mutex;
use std::collections::HashMap;

/// Freed memfds by size, reused by later allocations of the same size — always zeroed
/// first. Bounded: past `limit_bytes` freed memfds are closed instead.
///
/// Lock: one mutex, a leaf held only to take a memfd out or put one in — never while
/// creating or zeroing one.
pub struct MemfdPool {
    inner: Mutex<PoolInner>,
    limit_bytes: usize,
}

struct PoolInner {
    by_pages: HashMap<usize, Vec<Memfd>>,
    bytes: usize,
}

impl MemfdPool {
    /// An empty pool holding at most `limit_bytes` of free memory.
    pub fn new(limit_bytes: usize) -> Self {
        MemfdPool {
            inner: Mutex::new(PoolInner {
                by_pages: HashMap::new(),
                bytes: 0,
            }),
            limit_bytes,
        }
    }

    /// A zero-filled memfd of `pages` pages: a pooled one if any, else a new one.
    ///
    /// # Errors
    ///
    /// Those of [`Memfd::create`] when the pool has none of that size; an injected
    /// [`Site::HeapAlloc`] fault. The pool is unchanged on error.
    pub fn get(&self, name: &str, pages: usize, populate: bool) -> Result<Memfd> {
        fault::hit(Site::HeapAlloc)?;
        let pooled = {
            let mut g = self.inner.lock();
            let m = g.by_pages.get_mut(&pages).and_then(Vec::pop);
            if let Some(m) = &m {
                g.bytes -= m.len();
            }
            m
        };
        match pooled {
            Some(m) => Ok(m),
            None => Memfd::create(name, pages, populate),
        }
    }

    /// Give `m` back: it is zeroed and kept for reuse, or closed when the pool is full,
    /// zeroing fails, or the memfd is [shared](Memfd::is_shared) — a descriptor of it
    /// left this object, so some other holder may still read or write it and it must
    /// never become another buffer's memory. Only call it when nobody else in this
    /// process holds the memory (no other mapping of it is live), or another user
    /// could see the next owner's data.
    pub fn put(&self, m: Memfd) {
        if m.is_shared() || m.len() > self.limit_bytes || m.zero().is_err() {
            return;
        }
        let mut g = self.inner.lock();
        if g.bytes + m.len() > self.limit_bytes {
            return;
        }
        g.bytes += m.len();
        g.by_pages.entry(m.pages()).or_default().push(m);
    }

    /// Bytes held free in the pool.
    pub fn pooled_bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}
