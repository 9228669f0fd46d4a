//! ww mutexes and contexts used across `lockdep::set_enabled(false)` / `(true)`. One
//! test function: the switch is process-wide.

use dmabuf::ww::{lock_all, AcquireCtx, WwClass, WwMutex};

static C: WwClass = WwClass::wait_die("toggle_ww", "toggle_ww_ctx");

#[test]
fn locks_and_contexts_taken_while_off_work_after() {
    if !lockdep::enabled() {
        return;
    }
    // The default policy panics on a report: any report here fails the test.
    assert_eq!(lockdep::on_report(), lockdep::OnReport::Panic);

    // A lock taken while off, unlocked after: not a bad unlock.
    let m = WwMutex::new(&C, ());
    lockdep::set_enabled(false);
    let g = m.lock_no_ctx().unwrap();
    lockdep::set_enabled(true);
    drop(g);
    assert!(!m.is_locked());

    // A context started while off, used after: its locks are not "nest lock not held".
    let (m2, m3) = (WwMutex::new(&C, ()), WwMutex::new(&C, ()));
    lockdep::set_enabled(false);
    let ctx = AcquireCtx::new(&C);
    lockdep::set_enabled(true);
    let g2 = m2.try_lock(Some(&ctx)).expect("free");
    let g3 = m3.lock(&ctx).unwrap();
    assert_eq!(ctx.acquired(), 2);
    drop((g2, g3));
    ctx.fini().unwrap();
    assert!(!m2.is_locked() && !m3.is_locked());

    // Everything after is checked as usual.
    let ctx = AcquireCtx::new(&C);
    let guards = lock_all(&ctx, &[&m, &m2, &m3]).unwrap();
    assert_eq!(lockdep::held_count(), 4);
    assert!(lockdep::is_instance_held(
        C.lock_class(),
        &m2 as *const _ as usize
    ));
    drop(guards);
    ctx.fini().unwrap();
    assert_eq!(lockdep::held_count(), 0);
    let ((), r) = lockdep::capture(|| {
        let g = m.lock_no_ctx().unwrap();
        let g2 = m.try_lock(None);
        assert!(g2.is_none());
        drop(g);
    });
    assert!(r.is_empty());
}
