//! Pseudo-locks (`LockClass::map_*`): the fence signalling annotations.

use super::vocab::*;
use crate::capture;

/// Waiting for a fence (map write) under lock A, and taking A inside a signalling section
/// (map recursive read), on one thread: reported the first time both paths run.
pub(super) fn map_wait_then_signal() -> Outcome {
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
pub(super) fn map_signal_then_wait() -> Outcome {
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
pub(super) fn map_two_threads() -> Outcome {
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
pub(super) fn map_nested_signalling() -> Outcome {
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
pub(super) fn map_disjoint_paths() -> Outcome {
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
pub(super) fn map_wait_in_signalling() -> Outcome {
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
pub(super) fn map_try() -> Outcome {
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
