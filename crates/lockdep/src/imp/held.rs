//! The per-thread held-lock stack: acquisition and release, merged nest-locked runs,
//! out-of-order release, and the lenient mode of a thread that lived through a switch-off.
//!
//! # Releasing out of order
//!
//! Releasing a lock that is not the innermost removes it and acquires the entries above
//! it again on the shorter stack, as the kernel's `reacquire_held_locks` does: each one
//! gets the key of its new chain and, when that chain is new, is validated against the
//! locks below it. So holding A, B, C and releasing B records A → C, the dependency
//! the program now has.
//!
//! # Nest-locked runs
//!
//! A lock taken under a nest lock, right on top of a lock of the same class and subclass
//! taken under the same nest lock, joins that entry instead of pushing a new one (the
//! kernel's `hlock->references`): a ww transaction over N objects is one entry, neither
//! validated again nor re-keyed, whatever order its locks are released in. Unlike the
//! kernel, the entry keeps its instances (in acquisition order), so a release, a query or
//! a report still names each lock; releasing the first or the last of the run is O(1).
//!
//! # Turning off
//!
//! `set_enabled(false)` bumps a global generation. A thread that sees a new generation
//! forgets its held stack and becomes *lenient*: it may hold locks that lockdep never saw
//! (taken before the switch and forgotten, or taken while checking was off). On a
//! lenient thread:
//!
//! - a release that matches no held lock is accepted silently, once per (class,
//!   instance) per generation; a second one is reported, so a double unlock after the
//!   switch is still found;
//! - a lock taken under a nest lock that is not held (a ww acquire context started while
//!   checking was off) is neither validated nor reported: it is kept aside, and its
//!   release matches it. Its context was never seen, so nothing about it can be checked.
//!   Once the nest lock's own release was seen, this stops.
//!
//! Threads that did not use lockdep before the switch (other than the one that turned
//! it off) stay strict.

use super::chain::{chain_mix, chain_word, IdBuild, CHAIN_SEED};
use super::classes::class_key;
use super::graph::node_of;
use super::report::{deliver, Pending, Sink};
use super::switch::{enabled, GENERATION};
use super::text;
use crate::{Acquire, LockClass, ReportKind, MAX_SUBCLASSES};
use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::panic::Location;
use std::sync::atomic::Ordering;

pub(super) type Loc = &'static Location<'static>;

/// One held lock.
#[derive(Clone)]
pub(crate) struct Held {
    pub(crate) class: &'static LockClass,
    /// Graph node: class id and subclass.
    pub(crate) node: u32,
    pub(crate) instance: usize,
    pub(crate) how: Acquire,
    pub(crate) at: Loc,
    /// Key of the chain from the bottom of the stack up to and including this entry.
    pub(crate) key: u64,
    /// Further locks merged into this entry, in acquisition order after `instance`: locks
    /// of the same node taken one right after another under the same nest lock.
    /// Usually empty (no allocation).
    pub(crate) more: VecDeque<(usize, Loc)>,
}

impl Held {
    /// Number of locks this entry stands for.
    pub(crate) fn count(&self) -> usize {
        1 + self.more.len()
    }

    /// Each lock of this entry: (instance, where it was taken), in acquisition order.
    pub(crate) fn instances(&self) -> impl Iterator<Item = (usize, Loc)> + '_ {
        std::iter::once((self.instance, self.at)).chain(self.more.iter().copied())
    }

    /// Position in `more` of `instance`, searched from the newest.
    fn merged_position(&self, instance: usize) -> Option<usize> {
        self.more.iter().rposition(|&(i, _)| i == instance)
    }

    /// Whether `instance` is one of this entry's locks.
    pub(super) fn holds(&self, instance: usize) -> bool {
        self.instance == instance || self.merged_position(instance).is_some()
    }
}

pub(super) struct ThreadState {
    pub(super) held: Vec<Held>,
    /// Chain keys this thread knows to be clean.
    pub(super) cache: HashSet<u64, IdBuild>,
    /// The `GENERATION` this stack belongs to.
    pub(super) generation: u64,
    /// Whether this thread lived through a switch-off: it may hold locks lockdep never
    /// saw (see the module docs).
    pub(super) lenient: bool,
    /// (class address, instance) of unmatched releases accepted this generation.
    pub(super) excused: HashSet<(usize, usize)>,
    /// (class address, instance) of locks taken, on a lenient thread, under a nest lock
    /// that is not held; not validated.
    pub(super) untracked: Vec<(usize, usize)>,
    /// Reused buffer for the entries above an out-of-order release.
    pub(super) scratch: Vec<Held>,
    /// An empty buffer for the next merged run (`Held::more`), kept from the last one.
    pub(super) spare_more: VecDeque<(usize, Loc)>,
    /// Installed captures, innermost last.
    pub(super) captures: Vec<Sink>,
    /// `name/id`, computed once (the thread handle is unavailable in TLS destructors).
    pub(super) name: String,
    pub(super) validations: u64,
}

thread_local! {
    static STATE: RefCell<ThreadState> = RefCell::new(ThreadState::new());
}

/// Run `f` on this thread's state; `None` during thread teardown or re-entrancy.
pub(super) fn with_state<R>(f: impl FnOnce(&mut ThreadState) -> R) -> Option<R> {
    STATE
        .try_with(|cell| cell.try_borrow_mut().ok().map(|mut st| f(&mut st)))
        .ok()
        .flatten()
}

fn thread_name() -> String {
    let t = std::thread::current();
    let id = format!("{:?}", t.id());
    let digits: String = id.chars().filter(char::is_ascii_digit).collect();
    format!("{}/{}", t.name().unwrap_or("<unnamed>"), digits)
}

impl ThreadState {
    fn new() -> Self {
        ThreadState {
            held: Vec::with_capacity(16),
            cache: HashSet::with_hasher(IdBuild),
            generation: GENERATION.load(Ordering::Relaxed),
            lenient: false,
            excused: HashSet::new(),
            untracked: Vec::new(),
            scratch: Vec::new(),
            spare_more: VecDeque::new(),
            captures: Vec::new(),
            name: thread_name(),
            validations: 0,
        }
    }

    #[inline]
    pub(super) fn sync_generation(&mut self) {
        let g = GENERATION.load(Ordering::Relaxed);
        if g != self.generation {
            self.forget_held(g);
        }
    }

    #[cold]
    fn forget_held(&mut self, generation: u64) {
        self.generation = generation;
        self.held.clear();
        self.untracked.clear();
        self.excused.clear();
        self.lenient = true;
    }

    #[inline]
    fn top_key(&self) -> u64 {
        self.held.last().map_or(CHAIN_SEED, |h| h.key)
    }

    #[inline]
    pub(super) fn acquire(
        &mut self,
        class: &'static LockClass,
        id: u32,
        instance: usize,
        how: Acquire,
        at: Loc,
    ) -> Option<Pending> {
        self.sync_generation();
        if how.subclass >= MAX_SUBCLASSES || how.nest.is_some() {
            if let Some(done) = self.acquire_annotated(class, id, instance, how, at) {
                return done;
            }
        }
        let node = node_of(id, how.subclass);
        let key = chain_mix(self.top_key(), chain_word(node, &how));
        let held = Held {
            class,
            node,
            instance,
            how,
            at,
            key,
            more: VecDeque::new(),
        };
        // A trylock never blocks, so it is not validated; later locks depend on it.
        if how.trylock || self.cache.contains(&key) {
            self.held.push(held);
            return None;
        }
        self.acquire_slow(held, false)
    }

    /// The cases of an acquisition with a subclass out of range or a nest lock:
    /// `Some(outcome)` when they decide it, `None` to go on as usual.
    #[inline(never)]
    fn acquire_annotated(
        &mut self,
        class: &'static LockClass,
        id: u32,
        instance: usize,
        how: Acquire,
        at: Loc,
    ) -> Option<Option<Pending>> {
        if how.subclass >= MAX_SUBCLASSES {
            return Some(self.bad_annotation(class, id, instance, how, at));
        }
        let nest = how.nest?;
        if !self.holds_instance(nest) {
            // On a lenient thread the nest lock may have been taken while checking was
            // off (unless its release was seen since): nothing to check.
            if self.lenient && !self.excused.iter().any(|&(_, i)| i == nest) {
                self.untracked.push((class_key(class), instance));
                return Some(None);
            }
            return Some(self.bad_annotation(class, id, instance, how, at));
        }
        // Right on top of a lock of the same node under the same nest lock: join it.
        let node = node_of(id, how.subclass);
        let top = self.held.last_mut()?;
        if top.node != node || top.how.nest != how.nest {
            return None;
        }
        if top.more.capacity() == 0 {
            top.more = std::mem::take(&mut self.spare_more);
        }
        top.more.push_back((instance, at));
        Some(None)
    }

    /// Whether any held entry holds `instance` (checking each entry's first lock before
    /// the merged ones).
    fn holds_instance(&self, instance: usize) -> bool {
        self.held.iter().any(|h| h.instance == instance)
            || self
                .held
                .iter()
                .any(|h| h.merged_position(instance).is_some())
    }

    /// Report a subclass out of range or a nest lock that is not held. Records the lock
    /// without validation (so its release still balances), unless the report panics.
    #[cold]
    fn bad_annotation(
        &mut self,
        class: &'static LockClass,
        id: u32,
        instance: usize,
        how: Acquire,
        at: Loc,
    ) -> Option<Pending> {
        let (title, detail) = if how.subclass >= MAX_SUBCLASSES {
            (
                "lockdep annotation: invalid subclass",
                format!(
                    "lock ({}) taken with subclass {}, but subclasses are 0..{}",
                    class.name(),
                    how.subclass,
                    MAX_SUBCLASSES
                ),
            )
        } else {
            (
                "nested lock was not taken",
                format!(
                    "lock ({}) taken under nest lock {:#x}, which this thread does not hold",
                    class.name(),
                    how.nest.unwrap_or_default()
                ),
            )
        };
        let subclass = how.subclass.min(MAX_SUBCLASSES - 1);
        let node = node_of(id, subclass);
        let fixed = Acquire { subclass, ..how };
        let key = chain_mix(self.top_key(), chain_word(node, &fixed));
        let t = text::generic(title, &self.name, &detail, at, &self.held);
        let p = self.pending(ReportKind::BadAnnotation, vec![class.name().into()], t);
        if !self.report_panics() {
            self.held.push(Held {
                class,
                node,
                instance,
                how: fixed,
                at,
                key,
                more: VecDeque::new(),
            });
        }
        Some(p)
    }

    #[inline]
    pub(super) fn release(
        &mut self,
        class: &'static LockClass,
        instance: usize,
        at: Loc,
    ) -> Option<Pending> {
        self.sync_generation();
        let depth = self.held.len();
        if let Some(top) = self.held.last_mut() {
            if top.instance == instance && top.more.is_empty() && std::ptr::eq(top.class, class) {
                if top.more.capacity() != 0 {
                    // The buffer of a run: keep it for the next run.
                    self.spare_more = std::mem::take(&mut top.more);
                }
                self.held.truncate(depth - 1);
                return None;
            }
        }
        self.release_slow(class, instance, at)
    }

    /// Release a lock that is not alone on top of the stack: one of a merged run, one
    /// below the top, or one not held.
    #[cold]
    fn release_slow(
        &mut self,
        class: &'static LockClass,
        instance: usize,
        at: Loc,
    ) -> Option<Pending> {
        let of_class = |h: &Held| std::ptr::eq(h.class, class);
        // The newest lock of each entry first, then its first one (the two ends of a run:
        // releases in reverse or in acquisition order), innermost entry first.
        let ends = self.held.iter().rposition(|h| {
            of_class(h)
                && (h.instance == instance || h.more.back().is_some_and(|m| m.0 == instance))
        });
        if let Some(i) = ends {
            let h = &mut self.held[i];
            if h.more.back().is_some_and(|m| m.0 == instance) {
                h.more.pop_back();
                return None;
            }
            // The first lock of a run goes; the next one takes its place.
            if let Some((next, next_at)) = h.more.pop_front() {
                h.instance = next;
                h.at = next_at;
                return None;
            }
            return self.remove_entry(i);
        }
        for h in self.held.iter_mut().rev().filter(|h| of_class(h)) {
            if let Some(j) = h.merged_position(instance) {
                h.more.remove(j);
                return None;
            }
        }
        self.release_missing(class, instance, at)
    }

    /// Remove `held[i]` and acquire the entries above it again on the shorter stack
    /// (the kernel's `reacquire_held_locks`): new chain keys, and validation of the
    /// chains that are new, which records the dependencies between the locks that are
    /// now adjacent. Returns the first report this raises.
    fn remove_entry(&mut self, i: usize) -> Option<Pending> {
        if i + 1 == self.held.len() {
            self.held.pop();
            return None;
        }
        let mut above = std::mem::take(&mut self.scratch);
        above.extend(self.held.drain(i + 1..));
        self.held.pop();
        let mut first = None;
        for h in above.drain(..) {
            if let Some(p) = self.reacquire(h) {
                first.get_or_insert(p);
            }
        }
        self.scratch = above;
        first
    }

    /// Put a held entry back on top of the stack, as `acquire` would have.
    fn reacquire(&mut self, mut h: Held) -> Option<Pending> {
        if h.how.nest.is_some() {
            if let Some(top) = self.held.last_mut() {
                if top.node == h.node && top.how.nest == h.how.nest {
                    top.more.push_back((h.instance, h.at));
                    top.more.append(&mut h.more);
                    return None;
                }
            }
        }
        h.key = chain_mix(self.top_key(), chain_word(h.node, &h.how));
        if h.how.trylock || self.cache.contains(&h.key) {
            self.held.push(h);
            return None;
        }
        self.acquire_slow(h, true)
    }

    #[cold]
    fn release_missing(
        &mut self,
        class: &'static LockClass,
        instance: usize,
        at: Loc,
    ) -> Option<Pending> {
        let key = (class_key(class), instance);
        if let Some(i) = self.untracked.iter().rposition(|&u| u == key) {
            self.untracked.swap_remove(i);
            self.excused.insert(key);
            return None;
        }
        if self.lenient && self.excused.insert(key) {
            return None;
        }
        let t = text::bad_unlock(&self.name, class, instance, at, &self.held);
        Some(self.pending(ReportKind::BadUnlock, vec![class.name().into()], t))
    }
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        if self.held.is_empty()
            || !enabled()
            || self.generation != GENERATION.load(Ordering::Relaxed)
        {
            return;
        }
        let mut classes: Vec<String> = Vec::new();
        for h in &self.held {
            let n = h.class.name().to_string();
            if !classes.contains(&n) {
                classes.push(n);
            }
        }
        let t = text::held_at_exit(&self.name, &self.held);
        let p = self.pending(ReportKind::HeldAtExit, classes, t);
        // Panicking in a TLS destructor aborts the process: print instead.
        deliver(p, false);
    }
}
