//! Subclasses: nesting two locks of one class in a fixed order.

use super::vocab::*;
use crate::{capture, Acquire};

/// X/0 then X/1: different subclasses are different graph nodes, not recursion.
pub(super) fn subclass_nesting() -> Outcome {
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
pub(super) fn subclass_aa() -> Outcome {
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
pub(super) fn subclass_abba() -> Outcome {
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
pub(super) fn subclass_out_of_range() -> Outcome {
    let [x] = classes(["X"]);
    let ((), r) = capture(|| {
        lock_how(x, 1, Acquire::write().subclass(crate::MAX_SUBCLASSES));
        unlock_n(x, 1);
    });
    one(r, BadAnnotation, &["X"])
}
