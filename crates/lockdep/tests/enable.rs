//! The run-time switch. One test function: the switch is process-wide.

use lockdep::{acquire, capture, release, Acquire, LockClass, ReportKind};

#[test]
fn set_enabled_false_clears_stacks_and_stops_reports() {
    if !lockdep::enabled() {
        return;
    }
    let (a, b) = (LockClass::leak("A"), LockClass::leak("B"));
    let ((), r) = capture(|| {
        acquire(a, 1, Acquire::write());
        assert_eq!(lockdep::held_count(), 1);

        // Another thread holds B across the switch.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (tx2, rx2) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            capture(|| {
                acquire(b, 1, Acquire::write());
                tx.send(()).unwrap();
                rx2.recv().unwrap();
                release(b, 1); // a lock taken before the switch: not a bad unlock
                assert_eq!(lockdep::held_count(), 0);
            })
            .1
        });
        rx.recv().unwrap();

        lockdep::set_enabled(false);
        assert!(!lockdep::enabled());
        assert_eq!(lockdep::held_count(), 0);
        assert!(!lockdep::is_held(a));
        // Nothing is checked while off.
        acquire(a, 2, Acquire::write());
        release(b, 7);
        lockdep::assert_held(b);

        lockdep::set_enabled(true);
        assert!(lockdep::enabled());
        assert_eq!(lockdep::held_count(), 0, "the stack was cleared");
        release(a, 1); // taken before the switch: forgotten, not a bad unlock
        tx2.send(()).unwrap();
        assert!(other.join().unwrap().is_empty());

        // Checking works again.
        release(a, 1);
    });
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].kind, ReportKind::BadUnlock);
}
