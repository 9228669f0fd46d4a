//! Read-lock special cases: recursive and non-recursive readers, the chain cache telling a
//! read from a write, the strong-cycle rule over mixed edge types.

use super::vocab::*;
use crate::{capture, Mode};

/// RL(X1); RL(X1): the same instance read twice.
pub(super) fn read_aa1(mode: Mode) -> Outcome {
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
pub(super) fn read_aa1b(mode: Mode) -> Outcome {
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
pub(super) fn read_aa2(mode: Mode) -> Outcome {
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
pub(super) fn read_aa3(mode: Mode) -> Outcome {
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
pub(super) fn read_abba1(mode: Mode) -> Outcome {
    let [x, y] = classes(["X", "Y"]);
    let ((), r) = capture(|| {
        pair(x, mode, y, W);
        pair(y, W, x, W); // should fail
    });
    one(r, Circular, &["X", "Y"])
}

/// read(X) → Y; Y → read(X): fine for recursive readers, fails for rwsem readers.
pub(super) fn read_abba2(mode: Mode) -> Outcome {
    let [x, y] = classes(["X", "Y"]);
    let ((), r) = capture(|| {
        pair(x, mode, y, W);
        pair(y, W, x, mode);
    });
    expect(mode != RR, r, Circular, &["X", "Y"])
}

/// write(X) → Y; Y → write(X): fails.
pub(super) fn read_abba3(_mode: Mode) -> Outcome {
    let [x, y] = classes(["X", "Y"]);
    let ((), r) = capture(|| {
        pair(x, W, y, W);
        pair(y, W, x, W); // should fail
    });
    one(r, Circular, &["X", "Y"])
}

/// The chain cache must tell a read from a write: Y → read(X) is fine and cached, then
/// Y → write(X) must still be reported.
pub(super) fn rlock_chaincache_abba1() -> Outcome {
    let [x, y] = classes(["X", "Y"]);
    let ((), r) = capture(|| {
        pair(x, RR, y, W);
        pair(y, W, x, RR);
        pair(y, W, x, W); // should fail
    });
    one(r, Circular, &["X", "Y"])
}

/// Run three events in the order given (the kernel's GENERATE_PERMUTATIONS_3_EVENTS).
pub(super) fn permute(order: [u8; 3], events: [&dyn Fn(); 3]) {
    for e in order {
        events[usize::from(e - 1)]();
    }
}

/// W1R2 / W2R3 / W3R1: a deadlock even though the reads are recursive.
pub(super) fn w1r2_w2r3_w3r1(order: [u8; 3]) -> Outcome {
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
pub(super) fn w1w2_r2r3_w3r1(order: [u8; 3]) -> Outcome {
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
pub(super) fn w1w2_r2r3_r3w1(order: [u8; 3]) -> Outcome {
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
pub(super) fn w1r2_r2r3_w3w1(order: [u8; 3]) -> Outcome {
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
pub(super) fn edge_types_accumulate() -> Outcome {
    let [x, y] = classes(["X", "Y"]);
    let ((), r) = capture(|| {
        pair(x, RR, y, RR);
        pair(x, W, y, W);
        pair(y, RR, x, W); // should fail
    });
    one(r, Circular, &["X", "Y"])
}

/// Only the SR type on X → Y: Y(read) → X(write) is not a deadlock.
pub(super) fn edge_types_sr_only() -> Outcome {
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
pub(super) fn strong_path_revisit() -> Outcome {
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
