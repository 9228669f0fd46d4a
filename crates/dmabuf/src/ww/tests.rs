//! Direct unit tests of the ww API (the scenarios live in `selftest.rs`).

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering as O};
use std::thread;

static WD: WwClass = WwClass::wait_die("ww_unit_wd", "ww_unit_wd_ctx");
static WW: WwClass = WwClass::wound_wait("ww_unit_ww", "ww_unit_ww_ctx");

#[test]
fn errors_are_the_kernel_errnos() {
    assert_eq!(Error::Deadlock.errno(), 35); // EDEADLK
    assert_eq!(Error::Already.errno(), 114); // EALREADY
    assert_eq!(Error::Interrupted.errno(), 4); // EINTR
    assert_eq!(Error::Invalid("x").errno(), 22); // EINVAL
}

#[test]
fn types_are_send_sync_as_documented() {
    fn send_sync<X: Send + Sync>() {}
    send_sync::<WwMutex<Vec<u8>>>();
    send_sync::<WwClass>();
}

#[test]
fn guard_gives_access_and_counts() {
    let mut m = WwMutex::new(&WD, vec![1u8]);
    m.get_mut().push(2);
    let ctx = AcquireCtx::new(&WD);
    {
        let mut g = m.lock(&ctx).unwrap();
        g.push(3);
        assert_eq!(&**g, &[1, 2, 3]);
        assert_eq!(ctx.acquired(), 1);
        assert!(m.is_locked() && m.is_locked_by(&ctx));
        assert_eq!(format!("{g:?}"), "[1, 2, 3]");
        g.unlock();
    }
    assert_eq!(ctx.acquired(), 0);
    assert!(!m.is_locked());
    assert_eq!(ctx.class().name(), "ww_unit_wd");
    assert_eq!(ctx.class().algorithm(), WwAlgorithm::WaitDie);
    ctx.fini().unwrap();
    assert!(format!("{m:?}").contains("locked: false"));
    assert_eq!(m.into_inner(), vec![1, 2, 3]);
}

#[test]
fn stamps_grow_per_class() {
    let c = WwClass::leak("ww_unit_stamps", WwAlgorithm::WoundWait);
    let a = AcquireCtx::new(c);
    let s = a.stamp();
    a.fini().unwrap();
    let b = AcquireCtx::new(c);
    assert_eq!(b.stamp(), s + 1);
    assert!(slot::younger(b.stamp(), s));
    assert!(!slot::younger(s, b.stamp()));
    assert!(slot::younger(0, u64::MAX), "wrap-around");
    b.fini().unwrap();
}

fn hammer(class: &'static WwClass, with_ctx: bool) {
    const THREADS: usize = 4;
    const ITERS: usize = 5000;
    let m = WwMutex::new(class, 0usize);
    let other = WwMutex::new(class, 0usize);
    let deadlocks = AtomicUsize::new(0);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (m, other, deadlocks) = (&m, &other, &deadlocks);
            s.spawn(move || {
                for _ in 0..ITERS {
                    if !with_ctx {
                        *m.lock_no_ctx() += 1;
                        continue;
                    }
                    let ctx = AcquireCtx::new(class);
                    // Half the threads hold another lock first: real wound/die traffic.
                    let set: [&WwMutex<usize>; 2] =
                        if t % 2 == 0 { [other, m] } else { [m, other] };
                    let mut g = lock_all(&ctx, &set).unwrap();
                    *g[if t % 2 == 0 { 1 } else { 0 }] += 1;
                    drop(g);
                    if ctx.is_wounded() {
                        deadlocks.fetch_add(1, O::Relaxed);
                    }
                    ctx.fini().unwrap();
                }
            });
        }
    });
    assert_eq!(m.into_inner(), THREADS * ITERS);
    assert!(!other.is_locked());
    assert_eq!(other.waiter_count(), 0);
}

#[test]
fn contended_plain_lock_is_exclusive() {
    hammer(&WD, false);
}

#[test]
fn contended_ctx_lock_is_exclusive_wait_die() {
    hammer(&WD, true);
}

#[test]
fn contended_ctx_lock_is_exclusive_wound_wait() {
    hammer(&WW, true);
}

#[test]
fn state_word_returns_to_zero() {
    let m = WwMutex::new(&WW, ());
    let g = m.lock_no_ctx();
    thread::scope(|s| {
        let h = s.spawn(|| drop(m.lock_no_ctx()));
        while m.waiter_count() == 0 {
            thread::yield_now();
        }
        drop(g);
        h.join().unwrap();
    });
    assert_eq!(m.state.load(Ordering::SeqCst), 0);
}
