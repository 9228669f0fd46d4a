//! Atomic sections (`atomic_enter`) and `might_sleep`.

use super::vocab::*;
use crate::{capture, release, Acquire, Mode};

/// A blocking acquisition inside an atomic section is a sleep there: reported, naming the
/// section and the class; the same acquisition outside is clean.
pub(super) fn atomic_blocking_lock(mode: Mode) -> Outcome {
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
pub(super) fn atomic_trylock() -> Outcome {
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
pub(super) fn atomic_pseudo_lock() -> Outcome {
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
pub(super) fn atomic_might_sleep() -> Outcome {
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
pub(super) fn atomic_nested() -> Outcome {
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
