//! Self-test scenarios for fences: ports of the semantics of the kernel's
//! `st-dma-fence.c`, `st-dma-fence-chain.c` and `st-dma-fence-unwrap.c` (and of
//! `tools/testing/selftests/sync`, in [`crate::sync_file`]'s cases). Each is a
//! [`Case`] so that both `cargo test` and `dmabuf selftest` run them; each returns
//! `Err(description)` on a wrong outcome. Stress cases are bounded by iterations and by
//! about one second of wall time.

#![allow(clippy::needless_range_loop)]

use crate::error::Error;
use crate::fence::chain::{self, FenceChain};
use crate::fence::unwrap::{merge, unwrap};
use crate::fence::{wait_any_timeout, Context, Fence, FenceArray, FenceOps, Status};
use lockdep::selftest::Case;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::selftest::{ensure, Rng, R};

/// Every fence scenario.
pub(crate) fn cases() -> Vec<Case> {
    case_table![
        "fence/sanity" => sanity,
        "fence/signaling" => signaling,
        "fence/add-callback" => add_callback,
        "fence/late-add-callback" => late_add_callback,
        "fence/remove-callback" => remove_callback,
        "fence/late-remove-callback" => late_remove_callback,
        "fence/nop-callback" => nop_callback,
        "fence/status" => status,
        "fence/error" => error,
        "fence/wait" => wait,
        "fence/wait-timeout" => wait_timeout,
        "fence/stub" => stub,
        "fence/wait-on-signaled" => wait_on_signaled,
        "fence/wait-any" => wait_any,
        "fence/race-signal-callback" => race_signal_callback,
        "fence/lockdep-wait-vs-signal" => lockdep_wait_vs_signal,
        "fence/lockdep-nested-sections" => lockdep_nested_sections,
        "fence/lockdep-opportunistic-signal" => lockdep_opportunistic,
        "fence/lockdep-lock-across-section-start" => lockdep_lock_across_start,
        "fence/lockdep-wait-in-section" => lockdep_wait_in_section,
        "fence/lockdep-primed-resv" => lockdep_primed_resv,
        "fence/lockdep-array-completion-annotated" => lockdep_array_completion,
        "fence/callback-timed-wait-own-fence" => callback_timed_wait_own_fence,
        "fence/callback-untimed-wait-own-fence" => callback_untimed_wait_own_fence,
        "fence/callback-nested-wait-outer-fence" => callback_nested_wait_outer_fence,
        "fence/callback-own-remove-and-poll" => callback_own_remove_and_poll,
        "fence/timed-wait-while-callbacks-run" => timed_wait_while_callbacks_run,
        lockdep_only "fence/callback-might-wait" => callback_might_wait,
        lockdep_only "fence/callback-blocking-lock" => callback_blocking_lock,
        "fence/callback-nonblocking-work" => callback_nonblocking_work,
        "fence/ops-detached-after-signal" => ops_detached_after_signal,
        "fence/names-vs-signal-stress" => names_vs_signal_stress,
        "fence/array-all" => array_all,
        "fence/array-any" => array_any,
        "fence/array-error" => array_error,
        "fence/array-nested-no-recursion" => array_nested_no_recursion,
        "fence-chain/sanity" => chain_sanity,
        "fence-chain/find-seqno" => chain_find_seqno,
        "fence-chain/find-signaled" => chain_find_signaled,
        "fence-chain/find-out-of-order" => chain_find_out_of_order,
        "fence-chain/find-gap" => chain_find_gap,
        "fence-chain/find-race" => chain_find_race,
        "fence-chain/signal-forward" => chain_signal_forward,
        "fence-chain/signal-backward" => chain_signal_backward,
        "fence-chain/signal-random" => chain_signal_random,
        "fence-chain/wait-forward" => chain_wait_forward,
        "fence-chain/wait-backward" => chain_wait_backward,
        "fence-chain/wait-random" => chain_wait_random,
        "fence-chain/release-long" => chain_release_long,
        "fence-unwrap/unwrap-array" => unwrap_array,
        "fence-unwrap/unwrap-chain" => unwrap_chain,
        "fence-unwrap/unwrap-chain-array" => unwrap_chain_array,
        "fence-unwrap/merge" => unwrap_merge,
        "fence-unwrap/merge-duplicate" => unwrap_merge_duplicate,
        "fence-unwrap/merge-seqno" => unwrap_merge_seqno,
        "fence-unwrap/merge-order" => unwrap_merge_order,
        "fence-unwrap/merge-complex" => unwrap_merge_complex,
        "fence-unwrap/merge-signaled" => unwrap_merge_signaled,
    ]
}

use crate::testing::{mock, mock_at};

/// A callback that records that it ran.
fn seen_cb() -> (Arc<AtomicBool>, impl FnOnce(&Fence) + Send + 'static) {
    let seen = Arc::new(AtomicBool::new(false));
    let s = seen.clone();
    (seen, move |_: &Fence| s.store(true, Ordering::SeqCst))
}

// ---- st-dma-fence --------------------------------------------------------------------

fn sanity() -> R {
    let f = mock();
    ensure(!f.is_signaled(), "new fence reported signalled")?;
    f.signal().map_err(|e| format!("signal failed: {e}"))?;
    ensure(f.is_signaled(), "fence not signalled after signal")
}

fn signaling() -> R {
    let f = mock();
    f.enable_sw_signaling();
    ensure(!f.is_signaled(), "fence unexpectedly signalled on creation")?;
    f.signal()
        .map_err(|e| format!("fence reported being already signalled: {e}"))?;
    ensure(f.is_signaled(), "fence not reporting signalled")?;
    ensure(
        matches!(f.signal(), Err(Error::AlreadySignaled)),
        "fence reported not being already signalled",
    )
}

fn add_callback() -> R {
    let f = mock();
    let (seen, cb) = seen_cb();
    f.add_callback(cb).map_err(|_| "failed to add callback")?;
    f.signal().map_err(|e| e.to_string())?;
    ensure(seen.load(Ordering::SeqCst), "callback failed")
}

fn late_add_callback() -> R {
    let f = mock();
    f.signal().map_err(|e| e.to_string())?;
    let (seen, cb) = seen_cb();
    match f.add_callback(cb) {
        Ok(_) => Err("added callback to a signalled fence".into()),
        Err((Error::NoEntry(_), _cb)) => ensure(
            !seen.load(Ordering::SeqCst),
            "callback called after failed attachment",
        ),
        Err((e, _)) => Err(format!("wrong error {e}")),
    }
}

fn remove_callback() -> R {
    let f = mock();
    let (seen, cb) = seen_cb();
    let id = f.add_callback(cb).map_err(|_| "failed to add callback")?;
    ensure(f.remove_callback(id), "failed to remove a pending callback")?;
    f.signal().map_err(|e| e.to_string())?;
    ensure(
        !seen.load(Ordering::SeqCst),
        "callback still signalled after removal",
    )
}

fn late_remove_callback() -> R {
    let f = mock();
    let (seen, cb) = seen_cb();
    let id = f.add_callback(cb).map_err(|_| "failed to add callback")?;
    f.signal().map_err(|e| e.to_string())?;
    ensure(!f.remove_callback(id), "callback removed after signal")?;
    ensure(seen.load(Ordering::SeqCst), "callback not called")
}

fn nop_callback() -> R {
    // Many no-op callbacks in registration order; all run exactly once.
    let f = mock();
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    for i in 0..32 {
        let o = order.clone();
        f.add_callback(move |_: &Fence| o.lock().push(i))
            .map_err(|_| "add failed")?;
    }
    f.signal().map_err(|e| e.to_string())?;
    let got = order.lock().clone();
    ensure(
        got == (0..32).collect::<Vec<_>>(),
        "callbacks not run once in order",
    )
}

fn status() -> R {
    let f = mock();
    ensure(f.get_status() == 0, "pending fence has a status")?;
    f.signal().map_err(|e| e.to_string())?;
    ensure(f.get_status() == 1, "signalled fence reports no status")
}

fn error() -> R {
    let f = mock();
    f.set_error(-5).map_err(|e| e.to_string())?;
    ensure(
        f.status() == Status::Pending,
        "error reported before signal",
    )?;
    f.signal().map_err(|e| e.to_string())?;
    ensure(
        f.status() == Status::Error(-5),
        "error not reported after signal",
    )?;
    ensure(f.set_error(-22).is_err(), "set_error allowed after signal")?;
    ensure(f.error() == -5, "error changed after signal")
}

fn wait() -> R {
    let f = mock();
    ensure(
        matches!(f.wait_timeout(Duration::ZERO), Err(Error::TimedOut)),
        "wait reported complete before being signalled",
    )?;
    f.signal().map_err(|e| e.to_string())?;
    ensure(
        f.wait_timeout(Duration::ZERO).is_ok(),
        "wait reported incomplete after being signalled",
    )
}

fn wait_timeout() -> R {
    let f = mock();
    let g = f.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        let _ = g.signal();
    });
    let early = f.wait_timeout(Duration::from_millis(1));
    let late = f.wait_timeout(Duration::from_secs(10));
    t.join().map_err(|_| "signaller panicked")?;
    ensure(
        matches!(early, Err(Error::TimedOut)),
        "wait reported complete before being signalled",
    )?;
    match late {
        Ok(rem) => ensure(
            rem >= crate::fence::MIN_REMAINING,
            "remaining below one tick",
        ),
        Err(e) => Err(format!("wait did not complete: {e}")),
    }
}

fn stub() -> R {
    let f = Fence::stub();
    ensure(f.is_signaled(), "stub is not signalled")?;
    ensure(
        f.context() == Context::STUB && f.seqno() == 0,
        "stub identity",
    )?;
    let p = Fence::private_stub(1234);
    ensure(
        p.is_signaled() && p.timestamp() == Some(1234),
        "private stub timestamp",
    )
}

fn wait_on_signaled() -> R {
    let f = mock();
    f.signal().map_err(|e| e.to_string())?;
    f.wait();
    ensure(
        f.wait_timeout(Duration::from_secs(1)).is_ok(),
        "wait on signalled fence failed",
    )
}

fn wait_any() -> R {
    let fs: Vec<Fence> = (0..4).map(|_| mock()).collect();
    ensure(
        matches!(
            wait_any_timeout(&fs, Some(Duration::ZERO), None),
            Err(Error::TimedOut)
        ),
        "wait_any of pending fences did not time out",
    )?;
    let g = fs[2].clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        let _ = g.signal();
    });
    let r = wait_any_timeout(&fs, Some(Duration::from_secs(10)), None);
    t.join().map_err(|_| "signaller panicked")?;
    ensure(matches!(r, Ok((2, _))), "wait_any returned the wrong index")?;
    let _ = fs[1].signal();
    ensure(
        matches!(wait_any_timeout(&fs, None, None), Ok((1, _))),
        "wait_any must return the first signalled index",
    )?;
    ensure(
        matches!(wait_any_timeout(&[], None, None), Err(Error::Invalid(_))),
        "wait_any on no fences must be EINVAL",
    )
}

/// Two threads, each signalling its own fence while adding a callback on the other's;
/// once a wait on the other fence returns, the callback must have run.
fn race_signal_callback() -> R {
    for before in [false, true] {
        let slots: Arc<[parking_lot::Mutex<Option<Fence>>; 2]> = Arc::new(Default::default());
        let stop = Arc::new(AtomicBool::new(false));
        let barrier = Arc::new(Barrier::new(2));
        let end = Instant::now() + Duration::from_millis(300);
        let mut handles = Vec::new();
        for id in 0..2usize {
            let (slots, stop, barrier) = (slots.clone(), stop.clone(), barrier.clone());
            handles.push(std::thread::spawn(move || -> R {
                barrier.wait();
                let mut pass = 0u64;
                while pass < 2000 && !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    let f1 = mock();
                    *slots[id].lock() = Some(f1.clone());
                    let f2 = slots[1 - id].lock().clone();
                    if before {
                        let _ = f1.signal();
                    }
                    let (seen, cb) = seen_cb();
                    let mut id_cb = None;
                    match f2.as_ref().map(|f| f.add_callback(cb)) {
                        Some(Ok(i)) => id_cb = Some(i),
                        _ => seen.store(true, Ordering::SeqCst),
                    }
                    if !before {
                        let _ = f1.signal();
                    }
                    if !seen.load(Ordering::SeqCst) {
                        if let Some(f2) = &f2 {
                            f2.wait();
                        }
                    }
                    if !seen.load(Ordering::SeqCst) {
                        stop.store(true, Ordering::Relaxed);
                        return Err(format!(
                            "callback not seen on thread {id}, pass {pass}, signalling {} add_callback",
                            if before { "before" } else { "after" }
                        ));
                    }
                    if let (Some(f2), Some(i)) = (&f2, id_cb) {
                        f2.remove_callback(i);
                    }
                    pass += 1;
                }
                // Let the other thread finish on a signalled fence.
                stop.store(true, Ordering::Relaxed);
                Ok(())
            }));
        }
        for h in handles {
            h.join().map_err(|_| "race thread panicked")??;
        }
    }
    Ok(())
}

fn array_all() -> R {
    let fs: Vec<Fence> = (0..4).map(|_| mock()).collect();
    let a = FenceArray::create(fs.clone(), Context::new(), 1, false).map_err(|e| e.to_string())?;
    let (seen, cb) = seen_cb();
    a.add_callback(cb).map_err(|_| "add to array failed")?;
    for (i, f) in fs.iter().enumerate() {
        ensure(
            !a.is_signaled(),
            &format!("array signalled after {i} members"),
        )?;
        f.signal().map_err(|e| e.to_string())?;
    }
    ensure(
        a.is_signaled() && seen.load(Ordering::SeqCst),
        "array not signalled",
    )
}

fn array_any() -> R {
    let fs: Vec<Fence> = (0..4).map(|_| mock()).collect();
    let a = FenceArray::create(fs.clone(), Context::new(), 1, true).map_err(|e| e.to_string())?;
    a.enable_sw_signaling();
    ensure(!a.is_signaled(), "any-array signalled early")?;
    fs[3].signal().map_err(|e| e.to_string())?;
    ensure(a.is_signaled(), "any-array not signalled by one member")?;
    // Unarmed peek path too.
    let gs: Vec<Fence> = (0..3).map(|_| mock()).collect();
    let b = FenceArray::create(gs.clone(), Context::new(), 1, true).map_err(|e| e.to_string())?;
    ensure(!b.is_signaled(), "unarmed any-array signalled early")?;
    gs[1].signal().map_err(|e| e.to_string())?;
    ensure(b.is_signaled(), "unarmed any-array peek failed")
}

fn array_error() -> R {
    let fs: Vec<Fence> = (0..3).map(|_| mock()).collect();
    let a = FenceArray::create(fs.clone(), Context::new(), 1, false).map_err(|e| e.to_string())?;
    a.enable_sw_signaling();
    fs[0].signal().map_err(|e| e.to_string())?;
    fs[1].set_error(-125).map_err(|e| e.to_string())?;
    fs[1].signal().map_err(|e| e.to_string())?;
    fs[2].set_error(-5).map_err(|e| e.to_string())?;
    fs[2].signal().map_err(|e| e.to_string())?;
    ensure(
        a.status() == Status::Error(-125),
        "first member error must win",
    )
}

/// Arrays of arrays' members signalled from inside each other's callbacks complete
/// through the deferred list: the nesting depth seen by callbacks stays bounded.
fn array_nested_no_recursion() -> R {
    const N: usize = 200;
    let depth = Arc::new(AtomicUsize::new(0));
    let max_depth = Arc::new(AtomicUsize::new(0));
    let leaves: Vec<Fence> = (0..N).map(|_| mock()).collect();
    // arrays[i] = array over leaves[i]; a callback on arrays[i] signals leaves[i + 1].
    let mut arrays = Vec::new();
    for l in &leaves {
        arrays.push(
            FenceArray::create(vec![l.clone()], Context::new(), 1, false)
                .map_err(|e| e.to_string())?,
        );
    }
    for i in 0..N {
        let next = leaves.get(i + 1).cloned();
        let (d, m) = (depth.clone(), max_depth.clone());
        arrays[i]
            .add_callback(move |_: &Fence| {
                let now = d.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                if let Some(n) = next {
                    let _ = n.signal();
                }
                d.fetch_sub(1, Ordering::SeqCst);
            })
            .map_err(|_| "add failed")?;
    }
    leaves[0].signal().map_err(|e| e.to_string())?;
    ensure(
        arrays.iter().all(|a| a.is_signaled()),
        "not every array signalled",
    )?;
    ensure(
        max_depth.load(Ordering::SeqCst) == 1,
        &format!("callbacks nested {} deep", max_depth.load(Ordering::SeqCst)),
    )
}

// ---- signalling annotations --------------------------------------------------------------

use lockdep::{Acquire, LockClass, ReportKind};

fn take(class: &'static LockClass) {
    lockdep::acquire(class, class as *const LockClass as usize, Acquire::write());
}

fn drop_lock(class: &'static LockClass) {
    lockdep::release(class, class as *const LockClass as usize);
}

fn has_cycle(reports: &[lockdep::Report], class: &LockClass) -> bool {
    reports.iter().any(|r| {
        r.kind == ReportKind::CircularDependency && r.classes.iter().any(|c| c == class.name())
    })
}

/// Lock A held across a fence wait, and lock A taken inside a signalling section: the
/// deadlock is reported though it never happens (the fence is already signalled, and the
/// two paths run one after the other on one thread).
fn lockdep_wait_vs_signal() -> R {
    if !lockdep::enabled() {
        return Ok(());
    }
    let a = LockClass::leak("fence_selftest_A");
    let f = mock();
    f.signal().map_err(|e| e.to_string())?;
    let ((), reports) = lockdep::capture(|| {
        take(a);
        f.wait();
        drop_lock(a);
        let s = crate::fence::begin_signalling();
        take(a);
        drop_lock(a);
        drop(s);
    });
    ensure(
        has_cycle(&reports, a),
        &format!("no circular dependency reported: {reports:?}"),
    )
}

/// A lock held while a signalling section begins, and taken inside another section: the
/// kernel reports it (the section map is a non-recursive reader), without any wait.
fn lockdep_lock_across_start() -> R {
    if !lockdep::enabled() {
        return Ok(());
    }
    let l = LockClass::leak("fence_selftest_L");
    let ((), reports) = lockdep::capture(|| {
        take(l);
        let s = crate::fence::begin_signalling();
        drop(s);
        drop_lock(l);
        let s = crate::fence::begin_signalling();
        take(l);
        drop_lock(l);
        drop(s);
    });
    ensure(
        has_cycle(&reports, l),
        &format!("no circular dependency reported: {reports:?}"),
    )
}

fn lockdep_nested_sections() -> R {
    if !lockdep::enabled() {
        return Ok(());
    }
    let b = LockClass::leak("fence_selftest_B");
    let ((), reports) = lockdep::capture(|| {
        let outer = crate::fence::begin_signalling();
        let inner = crate::fence::begin_signalling();
        ensure(crate::fence::in_signalling_section(), "not in a section").ok();
        take(b);
        drop_lock(b);
        let f = mock();
        let _ = f.signal();
        drop(inner);
        drop(outer);
    });
    ensure(
        reports.is_empty(),
        &format!("nested sections reported: {reports:?}"),
    )?;
    ensure(
        !crate::fence::in_signalling_section(),
        "section did not end",
    )
}

fn lockdep_opportunistic() -> R {
    if !lockdep::enabled() {
        return Ok(());
    }
    struct Done;
    impl FenceOps for Done {
        fn driver_name(&self) -> &str {
            "done"
        }
        fn timeline_name(&self) -> &str {
            "done"
        }
        fn signaled(&self, _f: &Fence) -> bool {
            true
        }
    }
    let c = LockClass::leak("fence_selftest_C");
    let ((), reports) = lockdep::capture(|| {
        let g = mock();
        let _ = g.signal();
        take(c);
        g.wait();
        // Noticing completion while holding C signals outside any section.
        let f = Fence::new(Done, Context::new(), 1);
        let _ = f.is_signaled();
        drop_lock(c);
    });
    ensure(
        reports.is_empty(),
        &format!("opportunistic signalling reported: {reports:?}"),
    )
}

fn lockdep_wait_in_section() -> R {
    if !lockdep::enabled() {
        return Ok(());
    }
    let ((), reports) = lockdep::capture(|| {
        let s = crate::fence::begin_signalling();
        let f = mock();
        let _ = f.signal();
        f.wait();
        drop(s);
    });
    ensure(
        reports.is_empty(),
        &format!("a wait inside a section reported: {reports:?}"),
    )
}

fn lockdep_primed_resv() -> R {
    if !lockdep::enabled() {
        return Ok(());
    }
    let resv = LockClass::leak("fence_selftest_resv");
    crate::fence::prime_fence_map(resv);
    let ((), legal) = lockdep::capture(|| {
        // Waiting for a fence under the reservation lock is legal.
        take(resv);
        let f = mock();
        let _ = f.signal();
        f.wait();
        drop_lock(resv);
    });
    ensure(
        legal.is_empty(),
        &format!("wait under resv reported: {legal:?}"),
    )?;
    let ((), reports) = lockdep::capture(|| {
        let s = crate::fence::begin_signalling();
        take(resv);
        drop_lock(resv);
        drop(s);
    });
    ensure(
        has_cycle(&reports, resv),
        &format!("taking resv in a signalling section not reported: {reports:?}"),
    )
}

/// An array completes from a member's callback inside a signalling section: lock D,
/// taken by the array's own callback, is recorded as a signalling-path lock.
fn lockdep_array_completion() -> R {
    if !lockdep::enabled() {
        return Ok(());
    }
    let d = LockClass::leak("fence_selftest_D");
    let m = mock();
    let a =
        FenceArray::create(vec![m.clone()], Context::new(), 1, false).map_err(|e| e.to_string())?;
    let ((), reports) = lockdep::capture(|| {
        a.add_callback(move |_: &Fence| {
            take(d);
            drop_lock(d);
        })
        .ok();
        let _ = m.signal();
        let w = mock();
        let _ = w.signal();
        take(d);
        w.wait();
        drop_lock(d);
    });
    ensure(
        has_cycle(&reports, d),
        &format!("array completion not annotated: {reports:?}"),
    )
}

// ---- st-dma-fence-chain -----------------------------------------------------------------

fn chain_of(n: usize) -> Result<(Vec<Fence>, Vec<Fence>), String> {
    let mut fences = Vec::new();
    let mut chains: Vec<Fence> = Vec::new();
    for i in 0..n {
        let f = mock();
        let c = FenceChain::create(chains.last().cloned(), f.clone(), i as u64 + 1)
            .map_err(|e| e.to_string())?;
        fences.push(f);
        chains.push(c);
    }
    Ok((fences, chains))
}

fn chain_sanity() -> R {
    let f = mock();
    let c = FenceChain::create(None, f.clone(), 1).map_err(|e| e.to_string())?;
    c.enable_sw_signaling();
    f.signal().map_err(|e| e.to_string())?;
    ensure(c.is_signaled(), "chain not signalled")
}

fn chain_find_seqno() -> R {
    const N: usize = 64;
    let (_fences, chains) = chain_of(N)?;
    let head = chains.last().unwrap();
    match chain::find_seqno(head, 0) {
        Ok(Some(f)) if Fence::ptr_eq(&f, head) => {}
        _ => return Err("find_seqno(0) must return the head".into()),
    }
    for i in 0..N {
        match chain::find_seqno(head, i as u64 + 1) {
            Ok(Some(f)) if Fence::ptr_eq(&f, &chains[i]) => {}
            other => {
                return Err(format!(
                    "incorrect chain node found for seqno {}: {other:?}",
                    i + 1
                ))
            }
        }
        // A node finds itself, and earlier points through itself.
        match chain::find_seqno(&chains[i], i as u64 + 1) {
            Ok(Some(f)) if Fence::ptr_eq(&f, &chains[i]) => {}
            _ => return Err(format!("node {} did not find itself", i + 1)),
        }
        ensure(
            matches!(
                chain::find_seqno(&chains[i], i as u64 + 2),
                Err(Error::Invalid(_))
            ),
            "found a future point",
        )?;
    }
    ensure(
        matches!(chain::find_seqno(&mock(), 1), Err(Error::Invalid(_))),
        "find_seqno on a non-chain must be EINVAL",
    )
}

fn chain_find_signaled() -> R {
    let (fences, chains) = chain_of(2)?;
    fences[0].signal().map_err(|e| e.to_string())?;
    match chain::find_seqno(&chains[1], 1) {
        Ok(None) => Ok(()),
        Ok(Some(f)) if Fence::ptr_eq(&f, &chains[0]) => {
            Err("incorrect chain node found: the signalled point".into())
        }
        other => Err(format!("find of a signalled point: {other:?}")),
    }
}

fn chain_find_out_of_order() -> R {
    let (fences, chains) = chain_of(3)?;
    fences[1].signal().map_err(|e| e.to_string())?;
    // Point 2 signalled before 1: looking up 2 must land on a node still covering it
    // (the walk skips node 2 and reaches node 1), not on nothing.
    match chain::find_seqno(&chains[2], 2) {
        Ok(Some(f)) if Fence::ptr_eq(&f, &chains[0]) => Ok(()),
        other => Err(format!("incorrect chain node found: {other:?}")),
    }
}

fn chain_find_gap() -> R {
    // Points 2, 4, 6…: looking up an odd point lands on the next even node.
    let mut chains: Vec<Fence> = Vec::new();
    for i in 0..32u64 {
        let c = FenceChain::create(chains.last().cloned(), mock(), 2 * i + 2)
            .map_err(|e| e.to_string())?;
        chains.push(c);
    }
    let head = chains.last().unwrap();
    for i in 0..32u64 {
        for s in [2 * i + 1, 2 * i + 2] {
            match chain::find_seqno(head, s) {
                Ok(Some(f)) if Fence::ptr_eq(&f, &chains[i as usize]) => {}
                other => return Err(format!("gap lookup {s}: {other:?}")),
            }
        }
    }
    Ok(())
}

fn chain_find_race() -> R {
    const N: usize = 256;
    let (fences, chains) = chain_of(N)?;
    let chains = Arc::new(chains);
    let stop = Arc::new(AtomicBool::new(false));
    let end = Instant::now() + Duration::from_millis(400);
    let mut hs = Vec::new();
    for t in 0..2u64 {
        let (chains, stop) = (chains.clone(), stop.clone());
        hs.push(std::thread::spawn(move || -> R {
            let mut rng = Rng(0x9e37_79b9 + t);
            let mut iters = 0;
            while !stop.load(Ordering::Relaxed) && iters < 20_000 && Instant::now() < end {
                let i = (rng.next() % N as u64) as usize;
                let seqno = (rng.next() % (i as u64 + 1)) + 1;
                match chain::find_seqno(&chains[i], seqno) {
                    Ok(None) => {}
                    Ok(Some(f)) => {
                        if f.as_chain().is_none() || f.seqno() < seqno {
                            return Err(format!("found node {} for seqno {seqno}", f.seqno()));
                        }
                    }
                    Err(e) => return Err(format!("find_seqno failed: {e}")),
                }
                iters += 1;
            }
            Ok(())
        }));
    }
    // Signal while they look things up.
    for f in &fences {
        let _ = f.signal();
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().map_err(|_| "finder panicked")??;
    }
    Ok(())
}

fn chain_signal_order(order: &[usize]) -> R {
    let n = order.len();
    let (fences, chains) = chain_of(n)?;
    for c in &chains {
        c.enable_sw_signaling();
    }
    for (k, &i) in order.iter().enumerate() {
        fences[i].signal().map_err(|e| e.to_string())?;
        // Node j is signalled iff fences 0..=j all are.
        let done: Vec<bool> = {
            let mut sig = vec![false; n];
            for &x in &order[..=k] {
                sig[x] = true;
            }
            sig
        };
        for j in 0..n {
            let expect = done[..=j].iter().all(|&b| b);
            if chains[j].is_signaled() != expect {
                return Err(format!(
                    "after signalling {} fences, chain {j} signalled={} expected {expect}",
                    k + 1,
                    chains[j].is_signaled()
                ));
            }
        }
    }
    Ok(())
}

fn chain_signal_forward() -> R {
    chain_signal_order(&(0..16).collect::<Vec<_>>())
}

fn chain_signal_backward() -> R {
    chain_signal_order(&(0..16).rev().collect::<Vec<_>>())
}

fn chain_signal_random() -> R {
    let mut v: Vec<usize> = (0..16).collect();
    Rng(12345).shuffle(&mut v);
    chain_signal_order(&v)
}

fn chain_wait_order(order: Vec<usize>) -> R {
    let n = order.len();
    let (fences, chains) = chain_of(n)?;
    let t = std::thread::spawn(move || {
        for i in order {
            let _ = fences[i].signal();
        }
    });
    let head = chains.last().unwrap();
    let r = head.wait_timeout(Duration::from_secs(5));
    t.join().map_err(|_| "signaller panicked")?;
    r.map_err(|e| format!("wait on chain head failed: {e}"))?;
    ensure(
        chains.iter().all(|c| c.is_signaled()),
        "chain not all signalled",
    )
}

fn chain_wait_forward() -> R {
    chain_wait_order((0..64).collect())
}

fn chain_wait_backward() -> R {
    chain_wait_order((0..64).rev().collect())
}

fn chain_wait_random() -> R {
    let mut v: Vec<usize> = (0..64).collect();
    Rng(777).shuffle(&mut v);
    chain_wait_order(v)
}

fn chain_release_long() -> R {
    // Dropping 100k links must not recurse. Run on a small stack to prove it.
    let h = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let mut head: Option<Fence> = None;
            for i in 0..100_000u64 {
                head = Some(FenceChain::create(head, Fence::stub(), i + 1).expect("chain"));
            }
            drop(head);
        })
        .map_err(|e| e.to_string())?;
    h.join()
        .map_err(|_| "dropping a long chain crashed".to_string())
}

// ---- st-dma-fence-unwrap ----------------------------------------------------------------

fn leaves(f: &Fence) -> Vec<Fence> {
    unwrap(f).collect()
}

fn same_set(got: &[Fence], want: &[&Fence]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want.iter())
            .all(|(a, b)| Fence::ptr_eq(a, b))
}

fn unwrap_array() -> R {
    let (f1, f2) = (mock(), mock());
    let a = FenceArray::create(vec![f1.clone(), f2.clone()], Context::new(), 1, false)
        .map_err(|e| e.to_string())?;
    ensure(same_set(&leaves(&a), &[&f1, &f2]), "array unwrap")
}

fn unwrap_chain() -> R {
    let (f1, f2) = (mock(), mock());
    let c1 = FenceChain::create(None, f1.clone(), 1).map_err(|e| e.to_string())?;
    let c2 = FenceChain::create(Some(c1), f2.clone(), 2).map_err(|e| e.to_string())?;
    ensure(same_set(&leaves(&c2), &[&f2, &f1]), "chain unwrap")
}

fn unwrap_chain_array() -> R {
    let (f1, f2) = (mock(), mock());
    let a = FenceArray::create(vec![f1.clone(), f2.clone()], Context::new(), 1, false)
        .map_err(|e| e.to_string())?;
    let c = FenceChain::create(None, a, 1).map_err(|e| e.to_string())?;
    ensure(same_set(&leaves(&c), &[&f1, &f2]), "chain-of-array unwrap")
}

fn unwrap_merge() -> R {
    let (f1, f2, f3) = (mock(), mock(), mock());
    let m1 = merge(&[f1.clone(), f2.clone()]).map_err(|e| e.to_string())?;
    let m2 = merge(&[m1, f3.clone()]).map_err(|e| e.to_string())?;
    let got = leaves(&m2);
    ensure(got.len() == 3, "merge of merge must hold three leaves")?;
    for f in [&f1, &f2, &f3] {
        ensure(
            got.iter().any(|g| Fence::ptr_eq(g, f)),
            "merged leaf missing",
        )?;
    }
    Ok(())
}

fn unwrap_merge_duplicate() -> R {
    let f = mock();
    let m = merge(&[f.clone(), f.clone()]).map_err(|e| e.to_string())?;
    ensure(
        Fence::ptr_eq(&m, &f),
        "merge of a duplicate must return the fence",
    )
}

fn unwrap_merge_seqno() -> R {
    let ctx = Context::new();
    let (f1, f2) = (mock_at(ctx, 1), mock_at(ctx, 2));
    let f3 = mock();
    let m = merge(&[f1, f2.clone(), f3.clone()]).map_err(|e| e.to_string())?;
    let got = leaves(&m);
    ensure(got.len() == 2, "merge must keep one fence per context")?;
    ensure(
        got.iter().any(|g| Fence::ptr_eq(g, &f2)) && got.iter().any(|g| Fence::ptr_eq(g, &f3)),
        "merge must keep the newest seqno",
    )
}

fn unwrap_merge_order() -> R {
    let (f1, f2) = (mock(), mock());
    let a1 = merge(&[f1.clone(), f2.clone()]).map_err(|e| e.to_string())?;
    let a2 = merge(&[f2.clone(), f1.clone()]).map_err(|e| e.to_string())?;
    let (l1, l2) = (leaves(&a1), leaves(&a2));
    ensure(
        l1.len() == 2
            && l2.len() == 2
            && l1.iter().zip(l2.iter()).all(|(a, b)| Fence::ptr_eq(a, b)),
        "merge order must not depend on input order",
    )
}

fn unwrap_merge_complex() -> R {
    let (f1, f2, f3, f4) = (mock(), mock(), mock(), mock());
    let a1 = FenceArray::create(vec![f1.clone(), f2.clone()], Context::new(), 1, false)
        .map_err(|e| e.to_string())?;
    let a2 = FenceArray::create(vec![f3.clone(), f4.clone()], Context::new(), 1, false)
        .map_err(|e| e.to_string())?;
    let c1 = FenceChain::create(None, a1.clone(), 1).map_err(|e| e.to_string())?;
    let c2 = FenceChain::create(Some(c1.clone()), a2.clone(), 2).map_err(|e| e.to_string())?;
    let m = merge(&[c2, a1, f1.clone(), f4.clone()]).map_err(|e| e.to_string())?;
    let got = leaves(&m);
    ensure(
        got.len() == 4,
        &format!("complex merge has {} leaves", got.len()),
    )?;
    for f in [&f1, &f2, &f3, &f4] {
        ensure(
            got.iter().any(|g| Fence::ptr_eq(g, f)),
            "complex merge lost a leaf",
        )?;
    }
    Ok(())
}

fn unwrap_merge_signaled() -> R {
    let (f1, f2) = (mock(), mock());
    f1.signal_timestamp(100).map_err(|e| e.to_string())?;
    f2.signal_timestamp(200).map_err(|e| e.to_string())?;
    let m = merge(&[f1, f2]).map_err(|e| e.to_string())?;
    ensure(
        m.is_signaled() && m.timestamp() == Some(200) && m.context() != Context::STUB,
        "merge of signalled fences must be a private stub with the newest timestamp",
    )?;
    let f3 = mock();
    let m = merge(&[Fence::stub(), f3.clone()]).map_err(|e| e.to_string())?;
    ensure(
        Fence::ptr_eq(&m, &f3),
        "merge with one pending must return it",
    )
}

// ---------------------------------------------------------------------------------------
// Callbacks: no sleeping there, no waiting for oneself; timeouts on every path
// ---------------------------------------------------------------------------------------

/// How long a scenario that used to hang may take before it counts as hung.
const HANG_LIMIT: Duration = Duration::from_secs(10);

/// Run `f` on a fresh thread under a lockdep capture; returns its result and the reports
/// it raised, or `Err` if it panicked or did not finish within [`HANG_LIMIT`] (the thread
/// is then left behind: a hang becomes a failure instead of a stuck run).
fn bounded<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<(T, Vec<lockdep::Report>), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("fence-selftest-bounded".into())
        .spawn(move || {
            let r = lockdep::capture(f);
            let _ = tx.send(r);
        })
        .map_err(|e| format!("{what}: cannot spawn a thread: {e}"))?;
    rx.recv_timeout(HANG_LIMIT).map_err(|e| match e {
        std::sync::mpsc::RecvTimeoutError::Timeout => {
            format!("{what}: still running after {HANG_LIMIT:?} (hung)")
        }
        std::sync::mpsc::RecvTimeoutError::Disconnected => format!("{what}: panicked"),
    })
}

/// The reports of `kind` SleepInAtomic naming the fence callback section (and `class`).
fn sleep_reports(reports: &[lockdep::Report], class: Option<&str>) -> usize {
    reports
        .iter()
        .filter(|r| {
            r.kind == ReportKind::SleepInAtomic
                && r.classes
                    .iter()
                    .any(|c| c == crate::fence::CALLBACK_SECTION)
                && class.is_none_or(|n| r.classes.iter().any(|c| c == n))
        })
        .count()
}

/// With lockdep on, exactly `n` sleep-in-callback reports (naming `class`, if given), and
/// nothing else; with lockdep off, nothing is checked.
fn expect_sleeps(reports: &[lockdep::Report], n: usize, class: Option<&str>) -> R {
    if !lockdep::enabled() {
        return Ok(());
    }
    let got = sleep_reports(reports, class);
    ensure(
        got == n && reports.iter().all(|r| r.kind == ReportKind::SleepInAtomic),
        &format!(
            "expected {n} SleepInAtomic report(s) on the fence callback{}, got {:?}",
            class.map(|c| format!(" naming {c}")).unwrap_or_default(),
            reports
                .iter()
                .map(|r| (r.kind, r.classes.clone()))
                .collect::<Vec<_>>()
        ),
    )
}

/// Register `cb` on a fresh fence, signal it on a bounded thread, and return what the
/// callback produced and the reports.
fn in_own_callback<T: Send + 'static>(
    what: &str,
    cb: impl FnOnce(&Fence) -> T + Send + 'static,
) -> Result<(Option<T>, Vec<lockdep::Report>), String> {
    bounded(what, move || {
        let f = mock();
        let out = Arc::new(parking_lot::Mutex::new(None));
        let o = out.clone();
        f.add_callback(move |f: &Fence| *o.lock() = Some(cb(f)))
            .map_err(|_| ())
            .expect("fresh fence");
        f.signal().expect("first signal");
        let r = out.lock().take();
        r
    })
}

/// A callback that waits with a timeout on its own fence: the fence is signalled, so the
/// wait returns at once with time to spare (it used to block forever, waiting for the
/// callback run it is part of); lockdep reports the wait as sleeping in a callback.
fn callback_timed_wait_own_fence() -> R {
    let (out, reports) = in_own_callback("timed wait in own callback", |f: &Fence| {
        (
            f.wait_timeout(Duration::from_secs(60)),
            f.wait_timeout(Duration::ZERO),
            f.wait_timeout_interruptible(
                Duration::from_secs(60),
                &crate::interrupt::Interrupt::new(),
            ),
            wait_any_timeout(std::slice::from_ref(f), Some(Duration::from_secs(60)), None),
        )
    })?;
    let (a, b, c, d) = out.ok_or("the callback did not run")?;
    ensure(
        a.as_ref().is_ok_and(|r| *r > Duration::from_secs(50)),
        &format!("wait_timeout(60 s) in own callback: {a:?}"),
    )?;
    ensure(
        b.is_ok(),
        &format!("wait_timeout(0) in own callback: {b:?}"),
    )?;
    ensure(
        c.as_ref().is_ok_and(|r| *r > Duration::from_secs(50)),
        &format!("interruptible wait in own callback: {c:?}"),
    )?;
    ensure(
        d.as_ref().is_ok_and(|(i, _)| *i == 0),
        &format!("wait_any in own callback: {d:?}"),
    )?;
    expect_sleeps(&reports, 4, None)
}

/// An untimed wait on its own fence from inside its callback returns (the fence is
/// signalled, as the kernel's wait would see) instead of deadlocking; reported.
fn callback_untimed_wait_own_fence() -> R {
    let (out, reports) = in_own_callback("untimed wait in own callback", |f: &Fence| {
        f.wait();
        let w = f.wait_interruptible(&crate::interrupt::Interrupt::new());
        let any = crate::fence::wait_any(std::slice::from_ref(f), None);
        (f.is_signaled(), w, any)
    })?;
    let (signalled, w, any) = out.ok_or("the callback did not run")?;
    ensure(
        signalled,
        "the fence is not signalled inside its own callback",
    )?;
    ensure(w.is_ok(), &format!("wait_interruptible: {w:?}"))?;
    ensure(matches!(any, Ok(0)), &format!("wait_any: {any:?}"))?;
    expect_sleeps(&reports, 3, None)
}

/// A callback of a nested run (a callback of `a` signals `b`, whose callback waits on
/// `a`): `a`'s callbacks are still running on this thread, so the wait must not wait for
/// them.
fn callback_nested_wait_outer_fence() -> R {
    let ((ok, done), reports) = bounded("wait on the outer fence from a nested callback", || {
        let a = mock();
        let b = mock();
        let done = Arc::new(AtomicBool::new(false));
        let (a2, d) = (a.clone(), done.clone());
        b.add_callback(move |_: &Fence| {
            let r = a2.wait_timeout(Duration::from_secs(60));
            d.store(r.is_ok(), Ordering::SeqCst);
        })
        .map_err(|_| ())
        .expect("fresh fence");
        let b2 = b.clone();
        a.add_callback(move |_: &Fence| {
            let _ = b2.signal();
        })
        .map_err(|_| ())
        .expect("fresh fence");
        let ok = a.signal().is_ok() && b.is_signaled();
        (ok, done.load(Ordering::SeqCst))
    })?;
    ensure(ok, "signal failed")?;
    ensure(done, "the nested wait did not return Ok")?;
    expect_sleeps(&reports, 1, None)
}

/// `remove_callback` and polling a future of the fence from inside its own callback
/// neither deadlock: nothing is pending any more (false), the future is ready.
fn callback_own_remove_and_poll() -> R {
    let (out, reports) = bounded("remove_callback/poll in own callback", || {
        let f = mock();
        let slot = Arc::new(parking_lot::Mutex::new(None));
        let out = Arc::new(parking_lot::Mutex::new(None));
        let (s, o) = (slot.clone(), out.clone());
        let id = f
            .add_callback(move |f: &Fence| {
                let id = s.lock().take().expect("id stored");
                let removed = f.remove_callback(id);
                let mut fut = std::pin::pin!(f.wait_async());
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                let ready = fut.as_mut().poll(&mut cx).is_ready();
                *o.lock() = Some((removed, ready));
            })
            .map_err(|_| ())
            .expect("fresh fence");
        *slot.lock() = Some(id);
        f.signal().expect("first signal");
        let r = out.lock().take();
        r
    })?;
    let (removed, ready) = out.ok_or("the callback did not run")?;
    ensure(!removed, "remove_callback from own callback returned true")?;
    ensure(
        ready,
        "a future of the fence polled in its callback is not ready",
    )?;
    expect_sleeps(&reports, 0, None)
}

/// A timed wait on a signalled fence whose callback is still running on another thread
/// returns within its timeout, with success (the fence is signalled); an untimed wait
/// returns once the callback finished.
fn timed_wait_while_callbacks_run() -> R {
    let ((timed, untimed_after_release), _) = bounded("timed wait during a long callback", || {
        let f = mock();
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        f.add_callback(move |_: &Fence| {
            let _ = entered_tx.send(());
            // Blocks until the test lets it go (not lockdep-tracked: no report).
            let _ = release_rx.recv_timeout(Duration::from_secs(30));
        })
        .map_err(|_| ())
        .expect("fresh fence");
        let g = f.clone();
        let signaller = std::thread::spawn(move || g.signal());
        let _ = entered_rx.recv_timeout(Duration::from_secs(30));
        let t0 = Instant::now();
        let timed = f.wait_timeout(Duration::from_millis(50));
        let took = t0.elapsed();
        let _ = release_tx.send(());
        f.wait();
        let ok = signaller.join().is_ok_and(|r| r.is_ok());
        ((timed, took), ok && f.is_complete())
    })?;
    let (res, took) = timed;
    ensure(
        matches!(res, Ok(d) if d == crate::fence::MIN_REMAINING),
        &format!("a timed wait during the callback run returned {res:?}"),
    )?;
    ensure(
        took < Duration::from_secs(20),
        &format!("a 50 ms wait returned after {took:?}"),
    )?;
    ensure(untimed_after_release, "untimed wait or signal failed")
}

/// `might_wait` in a callback: reported on the first run, naming the callback section.
fn callback_might_wait() -> R {
    let (out, reports) = in_own_callback("might_wait in a callback", |_: &Fence| {
        crate::fence::might_wait();
    })?;
    ensure(out.is_some(), "the callback did not run")?;
    expect_sleeps(&reports, 1, None)
}

/// A blocking lock in a callback: a tracked mutex, and a reservation lock; each is
/// reported (SleepInAtomic naming the lock's class) on the first run.
fn callback_blocking_lock() -> R {
    static M_CLASS: LockClass = LockClass::new("fence_selftest_cb_mutex");
    let (out, reports) = in_own_callback("a blocking mutex in a callback", |_: &Fence| {
        let m = lockdep::sync::Mutex::new(&M_CLASS, 0u32);
        *m.lock() += 1;
        let v = *m.lock();
        v
    })?;
    ensure(out == Some(1), &format!("the callback returned {out:?}"))?;
    expect_sleeps(&reports, 2, Some("fence_selftest_cb_mutex"))?;
    let (out, reports) = in_own_callback("a resv lock in a callback", |_: &Fence| {
        let resv = crate::resv::Resv::new();
        let g = resv.lock_no_ctx();
        drop(g);
    })?;
    ensure(out.is_some(), "the callback did not run")?;
    if lockdep::enabled() {
        // Also a lock-order report (the reservation lock inside a signalling section):
        // check for the sleep only.
        ensure(
            sleep_reports(&reports, None) == 1,
            &format!(
                "expected one SleepInAtomic report for the resv lock, got {:?}",
                reports
                    .iter()
                    .map(|r| (r.kind, r.classes.clone()))
                    .collect::<Vec<_>>()
            ),
        )?;
    }
    Ok(())
}

/// Non-blocking work in a callback is clean: a trylock, an acquire context begun and
/// ended, signalling another fence, adding a callback to another fence, peeking, setting
/// a deadline.
fn callback_nonblocking_work() -> R {
    static T_CLASS: LockClass = LockClass::new("fence_selftest_cb_trylock");
    static WW: crate::ww::WwClass =
        crate::ww::WwClass::wait_die("fence_selftest_cb_ww", "fence_selftest_cb_ww_acquire");
    let (out, reports) = in_own_callback("non-blocking work in a callback", |f: &Fence| {
        let m = lockdep::sync::Mutex::new(&T_CLASS, 0u32);
        let took = m.try_lock().map(|mut g| *g += 1).is_some();
        // Starting (and ending) an acquire context takes no lock: not a sleep.
        drop(crate::ww::AcquireCtx::new(&WW));
        let other = mock();
        let (seen, cb) = seen_cb();
        let added = other.add_callback(cb).is_ok();
        other.set_deadline(crate::fence::ktime_now());
        let signalled = other.signal().is_ok() && f.is_signaled();
        let own_add = f.add_callback(|_: &Fence| {}).is_err();
        (took, added, signalled, own_add, seen)
    })?;
    let (took, added, signalled, own_add, seen) = out.ok_or("the callback did not run")?;
    ensure(
        took && added && signalled && own_add,
        "a non-blocking step failed",
    )?;
    ensure(
        seen.load(Ordering::SeqCst),
        "the other fence's callback did not run",
    )?;
    if lockdep::enabled() {
        ensure(
            reports.is_empty(),
            &format!(
                "non-blocking work in a callback reported: {:?}",
                reports.iter().map(|r| r.text.clone()).collect::<Vec<_>>()
            ),
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Detached ops after signal (the kernel since 6.17)
// ---------------------------------------------------------------------------------------

/// Ops that count every call after the fence signalled, and their own drop.
struct Counting {
    calls_after: Arc<AtomicUsize>,
    signalled: Arc<AtomicBool>,
    releases: Arc<AtomicUsize>,
    drops: Arc<AtomicUsize>,
}

impl Counting {
    fn note(&self) {
        if self.signalled.load(Ordering::SeqCst) {
            self.calls_after.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl FenceOps for Counting {
    fn driver_name(&self) -> &str {
        self.note();
        "counting-driver"
    }
    fn timeline_name(&self) -> &str {
        self.note();
        "counting-timeline"
    }
    fn enable_signaling(&self, _f: &Fence) -> bool {
        self.note();
        true
    }
    fn signaled(&self, _f: &Fence) -> bool {
        self.note();
        false
    }
    fn set_deadline(&self, _f: &Fence, _d: u64) {
        self.note();
    }
    fn release(&self) {
        self.releases.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Before signal the names come from the ops; after, they read `detached-driver` /
/// `signaled-timeline`, and no op is called any more (names, peek, enable, deadline,
/// Debug); `release` and the drop of the ops come at the last put, not at signal.
fn ops_detached_after_signal() -> R {
    let calls_after = Arc::new(AtomicUsize::new(0));
    let signalled = Arc::new(AtomicBool::new(false));
    let releases = Arc::new(AtomicUsize::new(0));
    let drops = Arc::new(AtomicUsize::new(0));
    let f = Fence::new(
        Counting {
            calls_after: calls_after.clone(),
            signalled: signalled.clone(),
            releases: releases.clone(),
            drops: drops.clone(),
        },
        Context::new(),
        1,
    );
    ensure(
        f.driver_name() == "counting-driver" && f.timeline_name() == "counting-timeline",
        &format!(
            "names before signal: {} / {}",
            f.driver_name(),
            f.timeline_name()
        ),
    )?;
    ensure(!f.is_signaled(), "signalled too early")?;
    f.signal().map_err(|e| format!("signal: {e}"))?;
    signalled.store(true, Ordering::SeqCst);
    ensure(
        f.driver_name() == crate::fence::DETACHED_DRIVER
            && f.timeline_name() == crate::fence::SIGNALED_TIMELINE,
        &format!(
            "names after signal: {} / {}",
            f.driver_name(),
            f.timeline_name()
        ),
    )?;
    ensure(
        f.driver_name() == "detached-driver" && f.timeline_name() == "signaled-timeline",
        "the kernel's spelling",
    )?;
    let dbg = format!("{f:?}");
    ensure(
        dbg.contains("detached-driver") && !dbg.contains("counting"),
        &format!("Debug after signal: {dbg}"),
    )?;
    let _ = f.is_signaled();
    let _ = f.status();
    f.enable_sw_signaling();
    f.set_deadline(crate::fence::ktime_now());
    let _ = f.add_callback(|_: &Fence| {});
    f.wait();
    let _ = f.wait_timeout(Duration::ZERO);
    ensure(
        calls_after.load(Ordering::SeqCst) == 0,
        &format!(
            "{} op call(s) after signal",
            calls_after.load(Ordering::SeqCst)
        ),
    )?;
    let g = f.clone();
    drop(f);
    ensure(
        releases.load(Ordering::SeqCst) == 0 && drops.load(Ordering::SeqCst) == 0,
        "ops released or dropped before the last put",
    )?;
    drop(g);
    ensure(
        releases.load(Ordering::SeqCst) == 1 && drops.load(Ordering::SeqCst) == 1,
        &format!(
            "at the last put: {} release(s), {} drop(s) of the ops (want 1, 1)",
            releases.load(Ordering::SeqCst),
            drops.load(Ordering::SeqCst)
        ),
    )
}

/// Readers of the names racing with the signal: every read is a valid name (the ops'
/// before, the detached ones after), and once a reader has seen the fence signalled it
/// only reads the detached names. Bounded by rounds and about a second.
fn names_vs_signal_stress() -> R {
    let start = Instant::now();
    let bad = Arc::new(AtomicUsize::new(0));
    let mut rounds = 0;
    while rounds < 2000 && start.elapsed() < Duration::from_secs(1) {
        rounds += 1;
        let f = mock_at(Context::new(), rounds);
        let go = Arc::new(Barrier::new(3));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (f, go, bad) = (f.clone(), go.clone(), bad.clone());
                std::thread::spawn(move || {
                    go.wait();
                    for _ in 0..200 {
                        let seen = f.test_signaled_flag();
                        let (d, t) = (f.driver_name(), f.timeline_name());
                        let valid_d = d == "mock" || d == "detached-driver";
                        let valid_t = t == "mock" || t == "signaled-timeline";
                        let after_ok =
                            !seen || (d == "detached-driver" && t == "signaled-timeline");
                        if !(valid_d && valid_t && after_ok) {
                            bad.fetch_add(1, Ordering::SeqCst);
                        }
                        if seen {
                            break;
                        }
                    }
                })
            })
            .collect();
        go.wait();
        let _ = f.signal();
        for r in readers {
            r.join().map_err(|_| "a reader panicked".to_string())?;
        }
    }
    ensure(
        bad.load(Ordering::SeqCst) == 0,
        &format!("{} invalid name read(s)", bad.load(Ordering::SeqCst)),
    )
}
