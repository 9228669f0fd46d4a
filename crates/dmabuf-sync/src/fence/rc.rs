//! The fence object's reference count (`kref`): a strong count only — fences have no
//! weak references — so a get is one atomic add and the last put one atomic subtract,
//! where `std::sync::Arc` also keeps a weak count it decrements on the last put.
//!
//! This is the memory boundary of the fence: the block is a `Box`, unsized on the way in
//! (`Box<Block<Inner<O>>>` to `Box<Block<Inner<dyn FenceOps>>>`), and freed as that box.

use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicUsize, Ordering};

/// The heap block: the count, then the value.
#[repr(C)]
pub(crate) struct Block<T: ?Sized> {
    count: AtomicUsize,
    value: T,
}

impl<T> Block<T> {
    /// A block holding `value` with a count of one, boxed (unsize the box, then pass it to
    /// [`Rc::from_box`]).
    pub(crate) fn boxed(value: T) -> Box<Block<T>> {
        Box::new(Block {
            count: AtomicUsize::new(1),
            value,
        })
    }
}

/// A counted reference to a [`Block`]'s value.
///
/// Invariant: `ptr` comes from `Box::into_raw` of a block whose count includes this
/// reference; the block is freed (as that box) when the count drops to zero.
pub(crate) struct Rc<T: ?Sized> {
    ptr: NonNull<Block<T>>,
}

// SAFETY: an `Rc` hands out `&T` to any thread holding a clone (`T: Sync`) and drops `T`
// on whichever thread puts the last reference (`T: Send`), like `Arc`.
unsafe impl<T: ?Sized + Send + Sync> Send for Rc<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send + Sync> Sync for Rc<T> {}

impl<T: ?Sized> Rc<T> {
    /// Take over a block made by [`Block::boxed`] (and possibly unsized).
    pub(crate) fn from_box(b: Box<Block<T>>) -> Self {
        debug_assert_eq!(b.count.load(Ordering::Relaxed), 1);
        Rc {
            ptr: NonNull::from(Box::leak(b)),
        }
    }

    fn block(&self) -> &Block<T> {
        // SAFETY: the block is alive while this reference counts in it (type invariant).
        unsafe { self.ptr.as_ref() }
    }

    /// Whether two references name the same block.
    pub(crate) fn ptr_eq(a: &Self, b: &Self) -> bool {
        std::ptr::addr_eq(a.ptr.as_ptr(), b.ptr.as_ptr())
    }

    /// The number of references (a snapshot: other threads may change it at once).
    pub(crate) fn count(this: &Self) -> usize {
        this.block().count.load(Ordering::Acquire)
    }
}

impl<T: ?Sized> std::ops::Deref for Rc<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.block().value
    }
}

impl<T: ?Sized> Clone for Rc<T> {
    #[inline]
    fn clone(&self) -> Self {
        // Relaxed, as `Arc`: a new reference can only be made from an existing one, which
        // already orders everything that matters.
        let old = self.block().count.fetch_add(1, Ordering::Relaxed);
        if old > isize::MAX as usize {
            // Billions of leaked references: the count could wrap and free a live block.
            std::process::abort();
        }
        Rc { ptr: self.ptr }
    }
}

impl<T: ?Sized> Drop for Rc<T> {
    #[inline]
    fn drop(&mut self) {
        if self.block().count.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Every other reference's uses happen before their puts (Release); see them all
        // before the value is dropped.
        fence(Ordering::Acquire);
        // SAFETY: the count reached zero, so this was the last reference; the pointer
        // came from `Box::into_raw` (via `Box::leak`) of exactly this block type.
        drop(unsafe { Box::from_raw(self.ptr.as_ptr()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Counted<'a>(&'a AtomicUsize);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn counts_and_drops_once_across_threads() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        let r = Rc::from_box(Block::boxed(Counted(&DROPS)));
        assert_eq!(Rc::count(&r), 1);
        let clones: Vec<_> = (0..8).map(|_| r.clone()).collect();
        assert_eq!(Rc::count(&r), 9);
        assert!(clones.iter().all(|c| Rc::ptr_eq(c, &r)));
        let threads: Vec<_> = clones
            .into_iter()
            .map(|c| {
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        drop(c.clone());
                    }
                    drop(c);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(Rc::count(&r), 1);
        assert_eq!(DROPS.load(Ordering::SeqCst), 0);
        drop(r);
        assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn unsized_blocks_drop_their_value() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        let b: Box<Block<dyn Send + Sync>> = Block::boxed(Counted(&DROPS));
        let r = Rc::from_box(b);
        let s = r.clone();
        assert!(Rc::ptr_eq(&r, &s));
        drop(r);
        assert_eq!(DROPS.load(Ordering::SeqCst), 0);
        drop(s);
        assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    }
}
