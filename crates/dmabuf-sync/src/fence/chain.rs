//! Fence chains: timeline points (`dma_fence_chain`).
//!
//! A chain node wraps one fence (the point's payload) and links to the previous point.
//! Nodes that extend a chain with a later seqno share its context, so a chain is a
//! 64-bit timeline; a node signals when its own fence and every older one has signalled.
//!
//! - [`walk`] steps from a node to the previous node that is still pending, splicing
//!   signalled nodes out of the list as it goes (garbage collection, with a
//!   compare-and-swap on the link so concurrent walkers agree).
//! - [`find_seqno`] finds the oldest node that still covers a point.
//! - Signalling arms one callback at a time, on the newest pending payload; when it
//!   fires, the node re-arms on the next one (through the deferred work list, never
//!   recursively) and signals itself when none is left.
//! - Dropping the last reference to a long chain unlinks it iteratively: no recursion, so
//!   100 000 links do not overflow the stack.

use super::defer;
use super::object::{Container, Fence, FenceOps};
use super::{seqno_is_later, Context};
use crate::error::{Error, Result};
use crate::shim::Mutex;

/// The ops (and state) of a chain node; reach it with [`Fence::as_chain`].
pub struct FenceChain {
    prev: Mutex<Option<Fence>>,
    prev_seqno: u64,
    fence: Fence,
}

impl FenceChain {
    /// Create a node for `fence` at `seqno` after `prev` (`dma_fence_chain_init`). If
    /// `prev` is a chain node and `seqno` is later than its seqno, the node joins its
    /// context; otherwise it gets a fresh context, and (after a chain node) the seqno is
    /// raised to the previous one so it stays valid. Seqnos are 64-bit.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if `fence` is itself a chain node (the kernel warns).
    pub fn create(prev: Option<Fence>, fence: Fence, seqno: u64) -> Result<Fence> {
        if fence.as_chain().is_some() {
            return Err(Error::Invalid("a chain node cannot contain a chain node"));
        }
        let mut seqno = seqno;
        let mut prev_seqno = 0;
        let prev_is_chain = prev.as_ref().is_some_and(|p| p.as_chain().is_some());
        let context = match &prev {
            Some(p) if prev_is_chain && seqno_is_later(seqno, p.seqno(), true) => {
                prev_seqno = p.seqno();
                p.context()
            }
            _ => {
                if let (true, Some(p)) = (prev_is_chain, &prev) {
                    seqno = seqno.max(p.seqno());
                }
                Context::new()
            }
        };
        Ok(Fence::new64(
            FenceChain {
                prev: Mutex::new(prev),
                prev_seqno,
                fence,
            },
            context,
            seqno,
        ))
    }

    /// The contained (payload) fence.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The seqno of the previous node in the same context (0 if none).
    pub fn prev_seqno(&self) -> u64 {
        self.prev_seqno
    }

    /// The previous link, if any (a reference).
    pub fn prev(&self) -> Option<Fence> {
        self.prev.lock().clone()
    }

    /// Arm one callback on the newest pending payload of the chain headed by `head`;
    /// false if every payload has signalled.
    fn arm(head: &Fence) -> bool {
        let mut node = Some(head.clone());
        while let Some(n) = node {
            let f = contained(&n);
            let h = head.clone();
            let armed = f.add_callback(move |_: &Fence| {
                defer::defer(move || {
                    if !FenceChain::arm(&h) {
                        let _ = h.signal();
                    }
                })
            });
            if armed.is_ok() {
                return true;
            }
            node = walk(n);
        }
        false
    }
}

impl FenceOps for FenceChain {
    fn driver_name(&self) -> &str {
        "dma_fence_chain"
    }

    fn timeline_name(&self) -> &str {
        "unbound"
    }

    fn enable_signaling(&self, fence: &Fence) -> bool {
        FenceChain::arm(fence)
    }

    fn signaled(&self, fence: &Fence) -> bool {
        iter(fence).all(|n| contained(&n).is_signaled())
    }

    fn set_deadline(&self, fence: &Fence, deadline_ns: u64) {
        for n in iter(fence) {
            contained(&n).set_deadline(deadline_ns);
        }
    }

    #[allow(private_interfaces)] // sealed: see `FenceOps::container`
    fn container(&self) -> Container<'_> {
        Container::Chain(self)
    }
}

impl Drop for FenceChain {
    fn drop(&mut self) {
        // Unlink iteratively while we hold the only reference to the previous node, so
        // dropping a long chain never recurses.
        let mut prev = self.prev.lock().take();
        while let Some(p) = prev.take() {
            if p.ref_count() > 1 {
                break;
            }
            let Some(pc) = p.as_chain() else { break };
            prev = pc.prev.lock().take();
            drop(p);
        }
    }
}

impl Fence {
    /// The chain node if this fence is one (`to_dma_fence_chain`).
    pub fn as_chain(&self) -> Option<&FenceChain> {
        match self.ops().container() {
            Container::Chain(c) => Some(c),
            _ => None,
        }
    }
}

/// The payload of a chain node, or the fence itself (`dma_fence_chain_contained`).
pub fn contained(f: &Fence) -> Fence {
    match f.as_chain() {
        Some(c) => c.fence.clone(),
        None => f.clone(),
    }
}

/// Step from chain node `fence` (reference consumed) to the previous node whose payload
/// is still pending (`dma_fence_chain_walk`), splicing signalled nodes out of the chain on
/// the way. `None` at the end of the chain, or if `fence` is not a chain node.
pub fn walk(fence: Fence) -> Option<Fence> {
    let chain = fence.as_chain()?;
    loop {
        let prev = chain.prev.lock().clone()?;
        let replacement = match prev.as_chain() {
            Some(pc) => {
                if !pc.fence.is_signaled() {
                    return Some(prev);
                }
                pc.prev.lock().clone()
            }
            None => {
                if !prev.is_signaled() {
                    return Some(prev);
                }
                None
            }
        };
        // Splice `prev` out if nobody changed the link meanwhile.
        let old = {
            let mut link = chain.prev.lock();
            if link.as_ref().is_some_and(|p| Fence::ptr_eq(p, &prev)) {
                std::mem::replace(&mut *link, replacement)
            } else {
                None
            }
        };
        drop(old);
    }
}

/// Iterate over a chain from `head` to older nodes (`dma_fence_chain_for_each`): `head`
/// itself first, then every previous node still pending (signalled ones are collected
/// on the way). For a non-chain fence: just that fence.
pub fn iter(head: &Fence) -> ChainIter {
    ChainIter {
        next: Some(head.clone()),
    }
}

/// Iterator of [`iter`].
#[derive(Debug)]
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct ChainIter {
    next: Option<Fence>,
}

impl Iterator for ChainIter {
    type Item = Fence;
    fn next(&mut self) -> Option<Fence> {
        let cur = self.next.take()?;
        self.next = walk(cur.clone());
        Some(cur)
    }
}

/// Find the node of the chain headed by `head` that covers point `seqno`
/// (`dma_fence_chain_find_seqno`): the oldest pending node whose previous seqno is below
/// `seqno`. `Ok(None)` means the point has already signalled. `seqno` 0 is a no-op
/// returning `head`.
///
/// # Errors
///
/// [`Error::Invalid`] (`EINVAL`) if `head` is not a chain node or `seqno` is later
/// than its seqno (a future point).
pub fn find_seqno(head: &Fence, seqno: u64) -> Result<Option<Fence>> {
    if seqno == 0 {
        return Ok(Some(head.clone()));
    }
    if head.as_chain().is_none() {
        return Err(Error::Invalid("find_seqno on a fence that is not a chain"));
    }
    if head.seqno() < seqno {
        return Err(Error::Invalid(
            "find_seqno of a point later than the chain head",
        ));
    }
    for n in iter(head) {
        let covers = match n.as_chain() {
            Some(c) => n.context() != head.context() || c.prev_seqno < seqno,
            None => true,
        };
        if covers {
            return Ok(Some(n));
        }
    }
    Ok(None)
}
