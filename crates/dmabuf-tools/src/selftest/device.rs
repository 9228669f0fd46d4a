//! Self-test scenarios for devices: engine jobs on coherent and non-coherent devices,
//! implicit and explicit sync, timeouts, IOMMU faults, fence order, bad input, and the
//! ownership tracker naming each kind of coherency bug.
//!
//! Every scenario installs a lockdep capture on its own thread and on its engines'
//! workers, and fails if lockdep reported anything it did not expect.

use crate::buf::simple::SimpleExporter;
use crate::buf::{AttachGuard, Direction, DmaBuf, SgMapping};
use crate::debug::ownership::{Tracker, Violation};
use crate::device::cpu::CpuView;
use crate::device::engine::{Engine, EngineConfig};
use crate::device::job::{checksum, Job, Operand};
use crate::device::Device;
use crate::error::Error;
use crate::mem::memfd::page_size;
use crate::selftest::resv::new_fence;
use lockdep::selftest::Case;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::selftest::{ensure, R};

fn s<T>(r: crate::Result<T>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

/// Every device scenario.
pub(crate) fn cases() -> Vec<Case> {
    case_table![
        "device/jobs-coherent" => jobs_coherent,
        "device/jobs-non-coherent" => jobs_non_coherent,
        "device/implicit-sync-producer-consumer" => implicit_sync,
        "device/explicit-sync-sync-file" => explicit_sync,
        "device/timeout-error-fence-engine-continues" => timeout,
        "device/iommu-fault-error-fence" => iommu_fault,
        "device/fences-seqno-ordered" => seqno_ordered,
        "device/failed-dependency-cancels" => failed_dependency,
        "device/submit-bad-input" => bad_input,
        "device/ownership-cpu-access-outside-bracket" => own_cpu_outside,
        "device/ownership-job-while-cpu-owns" => own_job_while_cpu,
        "device/ownership-unmap-while-busy" => own_unmap_busy,
        "device/ownership-free-while-busy" => own_free_busy,
        "device/ownership-sync-direction-mismatch" => own_sync_dir,
        "device/non-coherent-missing-end-cpu-access" => missing_end_cpu_access,
        "device/pipeline" => pipeline,
    ]
}

/// A scenario's lockdep capture, installed on this thread and handed to its engines.
struct Lockdep {
    cap: lockdep::Capture,
    _g: lockdep::CaptureGuard,
}

impl Lockdep {
    fn new() -> Self {
        let cap = lockdep::Capture::new();
        let g = cap.install();
        Lockdep { cap, _g: g }
    }

    fn engine(&self, dev: &Arc<Device>, name: &str) -> Result<Engine, String> {
        s(Engine::with_config(
            dev,
            name,
            EngineConfig {
                lockdep_capture: Some(self.cap.clone()),
                ..EngineConfig::default()
            },
        ))
    }

    fn clean(&self) -> R {
        let r = self.cap.take();
        ensure(
            r.is_empty(),
            &format!(
                "lockdep reports: {:?}",
                r.iter().map(|r| r.kind).collect::<Vec<_>>()
            ),
        )
    }
}

fn device(name: &str, coherent: bool) -> Result<Arc<Device>, String> {
    s(Device::new(name, u32::MAX as u64, coherent, false))
}

/// A buffer of `pages` pages from a fresh simple exporter, tracked by `tracker`.
fn buffer(
    pages: usize,
    tracker: Option<&Arc<Tracker>>,
) -> Result<(Arc<SimpleExporter>, DmaBuf), String> {
    let ex = s(SimpleExporter::new(pages))?;
    let b = s(ex.export())?;
    if let Some(t) = tracker {
        s(b.set_tracker(t))?;
    }
    Ok((ex, b))
}

/// Attach `dev` and map for `dir`.
fn map(b: &DmaBuf, dev: &Arc<Device>, dir: Direction) -> Result<(AttachGuard, SgMapping), String> {
    let a = s(b.attach(dev))?;
    let m = s(a.map_unlocked(dir))?;
    Ok((a, m))
}

/// The buffer's bytes as the CPU sees them, inside a read bracket.
fn cpu_read(b: &DmaBuf) -> Result<Vec<u8>, String> {
    let v = s(CpuView::new(b))?;
    let acc = s(b.cpu_access(Direction::FromDevice))?;
    let out = s(v.read_vec(0, b.size()))?;
    s(acc.end())?;
    Ok(out)
}

/// Write `data` at 0 inside a write bracket.
fn cpu_write(b: &DmaBuf, data: &[u8]) -> Result<(), String> {
    let v = s(CpuView::new(b))?;
    let acc = s(b.cpu_access(Direction::ToDevice))?;
    s(v.write_at(0, data))?;
    s(acc.end())
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Fill, copy, checksum and invert on one device, checked from the CPU.
fn jobs_on(coherent: bool) -> R {
    let ld = Lockdep::new();
    let dev = device(if coherent { "coh-dma" } else { "nc-dma" }, coherent)?;
    let eng = ld.engine(&dev, "dma0")?;
    let pages = 3; // more than one chunk of 64 KiB only with big pages; still multi-page
    let (_ea, a) = buffer(pages, None)?;
    let (_eb, b) = buffer(pages, None)?;
    let len = a.size();
    let data = pattern(len, 7);
    cpu_write(&a, &data)?;
    let (_aa, ma) = map(&a, &dev, Direction::Bidirectional)?;
    let (_ab, mb) = map(&b, &dev, Direction::Bidirectional)?;
    // Checksum of the CPU's data, as the device reads it.
    let r = s(s(eng.submit(Job::checksum(Operand::new(&ma))))?.wait())?;
    ensure(r.checksum == Some(checksum(&data)), "device checksum of A")?;
    // Copy A → B, then invert B in place, then checksum B.
    s(eng.submit(Job::copy(Operand::new(&ma), Operand::new(&mb))))?;
    s(eng.submit(Job::invert(Operand::new(&mb), Operand::new(&mb))))?;
    let r = s(s(eng.submit(Job::checksum(Operand::new(&mb))))?.wait())?;
    let inverted: Vec<u8> = data.iter().map(|x| !x).collect();
    ensure(r.checksum == Some(checksum(&inverted)), "copy + invert")?;
    ensure(cpu_read(&b)? == inverted, "the CPU sees B inverted")?;
    // Fill a range of A.
    let p = page_size();
    let fill = Job::fill(s(Operand::new(&ma).range(p, p))?, 0xAB);
    s(s(eng.submit(fill))?.wait())?;
    let got = cpu_read(&a)?;
    ensure(got[p..2 * p].iter().all(|&x| x == 0xAB), "filled range")?;
    ensure(
        got[..p] == data[..p] && got[2 * p..] == data[2 * p..],
        "rest untouched",
    )?;
    ensure(eng.counts() == (5, 0), "five jobs, no failure")?;
    ld.clean()
}

fn jobs_coherent() -> R {
    jobs_on(true)
}

fn jobs_non_coherent() -> R {
    jobs_on(false)
}

/// A producer on one device writes; a consumer on another, submitted at once, reads:
/// it waits for the producer through the reservation object alone.
fn implicit_sync() -> R {
    let ld = Lockdep::new();
    let (pd, cd) = (device("producer", true)?, device("consumer", true)?);
    let (pe, ce) = (ld.engine(&pd, "prod")?, ld.engine(&cd, "cons")?);
    let (_e, b) = buffer(2, None)?;
    let (_pa, pm) = map(&b, &pd, Direction::FromDevice)?;
    let (_ca, cm) = map(&b, &cd, Direction::ToDevice)?;
    let prod = Job::fill(Operand::new(&pm), 0x5A).simulate_time(Duration::from_millis(20));
    let ph = s(pe.submit(prod))?;
    let ch = s(ce.submit(Job::checksum(Operand::new(&cm))))?;
    let r = s(ch.wait())?;
    ensure(
        ph.fence().is_signaled(),
        "producer done before the consumer",
    )?;
    ensure(
        r.checksum == Some(checksum(&vec![0x5A; b.size()])),
        "consumer saw the producer's data",
    )?;
    let pr = s(ph.wait())?;
    ensure(
        r.started_ns.unwrap_or(0) >= pr.signalled_ns,
        "consumer started after the producer signalled",
    )?;
    ensure(b.resv().test_signaled(crate::resv::Usage::Read), "all done")?;
    // Waiting for a job's fence while holding the buffer's reservation lock is legal
    // (the engine's signalling path takes no reservation lock): no lockdep report.
    let h =
        s(pe.submit(Job::fill(Operand::new(&pm), 0x6B).simulate_time(Duration::from_millis(5))))?;
    {
        let _g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
        h.fence().wait();
    }
    ld.clean()
}

/// Explicit sync: jobs that skip implicit sync, ordered through a sync file; and the
/// producer's sync file imported into the buffer for an implicit consumer.
fn explicit_sync() -> R {
    let ld = Lockdep::new();
    let (pd, cd) = (device("producer", true)?, device("consumer", true)?);
    let (pe, ce) = (ld.engine(&pd, "prod")?, ld.engine(&cd, "cons")?);
    let (_e, b) = buffer(1, None)?;
    let (_pa, pm) = map(&b, &pd, Direction::FromDevice)?;
    let (_ca, cm) = map(&b, &cd, Direction::ToDevice)?;
    let slow = Duration::from_millis(15);
    // 1. explicit-only jobs, ordered by a sync file.
    let ph = s(pe.submit(
        Job::fill(Operand::new(&pm), 0x11)
            .explicit_only()
            .simulate_time(slow),
    ))?;
    ensure(
        b.resv().test_signaled(crate::resv::Usage::Read),
        "explicit job published as bookkeeping only",
    )?;
    let sf = s(ph.sync_file())?;
    let job = s(Job::checksum(Operand::new(&cm))
        .explicit_only()
        .after_sync_file(sf.as_fd()))?;
    let r = s(s(ce.submit(job))?.wait())?;
    ensure(
        r.checksum == Some(checksum(&vec![0x11; b.size()])),
        "consumer ordered by the sync file",
    )?;
    // 2. explicit producer, sync file imported for an implicit consumer.
    let ph = s(pe.submit(
        Job::fill(Operand::new(&pm), 0x22)
            .explicit_only()
            .simulate_time(slow),
    ))?;
    let sf = s(ph.sync_file())?;
    s(b.import_sync_file(crate::buf::sync_flags::WRITE, sf.as_fd()))?;
    let r = s(s(ce.submit(Job::checksum(Operand::new(&cm))))?.wait())?;
    ensure(
        r.checksum == Some(checksum(&vec![0x22; b.size()])),
        "implicit consumer waited for the imported fence",
    )?;
    // 3. the consumer's own fence exported as a sync file signals once it is done.
    let out = s(b.export_sync_file(crate::buf::sync_flags::WRITE))?;
    ensure(out.poll(), "every implicit fence done")?;
    ld.clean()
}

/// A job too slow for its timeout signals -ETIME; one stuck on a dependency too; the
/// engine goes on.
fn timeout() -> R {
    let ld = Lockdep::new();
    let dev = device("slow", true)?;
    let eng = ld.engine(&dev, "slow0")?;
    let (_e, b) = buffer(1, None)?;
    let (_a, m) = map(&b, &dev, Direction::Bidirectional)?;
    let t0 = Instant::now();
    let h = s(eng.submit(
        Job::fill(Operand::new(&m), 1)
            .simulate_time(Duration::from_secs(5))
            .timeout(Duration::from_millis(20)),
    ))?;
    let e = h.wait();
    ensure(matches!(e, Err(Error::TimedOut)), "late job: TimedOut")?;
    ensure(h.fence().error() == -62, "fence error -ETIME")?;
    ensure(t0.elapsed() < Duration::from_secs(2), "cancelled on time")?;
    let rec = h.record().ok_or("record")?;
    ensure(rec.started_ns.is_some() && rec.bytes == 0, "ran, cancelled")?;
    // Stuck on a dependency that never signals (until after the deadline).
    let never = new_fence();
    let h = s(eng.submit(
        Job::fill(Operand::new(&m), 2)
            .after(&never)
            .timeout(Duration::from_millis(20)),
    ))?;
    ensure(matches!(h.wait(), Err(Error::TimedOut)), "stuck: TimedOut")?;
    ensure(
        h.record().is_some_and(|r| r.started_ns.is_none()),
        "never ran",
    )?;
    s(never.signal())?;
    // The engine goes on.
    let r = s(s(eng.submit(Job::fill(Operand::new(&m), 3)))?.wait())?;
    ensure(r.is_ok(), "next job fine")?;
    ensure(cpu_read(&b)?.iter().all(|&x| x == 3), "its data landed")?;
    ensure(eng.counts() == (3, 2), "3 done, 2 failed")?;
    ld.clean()
}

/// Writing through a mapping the device may only read faults: -EFAULT, with the fault
/// recorded (device, address, buffer); the engine goes on.
fn iommu_fault() -> R {
    let ld = Lockdep::new();
    let dev = device("faulty", true)?;
    let eng = ld.engine(&dev, "f0")?;
    let (_e, b) = buffer(1, None)?;
    let (_a, m) = map(&b, &dev, Direction::ToDevice)?;
    let h = s(eng.submit(Job::fill(Operand::new(&m), 9)))?;
    ensure(matches!(h.wait(), Err(Error::Fault(_))), "fault error")?;
    ensure(h.fence().error() == -14, "fence error -EFAULT")?;
    let f = h.record().and_then(|r| r.fault).ok_or("fault in record")?;
    ensure(f.device == "faulty", "fault names the device")?;
    ensure(
        f.iova == Operand::new(&m).iova() && f.write,
        "address, write",
    )?;
    ensure(
        f.buffer.as_deref() == Some(&format!("buf{}", b.ino())[..]),
        "fault names the buffer",
    )?;
    ensure(dev.dma().iommu().take_faults().len() == 1, "recorded once")?;
    ensure(cpu_read(&b)?.iter().all(|&x| x == 0), "nothing written")?;
    let r = s(s(eng.submit(Job::checksum(Operand::new(&m))))?.wait())?;
    ensure(
        r.checksum == Some(checksum(&vec![0; b.size()])),
        "engine goes on",
    )?;
    ld.clean()
}

/// An engine's fences: one context, seqnos in submission order, signalled in order.
fn seqno_ordered() -> R {
    let ld = Lockdep::new();
    let dev = device("seq", true)?;
    let eng = ld.engine(&dev, "seq0")?;
    let (_e1, b1) = buffer(1, None)?;
    let (_e2, b2) = buffer(1, None)?;
    let (_a1, m1) = map(&b1, &dev, Direction::Bidirectional)?;
    let (_a2, m2) = map(&b2, &dev, Direction::Bidirectional)?;
    let mut hs = Vec::new();
    for i in 0..24u8 {
        let m = if i % 2 == 0 { &m1 } else { &m2 };
        let job = match i % 3 {
            0 => Job::fill(Operand::new(m), i),
            1 => Job::checksum(Operand::new(m)),
            _ => Job::invert(Operand::new(m), Operand::new(m)),
        };
        hs.push(s(eng.submit(job))?);
    }
    for w in hs.windows(2) {
        ensure(
            w[0].fence().context() == eng.context() && w[1].fence().context() == eng.context(),
            "one context",
        )?;
        ensure(
            w[1].seqno() == w[0].seqno() + 1,
            "seqnos in submission order",
        )?;
    }
    hs.last().ok_or("jobs")?.fence().wait();
    for w in hs.windows(2) {
        ensure(w[0].fence().is_signaled(), "earlier signalled first")?;
        let (t0, t1) = (w[0].fence().timestamp(), w[1].fence().timestamp());
        ensure(t0 <= t1, "timestamps in seqno order")?;
    }
    let recs = eng.records();
    ensure(
        recs.windows(2).all(|w| w[1].seqno == w[0].seqno + 1),
        "records in seqno order",
    )?;
    ld.clean()
}

/// A dependency that signals with an error cancels the job (-ECANCELED, not run).
fn failed_dependency() -> R {
    let ld = Lockdep::new();
    let dev = device("dep", true)?;
    let eng = ld.engine(&dev, "dep0")?;
    let (_e, b) = buffer(1, None)?;
    let (_a, m) = map(&b, &dev, Direction::Bidirectional)?;
    let f = new_fence();
    let h = s(eng.submit(Job::fill(Operand::new(&m), 4).after(&f)))?;
    s(f.set_error(-5))?;
    s(f.signal())?;
    ensure(matches!(h.wait(), Err(Error::Canceled)), "cancelled")?;
    ensure(h.fence().error() == -125, "-ECANCELED")?;
    ensure(cpu_read(&b)?.iter().all(|&x| x == 0), "not run")?;
    // Already failed before submit: still a dependency.
    let h = s(eng.submit(Job::fill(Operand::new(&m), 4).after(&f)))?;
    ensure(matches!(h.wait(), Err(Error::Canceled)), "cancelled again")?;
    ld.clean()
}

/// Bad input: an errno, nothing published, nothing queued.
fn bad_input() -> R {
    let ld = Lockdep::new();
    let (d1, d2) = (device("one", true)?, device("two", true)?);
    let eng = ld.engine(&d1, "bad0")?;
    let (_e, b) = buffer(2, None)?;
    let (_a1, m1) = map(&b, &d1, Direction::Bidirectional)?;
    let (_a2, m2) = map(&b, &d2, Direction::Bidirectional)?;
    let (_e2, small) = buffer(1, None)?;
    let (_a3, m3) = map(&small, &d1, Direction::Bidirectional)?;
    let p = page_size();
    let einval = |r: crate::Result<_>| matches!(r, Err(Error::Invalid(_)));
    ensure(
        einval(eng.submit(Job::fill(Operand::new(&m2), 0))),
        "another device's mapping",
    )?;
    ensure(
        einval(eng.submit(Job::copy(Operand::new(&m1), Operand::new(&m3)))),
        "lengths differ",
    )?;
    ensure(
        einval(eng.submit(Job::invert(Operand::new(&m3), Operand::new(&m1)))),
        "invert lengths differ",
    )?;
    ensure(
        einval(eng.submit(Job::fill(Operand::new(&m1), 0).timeout(Duration::ZERO))),
        "zero timeout",
    )?;
    ensure(
        matches!(Operand::new(&m1).range(p, 2 * p), Err(Error::Invalid(_))),
        "range past the end",
    )?;
    ensure(
        matches!(Operand::new(&m1).range(0, 0), Err(Error::Invalid(_))),
        "empty range",
    )?;
    ensure(
        matches!(
            Operand::new(&m1).range(usize::MAX, 2),
            Err(Error::Overflow(_))
        ),
        "wrapping range",
    )?;
    let not_sync = s(crate::mem::memfd::Memfd::create("x", 1, false))?;
    ensure(
        Job::fill(Operand::new(&m1), 0)
            .after_sync_file(not_sync.fd())
            .is_err_and(|e| e.errno() == 22),
        "not a sync file",
    )?;
    ensure(
        EngineConfig {
            default_timeout: Duration::ZERO,
            ..EngineConfig::default()
        }
        .default_timeout
        .is_zero()
            && matches!(
                Engine::with_config(
                    &d1,
                    "z",
                    EngineConfig {
                        default_timeout: Duration::ZERO,
                        ..EngineConfig::default()
                    }
                ),
                Err(Error::Invalid(_))
            ),
        "zero default timeout",
    )?;
    ensure(
        matches!(
            Engine::with_config(
                &d1,
                "z",
                EngineConfig {
                    history: 0,
                    ..EngineConfig::default()
                }
            ),
            Err(Error::Invalid(_))
        ),
        "zero history",
    )?;
    ensure(ld.cap.is_empty(), "no report so far")?;
    // Holding the buffer's reservation lock: refused (EINVAL), never a hang, whether
    // lockdep is on (its check refuses first, with a Misuse report) or off (the
    // reservation lock itself refuses a lock its holder's thread asks for).
    {
        let _g = b.resv().lock_no_ctx().map_err(|e| e.to_string())?;
        let r = eng.submit(Job::fill(Operand::new(&m1), 0));
        ensure(
            r.as_ref().is_err_and(|e| e.errno() == 22),
            &format!("holding a reservation lock: {:?}", r.map(|_| ())),
        )?;
    }
    let reps = ld.cap.take();
    if lockdep::enabled() {
        ensure(
            reps.len() == 1 && reps[0].kind == lockdep::ReportKind::Misuse,
            "one Misuse report",
        )?;
    }
    ensure(b.resv().num_fences() == 0, "nothing published")?;
    ensure(
        eng.counts() == (0, 0) && eng.pending() == 0,
        "nothing queued",
    )?;
    // CPU view: out of range → EINVAL / EOVERFLOW, nothing copied, nothing reported.
    let t = Arc::new(Tracker::new());
    let (_e3, tb) = buffer(1, Some(&t))?;
    let v = s(CpuView::new(&tb))?;
    let mut out = [7u8; 8];
    ensure(
        matches!(v.read_at(tb.size() - 4, &mut out), Err(Error::Invalid(_))) && out == [7; 8],
        "read past the end",
    )?;
    ensure(
        matches!(v.write_at(usize::MAX, b"x"), Err(Error::Overflow(_))),
        "wrapping write",
    )?;
    ensure(t.take_reports().is_empty(), "failed accesses not reported")?;
    // Pipeline: zero frames or pages.
    for (frames, pages) in [(0, 1), (1, 0)] {
        let cfg = crate::device::pipeline::PipelineConfig {
            frames,
            pages,
            ..Default::default()
        };
        ensure(
            matches!(crate::device::pipeline::run(&cfg), Err(Error::Invalid(_))),
            "empty pipeline",
        )?;
    }
    // Setting a second tracker is refused.
    let (t1, t2) = (Arc::new(Tracker::new()), Arc::new(Tracker::new()));
    s(small.set_tracker(&t1))?;
    s(small.set_tracker(&t1))?;
    ensure(
        matches!(small.set_tracker(&t2), Err(Error::Busy(_))),
        "second tracker: EBUSY",
    )?;
    ld.clean()
}

fn kinds(t: &Tracker) -> Vec<Violation> {
    t.take_reports().into_iter().map(|r| r.violation).collect()
}

/// CPU reads and writes outside begin/end are named.
fn own_cpu_outside() -> R {
    let ld = Lockdep::new();
    let t = Arc::new(Tracker::new());
    let (_e, b) = buffer(1, Some(&t))?;
    let v = s(CpuView::new(&b))?;
    s(v.write_at(0, b"oops"))?;
    let r = t.take_reports();
    ensure(r.len() == 1, "one report")?;
    ensure(
        r[0].violation == Violation::CpuAccessOutsideBracket && r[0].buffer == b.ino(),
        "CPU write outside the bracket, on this buffer",
    )?;
    s(b.begin_cpu_access(Direction::FromDevice))?;
    s(v.read_vec(0, 4))?;
    s(b.end_cpu_access(Direction::FromDevice))?;
    ensure(t.take_reports().is_empty(), "inside the bracket: fine")?;
    s(v.read_vec(0, 4))?;
    ensure(
        kinds(&t) == [Violation::CpuAccessOutsideBracket],
        "read after end",
    )?;
    ld.clean()
}

/// A job on a buffer the CPU owns (begin without end) is named, with the device.
fn own_job_while_cpu() -> R {
    let ld = Lockdep::new();
    let t = Arc::new(Tracker::new());
    let dev = device("gpu", true)?;
    let eng = ld.engine(&dev, "gpu0")?;
    let (_e, b) = buffer(1, Some(&t))?;
    let (_a, m) = map(&b, &dev, Direction::ToDevice)?;
    s(b.begin_cpu_access(Direction::ToDevice))?;
    s(s(eng.submit(Job::checksum(Operand::new(&m))))?.wait())?;
    let r = t.take_reports();
    ensure(r.len() == 1, "one report")?;
    ensure(
        r[0].violation == Violation::DeviceJobWhileCpuOwns && r[0].device.as_deref() == Some("gpu"),
        "device job while the CPU owns it, naming the device",
    )?;
    s(b.end_cpu_access(Direction::ToDevice))?;
    s(s(eng.submit(Job::checksum(Operand::new(&m))))?.wait())?;
    ensure(t.take_reports().is_empty(), "after end: fine")?;
    ld.clean()
}

/// How long a job the ownership tests catch in flight keeps its device busy: long
/// enough that a loaded machine still unmaps or frees before it ends.
const BUSY_FOR: Duration = Duration::from_millis(250);

/// Wait until the exporter's release has run (a concurrent bufinfo walk may hold the
/// last reference for a moment).
fn until_released(c: &std::sync::atomic::AtomicUsize) -> R {
    let end = Instant::now() + Duration::from_secs(5);
    while crate::buf::simple::Calls::get(c) != 1 {
        if Instant::now() > end {
            return Err("never released".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Wait until the tracker sees a device job running on `b`.
fn until_busy(t: &Tracker, b: &DmaBuf) -> R {
    let end = Instant::now() + Duration::from_secs(2);
    while !matches!(t.owner(b.ino()), crate::debug::ownership::Owner::Devices(_)) {
        if Instant::now() > end {
            return Err("job never started".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Unmapping while a job on the mapping runs is named; the device then faults.
fn own_unmap_busy() -> R {
    let ld = Lockdep::new();
    let t = Arc::new(Tracker::new());
    let dev = device("isp", true)?;
    let eng = ld.engine(&dev, "isp0")?;
    let (_e, b) = buffer(1, Some(&t))?;
    let (a, m) = map(&b, &dev, Direction::Bidirectional)?;
    let h = s(eng.submit(Job::fill(Operand::new(&m), 1).simulate_time(BUSY_FOR)))?;
    until_busy(&t, &b)?;
    s(a.unmap_unlocked(m).map_err(|e| e.0))?;
    ensure(kinds(&t) == [Violation::UnmapWhileBusy], "unmap while busy")?;
    ensure(
        matches!(h.wait(), Err(Error::Fault(_))),
        "the device faults",
    )?;
    ensure(
        dev.dma().iommu().take_faults()[0].reason == crate::device::iommu::FaultReason::Unmapped,
        "on the dead range",
    )?;
    ld.clean()
}

/// Freeing a buffer while a job on it runs is named.
fn own_free_busy() -> R {
    let ld = Lockdep::new();
    let t = Arc::new(Tracker::new());
    let dev = device("vpu", true)?;
    let eng = ld.engine(&dev, "vpu0")?;
    let (ex, b) = buffer(1, Some(&t))?;
    let (a, m) = map(&b, &dev, Direction::Bidirectional)?;
    let ino = b.ino();
    let h = s(eng.submit(Job::fill(Operand::new(&m), 1).simulate_time(BUSY_FOR)))?;
    until_busy(&t, &b)?;
    drop(m);
    drop(a);
    drop(b);
    until_released(&ex.calls.release)?;
    let r = t.take_reports();
    ensure(
        r.iter().map(|r| r.violation).collect::<Vec<_>>()
            == [Violation::UnmapWhileBusy, Violation::FreeWhileBusy],
        &format!("unmap and free while busy: {r:?}"),
    )?;
    ensure(
        r[1].buffer == ino && r[1].device.as_deref() == Some("vpu"),
        "names both",
    )?;
    ensure(h.wait().is_err(), "the job failed")?;
    dev.dma().iommu().take_faults();
    ld.clean()
}

/// A sync in a direction its mapping was not made for is named (an exporter that syncs
/// in the CPU access direction, as the kernel's system heap does).
fn own_sync_dir() -> R {
    let ld = Lockdep::new();
    let t = Arc::new(Tracker::new());
    let dev = device("disp", false)?;
    let (ex, b) = buffer(1, Some(&t))?;
    let (_a, _m) = map(&b, &dev, Direction::ToDevice)?;
    s(b.begin_cpu_access(Direction::ToDevice))?;
    s(b.end_cpu_access(Direction::ToDevice))?;
    ensure(t.take_reports().is_empty(), "matching directions: fine")?;
    ex.sync_in_access_direction.store(true, Ordering::Relaxed);
    s(b.begin_cpu_access(Direction::FromDevice))?;
    s(b.end_cpu_access(Direction::FromDevice))?;
    let r = t.take_reports();
    ensure(
        r.len() == 2
            && r.iter()
                .all(|r| r.violation == Violation::SyncDirectionMismatch)
            && r[0].device.as_deref() == Some("disp"),
        "sync for FromDevice of a ToDevice mapping, twice",
    )?;
    ld.clean()
}

/// THE coherency bug: the CPU writes new data but forgets end_cpu_access, and a
/// non-coherent device reads. It sees stale bytes from its bounce buffer — and the
/// tracker names the bug. Done right, the same sequence gives the right data and no
/// report.
fn missing_end_cpu_access() -> R {
    let ld = Lockdep::new();
    let t = Arc::new(Tracker::new());
    let dev = device("nc-isp", false)?;
    let eng = ld.engine(&dev, "nc0")?;
    let (_e, b) = buffer(1, Some(&t))?;
    let (_a, m) = map(&b, &dev, Direction::ToDevice)?;
    let v = s(CpuView::new(&b))?;
    let len = b.size();
    // Right: begin, write, end, then the device reads.
    let first = pattern(len, 1);
    s(b.begin_cpu_access(Direction::ToDevice))?;
    s(v.write_at(0, &first))?;
    s(b.end_cpu_access(Direction::ToDevice))?;
    let r = s(s(eng.submit(Job::checksum(Operand::new(&m))))?.wait())?;
    ensure(
        r.checksum == Some(checksum(&first)),
        "done right: right data",
    )?;
    ensure(t.take_reports().is_empty(), "done right: no report")?;
    // Wrong: begin, write, no end.
    let second = pattern(len, 2);
    s(b.begin_cpu_access(Direction::ToDevice))?;
    s(v.write_at(0, &second))?;
    let r = s(s(eng.submit(Job::checksum(Operand::new(&m))))?.wait())?;
    ensure(
        r.checksum == Some(checksum(&first)) && r.checksum != Some(checksum(&second)),
        "missing end: the device read stale bytes from its bounce buffer",
    )?;
    let reps = t.take_reports();
    ensure(reps.len() == 1, "one report")?;
    ensure(
        reps[0].violation == Violation::DeviceJobWhileCpuOwns
            && reps[0].buffer == b.ino()
            && reps[0].device.as_deref() == Some("nc-isp"),
        "the tracker names the bug, the buffer and the device",
    )?;
    // Ending now fixes the data.
    s(b.end_cpu_access(Direction::ToDevice))?;
    let r = s(s(eng.submit(Job::checksum(Operand::new(&m))))?.wait())?;
    ensure(
        r.checksum == Some(checksum(&second)),
        "after end: right data",
    )?;
    ensure(t.take_reports().is_empty(), "no more reports")?;
    ld.clean()
}

/// The demo's pipeline in small: see [`crate::device::pipeline`].
fn pipeline() -> R {
    let ld = Lockdep::new();
    let cfg = crate::device::pipeline::PipelineConfig {
        frames: 4,
        pages: 2,
        engine: EngineConfig {
            lockdep_capture: Some(ld.cap.clone()),
            ..EngineConfig::default()
        },
        ..Default::default()
    };
    let report = s(crate::device::pipeline::run(&cfg))?;
    ensure(report.frames_ok == 4, &format!("frames ok: {report:?}"))?;
    ensure(report.ownership_reports == 0, "no ownership report")?;
    ensure(report.latencies.len() == 4 * 3, "a record per job")?;
    ensure(
        report
            .latencies
            .iter()
            .all(|r| r.is_ok() && r.signalled_ns >= r.submitted_ns),
        "latencies",
    )?;
    // The same with the CPU bracket skipped: stale data everywhere, and named.
    let bad = s(crate::device::pipeline::run(
        &crate::device::pipeline::PipelineConfig {
            bug: Some(crate::device::pipeline::Bug::SkipCpuBracket),
            ..cfg
        },
    ))?;
    ensure(
        bad.cpu_ok == 0 && bad.consumer_ok == 0,
        &format!("stale without the bracket: {bad:?}"),
    )?;
    ensure(
        bad.ownership_reports == 4
            && bad
                .ownership
                .iter()
                .all(|r| r.violation == Violation::CpuAccessOutsideBracket),
        "one CPU-access report per frame",
    )?;
    ld.clean()
}
