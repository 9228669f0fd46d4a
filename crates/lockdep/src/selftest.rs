//! Self-test scenarios: ports of the kernel's `lib/locking-selftest.c`, as library
//! functions so that both `cargo test` and `dmabuf selftest` run them.
//!
//! Every scenario uses fresh classes ([`LockClass::leak`]), so scenarios never share graph
//! nodes and may run concurrently; a [`crate::capture`] collects its reports whatever the
//! global policy. Scenarios only make annotation calls: nothing blocks.
//!
//! The kernel runs most scenarios once per lock kind. Lockdep only sees the mode, so the
//! kinds map to modes: `spin`, `wlock`, `mutex`, `wsem` are [`Mode::Write`]; `rlock` (an
//! rwlock reader, which the kernel's self-test treats as recursive) is
//! [`Mode::RecursiveRead`]; `rsem` (an rwsem reader) is [`Mode::Read`].
//!
//! Every scenario here is [`Case::lockdep_only`]: with checking off (feature `off`,
//! `LOCKDEP=off`, or [`crate::set_enabled`]) runners report it as skipped, never as
//! passed.

use crate::{acquire, capture, release, Acquire, Capture, LockClass, Mode, Report, ReportKind};

/// One self-test scenario.
#[derive(Clone, Copy)]
pub struct Case {
    /// `suite/name`, e.g. `locking/AA-spin`.
    pub name: &'static str,
    /// Runs the scenario; `Err` says what went wrong.
    pub run: fn() -> Result<(), String>,
    /// The scenario's whole point is a lockdep report (or lockdep's own bookkeeping):
    /// with checking off there is nothing to check, and runners skip it
    /// ([`Case::skip_reason`]) instead of failing it. Scenarios that check an errno *and*
    /// a report are not lockdep-only: they check the errno always and the report only
    /// when [`crate::enabled`].
    pub lockdep_only: bool,
}

/// What a runner prints for a lockdep-only case while checking is off.
pub const SKIPPED_LOCKDEP_OFF: &str = "skipped: lockdep off";

impl Case {
    /// A scenario that runs with lockdep on or off. `run` returns `Err(what went wrong)`
    /// when the scenario fails; it checks lockdep reports only `if crate::enabled()`, so
    /// that it passes with checking off too.
    pub const fn new(name: &'static str, run: fn() -> Result<(), String>) -> Self {
        Case {
            name,
            run,
            lockdep_only: false,
        }
    }

    /// A scenario that checks lockdep itself; skipped while checking is off. `run` returns
    /// `Err(what went wrong)` when the scenario fails.
    pub const fn lockdep_only(name: &'static str, run: fn() -> Result<(), String>) -> Self {
        Case {
            name,
            run,
            lockdep_only: true,
        }
    }

    /// Why this case does not run now (`Some(SKIPPED_LOCKDEP_OFF)` for a lockdep-only
    /// case while checking is off), or `None` when it runs.
    pub fn skip_reason(&self) -> Option<&'static str> {
        (self.lockdep_only && !crate::enabled()).then_some(SKIPPED_LOCKDEP_OFF)
    }
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

type Outcome = Result<(), String>;

use Mode::{Read as R, RecursiveRead as RR, Write as W};
use ReportKind::{
    AssertHeld, BadAnnotation, BadUnlock, CircularDependency as Circular, HeldAtExit, Misuse,
    RecursiveLocking as Recursive, SleepInAtomic,
};

// ---------------------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------------------

/// Fresh classes named as given.
fn classes<const N: usize>(names: [&str; N]) -> [&'static LockClass; N] {
    names.map(LockClass::leak)
}

/// Instance `n` of class `c` (instances 1, 2… of one class are distinct locks).
fn inst(c: &'static LockClass, n: usize) -> usize {
    c.map_instance() + n
}

fn how(mode: Mode) -> Acquire {
    Acquire {
        mode,
        ..Acquire::write()
    }
}

/// Lock instance 1 of `c`.
#[track_caller]
fn lock(c: &'static LockClass, mode: Mode) {
    acquire(c, inst(c, 1), how(mode));
}

/// Lock instance `n` of `c`.
#[track_caller]
fn lock_n(c: &'static LockClass, n: usize, mode: Mode) {
    acquire(c, inst(c, n), how(mode));
}

/// Lock instance `n` of `c` with full parameters.
#[track_caller]
fn lock_how(c: &'static LockClass, n: usize, how: Acquire) {
    acquire(c, inst(c, n), how);
}

/// Trylock instance `n` of `c` (succeeding).
#[track_caller]
fn trylock_n(c: &'static LockClass, n: usize, mode: Mode) {
    acquire(c, inst(c, n), how(mode).trylock());
}

/// Unlock instance 1 of `c`.
#[track_caller]
fn unlock(c: &'static LockClass) {
    release(c, inst(c, 1));
}

/// Unlock instance `n` of `c`.
#[track_caller]
fn unlock_n(c: &'static LockClass, n: usize) {
    release(c, inst(c, n));
}

/// Lock `a`, lock `b`, unlock both: teaches `a → b`.
#[track_caller]
fn lock_unlock_2(a: &'static LockClass, b: &'static LockClass, mode: Mode) {
    lock(a, mode);
    lock(b, mode);
    unlock(b);
    unlock(a);
}

/// Lock `a` in `ma`, then `b` in `mb`, unlock both.
#[track_caller]
fn pair(a: &'static LockClass, ma: Mode, b: &'static LockClass, mb: Mode) {
    lock(a, ma);
    lock(b, mb);
    unlock(b);
    unlock(a);
}

fn summary(reports: &[Report]) -> String {
    let v: Vec<String> = reports
        .iter()
        .map(|r| format!("{:?}{:?}", r.kind, r.classes))
        .collect();
    format!("[{}]", v.join(", "))
}

/// No report at all.
fn clean(reports: Vec<Report>) -> Outcome {
    if reports.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "expected no report, got {}:\n{}",
            summary(&reports),
            reports[0].text
        ))
    }
}

/// Exactly one report, of `kind`, naming every class in `names`, whose splat names a
/// source location in this file.
fn one(reports: Vec<Report>, kind: ReportKind, names: &[&str]) -> Outcome {
    if reports.len() != 1 {
        return Err(format!(
            "expected one {kind:?} report naming {names:?}, got {}",
            summary(&reports)
        ));
    }
    let r = &reports[0];
    if r.kind != kind {
        return Err(format!(
            "expected a {kind:?} report, got {:?}:\n{}",
            r.kind, r.text
        ));
    }
    for n in names {
        if !r.classes.iter().any(|c| c == n) {
            return Err(format!(
                "the {kind:?} report does not name class {n} (it names {:?}):\n{}",
                r.classes, r.text
            ));
        }
        if !r.text.contains(&format!("({n}")) {
            return Err(format!("the splat does not show class ({n}):\n{}", r.text));
        }
    }
    if !r.text.contains(file!()) {
        return Err(format!(
            "the splat names no source location in {}:\n{}",
            file!(),
            r.text
        ));
    }
    Ok(())
}

/// `one(…)` when `fails`, else `clean(…)`.
fn expect(fails: bool, reports: Vec<Report>, kind: ReportKind, names: &[&str]) -> Outcome {
    if fails {
        one(reports, kind, names)
    } else {
        clean(reports)
    }
}

/// In the kernel's 6R tables every kind fails except `rlock` (recursive readers).
fn fails_unless_recursive(mode: Mode) -> bool {
    mode != RR
}

// ---------------------------------------------------------------------------------------
// The per-kind scenarios (DO_TESTCASE_6R / DO_TESTCASE_6)
// ---------------------------------------------------------------------------------------

/// AA: two locks of one class, nested.
fn aa(mode: Mode) -> Outcome {
    let [x] = classes(["X"]);
    let ((), r) = capture(|| {
        lock_n(x, 1, mode);
        lock_n(x, 2, mode); // should fail, unless recursive readers
        unlock_n(x, 2);
        unlock_n(x, 1);
    });
    expect(fails_unless_recursive(mode), r, Recursive, &["X"])
}

/// AB then BA.
fn abba(mode: Mode) -> Outcome {
    let [a, b] = classes(["A", "B"]);
    let ((), r) = capture(|| {
        lock_unlock_2(a, b, mode);
        lock_unlock_2(b, a, mode); // should fail
    });
    expect(fails_unless_recursive(mode), r, Circular, &["A", "B"])
}

/// AB, BC, CA.
fn abbcca(mode: Mode) -> Outcome {
    let [a, b, c] = classes(["A", "B", "C"]);
    let ((), r) = capture(|| {
        lock_unlock_2(a, b, mode);
        lock_unlock_2(b, c, mode);
        lock_unlock_2(c, a, mode); // should fail
    });
    expect(fails_unless_recursive(mode), r, Circular, &["A", "B", "C"])
}

/// AB, CA, BC.
fn abcabc(mode: Mode) -> Outcome {
    let [a, b, c] = classes(["A", "B", "C"]);
    let ((), r) = capture(|| {
        lock_unlock_2(a, b, mode);
        lock_unlock_2(c, a, mode);
        lock_unlock_2(b, c, mode); // should fail
    });
    expect(fails_unless_recursive(mode), r, Circular, &["A", "B", "C"])
}

/// AB, BC, CD, DA.
fn abbccdda(mode: Mode) -> Outcome {
    let [a, b, c, d] = classes(["A", "B", "C", "D"]);
    let ((), r) = capture(|| {
        lock_unlock_2(a, b, mode);
        lock_unlock_2(b, c, mode);
        lock_unlock_2(c, d, mode);
        lock_unlock_2(d, a, mode); // should fail
    });
    expect(
        fails_unless_recursive(mode),
        r,
        Circular,
        &["A", "B", "C", "D"],
    )
}

/// AB, CD, BD, DA: the cycle is A → B → D → A; C is not part of it.
fn abcdbdda(mode: Mode) -> Outcome {
    let [a, b, c, d] = classes(["A", "B", "C", "D"]);
    let ((), r) = capture(|| {
        lock_unlock_2(a, b, mode);
        lock_unlock_2(c, d, mode);
        lock_unlock_2(b, d, mode);
        lock_unlock_2(d, a, mode); // should fail
    });
    expect(fails_unless_recursive(mode), r, Circular, &["A", "B", "D"])
}

/// AB, CD, BC, DA.
fn abcdbcda(mode: Mode) -> Outcome {
    let [a, b, c, d] = classes(["A", "B", "C", "D"]);
    let ((), r) = capture(|| {
        lock_unlock_2(a, b, mode);
        lock_unlock_2(c, d, mode);
        lock_unlock_2(b, c, mode);
        lock_unlock_2(d, a, mode); // should fail
    });
    expect(
        fails_unless_recursive(mode),
        r,
        Circular,
        &["A", "B", "C", "D"],
    )
}

/// Lock, unlock, unlock again: fails for every kind.
fn double_unlock(mode: Mode) -> Outcome {
    let [a] = classes(["A"]);
    let ((), r) = capture(|| {
        lock(a, mode);
        unlock(a);
        unlock(a); // should fail
    });
    one(r, BadUnlock, &["A"])
}

/// A ring of `n` classes, each taken inside the previous one; the last closes the ring.
fn ring(n: usize, mode: Mode) -> Outcome {
    let names: Vec<String> = (0..n).map(|i| format!("L{i}")).collect();
    let cs: Vec<&'static LockClass> = names.iter().map(LockClass::leak).collect();
    let ((), r) = capture(|| {
        for i in 0..n {
            lock_unlock_2(cs[i], cs[(i + 1) % n], mode);
        }
    });
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    expect(fails_unless_recursive(mode), r, Circular, &refs)
}

// ---------------------------------------------------------------------------------------
// Read-lock special cases
// ---------------------------------------------------------------------------------------

/// RL(X1); RL(X1): the same instance read twice.
fn read_aa1(mode: Mode) -> Outcome {
    let [x] = classes(["X"]);
    let ((), r) = capture(|| {
        lock_n(x, 1, mode);
        lock_n(x, 1, mode);
        unlock_n(x, 1);
        unlock_n(x, 1);
    });
    expect(mode != RR, r, Recursive, &["X"])
}

/// RL(X1); RL(X2): two instances of one class read.
fn read_aa1b(mode: Mode) -> Outcome {
    let [x] = classes(["X"]);
    let ((), r) = capture(|| {
        lock_n(x, 1, mode);
        lock_n(x, 2, mode);
        unlock_n(x, 2);
        unlock_n(x, 1);
    });
    expect(mode != RR, r, Recursive, &["X"])
}

/// RL(X1); WL(X2): fails for both kinds.
fn read_aa2(mode: Mode) -> Outcome {
    let [x] = classes(["X"]);
    let ((), r) = capture(|| {
        lock_n(x, 1, mode);
        lock_n(x, 2, W);
        unlock_n(x, 2);
        unlock_n(x, 1);
    });
    one(r, Recursive, &["X"])
}

/// WL(X1); RL(X2): fails for both kinds.
fn read_aa3(mode: Mode) -> Outcome {
    let [x] = classes(["X"]);
    let ((), r) = capture(|| {
        lock_n(x, 1, W);
        lock_n(x, 2, mode);
        unlock_n(x, 2);
        unlock_n(x, 1);
    });
    one(r, Recursive, &["X"])
}

/// read(X) → Y; Y → write(X): fails for both kinds.
fn read_abba1(mode: Mode) -> Outcome {
    let [x, y] = classes(["X", "Y"]);
    let ((), r) = capture(|| {
        pair(x, mode, y, W);
        pair(y, W, x, W); // should fail
    });
    one(r, Circular, &["X", "Y"])
}

/// read(X) → Y; Y → read(X): fine for recursive readers, fails for rwsem readers.
fn read_abba2(mode: Mode) -> Outcome {
    let [x, y] = classes(["X", "Y"]);
    let ((), r) = capture(|| {
        pair(x, mode, y, W);
        pair(y, W, x, mode);
    });
    expect(mode != RR, r, Circular, &["X", "Y"])
}

/// write(X) → Y; Y → write(X): fails.
fn read_abba3(_mode: Mode) -> Outcome {
    let [x, y] = classes(["X", "Y"]);
    let ((), r) = capture(|| {
        pair(x, W, y, W);
        pair(y, W, x, W); // should fail
    });
    one(r, Circular, &["X", "Y"])
}

/// The chain cache must tell a read from a write: Y → read(X) is fine and cached, then
/// Y → write(X) must still be reported.
fn rlock_chaincache_abba1() -> Outcome {
    let [x, y] = classes(["X", "Y"]);
    let ((), r) = capture(|| {
        pair(x, RR, y, W);
        pair(y, W, x, RR);
        pair(y, W, x, W); // should fail
    });
    one(r, Circular, &["X", "Y"])
}

/// Run three events in the order given (the kernel's GENERATE_PERMUTATIONS_3_EVENTS).
fn permute(order: [u8; 3], events: [&dyn Fn(); 3]) {
    for e in order {
        events[usize::from(e - 1)]();
    }
}

/// W1R2 / W2R3 / W3R1: a deadlock even though the reads are recursive.
fn w1r2_w2r3_w3r1(order: [u8; 3]) -> Outcome {
    let [x, y, z] = classes(["X", "Y", "Z"]);
    let ((), r) = capture(|| {
        permute(
            order,
            [&|| pair(x, W, y, RR), &|| pair(y, W, z, RR), &|| {
                pair(z, W, x, RR)
            }],
        )
    });
    one(r, Circular, &["X", "Y", "Z"])
}

/// W1W2 / R2R3 / W3R1: a deadlock even though the reads are recursive.
fn w1w2_r2r3_w3r1(order: [u8; 3]) -> Outcome {
    let [x, y, z] = classes(["X", "Y", "Z"]);
    let ((), r) = capture(|| {
        permute(
            order,
            [&|| pair(x, W, y, W), &|| pair(y, RR, z, RR), &|| {
                pair(z, W, x, RR)
            }],
        )
    });
    one(r, Circular, &["X", "Y", "Z"])
}

/// W1W2 / R2R3 / R3W1: not a deadlock (a recursive read, then a read-held lock).
fn w1w2_r2r3_r3w1(order: [u8; 3]) -> Outcome {
    let [x, y, z] = classes(["X", "Y", "Z"]);
    let ((), r) = capture(|| {
        permute(
            order,
            [&|| pair(x, W, y, W), &|| pair(y, RR, z, RR), &|| {
                pair(z, RR, x, W)
            }],
        )
    });
    clean(r)
}

/// W1R2 / R2R3 / W3W1: not a deadlock.
fn w1r2_r2r3_w3w1(order: [u8; 3]) -> Outcome {
    let [x, y, z] = classes(["X", "Y", "Z"]);
    let ((), r) = capture(|| {
        permute(
            order,
            [&|| pair(x, W, y, RR), &|| pair(y, RR, z, RR), &|| {
                pair(z, W, x, W)
            }],
        )
    });
    clean(r)
}

/// One edge can carry several types: X → Y seen as SR and later as EN; then Y(read) →
/// X(write) closes a strong cycle through the EN type.
fn edge_types_accumulate() -> Outcome {
    let [x, y] = classes(["X", "Y"]);
    let ((), r) = capture(|| {
        pair(x, RR, y, RR);
        pair(x, W, y, W);
        pair(y, RR, x, W); // should fail
    });
    one(r, Circular, &["X", "Y"])
}

/// Only the SR type on X → Y: Y(read) → X(write) is not a deadlock.
fn edge_types_sr_only() -> Outcome {
    let [x, y] = classes(["X", "Y"]);
    let ((), r) = capture(|| {
        pair(x, RR, y, RR);
        pair(y, RR, x, W);
    });
    clean(r)
}

/// The search must revisit a class first reached through a recursive-read edge when a
/// longer path reaches it through a normal edge: S → M is SR (a dead end towards T), but
/// S → P → M is EN, EN and M → T is SN, so T → S closes a strong cycle.
fn strong_path_revisit() -> Outcome {
    let [s, m, p, t] = classes(["S", "M", "P", "T"]);
    let ((), r) = capture(|| {
        pair(s, RR, m, RR);
        pair(s, W, p, W);
        pair(p, W, m, W);
        pair(m, RR, t, W);
        pair(t, W, s, W); // should fail
    });
    one(r, Circular, &["S", "M", "P", "T"])
}

// ---------------------------------------------------------------------------------------
// Nest locks (the ww acquire context) and trylocks
// ---------------------------------------------------------------------------------------

/// X; Y1 under nest X; A; Y2 under nest X: not a deadlock, X serializes the Ys.
fn nest_lock_held() -> Outcome {
    let [x, y, a] = classes(["X", "Y", "A"]);
    let ((), r) = capture(|| {
        lock(x, W);
        lock_how(y, 1, Acquire::write().nest(inst(x, 1)));
        lock(a, W);
        lock_how(y, 2, Acquire::write().nest(inst(x, 1)));
        unlock(a);
        unlock_n(y, 2);
        unlock_n(y, 1);
        unlock(x);
    });
    clean(r)
}

/// A lock taken under a nest lock that is not held.
fn nest_lock_not_held() -> Outcome {
    let [a, o] = classes(["A", "O"]);
    let ((), r) = capture(|| {
        lock_how(a, 1, Acquire::write().nest(inst(o, 1)));
        unlock(a);
    });
    one(r, BadAnnotation, &["A"])
}

/// Eight objects of one class under one context, released in a scrambled order.
fn nest_many() -> Outcome {
    let [ctx, obj] = classes(["ctx", "obj"]);
    let ((), r) = capture(|| {
        lock(ctx, W);
        for n in 1..=8 {
            lock_how(obj, n, Acquire::write().nest(inst(ctx, 1)));
        }
        for n in [3, 1, 8, 2, 7, 4, 6, 5] {
            unlock_n(obj, n);
        }
        unlock(ctx);
    });
    clean(r)
}

/// O1 taken without the context, then O2 under it: the context did not serialize O1, so
/// this is recursion (the kernel's ww "block/context" case).
fn nest_after_plain() -> Outcome {
    let [ctx, obj] = classes(["ctx", "obj"]);
    let ((), r) = capture(|| {
        lock_n(obj, 1, W);
        lock(ctx, W);
        lock_how(obj, 2, Acquire::write().nest(inst(ctx, 1))); // should fail
        unlock_n(obj, 2);
        unlock(ctx);
        unlock_n(obj, 1);
    });
    one(r, Recursive, &["obj"])
}

/// O1 under the context, then O2 without it (the kernel's ww "context/block" case).
fn nest_then_plain() -> Outcome {
    let [ctx, obj] = classes(["ctx", "obj"]);
    let ((), r) = capture(|| {
        lock(ctx, W);
        lock_how(obj, 1, Acquire::write().nest(inst(ctx, 1)));
        lock_n(obj, 2, W); // should fail
        unlock_n(obj, 2);
        unlock_n(obj, 1);
        unlock(ctx);
    });
    one(r, Recursive, &["obj"])
}

/// A trylock of O1, then a trylock of O2: trylocks are never checked.
fn try_try() -> Outcome {
    let [obj] = classes(["obj"]);
    let ((), r) = capture(|| {
        trylock_n(obj, 1, W);
        trylock_n(obj, 2, W);
        unlock_n(obj, 2);
        unlock_n(obj, 1);
    });
    clean(r)
}

/// A trylock of O1, then a blocking lock of O2: recursion.
fn try_block() -> Outcome {
    let [obj] = classes(["obj"]);
    let ((), r) = capture(|| {
        trylock_n(obj, 1, W);
        lock_n(obj, 2, W); // should fail
        unlock_n(obj, 2);
        unlock_n(obj, 1);
    });
    one(r, Recursive, &["obj"])
}

/// A blocking lock of O1, then a trylock of O2: fine.
fn block_try() -> Outcome {
    let [obj] = classes(["obj"]);
    let ((), r) = capture(|| {
        lock_n(obj, 1, W);
        trylock_n(obj, 2, W);
        unlock_n(obj, 2);
        unlock_n(obj, 1);
    });
    clean(r)
}

/// A → B known; then B held, A trylocked: a trylock cannot deadlock.
fn trylock_not_checked() -> Outcome {
    let [a, b] = classes(["A", "B"]);
    let ((), r) = capture(|| {
        lock_unlock_2(a, b, W);
        lock(b, W);
        trylock_n(a, 1, W);
        unlock(a);
        unlock(b);
    });
    clean(r)
}

/// Locks taken under a trylock depend on it: trylock A, lock B; later B then A fails.
fn trylock_then_depends() -> Outcome {
    let [a, b] = classes(["A", "B"]);
    let ((), r) = capture(|| {
        trylock_n(a, 1, W);
        lock(b, W);
        unlock(b);
        unlock(a);
        lock_unlock_2(b, a, W); // should fail
    });
    one(r, Circular, &["A", "B"])
}

/// A, trylock T, B: edges T → B *and* A → B (the walk goes past trylocks down to the first
/// blocking lock). So B then A fails even though A → T was never recorded.
fn trylock_walks_to_blocking() -> Outcome {
    let [a, t, b] = classes(["A", "T", "B"]);
    let ((), r) = capture(|| {
        lock(a, W);
        trylock_n(t, 1, W);
        lock(b, W);
        unlock(b);
        unlock(t);
        unlock(a);
        lock_unlock_2(b, a, W); // should fail
    });
    one(r, Circular, &["A", "B"])
}

/// The kernel's ww "spinlock/block" case: A; O then A; then A then O.
fn spin_block() -> Outcome {
    let [a, o] = classes(["A", "O"]);
    let ((), r) = capture(|| {
        lock(a, W);
        unlock(a);
        lock_unlock_2(o, a, W);
        lock_unlock_2(a, o, W); // should fail
    });
    one(r, Circular, &["A", "O"])
}

/// The kernel's ww "spinlock/try" case: the same with O trylocked, which is fine.
fn spin_try() -> Outcome {
    let [a, o] = classes(["A", "O"]);
    let ((), r) = capture(|| {
        lock(a, W);
        unlock(a);
        trylock_n(o, 1, W);
        lock(a, W);
        unlock(a);
        unlock(o);
        lock(a, W);
        trylock_n(o, 1, W);
        unlock(o);
        unlock(a);
    });
    clean(r)
}

/// The kernel's ww "spinlock/context" case: O under a context, then A; later A then O
/// under the context: a cycle O → A → O.
fn spin_context() -> Outcome {
    let [a, ctx, o] = classes(["A", "ctx", "O"]);
    let nest = Acquire::write().nest(inst(ctx, 1));
    let ((), r) = capture(|| {
        lock(a, W);
        unlock(a);
        lock(ctx, W);
        lock_how(o, 1, nest);
        lock(a, W);
        unlock(a);
        unlock(o);
        lock(a, W);
        lock_how(o, 1, nest); // should fail
        unlock(o);
        unlock(a);
        unlock(ctx);
    });
    one(r, Circular, &["A", "O"])
}

// ---------------------------------------------------------------------------------------
// Subclasses
// ---------------------------------------------------------------------------------------

/// X/0 then X/1: different subclasses are different graph nodes, not recursion.
fn subclass_nesting() -> Outcome {
    let [x] = classes(["X"]);
    let ((), r) = capture(|| {
        lock_how(x, 1, Acquire::write());
        lock_how(x, 2, Acquire::write().subclass(1));
        unlock_n(x, 2);
        unlock_n(x, 1);
    });
    clean(r)
}

/// X/1 twice is recursion.
fn subclass_aa() -> Outcome {
    let [x] = classes(["X"]);
    let ((), r) = capture(|| {
        lock_how(x, 1, Acquire::write().subclass(1));
        lock_how(x, 2, Acquire::write().subclass(1)); // should fail
        unlock_n(x, 2);
        unlock_n(x, 1);
    });
    one(r, Recursive, &["X"])
}

/// X/0 → X/1, then X/1 → X/0: a cycle between subclasses.
fn subclass_abba() -> Outcome {
    let [x] = classes(["X"]);
    let ((), r) = capture(|| {
        lock_how(x, 1, Acquire::write());
        lock_how(x, 2, Acquire::write().subclass(1));
        unlock_n(x, 2);
        unlock_n(x, 1);
        lock_how(x, 2, Acquire::write().subclass(1));
        lock_how(x, 1, Acquire::write()); // should fail
        unlock_n(x, 1);
        unlock_n(x, 2);
    });
    one(r, Circular, &["X"])
}

/// Subclass 8 is out of range.
fn subclass_out_of_range() -> Outcome {
    let [x] = classes(["X"]);
    let ((), r) = capture(|| {
        lock_how(x, 1, Acquire::write().subclass(crate::MAX_SUBCLASSES));
        unlock_n(x, 1);
    });
    one(r, BadAnnotation, &["X"])
}

// ---------------------------------------------------------------------------------------
// Unlock balance, thread exit, assertions
// ---------------------------------------------------------------------------------------

/// Release of a lock never taken.
fn unlock_not_held() -> Outcome {
    let [a] = classes(["A"]);
    let ((), r) = capture(|| unlock(a));
    one(r, BadUnlock, &["A"])
}

/// Lock X1, release X2.
fn unlock_wrong_instance() -> Outcome {
    let [x] = classes(["X"]);
    let ((), r) = capture(|| {
        lock_n(x, 1, W);
        unlock_n(x, 2); // should fail
        unlock_n(x, 1);
    });
    one(r, BadUnlock, &["X"])
}

/// Out-of-order release is fine, and the chain keys above the hole are re-derived: after
/// A, B, C and releasing B, taking D validates the chain A, C, D.
fn unlock_out_of_order() -> Outcome {
    let [a, b, c, d] = classes(["A", "B", "C", "D"]);
    let ((), r) = capture(|| {
        lock(a, W);
        lock(b, W);
        lock(c, W);
        unlock(b);
        lock(d, W);
        unlock(a);
        unlock(d);
        unlock(c);
        // C → D is known now; D then C must be reported.
        lock_unlock_2(d, c, W);
    });
    one(r, Circular, &["C", "D"])
}

/// A (write), B (recursive read), C (write), then B released: re-acquiring C on top of A
/// records A → C, which taking C under B did not (B → C is SN, and A → B is ER: no strong
/// path from A to C). So C then A is an ABBA on A and C.
fn unlock_middle_revalidates() -> Outcome {
    let [a, b, c] = classes(["A", "B", "C"]);
    let ((), r) = capture(|| {
        lock(a, W);
        lock(b, RR);
        lock(c, W);
        unlock(b);
        unlock(c);
        unlock(a);
        lock_unlock_2(c, a, W); // should fail
    });
    one(r, Circular, &["A", "C"])
}

/// Eight objects under one context with a lock of another class in the middle of the
/// run: releasing it joins the two halves, and every object is still released as itself.
fn nest_run_split_and_joined() -> Outcome {
    let [ctx, obj, x] = classes(["ctx", "obj", "X"]);
    let nest = Acquire::write().nest(inst(ctx, 1));
    let ((), r) = capture(|| {
        lock(ctx, W);
        for n in 1..=4 {
            lock_how(obj, n, nest);
        }
        lock(x, W);
        for n in 5..=8 {
            lock_how(obj, n, nest);
        }
        unlock(x);
        for n in [5, 1, 8, 4, 2, 7, 3, 6] {
            unlock_n(obj, n);
        }
        unlock_n(obj, 3); // should fail
        unlock(ctx);
    });
    one(r, BadUnlock, &["obj"])
}

/// A thread that ends holding a lock.
fn held_at_exit() -> Outcome {
    let [a] = classes(["A"]);
    let cap = Capture::new();
    let thread_cap = cap.clone();
    let joined = std::thread::Builder::new()
        .name("selftest-exit".into())
        .spawn(move || {
            // Stays installed until the thread's state is torn down.
            std::mem::forget(thread_cap.install());
            lock(a, W);
        })
        .map_err(|e| e.to_string())?
        .join();
    if joined.is_err() {
        return Err("the exiting thread panicked".into());
    }
    let r = cap.take();
    one(r.clone(), HeldAtExit, &["A"])?;
    if !r[0].thread.starts_with("selftest-exit/") {
        return Err(format!("report names thread {:?}", r[0].thread));
    }
    Ok(())
}

/// A thread that releases everything before it ends.
fn exit_clean() -> Outcome {
    let [a] = classes(["A"]);
    let cap = Capture::new();
    let thread_cap = cap.clone();
    std::thread::spawn(move || {
        std::mem::forget(thread_cap.install());
        lock(a, W);
        unlock(a);
    })
    .join()
    .map_err(|_| "the thread panicked".to_string())?;
    clean(cap.take())
}

/// assert_held / assert_not_held, both ways.
fn assertions() -> Outcome {
    let [a, b] = classes(["A", "B"]);
    let ((), r) = capture(|| {
        lock(a, R);
        crate::assert_held(a);
        crate::assert_not_held(b);
        unlock(a);
    });
    clean(r)?;
    let ((), r) = capture(|| crate::assert_held(a));
    one(r, AssertHeld, &["A"])?;
    let ((), r) = capture(|| {
        lock(b, W);
        crate::assert_not_held(b);
        unlock(b);
    });
    one(r, AssertHeld, &["B"])
}

/// is_held, is_held_mode, is_instance_held, held_count.
fn queries() -> Outcome {
    let [a, b] = classes(["A", "B"]);
    let (res, r) = capture(|| {
        let before = crate::held_count();
        lock_n(a, 1, R);
        lock_n(b, 1, RR);
        let got = (
            crate::is_held(a),
            crate::is_held_mode(a, R),
            crate::is_held_mode(a, W),
            crate::is_held_mode(b, RR),
            crate::is_instance_held(a, inst(a, 1)),
            crate::is_instance_held(a, inst(a, 2)),
            crate::held_count() - before,
        );
        let text = crate::held_locks_text();
        unlock_n(b, 1);
        unlock_n(a, 1);
        let after = (crate::is_held(a), crate::held_count() - before);
        (got, after, text)
    });
    clean(r)?;
    let (got, after, text) = res;
    if got != (true, true, false, true, true, false, 2) || after != (false, 0) {
        return Err(format!("queries answered {got:?} then {after:?}"));
    }
    if !text.contains("(A){read}") || !text.contains("(B){recursive read}") {
        return Err(format!("held_locks_text lacks the locks:\n{text}"));
    }
    Ok(())
}

/// A lock implementation's own misuse report goes through the same routing.
fn external_report() -> Outcome {
    let [a] = classes(["A"]);
    let ((), r) = capture(|| crate::report(Misuse, &[a], "context used after fini"));
    one(r.clone(), Misuse, &["A"])?;
    if !r[0].text.contains("context used after fini") {
        return Err(format!("detail missing:\n{}", r[0].text));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Atomic sections (might_sleep)
// ---------------------------------------------------------------------------------------

/// A blocking acquisition inside an atomic section is a sleep there: reported, naming the
/// section and the class; the same acquisition outside is clean.
fn atomic_blocking_lock(mode: Mode) -> Outcome {
    let [a] = classes(["A"]);
    let ((), r) = capture(|| {
        lock(a, mode);
        unlock(a);
    });
    clean(r)?;
    let ((), r) = capture(|| {
        let _s = crate::atomic_enter("test-atomic");
        lock(a, mode); // should fail: sleeping in an atomic section
        unlock(a);
    });
    one(r, SleepInAtomic, &["test-atomic", "A"])
}

/// A trylock never sleeps: no report inside an atomic section, and the locks taken
/// after it outside still depend on nothing new.
fn atomic_trylock() -> Outcome {
    let [a] = classes(["A"]);
    let ((), r) = capture(|| {
        let _s = crate::atomic_enter("test-atomic");
        trylock_n(a, 1, W);
        unlock(a);
    });
    clean(r)
}

/// Pseudo-locks never sleep: map acquisitions and `acquire_pseudo` inside an atomic
/// section are not reported (while still validated: an AA on them is).
fn atomic_pseudo_lock() -> Outcome {
    let [m, ctx] = classes(["map", "ctx"]);
    let ((), r) = capture(|| {
        let _s = crate::atomic_enter("test-atomic");
        m.map_acquire();
        m.map_release();
        m.map_acquire_read();
        m.map_release();
        m.map_acquire_with(Acquire::read());
        m.map_release();
        crate::acquire_pseudo(ctx, inst(ctx, 1), Acquire::write());
        release(ctx, inst(ctx, 1));
    });
    clean(r)?;
    let ((), r) = capture(|| {
        let _s = crate::atomic_enter("test-atomic");
        crate::acquire_pseudo(ctx, inst(ctx, 1), Acquire::write());
        crate::acquire_pseudo(ctx, inst(ctx, 2), Acquire::write()); // should fail: AA
        release(ctx, inst(ctx, 2));
        release(ctx, inst(ctx, 1));
    });
    one(r, Recursive, &["ctx"])
}

/// `might_sleep` reports inside a section, not outside; `in_atomic` follows the guard.
fn atomic_might_sleep() -> Outcome {
    let (states, r) = capture(|| {
        crate::might_sleep();
        let before = crate::in_atomic();
        let s = crate::atomic_enter("test-atomic");
        let inside = crate::in_atomic();
        crate::might_sleep(); // should fail
        drop(s);
        crate::might_sleep();
        (before, inside, crate::in_atomic())
    });
    if states != (false, true, false) {
        return Err(format!(
            "in_atomic before/inside/after = {states:?}, expected (false, true, false)"
        ));
    }
    one(r.clone(), SleepInAtomic, &["test-atomic"])?;
    if !r[0]
        .text
        .contains("sleeping function called from invalid context")
    {
        return Err(format!("unexpected splat title:\n{}", r[0].text));
    }
    Ok(())
}

/// Nested sections: the innermost is named; leaving it returns to the outer one;
/// leaving both ends the checks.
fn atomic_nested() -> Outcome {
    let [a] = classes(["A"]);
    let ((), r) = capture(|| {
        let outer = crate::atomic_enter("outer-section");
        {
            let _inner = crate::atomic_enter("inner-section");
            crate::might_sleep(); // reported, naming the inner section
        }
        lock(a, W); // reported, naming the outer section
        unlock(a);
        drop(outer);
        lock(a, W); // clean
        unlock(a);
    });
    if r.len() != 2 {
        return Err(format!("expected two reports, got {}", summary(&r)));
    }
    one(vec![r[0].clone()], SleepInAtomic, &["inner-section"])?;
    one(vec![r[1].clone()], SleepInAtomic, &["outer-section", "A"])
}

/// A → B on one thread, B → A on another: reported on the second, without any race.
fn abba_two_threads() -> Outcome {
    let [a, b] = classes(["A", "B"]);
    let first = std::thread::spawn(move || capture(|| lock_unlock_2(a, b, W)).1)
        .join()
        .map_err(|_| "first thread panicked".to_string())?;
    clean(first)?;
    let ((), r) = capture(|| lock_unlock_2(b, a, W));
    one(r, Circular, &["A", "B"])
}

/// A → B → C with no direct A → C edge; C then A is still a cycle (transitivity).
fn transitive_abc() -> Outcome {
    let [a, b, c] = classes(["A", "B", "C"]);
    let ((), r) = capture(|| {
        lock(a, W);
        lock(b, W);
        lock(c, W);
        unlock(c);
        unlock(b);
        unlock(a);
        lock_unlock_2(c, a, W); // should fail
    });
    one(r.clone(), Circular, &["A", "B", "C"])?;
    if !r[0].text.contains("-> #2") {
        return Err(format!("expected a two-step chain:\n{}", r[0].text));
    }
    Ok(())
}

/// A long chain and shortcuts along it: no cycle.
fn long_chain_no_cycle() -> Outcome {
    let names: Vec<String> = (0..10).map(|i| format!("C{i}")).collect();
    let cs: Vec<&'static LockClass> = names.iter().map(LockClass::leak).collect();
    let ((), r) = capture(|| {
        for c in &cs {
            lock(c, W);
        }
        for c in cs.iter().rev() {
            unlock(c);
        }
        lock_unlock_2(cs[0], cs[9], W);
        lock_unlock_2(cs[2], cs[7], W);
    });
    clean(r)
}

// ---------------------------------------------------------------------------------------
// prime
// ---------------------------------------------------------------------------------------

fn prime_then_ba() -> Outcome {
    let [a, b, c] = classes(["A", "B", "C"]);
    let ((), r) = capture(|| {
        crate::prime(&[a, b, c]);
        lock_unlock_2(b, a, W); // should fail
    });
    one(r, Circular, &["A", "B"])
}

fn prime_then_ca() -> Outcome {
    let [a, b, c] = classes(["A", "B", "C"]);
    let ((), r) = capture(|| {
        crate::prime(&[a, b, c]);
        lock_unlock_2(c, a, W); // should fail, through B
    });
    one(r, Circular, &["A", "B", "C"])
}

fn prime_order_kept() -> Outcome {
    let [a, b, c] = classes(["A", "B", "C"]);
    let ((), r) = capture(|| {
        crate::prime(&[a, b, c]);
        lock_unlock_2(a, c, W);
        lock_unlock_2(b, c, W);
        lock(a, W);
        lock(b, W);
        lock(c, W);
        unlock(c);
        unlock(b);
        unlock(a);
    });
    clean(r)
}

fn prime_contradicts() -> Outcome {
    let [a, b] = classes(["A", "B"]);
    let ((), r) = capture(|| {
        lock_unlock_2(b, a, W);
        crate::prime(&[a, b]); // should fail
    });
    one(r, Circular, &["A", "B"])
}

// ---------------------------------------------------------------------------------------
// Pseudo-locks: the fence signalling annotations
// ---------------------------------------------------------------------------------------

/// Waiting for a fence (map write) under lock A, and taking A inside a signalling section
/// (map recursive read), on one thread: reported the first time both paths run.
fn map_wait_then_signal() -> Outcome {
    let [a, fence] = classes(["A", "fence"]);
    let ((), r) = capture(|| {
        lock(a, W);
        fence.map_acquire(); // might_wait
        fence.map_release();
        unlock(a);
        fence.map_acquire_read(); // begin_signalling
        lock(a, W); // should fail
        unlock(a);
        fence.map_release(); // end_signalling
    });
    one(r, Circular, &["A", "fence"])
}

/// The same, signalling path first.
fn map_signal_then_wait() -> Outcome {
    let [a, fence] = classes(["A", "fence"]);
    let ((), r) = capture(|| {
        fence.map_acquire_read();
        lock(a, W);
        unlock(a);
        fence.map_release();
        lock(a, W);
        fence.map_acquire(); // should fail
        fence.map_release();
        unlock(a);
    });
    one(r, Circular, &["A", "fence"])
}

/// The waiter and the signaller on two threads that never overlap.
fn map_two_threads() -> Outcome {
    let [a, fence] = classes(["A", "fence"]);
    let waiter = std::thread::spawn(move || {
        capture(|| {
            lock(a, W);
            fence.map_acquire();
            fence.map_release();
            unlock(a);
        })
        .1
    })
    .join()
    .map_err(|_| "waiter thread panicked".to_string())?;
    clean(waiter)?;
    let ((), r) = capture(|| {
        fence.map_acquire_read();
        lock(a, W); // should fail
        unlock(a);
        fence.map_release();
    });
    one(r, Circular, &["A", "fence"])
}

/// Nested signalling sections (recursive read inside recursive read) are fine, also with
/// a lock between them.
fn map_nested_signalling() -> Outcome {
    let [a, fence] = classes(["A", "fence"]);
    let ((), r) = capture(|| {
        fence.map_acquire_read();
        fence.map_acquire_read();
        fence.map_release();
        fence.map_release();
        fence.map_acquire_read();
        lock(a, W);
        fence.map_acquire_read();
        fence.map_release();
        unlock(a);
        fence.map_release();
    });
    clean(r)
}

/// A wait with no lock held, and a lock taken in a signalling section, separately: fine.
fn map_disjoint_paths() -> Outcome {
    let [a, fence] = classes(["A", "fence"]);
    let ((), r) = capture(|| {
        fence.map_acquire();
        fence.map_release();
        fence.map_acquire_read();
        lock(a, W);
        unlock(a);
        fence.map_release();
        lock(a, W);
        unlock(a);
    });
    clean(r)
}

/// Waiting inside a signalling section: the map taken for write while held for read.
fn map_wait_in_signalling() -> Outcome {
    let [fence] = classes(["fence"]);
    let ((), r) = capture(|| {
        fence.map_acquire_read();
        fence.map_acquire(); // should fail
        fence.map_release();
        fence.map_release();
    });
    one(r, Recursive, &["fence"])
}

/// A try-acquired map is not checked, but what is taken under it depends on it.
fn map_try() -> Outcome {
    let [a, m] = classes(["A", "M"]);
    let ((), r) = capture(|| {
        lock(a, W);
        m.map_acquire_try();
        m.map_release();
        unlock(a);
    });
    clean(r)?;
    let ((), r) = capture(|| {
        m.map_acquire_try();
        lock(a, W);
        unlock(a);
        m.map_release();
        lock(a, W);
        m.map_acquire(); // should fail
        m.map_release();
        unlock(a);
    });
    one(r, Circular, &["A", "M"])
}

// ---------------------------------------------------------------------------------------
// The registry
// ---------------------------------------------------------------------------------------

macro_rules! per_kind {
    ($name:literal, $f:ident) => {
        [
            Case::lockdep_only(concat!("locking/", $name, "-spin"), || $f(W)),
            Case::lockdep_only(concat!("locking/", $name, "-wlock"), || $f(W)),
            Case::lockdep_only(concat!("locking/", $name, "-rlock"), || $f(RR)),
            Case::lockdep_only(concat!("locking/", $name, "-mutex"), || $f(W)),
            Case::lockdep_only(concat!("locking/", $name, "-wsem"), || $f(W)),
            Case::lockdep_only(concat!("locking/", $name, "-rsem"), || $f(R)),
        ]
    };
}

macro_rules! per_read_kind {
    ($name:literal, $f:ident) => {
        [
            Case::lockdep_only(concat!("locking/", $name, "-rlock"), || $f(RR)),
            Case::lockdep_only(concat!("locking/", $name, "-rsem"), || $f(R)),
        ]
    };
}

macro_rules! permutations {
    ($name:literal, $f:ident) => {
        [
            Case::lockdep_only(concat!("locking/", $name, "/123"), || $f([1, 2, 3])),
            Case::lockdep_only(concat!("locking/", $name, "/132"), || $f([1, 3, 2])),
            Case::lockdep_only(concat!("locking/", $name, "/213"), || $f([2, 1, 3])),
            Case::lockdep_only(concat!("locking/", $name, "/231"), || $f([2, 3, 1])),
            Case::lockdep_only(concat!("locking/", $name, "/312"), || $f([3, 1, 2])),
            Case::lockdep_only(concat!("locking/", $name, "/321"), || $f([3, 2, 1])),
        ]
    };
}

type Run = fn() -> Outcome;

/// Every lockdep scenario, in a fixed order. Each is [`Case::lockdep_only`], named
/// `locking/…` (names are unique), and uses fresh classes, so they may run concurrently
/// and in any order.
pub fn cases() -> Vec<Case> {
    let mut v = Vec::from(per_kind!("AA", aa));
    v.extend(per_kind!("ABBA", abba));
    v.extend(per_kind!("ABBCCA", abbcca));
    v.extend(per_kind!("ABCABC", abcabc));
    v.extend(per_kind!("ABBCCDDA", abbccdda));
    v.extend(per_kind!("ABCDBDDA", abcdbdda));
    v.extend(per_kind!("ABCDBCDA", abcdbcda));
    v.extend(per_kind!("double-unlock", double_unlock));
    v.extend(per_read_kind!("read-AA1-same-instance", read_aa1));
    v.extend(per_read_kind!("read-AA1B-two-instances", read_aa1b));
    v.extend(per_read_kind!("read-AA2-read-then-write", read_aa2));
    v.extend(per_read_kind!("read-AA3-write-then-read", read_aa3));
    v.extend(per_read_kind!("read-ABBA1-R-L-L-W", read_abba1));
    v.extend(per_read_kind!("read-ABBA2-R-L-L-R", read_abba2));
    v.extend(per_read_kind!("read-ABBA3-W-L-L-W", read_abba3));
    v.push(Case::lockdep_only(
        "locking/read-chaincache-ABBA1",
        rlock_chaincache_abba1,
    ));
    v.extend(permutations!("rlock-W1R2-W2R3-W3R1", w1r2_w2r3_w3r1));
    v.extend(permutations!("rlock-W1W2-R2R3-W3R1", w1w2_r2r3_w3r1));
    v.extend(permutations!("rlock-W1W2-R2R3-R3W1", w1w2_r2r3_r3w1));
    v.extend(permutations!("rlock-W1R2-R2R3-W3W1", w1r2_r2r3_w3w1));
    let more: [(&'static str, Run); 47] = [
        ("locking/edge-types-accumulate", edge_types_accumulate),
        ("locking/edge-types-SR-only", edge_types_sr_only),
        ("locking/strong-path-revisit", strong_path_revisit),
        ("locking/ring-6-mutex", || ring(6, W)),
        ("locking/ring-10-mutex", || ring(10, W)),
        ("locking/ring-6-rsem", || ring(6, R)),
        ("locking/ring-10-rlock", || ring(10, RR)),
        ("locking/transitive-ABC", transitive_abc),
        ("locking/long-chain-no-cycle", long_chain_no_cycle),
        ("locking/ABBA-two-threads", abba_two_threads),
        ("locking/nest-lock-held", nest_lock_held),
        ("locking/nest-lock-not-held", nest_lock_not_held),
        ("locking/nest-many-same-class", nest_many),
        ("locking/nest-after-plain-lock", nest_after_plain),
        ("locking/plain-lock-after-nest", nest_then_plain),
        ("locking/trylock-try-try", try_try),
        ("locking/trylock-try-block", try_block),
        ("locking/trylock-block-try", block_try),
        ("locking/trylock-not-checked", trylock_not_checked),
        ("locking/trylock-later-locks-depend", trylock_then_depends),
        (
            "locking/trylock-walk-to-blocking",
            trylock_walks_to_blocking,
        ),
        ("locking/ww-spinlock-block", spin_block),
        ("locking/ww-spinlock-try", spin_try),
        ("locking/ww-spinlock-context", spin_context),
        ("locking/subclass-nesting", subclass_nesting),
        ("locking/subclass-AA", subclass_aa),
        ("locking/subclass-ABBA", subclass_abba),
        ("locking/subclass-out-of-range", subclass_out_of_range),
        ("locking/unlock-not-held", unlock_not_held),
        ("locking/unlock-wrong-instance", unlock_wrong_instance),
        ("locking/unlock-out-of-order", unlock_out_of_order),
        (
            "locking/unlock-middle-revalidates",
            unlock_middle_revalidates,
        ),
        (
            "locking/nest-run-split-and-joined",
            nest_run_split_and_joined,
        ),
        ("locking/held-at-exit", held_at_exit),
        ("locking/exit-clean", exit_clean),
        ("locking/assert-held", assertions),
        ("locking/held-queries", queries),
        ("locking/external-report", external_report),
        ("locking/prime-then-BA", prime_then_ba),
        ("locking/prime-then-CA", prime_then_ca),
        ("locking/prime-order-kept", prime_order_kept),
        ("locking/prime-contradicts", prime_contradicts),
        ("locking/map-wait-then-signal", map_wait_then_signal),
        ("locking/map-signal-then-wait", map_signal_then_wait),
        ("locking/map-two-threads", map_two_threads),
        ("locking/map-nested-signalling", map_nested_signalling),
        ("locking/map-disjoint-paths", map_disjoint_paths),
    ];
    v.extend(
        more.into_iter()
            .map(|(name, run)| Case::lockdep_only(name, run)),
    );
    v.push(Case::lockdep_only(
        "locking/map-wait-in-signalling",
        map_wait_in_signalling,
    ));
    v.push(Case::lockdep_only("locking/map-try", map_try));
    // Sleeping lock kinds only: the kernel's spinlocks do not sleep (lockdep here has no
    // spinning kind; every blocking acquisition counts as a sleep).
    let atomic: [(&'static str, Run); 7] = [
        ("locking/atomic-blocking-lock-mutex", || {
            atomic_blocking_lock(W)
        }),
        ("locking/atomic-blocking-lock-wsem", || {
            atomic_blocking_lock(W)
        }),
        ("locking/atomic-blocking-lock-rsem", || {
            atomic_blocking_lock(R)
        }),
        ("locking/atomic-trylock", atomic_trylock),
        ("locking/atomic-might-sleep", atomic_might_sleep),
        ("locking/atomic-nested", atomic_nested),
        ("locking/atomic-pseudo-lock", atomic_pseudo_lock),
    ];
    v.extend(
        atomic
            .into_iter()
            .map(|(name, run)| Case::lockdep_only(name, run)),
    );
    v
}
