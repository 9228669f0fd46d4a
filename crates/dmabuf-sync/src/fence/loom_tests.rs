//! Loom models of the fence state machine. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p dmabuf --lib --release fence::loom_tests`.
//!
//! Loom runs model threads on one OS thread, so lockdep is skipped (see `sync.rs`) and
//! waits spin instead of sleeping; the models cover what does not sleep: signal against
//! add/remove callback, and the array's pending counter.

use super::{Context, Fence, FenceArray};
use crate::testing::mock;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

#[test]
fn signal_vs_add_callback() {
    loom::model(|| {
        let f = mock();
        let hits = Arc::new(AtomicUsize::new(0));
        let g = f.clone();
        let t = thread::spawn(move || g.signal().unwrap());
        let h = hits.clone();
        let r = f.add_callback(move |_: &Fence| {
            h.fetch_add(1, Ordering::SeqCst);
        });
        t.join().unwrap();
        // Added: the signaller ran it exactly once. Refused: never run.
        let want = usize::from(r.is_ok());
        assert_eq!(hits.load(Ordering::SeqCst), want);
        assert!(f.is_complete());
    });
}

#[test]
fn signal_vs_remove_callback() {
    loom::model(|| {
        let f = mock();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let id = f
            .add_callback(move |_: &Fence| {
                h.fetch_add(1, Ordering::SeqCst);
            })
            .ok()
            .unwrap();
        let g = f.clone();
        let t = thread::spawn(move || g.signal().unwrap());
        let removed = f.remove_callback(id);
        // Removed → never runs; not removed → it has already finished running.
        if !removed {
            assert_eq!(hits.load(Ordering::SeqCst), 1);
        }
        t.join().unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), usize::from(!removed));
    });
}

#[test]
fn double_signal_exactly_one_wins() {
    loom::model(|| {
        let f = mock();
        let g = f.clone();
        let t = thread::spawn(move || g.signal().is_ok());
        let a = f.signal().is_ok();
        let b = t.join().unwrap();
        assert!(a ^ b);
    });
}

#[test]
fn array_counter_completes_once() {
    loom::model(|| {
        let (m1, m2) = (mock(), mock());
        let a = FenceArray::create(vec![m1.clone(), m2.clone()], Context::new(), 1, false).unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        a.add_callback(move |_: &Fence| {
            h.fetch_add(1, Ordering::SeqCst);
        })
        .ok()
        .unwrap();
        let t = thread::spawn(move || m1.signal().unwrap());
        m2.set_error(-5).unwrap();
        m2.signal().unwrap();
        t.join().unwrap();
        assert!(a.test_signaled_flag());
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(a.error(), -5);
    });
}
