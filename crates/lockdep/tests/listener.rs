//! The report listener: told of every report, captured or not (its own binary: the
//! listener is process-wide).

use lockdep::{acquire, capture, release, Acquire, LockClass, ReportKind};
use std::sync::atomic::{AtomicUsize, Ordering};

static SEEN: AtomicUsize = AtomicUsize::new(0);

fn count(r: &lockdep::Report) {
    assert_eq!(r.kind, ReportKind::RecursiveLocking);
    SEEN.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn the_listener_sees_every_report_until_removed() {
    if !lockdep::enabled() {
        return;
    }
    let a = LockClass::leak("listened");
    let recurse = || {
        acquire(a, 1, Acquire::write());
        acquire(a, 2, Acquire::write());
        release(a, 2);
        release(a, 1);
    };
    lockdep::set_report_listener(Some(count));
    let (_, reports) = capture(recurse);
    assert_eq!(reports.len(), 1, "the capture still gets it");
    assert_eq!(SEEN.load(Ordering::SeqCst), 1);
    lockdep::set_report_listener(None);
    let (_, reports) = capture(|| {
        let b = LockClass::leak("listened-2");
        acquire(b, 1, Acquire::write());
        acquire(b, 2, Acquire::write());
        release(b, 2);
        release(b, 1);
    });
    assert_eq!(reports.len(), 1);
    assert_eq!(SEEN.load(Ordering::SeqCst), 1, "removed: not told");
}
