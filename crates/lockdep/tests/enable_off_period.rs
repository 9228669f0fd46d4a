//! Locks taken while checking is switched off and released after it is back on. One
//! test function: the switch is process-wide.

use lockdep::{acquire, capture, release, Acquire, LockClass, ReportKind};

#[test]
fn locks_taken_while_off_are_not_bad_unlocks_after() {
    if !lockdep::enabled() {
        return;
    }
    let [a, b, ctx, obj] = ["offA", "offB", "offCtx", "offObj"].map(LockClass::leak);
    let nest = Acquire::write().nest(ctx.map_instance());
    let ((), r) = capture(|| {
        acquire(b, 1, Acquire::write()); // held across the switch: forgotten

        lockdep::set_enabled(false);
        acquire(a, 1, Acquire::write()); // never seen
        ctx.map_acquire(); // a ww context started while off
        lockdep::set_enabled(true);

        // Locks under the context lockdep never saw: not "nest lock not held".
        acquire(obj, 1, nest);
        acquire(obj, 2, nest.trylock());
        assert_eq!(lockdep::held_count(), 0, "kept aside, not validated");
        release(obj, 2);
        release(obj, 1);
        ctx.map_release();
        release(a, 1);
        release(b, 1);
        // Checking works as before for locks seen while on.
        acquire(a, 2, Acquire::write());
        assert_eq!(lockdep::held_count(), 1);
        release(a, 2);
    });
    assert!(
        r.is_empty(),
        "{:?}",
        r.iter().map(|r| r.kind).collect::<Vec<_>>()
    );

    // Each unmatched release is excused once: a double unlock is still reported, and so
    // is a lock under a context that is really not held any more.
    let ((), r) = capture(|| {
        release(a, 1);
        release(obj, 1);
        acquire(obj, 3, nest);
        release(obj, 3);
    });
    let kinds: Vec<_> = r.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            ReportKind::BadUnlock,
            ReportKind::BadUnlock,
            ReportKind::BadAnnotation
        ]
    );

    // A thread that did not use lockdep before the switch stays strict.
    let r = std::thread::spawn(move || {
        capture(|| {
            release(a, 7);
        })
        .1
    })
    .join()
    .unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].kind, ReportKind::BadUnlock);

    // The thread that turns checking off lives through the off period, even if it never
    // used lockdep before (no capture here: a report panics the thread).
    assert_eq!(lockdep::on_report(), lockdep::OnReport::Panic);
    let quiet = std::thread::spawn(move || {
        lockdep::set_enabled(false);
        acquire(b, 8, Acquire::write());
        lockdep::set_enabled(true);
        release(b, 8);
    })
    .join();
    assert!(quiet.is_ok(), "the release was reported");
}
