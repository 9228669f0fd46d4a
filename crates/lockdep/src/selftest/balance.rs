//! Unlock balance, thread exit, assertions, queries and external reports.

use super::vocab::*;
use crate::{capture, Acquire, Capture};

/// Release of a lock never taken.
pub(super) fn unlock_not_held() -> Outcome {
    let [a] = classes(["A"]);
    let ((), r) = capture(|| unlock(a));
    one(r, BadUnlock, &["A"])
}

/// Lock X1, release X2.
pub(super) fn unlock_wrong_instance() -> Outcome {
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
pub(super) fn unlock_out_of_order() -> Outcome {
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
pub(super) fn unlock_middle_revalidates() -> Outcome {
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
pub(super) fn nest_run_split_and_joined() -> Outcome {
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
pub(super) fn held_at_exit() -> Outcome {
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
pub(super) fn exit_clean() -> Outcome {
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
pub(super) fn assertions() -> Outcome {
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
pub(super) fn queries() -> Outcome {
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
pub(super) fn external_report() -> Outcome {
    let [a] = classes(["A"]);
    let ((), r) = capture(|| crate::report(Misuse, &[a], "context used after fini"));
    one(r.clone(), Misuse, &["A"])?;
    if !r[0].text.contains("context used after fini") {
        return Err(format!("detail missing:\n{}", r[0].text));
    }
    Ok(())
}
