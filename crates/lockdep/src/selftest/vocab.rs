//! The vocabulary of the scenarios: fresh classes, lock and unlock steps, and the
//! checks of an outcome (no report, exactly one report of a kind naming given classes).

use crate::{acquire, release, Acquire, LockClass, Mode, Report, ReportKind};

/// What a scenario returns: `Err` says what went wrong.
pub(super) type Outcome = Result<(), String>;

pub(super) use Mode::{Read as R, RecursiveRead as RR, Write as W};
pub(super) use ReportKind::{
    AssertHeld, BadAnnotation, BadUnlock, CircularDependency as Circular, HeldAtExit, Misuse,
    RecursiveLocking as Recursive, SleepInAtomic,
};

/// Fresh classes named as given.
pub(super) fn classes<const N: usize>(names: [&str; N]) -> [&'static LockClass; N] {
    names.map(LockClass::leak)
}

/// Instance `n` of class `c` (instances 1, 2… of one class are distinct locks).
pub(super) fn inst(c: &'static LockClass, n: usize) -> usize {
    c.map_instance() + n
}

pub(super) fn how(mode: Mode) -> Acquire {
    Acquire {
        mode,
        ..Acquire::write()
    }
}

/// Lock instance 1 of `c`.
#[track_caller]
pub(super) fn lock(c: &'static LockClass, mode: Mode) {
    acquire(c, inst(c, 1), how(mode));
}

/// Lock instance `n` of `c`.
#[track_caller]
pub(super) fn lock_n(c: &'static LockClass, n: usize, mode: Mode) {
    acquire(c, inst(c, n), how(mode));
}

/// Lock instance `n` of `c` with full parameters.
#[track_caller]
pub(super) fn lock_how(c: &'static LockClass, n: usize, how: Acquire) {
    acquire(c, inst(c, n), how);
}

/// Trylock instance `n` of `c` (succeeding).
#[track_caller]
pub(super) fn trylock_n(c: &'static LockClass, n: usize, mode: Mode) {
    acquire(c, inst(c, n), how(mode).trylock());
}

/// Unlock instance 1 of `c`.
#[track_caller]
pub(super) fn unlock(c: &'static LockClass) {
    release(c, inst(c, 1));
}

/// Unlock instance `n` of `c`.
#[track_caller]
pub(super) fn unlock_n(c: &'static LockClass, n: usize) {
    release(c, inst(c, n));
}

/// Lock `a`, lock `b`, unlock both: teaches `a → b`.
#[track_caller]
pub(super) fn lock_unlock_2(a: &'static LockClass, b: &'static LockClass, mode: Mode) {
    lock(a, mode);
    lock(b, mode);
    unlock(b);
    unlock(a);
}

/// Lock `a` in `ma`, then `b` in `mb`, unlock both.
#[track_caller]
pub(super) fn pair(a: &'static LockClass, ma: Mode, b: &'static LockClass, mb: Mode) {
    lock(a, ma);
    lock(b, mb);
    unlock(b);
    unlock(a);
}

pub(super) fn summary(reports: &[Report]) -> String {
    let v: Vec<String> = reports
        .iter()
        .map(|r| format!("{:?}{:?}", r.kind, r.classes))
        .collect();
    format!("[{}]", v.join(", "))
}

/// No report at all.
pub(super) fn clean(reports: Vec<Report>) -> Outcome {
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

/// The directory of the scenario files (this file's), as `file!()` spells it: a splat of
/// a scenario names a location in one of them, not one inside lockdep or the helpers'
/// callers elsewhere.
fn scenario_dir() -> &'static str {
    file!().rsplit_once(['/', '\\']).map_or("", |(dir, _)| dir)
}

/// Exactly one report, of `kind`, naming every class in `names`, whose splat names a
/// source location in a scenario file.
pub(super) fn one(reports: Vec<Report>, kind: ReportKind, names: &[&str]) -> Outcome {
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
    let here = scenario_dir();
    if !r.text.contains(here) {
        return Err(format!(
            "the splat names no source location in {here}:\n{}",
            r.text
        ));
    }
    Ok(())
}

/// `one(…)` when `fails`, else `clean(…)`.
pub(super) fn expect(
    fails: bool,
    reports: Vec<Report>,
    kind: ReportKind,
    names: &[&str],
) -> Outcome {
    if fails {
        one(reports, kind, names)
    } else {
        clean(reports)
    }
}

/// In the kernel's 6R tables every kind fails except `rlock` (recursive readers).
pub(super) fn fails_unless_recursive(mode: Mode) -> bool {
    mode != RR
}
