//! A frame pipeline across devices, the shape of `dmabuf demo`: a coherent producer
//! ("camera") fills frames, a non-coherent processor ("isp") inverts them into output
//! frames, the CPU inspects each output inside begin/end CPU access, and a coherent
//! consumer ("encoder") checksums it. Every buffer is tracked by one ownership tracker;
//! the run reports what each frame looked like, the tracker's and lockdep's reports,
//! IOMMU faults, and each job's record (submit → signal latency).
//!
//! DOC: how data reaches a bounce-buffered device. A non-coherent device sees memory
//! only through its bounce buffer, which takes memory's contents when the mapping is made
//! and at end CPU access (the exporter's sync for the device), and gives its contents
//! back at begin CPU access and unmap. So:
//! - the processor maps each input frame once the producer's fence has signalled (a
//!   mapping made at submission would hold the frame as it was before the producer ran);
//! - the processor's output reaches memory when the CPU begins access to it: the
//!   consumer, which reads memory, is submitted after the CPU's inspection. Skipping the
//!   bracket ([`Bug::SkipCpuBracket`]) shows both halves of the bug: the CPU reads stale
//!   memory, the consumer checksums stale memory, and the tracker names the access.
//!
//! Ordering is implicit everywhere: each job waits through the buffers' reservation
//! objects, and begin CPU access waits for the processor's write fence.

use super::cpu::CpuView;
use super::engine::{Engine, EngineConfig, JobHandle};
use super::job::{checksum, Job, JobRecord, Operand};
use super::Device;
use crate::buf::{AttachGuard, Direction, DmaBuf, SgMapping};
use crate::debug::ownership::{OwnershipReport, Tracker};
use crate::error::{Error, Result};
use crate::simple::SimpleExporter;
use std::sync::Arc;

/// A bug to inject, to see what the tooling says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The CPU reads output frames without begin/end CPU access.
    SkipCpuBracket,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Number of frames (at least 1).
    pub frames: usize,
    /// Pages per frame (at least 1).
    pub pages: usize,
    /// A bug to inject, if any.
    pub bug: Option<Bug>,
    /// Engine settings (timeouts, history). Its lockdep capture, if any, is installed
    /// on the calling thread for the run too, and its report count returned.
    pub engine: EngineConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            frames: 8,
            pages: 4,
            bug: None,
            engine: EngineConfig::default(),
        }
    }
}

/// What happened.
#[derive(Clone, Debug, Default)]
pub struct PipelineReport {
    /// Frames run.
    pub frames: usize,
    /// Frames whose CPU view and consumer checksum were both right.
    pub frames_ok: usize,
    /// Frames the CPU saw right.
    pub cpu_ok: usize,
    /// Frames the consumer checksummed right.
    pub consumer_ok: usize,
    /// Ownership-tracker reports (count).
    pub ownership_reports: usize,
    /// The reports themselves.
    pub ownership: Vec<OwnershipReport>,
    /// Lockdep reports in the capture at the end (0 without a capture).
    pub lockdep_reports: usize,
    /// IOMMU faults recorded on the three devices.
    pub faults: usize,
    /// Every job's record (producer, processor, consumer), in completion order per
    /// engine.
    pub latencies: Vec<JobRecord>,
}

/// One frame's buffers and mappings.
struct Frame {
    input: DmaBuf,
    output: DmaBuf,
    _exporters: [Arc<SimpleExporter>; 2],
    cam_map: SgMapping,
    isp_out_map: SgMapping,
    enc_map: SgMapping,
    // Attachments after mappings: mappings must drop first.
    _atts: Vec<AttachGuard>,
}

/// The value the producer writes into frame `i`.
fn frame_value(i: usize) -> u8 {
    (i as u8).wrapping_mul(37).wrapping_add(1)
}

/// Run the pipeline.
///
/// Must not hold a reservation lock (the run takes them).
///
/// # Errors
///
/// `Invalid` for zero frames or pages; allocation, mapping and submission errors
/// (`NoMem`, `Os`, ...) — the run stops at the first (jobs already submitted complete,
/// as engines signal every fence).
pub fn run(cfg: &PipelineConfig) -> Result<PipelineReport> {
    if cfg.frames == 0 || cfg.pages == 0 {
        return Err(Error::Invalid("pipeline of zero frames or pages"));
    }
    let _capture = cfg.engine.lockdep_capture.as_ref().map(|c| c.install());
    let ecfg = cfg.engine.clone();
    let tracker = Arc::new(Tracker::new());
    let cam = Device::new("camera", u32::MAX as u64, true, false)?;
    let isp = Device::new("isp", u32::MAX as u64, false, false)?;
    let enc = Device::new("encoder", u32::MAX as u64, true, false)?;
    let cam_e = Engine::with_config(&cam, "camera", ecfg.clone())?;
    let isp_e = Engine::with_config(&isp, "isp", ecfg.clone())?;
    let enc_e = Engine::with_config(&enc, "encoder", ecfg)?;

    let mut frames = Vec::with_capacity(cfg.frames);
    for i in 0..cfg.frames {
        let (ei, eo) = (
            SimpleExporter::new(cfg.pages)?,
            SimpleExporter::new(cfg.pages)?,
        );
        let (input, output) = (ei.export()?, eo.export()?);
        input.set_name(&format!("frame{i}"))?;
        output.set_name(&format!("out{i}"))?;
        input.set_tracker(&tracker)?;
        output.set_tracker(&tracker)?;
        let (ca, ia, ea) = (
            input.attach(&cam)?,
            output.attach(&isp)?,
            output.attach(&enc)?,
        );
        let cam_map = ca.map_unlocked(Direction::FromDevice)?;
        let isp_out_map = ia.map_unlocked(Direction::FromDevice)?;
        let enc_map = ea.map_unlocked(Direction::ToDevice)?;
        frames.push(Frame {
            input,
            output,
            _exporters: [ei, eo],
            cam_map,
            isp_out_map,
            enc_map,
            _atts: vec![ca, ia, ea],
        });
    }

    // The producer runs ahead on all frames.
    let mut produced: Vec<JobHandle> = Vec::with_capacity(cfg.frames);
    for (i, f) in frames.iter().enumerate() {
        produced.push(cam_e.submit(Job::fill(Operand::new(&f.cam_map), frame_value(i)))?);
    }

    let mut report = PipelineReport {
        frames: cfg.frames,
        ..Default::default()
    };
    let mut consumed = Vec::with_capacity(cfg.frames);
    let mut isp_inputs = Vec::with_capacity(cfg.frames);
    let mut cpu_right = Vec::with_capacity(cfg.frames);
    for (i, f) in frames.iter().enumerate() {
        let expect = vec![!frame_value(i); f.output.size()];
        // The processor maps the input once the producer is done (see the module docs).
        produced[i].fence().wait();
        let ia = f.input.attach(&isp)?;
        let im = ia.map_unlocked(Direction::ToDevice)?;
        isp_e.submit(Job::invert(Operand::new(&im), Operand::new(&f.isp_out_map)))?;
        // The mapping first: a tuple drops its fields in order, and unmap comes before
        // detach.
        isp_inputs.push((im, ia));
        // The CPU inspects the output.
        let view = CpuView::new(&f.output)?;
        let seen = match cfg.bug {
            Some(Bug::SkipCpuBracket) => {
                f.output.resv().wait_timeout(
                    crate::resv::Usage::Write,
                    std::time::Duration::MAX,
                    None,
                )?;
                view.read_vec(0, f.output.size())?
            }
            None => {
                let acc = f.output.cpu_access(Direction::FromDevice)?;
                let v = view.read_vec(0, f.output.size())?;
                acc.end()?;
                v
            }
        };
        cpu_right.push(seen == expect);
        // The consumer checksums it.
        consumed.push((
            enc_e.submit(Job::checksum(Operand::new(&f.enc_map)))?,
            checksum(&expect),
        ));
    }
    for ((h, want), cpu) in consumed.iter().zip(&cpu_right) {
        h.fence().wait();
        let consumer = h.record().and_then(|r| r.checksum) == Some(*want);
        report.cpu_ok += usize::from(*cpu);
        report.consumer_ok += usize::from(consumer);
        report.frames_ok += usize::from(*cpu && consumer);
    }
    for e in [&cam_e, &isp_e, &enc_e] {
        report.latencies.extend(e.take_records());
    }
    // Tear down: every job is done (the consumer's were the last).
    for h in &produced {
        h.fence().wait();
    }
    drop(isp_inputs);
    drop(frames);
    report.ownership = tracker.take_reports();
    report.ownership_reports = report.ownership.len();
    report.faults = [&cam, &isp, &enc]
        .iter()
        .map(|d| d.dma().iommu().faults().len())
        .sum();
    report.lockdep_reports = cfg.engine.lockdep_capture.as_ref().map_or(0, |c| c.len());
    Ok(report)
}
