//! Loom models of the wound/wait state machine: the same code as in production, with
//! `crate::shim` mapped to loom. Run with
//! `LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!  cargo test -p dmabuf-sync --release --lib loom`.
//!
//! Loom fails a model on a deadlock (every thread parked: a lost wake-up), on a panic
//! (an assertion below), and on leaked loom objects.

use super::{lock_all, AcquireCtx, WwAlgorithm, WwClass, WwMutex};
use crate::error::Error;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Hand-offs made by `unlock_slow`, over every execution of every model.
pub(super) static HANDOFFS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

static WD: WwClass = WwClass::wait_die("loom_wd", "loom_wd_ctx");
static WW: WwClass = WwClass::wound_wait("loom_ww", "loom_ww_ctx");

fn class(algo: WwAlgorithm) -> &'static WwClass {
    match algo {
        WwAlgorithm::WaitDie => &WD,
        WwAlgorithm::WoundWait => &WW,
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = runs.clone();
    b.check(move || {
        r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    let n = runs.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("loom: {n} executions explored");
    assert!(n > 1, "loom explored a single execution");
}

/// Counts threads inside a critical section; more than one is a mutual-exclusion bug.
struct Inside(AtomicUsize);
impl Inside {
    fn enter(&self) {
        assert_eq!(
            self.0.fetch_add(1, Ordering::SeqCst),
            0,
            "two holders at once"
        );
    }
    fn leave(&self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Shared {
    a: WwMutex<usize>,
    b: WwMutex<usize>,
    inside_a: Inside,
    inside_b: Inside,
}

impl Shared {
    fn new(class: &'static WwClass) -> Arc<Self> {
        Arc::new(Shared {
            a: WwMutex::new(class, 0),
            b: WwMutex::new(class, 0),
            inside_a: Inside(AtomicUsize::new(0)),
            inside_b: Inside(AtomicUsize::new(0)),
        })
    }
}

/// Lock vs unlock without contexts: mutual exclusion, and the unlock's wake-up of a
/// queued waiter is never lost.
#[test]
fn loom_plain_lock_unlock() {
    model(|| {
        let s = Shared::new(&WD);
        let t = {
            let s = s.clone();
            thread::spawn(move || {
                let mut g = s.a.lock_no_ctx().unwrap();
                s.inside_a.enter();
                *g += 1;
                s.inside_a.leave();
            })
        };
        {
            let mut g = s.a.lock_no_ctx().unwrap();
            s.inside_a.enter();
            *g += 1;
            s.inside_a.leave();
        }
        t.join().unwrap();
        assert_eq!(*s.a.try_lock(None).expect("left locked"), 2);
    });
}

/// try_lock racing an unlock with a queued waiter: never two holders, nothing lost.
#[test]
fn loom_trylock_vs_waiter() {
    model(|| {
        let s = Shared::new(&WW);
        let g = s.a.lock_no_ctx().unwrap();
        let t = {
            let s = s.clone();
            thread::spawn(move || {
                let _g = s.a.lock_no_ctx().unwrap();
                s.inside_a.enter();
                s.inside_a.leave();
            })
        };
        drop(g);
        if let Some(_g) = s.a.try_lock(None) {
            s.inside_a.enter();
            s.inside_a.leave();
        }
        t.join().unwrap();
        assert!(!s.a.is_locked());
    });
}

/// One side of ABBA: lock `first` then `second` in a context, backing off on Deadlock.
fn abba_side(s: &Shared, class: &'static WwClass, a_first: bool) -> usize {
    let ctx = AcquireCtx::new(class);
    let set = if a_first { [&s.a, &s.b] } else { [&s.b, &s.a] };
    let mut guards = lock_all(&ctx, &set).expect("lock_all");
    s.inside_a.enter();
    s.inside_b.enter();
    for g in guards.iter_mut() {
        **g += 1;
    }
    s.inside_b.leave();
    s.inside_a.leave();
    drop(guards);
    ctx.fini().expect("fini");
    1
}

fn abba(algo: WwAlgorithm) {
    model(move || {
        let class = class(algo);
        let s = Shared::new(class);
        let t = {
            let s = s.clone();
            thread::spawn(move || abba_side(&s, class, false))
        };
        let mine = abba_side(&s, class, true);
        let theirs = t.join().unwrap();
        assert_eq!(mine + theirs, 2);
        assert_eq!(*s.a.try_lock(None).unwrap(), 2);
        assert_eq!(*s.b.try_lock(None).unwrap(), 2);
    });
}

/// Two contexts lock {a, b} in opposite orders with back-off: both complete (no lost
/// wake-up, no lost wound: under wound-wait the younger one, waiting on the older one's
/// lock, must be woken by the wound to back off).
#[test]
fn loom_abba_backoff_wait_die() {
    abba(WwAlgorithm::WaitDie);
}

#[test]
fn loom_abba_backoff_wound_wait() {
    abba(WwAlgorithm::WoundWait);
}

/// Wound delivery: the younger context holds `a`; the older one, holding `b`, waits for
/// `a` and wounds it. The younger one then locks `b`: it must get Deadlock (never wait
/// forever), whatever the interleaving.
#[test]
fn loom_wound_delivered() {
    model(|| {
        let s = Shared::new(&WW);
        let young_has_a = Arc::new(AtomicUsize::new(0));
        // Stamps: the main thread's context starts first, so it is the older one.
        let old = AcquireCtx::new(&WW);
        let gb = s.b.lock(&old).unwrap();
        let t = {
            let (s, flag) = (s.clone(), young_has_a.clone());
            thread::spawn(move || {
                let young = AcquireCtx::new(&WW);
                let ga = s.a.lock(&young).unwrap();
                flag.store(1, Ordering::SeqCst);
                let r = s.b.lock(&young).map(drop);
                drop(ga);
                match r {
                    Ok(()) => {}
                    Err(Error::Deadlock) => {
                        let gb = s.b.lock_slow(&young).unwrap();
                        let ga = s.a.lock(&young).unwrap();
                        drop((ga, gb));
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
                young.fini().unwrap();
            })
        };
        while young_has_a.load(Ordering::SeqCst) == 0 {
            thread::yield_now();
        }
        // Older, holding b, waits for a: wounds the younger holder.
        let ga = s.a.lock(&old).expect("older never dies");
        drop((ga, gb));
        old.fini().unwrap();
        t.join().unwrap();
    });
}

/// Lock stealing and the hand-off (`HANDOFF`): the main thread unlocks and takes the
/// mutex back twice while another thread waits for it, with or without a context. In
/// every interleaving: mutual exclusion, no lost wake-up (loom fails a model where every
/// thread is parked), and nothing left locked or queued; and some interleaving has the
/// waiter find the mutex stolen, ask for the hand-off, and get the mutex from the unlock.
fn handoff(waiter_ctx: bool) {
    let before = HANDOFFS.load(std::sync::atomic::Ordering::Relaxed);
    model(move || {
        let s = Shared::new(&WD);
        let g = s.a.lock_no_ctx().unwrap();
        let t = {
            let s = s.clone();
            thread::spawn(move || {
                let ctx = waiter_ctx.then(|| AcquireCtx::new(&WD));
                let mut g = match &ctx {
                    Some(c) => s.a.lock(c).unwrap(),
                    None => s.a.lock_no_ctx().unwrap(),
                };
                s.inside_a.enter();
                *g += 1;
                s.inside_a.leave();
                drop(g);
                if let Some(c) = ctx {
                    c.fini().unwrap();
                }
            })
        };
        drop(g);
        for _ in 0..2 {
            let mut g = s.a.lock_no_ctx().unwrap();
            s.inside_a.enter();
            *g += 1;
            s.inside_a.leave();
        }
        t.join().unwrap();
        assert_eq!(s.a.waiter_count(), 0);
        assert_eq!(*s.a.try_lock(None).expect("left locked"), 3);
    });
    let n = HANDOFFS.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(n > 0, "no interleaving handed the mutex over");
}

#[test]
fn loom_handoff_plain() {
    handoff(false);
}

#[test]
fn loom_handoff_ctx() {
    handoff(true);
}
