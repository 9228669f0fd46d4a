//! DMA engines: a device's worker that runs [`Job`]s on mapped attachments, in order,
//! after their dependencies, signalling one fence per job.
//!
//! DOC: submission, as a kernel driver's command-submission ioctl does it.
//! [`Engine::submit`] checks the job, then in one wound/wait transaction
//! ([`exec::lock_all`], with back-off) locks the reservation object of every buffer the
//! job touches and reserves a slot in each. It collects the *implicit* dependencies by
//! the usage rules — a job that writes a buffer waits for `Usage::rw(true)` (every fence
//! but bookkeeping), a job that only reads it waits for `Usage::rw(false)` (the writers) —
//! adds the *explicit* ones the job names (fences, sync files), creates the job's fence
//! (one context per engine, seqnos in submission order), publishes it in each buffer's
//! reservation object (`Write` for the buffers it writes, `Read` for those it only reads;
//! `Bookkeep` for [`Job::explicit_only`] jobs), queues the job and unlocks. Fence creation
//! and queueing happen under the engine's queue lock, so queue order is seqno order.
//!
//! DOC: execution. One worker thread per engine takes jobs in queue order. It waits for
//! the dependencies (outside any signalling section, holding no lock), then — inside a
//! fence signalling section ([`crate::fence::begin_signalling`]) that takes no
//! reservation lock — tells the ownership tracker the job started on each mapping, runs
//! it through the device's IOMMU in chunks of [`CHUNK`] bytes (a non-coherent device
//! therefore reads and writes its bounce buffer), tells the tracker it ended, stores the
//! [`JobRecord`], and signals the fence. What the job held is dropped after the section.
//! Since jobs run and signal in queue order, an engine's fences signal in seqno order.
//!
//! DOC: bounded completion. Every job has a timeout (the engine's default unless
//! [`Job::timeout`] says otherwise), counted from when the worker takes it: dependency
//! waits and execution both count. A job still waiting for a dependency at its deadline
//! does not run; a running job is cancelled cooperatively at the next chunk boundary
//! (bytes already written stay written: the contents are undefined). Either way its fence
//! signals with `-ETIME` and the engine goes on with the next job. An *explicit*
//! dependency (a fence or sync file given to the job) that signals with an error cancels
//! the job (`-ECANCELED`, not run). Implicit dependencies only order: a failed fence
//! found in a reservation object is waited for like any other — cancelling on it would
//! cascade forever, each cancelled job's fence failing the next job on the buffer. An IOMMU fault stops
//! the job with `-EFAULT`; the IOMMU has recorded the fault (device, address, buffer) and
//! the job's record carries it. Dropping the engine cancels what is queued
//! (`-ECANCELED`): no fence it published is left unsignalled.

mod worker;

use super::job::{Job, JobOp, JobRecord};
use super::Device;
use crate::buf::must_not_hold_resv;
use crate::error::{Error, Result};
use crate::fence::{ktime_now, Context, Fence, FenceOps};
use crate::interrupt::Interrupt;
use crate::resv::{exec, Resv, Usage, RESERVATION_WW_CLASS};
use crate::ww::AcquireCtx;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes a job processes between two checks of its deadline.
pub const CHUNK: usize = 64 * 1024;

/// The timeout of jobs that name none, unless the engine's config says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

const ETIME: i32 = 62;
const EFAULT: i32 = 14;
const ECANCELED: i32 = 125;

/// How to build an engine.
#[derive(Clone)]
pub struct EngineConfig {
    /// The timeout of jobs that name none.
    pub default_timeout: Duration,
    /// How many [`JobRecord`]s the engine keeps (oldest dropped first).
    pub history: usize,
    /// A lockdep capture to install on the worker thread, so that reports raised there
    /// (e.g. a reservation lock taken in a signalling section) are collected instead of
    /// following the global policy.
    pub lockdep_capture: Option<lockdep::Capture>,
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("default_timeout", &self.default_timeout)
            .field("history", &self.history)
            .field("lockdep_capture", &self.lockdep_capture.is_some())
            .finish()
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            default_timeout: DEFAULT_TIMEOUT,
            history: 4096,
            lockdep_capture: None,
        }
    }
}

/// The ops of an engine's fences: driver "dmabuf-engine", timeline = engine name.
struct EngineFenceOps {
    timeline: Arc<str>,
}

impl FenceOps for EngineFenceOps {
    fn driver_name(&self) -> &str {
        "dmabuf-engine"
    }
    fn timeline_name(&self) -> &str {
        &self.timeline
    }
}

/// A queued job.
struct Queued {
    job: Job,
    fence: Fence,
    deps: Vec<Fence>,
    submitted_ns: u64,
}

struct Queue {
    jobs: VecDeque<Queued>,
    next_seqno: u64,
    stopping: bool,
}

struct Shared {
    device: Arc<Device>,
    name: Arc<str>,
    context: Context,
    config: EngineConfig,
    queue: Mutex<Queue>,
    cv: Condvar,
    /// Fired when the engine is dropped: dependency waits and running jobs stop.
    stop: Interrupt,
    history: Mutex<VecDeque<JobRecord>>,
    completed: AtomicU64,
    failed: AtomicU64,
}

/// Every engine made, weakly (for [`contexts_text`]). A leaf lock.
static LIVE: Mutex<Vec<std::sync::Weak<Shared>>> = parking_lot::const_mutex(Vec::new());

/// The live engines' fence contexts, one line each: the engine's name, its context,
/// the jobs issued, signalled and failed, and how many are pending — the contexts the
/// debug socket's `fences` answer lists beside the sync files. Takes the list's and each
/// engine's queue lock briefly.
pub fn contexts_text() -> String {
    use std::fmt::Write as _;
    let live: Vec<Arc<Shared>> = LIVE.lock().iter().filter_map(|w| w.upgrade()).collect();
    let mut o = String::from("contexts:\n--------------\n");
    for s in live {
        let issued = s.queue.lock().next_seqno - 1;
        let done = s.completed.load(Ordering::Acquire);
        let failed = s.failed.load(Ordering::Acquire);
        let _ = writeln!(
            o,
            "engine {} (device {}): context {}, {issued} issued, {done} signalled ({failed} failed), {} pending",
            s.name,
            s.device.name(),
            s.context.id(),
            issued.saturating_sub(done)
        );
    }
    o
}

/// A DMA engine of one device. Dropping it cancels queued jobs (their fences signal
/// with `-ECANCELED`) and joins the worker.
///
/// Locks, all internal: the queue's mutex (seqnos, the queue, the stop flag), which
/// [`submit`](Self::submit) takes inside the job's reservation locks so that queue
/// order is seqno order, and the history's (a leaf). `submit` releases the reservation
/// locks before it returns; the worker holds none of these while a job runs.
#[must_use = "dropping an Engine cancels its queued jobs and stops its worker"]
pub struct Engine {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("name", &&*self.shared.name)
            .field("device", &self.shared.device.name())
            .field("context", &self.shared.context.id())
            .finish()
    }
}

/// A submitted job: its fence and, once that has signalled, its record. Dropping the
/// handle does not cancel the job: it runs, and its fence signals, all the same.
#[derive(Clone)]
pub struct JobHandle {
    fence: Fence,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("engine", &&*self.shared.name)
            .field("fence", &self.fence)
            .finish()
    }
}

impl JobHandle {
    /// The job's fence (context of the engine, seqno in submission order).
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The seqno.
    pub fn seqno(&self) -> u64 {
        self.fence.seqno()
    }

    /// The fence as a sync-file descriptor, for explicit sync across threads or
    /// processes.
    ///
    /// # Errors
    ///
    /// Descriptor errors (`EMFILE`, `ENFILE`) as `Os`.
    pub fn sync_file(&self) -> Result<crate::sync_file::SyncFile> {
        crate::sync_file::SyncFile::new(self.fence.clone())
    }

    /// The record, once the fence has signalled (`None` before, or when the engine's
    /// history no longer holds it).
    pub fn record(&self) -> Option<JobRecord> {
        if !self.fence.is_signaled() {
            return None;
        }
        let seqno = self.fence.seqno();
        let h = self.shared.history.lock();
        h.iter().rev().find(|r| r.seqno == seqno).cloned()
    }

    /// Wait for the fence (no timeout: engine fences are bounded by job timeouts) and
    /// return the record. Blocks uninterruptibly; like any fence wait, not for a fence
    /// signalling section.
    ///
    /// # Errors
    ///
    /// The job's failure as an error (`TimedOut`, `Fault`, `Canceled`); `NoEntry`
    /// when the record fell out of the engine's history.
    #[track_caller]
    pub fn wait(&self) -> Result<JobRecord> {
        self.fence.wait();
        let r = self
            .record()
            .ok_or(Error::NoEntry("job record no longer in the history"))?;
        match r.error() {
            None => Ok(r),
            Some(e) => Err(e),
        }
    }
}

impl Engine {
    /// An engine for `device` named `name`, with the default config.
    ///
    /// # Errors
    ///
    /// `Os` when the worker thread cannot be started (or an injected
    /// [`Thread`](crate::fault::Site::Thread) fault).
    pub fn new(device: &Arc<Device>, name: &str) -> Result<Engine> {
        Self::with_config(device, name, EngineConfig::default())
    }

    /// An engine with `config`.
    ///
    /// # Errors
    ///
    /// `Invalid` for a zero default timeout or a zero history; `Os` when the worker
    /// thread cannot be started (or an injected [`Thread`](crate::fault::Site::Thread)
    /// fault).
    pub fn with_config(device: &Arc<Device>, name: &str, config: EngineConfig) -> Result<Engine> {
        if config.default_timeout.is_zero() {
            return Err(Error::Invalid("engine default timeout is zero"));
        }
        if config.history == 0 {
            return Err(Error::Invalid("engine history of zero records"));
        }
        let shared = Arc::new(Shared {
            device: device.clone(),
            name: Arc::from(name),
            context: Context::new(),
            config,
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                next_seqno: 1,
                stopping: false,
            }),
            cv: Condvar::new(),
            stop: Interrupt::new(),
            history: Mutex::new(VecDeque::new()),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let s = shared.clone();
        crate::fault::hit(crate::fault::Site::Thread)?;
        {
            let mut live = LIVE.lock();
            live.retain(|w| w.strong_count() > 0);
            live.push(Arc::downgrade(&shared));
        }
        let worker = std::thread::Builder::new()
            .name(format!("engine:{name}"))
            .spawn(move || worker::worker(s))?;
        Ok(Engine {
            shared,
            worker: Some(worker),
        })
    }

    /// The engine's name (its fences' timeline name).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The device.
    pub fn device(&self) -> &Arc<Device> {
        &self.shared.device
    }

    /// The fence context of the engine's jobs.
    pub fn context(&self) -> Context {
        self.shared.context
    }

    /// Jobs queued or running.
    pub fn pending(&self) -> usize {
        let q = self.shared.queue.lock();
        let issued = q.next_seqno - 1;
        let done = self.shared.completed.load(Ordering::Acquire) as usize;
        (issued as usize).saturating_sub(done)
    }

    /// Jobs completed (signalled), and of them how many with an error.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.completed.load(Ordering::Acquire),
            self.shared.failed.load(Ordering::Acquire),
        )
    }

    /// The records of the latest completed jobs, oldest first.
    pub fn records(&self) -> Vec<JobRecord> {
        self.shared.history.lock().iter().cloned().collect()
    }

    /// The same, emptying the history.
    pub fn take_records(&self) -> Vec<JobRecord> {
        std::mem::take(&mut *self.shared.history.lock()).into()
    }

    /// Check `job`: operands mapped for this device, copies of equal length.
    fn check(&self, job: &Job) -> Result<()> {
        for (op, _) in job.op.operands() {
            if !Arc::ptr_eq(&op.device, &self.shared.device) {
                return Err(Error::Invalid("operand mapped for another device"));
            }
        }
        if let JobOp::Copy { src, dst } | JobOp::Invert { src, dst } = &job.op {
            if src.len != dst.len {
                return Err(Error::Invalid("source and destination lengths differ"));
            }
        }
        if job.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::Invalid("zero job timeout"));
        }
        Ok(())
    }

    /// Submit `job` (see the module docs for the steps). Returns once the job's fence is
    /// published in its buffers' reservation objects and the job queued; it runs later.
    ///
    /// Takes and releases the reservation lock of every buffer the job touches (one
    /// wound/wait transaction), so it must not be called holding a reservation lock or
    /// inside another acquire context of the reservation class. The direction of each
    /// mapping is not checked here: the IOMMU enforces it at run time, as on hardware (a
    /// job that writes through a `ToDevice` mapping faults, `-EFAULT`).
    ///
    /// # Errors
    ///
    /// With nothing published or queued: `Invalid` for an operand mapped for
    /// another device, a copy or invert whose lengths differ, a zero timeout, or when
    /// called holding a reservation lock (with a lockdep `Misuse` report) or inside
    /// another acquire context of the reservation class (reported too). Lock contention
    /// is not an error: the transaction backs off and retries; locks are taken
    /// uninterruptibly.
    #[track_caller]
    pub fn submit(&self, job: Job) -> Result<JobHandle> {
        self.check(&job)?;
        must_not_hold_resv("engine submit")?;
        let submitted_ns = ktime_now();
        // Each buffer once, written if any operand on it is written.
        let mut bufs: Vec<(Arc<Resv>, bool)> = Vec::new();
        for (op, write) in job.op.operands() {
            match bufs.iter_mut().find(|(r, _)| r.id() == op.resv.id()) {
                Some(e) => e.1 |= write,
                None => bufs.push((op.resv.clone(), write)),
            }
        }
        let ctx = AcquireCtx::try_new(&RESERVATION_WW_CLASS)?;
        let fence = {
            let objs: Vec<&Resv> = bufs.iter().map(|(r, _)| &**r).collect();
            let mut guards = exec::lock_all(&ctx, &objs, None)?;
            for g in guards.iter_mut() {
                g.reserve_fences(1)?;
            }
            let mut deps: Vec<Fence> = job
                .deps
                .iter()
                .filter(|f| !f.is_signaled() || f.error() != 0)
                .cloned()
                .collect();
            if job.implicit {
                for (g, (_, write)) in guards.iter().zip(&bufs) {
                    for (f, _) in g.fences(Usage::rw(*write)) {
                        // Our own earlier jobs finish first anyway (one queue).
                        if f.context() != self.shared.context && !f.is_signaled() {
                            deps.push(f);
                        }
                    }
                }
            }
            let mut q = self.shared.queue.lock();
            let seqno = q.next_seqno;
            let fence = Fence::new64(
                EngineFenceOps {
                    timeline: self.shared.name.clone(),
                },
                self.shared.context,
                seqno,
            );
            for (g, (_, write)) in guards.iter_mut().zip(&bufs) {
                let usage = match (job.implicit, *write) {
                    (false, _) => Usage::Bookkeep,
                    (true, true) => Usage::Write,
                    (true, false) => Usage::Read,
                };
                if let Err(e) = g.add_fence(&fence, usage) {
                    // Not expected (slots reserved, not a container); never leave a
                    // published fence unsignalled.
                    let _ = fence.set_error(-ECANCELED);
                    let _ = fence.signal();
                    return Err(e);
                }
            }
            q.next_seqno += 1;
            q.jobs.push_back(Queued {
                job,
                fence: fence.clone(),
                deps,
                submitted_ns,
            });
            self.shared.cv.notify_one();
            fence
        };
        drop(ctx);
        Ok(JobHandle {
            fence,
            shared: self.shared.clone(),
        })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.queue.lock().stopping = true;
        self.shared.stop.interrupt();
        self.shared.cv.notify_all();
        if let Some(w) = self.worker.take() {
            if w.join().is_err() {
                tracing::error!("engine {} worker panicked", self.shared.name);
            }
        }
    }
}

/// Whether `f` is a fence of an engine (driver "dmabuf-engine"), signalled or not: asks
/// the ops, since a signalled fence's name reads "detached-driver".
pub fn is_engine_fence(f: &Fence) -> bool {
    f.ops().driver_name() == "dmabuf-engine"
}

#[cfg(test)]
mod engine_fence_tests {
    use super::*;

    #[test]
    fn an_engine_fence_stays_one_after_signal() {
        let f = Fence::new64(
            EngineFenceOps {
                timeline: "t".into(),
            },
            crate::fence::Context::new(),
            1,
        );
        assert!(is_engine_fence(&f));
        f.signal().unwrap();
        assert_eq!(f.driver_name(), crate::fence::DETACHED_DRIVER);
        assert!(is_engine_fence(&f));
        assert!(!is_engine_fence(&crate::fence::Fence::stub()));
    }
}
