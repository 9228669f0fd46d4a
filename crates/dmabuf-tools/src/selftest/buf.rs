//! Self-test scenarios for DMA-BUF: export validation, references, names, attachments
//! (static/dynamic, the legacy mapping cache), map/unmap and the fence waits of static
//! importers, pin, move_notify, vmap, mmap, CPU access, implicit sync, bufinfo, and every
//! entry of the locking convention.

use crate::buf::simple::{Calls, SimpleExporter};
use crate::buf::*;
use crate::device::Device;
use crate::error::Error;
use crate::fence::{Context, Fence};
use crate::resv::{ResvGuard, Usage, RESERVATION_WW_CLASS};
use crate::selftest::resv::{fence_on, new_fence};
use lockdep::selftest::Case;
use lockdep::ReportKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::selftest::{ensure, R};

fn s<T>(r: crate::Result<T>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

fn n(c: &AtomicUsize) -> usize {
    Calls::get(c)
}

/// Every DMA-BUF scenario.
pub(crate) fn cases() -> Vec<Case> {
    case_table![
        "dma-buf/export-validation" => export_validation,
        "dma-buf/refcount-release" => refcount_release,
        "dma-buf/name" => name,
        "dma-buf/llseek" => llseek,
        "dma-buf/static-attach-map" => static_attach_map,
        "dma-buf/dynamic-importer-static-exporter" => dyn_importer_static_exporter,
        "dma-buf/static-importer-dynamic-exporter" => static_importer_dyn_exporter,
        "dma-buf/cache-sgt-mapping-busy" => cache_sgt_busy,
        "dma-buf/static-importer-waits-kernel-fences" => static_waits_kernel,
        "dma-buf/dynamic-importer-does-not-wait" => dynamic_no_wait,
        "dma-buf/static-importer-dynamic-exporter-waits-at-attach" => static_on_dynamic_waits,
        "dma-buf/pin-unpin" => pin_unpin,
        "dma-buf/move-notify" => move_notify,
        "dma-buf/proof-of-another-buffer" => proof_other,
        "dma-buf/must-not-hold-lock" => must_not_hold,
        "dma-buf/relock-in-locked-callback" => relock_in_callback,
        "dma-buf/vmap-refcount" => vmap_refcount,
        "dma-buf/mmap" => mmap,
        "dma-buf/cpu-access-waits" => cpu_access_waits,
        "dma-buf/sync-ioctl" => sync_ioctl,
        "dma-buf/export-sync-fence" => export_sync_fence,
        "dma-buf/import-sync-fence" => import_sync_fence,
        "dma-buf/sync-file-fds" => sync_file_fds,
        "dma-buf/poll" => poll,
        "dma-buf/bufinfo" => bufinfo,
        "dma-buf/detach-rules" => detach_rules,
        "dma-buf/attach-failure" => attach_failure,
        "dma-buf/seed-shuffle-several-buffers" => seed_shuffle,
        "dma-buf/device-sees-data" => device_sees_data,
        "dma-buf/drop-mapping-under-own-lock-defers" => drop_mapping_under_lock,
        "dma-buf/drop-vmap-guard-under-own-lock-defers" => drop_vmap_guard_under_lock,
        "dma-buf/drop-under-another-buffers-lock-defers" => drop_under_other_lock,
        "dma-buf/drop-guard-with-live-mapping-detaches-at-last-unmap" =>
            drop_guard_with_live_mapping,
        "dma-buf/drop-guard-under-own-lock-defers" => drop_guard_under_own_lock,
        "dma-buf/drop-guard-then-last-unmap-under-lock" => drop_guard_then_unmap_under_lock,
    ]
}

/// An exporter that declares pin without unpin, or whatever caps it is given.
struct CapsOnly(Caps);

impl Exporter for CapsOnly {
    fn caps(&self) -> Caps {
        self.0
    }
    fn map(&self, _: &ResvGuard<'_>, _: &Attachment, _: Direction) -> crate::Result<SgTable> {
        Err(Error::NoMem)
    }
    fn unmap(&self, _: &ResvGuard<'_>, _: &Attachment, _: SgTable, _: Direction) {}
    fn release(&self, _: u64) {}
}

fn export_validation() -> R {
    let e = export(ExportInfo {
        exp_name: "x".into(),
        size: 4096,
        flags: FileFlags::RDWR,
        resv: None,
        ops: None,
    });
    ensure(matches!(e, Err(Error::Invalid(_))), "no ops: EINVAL")?;
    let half = Caps {
        pin: true,
        ..Caps::default()
    };
    let e = export(ExportInfo::new("x", 4096, Arc::new(CapsOnly(half))));
    ensure(
        matches!(e, Err(Error::Invalid(_))),
        "pin without unpin: EINVAL",
    )?;
    let half = Caps {
        unpin: true,
        ..Caps::default()
    };
    let e = export(ExportInfo::new("x", 4096, Arc::new(CapsOnly(half))));
    ensure(
        matches!(e, Err(Error::Invalid(_))),
        "unpin without pin: EINVAL",
    )?;
    let both = Caps {
        pin: true,
        unpin: true,
        cache_sgt_mapping: true,
        ..Caps::default()
    };
    let e = export(ExportInfo::new("x", 4096, Arc::new(CapsOnly(both))));
    ensure(
        matches!(e, Err(Error::Invalid(_))),
        "cache_sgt_mapping with pin: EINVAL",
    )?;
    let e = export(ExportInfo::new("x", 0, Arc::new(CapsOnly(Caps::default()))));
    ensure(matches!(e, Err(Error::Invalid(_))), "size 0: EINVAL")?;
    // A shared reservation object is used as given.
    let resv = Arc::new(crate::resv::Resv::new());
    let mut info = ExportInfo::new("x", 4096, Arc::new(CapsOnly(Caps::default())));
    info.resv = Some(resv.clone());
    let b = s(export(info))?;
    ensure(
        Arc::ptr_eq(b.resv(), &resv) && !b.has_embedded_resv(),
        "shared resv",
    )?;
    let b2 = s(export(ExportInfo::new(
        "x",
        4096,
        Arc::new(CapsOnly(Caps::default())),
    )))?;
    ensure(b2.has_embedded_resv(), "embedded resv")?;
    ensure(b.ino() != b2.ino(), "unique inode numbers")?;
    Ok(())
}

/// The exporter's release ran exactly once, at the last reference: ours, or — a moment
/// later — that of a bufinfo walk running beside this case (it holds every live buffer
/// while it prints).
fn released_once(calls: &crate::buf::simple::Calls, what: &str) -> R {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while n(&calls.release) == 0 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    ensure(n(&calls.release) == 1, what)
}

fn refcount_release() -> R {
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    let ino = b.ino();
    let b2 = b.clone();
    // At least 2: a concurrent bufinfo walk may hold one more for a moment.
    ensure(b.ref_count() >= 2, "clone takes a reference")?;
    ensure(
        live_buffers().iter().any(|x| x.ino() == ino),
        "listed while live",
    )?;
    drop(b);
    ensure(n(&ex.calls.release) == 0, "not released while referenced")?;
    drop(b2);
    released_once(&ex.calls, "released once at the last drop")?;
    ensure(
        !live_buffers().iter().any(|x| x.ino() == ino),
        "unlisted after release",
    )
}

fn name() -> R {
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    ensure(b.name().is_none(), "no name at first")?;
    let ok = "a".repeat(NAME_MAX);
    s(b.set_name(&ok))?;
    let long = "b".repeat(NAME_MAX + 1);
    let e = b.set_name(&long);
    ensure(
        e.as_ref().is_err_and(|e| e.errno() == 22),
        "32 bytes: EINVAL",
    )?;
    ensure(
        b.name().as_deref() == Some(ok.as_str()),
        "name unchanged by the failure",
    )?;
    // Any time, even attached.
    let dev = Device::simple("name-dev");
    let _a = s(b.attach(&dev))?;
    s(b.set_name("attached"))?;
    ensure(
        b.name().as_deref() == Some("attached"),
        "renamed while attached",
    )
}

fn llseek() -> R {
    let ex = s(SimpleExporter::new(2))?;
    let b = s(ex.export())?;
    ensure(b.llseek(0, Whence::Set).ok() == Some(0), "SEEK_SET 0 -> 0")?;
    ensure(
        b.llseek(0, Whence::End).ok() == Some(8192),
        "SEEK_END 0 -> size",
    )?;
    ensure(
        b.llseek(0, Whence::Cur).is_err_and(|e| e.errno() == 22),
        "SEEK_CUR: EINVAL",
    )?;
    ensure(
        b.llseek(1, Whence::Set).is_err_and(|e| e.errno() == 22),
        "offset 1: EINVAL",
    )?;
    ensure(
        b.llseek(-1, Whence::End).is_err_and(|e| e.errno() == 22),
        "offset -1: EINVAL",
    )
}

fn static_attach_map() -> R {
    let ex = s(SimpleExporter::new(2))?;
    let b = s(ex.export())?;
    let dev = Device::simple("static-dev");
    let a = s(b.attach(&dev))?;
    ensure(
        n(&ex.calls.attach) == 1 && !a.is_dynamic(),
        "attached statically",
    )?;
    ensure(
        !a.has_cached_mapping(),
        "no mapping at attach when both are static",
    )?;
    {
        let mut g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
        let v = s(b.locked(&mut g))?;
        let m = s(v.map(&a, Direction::ToDevice))?;
        ensure(n(&ex.calls.map) == 1, "exporter map called")?;
        ensure(m.table().total_len() == b.size(), "table covers the buffer")?;
        v.unmap(&a, m).map_err(|(e, _)| e.to_string())?;
        ensure(n(&ex.calls.unmap) == 1, "exporter unmap called")?;
    }
    let m = s(a.map_unlocked(Direction::FromDevice))?;
    drop(m);
    ensure(n(&ex.calls.unmap) == 2, "dropping a mapping unmaps it")?;
    a.detach().map_err(|(e, _)| e.to_string())?;
    ensure(n(&ex.calls.detach) == 1, "exporter detach called")?;
    ensure(
        n(&ex.calls.lock_state_wrong) == 0,
        "every callback saw the right lock state",
    )
}

struct CountingImporter {
    moves: AtomicUsize,
    held_when_called: AtomicUsize,
}

impl Importer for CountingImporter {
    fn move_notify(&self, _lock: &ResvGuard<'_>, _att: &Attachment) {
        self.moves.fetch_add(1, Ordering::SeqCst);
        if !lockdep::enabled() || lockdep::is_held(RESERVATION_WW_CLASS.lock_class()) {
            self.held_when_called.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn importer() -> Arc<CountingImporter> {
    Arc::new(CountingImporter {
        moves: AtomicUsize::new(0),
        held_when_called: AtomicUsize::new(0),
    })
}

fn dyn_importer_static_exporter() -> R {
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    let dev = Device::simple("dyn-dev");
    let a = s(b.dynamic_attach(&dev, Some(importer())))?;
    ensure(
        a.is_dynamic() && a.has_cached_mapping(),
        "mapped and cached at attach",
    )?;
    ensure(
        n(&ex.calls.map) == 1 && n(&ex.calls.pin) == 0,
        "one BIDIRECTIONAL map, no pin",
    )?;
    let mut g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    let v = s(b.locked(&mut g))?;
    let m1 = s(v.map(&a, Direction::ToDevice))?;
    let m2 = s(v.map(&a, Direction::FromDevice))?;
    ensure(
        m1.is_cached() && m2.is_cached(),
        "both served from the cache",
    )?;
    ensure(n(&ex.calls.map) == 1, "exporter not called again")?;
    v.unmap(&a, m1).map_err(|(e, _)| e.to_string())?;
    v.unmap(&a, m2).map_err(|(e, _)| e.to_string())?;
    ensure(n(&ex.calls.unmap) == 0, "unmapping the cache is a no-op")?;
    drop(g);
    a.detach().map_err(|(e, _)| e.to_string())?;
    ensure(n(&ex.calls.unmap) == 1, "detach unmaps the cached mapping")
}

fn static_importer_dyn_exporter() -> R {
    let ex = s(SimpleExporter::dynamic(1))?;
    let b = s(ex.export())?;
    ensure(b.is_dynamic(), "exporter with pin is dynamic")?;
    let dev = Device::simple("pin-dev");
    let a = s(b.attach(&dev))?;
    ensure(
        n(&ex.calls.pin) == 1,
        "pinned at attach for the attachment's life",
    )?;
    ensure(a.has_cached_mapping(), "mapped at attach")?;
    let m = s(a.map_unlocked(Direction::Bidirectional))?;
    ensure(m.is_cached(), "cached")?;
    drop(m);
    ensure(n(&ex.calls.unpin) == 0, "still pinned")?;
    a.detach().map_err(|(e, _)| e.to_string())?;
    ensure(
        n(&ex.calls.unpin) == 1 && n(&ex.calls.unmap) == 1,
        "detach unmaps and unpins",
    )?;
    ensure(
        n(&ex.calls.lock_state_wrong) == 0,
        "locked callbacks ran locked",
    )
}

fn cache_sgt_busy() -> R {
    let ex = s(SimpleExporter::caching(1))?;
    let b = s(ex.export())?;
    let dev = Device::simple("cache-dev");
    let a = s(b.attach(&dev))?;
    let mut g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    let v = s(b.locked(&mut g))?;
    let m = s(v.map(&a, Direction::ToDevice))?;
    ensure(m.is_cached(), "first map cached")?;
    let again = s(v.map(&a, Direction::ToDevice))?;
    ensure(
        n(&ex.calls.map) == 1,
        "same direction served from the cache",
    )?;
    let e = v.map(&a, Direction::FromDevice);
    ensure(
        e.as_ref()
            .is_err_and(|e| matches!(e, Error::Busy(_)) && e.errno() == 16),
        "incompatible direction: EBUSY",
    )?;
    v.unmap(&a, m).map_err(|(e, _)| e.to_string())?;
    v.unmap(&a, again).map_err(|(e, _)| e.to_string())?;
    Ok(())
}

fn add(b: &DmaBuf, f: &Fence, u: Usage) -> R {
    let mut g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    s(g.reserve_fences(1))?;
    s(g.add_fence(f, u))
}

fn static_waits_kernel() -> R {
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    let dev = Device::simple("wait-dev");
    let a = s(b.attach(&dev))?;
    let f = new_fence();
    add(&b, &f, Usage::Kernel)?;
    let f2 = f.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        f2.signal()
    });
    let m = s(a.map_unlocked(Direction::ToDevice))?;
    ensure(
        f.is_signaled(),
        "a static importer's map waited for the KERNEL fence",
    )?;
    drop(m);
    s(t.join().map_err(|_| Error::Invalid("join")).and_then(|r| r))?;
    // WRITE/READ fences are not waited for by map.
    let w = new_fence();
    add(&b, &w, Usage::Write)?;
    let m = s(a.map_unlocked(Direction::ToDevice))?;
    ensure(
        !w.is_signaled(),
        "implicit-sync fences are not map's business",
    )?;
    drop(m);
    s(w.signal())
}

/// The mapping a static importer of a dynamic exporter gets at attach is made after the
/// KERNEL fences (moves, clears) have signalled.
fn static_on_dynamic_waits() -> R {
    let ex = s(SimpleExporter::dynamic(1))?;
    let b = s(ex.export())?;
    let f = new_fence();
    add(&b, &f, Usage::Kernel)?;
    let f2 = f.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        f2.signal()
    });
    let dev = Device::simple("wait-at-attach-dev");
    let a = s(b.attach(&dev))?;
    ensure(f.is_signaled(), "attach waited for the KERNEL fence")?;
    ensure(a.has_cached_mapping(), "mapped and cached at attach")?;
    s(t.join().map_err(|_| Error::Invalid("join")).and_then(|r| r))?;
    Ok(())
}

fn dynamic_no_wait() -> R {
    let ex = s(SimpleExporter::dynamic(1))?;
    let b = s(ex.export())?;
    let dev = Device::simple("nowait-dev");
    let a = s(b.dynamic_attach(&dev, Some(importer())))?;
    let f = new_fence();
    add(&b, &f, Usage::Kernel)?;
    let m = s(a.map_unlocked(Direction::ToDevice))?;
    ensure(!f.is_signaled(), "a dynamic importer's map does not wait")?;
    ensure(!m.is_cached(), "dynamic on dynamic: nothing cached")?;
    drop(m);
    s(f.signal())
}

fn pin_unpin() -> R {
    let ex = s(SimpleExporter::dynamic(1))?;
    let b = s(ex.export())?;
    let dev = Device::simple("pin2-dev");
    let st = s(b.attach(&dev))?;
    let dy = s(b.dynamic_attach(&dev, Some(importer())))?;
    let mut g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    let v = s(b.locked(&mut g))?;
    let pins = n(&ex.calls.pin);
    let e = v.pin(&st);
    ensure(
        e.is_err_and(|e| e.errno() == 22),
        "static importers may not pin",
    )?;
    let e = v.unpin(&dy);
    ensure(e.is_err_and(|e| e.errno() == 22), "unpin without pin")?;
    s(v.pin(&dy))?;
    ensure(n(&ex.calls.pin) == pins + 1, "exporter pin called")?;
    s(v.unpin(&dy))?;
    ensure(n(&ex.calls.unpin) == 1, "exporter unpin called")?;
    Ok(())
}

fn move_notify() -> R {
    let ex = s(SimpleExporter::dynamic(1))?;
    let b = s(ex.export())?;
    let dev = Device::simple("move-dev");
    let (i1, i2) = (importer(), importer());
    let _a1 = s(b.dynamic_attach(&dev, Some(i1.clone())))?;
    let _a2 = s(b.dynamic_attach(&dev, Some(i2.clone())))?;
    let _st = s(b.attach(&dev))?;
    {
        let mut g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
        let v = s(b.locked(&mut g))?;
        v.move_notify();
        ensure(v.attachments().len() == 3, "three attachments listed")?;
    }
    for i in [&i1, &i2] {
        ensure(
            i.moves.load(Ordering::SeqCst) == 1,
            "each dynamic importer told once",
        )?;
        ensure(
            i.held_when_called.load(Ordering::SeqCst) == 1,
            "with the lock held",
        )?;
    }
    let other = s(s(SimpleExporter::new(1))?.export())?;
    let mut g = other.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    ensure(
        b.locked(&mut g).is_err_and(|e| e.errno() == 22),
        "another buffer's lock: EINVAL",
    )?;
    ensure(i1.moves.load(Ordering::SeqCst) == 1, "nobody told on error")
}

fn proof_other() -> R {
    let ex = s(SimpleExporter::dynamic(1))?;
    let b = s(ex.export())?;
    let other = s(s(SimpleExporter::new(1))?.export())?;
    let dev = Device::simple("proof-dev");
    let a = s(b.dynamic_attach(&dev, Some(importer())))?;
    let mut g = other.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    let maps = n(&ex.calls.map);
    // A guard of another buffer's reservation makes no locked view of this one...
    ensure(
        b.locked(&mut g).is_err_and(|e| e.errno() == 22),
        "locked view",
    )?;
    // ...and the view of the other buffer refuses this buffer's attachment.
    let v = s(other.locked(&mut g))?;
    ensure(
        v.map(&a, Direction::ToDevice)
            .is_err_and(|e| e.errno() == 22),
        "map",
    )?;
    ensure(v.pin(&a).is_err_and(|e| e.errno() == 22), "pin")?;
    ensure(v.unpin(&a).is_err_and(|e| e.errno() == 22), "unpin")?;
    ensure(v.attachments().is_empty(), "attachment list")?;
    ensure(
        n(&ex.calls.map) == maps && n(&ex.calls.pin) == 0,
        "exporter never called",
    )
}

fn expect_misuse<T>(f: impl FnOnce() -> crate::Result<T>, what: &str) -> R {
    let (r, reports) = lockdep::capture(f);
    ensure(
        r.is_err_and(|e| e.errno() == 22),
        &format!("{what}: EINVAL"),
    )?;
    if lockdep::enabled() {
        ensure(
            reports.iter().any(|r| r.kind == ReportKind::Misuse),
            &format!("{what}: a lockdep Misuse report, got {reports:?}"),
        )?;
    }
    Ok(())
}

fn must_not_hold() -> R {
    if !lockdep::enabled() {
        return Ok(());
    }
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    let dev = Device::simple("nohold-dev");
    let a = s(b.attach(&dev))?;
    let other = s(s(SimpleExporter::new(1))?.export())?;
    let g = other.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    expect_misuse(|| b.attach(&dev).map(|_| ()), "attach")?;
    expect_misuse(
        || b.begin_cpu_access(Direction::ToDevice),
        "begin_cpu_access",
    )?;
    expect_misuse(|| b.end_cpu_access(Direction::ToDevice), "end_cpu_access")?;
    expect_misuse(
        || a.map_unlocked(Direction::ToDevice).map(|_| ()),
        "map_unlocked",
    )?;
    expect_misuse(|| b.vmap_unlocked().map(|_| ()), "vmap_unlocked")?;
    expect_misuse(|| b.mmap(0, 1, false).map(|_| ()), "mmap")?;
    expect_misuse(|| export(ExportInfo::new("x", 4096, ex.clone())), "export")?;
    let f = new_fence();
    expect_misuse(
        || b.import_sync_fence(sync_flags::READ, &f),
        "import sync file",
    )?;
    drop(g);
    s(f.signal())?;
    ensure(
        n(&ex.calls.attach) == 1 && n(&ex.calls.begin_cpu) == 0,
        "nothing reached the exporter",
    )
}

/// An exporter whose map locks the reservation object again.
struct Relocker;

impl Exporter for Relocker {
    fn map(&self, _: &ResvGuard<'_>, att: &Attachment, _: Direction) -> crate::Result<SgTable> {
        let _g = att.buf().resv().lock_no_ctx()?;
        Err(Error::NoMem)
    }
    fn unmap(&self, _: &ResvGuard<'_>, _: &Attachment, _: SgTable, _: Direction) {}
    fn release(&self, _: u64) {}
}

fn relock_in_callback() -> R {
    if !lockdep::enabled() {
        return Ok(());
    }
    let b = s(export(ExportInfo::new("relock", 4096, Arc::new(Relocker))))?;
    let dev = Device::simple("relock-dev");
    let a = s(b.attach(&dev))?;
    let (r, reports) = lockdep::capture(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            a.map_unlocked(Direction::ToDevice).map(|_| ())
        }))
    });
    ensure(
        reports
            .iter()
            .any(|r| r.kind == ReportKind::RecursiveLocking),
        &format!("a recursive-locking report, got {reports:?}"),
    )?;
    ensure(
        !matches!(r, Ok(Ok(()))),
        "the relocking map did not succeed",
    )?;
    // No lock left behind. (Another thread may hold it for a moment: bufinfo walks
    // every live buffer and locks each, so poll rather than test `is_locked` once.)
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if b.resv().try_lock().is_some() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err("the reservation lock was left held".into());
        }
        std::thread::yield_now();
    }
}

fn vmap_refcount() -> R {
    let ex = s(SimpleExporter::new(2))?;
    let b = s(ex.export())?;
    let mut g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    let v = s(b.locked(&mut g))?;
    let v1 = s(v.vmap())?;
    let v2 = s(v.vmap())?;
    ensure(n(&ex.calls.vmap) == 1, "exporter vmap called once")?;
    s(v1.write_at(4095, b"xy"))?;
    let mut got = [0u8; 2];
    s(v2.read_at(4095, &mut got))?;
    ensure(&got == b"xy", "both see the same memory, across pages")?;
    ensure(
        v1.read_at(8191, &mut got).is_err_and(|e| e.errno() == 22),
        "bounds",
    )?;
    let stale = v1.clone();
    s(v.vunmap(v1))?;
    ensure(n(&ex.calls.vunmap) == 0, "not the last user")?;
    s(v.vunmap(v2))?;
    ensure(n(&ex.calls.vunmap) == 1, "last user calls vunmap")?;
    ensure(
        v.vunmap(stale).is_err_and(|e| e.errno() == 22),
        "vunmap with nothing mapped",
    )?;
    drop(g);
    let nv = s(export(ExportInfo::new(
        "novmap",
        4096,
        Arc::new(CapsOnly(Caps::default())),
    )))?;
    let mut g = nv.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    let v = s(nv.locked(&mut g))?;
    ensure(
        v.vmap().is_err_and(|e| e.errno() == 22),
        "no vmap op: EINVAL",
    )?;
    drop(g);
    let guard = s(b.vmap_unlocked())?;
    ensure(guard.len() == b.size(), "guard maps the whole buffer")?;
    drop(guard);
    ensure(n(&ex.calls.vunmap) == 2, "dropping the guard vunmaps")
}

fn mmap() -> R {
    let ex = s(SimpleExporter::new(4))?;
    let b = s(ex.export())?;
    ensure(
        b.mmap(3, 2, false).is_err_and(|e| e.errno() == 22),
        "past the end: EINVAL",
    )?;
    ensure(
        b.mmap(0, 0, false).is_err_and(|e| e.errno() == 22),
        "zero pages: EINVAL",
    )?;
    ensure(
        b.mmap(usize::MAX, 2, false).is_err_and(|e| e.errno() == 75),
        "wrap: EOVERFLOW",
    )?;
    let m = s(b.mmap(1, 2, true))?;
    s(m.mapping().write_at(0, b"user"))?;
    let mut got = [0u8; 4];
    s(ex.memory().map().read_at(4096, &mut got))?;
    ensure(
        &got == b"user",
        "the user mapping is the buffer's memory at the offset",
    )?;
    let mut info = ExportInfo::new("ro", 4 * 4096, ex.clone());
    info.flags = FileFlags::RDONLY;
    let ro = s(export(info))?;
    ensure(
        ro.mmap(0, 1, true).is_err_and(|e| e.errno() == 13),
        "writable map of RO: EACCES",
    )?;
    let r = s(ro.mmap(0, 1, false))?;
    ensure(!r.mapping().is_writable(), "read-only mapping")?;
    let nm = s(export(ExportInfo::new(
        "nommap",
        4096,
        Arc::new(CapsOnly(Caps::default())),
    )))?;
    ensure(
        nm.mmap(0, 1, false).is_err_and(|e| e.errno() == 22),
        "no mmap op: EINVAL",
    )?;
    // Whole pages only: a 5000-byte buffer maps one page, not two.
    let odd = s(export(ExportInfo::new("odd", 5000, ex.clone())))?;
    ensure(
        odd.mmap(0, 2, false).is_err_and(|e| e.errno() == 22),
        "partial page: EINVAL",
    )?;
    drop(s(odd.mmap(0, 1, false))?);
    // The access mode is checked before anything else (the VFS runs first).
    let mut info = ExportInfo::new("ro-nommap", 4096, Arc::new(CapsOnly(Caps::default())));
    info.flags = FileFlags::RDONLY;
    let ro_nommap = s(export(info))?;
    ensure(
        ro_nommap.mmap(0, 1, true).is_err_and(|e| e.errno() == 13),
        "writable map of RO without mmap op: EACCES first",
    )?;
    Ok(())
}

fn cpu_access_waits() -> R {
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    let (w, r) = (new_fence(), new_fence());
    add(&b, &w, Usage::Write)?;
    add(&b, &r, Usage::Read)?;
    // Reading waits for the writer only.
    let w2 = w.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        w2.signal()
    });
    s(b.begin_cpu_access(Direction::FromDevice))?;
    ensure(
        w.is_signaled() && !r.is_signaled(),
        "a read waited for the writer only",
    )?;
    s(b.end_cpu_access(Direction::FromDevice))?;
    s(t.join().map_err(|_| Error::Invalid("join")).and_then(|r| r))?;
    // Writing waits for the reader too; interruptible.
    let intr = crate::Interrupt::new();
    intr.interrupt();
    let e = b.begin_cpu_access_interruptible(Direction::ToDevice, &intr);
    ensure(
        e.is_err_and(|e| matches!(e, Error::Interrupted)),
        "a write waits for readers",
    )?;
    s(r.signal())?;
    {
        let acc = s(b.cpu_access(Direction::Bidirectional))?;
        ensure(
            acc.direction() == Direction::Bidirectional,
            "guard direction",
        )?;
    }
    ensure(
        n(&ex.calls.begin_cpu) == 3 && n(&ex.calls.end_cpu) == 2,
        "hooks called",
    )?;
    // Bookkeeping fences never block CPU access.
    let bk = new_fence();
    add(&b, &bk, Usage::Bookkeep)?;
    s(b.begin_cpu_access(Direction::ToDevice))?;
    s(b.end_cpu_access(Direction::ToDevice))?;
    s(bk.signal())
}

fn sync_ioctl() -> R {
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    ensure(
        b.sync_ioctl(8).is_err_and(|e| e.errno() == 22),
        "unknown bit: EINVAL",
    )?;
    ensure(
        b.sync_ioctl(0).is_err_and(|e| e.errno() == 22),
        "no READ/WRITE: EINVAL",
    )?;
    ensure(
        b.sync_ioctl(sync_flags::END)
            .is_err_and(|e| e.errno() == 22),
        "END alone: EINVAL",
    )?;
    ensure(n(&ex.calls.begin_cpu) == 0, "nothing called on bad flags")?;
    s(b.sync_ioctl(sync_flags::START | sync_flags::RW))?;
    s(b.sync_ioctl(sync_flags::END | sync_flags::RW))?;
    ensure(
        n(&ex.calls.begin_cpu) == 1 && n(&ex.calls.end_cpu) == 1,
        "START then END",
    )
}

fn export_sync_fence() -> R {
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    for bad in [0, 4, 8 | sync_flags::READ] {
        ensure(
            b.export_sync_fence(bad).is_err_and(|e| e.errno() == 22),
            "bad flags: EINVAL",
        )?;
    }
    let none = s(b.export_sync_fence(sync_flags::RW))?;
    ensure(none.is_signaled(), "nothing pending: a signalled stub")?;
    let (w, r) = (new_fence(), new_fence());
    add(&b, &w, Usage::Write)?;
    add(&b, &r, Usage::Read)?;
    let for_read = s(b.export_sync_fence(sync_flags::READ))?;
    ensure(
        Fence::ptr_eq(&for_read, &w),
        "READ: the writers only (one: itself)",
    )?;
    let for_write = s(b.export_sync_fence(sync_flags::WRITE))?;
    ensure(
        for_write.as_array().is_some_and(|a| a.num_fences() == 2),
        "WRITE: everyone",
    )?;
    // A snapshot: a fence added later is not in it.
    let later = new_fence();
    add(&b, &later, Usage::Write)?;
    s(w.signal())?;
    s(r.signal())?;
    ensure(
        for_write.is_signaled(),
        "snapshot signalled without the later fence",
    )?;
    s(later.signal())
}

fn import_sync_fence() -> R {
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    let f = new_fence();
    ensure(
        b.import_sync_fence(0, &f).is_err_and(|e| e.errno() == 22),
        "no flags: EINVAL",
    )?;
    ensure(
        b.import_sync_fence(4, &f).is_err_and(|e| e.errno() == 22),
        "bad flags: EINVAL",
    )?;
    ensure(b.resv().num_fences() == 0, "nothing added on error")?;
    s(b.import_sync_fence(sync_flags::WRITE, &f))?;
    let g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    let v = g.fences(Usage::Bookkeep);
    ensure(
        v.len() == 1 && v[0].1 == Usage::Write,
        "WRITE: a write fence",
    )?;
    drop(g);
    let (x, y) = (new_fence(), new_fence());
    let arr = s(crate::fence::FenceArray::create(
        vec![x.clone(), y.clone()],
        Context::new(),
        1,
        false,
    ))?;
    s(b.import_sync_fence(sync_flags::READ, &arr))?;
    let g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    let v = g.fences(Usage::Bookkeep);
    ensure(v.len() == 3, "an array is unwrapped into its leaves")?;
    ensure(
        v[1].1 == Usage::Read && Fence::ptr_eq(&v[1].0, &x),
        "leaves added as READ",
    )?;
    drop(g);
    for f in [f, x, y] {
        s(f.signal())?;
    }
    Ok(())
}

/// Explicit → implicit → explicit through real descriptors.
fn sync_file_fds() -> R {
    use rustix::fd::AsFd;
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    let w = new_fence();
    let sf = s(crate::sync_file::SyncFile::new(w.clone()))?;
    let (r, w_end) = s(rustix::pipe::pipe().map_err(Error::from))?;
    drop(w_end);
    let e = b.import_sync_file(sync_flags::WRITE, r.as_fd());
    ensure(
        e.is_err_and(|e| e.errno() == 22),
        "a pipe is not a sync file: EINVAL",
    )?;
    ensure(
        b.import_sync_file(0, sf.as_fd())
            .is_err_and(|e| e.errno() == 22),
        "bad flags",
    )?;
    ensure(b.resv().num_fences() == 0, "nothing imported on error")?;
    s(b.import_sync_file(sync_flags::WRITE, sf.as_fd()))?;
    let out = s(b.export_sync_file(sync_flags::READ))?;
    ensure(
        !out.poll(),
        "exported sync file pending while the writer is",
    )?;
    s(w.signal())?;
    let ready = s(crate::sync_file::poll_readable(
        out.as_fd(),
        Some(Duration::from_secs(5)),
    ))?;
    ensure(
        ready,
        "exported sync file becomes readable when the writer signals",
    )
}

fn poll() -> R {
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    ensure(b.poll() == (true, true), "idle: readable and writable")?;
    let r = new_fence();
    add(&b, &r, Usage::Read)?;
    ensure(b.poll() == (true, false), "a reader blocks writing only")?;
    let k = fence_on(Context::new(), 1);
    add(&b, &k, Usage::Kernel)?;
    ensure(b.poll() == (false, false), "a kernel fence blocks both")?;
    s(k.signal())?;
    s(r.signal())?;
    let bk = new_fence();
    add(&b, &bk, Usage::Bookkeep)?;
    ensure(b.poll() == (true, true), "bookkeeping never counts")?;
    let w = new_fence();
    add(&b, &w, Usage::Write)?;
    ensure(
        b.poll_wait(true, false, Duration::from_millis(1)) == (false, false),
        "times out",
    )?;
    s(w.signal())?;
    ensure(
        b.poll_wait(true, true, Duration::from_secs(1)) == (true, true),
        "ready",
    )?;
    s(bk.signal())
}

fn bufinfo() -> R {
    let ex = s(SimpleExporter::new(3))?;
    let b = s(ex.export())?;
    s(b.set_name("bufinfo-test"))?;
    let dev = Device::simple("bufinfo-dev");
    let _a = s(b.attach(&dev))?;
    let f = new_fence();
    add(&b, &f, Usage::Write)?;
    let text = bufinfo::bufinfo();
    ensure(text.starts_with("\nDma-buf Objects:\n"), "header")?;
    // size, flags, mode, count (1: ours; the attachment holds no file reference — more
    // only while another walk holds one), exp_name, ino, name.
    let head = format!("{:08}\t{:08x}\t{:08x}\t", 3 * 4096, 2, 6);
    let tail = format!("\tsimple\t{:08}\tbufinfo-test", b.ino());
    let line = text
        .lines()
        .find(|l| l.starts_with(&head) && l.ends_with(&tail))
        .ok_or_else(|| format!("no buffer line {head:?}…{tail:?} in {text}"))?;
    let count: usize = line[head.len()..line.len() - tail.len()]
        .parse()
        .map_err(|_| format!("count field of {line:?}"))?;
    ensure(count >= 1, &format!("file count {count}"))?;
    ensure(
        text.contains("\twrite fence: selftest resv seq 1 unsignalled\n"),
        "fence line",
    )?;
    ensure(
        text.contains("\tAttached Devices:\n\tbufinfo-dev\nTotal 1 devices attached\n"),
        "devices",
    )?;
    ensure(
        text.contains("\nTotal ") && text.trim_end().ends_with("bytes"),
        "totals",
    )?;
    s(f.signal())
}

fn detach_rules() -> R {
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    let dev = Device::simple("detach-dev");
    let a = s(b.attach(&dev))?;
    let m = s(a.map_unlocked(Direction::ToDevice))?;
    let a = match a.detach() {
        Ok(()) => return Err("detach with a live mapping must fail".into()),
        Err((e, a)) => {
            ensure(e.errno() == 16, "EBUSY")?;
            a
        }
    };
    ensure(
        !a.is_detached() && n(&ex.calls.detach) == 0,
        "still attached",
    )?;
    drop(m);
    let handle = a.attachment();
    a.detach().map_err(|(e, _)| e.to_string())?;
    ensure(handle.is_detached(), "detached")?;
    let e = handle.map_unlocked(Direction::ToDevice);
    ensure(
        e.is_err_and(|e| e.errno() == 22),
        "map through a detached handle: EINVAL",
    )?;
    ensure(n(&ex.calls.detach) == 1, "exporter detach once")
}

fn attach_failure() -> R {
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    let dev = Device::simple("fail-dev");
    ex.fail_attach.store(true, Ordering::SeqCst);
    let e = b.attach(&dev);
    ensure(
        e.is_err_and(|e| e.errno() == 16),
        "exporter's EBUSY passed through",
    )?;
    let mut g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    let v = s(b.locked(&mut g))?;
    ensure(v.attachments().is_empty(), "nothing listed")?;
    drop(g);
    // A map failure at attach (dynamic importer, static exporter) undoes the attach.
    ex.fail_map.store(true, Ordering::SeqCst);
    let e = b.dynamic_attach(&dev, Some(importer()));
    ensure(
        e.is_err_and(|e| e.errno() == 12),
        "map failure at attach: ENOMEM",
    )?;
    ensure(n(&ex.calls.detach) == 1, "exporter detach undid the attach")?;
    let mut g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    let v = s(b.locked(&mut g))?;
    ensure(v.attachments().is_empty(), "still nothing listed")
}

/// The design's seed scenario: an importer attaches (unlocked), then locks several buffers
/// at once to shuffle them for one job, maps them all under the locks, and unmaps.
fn seed_shuffle() -> R {
    let dev = Device::simple("shuffle-dev");
    let exs: Vec<_> = (0..3)
        .map(|_| SimpleExporter::new(1))
        .collect::<crate::Result<_>>()
        .map_err(|e| e.to_string())?;
    let bufs: Vec<DmaBuf> = exs
        .iter()
        .map(|e| e.export())
        .collect::<crate::Result<_>>()
        .map_err(|e| e.to_string())?;
    let atts: Vec<AttachGuard> = bufs
        .iter()
        .map(|b| b.attach(&dev))
        .collect::<crate::Result<_>>()
        .map_err(|e| e.to_string())?;
    let ctx = crate::ww::AcquireCtx::new(&RESERVATION_WW_CLASS);
    {
        let resvs: Vec<&crate::resv::Resv> = bufs.iter().map(|b| &**b.resv()).collect();
        let mut guards = s(crate::resv::exec::lock_all(&ctx, &resvs, None))?;
        let mut maps = Vec::new();
        for ((b, a), g) in bufs.iter().zip(&atts).zip(&mut guards) {
            maps.push(s(s(b.locked(g))?.map(a, Direction::Bidirectional))?);
        }
        for (((b, a), g), m) in bufs.iter().zip(&atts).zip(&mut guards).zip(maps) {
            s(b.locked(g))?
                .unmap(a, m)
                .map_err(|(e, _)| e.to_string())?;
        }
    }
    s(ctx.fini())?;
    for e in &exs {
        ensure(
            n(&e.calls.map) == 1 && n(&e.calls.unmap) == 1,
            "each mapped once",
        )?;
        ensure(n(&e.calls.lock_state_wrong) == 0, "lock states right")?;
    }
    Ok(())
}

/// The table a device gets addresses the buffer's memory through its IOMMU.
fn device_sees_data() -> R {
    let ex = s(SimpleExporter::new(2))?;
    let b = s(ex.export())?;
    s(ex.memory().map().write_at(5000, b"frame"))?;
    let dev = Device::simple("dma-dev");
    let a = s(b.attach(&dev))?;
    let m = s(a.map_unlocked(Direction::Bidirectional))?;
    let addr = m.table().entries()[0].dma_addr;
    let mut got = [0u8; 5];
    s(dev.dma().iommu().read(addr + 5000, &mut got))?;
    ensure(&got == b"frame", "device read through its IOMMU")?;
    drop(m);
    ensure(
        dev.dma().iommu().read(addr, &mut got).is_err(),
        "unmapped: the device faults",
    )?;
    ensure(
        dev.dma().iommu().take_faults().len() == 1,
        "one fault recorded",
    )
}

/// Drop `f`'s value under capture: exactly one Misuse report (lockdep on).
fn drop_reports_once<T>(v: T, what: &str) -> R {
    let ((), reports) = lockdep::capture(move || drop(v));
    if lockdep::enabled() {
        ensure(
            reports.len() == 1 && reports[0].kind == ReportKind::Misuse,
            &format!("{what}: one Misuse report, got {reports:?}"),
        )?;
    }
    Ok(())
}

fn unmap_ok(v: &LockedBuf<'_, '_>, a: &Attachment, m: SgMapping) -> R {
    v.unmap(a, m).map_err(|(e, _)| e.to_string())
}

/// A mapping dropped under its own buffer's lock: reported, the unmap deferred (no
/// deadlock, no leak), then settled by the next locked map — and by detach, which then
/// succeeds; the exporter's release runs at the last reference.
fn drop_mapping_under_lock() -> R {
    if !lockdep::enabled() {
        // Without lockdep the drop cannot tell and deadlocks (documented).
        return Ok(());
    }
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    let dev = Device::simple("defer-map-dev");
    let a = s(b.attach(&dev))?;
    let mut g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    let v = s(b.locked(&mut g))?;
    let m = s(v.map(&a, Direction::ToDevice))?;
    drop_reports_once(m, "mapping dropped under its own lock")?;
    ensure(n(&ex.calls.unmap) == 0, "the unmap is deferred")?;
    let m2 = s(v.map(&a, Direction::ToDevice))?;
    ensure(n(&ex.calls.unmap) == 1, "the next locked map settles it")?;
    unmap_ok(&v, &a, m2)?;
    ensure(n(&ex.calls.unmap) == 2, "explicit unmap as usual")?;
    let m3 = s(v.map(&a, Direction::FromDevice))?;
    drop_reports_once(m3, "second mapping dropped under its own lock")?;
    drop(g);
    ensure(n(&ex.calls.unmap) == 2, "deferred until a locked call")?;
    s(a.detach().map_err(|(e, _)| e))?;
    ensure(
        n(&ex.calls.unmap) == 3 && n(&ex.calls.detach) == 1,
        "detach settles the owed unmap first, then detaches",
    )?;
    ensure(n(&ex.calls.lock_state_wrong) == 0, "unmaps ran locked")?;
    ensure(b.ref_count() == 1, "the attachment let the buffer go")?;
    drop(b);
    released_once(&ex.calls, "released at the last reference")
}

/// A vmap guard dropped under its own buffer's lock: reported, no hang, the vunmap
/// deferred, then settled by the next vmap, or by the next vunmap.
fn drop_vmap_guard_under_lock() -> R {
    if !lockdep::enabled() {
        return Ok(());
    }
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    let guard = s(b.vmap_unlocked())?;
    let mut g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    let v = s(b.locked(&mut g))?;
    drop_reports_once(guard, "vmap guard dropped under its own lock")?;
    ensure(n(&ex.calls.vunmap) == 0, "the vunmap is deferred")?;
    let vm = s(v.vmap())?;
    ensure(
        n(&ex.calls.vunmap) == 1 && n(&ex.calls.vmap) == 2,
        "the next vmap settles it, then maps afresh",
    )?;
    drop(g);
    let guard = s(b.vmap_unlocked())?;
    ensure(n(&ex.calls.vmap) == 2, "shared with the live vmap")?;
    let mut g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    let v = s(b.locked(&mut g))?;
    drop_reports_once(guard, "second guard dropped under its own lock")?;
    ensure(n(&ex.calls.vunmap) == 1, "deferred again")?;
    s(v.vunmap(vm))?;
    ensure(
        n(&ex.calls.vunmap) == 2,
        "the next vunmap settles the owed one, then drops the last user",
    )?;
    drop(g);
    ensure(n(&ex.calls.lock_state_wrong) == 0, "vunmaps ran locked")?;
    drop(b);
    released_once(&ex.calls, "released at the last reference")
}

/// Drops while holding ANOTHER buffer's lock defer too (locking this one there would
/// nest reservation locks without a context), and are settled by this buffer's next
/// locked calls: `attachments()`, a map, a vmap.
fn drop_under_other_lock() -> R {
    if !lockdep::enabled() {
        return Ok(());
    }
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    let other = s(s(SimpleExporter::new(1))?.export())?;
    let dev = Device::simple("defer-other-dev");
    let a = s(b.attach(&dev))?;
    let (m1, m2) = {
        let mut g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
        let v = s(b.locked(&mut g))?;
        let m1 = s(v.map(&a, Direction::ToDevice))?;
        let m2 = s(v.map(&a, Direction::ToDevice))?;
        (m1, m2)
    };
    let guard = s(b.vmap_unlocked())?;
    let og = other.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    drop_reports_once(m1, "mapping dropped under another buffer's lock")?;
    drop_reports_once(guard, "vmap guard dropped under another buffer's lock")?;
    drop(og);
    ensure(
        n(&ex.calls.unmap) == 0 && n(&ex.calls.vunmap) == 0,
        "both deferred",
    )?;
    let mut g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    let v = s(b.locked(&mut g))?;
    let atts = v.attachments();
    ensure(atts.len() == 1, "one attachment")?;
    drop(atts);
    ensure(
        n(&ex.calls.unmap) == 1 && n(&ex.calls.vunmap) == 1,
        "the buffer's next locked call settles both",
    )?;
    drop(g);
    let og = other.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    drop_reports_once(m2, "second mapping dropped under another buffer's lock")?;
    drop(og);
    let mut g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
    let v = s(b.locked(&mut g))?;
    let m3 = s(v.map(&a, Direction::ToDevice))?;
    ensure(n(&ex.calls.unmap) == 2, "the next locked map settles it")?;
    unmap_ok(&v, &a, m3)?;
    drop(g);
    s(a.detach().map_err(|(e, _)| e))?;
    ensure(n(&ex.calls.lock_state_wrong) == 0, "callbacks ran locked")?;
    drop(b);
    released_once(&ex.calls, "released at the last reference")
}

/// Poll `cond` for at most five seconds.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn listed(b: &DmaBuf) -> Result<usize, String> {
    let mut g = s(b.resv().lock_no_ctx())?;
    let v = s(b.locked(&mut g))?;
    Ok(v.attachments().len())
}

/// Everything of `ex`'s one buffer `ino` is undone: every map unmapped, every pin
/// unpinned, one detach per attach, released once, no longer live.
fn all_undone(ex: &SimpleExporter, ino: u64) -> R {
    let c = &ex.calls;
    ensure(n(&c.unmap) == n(&c.map), "every map unmapped")?;
    ensure(n(&c.unpin) == n(&c.pin), "every pin undone")?;
    ensure(n(&c.detach) == n(&c.attach), "one detach per attach")?;
    ensure(
        n(&c.lock_state_wrong) == 0,
        "callbacks ran in the right lock state",
    )?;
    released_once(c, "released once, at the last reference")?;
    ensure(
        eventually(|| !live_buffers().iter().any(|x| x.ino() == ino)),
        "no longer a live buffer",
    )
}

/// A guard dropped while its mappings are live (the importer must unmap, then detach):
/// reported to the tracker; the attachment stays listed, refuses new maps, keeps its
/// buffer, and its mappings stay usable; the unmap of the last one detaches it, and the
/// buffer is released at its last reference. For every importer/exporter pairing (the
/// mixed ones hold a cached mapping, pinned for a dynamic exporter).
fn drop_guard_with_live_mapping() -> R {
    for (dyn_exp, dyn_imp) in [(false, false), (true, true), (true, false), (false, true)] {
        drop_guard_live_one(dyn_exp, dyn_imp)
            .map_err(|e| format!("dynamic exporter {dyn_exp}, dynamic importer {dyn_imp}: {e}"))?;
    }
    Ok(())
}

fn drop_guard_live_one(dyn_exp: bool, dyn_imp: bool) -> R {
    use crate::debug::ownership::{Tracker, Violation};
    let ex = s(if dyn_exp {
        SimpleExporter::dynamic(1)
    } else {
        SimpleExporter::new(1)
    })?;
    let b = s(ex.export())?;
    let ino = b.ino();
    let tracker = Arc::new(Tracker::new());
    s(b.set_tracker(&tracker))?;
    let dev = Device::simple("drop-live-dev");
    let imp: Option<Arc<dyn Importer>> = if dyn_imp { Some(importer()) } else { None };
    let a = s(b.dynamic_attach(&dev, imp))?;
    let m = s(a.map_unlocked(Direction::ToDevice))?;
    let m2 = s(a.map_unlocked(Direction::ToDevice))?;
    // An explicit detach is refused (EBUSY, nothing changes) and reported.
    let a = match a.detach() {
        Ok(()) => return Err("detach with live mappings must fail".into()),
        Err((e, a)) => {
            ensure(e.errno() == 16, "EBUSY")?;
            a
        }
    };
    let r = tracker.take_reports();
    ensure(
        r.len() == 1
            && r[0].violation == Violation::DetachWhileMapped
            && r[0].message.contains("refused"),
        &format!("the refused detach is reported, got {r:?}"),
    )?;
    ensure(
        !a.is_detach_pending() && listed(&b)? == 1 && n(&ex.calls.detach) == 0,
        "the refused detach changed nothing",
    )?;
    let handle = a.attachment();
    drop(a);
    // (With lockdep off, a lock held for a moment by a bufinfo walk defers the drop.)
    ensure(
        wait_deferred_detaches(Duration::from_secs(5)),
        "no deferred work left",
    )?;
    let r = tracker.take_reports();
    ensure(
        r.len() == 1
            && r[0].violation == Violation::DetachWhileMapped
            && r[0].device.as_deref() == Some("drop-live-dev"),
        &format!("one DetachWhileMapped report naming the device, got {r:?}"),
    )?;
    ensure(
        handle.is_detach_pending() && !handle.is_detached(),
        "detach pending",
    )?;
    ensure(listed(&b)? == 1, "still listed while mapped")?;
    ensure(
        bufinfo::bufinfo().contains("\tdrop-live-dev\n"),
        "bufinfo shows the attachment",
    )?;
    let e = handle.map_unlocked(Direction::ToDevice);
    ensure(e.is_err_and(|e| e.errno() == 22), "no new map: EINVAL")?;
    ensure(n(&ex.calls.detach) == 0, "not detached while mapped")?;
    drop(handle);
    drop(b);
    ensure(
        n(&ex.calls.release) == 0,
        "the attachment keeps its buffer while mapped",
    )?;
    ensure(!m.table().entries().is_empty(), "the mapping stays usable")?;
    drop(m);
    ensure(n(&ex.calls.detach) == 0, "one mapping left")?;
    drop(m2);
    ensure(n(&ex.calls.detach) == 1, "the last unmap detached it")?;
    all_undone(&ex, ino)?;
    let r = tracker.take_reports();
    ensure(r.is_empty(), &format!("nothing else reported, got {r:?}"))
}

/// A guard dropped while this thread holds its buffer's lock: the drop returns (lockdep
/// on: a Misuse report; off: it cannot tell, and only tries the lock), nothing is done
/// under the lock, and a helper thread detaches once the lock is free — also when a
/// mapping is live, the detach then waiting for its unmap.
fn drop_guard_under_own_lock() -> R {
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    let ino = b.ino();
    let dev = Device::simple("drop-locked-dev");
    let a = s(b.attach(&dev))?;
    let a2 = s(b.attach(&dev))?;
    let m2 = s(a2.map_unlocked(Direction::ToDevice))?;
    let (h, h2) = (a.attachment(), a2.attachment());
    let g = b.resv().lock_no_ctx();
    drop_reports_once(a, "guard dropped under its own lock")?;
    drop_reports_once(a2, "mapped guard dropped under its own lock")?;
    ensure(
        n(&ex.calls.detach) == 0 && !h.is_detached() && !h2.is_detach_pending(),
        "nothing done under the caller's lock",
    )?;
    drop(g);
    ensure(
        wait_deferred_detaches(Duration::from_secs(5)),
        "the deferred detaches finished",
    )?;
    ensure(
        h.is_detached() && n(&ex.calls.detach) == 1,
        "detached once the lock was free",
    )?;
    ensure(h2.is_detach_pending(), "the mapped one waits for its unmap")?;
    ensure(listed(&b)? == 1, "only the mapped one still listed")?;
    drop(m2);
    ensure(
        h2.is_detached() && listed(&b)? == 0,
        "its unmap detached it",
    )?;
    drop((h, h2, b));
    all_undone(&ex, ino)
}

/// The last mapping of a dropped guard unmapped with the lock held — explicitly, or
/// dropped there (lockdep on: reported and deferred): the attachment is unlisted under
/// that lock, and the exporter's detach, which must run unlocked, runs on a helper thread.
fn drop_guard_then_unmap_under_lock() -> R {
    let ex = s(SimpleExporter::new(1))?;
    let b = s(ex.export())?;
    let ino = b.ino();
    let dev = Device::simple("drop-unmap-dev");
    let a = s(b.attach(&dev))?;
    let m = s(a.map_unlocked(Direction::ToDevice))?;
    let h = a.attachment();
    drop(a);
    ensure(
        wait_deferred_detaches(Duration::from_secs(5)),
        "no deferred work left",
    )?;
    let mut g = s(b.resv().lock_no_ctx())?;
    let v = s(b.locked(&mut g))?;
    unmap_ok(&v, &h, m)?;
    ensure(
        h.is_detached() && v.attachments().is_empty(),
        "unlisted by the unmap",
    )?;
    drop(g);
    ensure(
        wait_deferred_detaches(Duration::from_secs(5)) && n(&ex.calls.detach) == 1,
        "the exporter's detach ran",
    )?;
    if lockdep::enabled() {
        // Without lockdep a mapping dropped under its own lock deadlocks (documented).
        let a = s(b.attach(&dev))?;
        let m = s(a.map_unlocked(Direction::ToDevice))?;
        let h = a.attachment();
        drop(a);
        let g = b.resv().lock_no_ctx();
        ensure(h.is_detach_pending(), "detach pending")?;
        drop_reports_once(m, "mapping dropped under its own lock")?;
        ensure(h.is_detach_pending(), "its unmap is owed")?;
        drop(g);
        ensure(
            wait_deferred_detaches(Duration::from_secs(5)),
            "the deferred settle finished",
        )?;
        ensure(
            h.is_detached() && n(&ex.calls.detach) == 2,
            "the owed unmap was settled and the attachment detached",
        )?;
    }
    drop(h);
    drop(b);
    all_undone(&ex, ino)
}
