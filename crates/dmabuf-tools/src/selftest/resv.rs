//! Self-test scenarios for reservation objects: the semantics of the kernel's
//! `st-dma-resv` (sanity, signalling, locked and unlocked iteration, get_fences, for
//! every usage) plus the rules of this module (replacement, reservations, singletons,
//! waits, multi-object locking).

use crate::error::Error;
use crate::fence::{Context, Fence, FenceOps};
use crate::resv::exec::{self, Exec};
use crate::resv::{Resv, Usage, RESERVATION_WW_CLASS};
use crate::ww::AcquireCtx;
use lockdep::selftest::Case;
use std::time::Duration;

use crate::selftest::{ensure, R};

/// Every dma-resv scenario.
pub(crate) fn cases() -> Vec<Case> {
    case_table![
        "dma-resv/sanity" => sanity,
        "dma-resv/signaling" => signaling,
        "dma-resv/for-each" => for_each,
        "dma-resv/for-each-unlocked" => for_each_unlocked,
        "dma-resv/get-fences" => get_fences,
        "dma-resv/usage-order" => usage_order,
        "dma-resv/replace-rule" => replace_rule,
        "dma-resv/signalled-slot-reused" => signalled_slot_reused,
        "dma-resv/reserve-zero" => reserve_zero,
        "dma-resv/reservations-die-at-unlock" => reservations_die,
        "dma-resv/container-refused" => container_refused,
        "dma-resv/singleton" => singleton,
        "dma-resv/wait-timeout" => wait_timeout,
        "dma-resv/restart-on-grow" => restart_on_grow,
        "dma-resv/replace-fences" => replace_fences,
        "dma-resv/copy-fences" => copy_fences,
        "dma-resv/deadline" => deadline,
        "dma-resv/proof-of-other-object" => proof_other,
        "dma-resv/exec-dedup" => exec_dedup,
        "dma-resv/exec-contention" => exec_contention,
        lockdep_only "dma-resv/acquire-ctx-in-signalling-section" =>
            acquire_ctx_in_signalling_section,
    ]
}

/// The ops of the reservation scenarios' fences: driver `"selftest"`, timeline `"resv"`
/// (also used by the stress tests in `tests/buf_cases.rs`).
pub const TEST_OPS: crate::testing::Named = crate::testing::Named {
    driver: "selftest",
    timeline: "resv",
};

/// An unsignalled test fence at `seqno` on `ctx`.
pub(crate) fn fence_on(ctx: Context, seqno: u64) -> Fence {
    Fence::new(TEST_OPS, ctx, seqno)
}

/// An unsignalled test fence on a context of its own.
pub(crate) fn new_fence() -> Fence {
    fence_on(Context::new(), 1)
}

const USAGES: [Usage; 4] = [Usage::Kernel, Usage::Write, Usage::Read, Usage::Bookkeep];

fn sanity() -> R {
    let r = Resv::new();
    ensure(!r.is_locked(), "new object is unlocked")?;
    ensure(r.num_fences() == 0, "new object has no fences")?;
    let f = new_fence();
    {
        let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
        ensure(r.is_locked(), "locked after lock")?;
        ensure(r.try_lock().is_none(), "trylock of a held lock fails")?;
        g.reserve_fences(1).map_err(|e| e.to_string())?;
        g.add_fence(&f, Usage::Write).map_err(|e| e.to_string())?;
        let d = g.describe();
        ensure(
            d == "\twrite fence: selftest resv seq 1 unsignalled\n",
            &format!("describe: {d:?}"),
        )?;
    }
    ensure(!r.is_locked(), "unlocked after the guard drops")?;
    f.signal().map_err(|e| e.to_string())?;
    Ok(())
}

/// For each usage: a fence added with it is seen by queries of that usage and weaker,
/// until it signals.
fn signaling() -> R {
    for u in USAGES {
        let r = Resv::new();
        let f = new_fence();
        {
            let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
            g.reserve_fences(1).map_err(|e| e.to_string())?;
            g.add_fence(&f, u).map_err(|e| e.to_string())?;
        }
        ensure(
            !r.test_signaled(u),
            &format!("{u:?}: unsignalled fence seen"),
        )?;
        f.signal().map_err(|e| e.to_string())?;
        ensure(
            r.test_signaled(u),
            &format!("{u:?}: signalled after signal"),
        )?;
    }
    Ok(())
}

/// Locked iteration returns each fence once, with its usage, signalled or not.
fn for_each() -> R {
    for u in USAGES {
        let r = Resv::new();
        let f = new_fence();
        let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
        g.reserve_fences(1).map_err(|e| e.to_string())?;
        g.add_fence(&f, u).map_err(|e| e.to_string())?;
        f.signal().map_err(|e| e.to_string())?;
        let v = g.fences(Usage::Bookkeep);
        ensure(v.len() == 1, "one fence")?;
        ensure(Fence::ptr_eq(&v[0].0, &f), "the fence added")?;
        ensure(v[0].1 == u, "with its usage")?;
    }
    Ok(())
}

/// Unlocked iteration skips signalled fences and starts with the restarted mark.
fn for_each_unlocked() -> R {
    for u in USAGES {
        let r = Resv::new();
        let (f, s) = (new_fence(), new_fence());
        {
            let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
            g.reserve_fences(2).map_err(|e| e.to_string())?;
            g.add_fence(&s, u).map_err(|e| e.to_string())?;
            g.add_fence(&f, u).map_err(|e| e.to_string())?;
        }
        s.signal().map_err(|e| e.to_string())?;
        let mut it = r.iter_unlocked(Usage::Bookkeep);
        let first = it.next().ok_or("one fence expected")?;
        ensure(
            it.is_restarted(),
            "first fence of a walk is marked restarted",
        )?;
        ensure(
            Fence::ptr_eq(&first.0, &f) && first.1 == u,
            "the unsignalled one",
        )?;
        ensure(it.next().is_none(), "signalled fences are skipped")?;
        f.signal().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn get_fences() -> R {
    for u in USAGES {
        let r = Resv::new();
        let f = new_fence();
        {
            let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
            g.reserve_fences(1).map_err(|e| e.to_string())?;
            g.add_fence(&f, u).map_err(|e| e.to_string())?;
        }
        let v = r.get_fences(u);
        ensure(
            v.len() == 1 && Fence::ptr_eq(&v[0], &f),
            "get_fences returns it",
        )?;
        f.signal().map_err(|e| e.to_string())?;
        ensure(r.get_fences(u).is_empty(), "not once signalled")?;
    }
    Ok(())
}

/// A query for usage U returns usages <= U.
fn usage_order() -> R {
    let r = Resv::new();
    let fs: Vec<Fence> = USAGES.iter().map(|_| new_fence()).collect();
    {
        let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
        g.reserve_fences(4).map_err(|e| e.to_string())?;
        for (f, u) in fs.iter().zip(USAGES) {
            g.add_fence(f, u).map_err(|e| e.to_string())?;
        }
    }
    for (i, u) in USAGES.iter().enumerate() {
        let n = r.get_fences(*u).len();
        ensure(
            n == i + 1,
            &format!("{u:?}: {n} fences, expected {}", i + 1),
        )?;
    }
    ensure(Usage::rw(true) == Usage::Read, "a write waits for readers")?;
    ensure(Usage::rw(false) == Usage::Write, "a read waits for writers")?;
    for f in fs {
        f.signal().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Same context, equal-or-weaker old usage, later-or-same new fence: overwritten.
fn replace_rule() -> R {
    let r = Resv::new();
    let ctx = Context::new();
    let (w1, r2, w3) = (fence_on(ctx, 1), fence_on(ctx, 2), fence_on(ctx, 3));
    let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
    g.reserve_fences(1).map_err(|e| e.to_string())?;
    g.add_fence(&w1, Usage::Write).map_err(|e| e.to_string())?;
    // A READ never replaces its own context's WRITE: appended (needs a slot).
    g.reserve_fences(1).map_err(|e| e.to_string())?;
    g.add_fence(&r2, Usage::Read).map_err(|e| e.to_string())?;
    ensure(
        g.fences(Usage::Bookkeep).len() == 2,
        "read appended beside the write",
    )?;
    // A later WRITE replaces the first entry it may (the WRITE at seqno 1).
    g.add_fence(&w3, Usage::Write).map_err(|e| e.to_string())?;
    let v = g.fences(Usage::Bookkeep);
    ensure(v.len() == 2, "replaced, not appended")?;
    ensure(
        Fence::ptr_eq(&v[0].0, &w3) && v[0].1 == Usage::Write,
        "w3 in w1's slot",
    )?;
    // An older fence of the context never replaces a newer one.
    let w0 = fence_on(ctx, 0);
    let (e, reports) = lockdep::capture(|| g.add_fence(&w0, Usage::Write));
    ensure(
        matches!(e, Err(Error::Invalid(_))),
        "older fence would need a slot",
    )?;
    ensure(
        !lockdep::enabled() || reports.len() == 1,
        "the missing reservation is reported",
    )?;
    drop(g);
    for f in [w1, r2, w3, w0] {
        f.signal().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A signalled entry is reused whatever its context.
fn signalled_slot_reused() -> R {
    let r = Resv::new();
    let (a, b) = (new_fence(), new_fence());
    let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
    g.reserve_fences(1).map_err(|e| e.to_string())?;
    g.add_fence(&a, Usage::Read).map_err(|e| e.to_string())?;
    a.signal().map_err(|e| e.to_string())?;
    g.add_fence(&b, Usage::Bookkeep)
        .map_err(|e| e.to_string())?;
    let v = g.fences(Usage::Bookkeep);
    ensure(
        v.len() == 1 && Fence::ptr_eq(&v[0].0, &b),
        "b took a's slot",
    )?;
    drop(g);
    b.signal().map_err(|e| e.to_string())?;
    Ok(())
}

fn reserve_zero() -> R {
    let r = Resv::new();
    let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
    let e = g.reserve_fences(0);
    ensure(
        matches!(e, Err(Error::Invalid(_))),
        "reserve_fences(0) is EINVAL",
    )?;
    ensure(e.unwrap_err().errno() == 22, "errno 22")?;
    ensure(g.reserved_free() == 0, "nothing reserved")
}

/// A slot reserved under one lock hold cannot be used under the next.
fn reservations_die() -> R {
    let r = Resv::new();
    {
        let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
        g.reserve_fences(3).map_err(|e| e.to_string())?;
        ensure(g.reserved_free() == 3, "three slots reserved")?;
    }
    let f = new_fence();
    let (res, reports) = lockdep::capture(|| {
        let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
        ensure(g.reserved_free() == 0, "reservations died at unlock")?;
        Ok::<_, String>(g.add_fence(&f, Usage::Write))
    });
    let res = res?;
    ensure(
        matches!(res, Err(Error::Invalid(_))),
        "add without a slot refused",
    )?;
    if lockdep::enabled() {
        ensure(
            reports.len() == 1 && reports[0].kind == lockdep::ReportKind::Misuse,
            &format!("one Misuse report, got {reports:?}"),
        )?;
    }
    ensure(r.num_fences() == 0, "nothing added")?;
    f.signal().map_err(|e| e.to_string())?;
    Ok(())
}

fn container_refused() -> R {
    let r = Resv::new();
    let (a, b) = (new_fence(), new_fence());
    let arr =
        crate::fence::FenceArray::create(vec![a.clone(), b.clone()], Context::new(), 1, false)
            .map_err(|e| e.to_string())?;
    let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
    g.reserve_fences(1).map_err(|e| e.to_string())?;
    let e = g.add_fence(&arr, Usage::Read);
    ensure(
        matches!(e, Err(Error::Invalid(_))),
        "containers are refused",
    )?;
    ensure(g.fences(Usage::Bookkeep).is_empty(), "nothing added")?;
    drop(g);
    a.signal().map_err(|e| e.to_string())?;
    b.signal().map_err(|e| e.to_string())?;
    Ok(())
}

fn singleton() -> R {
    let r = Resv::new();
    ensure(
        r.get_singleton(Usage::Read)
            .map_err(|e| e.to_string())?
            .is_none(),
        "none",
    )?;
    let (a, b) = (new_fence(), new_fence());
    {
        let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
        g.reserve_fences(2).map_err(|e| e.to_string())?;
        g.add_fence(&a, Usage::Write).map_err(|e| e.to_string())?;
    }
    let one = r.get_singleton(Usage::Read).map_err(|e| e.to_string())?;
    ensure(
        one.is_some_and(|f| Fence::ptr_eq(&f, &a)),
        "one: the fence itself",
    )?;
    {
        let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
        g.reserve_fences(1).map_err(|e| e.to_string())?;
        g.add_fence(&b, Usage::Read).map_err(|e| e.to_string())?;
    }
    let many = r
        .get_singleton(Usage::Read)
        .map_err(|e| e.to_string())?
        .ok_or("some")?;
    let arr = many.as_array().ok_or("many: an array")?;
    ensure(
        arr.num_fences() == 2 && !arr.signal_on_any(),
        "all-signal array of two",
    )?;
    ensure(many.seqno() == 1, "seqno 1")?;
    a.signal().map_err(|e| e.to_string())?;
    ensure(!many.is_signaled(), "not before both")?;
    b.signal().map_err(|e| e.to_string())?;
    ensure(many.is_signaled(), "signalled with both")
}

fn wait_timeout() -> R {
    let r = Resv::new();
    let f = new_fence();
    {
        let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
        g.reserve_fences(1).map_err(|e| e.to_string())?;
        g.add_fence(&f, Usage::Write).map_err(|e| e.to_string())?;
    }
    let e = r.wait_timeout(Usage::Write, Duration::ZERO, None);
    ensure(
        matches!(e, Err(Error::TimedOut)),
        "zero timeout polls: busy",
    )?;
    let e = r.wait_timeout(Usage::Write, Duration::from_millis(5), None);
    ensure(matches!(e, Err(Error::TimedOut)), "times out")?;
    // READ-usage waits don't see... a WRITE fence is seen by a Read query too.
    let ok = r.wait_timeout(Usage::Kernel, Duration::ZERO, None);
    ensure(
        ok.is_ok_and(|d| d >= Duration::from_nanos(1)),
        "kernel usage: nothing",
    )?;
    let intr = crate::Interrupt::new();
    intr.interrupt();
    let e = r.wait_timeout(Usage::Read, Duration::from_secs(5), Some(&intr));
    ensure(matches!(e, Err(Error::Interrupted)), "interrupted")?;
    let f2 = f.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(2));
        f2.signal()
    });
    let left = r
        .wait_timeout(Usage::Read, Duration::from_secs(10), None)
        .map_err(|e| e.to_string())?;
    ensure(
        left > Duration::ZERO && left <= Duration::from_secs(10),
        "time left",
    )?;
    t.join().map_err(|_| "join")?.map_err(|e| e.to_string())?;
    Ok(())
}

/// Growing the storage while a walk runs restarts it, visibly.
fn restart_on_grow() -> R {
    let r = Resv::new();
    let fs: Vec<Fence> = (0..3).map(|_| new_fence()).collect();
    {
        let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
        g.reserve_fences(4).map_err(|e| e.to_string())?;
        for f in &fs[..2] {
            g.add_fence(f, Usage::Read).map_err(|e| e.to_string())?;
        }
    }
    let mut it = r.iter_unlocked(Usage::Read);
    it.next().ok_or("first")?;
    ensure(it.is_restarted(), "first is marked")?;
    // An add within reserved room does not restart.
    {
        let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
        g.reserve_fences(1).map_err(|e| e.to_string())?;
        g.add_fence(&fs[2], Usage::Read)
            .map_err(|e| e.to_string())?;
    }
    it.next().ok_or("second")?;
    ensure(!it.is_restarted(), "no restart without a grow")?;
    // A grow restarts.
    {
        let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
        g.reserve_fences(64).map_err(|e| e.to_string())?;
    }
    let again = it.next().ok_or("restarted walk returns the first again")?;
    ensure(it.is_restarted(), "restart is visible")?;
    ensure(Fence::ptr_eq(&again.0, &fs[0]), "from the start")?;
    let got = r.get_fences(Usage::Read);
    ensure(
        got.len() == 3,
        "get_fences accumulates after a restart correctly",
    )?;
    for f in fs {
        f.signal().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn replace_fences() -> R {
    let r = Resv::new();
    let ctx = Context::new();
    let (a, b, other) = (fence_on(ctx, 1), fence_on(ctx, 2), new_fence());
    let repl = new_fence();
    let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
    g.reserve_fences(3).map_err(|e| e.to_string())?;
    g.add_fence(&a, Usage::Write).map_err(|e| e.to_string())?;
    g.add_fence(&b, Usage::Read).map_err(|e| e.to_string())?;
    g.add_fence(&other, Usage::Read)
        .map_err(|e| e.to_string())?;
    g.replace_fences(ctx, &repl, Usage::Bookkeep);
    let v = g.fences(Usage::Bookkeep);
    ensure(v.len() == 3, "same number of entries")?;
    let n = v
        .iter()
        .filter(|(f, u)| Fence::ptr_eq(f, &repl) && *u == Usage::Bookkeep)
        .count();
    ensure(n == 2, "both entries of the context replaced")?;
    ensure(Fence::ptr_eq(&v[2].0, &other), "others kept")?;
    drop(g);
    for f in [a, b, other, repl] {
        f.signal().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn copy_fences() -> R {
    let (src, dst) = (Resv::new(), Resv::new());
    let (a, s, old) = (new_fence(), new_fence(), new_fence());
    {
        let mut g = src.lock_no_ctx().map_err(|e| e.to_string())?;
        g.reserve_fences(2).map_err(|e| e.to_string())?;
        g.add_fence(&a, Usage::Kernel).map_err(|e| e.to_string())?;
        g.add_fence(&s, Usage::Read).map_err(|e| e.to_string())?;
    }
    s.signal().map_err(|e| e.to_string())?;
    let mut g = dst.lock_no_ctx().map_err(|e| e.to_string())?;
    g.reserve_fences(1).map_err(|e| e.to_string())?;
    g.add_fence(&old, Usage::Write).map_err(|e| e.to_string())?;
    g.copy_fences(&src);
    let v = g.fences(Usage::Bookkeep);
    ensure(
        v.len() == 1,
        "only unsignalled fences copied, old list replaced",
    )?;
    ensure(
        Fence::ptr_eq(&v[0].0, &a) && v[0].1 == Usage::Kernel,
        "usage kept",
    )?;
    drop(g);
    for f in [a, old] {
        f.signal().map_err(|e| e.to_string())?;
    }
    Ok(())
}

struct DeadlineOps(std::sync::Mutex<Option<u64>>);
impl FenceOps for DeadlineOps {
    fn driver_name(&self) -> &str {
        "selftest"
    }
    fn timeline_name(&self) -> &str {
        "deadline"
    }
    fn set_deadline(&self, _fence: &Fence, deadline_ns: u64) {
        *self.0.lock().unwrap() = Some(deadline_ns);
    }
}

fn deadline() -> R {
    let r = Resv::new();
    let f = Fence::new(DeadlineOps(Default::default()), Context::new(), 1);
    let g2 = new_fence();
    {
        let mut g = r.lock_no_ctx().map_err(|e| e.to_string())?;
        g.reserve_fences(2).map_err(|e| e.to_string())?;
        g.add_fence(&f, Usage::Read).map_err(|e| e.to_string())?;
        g.add_fence(&g2, Usage::Bookkeep)
            .map_err(|e| e.to_string())?;
    }
    r.set_deadline(Usage::Write, 1_000);
    ensure(
        f.deadline().is_none(),
        "a READ fence is not reached by a WRITE query",
    )?;
    r.set_deadline(Usage::Read, 1_000);
    ensure(f.deadline() == Some(1_000), "forwarded")?;
    ensure(
        g2.deadline().is_none(),
        "bookkeep not reached by a READ query",
    )?;
    f.signal().map_err(|e| e.to_string())?;
    g2.signal().map_err(|e| e.to_string())?;
    Ok(())
}

fn proof_other() -> R {
    let (a, b) = (Resv::new(), Resv::new());
    let g = a.lock_no_ctx().map_err(|e| e.to_string())?;
    ensure(g.check(&a).is_ok(), "own proof accepted")?;
    let e = g.check(&b);
    ensure(
        matches!(e, Err(Error::Invalid(_))),
        "other object's proof refused",
    )
}

fn exec_dedup() -> R {
    let (a, b, c) = (Resv::new(), Resv::new(), Resv::new());
    let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
    {
        let gs = exec::lock_all(&ctx, &[&a, &b, &a, &c, &b], None).map_err(|e| e.to_string())?;
        ensure(gs.len() == 3, "duplicates locked once")?;
        ensure(
            gs[0].resv().id() == a.id()
                && gs[1].resv().id() == b.id()
                && gs[2].resv().id() == c.id(),
            "order of first occurrence",
        )?;
        ensure(
            a.is_locked_by(&ctx) && b.is_locked_by(&ctx),
            "held by the ctx",
        )?;
    }
    ensure(
        !a.is_locked() && !b.is_locked() && !c.is_locked(),
        "released with the guards",
    )?;
    ctx.fini().map_err(|e| e.to_string())
}

/// Two transactions lock overlapping sets in opposite orders, many times: both always
/// finish (the back-off protocol resolves every conflict).
fn exec_contention() -> R {
    use std::sync::Arc;
    let objs: Arc<Vec<Resv>> = Arc::new((0..6).map(|_| Resv::new()).collect());
    let deadline = std::time::Instant::now() + Duration::from_millis(300);
    let run = |rev: bool| {
        let objs = objs.clone();
        std::thread::spawn(move || -> Result<usize, String> {
            let mut n = 0;
            while n < 200 && std::time::Instant::now() < deadline {
                let mut set: Vec<&Resv> = objs.iter().collect();
                if rev {
                    set.reverse();
                }
                let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
                {
                    let mut ex = Exec::new(&ctx);
                    ex.until_all_locked(|e| {
                        for o in &set {
                            e.lock(o)?;
                        }
                        Ok(())
                    })
                    .map_err(|e| e.to_string())?;
                    if ex.guards().len() != set.len() {
                        return Err("not all locked".into());
                    }
                }
                ctx.fini().map_err(|e| e.to_string())?;
                n += 1;
            }
            Ok(n)
        })
    };
    let (t1, t2) = (run(false), run(true));
    let n1 = t1.join().map_err(|_| "thread 1 panicked")??;
    let n2 = t2.join().map_err(|_| "thread 2 panicked")??;
    ensure(n1 > 0 && n2 > 0, "both made progress")?;
    ensure(objs.iter().all(|o| !o.is_locked()), "all released")
}

/// Starting an acquire context of the reservation class inside a fence-signalling section
/// is reported (the primed order has the context before the lock, and both before fence
/// waits); the correct order — context, lock, wait under the lock — is not, also right
/// after. (The first run in a fresh process: `tests/resv_prime_fresh.rs`.)
fn acquire_ctx_in_signalling_section() -> R {
    if !lockdep::enabled() {
        return Ok(());
    }
    let ((), reports) = lockdep::capture(|| {
        let section = crate::fence::begin_signalling();
        let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
        let _ = ctx.fini();
        drop(section);
    });
    ensure(
        reports.iter().any(|r| {
            r.kind == lockdep::ReportKind::CircularDependency
                && r.classes
                    .iter()
                    .any(|c| c == RESERVATION_WW_CLASS.acquire_class().name())
        }),
        &format!("a circular dependency through the acquire context, got {reports:?}"),
    )?;
    let r = Resv::new();
    let (res, reports) = lockdep::capture(|| {
        let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
        let g = r.lock(&ctx)?;
        crate::fence::might_wait();
        drop(g);
        ctx.fini()
    });
    ensure(res.is_ok(), "the correct order locks")?;
    ensure(
        reports.is_empty(),
        &format!("the correct order is not blamed, got {reports:?}"),
    )
}
