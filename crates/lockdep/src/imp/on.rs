//! The validator: switches, per-thread state, chain caches, validation, report routing.
//!
//! # Hot path
//!
//! `acquire` on a chain already validated costs: one relaxed load (enabled), one load of
//! the class id, a thread-local borrow, one relaxed load (generation), a hash step, a
//! lookup in the thread's chain cache (identity-hashed `u64`s), and a push. Releasing the
//! innermost lock pops it. No global lock is taken unless the chain is new to the thread.
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
//! # Chain keys
//!
//! Each held entry stores the key of the chain ending with it: the previous key mixed
//! with the entry's (class, subclass, mode, trylock, has-nest-lock) word. Two stacks with
//! equal keys took the same classes in the same ways, so the validation of one holds for
//! the other. A chain whose validation raised a report is not cached, so a repeat is
//! reported again (subject to the report policy).
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

use super::graph::{node_of, AddDep, Graph, Step};
use super::text;
use crate::{
    Acquire, CaptureGuard, LockClass, Mode, OnReport, Report, ReportKind, Stats, MAX_SUBCLASSES,
};
use parking_lot::{Mutex, RwLock};
use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::io::Write as _;
use std::marker::PhantomData;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Once};

type Loc = &'static Location<'static>;
type Sink = Arc<Mutex<Vec<Report>>>;

// ---------------------------------------------------------------------------------------
// Switches
// ---------------------------------------------------------------------------------------

const UNINIT: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;

/// `UNINIT` until the environment was read, then `ON` or `OFF`.
static ENABLED: AtomicU8 = AtomicU8::new(UNINIT);
/// 0 = Panic, 1 = PrintOnce, 2 = Collect.
static POLICY: AtomicU8 = AtomicU8::new(0);
/// Bumped by `set_enabled(false)`; threads clear their stacks when it changes.
static GENERATION: AtomicU64 = AtomicU64::new(0);
static ENV_ONCE: Once = Once::new();

#[inline]
pub(crate) fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => init_env(),
    }
}

/// Read `LOCKDEP` once: `off`/`0` turn checking off; `panic`/`print`/`collect` choose
/// the default policy.
#[cold]
fn init_env() -> bool {
    ENV_ONCE.call_once(|| {
        let var = std::env::var("LOCKDEP").unwrap_or_default();
        let var = var.trim().to_ascii_lowercase();
        let on = !matches!(var.as_str(), "off" | "0");
        match var.as_str() {
            "panic" => POLICY.store(0, Ordering::Relaxed),
            "print" | "printonce" | "print-once" => POLICY.store(1, Ordering::Relaxed),
            "collect" => POLICY.store(2, Ordering::Relaxed),
            _ => {}
        }
        let _ = ENABLED.compare_exchange(
            UNINIT,
            if on { ON } else { OFF },
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    });
    ENABLED.load(Ordering::Relaxed) == ON
}

pub(crate) fn set_enabled(on: bool) {
    init_env();
    if on {
        ENABLED.store(ON, Ordering::Relaxed);
    } else {
        GENERATION.fetch_add(1, Ordering::Relaxed);
        ENABLED.store(OFF, Ordering::Relaxed);
        // Clear this thread's stack now; others do it on their next lockdep call. This
        // thread lives through the off period even if it never used lockdep before.
        with_state(|st| {
            st.sync_generation();
            st.lenient = true;
        });
    }
}

pub(crate) fn set_on_report(mode: OnReport) {
    init_env();
    let v = match mode {
        OnReport::Panic => 0,
        OnReport::PrintOnce => 1,
        OnReport::Collect => 2,
    };
    POLICY.store(v, Ordering::Relaxed);
}

pub(crate) fn on_report() -> OnReport {
    init_env();
    match POLICY.load(Ordering::Relaxed) {
        1 => OnReport::PrintOnce,
        2 => OnReport::Collect,
        _ => OnReport::Panic,
    }
}

// ---------------------------------------------------------------------------------------
// Global state
// ---------------------------------------------------------------------------------------

/// Registered classes; a class's id is its index + 1.
static CLASSES: Mutex<Vec<&'static LockClass>> = Mutex::new(Vec::new());
static GRAPH: LazyLock<Mutex<Graph>> = LazyLock::new(|| Mutex::new(Graph::default()));
/// Chain keys validated clean by any thread.
static CHAINS: LazyLock<RwLock<HashSet<u64, IdBuild>>> =
    LazyLock::new(|| RwLock::new(HashSet::with_hasher(IdBuild)));
static COLLECTED: Mutex<Vec<Report>> = Mutex::new(Vec::new());
/// (kind, classes) of the reports printed under `PrintOnce`.
type PrintedSet = HashSet<(ReportKind, Vec<String>)>;
static PRINTED_ONCE: LazyLock<Mutex<PrintedSet>> = LazyLock::new(|| Mutex::new(HashSet::new()));
static VALIDATIONS: AtomicU64 = AtomicU64::new(0);
static PRINTED: AtomicU64 = AtomicU64::new(0);
static EDGES: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn register_class(class: &'static LockClass) -> u32 {
    let mut classes = CLASSES.lock();
    let slot = class.raw_id_slot();
    let id = slot.load(Ordering::Acquire);
    if id != 0 {
        return id;
    }
    classes.push(class);
    let id = u32::try_from(classes.len()).expect("lockdep: too many lock classes");
    slot.store(id, Ordering::Release);
    id
}

pub(crate) fn take_reports() -> Vec<Report> {
    std::mem::take(&mut *COLLECTED.lock())
}

pub(crate) fn stats() -> Stats {
    Stats {
        classes: CLASSES.lock().len(),
        edges: EDGES.load(Ordering::Relaxed),
        chains: CHAINS.read().len(),
        validations: VALIDATIONS.load(Ordering::Relaxed),
        thread_validations: with_state(|st| st.validations).unwrap_or(0),
        printed: PRINTED.load(Ordering::Relaxed),
    }
}

// ---------------------------------------------------------------------------------------
// Chain keys
// ---------------------------------------------------------------------------------------

/// Key of the empty chain.
const CHAIN_SEED: u64 = 0x6c6f_636b_6465_7021;

/// Mix one held-lock word into a chain key (a splitmix64 finalizer over both).
#[inline]
fn chain_mix(key: u64, word: u64) -> u64 {
    let mut z = key.rotate_left(23) ^ word.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The part of an acquisition that decides its validation.
#[inline]
fn chain_word(node: u32, how: &Acquire) -> u64 {
    let mode = match how.mode {
        Mode::Write => 0u64,
        Mode::Read => 1,
        Mode::RecursiveRead => 2,
    };
    u64::from(node)
        | mode << 40
        | u64::from(how.trylock) << 42
        | u64::from(how.nest.is_some()) << 43
}

/// Chain keys are already well mixed: hash them as themselves.
#[derive(Clone, Copy, Default)]
struct IdBuild;

impl BuildHasher for IdBuild {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = chain_mix(self.0, u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

// ---------------------------------------------------------------------------------------
// Per-thread state
// ---------------------------------------------------------------------------------------

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
    fn holds(&self, instance: usize) -> bool {
        self.instance == instance || self.merged_position(instance).is_some()
    }
}

/// A report built while the thread state was borrowed, to be delivered after.
struct Pending {
    report: Report,
    sink: Option<Sink>,
}

struct ThreadState {
    held: Vec<Held>,
    /// Chain keys this thread knows to be clean.
    cache: HashSet<u64, IdBuild>,
    /// The `GENERATION` this stack belongs to.
    generation: u64,
    /// Whether this thread lived through a switch-off: it may hold locks lockdep never
    /// saw (see the module docs).
    lenient: bool,
    /// (class address, instance) of unmatched releases accepted this generation.
    excused: HashSet<(usize, usize)>,
    /// (class address, instance) of locks taken, on a lenient thread, under a nest lock
    /// that is not held; not validated.
    untracked: Vec<(usize, usize)>,
    /// Reused buffer for the entries above an out-of-order release.
    scratch: Vec<Held>,
    /// An empty buffer for the next merged run (`Held::more`), kept from the last one.
    spare_more: VecDeque<(usize, Loc)>,
    /// Installed captures, innermost last.
    captures: Vec<Sink>,
    /// `name/id`, computed once (the thread handle is unavailable in TLS destructors).
    name: String,
    validations: u64,
}

thread_local! {
    static STATE: RefCell<ThreadState> = RefCell::new(ThreadState::new());
}

/// Run `f` on this thread's state; `None` during thread teardown or re-entrancy.
fn with_state<R>(f: impl FnOnce(&mut ThreadState) -> R) -> Option<R> {
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

fn class_key(class: &'static LockClass) -> usize {
    class as *const LockClass as usize
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
    fn sync_generation(&mut self) {
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

    fn sink(&self) -> Option<Sink> {
        self.captures.last().cloned()
    }

    /// Whether delivering a report now would panic (so the caller should not record
    /// the acquisition it is about to abandon).
    fn report_panics(&self) -> bool {
        self.captures.is_empty() && POLICY.load(Ordering::Relaxed) == 0 && !std::thread::panicking()
    }

    fn pending(&self, kind: ReportKind, classes: Vec<String>, text: String) -> Pending {
        Pending {
            report: Report {
                kind,
                classes,
                thread: self.name.clone(),
                text,
            },
            sink: self.sink(),
        }
    }

    #[inline]
    fn acquire(
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

    /// Validate `held` on top of the stack (its chain is not in this thread's cache) and
    /// push it. `always_push`: push it even when the report panics (re-acquisition after
    /// an out-of-order release, where the lock is held whatever lockdep thinks).
    #[cold]
    fn acquire_slow(&mut self, held: Held, always_push: bool) -> Option<Pending> {
        if CHAINS.read().contains(&held.key) {
            self.cache.insert(held.key);
            self.held.push(held);
            return None;
        }
        self.validations += 1;
        VALIDATIONS.fetch_add(1, Ordering::Relaxed);
        match validate(&self.held, &held) {
            Ok(()) => {
                CHAINS.write().insert(held.key);
                self.cache.insert(held.key);
                self.held.push(held);
                None
            }
            Err(problem) => {
                let p = self.problem_report(problem, &held);
                if always_push || !self.report_panics() {
                    self.held.push(held);
                }
                Some(p)
            }
        }
    }

    fn problem_report(&self, problem: Problem, next: &Held) -> Pending {
        match problem {
            Problem::Recursive(i) => {
                let prev = &self.held[i];
                let t = text::recursive(&self.name, next, prev, &self.held);
                self.pending(
                    ReportKind::RecursiveLocking,
                    vec![next.class.name().into()],
                    t,
                )
            }
            Problem::Circular(i, path) => {
                let prev = &self.held[i];
                let t = text::circular(&self.name, next, prev, &path, &self.held, "");
                self.pending(
                    ReportKind::CircularDependency,
                    cycle_classes(next, prev, &path),
                    t,
                )
            }
        }
    }

    #[inline]
    fn release(&mut self, class: &'static LockClass, instance: usize, at: Loc) -> Option<Pending> {
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

/// The class names of a cycle in the order the splat names them.
fn cycle_classes(next: &Held, prev: &Held, path: &[Step]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    let mut add = |c: &LockClass| {
        let n = c.name().to_string();
        if !v.contains(&n) {
            v.push(n);
        }
    };
    add(next.class);
    add(prev.class);
    for s in path.iter().rev() {
        add(s.to_class);
        add(s.from_class);
    }
    v
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

enum Problem {
    /// AA against `held[i]`.
    Recursive(usize),
    /// Taking `next` while holding `held[i]` closes the cycle `next → … → held[i]`.
    Circular(usize, Vec<Step>),
}

/// Validate acquiring `next` on top of `held`: recursion first, then the new
/// dependencies, as the kernel's `validate_chain` does.
fn validate(held: &[Held], next: &Held) -> Result<(), Problem> {
    let mut nest_seen = false;
    for (i, prev) in held.iter().enumerate() {
        if Some(prev.instance) == next.how.nest {
            nest_seen = true;
        }
        if prev.node != next.node {
            continue;
        }
        // A recursive reader may retake a class its thread holds for read.
        if next.how.mode == Mode::RecursiveRead && prev.how.mode != Mode::Write {
            continue;
        }
        if nest_seen {
            // Serialized by the held nest lock: allowed, and it adds no dependency.
            return Ok(());
        }
        return Err(Problem::Recursive(i));
    }
    if held.is_empty() {
        return Ok(());
    }
    // Add prev → next for each held lock from the top down to and including the first
    // one that is not a trylock: locks below it reach `next` through it.
    let mut graph = GRAPH.lock();
    for (i, prev) in held.iter().enumerate().rev() {
        if prev.node != next.node {
            match graph.add_dep(prev, next) {
                AddDep::Known => {}
                AddDep::Added => {
                    EDGES.store(graph.edge_count(), Ordering::Relaxed);
                }
                AddDep::Cycle(path) => return Err(Problem::Circular(i, path)),
            }
        }
        if !prev.how.trylock {
            break;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Report delivery
// ---------------------------------------------------------------------------------------

fn print_splat(text: &str) {
    PRINTED.fetch_add(1, Ordering::Relaxed);
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Route a report: to the capture, else by the global policy. `may_panic` is false where
/// panicking is not allowed (thread-local destructors).
fn deliver(p: Pending, may_panic: bool) {
    let Pending { report, sink } = p;
    if let Some(sink) = sink {
        sink.lock().push(report);
        return;
    }
    match on_report() {
        OnReport::Collect => COLLECTED.lock().push(report),
        OnReport::PrintOnce => {
            let fresh = PRINTED_ONCE
                .lock()
                .insert((report.kind, report.classes.clone()));
            if fresh {
                print_splat(&report.text);
            }
        }
        OnReport::Panic => {
            print_splat(&report.text);
            if may_panic && !std::thread::panicking() {
                panic!(
                    "lockdep: {:?} report on {} involving {:?} (splat above)",
                    report.kind, report.thread, report.classes
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------

#[inline]
pub(crate) fn acquire(class: &'static LockClass, instance: usize, how: Acquire, at: Loc) {
    let id = class.id();
    if let Some(p) = with_state(|st| st.acquire(class, id, instance, how, at)).flatten() {
        deliver(p, true);
    }
}

#[inline]
pub(crate) fn release(class: &'static LockClass, instance: usize, at: Loc) {
    if let Some(p) = with_state(|st| st.release(class, instance, at)).flatten() {
        deliver(p, true);
    }
}

pub(crate) fn is_held(class: &'static LockClass, mode: Option<Mode>) -> bool {
    with_state(|st| {
        st.sync_generation();
        st.held
            .iter()
            .any(|h| std::ptr::eq(h.class, class) && mode.is_none_or(|m| h.how.mode == m))
    })
    .unwrap_or(false)
}

pub(crate) fn is_instance_held(class: &'static LockClass, instance: usize) -> bool {
    with_state(|st| {
        st.sync_generation();
        st.held
            .iter()
            .any(|h| std::ptr::eq(h.class, class) && h.holds(instance))
    })
    .unwrap_or(false)
}

pub(crate) fn assert_held(class: &'static LockClass, want_held: bool, at: Loc) {
    let p = with_state(|st| {
        st.sync_generation();
        let held = st.held.iter().any(|h| std::ptr::eq(h.class, class));
        if held == want_held {
            return None;
        }
        let t = text::assert_failed(&st.name, class, want_held, at, &st.held);
        Some(st.pending(ReportKind::AssertHeld, vec![class.name().into()], t))
    });
    if let Some(p) = p.flatten() {
        deliver(p, true);
    }
}

pub(crate) fn prime(chain: &[&'static LockClass], at: Loc) {
    let p = with_state(|st| {
        st.sync_generation();
        let mut prev: Option<Held> = None;
        for &class in chain {
            let node = node_of(class.id(), 0);
            let next = Held {
                class,
                node,
                instance: class.map_instance(),
                how: Acquire::write(),
                at,
                key: 0,
                more: VecDeque::new(),
            };
            if let Some(prev) = prev.take() {
                if prev.node == next.node {
                    let t = text::generic(
                        "lockdep annotation: class primed after itself",
                        &st.name,
                        &format!("prime() lists ({}) twice in a row", class.name()),
                        at,
                        &st.held,
                    );
                    return Some(st.pending(
                        ReportKind::BadAnnotation,
                        vec![class.name().into()],
                        t,
                    ));
                }
                let mut graph = GRAPH.lock();
                match graph.add_dep(&prev, &next) {
                    AddDep::Known => {}
                    AddDep::Added => EDGES.store(graph.edge_count(), Ordering::Relaxed),
                    AddDep::Cycle(path) => {
                        drop(graph);
                        let t = text::circular(
                            &st.name,
                            &next,
                            &prev,
                            &path,
                            &st.held,
                            "(while priming the lock order with lockdep::prime)",
                        );
                        let classes = cycle_classes(&next, &prev, &path);
                        return Some(st.pending(ReportKind::CircularDependency, classes, t));
                    }
                }
            }
            prev = Some(next);
        }
        None
    });
    if let Some(p) = p.flatten() {
        deliver(p, true);
    }
}

pub(crate) fn report_external(
    kind: ReportKind,
    classes: &[&'static LockClass],
    detail: &str,
    at: Loc,
) {
    let names: Vec<String> = classes.iter().map(|c| c.name().to_string()).collect();
    let title = match kind {
        ReportKind::CircularDependency => "possible circular locking dependency detected",
        ReportKind::RecursiveLocking => "possible recursive locking detected",
        ReportKind::BadUnlock => "bad unlock balance detected!",
        ReportKind::HeldAtExit => "lock held when thread exits!",
        ReportKind::AssertHeld => "lock assertion failed",
        ReportKind::BadAnnotation => "bad lockdep annotation",
        ReportKind::SleepInAtomic => "sleeping function called from invalid context",
        _ => "lock API misuse detected",
    };
    let mut detail = detail.trim_end().to_string();
    if !names.is_empty() {
        let list: Vec<String> = names.iter().map(|n| format!("({n})")).collect();
        detail = format!("{detail}\ninvolving lock classes: {}", list.join(", "));
    }
    let p = with_state(|st| {
        st.sync_generation();
        let t = text::generic(title, &st.name, &detail, at, &st.held);
        st.pending(kind, names.clone(), t)
    })
    .unwrap_or_else(|| Pending {
        report: Report {
            kind,
            classes: names.clone(),
            thread: "<exiting thread>".into(),
            text: text::generic(title, "<exiting thread>", &detail, at, &[]),
        },
        sink: None,
    });
    deliver(p, true);
}

pub(crate) fn held_locks_text() -> String {
    with_state(|st| {
        st.sync_generation();
        text::held_text(&st.name, &st.held)
    })
    .unwrap_or_default()
}

pub(crate) fn held_count() -> usize {
    with_state(|st| {
        st.sync_generation();
        st.held.iter().map(Held::count).sum()
    })
    .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Atomic sections
// ---------------------------------------------------------------------------------------

/// This thread's atomic-section depth and its innermost section (name, entry site).
type AtomicState = (u32, Option<(&'static str, Loc)>);

thread_local! {
    static ATOMIC: Cell<AtomicState> = const { Cell::new((0, None)) };
}

/// Restores the atomic state from before its section when dropped.
pub(crate) struct AtomicToken {
    /// `None` for a section entered while checking was off (nothing to restore).
    prev: Option<AtomicState>,
    _not_send: PhantomData<*const ()>,
}

impl AtomicToken {
    pub(crate) fn inert() -> Self {
        AtomicToken {
            prev: None,
            _not_send: PhantomData,
        }
    }
}

impl Drop for AtomicToken {
    #[inline]
    fn drop(&mut self) {
        if let Some(prev) = self.prev {
            let _ = ATOMIC.try_with(|c| c.set(prev));
        }
    }
}

#[inline]
pub(crate) fn atomic_enter(what: &'static str, at: Loc) -> AtomicToken {
    let prev = ATOMIC
        .try_with(|c| {
            let prev = c.get();
            c.set((prev.0 + 1, Some((what, at))));
            prev
        })
        .ok();
    AtomicToken {
        prev,
        _not_send: PhantomData,
    }
}

#[inline]
pub(crate) fn in_atomic() -> bool {
    ATOMIC.try_with(|c| c.get().0 > 0).unwrap_or(false)
}

/// Report a sleep (a blocking acquisition of `lock`, or a `might_sleep`) if this thread
/// is inside an atomic section.
#[inline]
pub(crate) fn might_sleep(lock: Option<(&'static LockClass, u8)>, at: Loc) {
    if let Ok((n, Some((what, entered)))) = ATOMIC.try_with(Cell::get) {
        if n > 0 {
            sleep_in_atomic(what, entered, lock, at);
        }
    }
}

#[cold]
#[inline(never)]
fn sleep_in_atomic(
    what: &'static str,
    entered: Loc,
    lock: Option<(&'static LockClass, u8)>,
    at: Loc,
) {
    let mut classes = vec![what.to_string()];
    let sleeper = match lock {
        Some((class, subclass)) => {
            classes.push(class.name().to_string());
            format!(
                "a blocking acquisition of ({})",
                text::class_text(class, subclass)
            )
        }
        None => "a call that may sleep".to_string(),
    };
    let detail = format!(
        "{sleeper} inside an atomic section: ({what})\n\
         the section was entered at: {entered}"
    );
    let title = "sleeping function called from invalid context";
    let p = with_state(|st| {
        st.sync_generation();
        let t = text::generic(title, &st.name, &detail, at, &st.held);
        st.pending(ReportKind::SleepInAtomic, classes.clone(), t)
    })
    .unwrap_or_else(|| Pending {
        report: Report {
            kind: ReportKind::SleepInAtomic,
            classes: classes.clone(),
            thread: "<exiting thread>".into(),
            text: text::generic(title, "<exiting thread>", &detail, at, &[]),
        },
        sink: None,
    });
    deliver(p, true);
}

/// Uninstalls its capture from the thread that installed it.
pub(crate) struct CaptureToken {
    sink: Sink,
    /// Captures are per thread: the guard must drop where it was made.
    _not_send: PhantomData<*const ()>,
}

impl Drop for CaptureToken {
    fn drop(&mut self) {
        with_state(|st| {
            if let Some(i) = st.captures.iter().rposition(|c| Arc::ptr_eq(c, &self.sink)) {
                st.captures.remove(i);
            }
        });
    }
}

pub(crate) fn install_capture(sink: Sink) -> CaptureGuard {
    with_state(|st| st.captures.push(sink.clone()));
    CaptureGuard {
        _private: CaptureToken {
            sink,
            _not_send: PhantomData,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_keys_depend_on_order_and_mode() {
        let w = |node, mode| {
            chain_word(
                node,
                &Acquire {
                    mode,
                    ..Acquire::write()
                },
            )
        };
        let ab = chain_mix(chain_mix(CHAIN_SEED, w(8, Mode::Write)), w(16, Mode::Write));
        let ba = chain_mix(chain_mix(CHAIN_SEED, w(16, Mode::Write)), w(8, Mode::Write));
        let ab_r = chain_mix(
            chain_mix(CHAIN_SEED, w(8, Mode::Write)),
            w(16, Mode::RecursiveRead),
        );
        assert_ne!(ab, ba);
        assert_ne!(ab, ab_r);
        let try_word = chain_word(16, &Acquire::write().trylock());
        let nest_word = chain_word(16, &Acquire::write().nest(1));
        assert_ne!(try_word, w(16, Mode::Write));
        assert_ne!(nest_word, w(16, Mode::Write));
    }
}
