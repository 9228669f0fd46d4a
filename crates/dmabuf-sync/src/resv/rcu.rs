//! A minimal read-copy-update cell: the memory boundary of the reservation object's
//! lock-free readers.
//!
//! [`RcuCell<T>`] holds an `Arc<T>`. Readers take a reference with [`RcuCell::load`]
//! without blocking and without ever waiting for a writer; a writer publishes a new value
//! with [`RcuCell::store`], which returns the old one once no reader can still be about
//! to take a reference to it (its *grace period*), so the writer may reuse it.
//!
//! [`RcuSlots<E>`], built on the cell, is what the reservation object uses: a
//! fixed-capacity array whose entries the one writer appends and replaces in place,
//! dropping replaced entries after a (batched) grace period, while readers walk it inside
//! short read-side sections ([`RcuSlots::read`]).
//!
//! # How
//!
//! A reader announces itself in one of two counters, picked by the current *epoch*, then
//! loads the pointer and takes a reference, then leaves the counter. A writer swaps the
//! pointer, then waits for a moment when no reader is announced: a reader announced after
//! that moment loads the new pointer. When readers keep overlapping, the writer flips the
//! epoch and waits only until the counter of the old epoch drains: every reader that could
//! have loaded the old pointer is counted there (a reader re-checks the epoch after
//! announcing itself and retries if it changed, so it is never counted under an epoch
//! whose writer has already finished waiting), and readers arriving after the flip use the
//! other counter — so a writer waits only for readers already inside their
//! few-instruction window, never for new ones. Flips are rare, so readers rarely retry.
//!
//! Writers must not overlap: storing takes the cell's one [`Writer`] by `&mut`, which the
//! reservation object keeps inside its lock. The reader's "announce, then load the
//! pointer" and the writer's "swap the pointer, then read the counter" must not be
//! reordered (a Dekker-style handshake). Natively that holds because every access of the
//! handshake is `SeqCst` (all of them sit in one total order, which forbids the
//! store-buffering outcome); under loom, which models `SeqCst` accesses only as
//! acquire/release, both sides add an explicit `SeqCst` fence, which loom does model.

use crate::shim::{self, Arc, AtomicBool, AtomicPtr, AtomicU32, AtomicUsize};

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::Ordering::SeqCst;

/// Busy polls of the fast grace period before a writer flips the epoch. Under loom, at
/// once: so the model checks the flip path, not only the fast one.
const FLIP_AFTER: u32 = if cfg!(loom) { 1 } else { 32 };

/// Busy polls of a draining reader counter before the writer sleeps on it. Under loom,
/// one: so the model checks the sleeping path.
const SPIN_BEFORE_SLEEP: u32 = if cfg!(loom) { 1 } else { 128 };

/// Keeps the two reader counters on separate cache lines.
#[repr(align(64))]
struct Padded(AtomicU32);

/// Set in a reader counter by a writer about to sleep until the counter drains; the
/// reader that leaves it empty wakes the writer.
const WAITING: u32 = 1 << 31;

/// A cell holding an `Arc<T>`, readable without locks; see the module docs.
pub struct RcuCell<T> {
    /// Invariant: always a pointer from `Arc::into_raw` whose reference the cell owns.
    ptr: AtomicPtr<T>,
    epoch: AtomicUsize,
    readers: [Padded; 2],
    /// Identifies the cell's [`Writer`]: only it may store.
    id: usize,
}

/// The right to store into one [`RcuCell`]: there is exactly one per cell, and `store`
/// takes it by `&mut`, so writers cannot overlap (keep it where the writers' lock is —
/// the reservation object keeps it inside its ww mutex).
#[derive(Debug)]
pub struct Writer {
    id: usize,
    /// Slots of the current [`Slots`] array whose non-live cell holds a replaced entry
    /// waiting for a grace period (see [`RcuSlots::replace`]).
    pending: Vec<usize>,
}

static NEXT_CELL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

// SAFETY: the cell hands out `Arc<T>` clones to any thread and drops values on whichever
// thread stores, exactly what `Arc<T>: Send + Sync` requires of `T`.
unsafe impl<T: Send + Sync> Send for RcuCell<T> {}
// SAFETY: as above; shared access only moves `Arc<T>`s between threads.
unsafe impl<T: Send + Sync> Sync for RcuCell<T> {}

impl<T> RcuCell<T> {
    /// A cell holding `value`, and the one right to store into it.
    pub fn new(value: Arc<T>) -> (Self, Writer) {
        let id = NEXT_CELL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cell = RcuCell {
            ptr: AtomicPtr::new(Arc::into_raw(value) as *mut T),
            epoch: AtomicUsize::new(0),
            readers: [Padded(AtomicU32::new(0)), Padded(AtomicU32::new(0))],
            id,
        };
        (
            cell,
            Writer {
                id,
                pending: Vec::new(),
            },
        )
    }

    /// Announce a reader in the counter of the current epoch; returns the epoch to leave.
    #[inline]
    fn enter(&self) -> usize {
        loop {
            let e = self.epoch.load(SeqCst);
            self.readers[e & 1].0.fetch_add(1, SeqCst);
            // Pairs with the writer's fence: either the writer sees this announcement,
            // or this reader sees the writer's new pointer and epoch.
            sc_fence();
            if self.epoch.load(SeqCst) == e {
                return e;
            }
            self.leave(e);
        }
    }

    #[inline]
    fn leave(&self, e: usize) {
        let c = &self.readers[e & 1].0;
        if c.fetch_sub(1, SeqCst) == WAITING | 1 {
            shim::futex_wake_all(c);
        }
    }

    /// A reference to the current value. Lock-free and wait-free for readers: it only
    /// retries when an epoch flip races with it, at most once per concurrent writer.
    pub fn load(&self) -> Arc<T> {
        let e = self.enter();
        let p = self.ptr.load(SeqCst);
        // SAFETY: `p` came from `Arc::into_raw` (type invariant) and its reference is
        // still held by the cell or by a writer waiting for this reader: a writer that
        // swapped `p` out waits for the counter this reader is announced in before it
        // releases `p` (see the module docs), so the allocation is alive here.
        let value = unsafe {
            Arc::increment_strong_count(p);
            Arc::from_raw(p)
        };
        self.leave(e);
        value
    }

    /// Run `f` on the current value without taking a reference to it (a read-side
    /// critical section): cheaper than [`load`](Self::load) by two atomic
    /// read-modify-writes of the value's count.
    ///
    /// A writer storing meanwhile waits until `f` returns, so `f` must be short and must
    /// never block, wait for a writer, or run foreign code (fence callbacks, driver
    /// hooks): it would stall, or deadlock with, the writer.
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        struct Leave<'a, T>(&'a RcuCell<T>, usize);
        impl<T> Drop for Leave<'_, T> {
            fn drop(&mut self) {
                self.0.leave(self.1);
            }
        }
        let leave = Leave(self, self.enter());
        let p = self.ptr.load(SeqCst);
        // SAFETY: as in `load`: the cell, or a writer waiting for this reader (announced
        // until `leave` drops, after `f` returns or unwinds), holds the reference behind
        // `p`, so the value is alive for all of `f`.
        let r = f(unsafe { &*p });
        drop(leave);
        r
    }

    /// Publish `value`; returns the previous value after its grace period (no reader
    /// can still take a new reference to it; readers that already have one keep it).
    ///
    /// # Panics
    /// When `writer` belongs to another cell (a bug in the caller).
    pub fn store(&self, writer: &mut Writer, value: Arc<T>) -> Arc<T> {
        self.check_writer(writer);
        let old = self.ptr.swap(Arc::into_raw(value) as *mut T, SeqCst);
        self.synchronize();
        // SAFETY: `old` came from `Arc::into_raw` and the cell owned its reference; no
        // reader can take a reference to it any more (grace period over), so ownership
        // of that reference moves to the caller.
        unsafe { Arc::from_raw(old) }
    }

    fn check_writer(&self, writer: &Writer) {
        assert_eq!(
            writer.id, self.id,
            "RcuCell used with another cell's writer"
        );
    }

    /// Wait until counter `c` of a past epoch holds no reader: spin briefly, then sleep
    /// (a reader preempted inside its section may take a while; a writer that kept
    /// spinning would take the CPU it needs).
    fn drain(&self, c: &AtomicU32) {
        let mut spins = 0u32;
        loop {
            let v = c.load(SeqCst);
            if v & !WAITING == 0 {
                break;
            }
            spins += 1;
            if spins < SPIN_BEFORE_SLEEP {
                std::hint::spin_loop();
                shim::model_yield();
                continue;
            }
            let v = c.fetch_or(WAITING, SeqCst) | WAITING;
            if v & !WAITING == 0 {
                break;
            }
            // Returns at once if a reader left meanwhile; else the last one wakes us.
            shim::futex_wait(c, v, None);
        }
        if c.load(SeqCst) & WAITING != 0 {
            c.fetch_and(!WAITING, SeqCst);
        }
    }

    /// Wait for a grace period: return once no reader that was announced before the call
    /// (and so may have loaded a pointer unpublished before it) is still announced.
    fn synchronize(&self) {
        // Pairs with the readers' fence (see there).
        sc_fence();
        // Fast grace period: a moment when neither counter holds a reader. A reader
        // counted later announces itself after the caller's unpublishing, so it loads
        // what replaced it.
        let mut spins = 0u32;
        while self.readers[0].0.load(SeqCst) != 0 || self.readers[1].0.load(SeqCst) != 0 {
            spins += 1;
            shim::model_yield();
            if spins >= FLIP_AFTER {
                // Readers keep overlapping: flip the epoch so that new ones count
                // elsewhere, and wait only for those announced under the old epoch.
                let e = self.epoch.fetch_add(1, SeqCst);
                sc_fence();
                self.drain(&self.readers[e & 1].0);
                return;
            }
            std::hint::spin_loop();
        }
    }
}

/// One slot of a [`Slots`] array: two cells, of which `live` names the one holding the
/// entry; the other is empty (or being filled by the writer, which no reader looks at).
/// A slot fills one cache line, so a reader finds the entry where it finds the index.
#[repr(align(64))]
struct Slot<E> {
    live: AtomicUsize,
    /// The non-live cell still holds the entry it replaced, to be dropped after a grace
    /// period. Only the writer (or the array's drop) reads or writes it.
    stale: AtomicBool,
    cells: [UnsafeCell<MaybeUninit<E>>; 2],
}

impl<E> Slot<E> {
    fn empty() -> Self {
        Slot {
            live: AtomicUsize::new(0),
            stale: AtomicBool::new(false),
            cells: [
                UnsafeCell::new(MaybeUninit::uninit()),
                UnsafeCell::new(MaybeUninit::uninit()),
            ],
        }
    }

    /// The live entry.
    ///
    /// # Safety
    /// The slot is below its array's `len`, and the caller is inside a read-side section
    /// of the cell publishing the array, or is its writer, or the array is frozen.
    unsafe fn get(&self) -> &E {
        let l = self.live.load(SeqCst);
        // SAFETY: below `len`, the live cell holds an entry (type invariant of `Slots`).
        // The writer drops it only after flipping `live` away and waiting a grace period,
        // which the caller's section (or its being the writer, or the array being
        // frozen) rules out for the lifetime of the returned reference.
        unsafe { (*self.cells[l].get()).assume_init_ref() }
    }
}

/// A fixed-capacity array of entries, published as one value of an [`RcuCell`].
///
/// Invariant: the live cell of each of the first `len` slots holds an entry owned by the
/// array; the other cell of such a slot holds one exactly when the slot is `stale` (a
/// replaced entry waiting for its grace period); every other cell is empty. Only the
/// cell's writer changes an array, and only while it is the cell's current value; once
/// replaced, an array is frozen until it drops.
pub struct Slots<E> {
    tag: u64,
    len: AtomicUsize,
    slots: Box<[Slot<E>]>,
}

impl<E> Slots<E> {
    fn new(tag: u64, capacity: usize, items: impl IntoIterator<Item = E>) -> Self {
        Self::with_slots(tag, capacity, Vec::with_capacity(capacity), items)
    }

    /// [`new`](Self::new), failing instead of aborting when `capacity` slots cannot be
    /// allocated.
    fn try_new(
        tag: u64,
        capacity: usize,
        items: impl IntoIterator<Item = E>,
    ) -> Result<Self, std::collections::TryReserveError> {
        let mut slots: Vec<Slot<E>> = Vec::new();
        slots.try_reserve_exact(capacity)?;
        Ok(Self::with_slots(tag, capacity, slots, items))
    }

    fn with_slots(
        tag: u64,
        capacity: usize,
        mut slots: Vec<Slot<E>>,
        items: impl IntoIterator<Item = E>,
    ) -> Self {
        for e in items {
            let mut slot = Slot::empty();
            slot.cells[0] = UnsafeCell::new(MaybeUninit::new(e));
            slots.push(slot);
        }
        let len = slots.len();
        slots.resize_with(capacity.max(len), Slot::empty);
        Slots {
            tag,
            len: AtomicUsize::new(len),
            slots: slots.into_boxed_slice(),
        }
    }
}

impl<E> Drop for Slots<E> {
    fn drop(&mut self) {
        let n = self.len.load(SeqCst);
        for s in self.slots[..n].iter() {
            let l = s.live.load(SeqCst);
            // SAFETY: the live cell of a slot below `len` holds an entry owned by the
            // array (type invariant), and so does the other one when `stale`; each is
            // dropped once here, and with `&mut self` no reader can be looking at them.
            unsafe { (*s.cells[l].get()).assume_init_drop() };
            if s.stale.load(SeqCst) {
                // SAFETY: as above.
                unsafe { (*s.cells[l ^ 1].get()).assume_init_drop() };
            }
        }
    }
}

/// What a reader sees of a [`RcuSlots`] inside [`RcuSlots::read`].
pub struct View<'a, E> {
    slots: &'a Slots<E>,
}

impl<'a, E> View<'a, E> {
    /// The tag the array was published with.
    pub fn tag(&self) -> u64 {
        self.slots.tag
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a E> + 'a {
        let slots = self.slots;
        let n = slots.len.load(SeqCst);
        // SAFETY: every slot below `len` (read once, after the writer filled them) and a
        // view exists only inside a read-side section (see `RcuSlots::read`).
        slots.slots[..n].iter().map(|s| unsafe { s.get() })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.slots.len.load(SeqCst)
    }
}

/// An array of entries that lock-free readers walk while one writer appends and replaces
/// entries *in place* (the kernel's `dma_resv_list` discipline): a replaced entry is
/// dropped after a grace period, so a reader may still be cloning out of it meanwhile.
/// Each slot keeps its entry inline, in one of two cells: a replace fills the empty cell,
/// flips the slot to it, waits a grace period and drops the old cell's entry. Growing
/// means publishing a whole new array ([`republish`](Self::republish)), as the kernel
/// does when it reallocates the list. Readers only see entries inside
/// [`read`](Self::read).
pub struct RcuSlots<E> {
    cell: RcuCell<Slots<E>>,
}

// SAFETY: entries are shared with readers on any thread (`E: Sync`) and dropped on the
// writer's thread (`E: Send`); the rest is atomics.
unsafe impl<E: Send + Sync> Send for RcuSlots<E> {}
// SAFETY: as above.
unsafe impl<E: Send + Sync> Sync for RcuSlots<E> {}

impl<E> RcuSlots<E> {
    /// An array of `capacity` slots (more if `items` needs them) holding `items`, tagged
    /// `tag`, and the one right to write it.
    pub fn new(tag: u64, capacity: usize, items: impl IntoIterator<Item = E>) -> (Self, Writer) {
        let (cell, w) = RcuCell::new(Arc::new(Slots::new(tag, capacity, items)));
        (RcuSlots { cell }, w)
    }

    /// Run `f` on the current entries inside a read-side section. A writer replacing an
    /// entry meanwhile waits until `f` returns, so `f` must be short and must not block,
    /// wait for a writer or run foreign code (fence callbacks, driver hooks): clone what
    /// it needs and work on the clones afterwards.
    pub fn read<R>(&self, f: impl for<'a> FnOnce(View<'a, E>) -> R) -> R {
        self.cell.read(|slots| f(View { slots }))
    }

    /// The current array, seen by its writer.
    fn current<'a>(&'a self, w: &'a Writer) -> &'a Slots<E> {
        self.cell.check_writer(w);
        // SAFETY: only the holder of `w` replaces the cell's value and frees the old
        // one, and `&Writer` is borrowed for as long as the returned reference lives.
        unsafe { &*self.cell.ptr.load(SeqCst) }
    }

    /// Slots of the current array.
    #[inline]
    pub fn capacity(&self, w: &Writer) -> usize {
        self.current(w).slots.len()
    }

    /// Entries of the current array.
    #[inline]
    pub fn len(&self, w: &Writer) -> usize {
        self.current(w).len.load(SeqCst)
    }

    /// The entries, as the writer sees them (no read-side section: nothing changes them
    /// while `w` is borrowed).
    #[inline]
    pub fn entries<'a>(&'a self, w: &'a Writer) -> impl Iterator<Item = &'a E> + 'a {
        let s = self.current(w);
        let n = s.len.load(SeqCst);
        // SAFETY: slots below `len` hold live entries, and only the holder of `w` could
        // replace (and so drop) one, which needs `&mut Writer` while this borrow lives.
        s.slots[..n].iter().map(|slot| unsafe { slot.get() })
    }

    /// Publish a new array; the old one is dropped, with its waiting entries, after the
    /// grace period `store` waits for.
    pub fn republish(
        &self,
        w: &mut Writer,
        tag: u64,
        capacity: usize,
        items: impl IntoIterator<Item = E>,
    ) {
        let new = Arc::new(Slots::new(tag, capacity, items));
        let old = self.cell.store(w, new);
        // Waiting entries belong to the old array, which drops them with itself.
        w.pending.clear();
        drop(old);
    }

    /// [`republish`](Self::republish), failing — with nothing changed — when the new
    /// array cannot be allocated (`items` are dropped then).
    pub fn try_republish(
        &self,
        w: &mut Writer,
        tag: u64,
        capacity: usize,
        items: impl IntoIterator<Item = E>,
    ) -> Result<(), std::collections::TryReserveError> {
        let new = Arc::new(Slots::try_new(tag, capacity, items)?);
        let old = self.cell.store(w, new);
        w.pending.clear();
        drop(old);
        Ok(())
    }

    /// Append `item`; handed back when the array is full.
    pub fn push(&self, w: &mut Writer, item: E) -> Result<(), E> {
        let s = self.current(w);
        let n = s.len.load(SeqCst);
        let Some(slot) = s.slots.get(n) else {
            return Err(item);
        };
        let l = slot.live.load(SeqCst);
        // SAFETY: slot `n` is at or past `len`, so both its cells are empty and no reader
        // looks at it (readers stop at `len`); only the writer (us) writes.
        unsafe { (*slot.cells[l].get()).write(item) };
        // Raised after the entry is written: a reader that sees the new length sees it.
        s.len.store(n + 1, SeqCst);
        Ok(())
    }

    /// Put `item` at `index`; handed back when `index` is past the end. The replaced
    /// entry is dropped after a grace period — not at once: replaced entries wait in
    /// their slots' spare cells, and one grace period reclaims all of them when a slot
    /// with a waiting entry is replaced again (or the array is republished or dropped).
    /// So a writer waits for readers about once per pass over the array, not per replace.
    pub fn replace(&self, w: &mut Writer, index: usize, item: E) -> Result<(), E> {
        let s = self.current(w);
        if index >= s.len.load(SeqCst) {
            return Err(item);
        }
        if s.slots[index].stale.load(SeqCst) {
            self.reclaim(w);
        }
        let s = self.current(w);
        let slot = &s.slots[index];
        let old = slot.live.load(SeqCst);
        let new = old ^ 1;
        // SAFETY: the non-live cell is empty (not `stale`: reclaimed above) and no reader
        // looks at it: readers read the live cell, and the last reader that could have
        // seen this cell live was waited for by the reclaim that emptied it. Only the
        // writer writes.
        unsafe { (*slot.cells[new].get()).write(item) };
        slot.live.store(new, SeqCst);
        slot.stale.store(true, SeqCst);
        w.pending.push(index);
        Ok(())
    }

    /// Wait for a grace period, then drop every replaced entry waiting in a spare cell.
    fn reclaim(&self, w: &mut Writer) {
        self.cell.synchronize();
        let s = self.current(w);
        for &i in w.pending.iter() {
            let slot = &s.slots[i];
            let spare = slot.live.load(SeqCst) ^ 1;
            // Cleared before the drop, and skipped when already clear: should dropping
            // an entry panic (a fence's release runs driver code), the list is kept, and
            // the next reclaim drops only what this one did not.
            if !slot.stale.swap(false, SeqCst) {
                continue;
            }
            // SAFETY: a pending slot's non-live cell holds the entry it replaced (the
            // array owns it); it stopped being live before the grace period that just
            // ended, so no reader is looking at it.
            unsafe { (*slot.cells[spare].get()).assume_init_drop() };
        }
        w.pending.clear();
    }
}

/// The handshake's ordering point. Every access of the handshake is a `SeqCst` access,
/// which orders "store, then load of another location" by itself (they are all in the
/// single total order), so native builds need no extra fence (on x86 it would be an
/// `mfence` on every load and store). Loom models `SeqCst` accesses as acquire/release
/// only, so under loom the handshake gets an explicit `SeqCst` fence, which loom models.
#[inline(always)]
fn sc_fence() {
    shim::loom_seqcst_fence();
}

impl<T> Drop for RcuCell<T> {
    fn drop(&mut self) {
        let p = self.ptr.load(SeqCst);
        // SAFETY: the cell owns the reference behind `p` (type invariant) and no reader
        // can exist while we have `&mut self`.
        drop(unsafe { Arc::from_raw(p) });
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for RcuCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RcuCell").field(&self.load()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn load_store_and_reuse() {
        let (c, mut w) = RcuCell::new(Arc::new(1u64));
        assert_eq!(*c.load(), 1);
        let old = c.store(&mut w, Arc::new(2));
        assert_eq!(*old, 1);
        assert_eq!(
            Arc::strong_count(&old),
            1,
            "the grace period is over: unique"
        );
        let held = c.load();
        let mut old2 = c.store(&mut w, old);
        assert_eq!(*old2, 2);
        assert!(Arc::get_mut(&mut old2).is_none(), "a reader still holds it");
        assert_eq!(*held, 2);
        assert_eq!(*c.load(), 1);
    }

    /// Two readers clone every entry out of an in-place array while the writer replaces
    /// entries, appends, and now and then republishes a bigger array: every clone is of a
    /// whole, live entry (its two halves agree and its drop flag is clear), and the last
    /// reference of each entry is dropped exactly once.
    #[test]
    fn slots_readers_never_see_torn_or_dropped_entries() {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        struct E(u64, u64, AtomicBool);
        impl Drop for E {
            fn drop(&mut self) {
                assert!(!self.2.swap(true, SeqCst), "dropped twice");
                DROPS.fetch_add(1, SeqCst);
            }
        }
        let made = AtomicUsize::new(0);
        let mk = |i: u64| {
            made.fetch_add(1, SeqCst);
            Arc::new(E(i, i, AtomicBool::new(false)))
        };
        let (slots, mut w) = RcuSlots::new(0, 4, (0..4).map(mk));
        let slots = Arc::new(slots);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (slots, stop) = (slots.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(SeqCst) {
                        let got: Vec<Arc<E>> = slots.read(|v| v.iter().cloned().collect());
                        for e in &got {
                            assert_eq!(e.0, e.1, "torn entry");
                            assert!(!e.2.load(SeqCst), "entry used after its drop");
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
        let mut i = 4u64;
        let mut tag = 0;
        while std::time::Instant::now() < deadline && i < 100_000 {
            let len = slots.read(|v| v.len());
            if i % 97 == 0 {
                tag += 1;
                let keep: Vec<Arc<E>> = slots.read(|v| v.iter().cloned().collect());
                slots.republish(&mut w, tag, len + 1, keep);
            } else if let Err(e) = slots.push(&mut w, mk(i)) {
                assert!(slots.replace(&mut w, (i as usize) % len, e).is_ok());
            }
            i += 1;
        }
        stop.store(true, SeqCst);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        drop(slots);
        assert_eq!(
            DROPS.load(SeqCst),
            made.load(SeqCst),
            "every entry dropped once"
        );
    }

    /// Appending to a full array and replacing past the end hand the item back and change
    /// nothing.
    #[test]
    fn full_push_and_out_of_range_replace_hand_the_item_back() {
        let (s, mut w) = RcuSlots::new(3, 1, vec![Arc::new(1u32)]);
        let two = Arc::new(2u32);
        let back = s.push(&mut w, two.clone()).unwrap_err();
        assert!(Arc::ptr_eq(&back, &two));
        drop(back);
        let back = s.replace(&mut w, 1, two.clone()).unwrap_err();
        assert!(Arc::ptr_eq(&back, &two));
        drop(back);
        assert_eq!(Arc::strong_count(&two), 1, "nothing kept");
        let (tag, v): (u64, Vec<u32>) = s.read(|v| (v.tag(), v.iter().map(|e| **e).collect()));
        assert_eq!((tag, v), (3, vec![1]));
        assert_eq!((s.len(&w), s.capacity(&w)), (1, 1));
    }

    /// An entry whose drop panics during a reclaim is never dropped again, and the other
    /// waiting entries are still dropped exactly once later.
    #[test]
    fn a_panicking_drop_in_reclaim_drops_nothing_twice() {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        static DROPS: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];
        static PANIC_ON: AtomicUsize = AtomicUsize::new(usize::MAX);
        static ARMED: AtomicBool = AtomicBool::new(true);
        struct E(usize);
        impl Drop for E {
            fn drop(&mut self) {
                DROPS[self.0].fetch_add(1, SeqCst);
                if PANIC_ON.load(SeqCst) == self.0 && ARMED.swap(false, SeqCst) {
                    panic!("driver release panicked");
                }
            }
        }
        let (s, mut w) = RcuSlots::new(0, 2, vec![E(0), E(1)]);
        assert!(s.replace(&mut w, 0, E(2)).is_ok()); // E(0) waits
        assert!(s.replace(&mut w, 1, E(3)).is_ok()); // E(1) waits
        PANIC_ON.store(0, SeqCst);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = s.replace(&mut w, 0, E(4));
        }));
        assert!(r.is_err(), "the panic reaches the writer");
        assert_eq!(DROPS[0].load(SeqCst), 1);
        assert_eq!(
            DROPS[4].load(SeqCst),
            1,
            "the item being placed unwound with it"
        );
        assert!(s.replace(&mut w, 0, E(5)).is_ok()); // E(2) waits
        assert!(s.replace(&mut w, 0, E(6)).is_ok()); // reclaim: E(1), E(2)
        drop(s);
        let drops: Vec<usize> = DROPS.iter().map(|d| d.load(SeqCst)).collect();
        assert_eq!(
            drops,
            vec![1, 1, 1, 1, 1, 1, 1, 0],
            "each entry dropped exactly once"
        );
    }

    #[test]
    fn readers_and_a_writer_never_see_torn_or_freed_values() {
        let (c, mut w) = RcuCell::new(Arc::new((0u64, 0u64)));
        let c = Arc::new(c);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (c, stop) = (c.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(SeqCst) {
                        let v = c.load();
                        assert_eq!(v.0, v.1);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
        let mut i = 0u64;
        let mut spare = Arc::new((0, 0));
        while std::time::Instant::now() < deadline && i < 200_000 {
            i += 1;
            match Arc::get_mut(&mut spare) {
                Some(v) => *v = (i, i),
                None => spare = Arc::new((i, i)),
            }
            spare = c.store(&mut w, spare);
        }
        stop.store(true, SeqCst);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicBool;

    /// A value that records its own drop in a flag that outlives it.
    struct Tracked {
        id: usize,
        dropped: Arc<[AtomicBool; 4]>,
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.dropped[self.id].store(true, SeqCst);
        }
    }

    /// Drop flags for four values, and a maker of tracked values.
    fn tracked() -> (Arc<[AtomicBool; 4]>, impl Fn(usize) -> Arc<Tracked>) {
        let dropped = Arc::new([
            AtomicBool::new(false),
            AtomicBool::new(false),
            AtomicBool::new(false),
            AtomicBool::new(false),
        ]);
        let d = dropped.clone();
        let mk = move |id| {
            Arc::new(Tracked {
                id,
                dropped: d.clone(),
            })
        };
        (dropped, mk)
    }

    /// A reader racing two stores whose old values are dropped at once: every value the
    /// reader gets is still alive (a reference taken to a dropped value would show up as
    /// its flag set), and values only move forward.
    #[test]
    fn loom_rcu_reader_vs_writer() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let (_, mk) = tracked();
            let (c, mut w) = RcuCell::new(mk(0));
            let c = Arc::new(c);
            let c2 = c.clone();
            let r = loom::thread::spawn(move || {
                let a = c2.load();
                assert!(!a.dropped[a.id].load(SeqCst), "got a dropped value");
                let b = c2.load();
                assert!(!b.dropped[b.id].load(SeqCst), "got a dropped value");
                assert!(a.id <= b.id, "values only move forward");
            });
            assert_eq!(c.store(&mut w, mk(1)).id, 0);
            assert_eq!(c.store(&mut w, mk(2)).id, 1);
            r.join().unwrap();
            assert_eq!(c.load().id, 2);
        });
    }

    /// A reader cloning entries out of an in-place array while the writer replaces one
    /// (the old entry waits in the slot's spare cell), appends another and republishes:
    /// every entry the reader clones is still alive, slot 0 only moves forward, an
    /// appended entry is seen whole, and the old array drops the waiting entry.
    #[test]
    fn loom_rcu_slots_replace_in_place() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let (dropped, mk) = tracked();
            let (slots, mut w) = RcuSlots::new(7, 2, vec![mk(0)]);
            let slots = Arc::new(slots);
            let s2 = slots.clone();
            let r = loom::thread::spawn(move || {
                let mut last = 0;
                for _ in 0..2 {
                    let (tag, got): (u64, Vec<Arc<Tracked>>) =
                        s2.read(|v| (v.tag(), v.iter().cloned().collect()));
                    for t in &got {
                        assert!(!t.dropped[t.id].load(SeqCst), "cloned a dropped entry");
                    }
                    assert!(got[0].id >= last, "slot 0 only moves forward");
                    assert_eq!(got.len(), if tag == 8 { 1 } else { got.len() });
                    last = got[0].id;
                }
            });
            // Replace (the old entry waits in its slot), append, then republish: the old
            // array drops the waiting entry with itself.
            assert!(slots.replace(&mut w, 0, mk(1)).is_ok());
            assert!(slots.push(&mut w, mk(2)).is_ok());
            slots.republish(&mut w, 8, 2, vec![mk(3)]);
            r.join().unwrap();
            let ids: Vec<usize> = slots.read(|v| v.iter().map(|t| t.id).collect());
            assert_eq!(ids, vec![3]);
            assert!(dropped[0].load(SeqCst) && dropped[1].load(SeqCst));
        });
    }
}
