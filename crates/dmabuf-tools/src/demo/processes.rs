//! `dmabuf demo --processes`: the same pipeline with the camera, the isp and the
//! encoder each in its own process (the same binary, run as `demo --stage NAME`),
//! sharing the ring's buffers as descriptors and ordering each frame with sync files.
//!
//! ```text
//!              control sockets (setup, frame requests, results, statistics)
//!   parent ─────────────┬───────────────────┬──────────────────────┐
//!     │ allocates ring  │                   │                      │
//!   camera ──FRAM+sync file──▶ isp ──FRAM+sync file──▶ encoder ──DONE──▶ parent
//! ```
//!
//! - The parent allocates the ring once and sends each stage the buffers it touches
//!   ([`buf::send`]): inputs to the camera, both to the isp, outputs to
//!   the encoder. Each stage imports them ([`buf::recv`]: zero copy,
//!   its own buffer objects and reservation objects) and attaches them to its own
//!   simulated device.
//! - Per frame the parent asks the camera for frame `i` in slot `i mod ring`; the
//!   camera submits its fill and sends the isp the frame with its job's sync file,
//!   without waiting; the isp waits for it, maps, inverts, unmaps and sends its own sync
//!   file on; the encoder checksums after that sync file, inspects every n-th frame's
//!   bytes inside CPU access, and reports the frame to the parent. Implicit sync does not
//!   cross processes: every cross-process order is one of these sync files. The parent
//!   keeps at most `ring` frames in flight, so a slot is reused only after its previous
//!   frame was reported.
//! - Every stage runs with lockdep and an ownership tracker, prints its own reports,
//!   and sends its counts to the parent at the end.
//! - A stage that dies is seen by its neighbours as end of file on their socket,
//!   `EPIPE` on a send, or `-EPIPE` on its sync files (the liveness channel), and by the
//!   parent through `waitpid`: each stage that sees it says which neighbour went and
//!   exits non-zero; the parent names the stage that died, ends the others within
//!   about two seconds, and fails. No wait is unbounded: fence waits and the parent's
//!   polls give up after 10 s, and so do sends (the sockets' send timeout) to a stage
//!   that is alive but stopped reading.
//! - At the end, failed or not, the parent checks that every stage was reaped (and, on
//!   success, exited 0) and, with [`Options::check_leaks`], that its own descriptors and
//!   buffers are back to where they were before the run.

use super::{frame_value, DemoConfig, DemoReport};
use crate::buf::{self, AttachGuard, Direction, DmaBuf, SgMapping};
use crate::debug::ownership::Tracker;
use crate::device::cpu::CpuView;
use crate::device::engine::{Engine, EngineConfig, JobHandle};
use crate::device::job::{checksum, Job, Operand};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::sync_file::{self, SyncFile};
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use std::collections::{HashMap, VecDeque};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The stages, in pipeline order.
pub const STAGES: [&str; 3] = ["camera", "isp", "encoder"];

/// How long any stage waits for a fence, and the parent for progress, before calling
/// the run stuck.
const STALL: Duration = Duration::from_secs(10);
/// How long the parent gives the surviving stages to exit by themselves after one died.
const GRACE: Duration = Duration::from_secs(2);

/// How to run: what to inject, what to check.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Kill a stage mid-run.
    pub kill: Option<Kill>,
    /// Check that this process's descriptors and live buffers are back where they were
    /// after the run (fail with `Busy` if not). Meaningful only where nothing else in
    /// the process opens descriptors or makes buffers meanwhile (the CLI; not a
    /// multi-threaded test binary).
    pub check_leaks: bool,
}

/// A failure to inject: kill `stage` (SIGKILL) once `after` frames are done.
#[derive(Clone, Debug)]
pub struct Kill {
    /// The stage's name (one of [`STAGES`]).
    pub stage: String,
    /// Frames done before the kill.
    pub after: usize,
}

/// A socket pair whose sends give up after [`STALL`] (`EAGAIN`) when the peer stops
/// reading, so that no send blocks forever either.
fn seqpacket() -> Result<(OwnedFd, OwnedFd)> {
    let (a, b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    for s in [&a, &b] {
        rustix::net::sockopt::set_socket_timeout(
            s,
            rustix::net::sockopt::Timeout::Send,
            Some(STALL),
        )?;
    }
    Ok((a, b))
}

/// A frame message: tag, frame number, slot.
fn frame_msg(tag: &[u8; 4], frame: u64, slot: u32) -> Vec<u8> {
    let mut m = tag.to_vec();
    m.extend_from_slice(&frame.to_le_bytes());
    m.extend_from_slice(&slot.to_le_bytes());
    m
}

fn parse_frame(m: &[u8]) -> Result<(u64, usize)> {
    let f = m.get(4..12).ok_or(Error::Invalid("short frame message"))?;
    let s = m.get(12..16).ok_or(Error::Invalid("short frame message"))?;
    Ok((
        u64::from_le_bytes(f.try_into().map_err(|_| Error::Invalid("frame"))?),
        u32::from_le_bytes(s.try_into().map_err(|_| Error::Invalid("slot"))?) as usize,
    ))
}

/// The descriptors open in this process (entries of `/proc/self/fd`, less the one
/// reading it).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1))
        .unwrap_or(0)
}

/// Run the pipeline across processes. `spawn(stage, control)` starts the stage
/// process with `control` as its control socket (the CLI runs its own binary as `demo
/// --stage NAME` with the socket as standard input). `opts` says what to inject and
/// whether to check for leaks.
///
/// Must not hold a reservation lock.
///
/// # Errors
///
/// `Invalid` for a zero count or size; allocation and socket errors as they come;
/// `Os(EPIPE)` when a stage died or exited early (the message names it on standard
/// error); `TimedOut` when the pipeline made no progress for 10 s; `Busy` when
/// descriptors or buffers of the parent leaked (with [`Options::check_leaks`]). Every stage process is ended and
/// reaped before this returns, whatever happened.
pub fn run(
    cfg: &DemoConfig,
    alloc: &dyn Fn(usize) -> Result<DmaBuf>,
    spawn: &dyn Fn(&str, OwnedFd) -> std::io::Result<Child>,
    opts: &Options,
    progress: &dyn Fn(usize, usize),
) -> Result<DemoReport> {
    let kill = opts.kill.as_ref();
    cfg.check()?;
    // Process-wide state made on first use (a heap registry's reserved region) is not
    // the run's: make it before counting.
    drop(alloc(cfg.frame_bytes)?);
    let fds_before = open_fds();
    let bufs_before = buf::live_buffer_count();
    let mut children: Vec<(&str, Child)> = Vec::new();
    let r = parent(cfg, alloc, spawn, kill, progress, &mut children);
    let failed = r.is_err();
    let reaped = reap(&mut children, failed);
    // Checked whatever happened: a failed run must not leak either.
    let (fds_after, bufs_after) = (open_fds(), buf::live_buffer_count());
    let leaked = opts.check_leaks && (fds_after > fds_before || bufs_after > bufs_before);
    if leaked {
        eprintln!(
            "dmabuf demo: leak: descriptors {fds_before} -> {fds_after}, buffers {bufs_before} -> {bufs_after}"
        );
    } else if failed && opts.check_leaks {
        eprintln!(
            "dmabuf demo: every stage reaped, no leak: descriptors {fds_before} -> {fds_after}, buffers {bufs_before} -> {bufs_after}"
        );
    }
    let mut report = r?;
    reaped?;
    if leaked {
        return Err(Error::Busy("descriptors or buffers leaked"));
    }
    report.bufinfo.push_str(&format!(
        "processes: {} stages exited 0; parent descriptors {fds_before} -> {fds_after}, buffers {bufs_before} -> {bufs_after}\n",
        STAGES.len()
    ));
    Ok(report)
}

/// End and reap every stage: after a failure, give them [`GRACE`] to exit by
/// themselves (their neighbours' end of file), then kill the rest. `Err` when a stage
/// exited non-zero in a run that otherwise succeeded.
fn reap(children: &mut Vec<(&str, Child)>, failed: bool) -> Result<()> {
    let deadline = Instant::now() + if failed { GRACE } else { STALL };
    let mut bad = None;
    for (name, c) in children.iter_mut() {
        let st = loop {
            match c.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = c.kill();
                    break c.wait().ok();
                }
            }
        };
        if !st.is_some_and(|s| s.success()) {
            bad.get_or_insert(*name);
        }
    }
    children.clear();
    match bad {
        Some(name) if !failed => {
            eprintln!("dmabuf demo: stage {name} exited with an error");
            Err(Error::Os(rustix::io::Errno::PIPE))
        }
        _ => Ok(()),
    }
}

/// How a child ended, in words.
fn how(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (_, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended".into(),
    }
}

/// The stage that died, named on standard error: a stage that sees a neighbour go
/// exits too, so after the first exit is seen the others get a moment to end, and the
/// one that did not exit by itself (killed by a signal) is named first.
fn dead_stage(children: &mut [(&str, Child)]) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    let any = children
        .iter_mut()
        .any(|(_, c)| matches!(c.try_wait(), Ok(Some(_))));
    if !any {
        return None;
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut ended: Vec<(String, std::process::ExitStatus)> = children
        .iter_mut()
        .filter_map(|(n, c)| c.try_wait().ok().flatten().map(|st| (n.to_string(), st)))
        .collect();
    ended.sort_by_key(|(_, st)| st.signal().is_none());
    for (i, (name, st)) in ended.iter().enumerate() {
        if i == 0 {
            eprintln!("dmabuf demo: stage {name} {} mid-run", how(*st));
        } else {
            eprintln!("dmabuf demo: stage {name} {} after it", how(*st));
        }
    }
    ended.into_iter().next().map(|(n, _)| n)
}

fn stage_died() -> Error {
    Error::Os(rustix::io::Errno::PIPE)
}

fn parent<'a>(
    cfg: &DemoConfig,
    alloc: &dyn Fn(usize) -> Result<DmaBuf>,
    spawn: &dyn Fn(&str, OwnedFd) -> std::io::Result<Child>,
    kill: Option<&Kill>,
    progress: &dyn Fn(usize, usize),
    children: &mut Vec<(&'a str, Child)>,
) -> Result<DemoReport> {
    let mut inputs = Vec::with_capacity(cfg.ring);
    let mut outputs = Vec::with_capacity(cfg.ring);
    for s in 0..cfg.ring {
        let i = alloc(cfg.frame_bytes)?;
        let o = alloc(cfg.frame_bytes)?;
        i.set_name(&format!("ring{s}-in"))?;
        o.set_name(&format!("ring{s}-out"))?;
        inputs.push(i);
        outputs.push(o);
    }
    let bytes = outputs[0].size();
    let mut ctl = Vec::new();
    for name in STAGES {
        let (mine, theirs) = seqpacket()?;
        let child = spawn(name, theirs).map_err(|e| {
            Error::Os(rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))
        })?;
        children.push((name, child));
        ctl.push(mine);
    }
    // Wire the stages together, then hand each its buffers.
    {
        let (cam_isp_a, cam_isp_b) = seqpacket()?;
        let (isp_enc_a, isp_enc_b) = seqpacket()?;
        sync_file::send_fds(ctl[0].as_fd(), b"SOCK", &[cam_isp_a.as_fd()])?;
        sync_file::send_fds(
            ctl[1].as_fd(),
            b"SOCK",
            &[cam_isp_b.as_fd(), isp_enc_a.as_fd()],
        )?;
        sync_file::send_fds(ctl[2].as_fd(), b"SOCK", &[isp_enc_b.as_fd()])?;
        // Our copies close here: a stage's death is then its neighbours' end of file.
    }
    if let Err(e) = inputs[0].fd(0) {
        eprintln!("dmabuf demo: the ring's buffers have no descriptors ({e}): use a heap whose buffers do (system, contig)");
        return Err(e);
    }
    for s in 0..cfg.ring {
        buf::send(ctl[0].as_fd(), &inputs[s], &[])?;
        buf::send(ctl[1].as_fd(), &inputs[s], &[])?;
        buf::send(ctl[1].as_fd(), &outputs[s], &[])?;
        buf::send(ctl[2].as_fd(), &outputs[s], &[])?;
    }
    let mut report = DemoReport {
        frames: cfg.frames,
        ..Default::default()
    };
    report.bufinfo = crate::buf::bufinfo::bufinfo();
    let start = Instant::now();
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut next = 0usize;
    let mut done = 0usize;
    let mut latencies: VecDeque<Duration> = VecDeque::new();
    let mut last_progress = Instant::now();
    let mut killed = false;
    while done < cfg.frames {
        while next < cfg.frames && next < done + cfg.ring {
            let m = frame_msg(b"FRAM", next as u64, (next % cfg.ring) as u32);
            if sync_file::send_fds(ctl[0].as_fd(), &m, &[]).is_err() {
                dead_stage(children);
                return Err(stage_died());
            }
            sent.insert(next as u64, Instant::now());
            next += 1;
        }
        if let Some(k) = kill.filter(|k| !killed && done >= k.after) {
            if let Some((_, c)) = children.iter_mut().find(|(n, _)| *n == k.stage) {
                let _ = c.kill();
            }
            killed = true;
        }
        if !readable(ctl[2].as_fd(), Duration::from_millis(100))? {
            if dead_stage(children).is_some() {
                return Err(stage_died());
            }
            if last_progress.elapsed() > STALL {
                eprintln!("dmabuf demo: no frame for {} s", STALL.as_secs());
                return Err(Error::TimedOut);
            }
            continue;
        }
        let (m, _) = match sync_file::recv_fds(ctl[2].as_fd()) {
            Ok(x) => x,
            Err(_) => {
                // The encoder's end closed: wait a moment for its status.
                std::thread::sleep(Duration::from_millis(50));
                if dead_stage(children).is_none() {
                    eprintln!("dmabuf demo: stage encoder hung up mid-run");
                }
                return Err(stage_died());
            }
        };
        let (frame, _) = parse_frame(&m)?;
        let (sum_ok, cpu_ok, inspected) = match m.get(16..19) {
            Some(&[a, b, c]) if m.starts_with(b"DONE") => (a == 1, b == 1, c == 1),
            _ => return Err(Error::Invalid("unexpected message from the encoder")),
        };
        report.frames_ok += usize::from(sum_ok && cpu_ok);
        report.inspected += usize::from(inspected);
        if let Some(t) = sent.remove(&frame) {
            latencies.push_back(t.elapsed());
        }
        done += 1;
        last_progress = Instant::now();
        progress(done, cfg.frames);
    }
    report.elapsed = start.elapsed();
    report.latencies = latencies.into();
    sync_file::send_fds(ctl[0].as_fd(), b"STOP", &[])?;
    // Each stage's counts, then its exit.
    for (i, c) in ctl.iter().enumerate() {
        if !readable(c.as_fd(), STALL)? {
            eprintln!("dmabuf demo: stage {} sent no statistics", STAGES[i]);
            return Err(Error::TimedOut);
        }
        let (m, _) = sync_file::recv_fds(c.as_fd()).inspect_err(|_| {
            dead_stage(children);
        })?;
        let n = m
            .get(4..12)
            .filter(|_| m.starts_with(b"STAT"))
            .ok_or(Error::Invalid("unexpected message instead of statistics"))?;
        report.stage_reports +=
            u64::from_le_bytes(n.try_into().map_err(|_| Error::Invalid("stat"))?) as usize;
    }
    drop((inputs, outputs));
    let _ = bytes;
    Ok(report)
}

/// Whether `fd` polls readable (or hung up) within `t`.
fn readable(fd: BorrowedFd<'_>, t: Duration) -> Result<bool> {
    let mut p = [PollFd::new(&fd, PollFlags::IN)];
    let ts = rustix::event::Timespec {
        tv_sec: t.as_secs() as i64,
        tv_nsec: t.subsec_nanos() as i64,
    };
    match rustix::event::poll(&mut p, Some(&ts)) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What one stage holds.
struct Stage {
    name: &'static str,
    ctl: OwnedFd,
    up: Option<OwnedFd>,
    down: Option<OwnedFd>,
    engine: Engine,
    device: Arc<Device>,
    tracker: Arc<Tracker>,
    capture: lockdep::Capture,
}

/// Run stage `name` of a multi-process demo over the control socket `ctl` (the
/// parent's [`run`] on the other end). Prints its reports and any failure — naming the
/// neighbour that went away — on standard error; returns the process's exit code (0
/// for a clean stage).
pub fn stage_main(name: &str, cfg: &DemoConfig, ctl: OwnedFd) -> i32 {
    let Some(&name) = STAGES.iter().find(|s| **s == name) else {
        eprintln!(
            "dmabuf demo: no stage {name:?} (stages: {})",
            STAGES.join(", ")
        );
        return 2;
    };
    match stage(name, cfg, ctl) {
        Ok(0) => 0,
        Ok(n) => {
            eprintln!("dmabuf demo ({name}): {n} reports");
            0
        }
        Err(e) => {
            eprintln!("dmabuf demo ({name}): {e} (errno {})", e.errno());
            1
        }
    }
}

/// Receive on a neighbour's socket; its end of file names it.
fn recv_from(s: &Stage, from: &str) -> Result<(Vec<u8>, Vec<sync_file::Incoming>)> {
    let fd = if from == "parent" {
        &s.ctl
    } else {
        s.up.as_ref().ok_or(Error::Invalid("no upstream"))?
    };
    sync_file::recv_message(fd.as_fd()).inspect_err(|e| {
        if matches!(e, Error::NoEntry(_)) {
            eprintln!("dmabuf demo ({}): {from} went away (end of file)", s.name);
        }
    })
}

/// The next frame from upstream `from`: its number, slot and fence (imported with the
/// liveness descriptor that came beside it); `None` at `STOP`, which goes on to
/// `down` first, if there is one.
fn recv_frame(s: &Stage, from: &str, down: Option<&str>) -> Result<Option<(u64, usize, SyncFile)>> {
    let (m, fds) = recv_from(s, from)?;
    if m.starts_with(b"STOP") {
        if let Some(to) = down {
            send_down(s, to, b"STOP", &[])?;
        }
        return Ok(None);
    }
    let (frame, slot) = parse_frame(&m)?;
    let sf = fds
        .into_iter()
        .next()
        .ok_or(Error::Invalid("frame without a fence"))?
        .into_sync_file()?;
    Ok(Some((frame, slot, sf)))
}

/// Send downstream; a closed socket names the neighbour.
fn send_down(s: &Stage, to: &str, m: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    let d = s.down.as_ref().ok_or(Error::Invalid("no downstream"))?;
    sync_file::send_fds(d.as_fd(), m, fds).inspect_err(|_| {
        eprintln!("dmabuf demo ({}): {to} went away (send failed)", s.name);
    })
}

/// Wait for a neighbour's sync file: `-EPIPE` means its process died.
fn wait_for(s: &Stage, from: &str, sf: &SyncFile) -> Result<()> {
    sf.fence().wait_timeout(STALL).inspect_err(|_| {
        eprintln!(
            "dmabuf demo ({}): {from}'s fence did not signal in {} s",
            s.name,
            STALL.as_secs()
        );
    })?;
    match sf.fence().get_status() {
        1 => Ok(()),
        st => {
            eprintln!(
                "dmabuf demo ({}): {from}'s fence signalled with error {st}{}",
                s.name,
                if st == -32 { " (its process died)" } else { "" }
            );
            Err(Error::Os(rustix::io::Errno::from_raw_os_error(-st)))
        }
    }
}

fn stage(name: &'static str, cfg: &DemoConfig, ctl: OwnedFd) -> Result<usize> {
    cfg.check()?;
    let capture = lockdep::Capture::new();
    let _cap = capture.install();
    let ecfg = EngineConfig {
        lockdep_capture: Some(capture.clone()),
        ..EngineConfig::default()
    };
    let coherent = name != "isp" || cfg.isp_coherent;
    let device = Device::new(name, u32::MAX as u64, coherent, false)?;
    let engine = Engine::with_config(&device, name, ecfg)?;
    let (m, socks) = sync_file::recv_fds(ctl.as_fd())?;
    if m != b"SOCK" {
        return Err(Error::Invalid("expected the stage's sockets"));
    }
    let mut socks = socks.into_iter();
    let (up, down) = match name {
        "camera" => (None, socks.next()),
        "isp" => (socks.next(), socks.next()),
        _ => (socks.next(), None),
    };
    let s = Stage {
        name,
        ctl,
        up,
        down,
        engine,
        device,
        tracker: Arc::new(Tracker::new()),
        capture,
    };
    let r = match name {
        "camera" => camera(&s, cfg),
        "isp" => isp(&s, cfg),
        _ => encoder(&s, cfg),
    };
    let ownership = s.tracker.take_reports();
    let lockdep = s.capture.take();
    let (_, failed) = s.engine.counts();
    let faults = s.device.dma().iommu().faults().len();
    for r in &lockdep {
        eprintln!("{r}");
    }
    for r in &ownership {
        eprintln!("{r}");
    }
    let n = ownership.len() + lockdep.len() + faults + failed as usize;
    r?;
    let mut m = b"STAT".to_vec();
    m.extend_from_slice(&(n as u64).to_le_bytes());
    sync_file::send_fds(s.ctl.as_fd(), &m, &[])?;
    Ok(n)
}

/// Receive `n` buffers from the parent, each tracked.
fn ring(s: &Stage, n: usize) -> Result<Vec<DmaBuf>> {
    (0..n)
        .map(|_| {
            let b = buf::recv(s.ctl.as_fd())?.buf;
            b.set_tracker(&s.tracker)?;
            Ok(b)
        })
        .collect()
}

/// Receive `n` buffers, attach each to the stage's device and map it for `dir` for the
/// whole run (the camera's and the encoder's coherent devices).
fn mapped_ring(
    s: &Stage,
    n: usize,
    dir: Direction,
) -> Result<(Vec<DmaBuf>, Vec<AttachGuard>, Vec<SgMapping>)> {
    let bufs = ring(s, n)?;
    let atts: Vec<AttachGuard> = bufs
        .iter()
        .map(|b| b.attach(&s.device))
        .collect::<Result<_>>()?;
    let maps: Vec<SgMapping> = atts
        .iter()
        .map(|a| a.map_unlocked(dir))
        .collect::<Result<_>>()?;
    Ok((bufs, atts, maps))
}

/// Send frame `frame` of `slot` downstream to `to` with `job`'s sync file (pending or
/// not: the receiver waits for it).
fn pass_on(s: &Stage, to: &str, frame: u64, slot: usize, job: &JobHandle) -> Result<()> {
    let sf = job.sync_file()?;
    send_down(
        s,
        to,
        &frame_msg(b"FRAM", frame, slot as u32),
        &[sf.as_fd()],
    )
}

fn camera(s: &Stage, cfg: &DemoConfig) -> Result<()> {
    let (_inputs, _atts, maps) = mapped_ring(s, cfg.ring, Direction::FromDevice)?;
    loop {
        let (m, _) = recv_from(s, "parent")?;
        if m.starts_with(b"STOP") {
            send_down(s, "isp", b"STOP", &[])?;
            return Ok(());
        }
        let (frame, slot) = parse_frame(&m)?;
        let map = maps
            .get(slot)
            .ok_or(Error::Invalid("slot beyond the ring"))?;
        let job = s
            .engine
            .submit(Job::fill(Operand::new(map), frame_value(frame as usize)))?;
        // The fence crosses pending: the isp waits for it, not us.
        pass_on(s, "isp", frame, slot, &job)?;
    }
}

fn isp(s: &Stage, cfg: &DemoConfig) -> Result<()> {
    let mut ins = Vec::with_capacity(cfg.ring);
    let mut outs = Vec::with_capacity(cfg.ring);
    for _ in 0..cfg.ring {
        let b = ring(s, 2)?;
        ins.push(b[0].attach(&s.device)?);
        outs.push(b[1].attach(&s.device)?);
    }
    loop {
        let Some((frame, slot, cam)) = recv_frame(s, "camera", Some("encoder"))? else {
            return Ok(());
        };
        wait_for(s, "camera", &cam)?;
        let (ia, oa) = (
            ins.get(slot)
                .ok_or(Error::Invalid("slot beyond the ring"))?,
            &outs[slot],
        );
        // Map after the camera's fence (the map copies the frame in for a
        // bounce-buffered device); unmap after the job (copies the result out).
        let im = ia.map_unlocked(Direction::ToDevice)?;
        let om = oa.map_unlocked(Direction::FromDevice)?;
        let job = s
            .engine
            .submit(Job::invert(Operand::new(&im), Operand::new(&om)))?;
        job.fence().wait_timeout(STALL)?;
        drop((im, om));
        pass_on(s, "encoder", frame, slot, &job)?;
    }
}

fn encoder(s: &Stage, cfg: &DemoConfig) -> Result<()> {
    let (outputs, _atts, maps) = mapped_ring(s, cfg.ring, Direction::ToDevice)?;
    let bytes = outputs[0].size();
    let mut sums: HashMap<u8, u64> = HashMap::new();
    loop {
        let Some((frame, slot, isp)) = recv_frame(s, "isp", None)? else {
            return Ok(());
        };
        let map = maps
            .get(slot)
            .ok_or(Error::Invalid("slot beyond the ring"))?;
        let job = s
            .engine
            .submit(Job::checksum(Operand::new(map)).after_sync_file(isp.as_fd())?)?;
        job.fence().wait_timeout(STALL)?;
        if job.fence().get_status() < 0 {
            wait_for(s, "isp", &isp)?;
        }
        let expect = !frame_value(frame as usize);
        let want = *sums
            .entry(expect)
            .or_insert_with(|| checksum(&vec![expect; bytes]));
        let sum_ok = job.record().and_then(|r| r.checksum) == Some(want);
        let inspected = frame as usize % cfg.inspect_every == 0;
        let mut cpu_ok = true;
        if inspected {
            let out = &outputs[slot];
            let acc = out.cpu_access(Direction::FromDevice)?;
            let seen = CpuView::new(out)?.read_vec(0, bytes)?;
            acc.end()?;
            cpu_ok = seen.iter().all(|&b| b == expect);
        }
        let mut r = frame_msg(b"DONE", frame, slot as u32);
        r.extend_from_slice(&[u8::from(sum_ok), u8::from(cpu_ok), u8::from(inspected)]);
        sync_file::send_fds(s.ctl.as_fd(), &r, &[]).inspect_err(|_| {
            eprintln!("dmabuf demo (encoder): parent went away (send failed)");
        })?;
    }
}
