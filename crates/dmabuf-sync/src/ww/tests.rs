//! Direct unit tests of the ww API (the scenarios live in `selftest.rs`).

use super::mutex::HANDOFF;
use super::*;
use crate::shim::Ordering;
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
                        *m.lock_no_ctx().unwrap() += 1;
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
    let g = m.lock_no_ctx().unwrap();
    thread::scope(|s| {
        let h = s.spawn(|| drop(m.lock_no_ctx().unwrap()));
        while m.waiter_count() == 0 {
            thread::yield_now();
        }
        drop(g);
        h.join().unwrap();
    });
    assert_eq!(m.state.load(Ordering::SeqCst), 0);
}

// A lockdep report raised while a mutex is taken or released must not leave it locked,
// nor the context's count wrong, even when the report panics (the default policy). Each
// test makes lockdep lose track of something by hand, so that the next call is reported.

/// Whether reports panic on this thread: the default policy and no capture installed.
fn reports_panic() -> bool {
    lockdep::enabled() && lockdep::on_report() == lockdep::OnReport::Panic
}

/// Another thread can take `m` now.
fn takeable(m: &WwMutex<()>) -> bool {
    thread::scope(|s| {
        s.spawn(|| {
            let ctx = AcquireCtx::new(m.class());
            let ok = m.try_lock(Some(&ctx)).is_some();
            ctx.fini().unwrap();
            ok
        })
        .join()
        .unwrap()
    })
}

#[test]
fn report_on_unlock_leaves_the_mutex_unlocked() {
    if !reports_panic() {
        return;
    }
    let m = WwMutex::new(&WD, ());
    let ctx = AcquireCtx::new(&WD);
    let g = m.lock(&ctx).unwrap();
    lockdep::release(WD.lock_class(), m.addr()); // the unlock is now a bad unlock
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(g)));
    assert!(r.is_err(), "the bad unlock was reported");
    assert!(!m.is_locked());
    assert_eq!(ctx.acquired(), 0);
    assert!(takeable(&m));
    ctx.fini().unwrap();

    let g = m.lock_no_ctx().unwrap();
    lockdep::release(WD.lock_class(), m.addr());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(g)));
    assert!(r.is_err());
    assert!(!m.is_locked());
    assert!(takeable(&m));
}

#[test]
fn report_on_try_lock_or_lock_leaves_the_mutex_unlocked() {
    if !reports_panic() {
        return;
    }
    let m = WwMutex::new(&WD, ());
    let ctx = AcquireCtx::new(&WD);
    // Lockdep forgets the context: a lock under it is "nest lock not held".
    lockdep::release(WD.acquire_class(), ctx.instance());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        m.try_lock(Some(&ctx)).is_some()
    }));
    assert!(r.is_err(), "the bad annotation was reported");
    assert!(!m.is_locked());
    assert_eq!(ctx.acquired(), 0);
    assert!(takeable(&m));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.lock(&ctx).is_ok()));
    assert!(r.is_err());
    assert!(!m.is_locked());
    assert_eq!(ctx.acquired(), 0);
    assert!(takeable(&m));
    assert_eq!(lockdep::held_count(), 0);
    lockdep::acquire(
        WD.acquire_class(),
        ctx.instance(),
        lockdep::Acquire::write(),
    );
    ctx.fini().unwrap();
}

#[test]
fn report_on_context_start_or_end_frees_its_slot() {
    if !reports_panic() {
        return;
    }
    let c = WwClass::leak("ww_unit_ctx_report", WwAlgorithm::WaitDie);
    // A second context on this thread: reported, and the failed start leaves nothing.
    let first = AcquireCtx::new(c);
    let r = std::panic::catch_unwind(|| drop(AcquireCtx::new(c)));
    assert!(r.is_err(), "the nested context was reported");
    assert_eq!(lockdep::held_count(), 1, "only the first context");
    first.fini().unwrap();
    assert_eq!(lockdep::held_count(), 0);
    AcquireCtx::try_new(c).unwrap().fini().unwrap();

    // Ended with a lock still held (a leaked guard): reported, and the context is gone
    // from lockdep and from the thread, so the next one is not "nested".
    let m = WwMutex::new(c, ());
    let ctx = AcquireCtx::new(c);
    std::mem::forget(m.lock(&ctx).unwrap());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx.fini()));
    assert!(r.is_err(), "the leaked lock was reported");
    assert!(!lockdep::is_held(c.acquire_class()));
    lockdep::release(c.lock_class(), m.addr()); // the leaked lock, for a clean thread
    assert_eq!(lockdep::held_count(), 0);
    AcquireCtx::try_new(c).unwrap().fini().unwrap();
}

/// The waiter entry is removed by id, so a thread that wakes and takes the lock never
/// removes another waiter's entry (the list stays exact under contention).
#[test]
fn waiters_leave_the_list_exactly() {
    let m = WwMutex::new(&WD, ());
    let g = m.lock_no_ctx().unwrap();
    thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| drop(m.lock_no_ctx().unwrap())))
            .collect();
        while m.waiter_count() < 3 {
            thread::yield_now();
        }
        drop(g);
        for h in hs {
            h.join().unwrap();
        }
    });
    assert_eq!(m.waiter_count(), 0);
    assert_eq!(m.state.load(Ordering::SeqCst), 0);
}

/// Lock stealing is bounded: a waiter that was woken and found the mutex taken again
/// gets it handed over at the next unlock, whoever asks for it meanwhile. Before the
/// hand-off, the thread that had just unlocked could take the mutex back again and again
/// (it runs, the woken waiter has yet to be scheduled), and a stress worker completed a
/// handful of transactions while another completed thousands.
fn handoff_after_a_steal(waiter_ctx: bool) {
    for _ in 0..100 {
        if try_handoff(waiter_ctx) {
            return;
        }
    }
    panic!("the waiter won every race: no steal to bound");
}

/// One attempt: true when the hand-off was seen; false when the waiter took the mutex
/// before it could be taken back (nothing to bound then).
fn try_handoff(waiter_ctx: bool) -> bool {
    use std::time::{Duration, Instant};
    /// Lets the waiter go when the main side ends, even by a failed assertion (the
    /// scope joins the waiter before the panic goes on).
    struct ReleaseOnDrop<'a>(&'a AtomicUsize);
    impl Drop for ReleaseOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(1, O::SeqCst);
        }
    }
    let m = WwMutex::new(&WD, 0u32);
    let got = AtomicUsize::new(0);
    let release = AtomicUsize::new(0);
    let seen = thread::scope(|s| {
        let _release = ReleaseOnDrop(&release);
        let mut g = m.lock_no_ctx().unwrap();
        s.spawn(|| {
            let ctx = waiter_ctx.then(|| AcquireCtx::new(&WD));
            let mut w = match &ctx {
                Some(c) => m.lock(c).unwrap(),
                None => m.lock_no_ctx().unwrap(),
            };
            *w += 1;
            got.store(1, O::SeqCst);
            while release.load(O::SeqCst) == 0 {
                thread::yield_now();
            }
            drop(w);
            if let Some(c) = ctx {
                c.fini().unwrap();
            }
        });
        while m.waiter_count() == 0 {
            thread::yield_now();
        }
        // Unlock (waking the waiter) and take it straight back, until the waiter has
        // found it taken: then it asks for the hand-off.
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the woken waiter never asked for a hand-off"
            );
            drop(g);
            match m.try_lock(None) {
                Some(again) => g = again,
                None => {
                    // The waiter got it first.
                    while got.load(O::SeqCst) == 0 {
                        thread::yield_now();
                    }
                    release.store(1, O::SeqCst);
                    return false;
                }
            }
            let asked = Instant::now();
            while m.state.load(Ordering::SeqCst) & HANDOFF == 0
                && asked.elapsed() < Duration::from_millis(200)
            {
                thread::yield_now();
            }
            if m.state.load(Ordering::SeqCst) & HANDOFF != 0 {
                break;
            }
        }
        // The next unlock hands the mutex over: it is never free for a newcomer.
        drop(g);
        assert!(
            m.try_lock(None).is_none(),
            "the mutex was free after a hand-off"
        );
        while got.load(O::SeqCst) == 0 {
            thread::yield_now();
        }
        assert!(m.is_locked());
        release.store(1, O::SeqCst);
        true
    });
    assert_eq!(m.waiter_count(), 0);
    assert_eq!(m.state.load(Ordering::SeqCst), 0);
    assert_eq!(m.into_inner(), 1);
    seen
}

#[test]
fn handoff_bounds_stealing_plain_waiter() {
    handoff_after_a_steal(false);
}

#[test]
fn handoff_bounds_stealing_ctx_waiter() {
    handoff_after_a_steal(true);
}
