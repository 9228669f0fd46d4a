//! The dma-buf self-test scenarios, and stress tests of the core's locking through the
//! public API.

mod common;

/// Every `dma-buf/…` scenario, one after the other.
#[test]
fn every_dma_buf_case_passes() {
    common::run_all("dma-buf/");
}

/// Many threads attach, map under multi-object locks, add fences, touch the CPU side and
/// detach, on shared buffers, with lockdep on: zero reports, every callback in the right
/// lock state, nothing left attached.
#[test]
fn stress_shared_buffers_zero_reports() {
    use dmabuf::buf::simple::{Calls, SimpleExporter};
    use dmabuf::buf::{Direction, DmaBuf};
    use dmabuf::device::Device;
    use dmabuf::fence::Context;
    use dmabuf::resv::{exec::Exec, Resv, Usage, RESERVATION_WW_CLASS};
    use dmabuf::ww::AcquireCtx;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    struct Nop;
    impl dmabuf::buf::Importer for Nop {
        fn move_notify(&self, _: &dmabuf::resv::ResvGuard<'_>, _: &dmabuf::buf::Attachment) {}
    }

    let exporters: Vec<Arc<SimpleExporter>> = (0..4)
        .map(|i| {
            if i % 2 == 0 {
                SimpleExporter::new(2)
            } else {
                SimpleExporter::dynamic(2)
            }
        })
        .collect::<dmabuf::Result<_>>()
        .unwrap();
    let bufs: Arc<Vec<DmaBuf>> = Arc::new(exporters.iter().map(|e| e.export().unwrap()).collect());
    let capture = lockdep::Capture::new();
    let deadline = Instant::now() + Duration::from_millis(400);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (bufs, capture) = (bufs.clone(), capture.clone());
            std::thread::spawn(move || {
                let _c = capture.install();
                let dev = Device::simple(&format!("stress{t}"));
                let ctx_fences = Context::new();
                let mut seq = 0u64;
                let mut i = 0usize;
                while i < 300 && Instant::now() < deadline {
                    let (x, y) = ((t + i) % 4, (t + 2 * i + 1) % 4);
                    let importer: Option<Arc<dyn dmabuf::buf::Importer>> = if i % 2 == 0 {
                        Some(Arc::new(Nop))
                    } else {
                        None
                    };
                    let att = bufs[x].dynamic_attach(&dev, importer).unwrap();
                    let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
                    let fence;
                    {
                        let mut ex = Exec::new(&ctx);
                        let objs: [&Resv; 2] = [bufs[x].resv(), bufs[y].resv()];
                        ex.until_all_locked(|e| {
                            for o in objs {
                                e.lock(o)?;
                            }
                            Ok(())
                        })
                        .unwrap();
                        let g = ex.guard_mut(bufs[x].resv()).unwrap();
                        let mut g = bufs[x].locked(g).unwrap();
                        let m = g.map(&att, Direction::Bidirectional).unwrap();
                        seq += 1;
                        fence = dmabuf::testing::named("selftest", "resv", ctx_fences, seq);
                        g.reserve_fences(1).unwrap();
                        let usage = if i % 3 == 0 {
                            Usage::Write
                        } else {
                            Usage::Read
                        };
                        g.add_fence(&fence, usage).unwrap();
                        g.unmap(&att, m).map_err(|(e, _)| e).unwrap();
                    }
                    ctx.fini().unwrap();
                    fence.signal().unwrap();
                    if i % 5 == 0 {
                        let acc = bufs[y].cpu_access(Direction::FromDevice).unwrap();
                        drop(acc);
                    }
                    att.detach().map_err(|(e, _)| e).unwrap();
                    i += 1;
                }
                i
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(total > 0);
    eprintln!("stress: {total} iterations");
    assert!(capture.is_empty(), "lockdep reports: {:#?}", capture.take());
    for (e, b) in exporters.iter().zip(bufs.iter()) {
        assert_eq!(Calls::get(&e.calls.lock_state_wrong), 0);
        let mut g = b.resv().lock_no_ctx().unwrap();
        assert!(
            b.locked(&mut g).unwrap().attachments().is_empty(),
            "all detached"
        );
        drop(g);
        assert_eq!(Calls::get(&e.calls.attach), Calls::get(&e.calls.detach));
    }
}

/// A mapping owns no count of its attachment: it stays usable, and unmaps on drop, after
/// every other handle of its attachment and buffer is gone, because detach refuses while
/// it is live (and the buffer's list keeps the attachment).
#[test]
fn mapping_outlives_every_handle_of_its_attachment() {
    use dmabuf::buf::simple::SimpleExporter;
    use dmabuf::buf::Direction;
    use dmabuf::device::Device;
    use dmabuf::error::Error;
    use std::sync::atomic::Ordering::SeqCst;

    // Detach refused with the guard handed back; the buffer handle dropped.
    let ex = SimpleExporter::new(1).unwrap();
    let b = ex.export().unwrap();
    let a = b.attach(&Device::simple("outlive")).unwrap();
    let m = a.map_unlocked(Direction::ToDevice).unwrap();
    let id = a.id();
    let (e, a) = a.detach().unwrap_err();
    assert!(matches!(e, Error::Busy(_)));
    drop(b);
    assert_eq!(
        ex.calls.release.load(SeqCst),
        0,
        "the attachment keeps its buffer"
    );
    assert_eq!(m.attachment().id(), id);
    assert!(!m.table().entries().is_empty());
    drop(m);
    assert_eq!(
        ex.calls.unmap.load(SeqCst),
        1,
        "dropping the mapping unmapped it"
    );
    a.detach().map_err(|(e, _)| e).unwrap();
    assert_eq!(ex.calls.detach.load(SeqCst), 1);
    // Released at the last reference: ours, or a moment later that of a bufinfo walk
    // running beside this test.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ex.calls.release.load(SeqCst) == 0 && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(ex.calls.release.load(SeqCst), 1, "last reference: released");

    // The guard itself dropped (reported, the detach waits for the unmap): the mapping
    // still works, and its unmap completes the detach and lets the buffer go.
    let ex = SimpleExporter::new(1).unwrap();
    let b = ex.export().unwrap();
    let a = b.attach(&Device::simple("outlive2")).unwrap();
    let m = a.map_unlocked(Direction::ToDevice).unwrap();
    drop(a);
    drop(b);
    assert!(dmabuf::buf::wait_deferred_detaches(
        std::time::Duration::from_secs(5)
    ));
    assert_eq!(ex.calls.detach.load(SeqCst), 0);
    assert!(m.attachment().is_detach_pending());
    assert!(!m.table().entries().is_empty());
    let _ = m.key();
    drop(m);
    assert_eq!(
        ex.calls.unmap.load(SeqCst),
        1,
        "dropping the mapping unmapped it"
    );
    assert_eq!(ex.calls.detach.load(SeqCst), 1, "and detached");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ex.calls.release.load(SeqCst) == 0 && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(ex.calls.release.load(SeqCst), 1, "and released");
}

/// An exporter's attach callback cannot map or pin the attachment it is attaching: the
/// buffer does not list it yet, so a mapping could outlive it if the attach failed.
#[test]
fn attach_callback_cannot_map_the_attachment_being_attached() {
    use dmabuf::buf::{export, Attachment, Direction, DmaBuf, ExportInfo, Exporter, SgTable};
    use dmabuf::device::Device;
    use dmabuf::error::Error;
    use dmabuf::resv::ResvGuard;
    use std::sync::Arc;

    #[derive(Default)]
    struct Eager {
        seen: parking_lot::Mutex<Vec<String>>,
        fail: bool,
    }
    impl Exporter for Eager {
        fn attach(&self, buf: &DmaBuf, att: &Attachment) -> dmabuf::Result<()> {
            let mut g = buf.resv().lock_no_ctx().unwrap();
            let m = buf
                .locked(&mut g)
                .and_then(|v| v.map(att, Direction::ToDevice))
                .map(|_| ());
            self.seen.lock().push(format!("{m:?}"));
            if self.fail {
                return Err(Error::Busy("attach refused"));
            }
            Ok(())
        }
        fn map(&self, _: &ResvGuard<'_>, _: &Attachment, _: Direction) -> dmabuf::Result<SgTable> {
            Ok(SgTable::new(Vec::new()))
        }
        fn unmap(&self, _: &ResvGuard<'_>, _: &Attachment, _: SgTable, _: Direction) {}
        fn release(&self, _: u64) {}
    }
    for fail in [false, true] {
        let ex = Arc::new(Eager {
            fail,
            ..Eager::default()
        });
        let b = export(ExportInfo::new("eager", 4096, ex.clone())).unwrap();
        let r = b.attach(&Device::simple("eager"));
        assert_eq!(r.is_ok(), !fail);
        let seen = ex.seen.lock().clone();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].contains("not attached yet"), "{seen:?}");
        if let Ok(a) = r {
            // Once attached, it maps.
            let m = a.map_unlocked(Direction::ToDevice).unwrap();
            a.unmap_unlocked(m).map_err(|e| e.0).unwrap();
        }
    }
}

/// A guard dropped while another thread drops the attachment's mappings, some under
/// another buffer's lock (their unmaps deferred) and some unlocked: however the two
/// interleave, the attachment ends detached once, every map is unmapped, and the buffer
/// is released. Bounded: 200 rounds or two seconds.
#[test]
fn stress_guard_drop_races_mapping_drops() {
    use dmabuf::buf::simple::SimpleExporter;
    use dmabuf::buf::Direction;
    use dmabuf::device::Device;
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::{Duration, Instant};

    if !lockdep::enabled() {
        // Dropping a mapping under a reservation lock is only deferred with lockdep.
        return;
    }
    let capture = lockdep::Capture::new();
    let other = SimpleExporter::new(1).unwrap().export().unwrap();
    let dev = Device::simple("race-dev");
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut rounds = 0;
    while rounds < 200 && Instant::now() < deadline {
        rounds += 1;
        let ex = if rounds % 2 == 0 {
            SimpleExporter::new(1).unwrap()
        } else {
            SimpleExporter::dynamic(1).unwrap()
        };
        let b = ex.export().unwrap();
        let a = b.attach(&dev).unwrap();
        let maps: Vec<_> = (0..4)
            .map(|_| a.map_unlocked(Direction::ToDevice).unwrap())
            .collect();
        let h = a.attachment();
        let t = {
            let (other, capture) = (other.clone(), capture.clone());
            std::thread::spawn(move || {
                let _c = capture.install();
                let mut maps = maps;
                let og = other.resv().lock_no_ctx();
                drop(maps.pop());
                drop(maps.pop());
                drop(og);
                drop(maps);
            })
        };
        if rounds % 3 == 0 {
            std::thread::yield_now();
        }
        drop(a);
        t.join().unwrap();
        assert!(dmabuf::buf::wait_deferred_detaches(Duration::from_secs(5)));
        assert!(h.is_detached(), "round {rounds}: detached");
        assert_eq!(ex.calls.detach.load(SeqCst), 1, "round {rounds}");
        assert_eq!(
            ex.calls.unmap.load(SeqCst),
            ex.calls.map.load(SeqCst),
            "round {rounds}: every map unmapped"
        );
        assert_eq!(ex.calls.unpin.load(SeqCst), ex.calls.pin.load(SeqCst));
        drop((h, b));
        let end = Instant::now() + Duration::from_secs(5);
        while ex.calls.release.load(SeqCst) == 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(ex.calls.release.load(SeqCst), 1, "round {rounds}: released");
    }
    // Only the deferred unmaps are reported: two per round.
    let reports = capture.take();
    assert_eq!(reports.len(), 2 * rounds, "{reports:?}");
    assert!(reports
        .iter()
        .all(|r| r.kind == lockdep::ReportKind::Misuse));
}
