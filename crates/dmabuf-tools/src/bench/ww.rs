//! `dmabuf bench ww`: wound/wait mutexes beside `std::sync::Mutex`.

use super::{random_sets, run_threads, BenchCase};
use crate::ww::{lock_all, AcquireCtx, WwClass, WwMutex};
use std::hint::black_box;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

static BENCH_CLASS: WwClass = WwClass::wait_die("bench_ww", "bench_ww_acquire");

/// The cases of the `ww` suite.
pub(crate) fn cases() -> Vec<BenchCase> {
    let c = |case, baseline, ours, base| BenchCase::new("ww", case, baseline, ours, base);
    vec![
        c(
            "uncontended lock+unlock, no ctx, lockdep off",
            "std::sync::Mutex",
            no_ctx,
            std_mutex,
        )
        .target(1.5),
        c(
            "uncontended lock+unlock with ctx",
            "std::sync::Mutex",
            with_ctx,
            std_mutex,
        )
        .target(2.5),
        c(
            "2 threads lock 8 random of 256, back-off",
            "std Mutexes locked in address order",
            random_sets_ww,
            random_sets_std,
        )
        .target(1.5),
        c(
            "lockdep on: lock+unlock, validated chain",
            "same lock, lockdep off",
            lockdep_on,
            no_ctx,
        )
        .overhead()
        .target(80.0),
    ]
}

/// Runs `f` with lockdep switched to `on`, restoring the previous state.
fn with_lockdep<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let was = lockdep::enabled();
    lockdep::set_enabled(on);
    let r = f();
    lockdep::set_enabled(was);
    r
}

fn no_ctx(iters: u64) -> Duration {
    let m = WwMutex::new(&BENCH_CLASS, 0u64);
    with_lockdep(false, || {
        let t = Instant::now();
        for _ in 0..iters {
            let mut g = m.lock_no_ctx().expect("uncontended lock");
            *g += 1;
            drop(black_box(g));
        }
        t.elapsed()
    })
}

fn std_mutex(iters: u64) -> Duration {
    let m = Mutex::new(0u64);
    let t = Instant::now();
    for _ in 0..iters {
        let mut g = m.lock().unwrap();
        *g += 1;
        drop(black_box(g));
    }
    t.elapsed()
}

fn with_ctx(iters: u64) -> Duration {
    let m = WwMutex::new(&BENCH_CLASS, 0u64);
    with_lockdep(false, || {
        let ctx = AcquireCtx::new(&BENCH_CLASS);
        let t = Instant::now();
        for _ in 0..iters {
            let mut g = m.lock(&ctx).expect("uncontended lock");
            *g += 1;
            drop(black_box(g));
        }
        let e = t.elapsed();
        ctx.fini().expect("fini");
        e
    })
}

fn lockdep_on(iters: u64) -> Duration {
    let m = WwMutex::new(&BENCH_CLASS, 0u64);
    with_lockdep(true, || {
        // Validate the chain once; the loop then runs on the cached chain.
        drop(m.lock_no_ctx().expect("uncontended lock"));
        let t = Instant::now();
        for _ in 0..iters {
            let mut g = m.lock_no_ctx().expect("uncontended lock");
            *g += 1;
            drop(black_box(g));
        }
        t.elapsed()
    })
}

const SET: usize = 256;
const PICK: usize = 8;
const THREADS: usize = 2;

/// Pre-drawn random index sets, so both sides lock the same sets.
fn sets(thread: usize) -> &'static [Vec<usize>] {
    static SETS: OnceLock<Vec<Vec<Vec<usize>>>> = OnceLock::new();
    &SETS.get_or_init(|| random_sets(THREADS, PICK, SET, 0x5eed))[thread]
}

// Both sides do the same per-iteration work apart from the locking itself: one `Vec` of
// the 8 mutexes and one `Vec` of guards each (ours inside `lock_all`), the same
// pre-drawn sets, the same increments. The baseline also sorts its 8 by address; ours
// needs no order but pays an acquire context (a stamp from the class counter) and, on
// contention, wait-die back-off.
fn random_sets_ww(iters: u64) -> Duration {
    static LOCKS: OnceLock<Vec<WwMutex<u64>>> = OnceLock::new();
    let locks = LOCKS.get_or_init(|| (0..SET).map(|_| WwMutex::new(&BENCH_CLASS, 0)).collect());
    with_lockdep(false, || {
        run_threads(THREADS, iters, move |t, iters| {
            let sets = sets(t);
            for i in 0..iters as usize {
                let set: Vec<&WwMutex<u64>> =
                    sets[i % sets.len()].iter().map(|&j| &locks[j]).collect();
                let ctx = AcquireCtx::new(&BENCH_CLASS);
                let mut guards = lock_all(&ctx, &set).expect("lock_all");
                for g in guards.iter_mut() {
                    **g += 1;
                }
                drop(guards);
                ctx.fini().expect("fini");
            }
        })
    })
}

fn random_sets_std(iters: u64) -> Duration {
    static LOCKS: OnceLock<Vec<Mutex<u64>>> = OnceLock::new();
    let locks = LOCKS.get_or_init(|| (0..SET).map(|_| Mutex::new(0)).collect());
    run_threads(THREADS, iters, move |t, iters| {
        let sets = sets(t);
        for i in 0..iters as usize {
            let mut set: Vec<&Mutex<u64>> =
                sets[i % sets.len()].iter().map(|&j| &locks[j]).collect();
            set.sort_by_key(|m| *m as *const Mutex<u64> as usize);
            let mut guards: Vec<_> = set.iter().map(|m| m.lock().unwrap()).collect();
            for g in guards.iter_mut() {
                **g += 1;
            }
            drop(guards);
        }
    })
}
