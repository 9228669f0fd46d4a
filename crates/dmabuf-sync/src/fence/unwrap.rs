//! Unwrapping containers and merging fences (`dma-fence-unwrap`).
//!
//! [`unwrap`] iterates the leaves of a fence: through a chain (newest node first, pending
//! nodes only after the head, as [`chain::iter`](super::chain::iter) walks), into each
//! node's payload, and through a payload array into its members. [`merge`] builds one
//! fence that signals when all inputs have: the pending leaves of every input, sorted by
//! context with only the newest per context kept, in a fresh array.

use super::array::FenceArray;
use super::chain::{contained, walk};
use super::object::Fence;
use super::{seqno_is_later, Context};
use crate::error::Result;
use std::cmp::Ordering;

/// Iterate the leaves of `fence` (`dma_fence_unwrap_for_each`).
pub fn unwrap(fence: &Fence) -> Unwrap {
    Unwrap {
        node: Some(fence.clone()),
        payload: None,
        index: 0,
    }
}

/// Iterator of [`unwrap`].
#[derive(Debug)]
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct Unwrap {
    node: Option<Fence>,
    payload: Option<Fence>,
    index: usize,
}

impl Iterator for Unwrap {
    type Item = Fence;
    fn next(&mut self) -> Option<Fence> {
        loop {
            let node = self.node.as_ref()?;
            let payload = self.payload.get_or_insert_with(|| contained(node));
            match payload.as_array() {
                Some(a) => {
                    if let Some(f) = a.fences().get(self.index) {
                        self.index += 1;
                        return Some(f.clone());
                    }
                }
                None => {
                    if self.index == 0 {
                        self.index = 1;
                        return Some(payload.clone());
                    }
                }
            }
            let node = self.node.take()?;
            self.node = walk(node);
            self.payload = None;
            self.index = 0;
        }
    }
}

/// The kernel's `fence_cmp`: by context, then newest seqno first.
fn fence_cmp(a: &Fence, b: &Fence) -> Ordering {
    a.context().cmp(&b.context()).then_with(|| {
        if seqno_is_later(b.seqno(), a.seqno(), b.uses_64bit_seqno()) {
            Ordering::Greater
        } else if seqno_is_later(a.seqno(), b.seqno(), a.uses_64bit_seqno()) {
            Ordering::Less
        } else {
            Ordering::Equal
        }
    })
}

/// Sort `fences` by context and keep only the newest fence of each context
/// (`dma_fence_dedup_array`); returns the new length (the vector is truncated to it).
pub fn dedup_array(fences: &mut Vec<Fence>) -> usize {
    fences.sort_unstable_by(fence_cmp);
    fences.dedup_by(|later, kept| later.context() == kept.context());
    fences.len()
}

/// Merge `fences` into one fence that signals when all of them have
/// (`dma_fence_unwrap_merge`): every pending leaf of every input, deduplicated per
/// context keeping the newest. No pending leaf → a new signalled stub carrying the newest
/// timestamp among the signalled leaves (0 if none); one → that fence itself; more → an
/// array fence (fresh context, seqno 1, signal on all).
///
/// # Errors
///
/// Never fails today (allocation failure aborts in Rust); the `Result` keeps the
/// kernel's `-ENOMEM` shape for callers.
pub fn merge(fences: &[Fence]) -> Result<Fence> {
    let mut pending: Vec<Fence> = Vec::with_capacity(fences.len() * 2);
    let mut timestamp = 0u64;
    for f in fences {
        if !f.is_container() {
            // Fast path: a plain fence is its own only leaf.
            if f.is_signaled() {
                if let Some(t) = f.timestamp() {
                    timestamp = timestamp.max(t);
                }
            } else {
                pending.push(f.clone());
            }
            continue;
        }
        for leaf in unwrap(f) {
            if leaf.is_signaled() {
                if let Some(t) = leaf.timestamp() {
                    timestamp = timestamp.max(t);
                }
            } else {
                pending.push(leaf);
            }
        }
    }
    match pending.len() {
        0 => return Ok(Fence::private_stub(timestamp)),
        1 => return Ok(pending.pop().expect("one fence")),
        _ => {}
    }
    if dedup_array(&mut pending) == 1 {
        return Ok(pending.pop().expect("one fence"));
    }
    FenceArray::create(pending, Context::new(), 1, false)
}
