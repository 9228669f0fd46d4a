//! A zoo of driver and importer mistakes on the public API, each run with lockdep on
//! and off, under a watchdog (a hang fails the test instead of blocking the run), and
//! with a leak check (buffers, fences and descriptors back to where they were).
//!
//! The probes share one lock: the lockdep switch and the live counts are process-wide.

mod common;

use dmabuf::buf::simple::SimpleExporter;
use dmabuf::buf::{sync_flags, Direction};
use dmabuf::debug::live::live_settled;
use dmabuf::device::Device;
use dmabuf::fence::{chain, Context, Fence, FenceArray, FenceChain};
use dmabuf::heap::{heaps, AllocData};
use dmabuf::resv::{Resv, RESERVATION_WW_CLASS};
use dmabuf::sync_file::{sw_sync, SyncFile};
use dmabuf::ww::AcquireCtx;
use dmabuf::Error;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn watchdog(what: String, f: fn()) {
    common::watchdog(&what, Duration::from_secs(10), f);
}

fn settled() -> dmabuf::debug::Live {
    live_settled(Duration::from_millis(30), Duration::from_secs(3))
}

/// Run `f` with lockdep on, then off: once to warm up, once counted.
fn probe(name: &str, f: fn()) {
    probe_with(name, true, f)
}

/// [`probe`], with the exact leak check only when `exact`.
fn probe_with(name: &str, exact: bool, f: fn()) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Misuse is expected to make lockdep report; collect the reports instead of panicking.
    lockdep::set_on_report(lockdep::OnReport::Collect);
    for on in [true, false] {
        lockdep::set_enabled(on);
        let mode = if on { "lockdep on" } else { "lockdep off" };
        watchdog(format!("{name} ({mode}, warm-up)"), f);
        let before = settled();
        watchdog(format!("{name} ({mode})"), f);
        let after = settled();
        let d = after.drift(&before);
        assert!(!exact || d.objects_zero(), "{name} ({mode}): leaked {d}");
        let reports = lockdep::take_reports();
        if !on {
            assert!(
                reports.is_empty(),
                "{name}: lockdep reported while off: {reports:?}"
            );
        }
    }
    lockdep::set_enabled(true);
}

fn errno<X: std::fmt::Debug>(what: &str, want: i32, r: Result<X, Error>) {
    match r {
        Err(e) if e.errno() == want => {}
        other => panic!(
            "{what}: expected errno {want}, got {other:?} (lockdep {})",
            if lockdep::enabled() { "on" } else { "off" }
        ),
    }
}

fn pending() -> Fence {
    dmabuf_sync::testing::named("probe", "probe", Context::new(), 1)
}

fn buf() -> dmabuf::buf::DmaBuf {
    SimpleExporter::new(1).unwrap().export().unwrap()
}

fn dev() -> Arc<Device> {
    Device::new("probe", u32::MAX as u64, true, false).unwrap()
}

const EINVAL: i32 = 22;
const EDEADLK: i32 = 35;
const ENOENT: i32 = 2;

// ---- locking -----------------------------------------------------------------------

#[test]
fn lock_slow_without_prior_edeadlk() {
    probe("lock_slow without EDEADLK", || {
        let r = Resv::new();
        let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
        errno("lock_slow", EINVAL, r.lock_slow(&ctx).map(drop));
        assert!(!r.is_locked());
        ctx.fini().unwrap();
    });
}

#[test]
fn unlock_in_wrong_order() {
    probe("unlock out of order", || {
        let (a, b) = (Resv::new(), Resv::new());
        let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
        let ga = a.lock(&ctx).unwrap();
        let gb = b.lock(&ctx).unwrap();
        drop(ga);
        drop(gb);
        assert!(!a.is_locked() && !b.is_locked());
        ctx.fini().unwrap();
    });
}

#[test]
fn ctx_dropped_while_holding_forgotten_guard_reports() {
    probe("fini with a forgotten guard", || {
        let a = Resv::new();
        let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
        std::mem::forget(a.lock(&ctx).unwrap());
        errno("fini", EINVAL, ctx.fini());
        // The lock stays held forever (documented); a relock from this thread is refused.
        errno("relock of a leaked lock", EINVAL, a.lock_no_ctx().map(drop));
        std::mem::forget(a);
    });
}

#[test]
fn two_contexts_on_one_thread() {
    probe("two contexts, one thread", || {
        let (a, b) = (Resv::new(), Resv::new());
        let c1 = AcquireCtx::new(&RESERVATION_WW_CLASS);
        let c2 = AcquireCtx::new(&RESERVATION_WW_CLASS);
        let ga = a.lock(&c1).unwrap();
        // The kernel: lockdep report (nested ww_acquire); without lockdep, b is free so
        // it just works. The held a must be refused, not waited on.
        let gb = b.lock(&c2);
        let r = a.lock(&c2).map(drop);
        assert!(r.is_err(), "c2 locking a held by c1 on this thread: {r:?}");
        drop(gb);
        drop(ga);
        let _ = c2.fini();
        c1.fini().unwrap();
    });
}

#[test]
fn other_buffers_lock_then_buffer_calls() {
    probe("calls holding another buffer's lock", || {
        let (b, other) = (buf(), buf());
        let d = dev();
        let g = other.resv().lock_no_ctx().unwrap();
        // Each must end (no hang); the kernel gives a lockdep splat for most, then works.
        let a = b.attach(&d);
        let m = a.as_ref().ok().map(|a| a.map_unlocked(Direction::ToDevice));
        let _ = b.begin_cpu_access(Direction::Bidirectional);
        let _ = b.end_cpu_access(Direction::Bidirectional);
        let _ = b.vmap_unlocked().map(drop);
        let _ = b.poll();
        let _ = b.export_sync_file(sync_flags::READ);
        let _ = dmabuf::buf::bufinfo::bufinfo();
        drop(g);
        if let Some(Ok(m)) = m {
            a.as_ref()
                .unwrap()
                .unmap_unlocked(m)
                .map_err(|(e, _)| e)
                .unwrap();
        }
        if let Ok(a) = a {
            a.detach().map_err(|(e, _)| e).unwrap();
        }
    });
}

#[test]
fn own_lock_then_cpu_access_poll_export() {
    probe("own lock: cpu access, poll, export sync file", || {
        let b = buf();
        let g = b.resv().lock_no_ctx().unwrap();
        // None of these may hang on the lock this thread holds (errnos: see
        // `refusal_under_a_held_resv_does_not_depend_on_lockdep`).
        let _ = b.begin_cpu_access(Direction::Bidirectional);
        let _ = b.end_cpu_access(Direction::Bidirectional);
        let _ = b.poll();
        let _ = b.export_sync_file(sync_flags::READ).map(drop);
        let _ = b.sync_ioctl(sync_flags::READ);
        let _ = b.sync_ioctl(sync_flags::READ | sync_flags::END);
        drop(g);
    });
}

#[test]
fn own_lock_then_import_sync_file() {
    probe("own lock: import sync file", || {
        let b = buf();
        let f = pending();
        let sf = SyncFile::new(f.clone()).unwrap();
        {
            let _g = b.resv().lock_no_ctx().unwrap();
            errno(
                "import_sync_file",
                EINVAL,
                b.import_sync_file(sync_flags::WRITE, sf.as_fd()),
            );
        }
        assert_eq!(b.resv().num_fences(), 0);
        f.signal().unwrap();
    });
}

// ---- fences ------------------------------------------------------------------------

#[test]
fn fence_signal_twice_and_set_error_after() {
    probe("signal twice / set_error after", || {
        let f = pending();
        f.signal().unwrap();
        errno("second signal", EINVAL, f.signal());
        errno("set_error after signal", EINVAL, f.set_error(-5));
        assert_eq!(f.error(), 0);
        let g = pending();
        errno("set_error(0)", EINVAL, g.set_error(0));
        errno("set_error(1)", EINVAL, g.set_error(1));
        errno("set_error(-4096)", EINVAL, g.set_error(-4096));
        errno("set_error(MIN)", EINVAL, g.set_error(i32::MIN));
        g.set_error(-4095).unwrap();
        g.signal().unwrap();
        assert_eq!(g.get_status(), -4095);
    });
}

#[test]
fn fence_wait_timeout_zero() {
    probe("wait_timeout zero", || {
        let f = pending();
        errno("zero wait pending", 62, f.wait_timeout(Duration::ZERO));
        errno(
            "1ns wait pending",
            62,
            f.wait_timeout(Duration::from_nanos(1)),
        );
        f.signal().unwrap();
        assert!(f.wait_timeout(Duration::ZERO).unwrap() >= Duration::from_nanos(1));
    });
}

#[test]
fn callback_signals_own_fence() {
    probe("callback signals its own fence", || {
        let f = pending();
        let (tx, rx) = mpsc::channel();
        f.add_callback(move |f| {
            let _ = tx.send(f.signal().map_err(|e| e.errno()));
        })
        .map_err(|(e, _)| e)
        .unwrap();
        f.signal().unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            Err(EINVAL)
        );
    });
}

#[test]
fn callback_adds_callback_to_own_fence() {
    probe("callback adds a callback to its own fence", || {
        let f = pending();
        let (tx, rx) = mpsc::channel();
        f.add_callback(move |f| {
            let r = f
                .add_callback(|_| {})
                .map(|_| ())
                .map_err(|(e, _)| e.errno());
            let _ = tx.send(r);
        })
        .map_err(|(e, _)| e)
        .unwrap();
        f.signal().unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            Err(ENOENT)
        );
    });
}

#[test]
fn callback_drops_last_reference() {
    probe("callback drops the last reference", || {
        let f = pending();
        let holder = Arc::new(Mutex::new(Some(f.clone())));
        let h = holder.clone();
        f.add_callback(move |_| {
            drop(h.lock().unwrap().take());
        })
        .map_err(|(e, _)| e)
        .unwrap();
        let f2 = holder.lock().unwrap().clone().unwrap();
        drop(f);
        drop(f2);
        // Signal through the last reference, which the callback drops.
        let last = holder.lock().unwrap().clone().unwrap();
        holder.lock().unwrap().take();
        // now `last` plus the callback's... signal and drop.
        let h2 = Arc::new(Mutex::new(Some(last)));
        let s = h2.lock().unwrap().clone().unwrap();
        h2.lock().unwrap().take();
        s.signal().unwrap();
        drop(s);
    });
}

#[test]
fn callback_waits_on_another_pending_fence_with_timeout() {
    probe("callback waits on another fence", || {
        let f = pending();
        let other = pending();
        let o = other.clone();
        let (tx, rx) = mpsc::channel();
        f.add_callback(move |_| {
            let _ = tx.send(
                o.wait_timeout(Duration::from_millis(10))
                    .map_err(|e| e.errno()),
            );
        })
        .map_err(|(e, _)| e)
        .unwrap();
        f.signal().unwrap();
        let r = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(r.is_err(), "wait on a pending fence in a callback: {r:?}");
        other.signal().unwrap();
    });
}

#[test]
fn callback_waits_on_its_own_fence() {
    probe("callback waits on its own fence", || {
        let f = pending();
        let (tx, rx) = mpsc::channel();
        f.add_callback(move |f| {
            // Signalled already: a wait returns at once.
            let _ = tx.send(f.wait_timeout(Duration::from_millis(100)).is_ok());
        })
        .map_err(|(e, _)| e)
        .unwrap();
        f.signal().unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(5)).unwrap());
    });
}

#[test]
fn drop_unsignalled_fence_with_callbacks_forces_edeadlk() {
    probe("drop unsignalled fence with callback", || {
        let (tx, rx) = mpsc::channel();
        {
            let f = pending();
            f.add_callback(move |f| {
                let _ = tx.send(f.get_status());
            })
            .map_err(|(e, _)| e)
            .unwrap();
        }
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), -EDEADLK);
    });
}

#[test]
fn fence_array_and_chain_edges() {
    probe("array/chain edges", || {
        errno(
            "empty array",
            EINVAL,
            FenceArray::create(vec![], Context::new(), 1, false).map(drop),
        );
        let f = pending();
        let c0 = FenceChain::create(None, f.clone(), 0).unwrap();
        let _ = chain::find_seqno(&c0, 0).unwrap();
        let c1 = FenceChain::create(Some(c0.clone()), pending(), 5).unwrap();
        errno(
            "find_seqno past head",
            EINVAL,
            chain::find_seqno(&c1, 6).map(drop),
        );
        errno(
            "find_seqno u64::MAX",
            EINVAL,
            chain::find_seqno(&c1, u64::MAX).map(drop),
        );
        let arr = FenceArray::create(vec![f.clone()], Context::new(), 1, false).unwrap();
        errno(
            "array of array",
            EINVAL,
            FenceArray::create(vec![arr.clone()], Context::new(), 1, false).map(drop),
        );
        f.signal().unwrap();
        if let Some(a) = c1.as_chain() {
            let _ = a.fence().signal();
        }
        assert!(arr.is_signaled());
    });
}

// ---- buffers -----------------------------------------------------------------------

#[test]
fn map_after_detach_and_wrong_attachment_unmap() {
    probe("wrong-attachment unmap", || {
        let b = buf();
        let d = dev();
        let a1 = b.attach(&d).unwrap();
        let a2 = b.attach(&d).unwrap();
        let m = a1.map_unlocked(Direction::ToDevice).unwrap();
        let m = match a2.unmap_unlocked(m) {
            Ok(()) => panic!("unmap on the wrong attachment succeeded"),
            Err((e, m)) => {
                assert_eq!(e.errno(), EINVAL);
                m
            }
        };
        a1.unmap_unlocked(m).map_err(|(e, _)| e).unwrap();
        let keep = a1.attachment();
        a1.detach().map_err(|(e, _)| e).unwrap();
        assert!(keep.is_detached());
        let mut g = b.resv().lock_no_ctx().unwrap();
        let r = b.locked(&mut g).unwrap().map(&keep, Direction::ToDevice);
        assert!(r.is_err(), "map after detach: {r:?}");
        drop(g);
        drop(r);
        a2.detach().map_err(|(e, _)| e).unwrap();
    });
}

#[test]
fn drop_buffer_with_live_attachment_mapping_vmap() {
    probe("drop the DmaBuf with live users", || {
        let b = buf();
        let d = dev();
        let a = b.attach(&d).unwrap();
        let m = a.map_unlocked(Direction::Bidirectional).unwrap();
        let v = b.vmap_unlocked().unwrap();
        let u = b.mmap(0, 1, true).unwrap();
        drop(b);
        drop(u);
        drop(v);
        a.unmap_unlocked(m).map_err(|(e, _)| e).unwrap();
        a.detach().map_err(|(e, _)| e).unwrap();
    });
}

#[test]
fn end_cpu_access_without_begin_and_bad_sync_flags() {
    probe("end without begin / bad sync flags", || {
        let b = buf();
        // The kernel calls the exporter's end hook; 0 for a plain exporter.
        b.end_cpu_access(Direction::Bidirectional).unwrap();
        errno("sync no rw bits", EINVAL, b.sync_ioctl(0));
        errno("sync bad bits", EINVAL, b.sync_ioctl(1 << 8));
        errno("sync END only", EINVAL, b.sync_ioctl(sync_flags::END));
        errno(
            "export_sync_file flags 0",
            EINVAL,
            b.export_sync_file(0).map(drop),
        );
        errno(
            "export_sync_file bad",
            EINVAL,
            b.export_sync_file(1 << 7).map(drop),
        );
    });
}

#[test]
fn vmap_imbalance() {
    probe("vmap imbalance", || {
        let b = buf();
        let other = buf();
        let mut g = b.resv().lock_no_ctx().unwrap();
        let v = b.locked(&mut g).unwrap();
        let v1 = v.vmap().unwrap();
        let v2 = v.vmap().unwrap();
        assert_eq!(b.vmap_count(), 2);
        v.vunmap(v1).unwrap();
        v.vunmap(v2).unwrap();
        assert_eq!(b.vmap_count(), 0);
        let mut og = other.resv().lock_no_ctx().unwrap();
        let ov = other.locked(&mut og).unwrap().vmap().unwrap();
        errno("vunmap another buffer's map", EINVAL, v.vunmap(ov));
        drop(og);
        drop(g);
    });
}

#[test]
fn mmap_out_of_range_and_long_name() {
    probe("mmap ranges / set_name", || {
        let b = buf();
        errno("mmap past end", EINVAL, b.mmap(1, 1, false).map(drop));
        errno("mmap 0 pages", EINVAL, b.mmap(0, 0, false).map(drop));
        errno("mmap wrap", 75, b.mmap(usize::MAX, 2, false).map(drop));
        errno("name 32 bytes", EINVAL, b.set_name(&"x".repeat(32)));
        b.set_name(&"x".repeat(31)).unwrap();
        errno("name NUL", EINVAL, b.set_name("a\0b"));
        assert_eq!(b.name().unwrap(), "x".repeat(31));
    });
}

// ---- sync files --------------------------------------------------------------------

fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe().unwrap()
}

#[test]
fn sync_file_from_non_sync_fds() {
    probe("from_fd of non-sync-files", || {
        let (r, w) = pipe();
        errno("pipe", EINVAL, SyncFile::from_fd(r).map(drop));
        drop(w);
        let m = rustix::fs::memfd_create("probe", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        errno("memfd", EINVAL, SyncFile::from_fd(m).map(drop));
        let e = rustix::event::eventfd(u32::MAX, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        rustix::io::write(&e, &(u64::MAX - 1 - u32::MAX as u64).to_ne_bytes()).unwrap();
        errno("eventfd above 2^63", EINVAL, SyncFile::from_fd(e).map(drop));
    });
}

#[test]
#[ignore = "FAILS (design limit): any eventfd whose counter is <= 2^63 is taken for a sync \
            file (sync_file/registry.rs lookup_slow); the kernel's sync_file_fdget says EINVAL"]
fn sync_file_from_a_plain_eventfd() {
    probe("from_fd of a plain eventfd", || {
        let e = rustix::event::eventfd(12345, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        errno("eventfd 12345", EINVAL, SyncFile::from_fd(e).map(drop));
        let e = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        errno("eventfd 0", EINVAL, SyncFile::from_fd(e).map(drop));
    });
}

#[test]
fn sync_file_merge_with_itself_and_bad_ioctls() {
    probe("merge self / bad ioctls", || {
        use dmabuf::sync_file::{ioctl_file_info, ioctl_merge, SyncFileInfo, SyncMergeData};
        let f = pending();
        let sf = SyncFile::new(f.clone()).unwrap();
        let m = sf.merge("self", &sf).unwrap();
        assert_eq!(m.info().fences.len(), 1);
        let mut d = SyncMergeData {
            fd2: std::os::fd::AsRawFd::as_raw_fd(&sf.as_fd()),
            flags: 1,
            ..Default::default()
        };
        errno(
            "merge flags",
            EINVAL,
            ioctl_merge(sf.as_fd(), &mut d).map(drop),
        );
        d.flags = 0;
        d.pad = 1;
        errno(
            "merge pad",
            EINVAL,
            ioctl_merge(sf.as_fd(), &mut d).map(drop),
        );
        d.pad = 0;
        d.fd2 = -1;
        errno(
            "merge fd2 -1",
            ENOENT,
            ioctl_merge(sf.as_fd(), &mut d).map(drop),
        );
        let (r, w) = pipe();
        d.fd2 = std::os::fd::AsRawFd::as_raw_fd(&r);
        errno(
            "merge fd2 pipe",
            ENOENT,
            ioctl_merge(sf.as_fd(), &mut d).map(drop),
        );
        errno(
            "merge on a pipe",
            25,
            ioctl_merge(r.as_fd(), &mut d).map(drop),
        );
        drop((r, w));
        let mut info = SyncFileInfo {
            flags: 1,
            ..Default::default()
        };
        errno(
            "info flags",
            EINVAL,
            ioctl_file_info(sf.as_fd(), &mut info, &mut []),
        );
        let mut info = SyncFileInfo {
            pad: 1,
            ..Default::default()
        };
        errno(
            "info pad",
            EINVAL,
            ioctl_file_info(sf.as_fd(), &mut info, &mut []),
        );
        f.signal().unwrap();
        drop(m);
    });
}

#[test]
fn sync_file_drop_loop_fd_flat() {
    probe("drop sync files in a loop", || {
        for _ in 0..200 {
            let f = pending();
            let a = SyncFile::new(f.clone()).unwrap();
            let b = SyncFile::from_fd(a.try_clone_fd().unwrap()).unwrap();
            let c = a.merge("m", &b).unwrap();
            drop((a, b, c));
            f.signal().unwrap();
        }
    });
}

#[test]
fn sw_sync_misuse() {
    probe("sw_sync misuse", || {
        let (r, w) = pipe();
        errno(
            "create_fence on a pipe",
            25,
            sw_sync::create_fence(r.as_fd(), 1).map(drop),
        );
        errno("inc on a pipe", 25, sw_sync::inc(w.as_fd(), 1));
        drop((r, w));
        let tl = sw_sync::open().unwrap();
        let p = sw_sync::create_fence(tl.as_fd(), 5).unwrap();
        sw_sync::inc(tl.as_fd(), 0).unwrap();
        assert!(!p.fence().is_signaled());
        let q = sw_sync::create_fence(tl.as_fd(), 10).unwrap();
        drop(tl);
        // The last close signals the pending points with -ENOENT.
        assert!(p.fence().wait_timeout(Duration::from_secs(5)).is_ok());
        assert!(q.fence().wait_timeout(Duration::from_secs(5)).is_ok());
        assert_eq!(p.fence().get_status(), -ENOENT);
        assert_eq!(q.fence().get_status(), -ENOENT);
        let tl = sw_sync::open().unwrap();
        let p = sw_sync::create_fence(tl.as_fd(), 3).unwrap();
        sw_sync::inc(tl.as_fd(), u32::MAX).unwrap();
        assert_eq!(p.fence().get_status(), 1);
        drop(tl);
    });
}

// ---- heaps -------------------------------------------------------------------------

#[test]
fn heap_bad_allocations() {
    probe("heap bad allocations", || {
        let h = heaps();
        errno(
            "zero length",
            EINVAL,
            h.alloc("system", &AllocData::new(0)).map(drop),
        );
        errno(
            "huge length",
            12,
            h.alloc("system", &AllocData::new(1 << 50)).map(drop),
        );
        errno(
            "u64::MAX length",
            EINVAL,
            h.alloc("system", &AllocData::new(u64::MAX)).map(drop),
        );
        let mut d = AllocData::new(4096);
        d.fd_flags = 0xdead_0000;
        errno("bad fd_flags", EINVAL, h.alloc("system", &d).map(drop));
        let mut d = AllocData::new(4096);
        d.heap_flags = 1;
        errno("bad heap_flags", EINVAL, h.alloc("system", &d).map(drop));
        let mut d = AllocData::new(4096);
        d.fd = 3;
        errno("fd not 0", EINVAL, h.alloc("system", &d).map(drop));
        errno(
            "no such heap",
            19,
            h.alloc("nope", &AllocData::new(4096)).map(drop),
        );
    });
}

// ---- second batch ------------------------------------------------------------------

/// With lockdep off, a call that must run unlocked, made while holding another
/// buffer's reservation lock, is refused as it is with lockdep on.
#[test]
fn refusal_under_a_held_resv_does_not_depend_on_lockdep() {
    probe("must-run-unlocked refusals without lockdep", || {
        let (b, other) = (buf(), buf());
        let d = dev();
        {
            // Own lock: these take no lock, so they do not hang, but the errno differs.
            let _g = b.resv().lock_no_ctx().unwrap();
            errno(
                "own: begin_cpu_access",
                EINVAL,
                b.begin_cpu_access(Direction::ToDevice),
            );
            errno(
                "own: end_cpu_access",
                EINVAL,
                b.end_cpu_access(Direction::ToDevice),
            );
            errno("own: mmap", EINVAL, b.mmap(0, 1, false).map(drop));
        }
        let _g = other.resv().lock_no_ctx().unwrap();
        errno(
            "begin_cpu_access",
            EINVAL,
            b.begin_cpu_access(Direction::ToDevice),
        );
        errno(
            "end_cpu_access",
            EINVAL,
            b.end_cpu_access(Direction::ToDevice),
        );
        errno("vmap_unlocked", EINVAL, b.vmap_unlocked().map(drop));
        errno("mmap", EINVAL, b.mmap(0, 1, false).map(drop));
        errno("attach", EINVAL, b.attach(&d).map(drop));
        errno(
            "export",
            EINVAL,
            SimpleExporter::new(1).unwrap().export().map(drop),
        );
    });
}

#[test]
fn lock_slow_with_locks_still_held() {
    probe("lock_slow while holding", || {
        let (a, b) = (Resv::new(), Resv::new());
        let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
        let ga = a.lock(&ctx).unwrap();
        errno("lock_slow with a held", EINVAL, b.lock_slow(&ctx).map(drop));
        assert!(!b.is_locked());
        drop(ga);
        ctx.fini().unwrap();
    });
}

#[test]
fn ctx_dropped_without_fini_after_leak() {
    probe("ctx dropped with a leaked guard", || {
        let a = Resv::new();
        {
            let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
            std::mem::forget(a.lock(&ctx).unwrap());
            drop(ctx);
        }
        // Another thread must not hang forever on it: try_lock says no.
        let r = std::thread::scope(|s| s.spawn(|| a.try_lock().is_none()).join().unwrap());
        assert!(r);
        std::mem::forget(a);
    });
}

#[test]
fn real_edeadlk_backoff_two_threads() {
    probe("edeadlk backoff", || {
        let a = Arc::new(Resv::new());
        let b = Arc::new(Resv::new());
        let go = Arc::new(std::sync::Barrier::new(2));
        let run = |x: Arc<Resv>, y: Arc<Resv>, go: Arc<std::sync::Barrier>| {
            move || {
                for _ in 0..50 {
                    go.wait();
                    let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
                    let objs = [&*x, &*y];
                    let gs = dmabuf::resv::exec::lock_all(&ctx, &objs, None).unwrap();
                    drop(gs);
                    ctx.fini().unwrap();
                }
            }
        };
        let t1 = std::thread::spawn(run(a.clone(), b.clone(), go.clone()));
        let t2 = std::thread::spawn(run(b.clone(), a.clone(), go.clone()));
        t1.join().unwrap();
        t2.join().unwrap();
    });
}

#[test]
fn resv_add_fence_without_reserve_and_reserve_zero() {
    probe("resv add without reserve", || {
        let r = Resv::new();
        let f = pending();
        let mut g = r.lock_no_ctx().unwrap();
        errno("reserve 0", EINVAL, g.reserve_fences(0));
        errno(
            "add without reserve",
            EINVAL,
            g.add_fence(&f, dmabuf::resv::Usage::Write),
        );
        assert_eq!(g.fences(dmabuf::resv::Usage::Bookkeep).len(), 0);
        g.reserve_fences(1).unwrap();
        g.add_fence(&f, dmabuf::resv::Usage::Write).unwrap();
        let arr = FenceArray::create(vec![pending()], Context::new(), 1, false).unwrap();
        g.reserve_fences(1).unwrap();
        errno(
            "add a container",
            EINVAL,
            g.add_fence(&arr, dmabuf::resv::Usage::Read),
        );
        drop(g);
        f.signal().unwrap();
        for m in arr.as_array().unwrap().fences() {
            m.signal().unwrap();
        }
        // Huge reserve: ENOMEM, no abort.
        let mut g = r.lock_no_ctx().unwrap();
        let e = g.reserve_fences(usize::MAX / 2);
        assert!(e.is_err(), "huge reserve: {e:?}");
    });
}

#[test]
fn wait_any_empty_and_interrupted() {
    probe("wait_any edges", || {
        errno(
            "wait_any empty",
            EINVAL,
            dmabuf::fence::wait_any_timeout(&[], Some(Duration::ZERO), None).map(drop),
        );
        let f = pending();
        errno(
            "wait_any zero timeout",
            62,
            dmabuf::fence::wait_any_timeout(std::slice::from_ref(&f), Some(Duration::ZERO), None)
                .map(drop),
        );
        f.signal().unwrap();
    });
}

#[test]
fn pin_unpin_imbalance_and_wrong_lock() {
    probe("pin/unpin misuse", || {
        struct Imp;
        impl dmabuf::buf::ops::Importer for Imp {
            fn move_notify(&self, _: &dmabuf::resv::ResvGuard<'_>, _: &dmabuf::buf::Attachment) {}
        }
        let ex = SimpleExporter::dynamic(1).unwrap();
        let b = ex.export().unwrap();
        let other = buf();
        let d = dev();
        let a = b.dynamic_attach(&d, Some(Arc::new(Imp))).unwrap();
        let att = a.attachment();
        let mut g = b.resv().lock_no_ctx().unwrap();
        let v = b.locked(&mut g).unwrap();
        errno("unpin without pin", EINVAL, v.unpin(&att));
        let mut og = other.resv().lock_no_ctx().unwrap();
        // The wrong lock makes no locked view of the buffer (so no pin, map,
        // move_notify or attachment list through it)...
        errno(
            "locked view with the wrong lock",
            EINVAL,
            b.locked(&mut og).map(drop),
        );
        // ...and the other buffer's view refuses this buffer's attachment.
        let ov = other.locked(&mut og).unwrap();
        errno("pin with the wrong lock", EINVAL, ov.pin(&att));
        errno("unpin with the wrong lock", EINVAL, ov.unpin(&att));
        errno(
            "map with the wrong lock",
            EINVAL,
            ov.map(&att, Direction::ToDevice).map(drop),
        );
        assert!(ov.attachments().is_empty(), "the other buffer lists none");
        drop(og);
        v.pin(&att).unwrap();
        v.unpin(&att).unwrap();
        errno("second unpin", EINVAL, v.unpin(&att));
        drop(g);
        a.detach().map_err(|(e, _)| e).unwrap();
    });
}

#[test]
fn sync_file_info_and_deadline_bad_args() {
    probe("sync file info/deadline", || {
        use dmabuf::sync_file::{
            ioctl_file_info, ioctl_set_deadline, SyncFenceInfo, SyncFileInfo, SyncSetDeadline,
        };
        let (f1, f2) = (pending(), pending());
        let a = SyncFile::new(f1.clone()).unwrap();
        let b = SyncFile::new(f2.clone()).unwrap();
        let m = a.merge("two", &b).unwrap();
        let mut info = SyncFileInfo {
            num_fences: 1,
            ..Default::default()
        };
        let mut out = [SyncFenceInfo::default(); 2];
        errno(
            "num_fences too small",
            EINVAL,
            ioctl_file_info(m.as_fd(), &mut info, &mut out),
        );
        let mut info = SyncFileInfo {
            num_fences: 2,
            ..Default::default()
        };
        errno(
            "out too short",
            14,
            ioctl_file_info(m.as_fd(), &mut info, &mut out[..1]),
        );
        let mut info = SyncFileInfo::default();
        ioctl_file_info(m.as_fd(), &mut info, &mut []).unwrap();
        assert_eq!(info.num_fences, 2);
        errno(
            "deadline pad",
            EINVAL,
            ioctl_set_deadline(
                m.as_fd(),
                &SyncSetDeadline {
                    deadline_ns: 1,
                    pad: 1,
                },
            ),
        );
        let (r, w) = pipe();
        errno(
            "deadline on a pipe",
            25,
            ioctl_set_deadline(r.as_fd(), &SyncSetDeadline::default()),
        );
        drop((r, w));
        f1.signal().unwrap();
        f2.signal().unwrap();
    });
}

#[test]
fn sw_sync_deadline_and_timeline_loop() {
    probe("sw_sync deadline / timeline churn", || {
        let tl = sw_sync::open().unwrap();
        let p = sw_sync::create_fence(tl.as_fd(), 1).unwrap();
        errno(
            "no deadline",
            ENOENT,
            sw_sync::get_deadline(tl.as_fd(), p.as_fd()),
        );
        let sf = SyncFile::new(pending()).unwrap();
        errno(
            "not a sw_sync point",
            EINVAL,
            sw_sync::get_deadline(tl.as_fd(), sf.as_fd()),
        );
        sf.fence().signal().unwrap();
        errno(
            "deadline on a non-timeline",
            25,
            sw_sync::get_deadline(sf.as_fd(), p.as_fd()),
        );
        drop(tl);
        assert!(p.fence().wait_timeout(Duration::from_secs(5)).is_ok());
        assert_eq!(p.fence().get_status(), -ENOENT);
        for _ in 0..50 {
            let tl = sw_sync::open().unwrap();
            let p = sw_sync::create_fence(tl.as_fd(), 1).unwrap();
            drop(tl);
            assert!(p.fence().wait_timeout(Duration::from_secs(5)).is_ok());
        }
    });
}

#[test]
fn buffer_poll_and_export_with_pending_fences() {
    probe("poll / export with pending fences", || {
        let b = buf();
        let f = pending();
        b.import_sync_fence(sync_flags::WRITE, &f).unwrap();
        assert_eq!(b.poll(), (false, false));
        let (r, w) = b.poll_wait(true, true, Duration::ZERO);
        assert!(!r && !w);
        let sf = b.export_sync_file(sync_flags::READ).unwrap();
        assert!(!sf.poll());
        errno("import flags 0", EINVAL, b.import_sync_fence(0, &f));
        f.set_error(-5).unwrap();
        f.signal().unwrap();
        assert!(sf.poll());
        assert_eq!(sf.fence().get_status(), -5);
        assert_eq!(b.poll(), (true, true));
    });
}

#[test]
fn heap_alloc_over_ioctl_bad_cmd() {
    probe("heap ioctl", || {
        let f = heaps().open("system").unwrap();
        let d = AllocData::new(4096).to_bytes();
        errno("bad ioctl nr", EINVAL, f.ioctl(0xdead, &d).map(drop));
        errno(
            "short arg",
            14,
            f.ioctl(dmabuf::heap::DMA_HEAP_IOCTL_ALLOC, &d[..8])
                .map(drop),
        );
        f.ioctl(dmabuf::heap::DMA_HEAP_IOCTL_ALLOC, &d).unwrap();
    });
}

#[test]
#[ignore = "FAILS: the last close of a sw_sync timeline signals its points later, on the \
            watcher thread; the kernel's release signals them all before close returns"]
fn sw_sync_last_close_signals_before_close_returns() {
    probe("sw_sync close is synchronous", || {
        for _ in 0..20 {
            let tl = sw_sync::open().unwrap();
            let p = sw_sync::create_fence(tl.as_fd(), 1).unwrap();
            let q = sw_sync::create_fence(tl.as_fd(), 2).unwrap();
            drop(tl);
            assert_eq!(p.fence().get_status(), -ENOENT);
            assert_eq!(q.fence().get_status(), -ENOENT);
        }
    });
}

// ---- third batch: drops under locks, callbacks re-entering -------------------------

#[test]
fn sg_mapping_dropped_under_its_own_lock() {
    probe("SgMapping dropped under own lock", || {
        let b = buf();
        let d = dev();
        let a = b.attach(&d).unwrap();
        let m = a.map_unlocked(Direction::ToDevice).unwrap();
        {
            let _g = b.resv().lock_no_ctx().unwrap();
            drop(m);
        }
        // The unmap happened or is owed; either way the detach now succeeds.
        a.detach().map_err(|(e, _)| e).unwrap();
    });
}

#[test]
fn sg_mapping_dropped_under_another_lock() {
    probe("SgMapping dropped under another lock", || {
        let (b, other) = (buf(), buf());
        let d = dev();
        let a = b.attach(&d).unwrap();
        let m = a.map_unlocked(Direction::ToDevice).unwrap();
        {
            let _g = other.resv().lock_no_ctx().unwrap();
            drop(m);
        }
        a.detach().map_err(|(e, _)| e).unwrap();
    });
}

#[test]
fn attach_guard_dropped_under_its_own_lock() {
    probe("AttachGuard dropped under own lock", || {
        let b = buf();
        let d = dev();
        let a = b.attach(&d).unwrap();
        {
            let _g = b.resv().lock_no_ctx().unwrap();
            drop(a);
        }
        assert!(dmabuf::buf::wait_deferred_detaches(Duration::from_secs(5)));
        let mut g = b.resv().lock_no_ctx().unwrap();
        assert!(b.locked(&mut g).unwrap().attachments().is_empty());
    });
}

#[test]
fn attach_guard_dropped_with_live_mapping() {
    probe("AttachGuard dropped while mapped", || {
        let b = buf();
        let d = dev();
        let a = b.attach(&d).unwrap();
        let m = a.map_unlocked(Direction::ToDevice).unwrap();
        drop(a);
        drop(m);
        assert!(dmabuf::buf::wait_deferred_detaches(Duration::from_secs(5)));
        let mut g = b.resv().lock_no_ctx().unwrap();
        assert!(b.locked(&mut g).unwrap().attachments().is_empty());
    });
}

#[test]
fn last_buffer_reference_dropped_under_its_own_lock() {
    probe("DmaBuf released under its own lock", || {
        let b = buf();
        let r = b.resv().clone();
        let g = r.lock_no_ctx().unwrap();
        drop(b);
        drop(g);
    });
}

#[test]
fn cpu_access_guard_dropped_under_its_own_lock() {
    probe("CpuAccess dropped under own lock", || {
        let b = buf();
        let c = b.cpu_access(Direction::Bidirectional).unwrap();
        {
            let _g = b.resv().lock_no_ctx().unwrap();
            drop(c);
        }
    });
}

#[test]
fn move_notify_importer_relocks() {
    probe("importer relocks in move_notify", || {
        struct Imp(mpsc::Sender<(i32, i32)>);
        impl dmabuf::buf::ops::Importer for Imp {
            fn move_notify(&self, _: &dmabuf::resv::ResvGuard<'_>, att: &dmabuf::buf::Attachment) {
                let relock = att.buf().resv().lock_no_ctx().map(drop);
                let map = att.map_unlocked(Direction::ToDevice).map(drop);
                let e = |r: Result<(), Error>| r.map_or_else(|e| e.errno(), |_| 0);
                let _ = self.0.send((e(relock), e(map)));
            }
        }
        let (tx, rx) = mpsc::channel();
        let b = SimpleExporter::dynamic(1).unwrap().export().unwrap();
        let d = dev();
        let a = b.dynamic_attach(&d, Some(Arc::new(Imp(tx)))).unwrap();
        {
            let mut g = b.resv().lock_no_ctx().unwrap();
            b.locked(&mut g).unwrap().move_notify();
        }
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            (EINVAL, EINVAL)
        );
        a.detach().map_err(|(e, _)| e).unwrap();
    });
}

#[test]
fn unsignalled_fence_dropped_in_another_fences_callback() {
    probe("fence dropped in a callback", || {
        let (tx, rx) = mpsc::channel();
        let inner = pending();
        inner
            .add_callback(move |f| {
                let _ = tx.send(f.get_status());
            })
            .map_err(|(e, _)| e)
            .unwrap();
        let outer = pending();
        let slot = Mutex::new(Some(inner));
        outer
            .add_callback(move |_| drop(slot.lock().unwrap().take()))
            .map_err(|(e, _)| e)
            .unwrap();
        outer.signal().unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), -EDEADLK);
    });
}

#[test]
fn remove_callback_from_inside_a_callback() {
    probe("remove_callback in a callback", || {
        let f = pending();
        let (tx, rx) = mpsc::channel();
        let id2 = Arc::new(Mutex::new(None));
        let i2 = id2.clone();
        f.add_callback(move |f| {
            let id = i2.lock().unwrap().take().unwrap();
            let _ = tx.send(f.remove_callback(id));
        })
        .map_err(|(e, _)| e)
        .unwrap();
        let (tx2, rx2) = mpsc::channel();
        let id = f
            .add_callback(move |_| {
                let _ = tx2.send(());
            })
            .map_err(|(e, _)| e)
            .unwrap();
        *id2.lock().unwrap() = Some(id);
        f.signal().unwrap();
        let removed = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let ran = rx2.try_recv().is_ok();
        // Either it was removed and did not run, or it ran: never both, never neither.
        assert!(removed != ran, "removed {removed}, ran {ran}");
    });
}

#[test]
fn fence_wait_in_callback_on_signalled_other_and_array_member_callback() {
    probe("array member signalled from the array's callback", || {
        let (m1, m2) = (pending(), pending());
        let arr =
            FenceArray::create(vec![m1.clone(), m2.clone()], Context::new(), 1, true).unwrap();
        let m2c = m2.clone();
        arr.add_callback(move |_| {
            let _ = m2c.signal();
        })
        .map_err(|(e, _)| e)
        .unwrap();
        m1.signal().unwrap();
        assert!(arr.wait_timeout(Duration::from_secs(5)).is_ok());
        assert!(m2.wait_timeout(Duration::from_secs(5)).is_ok());
    });
}

// ---- fourth batch ------------------------------------------------------------------

#[test]
fn context_arithmetic_does_not_panic() {
    probe("context alloc/nth overflow", || {
        errno("alloc(0)", EINVAL, Context::alloc(0).map(drop));
        let c = Context::alloc(2).unwrap();
        let _ = c.nth(u64::MAX);
    });
}

#[test]
fn timeline_inc_from_its_own_points_callback() {
    probe("Timeline::inc from a point's callback", || {
        let tl = Arc::new(dmabuf::fence::timeline::Timeline::new("probe"));
        let p = tl.create_fence(1);
        let _q = tl.create_fence(2);
        let t2 = tl.clone();
        let (tx, rx) = mpsc::channel();
        p.add_callback(move |_| {
            t2.inc(1);
            let _ = tx.send(());
        })
        .map_err(|(e, _)| e)
        .unwrap();
        tl.inc(1);
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(tl.value(), 2);
    });
}

#[test]
fn sw_sync_inc_from_its_own_points_callback() {
    probe("sw_sync::inc from a point's callback", || {
        let tl = Arc::new(sw_sync::open().unwrap());
        let p = sw_sync::create_fence(tl.as_fd(), 1).unwrap();
        let q = sw_sync::create_fence(tl.as_fd(), 2).unwrap();
        let t2 = tl.clone();
        let (tx, rx) = mpsc::channel();
        p.fence()
            .add_callback(move |_| {
                let _ = tx.send(sw_sync::inc(t2.as_fd(), 1).map_err(|e| e.errno()));
            })
            .map_err(|(e, _)| e)
            .unwrap();
        sw_sync::inc(tl.as_fd(), 1).unwrap();
        let _ = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        drop(tl);
        assert!(q.fence().wait_timeout(Duration::from_secs(5)).is_ok());
    });
}

#[test]
fn interrupted_waits_and_locks() {
    probe("interrupt fired before the call", || {
        let i = dmabuf::Interrupt::new();
        i.interrupt();
        let f = pending();
        errno("wait_interruptible", 4, f.wait_interruptible(&i));
        let b = buf();
        b.import_sync_fence(sync_flags::WRITE, &f).unwrap();
        let r = b.begin_cpu_access_interruptible(Direction::FromDevice, &i);
        assert!(r.is_err(), "begin_cpu_access_interruptible: {r:?}");
        let (x, y) = b.poll_wait(true, true, Duration::from_millis(20));
        assert!(!x && !y);
        let r2 = Resv::new();
        let g = r2.lock_no_ctx().unwrap();
        let res = std::thread::scope(|s| {
            s.spawn(|| {
                let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
                let r = r2
                    .lock_interruptible(&ctx, &i)
                    .map(drop)
                    .map_err(|e| e.errno());
                let _ = ctx.fini();
                r
            })
            .join()
            .unwrap()
        });
        assert!(
            res.is_err(),
            "lock_interruptible with a fired interrupt: {res:?}"
        );
        drop(g);
        f.signal().unwrap();
    });
}

#[test]
fn sync_file_long_name_and_roundtrip() {
    probe("sync file names and fd roundtrip", || {
        let f = pending();
        let sf = SyncFile::with_name(f.clone(), &"n".repeat(100)).unwrap();
        assert!(sf.name().len() <= 31, "name {} bytes", sf.name().len());
        let back = sf;
        let dup = SyncFile::from_fd(back.try_clone_fd().unwrap()).unwrap();
        assert!(Fence::ptr_eq(dup.fence(), &f));
        f.signal().unwrap();
        assert!(dup.poll() && back.poll());
    });
}

#[test]
fn fd_passing_misuse() {
    probe("send_fd/recv_fd on non-sockets", || {
        let (r, w) = pipe();
        let e = dmabuf::sync_file::send_fd(w.as_fd(), r.as_fd());
        assert_eq!(e.map_err(|e| e.errno()), Err(88), "send_fd on a pipe");
        let e = dmabuf::sync_file::recv_fd(r.as_fd()).map(drop);
        assert_eq!(e.map_err(|e| e.errno()), Err(88), "recv_fd on a pipe");
    });
}

#[test]
fn heap_page_round_wrap_and_readonly_mmap() {
    probe("heap len wrap / read-only buffer", || {
        let h = heaps();
        errno(
            "len wraps when page-rounded",
            EINVAL,
            h.alloc("system", &AllocData::new(u64::MAX - 100)).map(drop),
        );
        let mut d = AllocData::new(4096);
        d.fd_flags = 0o2000000; // O_CLOEXEC | O_RDONLY
        let b = h.alloc("system", &d).unwrap();
        errno(
            "shared writable mmap of read-only",
            13,
            b.mmap(0, 1, true).map(drop),
        );
        drop(b.mmap(0, 1, false).unwrap());
        if h.get("contig").is_some() {
            errno(
                "contig huge",
                12,
                h.alloc("contig", &AllocData::new(1 << 40)).map(drop),
            );
        }
    });
}

#[test]
fn fence_merge_and_unwrap_edges() {
    probe("merge edges", || {
        let m = dmabuf::fence::unwrap::merge(&[]);
        assert!(m.is_ok(), "merge of nothing: {m:?}");
        let f = pending();
        let m = dmabuf::fence::unwrap::merge(&[f.clone(), f.clone()]).unwrap();
        assert!(Fence::ptr_eq(&m, &f) || !m.is_signaled());
        f.signal().unwrap();
        assert!(m.wait_timeout(Duration::from_secs(5)).is_ok());
    });
}

#[test]
fn sync_file_into_fd_loop_stays_bounded() {
    probe_with("into_fd + close in a loop", false, || {
        let before = settled();
        for _ in 0..300 {
            let f = pending();
            let fd = SyncFile::new(f.clone()).unwrap().try_into_fd().unwrap();
            f.signal().unwrap();
            drop(fd);
        }
        // The id map sweeps closed entries when it doubles (at least 64 entries).
        let d = settled().drift(&before);
        assert!(d.open_fds.abs() <= 64 && d.fences.abs() <= 64, "{d}");
    });
}

#[test]
#[ignore = "FAILS (by design, bounded): after try_into_fd, closing the descriptor leaves the \
            id map's duplicate and the fence alive until its next sweep (up to 64 entries; \
            sync_file/registry.rs SweptMap); the kernel frees the file at the last close"]
fn sync_file_into_fd_then_close_frees_at_once() {
    probe("into_fd then close", || {
        let f = pending();
        let fd = SyncFile::new(f.clone()).unwrap().try_into_fd().unwrap();
        f.signal().unwrap();
        drop(fd);
    });
}

// ---- fifth batch: acquire-context misuse -------------------------------------------

static OTHER_CLASS: dmabuf::ww::WwClass =
    dmabuf::ww::WwClass::wound_wait("probe_ww", "probe_acquire");

#[test]
fn lock_after_acquire_done() {
    probe("lock after ww_acquire_done", || {
        let (a, b) = (Resv::new(), Resv::new());
        let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
        let ga = a.lock(&ctx).unwrap();
        ctx.done();
        errno("lock after done", EINVAL, b.lock(&ctx).map(drop));
        assert!(!b.is_locked());
        ctx.done();
        drop(ga);
        let _ = ctx.fini();
    });
}

#[test]
fn context_of_another_class() {
    probe("ctx of another ww class", || {
        let a = Resv::new();
        let ctx = AcquireCtx::new(&OTHER_CLASS);
        errno("class mismatch", EINVAL, a.lock(&ctx).map(drop));
        assert!(!a.is_locked());
        ctx.fini().unwrap();
    });
}

#[test]
fn locking_on_after_edeadlk_without_backoff() {
    probe("no backoff after EDEADLK", || {
        let rs: Vec<Resv> = (0..40).map(|_| Resv::new()).collect();
        let ctx = AcquireCtx::with_deadlock_injection(&RESERVATION_WW_CLASS);
        let mut held = Vec::new();
        let mut after = None;
        for r in &rs {
            match r.lock(&ctx) {
                Ok(g) => held.push(g),
                Err(e) if e.errno() == EDEADLK => {
                    after = Some(true);
                    continue;
                }
                Err(e) => {
                    if after.is_some() {
                        // Refused after the ignored EDEADLK: what the kernel warns about.
                        assert_eq!(e.errno(), EINVAL, "{e:?}");
                        break;
                    }
                    panic!("unexpected {e:?}");
                }
            }
        }
        drop(held);
        let _ = ctx.fini();
        for r in &rs {
            assert!(!r.is_locked());
        }
    });
}

#[test]
fn export_zero_size_and_double_tracker() {
    probe("export size 0", || {
        let ex = SimpleExporter::new(1).unwrap();
        let ops: Arc<dyn dmabuf::buf::ops::Exporter> = ex.clone();
        let info = dmabuf::buf::ExportInfo::new("probe", 0, ops);
        errno("size 0", EINVAL, dmabuf::buf::export(info).map(drop));
    });
}

// ---- sixth batch: buffer ioctls and CPU mappings -----------------------------------

#[test]
fn import_sync_file_bad_inputs() {
    probe("import_sync_file bad inputs", || {
        let b = buf();
        let f = pending();
        let sf = SyncFile::new(f.clone()).unwrap();
        errno("flags 0", EINVAL, b.import_sync_file(0, sf.as_fd()));
        errno("flags 8", EINVAL, b.import_sync_file(8, sf.as_fd()));
        let (r, w) = pipe();
        errno(
            "a pipe",
            EINVAL,
            b.import_sync_file(sync_flags::WRITE, r.as_fd()),
        );
        drop((r, w));
        assert_eq!(b.resv().num_fences(), 0);
        f.signal().unwrap();
    });
}

#[test]
fn vmap_access_out_of_range() {
    probe("VMap read/write out of range", || {
        let b = buf();
        let v = b.vmap_unlocked().unwrap();
        let len = v.len();
        let mut one = [0u8; 1];
        assert!(v.read_at(len, &mut one).is_err());
        assert!(v.read_at(usize::MAX, &mut one).is_err());
        assert!(v.write_at(usize::MAX, &[1, 2]).is_err());
        assert!(v.write_at(len - 1, &[1, 2]).is_err());
        v.write_at(len - 1, &[7]).unwrap();
        v.read_at(len - 1, &mut one).unwrap();
        assert_eq!(one, [7]);
    });
}

#[test]
fn llseek_and_sync_end_without_start() {
    probe("llseek / SYNC_END without START", || {
        let b = buf();
        errno(
            "seek MIN from end",
            EINVAL,
            b.llseek(i64::MIN, dmabuf::buf::Whence::End),
        );
        errno("seek 1", EINVAL, b.llseek(1, dmabuf::buf::Whence::Set));
        assert_eq!(
            b.llseek(0, dmabuf::buf::Whence::End).unwrap(),
            b.size() as u64
        );
        // The kernel passes END straight to the exporter: no error without a START.
        b.sync_ioctl(sync_flags::RW | sync_flags::END).unwrap();
        b.sync_ioctl(sync_flags::READ).unwrap();
        b.sync_ioctl(sync_flags::READ).unwrap();
        b.sync_ioctl(sync_flags::READ | sync_flags::END).unwrap();
    });
}

#[test]
fn timeline_nested_inc_keeps_seqno_order() {
    probe("Timeline::inc from a point's callback, in order", || {
        use std::sync::Mutex;
        let tl = Arc::new(dmabuf::fence::timeline::Timeline::new("order"));
        let order = Arc::new(Mutex::new(Vec::new()));
        let points: Vec<_> = (1..=6).map(|v| tl.create_fence(v)).collect();
        for p in &points {
            let order = order.clone();
            p.add_callback(move |f| order.lock().unwrap().push((f.seqno(), f.error())))
                .map_err(|(e, _)| e)
                .unwrap();
        }
        // Point 1's callback increments by 1: the outer increment of 3 reaches 4, and
        // every point signals in seqno order (4 after 3, not in the middle of them).
        let t2 = tl.clone();
        points[0]
            .add_callback(move |_| t2.inc(1))
            .map_err(|(e, _)| e)
            .unwrap();
        tl.inc(3);
        assert_eq!(tl.value(), 4);
        // The close: the rest end with -ENOENT, after the others.
        drop(points);
        assert_eq!(Arc::strong_count(&tl), 1, "the only handle left");
        drop(tl);
        let got = order.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![(1, 0), (2, 0), (3, 0), (4, 0), (5, -2), (6, -2)],
            "signal order"
        );
    });
}

#[test]
fn locked_view_checks_what_is_its_own() {
    probe(
        "locked view: attachments and mappings of other buffers",
        || {
            use dmabuf::buf::{export, ExportInfo};
            use dmabuf::resv::Usage;
            use std::sync::atomic::Ordering::SeqCst;
            let ex = SimpleExporter::new(1).unwrap();
            let b = ex.export().unwrap();
            let other = buf();
            let d = dev();
            let a1 = b.attach(&d).unwrap();
            let a2 = b.attach(&d).unwrap();
            let mut g = b.resv().lock_no_ctx().unwrap();
            let mut v = b.locked(&mut g).unwrap();
            let m = v.map(&a1, Direction::ToDevice).unwrap();
            // Another attachment of the same buffer: refused, the mapping handed back mapped.
            let m = match v.unmap(&a2, m) {
                Ok(()) => panic!("unmap through another attachment succeeded"),
                Err((e, m)) => {
                    assert_eq!(e.errno(), EINVAL, "{e:?}");
                    m
                }
            };
            assert_eq!(ex.calls.unmap.load(SeqCst), 0, "nothing unmapped");
            // Fences go through the view (it dereferences to the guard).
            let f = pending();
            v.reserve_fences(1).unwrap();
            v.add_fence(&f, Usage::Write).unwrap();
            assert_eq!(b.resv().num_fences(), 1);
            {
                // Another buffer's view: the attachment is not its own.
                let mut og = other.resv().lock_no_ctx().unwrap();
                let ov = other.locked(&mut og).unwrap();
                let m = match ov.unmap(&a1, m) {
                    Ok(()) => panic!("unmap through another buffer's view succeeded"),
                    Err((e, m)) => {
                        assert_eq!(e.errno(), EINVAL, "{e:?}");
                        m
                    }
                };
                assert_eq!(ex.calls.unmap.load(SeqCst), 0, "still mapped");
                drop(og);
                v.unmap(&a1, m).map_err(|(e, _)| e).unwrap();
            }
            assert_eq!(ex.calls.unmap.load(SeqCst), 1, "unmapped once");
            drop(g);
            f.signal().unwrap();
            // Two buffers sharing one reservation object: one guard makes the view of each,
            // and each view refuses the other buffer's attachment.
            let shared = b.resv().clone();
            let mut info = ExportInfo::new("shared-resv", 4096, ex.clone());
            info.resv = Some(shared.clone());
            let c = export(info).unwrap();
            let ac = c.attach(&d).unwrap();
            let mut g = shared.lock_no_ctx().unwrap();
            errno(
                "map another buffer's attachment",
                EINVAL,
                b.locked(&mut g).unwrap().map(&ac, Direction::ToDevice),
            );
            let m = c
                .locked(&mut g)
                .unwrap()
                .map(&ac, Direction::ToDevice)
                .unwrap();
            c.locked(&mut g)
                .unwrap()
                .unmap(&ac, m)
                .map_err(|(e, _)| e)
                .unwrap();
            assert_eq!(c.locked(&mut g).unwrap().attachments().len(), 1);
            assert_eq!(b.locked(&mut g).unwrap().attachments().len(), 2);
            drop(g);
            drop((ac, a1, a2));
            assert!(dmabuf::buf::wait_deferred_detaches(Duration::from_secs(5)));
        },
    );
}
