use crate::fence::{Context, Fence};
use crate::testing::Named;

const TEST_OPS: Named = Named {
    driver: "selftest",
    timeline: "resv",
};

fn fence_on(ctx: Context, seqno: u64) -> Fence {
    Fence::new(TEST_OPS, ctx, seqno)
}

fn new_fence() -> Fence {
    fence_on(Context::new(), 1)
}
use super::*;
use proptest::prelude::*;
use std::sync::Arc;

#[test]
fn lock_errors_are_the_kernels() {
    let (a, b) = (Resv::new(), Resv::new());
    let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
    let g = a.lock(&ctx).unwrap();
    let e = a.lock(&ctx).unwrap_err();
    assert!(matches!(e, Error::Already));
    assert_eq!(e.errno(), 114);
    assert!(a.is_locked_by(&ctx) && !b.is_locked_by(&ctx));
    drop(g);
    drop(b.lock(&ctx).unwrap());
    ctx.fini().unwrap();
}

#[test]
fn unlocked_readers_see_consistent_lists_while_a_writer_churns() {
    let r = Arc::new(Resv::new());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (r, stop) = (r.clone(), stop.clone());
        std::thread::spawn(move || {
            let ctxs: Vec<Context> = (0..4).map(|_| Context::new()).collect();
            let mut seq = 1;
            let deadline = Instant::now() + Duration::from_millis(200);
            while Instant::now() < deadline {
                let mut g = r.lock_no_ctx().unwrap();
                g.reserve_fences(1).unwrap();
                let f = fence_on(ctxs[seq as usize % 4], seq);
                g.add_fence(&f, Usage::Read).unwrap();
                drop(g);
                if seq % 3 == 0 {
                    f.signal().unwrap();
                }
                seq += 1;
            }
            stop.store(true, Ordering::SeqCst);
            seq
        })
    };
    let mut reads = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let v = r.get_fences(Usage::Bookkeep);
        // At most one live fence per context: the replacement rule keeps the list short.
        let mut ctxs: Vec<_> = v.iter().map(|f| f.context()).collect();
        ctxs.sort();
        ctxs.dedup();
        assert!(v.len() <= 8, "list stays short: {}", v.len());
        reads += 1;
    }
    let adds = writer.join().unwrap();
    assert!(reads > 0 && adds > 1);
}

#[derive(Debug, Clone)]
enum Op {
    Reserve(usize),
    Add { ctx: usize, seq: u64, usage: u8 },
    Signal(usize),
    Unlock,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..3).prop_map(Op::Reserve),
        (0usize..3, 0u64..6, 0u8..4).prop_map(|(ctx, seq, usage)| Op::Add { ctx, seq, usage }),
        (0usize..16).prop_map(Op::Signal),
        Just(Op::Unlock),
    ]
}

fn usage_of(u: u8) -> Usage {
    [Usage::Kernel, Usage::Write, Usage::Read, Usage::Bookkeep][u as usize]
}

proptest! {
    /// Random lock / reserve / add / signal / iterate / unlock sequences against a plain
    /// model of the kernel's rules.
    #[test]
    fn matches_a_simple_model(ops in proptest::collection::vec(op(), 1..60)) {
        let r = Resv::new();
        let ctxs: Vec<Context> = (0..3).map(|_| Context::new()).collect();
        let mut all: Vec<Fence> = Vec::new();
        // Model: entries and the reserved limit.
        let mut model: Vec<(Fence, Usage)> = Vec::new();
        let mut reserved_to = 0usize;
        let mut g = Some(r.lock_no_ctx().unwrap());
        for o in ops {
            match o {
                Op::Unlock => {
                    if g.take().is_some() {
                        reserved_to = model.len();
                    } else {
                        g = Some(r.lock_no_ctx().unwrap());
                    }
                }
                Op::Reserve(n) => {
                    let Some(gr) = g.as_mut() else { continue };
                    let res = gr.reserve_fences(n);
                    if n == 0 {
                        prop_assert!(matches!(res, Err(Error::Invalid(_))));
                    } else {
                        prop_assert!(res.is_ok());
                        // Growing may prune signalled entries; mirror through the real list.
                        let now: Vec<Fence> = gr.fences(Usage::Bookkeep).into_iter().map(|e| e.0).collect();
                        if now.len() != model.len() {
                            model.retain(|(f, _)| !f.is_signaled());
                        }
                        reserved_to = reserved_to.max(model.len() + n);
                    }
                }
                Op::Add { ctx, seq, usage } => {
                    let Some(gr) = g.as_mut() else { continue };
                    let f = fence_on(ctxs[ctx], seq);
                    all.push(f.clone());
                    let u = usage_of(usage);
                    let slot = model.iter().position(|(old, ou)| {
                        (old.context() == f.context() && *ou >= u && crate::fence::is_later_or_same(&f, old))
                            || old.is_signaled()
                    });
                    let (res, _) = lockdep::capture(|| gr.add_fence(&f, u));
                    match slot {
                        Some(i) => { prop_assert!(res.is_ok()); model[i] = (f, u); }
                        None if model.len() < reserved_to => { prop_assert!(res.is_ok()); model.push((f, u)); }
                        None => prop_assert!(matches!(res, Err(Error::Invalid(_)))),
                    }
                }
                Op::Signal(i) => {
                    if let Some(f) = all.get(i) {
                        let _ = f.signal();
                    }
                }
            }
            // Locked view equals the model, in order; unlocked view is its unsignalled part.
            if let Some(gr) = g.as_ref() {
                let got = gr.fences(Usage::Bookkeep);
                prop_assert_eq!(got.len(), model.len());
                for ((a, ua), (b, ub)) in got.iter().zip(model.iter()) {
                    prop_assert!(Fence::ptr_eq(a, b));
                    prop_assert_eq!(ua, ub);
                }
            }
            for u in [Usage::Kernel, Usage::Write, Usage::Read, Usage::Bookkeep] {
                let want = model.iter().filter(|(f, mu)| *mu <= u && !f.is_signaled()).count();
                prop_assert_eq!(r.get_fences(u).len(), want);
                prop_assert_eq!(r.test_signaled(u), want == 0);
            }
        }
        drop(g);
        for f in all {
            let _ = f.signal();
        }
    }
}

#[test]
fn locked_fences_include_signalled_unlocked_do_not() {
    let r = Resv::new();
    let f = new_fence();
    let mut g = r.lock_no_ctx().unwrap();
    g.reserve_fences(1).unwrap();
    g.add_fence(&f, Usage::Kernel).unwrap();
    f.signal().unwrap();
    assert_eq!(g.fences(Usage::Kernel).len(), 1);
    drop(g);
    assert!(r.get_fences(Usage::Kernel).is_empty());
    assert_eq!(r.num_fences(), 1);
}

/// A replaced fence is released (its reference dropped) at the latest when its slot is
/// replaced again, when the array is replaced, or when the object drops: the batched grace
/// period retains at most one fence per slot.
#[test]
fn replaced_fences_are_released_within_one_pass() {
    let ctx = crate::fence::Context::new();
    let r = Resv::new();
    let add = |f: &Fence| {
        let mut g = r.lock_no_ctx().unwrap();
        g.reserve_fences(1).unwrap();
        g.add_fence(f, Usage::Read).unwrap();
    };
    let (f1, f2, f3) = (fence_on(ctx, 1), fence_on(ctx, 2), fence_on(ctx, 3));
    add(&f1);
    assert_eq!(f1.ref_count(), 2, "ours and the published slot");
    add(&f2);
    assert_eq!(f1.ref_count(), 2, "replaced: waits in the spare cell");
    add(&f3);
    assert_eq!(
        f1.ref_count(),
        1,
        "the next replace of the slot reclaimed it"
    );
    assert_eq!(f2.ref_count(), 2);
    // Growing the array leaves the waiting fence to the old array, which drops it.
    {
        let mut g = r.lock_no_ctx().unwrap();
        g.reserve_fences(64).unwrap();
    }
    assert_eq!(f2.ref_count(), 1);
    assert_eq!(f3.ref_count(), 2);
    let f4 = fence_on(ctx, 4);
    add(&f4);
    assert_eq!(f3.ref_count(), 2, "replaced: waits in the spare cell");
    drop(r);
    assert_eq!(
        f3.ref_count(),
        1,
        "dropping the object releases the waiting fence"
    );
    assert_eq!(f4.ref_count(), 1);
}

/// A reservation too large to allocate is `ENOMEM` with nothing changed, as the kernel's
/// failed krealloc; it used to panic ("capacity overflow") or abort.
#[test]
fn huge_reserve_is_enomem_and_changes_nothing() {
    let r = Resv::new();
    let f = new_fence();
    let mut g = r.lock_no_ctx().unwrap();
    g.reserve_fences(1).unwrap();
    g.add_fence(&f, Usage::Write).unwrap();
    let free = g.reserved_free();
    for n in [usize::MAX / 2, usize::MAX - 1, 1 << 60, 1 << 44] {
        let e = g.reserve_fences(n).unwrap_err();
        assert_eq!(e.errno(), 12, "reserve_fences({n}): {e:?}");
        assert_eq!(g.reserved_free(), free);
        assert_eq!(g.fences(Usage::Bookkeep).len(), 1);
    }
    // Still usable.
    g.reserve_fences(2).unwrap();
    drop(g);
    f.signal().unwrap();
}
