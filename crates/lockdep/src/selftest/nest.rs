//! Nest locks (the ww acquire context) and trylocks.

use super::vocab::*;
use crate::{capture, Acquire};

/// X; Y1 under nest X; A; Y2 under nest X: not a deadlock, X serializes the Ys.
pub(super) fn nest_lock_held() -> Outcome {
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
pub(super) fn nest_lock_not_held() -> Outcome {
    let [a, o] = classes(["A", "O"]);
    let ((), r) = capture(|| {
        lock_how(a, 1, Acquire::write().nest(inst(o, 1)));
        unlock(a);
    });
    one(r, BadAnnotation, &["A"])
}

/// Eight objects of one class under one context, released in a scrambled order.
pub(super) fn nest_many() -> Outcome {
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
pub(super) fn nest_after_plain() -> Outcome {
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
pub(super) fn nest_then_plain() -> Outcome {
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
pub(super) fn try_try() -> Outcome {
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
pub(super) fn try_block() -> Outcome {
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
pub(super) fn block_try() -> Outcome {
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
pub(super) fn trylock_not_checked() -> Outcome {
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
pub(super) fn trylock_then_depends() -> Outcome {
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
pub(super) fn trylock_walks_to_blocking() -> Outcome {
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
pub(super) fn spin_block() -> Outcome {
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
pub(super) fn spin_try() -> Outcome {
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
pub(super) fn spin_context() -> Outcome {
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
