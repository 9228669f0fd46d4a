//! The `dmabuf demo` pipeline: frames flow through a ring of shared buffers across
//! simulated devices, ordered by fences, checked end to end.
//!
//! ```text
//!   camera (coherent)      isp (non-coherent)        CPU             encoder (coherent)
//!   fill input[s] ──implicit──▶ invert input[s] ──▶ inspect output[s] ──sync file──▶ checksum output[s]
//! ```
//!
//! - Buffers come from a caller-supplied allocator (the system heap in the CLI), `ring`
//!   input/output pairs reused round-robin: the camera's fill of a slot waits, through the
//!   slot's reservation object, for the readers of the frame before it (implicit sync).
//! - The isp reads memory through bounce buffers (a non-coherent device). Like a driver
//!   for such a device, it maps a frame's buffers for each job — after the camera's fence,
//!   so the mapping copies the frame in — and unmaps them when its job is done, which
//!   copies its output back to memory.
//! - The CPU inspects every `inspect_every`-th output inside begin/end CPU access, after
//!   waiting for the isp's fence (as userspace waits for a sync file before
//!   `DMA_BUF_IOCTL_SYNC`: exporters sync their mappings for the CPU before the core's
//!   own fence wait).
//! - The encoder waits for the isp through an explicit sync file (as well as implicitly)
//!   and checksums the output; every frame's checksum is checked against the expected
//!   one, and every inspected frame's bytes.
//!
//! Every buffer is tracked by one ownership tracker; lockdep reports from every thread of
//! the run are captured. The run's [`DemoReport`] counts wrong frames and reports of
//! every kind: a clean run has none.

pub mod processes;

use crate::buf::{AttachGuard, Direction, DmaBuf, SgMapping};
use crate::debug::ownership::{OwnershipReport, Tracker};
use crate::device::cpu::CpuView;
use crate::device::engine::{Engine, EngineConfig, JobHandle};
use crate::device::job::{checksum, Job, Operand};
use crate::device::Device;
use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Frames to push through (≥ 1).
    pub frames: usize,
    /// Bytes per frame (rounded up to pages by the allocator; ≥ 1).
    pub frame_bytes: usize,
    /// Buffer pairs in the ring (≥ 1).
    pub ring: usize,
    /// The CPU inspects every n-th frame (≥ 1).
    pub inspect_every: usize,
    /// Whether the processing device is coherent (the default is not: bounce buffers).
    pub isp_coherent: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            frames: 240,
            frame_bytes: 256 * 1024,
            ring: 4,
            inspect_every: 4,
            isp_coherent: false,
        }
    }
}

impl DemoConfig {
    /// Check the configuration.
    ///
    /// # Errors
    ///
    /// `Invalid` for zero frames, bytes, ring slots or inspection rate.
    pub fn check(&self) -> Result<()> {
        if self.frames == 0 || self.frame_bytes == 0 || self.ring == 0 || self.inspect_every == 0 {
            return Err(Error::Invalid(
                "demo of zero frames, bytes, ring or inspection rate",
            ));
        }
        Ok(())
    }
}

/// What happened.
#[derive(Debug, Default)]
pub struct DemoReport {
    /// Frames run.
    pub frames: usize,
    /// Frames whose checksum (and, when inspected, bytes) were right.
    pub frames_ok: usize,
    /// Frames the CPU inspected.
    pub inspected: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Per-frame latency, camera submission → encoder signal, in frame order.
    pub latencies: Vec<Duration>,
    /// Ownership-tracker reports.
    pub ownership: Vec<OwnershipReport>,
    /// Lockdep reports raised on any thread of the run.
    pub lockdep: Vec<lockdep::Report>,
    /// IOMMU faults recorded by the devices.
    pub faults: usize,
    /// Jobs that failed (error fences).
    pub failed_jobs: usize,
    /// The kernel-format `bufinfo` taken while the ring was still allocated.
    pub bufinfo: String,
    /// Reports of any kind (lockdep, ownership, IOMMU faults, failed jobs) counted by
    /// the stage processes of a multi-process run ([`processes`]), which print them.
    pub stage_reports: usize,
}

impl DemoReport {
    /// Whether the run was clean: every frame right, no report of any kind.
    pub fn is_clean(&self) -> bool {
        self.frames_ok == self.frames
            && self.ownership.is_empty()
            && self.lockdep.is_empty()
            && self.faults == 0
            && self.failed_jobs == 0
            && self.stage_reports == 0
    }

    /// The `p`-th percentile (0..=100) of the frame latencies.
    pub fn latency_percentile(&self, p: f64) -> Duration {
        let mut v = self.latencies.clone();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v.sort();
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

/// The byte the camera writes into frame `i`.
pub(crate) fn frame_value(i: usize) -> u8 {
    (i as u8).wrapping_mul(37).wrapping_add(1)
}

struct Slot {
    /// Kept for the ring's life (the mappings hold references too).
    _input: DmaBuf,
    output: DmaBuf,
    cam_map: SgMapping,
    enc_map: SgMapping,
    _atts: Vec<AttachGuard>,
    /// The isp's attachments of this slot (mapped per job).
    isp_in: AttachGuard,
    isp_out: AttachGuard,
}

/// A frame in flight.
struct InFlight {
    frame: usize,
    camera: JobHandle,
    encoder: JobHandle,
    want: u64,
    cpu_ok: bool,
}

/// Run the demo. `alloc(bytes)` makes each buffer; `progress(done, total)` is called as
/// frames complete.
///
/// Must not hold a reservation lock. Errors: `Invalid` for a zero count or size;
/// allocation, attach and map errors as they come (jobs already queued complete: engines
/// signal every fence).
pub fn run(
    cfg: &DemoConfig,
    alloc: &dyn Fn(usize) -> Result<DmaBuf>,
    progress: &dyn Fn(usize, usize),
) -> Result<DemoReport> {
    cfg.check()?;
    let capture = lockdep::Capture::new();
    let _cap = capture.install();
    let ecfg = EngineConfig {
        lockdep_capture: Some(capture.clone()),
        ..EngineConfig::default()
    };
    let tracker = Arc::new(Tracker::new());
    let camera = Device::new("camera", u32::MAX as u64, true, false)?;
    let isp = Device::new("isp", u32::MAX as u64, cfg.isp_coherent, false)?;
    let encoder = Device::new("encoder", u32::MAX as u64, true, false)?;
    let cam_e = Engine::with_config(&camera, "camera", ecfg.clone())?;
    let isp_e = Engine::with_config(&isp, "isp", ecfg.clone())?;
    let enc_e = Engine::with_config(&encoder, "encoder", ecfg)?;

    let mut slots = Vec::with_capacity(cfg.ring);
    for s in 0..cfg.ring {
        let input = alloc(cfg.frame_bytes)?;
        let output = alloc(cfg.frame_bytes)?;
        input.set_name(&format!("ring{s}-in"))?;
        output.set_name(&format!("ring{s}-out"))?;
        input.set_tracker(&tracker)?;
        output.set_tracker(&tracker)?;
        let ca = input.attach(&camera)?;
        let ea = output.attach(&encoder)?;
        let cam_map = ca.map_unlocked(Direction::FromDevice)?;
        let enc_map = ea.map_unlocked(Direction::ToDevice)?;
        slots.push(Slot {
            isp_in: input.attach(&isp)?,
            isp_out: output.attach(&isp)?,
            _input: input,
            output,
            cam_map,
            enc_map,
            _atts: vec![ca, ea],
        });
    }
    let bytes = slots[0].output.size();

    let start = Instant::now();
    let mut report = DemoReport {
        frames: cfg.frames,
        ..Default::default()
    };
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut done = 0usize;
    let mut finish = |f: InFlight, report: &mut DemoReport| {
        f.encoder.fence().wait();
        let rec = f.encoder.record();
        let sum_ok = rec.as_ref().and_then(|r| r.checksum) == Some(f.want);
        report.frames_ok += usize::from(sum_ok && f.cpu_ok);
        if let (Some(c), Some(e)) = (f.camera.record(), rec) {
            report.latencies.push(Duration::from_nanos(
                e.signalled_ns.saturating_sub(c.submitted_ns),
            ));
        }
        let _ = f.frame;
        done += 1;
        progress(done, cfg.frames);
    };
    for i in 0..cfg.frames {
        let s = &slots[i % cfg.ring];
        // Keep at most `ring` frames in flight: the oldest must finish before its slot
        // is reused (its fences order the reuse anyway; this bounds the mappings held).
        if in_flight.len() == cfg.ring {
            let f = in_flight.pop_front().expect("non-empty");
            finish(f, &mut report);
        }
        let value = frame_value(i);
        let camera_job = cam_e.submit(Job::fill(Operand::new(&s.cam_map), value))?;
        // The isp maps the frame once it is written (the map copies it in), and maps its
        // output for the job (the unmap copies its result back).
        camera_job.fence().wait();
        let im = s.isp_in.map_unlocked(Direction::ToDevice)?;
        let om = s.isp_out.map_unlocked(Direction::FromDevice)?;
        let isp_job = isp_e.submit(Job::invert(Operand::new(&im), Operand::new(&om)))?;
        let expect = !value;
        let mut cpu_ok = true;
        // Wait for the isp, as userspace waits for a sync file before DMA_BUF_IOCTL_SYNC:
        // the exporter syncs its mappings for the CPU before the core's fence wait.
        isp_job.fence().wait();
        if i % cfg.inspect_every == 0 {
            report.inspected += 1;
            let acc = s.output.cpu_access(Direction::FromDevice)?;
            let seen = CpuView::new(&s.output)?.read_vec(0, bytes)?;
            acc.end()?;
            cpu_ok = seen.iter().all(|&b| b == expect);
        }
        drop(im);
        drop(om);
        let sf = isp_job.sync_file()?;
        let enc_job = Job::checksum(Operand::new(&s.enc_map)).after_sync_file(sf.as_fd())?;
        let encoder_job = enc_e.submit(enc_job)?;
        in_flight.push_back(InFlight {
            frame: i,
            camera: camera_job,
            encoder: encoder_job,
            want: checksum(&vec![expect; bytes]),
            cpu_ok,
        });
    }
    while let Some(f) = in_flight.pop_front() {
        finish(f, &mut report);
    }
    report.elapsed = start.elapsed();
    report.bufinfo = crate::buf::bufinfo::bufinfo();
    for e in [&cam_e, &isp_e, &enc_e] {
        report.failed_jobs += e.counts().1 as usize;
    }
    report.faults = [&camera, &isp, &encoder]
        .iter()
        .map(|d| d.dma().iommu().faults().len())
        .sum();
    drop(slots);
    drop((cam_e, isp_e, enc_e));
    report.ownership = tracker.take_reports();
    report.lockdep = capture.take();
    Ok(report)
}

/// Self-test scenarios: the pipeline on each heap, small.
pub(crate) fn cases() -> Vec<lockdep::selftest::Case> {
    fn on(heap: &str) -> std::result::Result<(), String> {
        let cfg = DemoConfig {
            frames: 16,
            frame_bytes: 64 * 1024,
            ring: 3,
            inspect_every: 2,
            isp_coherent: false,
        };
        let alloc = |bytes: usize| {
            crate::heap::heaps().alloc(heap, &crate::heap::AllocData::new(bytes as u64))
        };
        let r = run(&cfg, &alloc, &|_, _| {}).map_err(|e| e.to_string())?;
        if r.is_clean() {
            Ok(())
        } else {
            Err(format!(
                "{} of {} frames ok, {} lockdep, {} ownership, {} faults, {} failed jobs",
                r.frames_ok,
                r.frames,
                r.lockdep.len(),
                r.ownership.len(),
                r.faults,
                r.failed_jobs
            ))
        }
    }
    crate::selftest::case_table![
        "demo/pipeline-system-heap" => || on("system"),
        "demo/pipeline-contig-heap" => || on("contig"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::simple::SimpleExporter;

    fn alloc(bytes: usize) -> Result<DmaBuf> {
        SimpleExporter::new(bytes.div_ceil(crate::mem::memfd::page_size()))?.export()
    }

    #[test]
    fn a_clean_run_checks_every_frame() {
        let cfg = DemoConfig {
            frames: 12,
            frame_bytes: 3 * 4096,
            ring: 3,
            inspect_every: 2,
            isp_coherent: false,
        };
        let seen = std::sync::atomic::AtomicUsize::new(0);
        let r = run(&cfg, &alloc, &|d, t| {
            assert!(d <= t);
            seen.store(d, std::sync::atomic::Ordering::SeqCst);
        })
        .unwrap();
        assert!(r.is_clean(), "{r:#?}");
        assert_eq!(r.frames_ok, 12);
        assert_eq!(r.inspected, 6);
        assert_eq!(r.latencies.len(), 12);
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 12);
        assert!(r.bufinfo.contains("ring0-in") && r.bufinfo.contains("Attached Devices"));
        assert!(r.latency_percentile(50.0) <= r.latency_percentile(99.0));
    }

    #[test]
    fn the_pipeline_is_clean_on_every_heap() {
        for c in cases() {
            (c.run)().unwrap_or_else(|e| panic!("{}: {e}", c.name));
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        for cfg in [
            DemoConfig {
                frames: 0,
                ..Default::default()
            },
            DemoConfig {
                frame_bytes: 0,
                ..Default::default()
            },
            DemoConfig {
                ring: 0,
                ..Default::default()
            },
            DemoConfig {
                inspect_every: 0,
                ..Default::default()
            },
        ] {
            let e = run(&cfg, &alloc, &|_, _| {}).unwrap_err();
            assert_eq!(e.errno(), 22);
        }
    }
}
