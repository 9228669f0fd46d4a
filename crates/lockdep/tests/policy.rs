//! Report policies. One test function: the policy is process-wide, and this binary
//! runs alone.

use lockdep::{acquire, release, Acquire, LockClass, OnReport, ReportKind};

fn aa(x: &'static LockClass) {
    acquire(x, 1, Acquire::write());
    acquire(x, 2, Acquire::write());
    release(x, 2);
    release(x, 1);
}

#[test]
fn policies() {
    if !lockdep::enabled() {
        return;
    }
    // Collect: kept for take_reports, oldest first; nothing printed.
    lockdep::set_on_report(OnReport::Collect);
    assert_eq!(lockdep::on_report(), OnReport::Collect);
    let printed = lockdep::stats().printed;
    let (x, y) = (LockClass::leak("X"), LockClass::leak("Y"));
    aa(x);
    release(y, 9);
    let got = lockdep::take_reports();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].kind, ReportKind::RecursiveLocking);
    assert_eq!(got[1].kind, ReportKind::BadUnlock);
    assert!(lockdep::take_reports().is_empty(), "the store is emptied");
    assert_eq!(lockdep::stats().printed, printed);

    // Reports from other threads are collected too.
    std::thread::spawn(move || aa(x)).join().unwrap();
    assert_eq!(lockdep::take_reports().len(), 1);

    // PrintOnce: each (kind, classes) printed once, and no panic.
    lockdep::set_on_report(OnReport::PrintOnce);
    let printed = lockdep::stats().printed;
    for _ in 0..5 {
        aa(x);
    }
    assert_eq!(lockdep::stats().printed, printed + 1);
    aa(y); // another class: printed
    release(y, 9); // another kind: printed
    release(y, 9);
    assert_eq!(lockdep::stats().printed, printed + 3);
    assert!(lockdep::take_reports().is_empty());

    // Panic (default): a thread that exits holding a lock is reported from its TLS
    // destructor, printed, and the process does not abort.
    lockdep::set_on_report(OnReport::Panic);
    let printed = lockdep::stats().printed;
    let z = LockClass::leak("Z");
    std::thread::spawn(move || acquire(z, 1, Acquire::write()))
        .join()
        .expect("exiting with a lock held must not panic in the TLS destructor");
    assert_eq!(lockdep::stats().printed, printed + 1);

    // Panic: a report on a thread panics that thread.
    let res = std::thread::spawn(move || release(z, 5)).join();
    assert!(res.is_err());

    // Lock implementations report through the same policy.
    lockdep::set_on_report(OnReport::Collect);
    lockdep::report(ReportKind::Misuse, &[x, y], "ww: lock after acquire_done");
    let got = lockdep::take_reports();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].classes, vec!["X", "Y"]);
    assert!(got[0].text.contains("lock after acquire_done"));
}
