//! Lockdep off (`lockdep::set_enabled(false)`, or the `lockdep-off` feature): a thread
//! that holds a reservation lock and asks for it again — directly, through an acquire
//! context, or through a call that locks the buffer itself — gets `EINVAL` back, never
//! a hang. Before the ww mutex recorded its holder's thread, only lockdep refused these,
//! and with lockdep off each of them waited forever for its own thread.
//!
//! One test function: the switch is process-wide. Each step runs under a watchdog, so
//! that a regression fails (naming the step) instead of hanging the test run.

#[path = "common/mod.rs"]
mod cases;
#[path = "../../dmabuf/tests/common/mod.rs"]
mod common;

use dmabuf::buf::simple::SimpleExporter;
use dmabuf::buf::{bufinfo::bufinfo, sync_flags, Direction};
use dmabuf::device::{Device, Engine, Job, Operand};
use dmabuf::fence::Context;
use dmabuf::resv::{exec, Resv, RESERVATION_WW_CLASS};
use dmabuf::testing::named;
use dmabuf::ww::AcquireCtx;
use dmabuf::Error;
use std::time::Duration;

/// Run `f` on a thread of its own; fail if it does not finish within 20 s (a hang).
fn watchdog(what: &'static str, f: impl FnOnce() + Send + 'static) {
    common::watchdog(what, Duration::from_secs(20), f);
}

fn einval<X: std::fmt::Debug>(what: &str, r: Result<X, Error>) {
    match r {
        Err(e) if e.errno() == 22 => {}
        other => panic!("{what}: expected EINVAL, got {other:?}"),
    }
}

#[test]
fn relocking_a_held_reservation_is_refused_with_lockdep_off() {
    lockdep::set_enabled(false);
    assert!(!lockdep::enabled());

    watchdog("ww and resv relocks", || {
        let r = Resv::new();
        let g = r.lock_no_ctx().unwrap();
        einval("lock_no_ctx of a held resv", r.lock_no_ctx().map(drop));
        let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
        einval("context lock of a held resv", r.lock(&ctx).map(drop));
        let other = Resv::new();
        einval(
            "exec::lock_all over a held resv",
            exec::lock_all(&ctx, &[&other, &r], None).map(drop),
        );
        assert!(!other.is_locked(), "lock_all kept a lock after its error");
        assert_eq!(ctx.acquired(), 0);
        drop(g);
        // Nothing changed: the lock works as before.
        let g = r.lock(&ctx).unwrap();
        einval(
            "plain lock of a resv held by this thread's context",
            r.lock_no_ctx().map(drop),
        );
        assert!(matches!(r.lock(&ctx), Err(Error::Already)));
        drop(g);
        ctx.fini().unwrap();
        assert!(!r.is_locked());
    });

    watchdog("the ww self-deadlock scenarios", || {
        let tally = cases::run_all("ww/api/self-deadlock");
        assert_eq!((tally.passed, tally.skipped), (2, 0), "{tally:?}");
    });

    watchdog("device/submit-bad-input", || {
        cases::run_one("device/submit-bad-input");
    });

    watchdog("calls that lock the buffer themselves", || {
        let dev = Device::new("relock", u32::MAX as u64, true, false).unwrap();
        let ex = SimpleExporter::new(1).unwrap();
        let b = ex.export().unwrap();
        let a = b.attach(&dev).unwrap();
        let m = a.map_unlocked(Direction::Bidirectional).unwrap();
        let eng = Engine::new(&dev, "relock0").unwrap();
        let pending = named("relock-test", "relock", Context::new(), 1);
        {
            let mut g = b.resv().lock_no_ctx().unwrap();
            einval("attach", b.attach(&dev).map(drop));
            einval(
                "map_attachment_unlocked",
                a.map_unlocked(Direction::ToDevice).map(drop),
            );
            einval("vmap_unlocked", b.vmap_unlocked().map(drop));
            einval(
                "import_sync_fence",
                b.import_sync_fence(sync_flags::WRITE, &pending),
            );
            einval(
                "engine submit",
                eng.submit(Job::fill(Operand::new(&m), 0)).map(drop),
            );
            assert!(
                bufinfo().contains("this thread holds the reservation lock"),
                "bufinfo names the buffer it could not lock"
            );
            // The buffer is as it was: one attachment, one mapping, no fence.
            assert_eq!(b.locked(&mut g).unwrap().attachments().len(), 1);
            assert_eq!(b.resv().num_fences(), 0);
        }
        // A vmap dropped while its buffer's lock is held is deferred, not a hang.
        let v = b.vmap_unlocked().unwrap();
        {
            let _g = b.resv().lock_no_ctx().unwrap();
            drop(v);
        }
        let m = {
            let _g = b.resv().lock_no_ctx().unwrap();
            match a.unmap_unlocked(m) {
                Ok(()) => panic!("unmap_unlocked while holding the lock succeeded"),
                Err((e, m)) => {
                    assert_eq!(e.errno(), 22, "unmap_unlocked: {e:?}");
                    m
                }
            }
        };
        a.unmap_unlocked(m).map_err(|(e, _)| e).unwrap();
        let a = {
            let _g = b.resv().lock_no_ctx().unwrap();
            match a.detach() {
                Ok(()) => panic!("detach while holding the lock succeeded"),
                Err((e, a)) => {
                    assert_eq!(e.errno(), 22, "detach: {e:?}");
                    a
                }
            }
        };
        a.detach().map_err(|(e, _)| e).unwrap();
        let _ = pending.signal();
        let mut g = b.resv().lock_no_ctx().unwrap();
        assert!(b.locked(&mut g).unwrap().attachments().is_empty());
    });
}
