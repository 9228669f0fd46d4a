//! The per-kind scenarios of the kernel's self-test (`DO_TESTCASE_6R` / `DO_TESTCASE_6`):
//! each runs once per lock kind, mapped to a mode.

use super::vocab::*;
use crate::{capture, LockClass, Mode};

/// AA: two locks of one class, nested.
pub(super) fn aa(mode: Mode) -> Outcome {
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
pub(super) fn abba(mode: Mode) -> Outcome {
    let [a, b] = classes(["A", "B"]);
    let ((), r) = capture(|| {
        lock_unlock_2(a, b, mode);
        lock_unlock_2(b, a, mode); // should fail
    });
    expect(fails_unless_recursive(mode), r, Circular, &["A", "B"])
}

/// AB, BC, CA.
pub(super) fn abbcca(mode: Mode) -> Outcome {
    let [a, b, c] = classes(["A", "B", "C"]);
    let ((), r) = capture(|| {
        lock_unlock_2(a, b, mode);
        lock_unlock_2(b, c, mode);
        lock_unlock_2(c, a, mode); // should fail
    });
    expect(fails_unless_recursive(mode), r, Circular, &["A", "B", "C"])
}

/// AB, CA, BC.
pub(super) fn abcabc(mode: Mode) -> Outcome {
    let [a, b, c] = classes(["A", "B", "C"]);
    let ((), r) = capture(|| {
        lock_unlock_2(a, b, mode);
        lock_unlock_2(c, a, mode);
        lock_unlock_2(b, c, mode); // should fail
    });
    expect(fails_unless_recursive(mode), r, Circular, &["A", "B", "C"])
}

/// AB, BC, CD, DA.
pub(super) fn abbccdda(mode: Mode) -> Outcome {
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
pub(super) fn abcdbdda(mode: Mode) -> Outcome {
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
pub(super) fn abcdbcda(mode: Mode) -> Outcome {
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
pub(super) fn double_unlock(mode: Mode) -> Outcome {
    let [a] = classes(["A"]);
    let ((), r) = capture(|| {
        lock(a, mode);
        unlock(a);
        unlock(a); // should fail
    });
    one(r, BadUnlock, &["A"])
}

/// A ring of `n` classes, each taken inside the previous one; the last closes the ring.
pub(super) fn ring(n: usize, mode: Mode) -> Outcome {
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
