//! Cycles across threads and through longer chains; priming an order (`prime`).

use super::vocab::*;
use crate::{capture, LockClass};

/// A → B on one thread, B → A on another: reported on the second, without any race.
pub(super) fn abba_two_threads() -> Outcome {
    let [a, b] = classes(["A", "B"]);
    let first = std::thread::spawn(move || capture(|| lock_unlock_2(a, b, W)).1)
        .join()
        .map_err(|_| "first thread panicked".to_string())?;
    clean(first)?;
    let ((), r) = capture(|| lock_unlock_2(b, a, W));
    one(r, Circular, &["A", "B"])
}

/// A → B → C with no direct A → C edge; C then A is still a cycle (transitivity).
pub(super) fn transitive_abc() -> Outcome {
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
pub(super) fn long_chain_no_cycle() -> Outcome {
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

pub(super) fn prime_then_ba() -> Outcome {
    let [a, b, c] = classes(["A", "B", "C"]);
    let ((), r) = capture(|| {
        crate::prime(&[a, b, c]);
        lock_unlock_2(b, a, W); // should fail
    });
    one(r, Circular, &["A", "B"])
}

pub(super) fn prime_then_ca() -> Outcome {
    let [a, b, c] = classes(["A", "B", "C"]);
    let ((), r) = capture(|| {
        crate::prime(&[a, b, c]);
        lock_unlock_2(c, a, W); // should fail, through B
    });
    one(r, Circular, &["A", "B", "C"])
}

pub(super) fn prime_order_kept() -> Outcome {
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

pub(super) fn prime_contradicts() -> Outcome {
    let [a, b] = classes(["A", "B"]);
    let ((), r) = capture(|| {
        lock_unlock_2(b, a, W);
        crate::prime(&[a, b]); // should fail
    });
    one(r, Circular, &["A", "B"])
}
