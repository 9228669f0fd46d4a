//! The engine's worker thread: takes jobs in queue order, waits for their
//! dependencies, runs them through the device's IOMMU chunk by chunk inside a fence
//! signalling section, records and signals (see the engine's module docs: execution,
//! bounded completion).

use super::{Queued, Shared, CHUNK, DEFAULT_TIMEOUT, ECANCELED, EFAULT, ETIME};
use crate::device::job::{Job, JobOp, JobRecord, Operand};
use crate::error::Error;
use crate::fence::{begin_signalling, ktime_now, Fence};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The worker thread's body: run queued jobs in order until the engine stops and the
/// queue is empty (a stopping engine's jobs are cancelled, so that is soon).
pub(super) fn worker(s: Arc<Shared>) {
    let cap = s.config.lockdep_capture.clone();
    let _capture = cap.as_ref().map(|c| c.install());
    loop {
        let q = {
            let mut q = s.queue.lock();
            loop {
                if let Some(j) = q.jobs.pop_front() {
                    break j;
                }
                if q.stopping {
                    return;
                }
                s.cv.wait(&mut q);
            }
        };
        let fence = q.fence.clone();
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&s, q)));
        if ran.is_err() {
            // A panic in the job path (e.g. a lockdep report under the panic policy)
            // must not leave the fence unsignalled.
            tracing::error!("engine {}: job {} panicked", s.name, fence.seqno());
            let _ = fence.set_error(-ECANCELED);
            if !fence.check_and_signal() {
                s.completed.fetch_add(1, Ordering::AcqRel);
                s.failed.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

/// Wait for the dependencies until `deadline`: 0, or the errno to fail with.
fn wait_deps(s: &Shared, deps: &[Fence], deadline: Instant) -> i32 {
    for d in deps {
        let left = deadline.saturating_duration_since(Instant::now());
        match d.wait_timeout_interruptible(left, &s.stop) {
            Ok(_) if d.error() != 0 => return -ECANCELED,
            Ok(_) => {}
            Err(Error::TimedOut) => return -ETIME,
            Err(_) => return -ECANCELED,
        }
    }
    0
}

/// Run one job and signal its fence.
fn run(s: &Shared, q: Queued) {
    let timeout = q.job.timeout.unwrap_or(s.config.default_timeout);
    let deadline = Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(|| Instant::now() + DEFAULT_TIMEOUT);
    let mut status = wait_deps(s, &q.deps, deadline);
    let mut started_ns = None;
    let mut sum = None;
    let mut fault = None;
    {
        let _section = begin_signalling();
        if status == 0 {
            started_ns = Some(ktime_now());
            let ops = q.job.op.operands();
            for (op, _) in &ops {
                if let Some(t) = &op.tracker {
                    t.job_started(op.ino, op.key);
                }
            }
            match execute(s, &q.job, deadline) {
                Ok(c) => sum = c,
                Err(e) => {
                    status = -e;
                    if e == EFAULT {
                        fault = s.device.dma().iommu().faults().pop();
                    }
                }
            }
            for (op, _) in &ops {
                if let Some(t) = &op.tracker {
                    t.job_ended(op.ino, op.key);
                }
            }
        }
        let ts = ktime_now();
        if crate::trace::enabled() {
            trace_job(s, &q, started_ns, ts, status);
        }
        let record = JobRecord {
            engine: s.name.to_string(),
            seqno: q.fence.seqno(),
            kind: q.job.op.kind(),
            bytes: if status == 0 { q.job.op.len() } else { 0 },
            submitted_ns: q.submitted_ns,
            started_ns,
            signalled_ns: ts,
            status,
            checksum: sum,
            fault,
        };
        if status != 0 {
            // Cannot fail: errnos are in range and only this worker signals the fence.
            let _ = q.fence.set_error(status);
        }
        {
            let mut h = s.history.lock();
            if h.len() == s.config.history {
                h.pop_front();
            }
            h.push_back(record);
        }
        s.completed.fetch_add(1, Ordering::AcqRel);
        if status != 0 {
            s.failed.fetch_add(1, Ordering::AcqRel);
        }
        let _ = q.fence.signal_timestamp(ts);
    }
    // Dropping the job's operands and dependencies happens here, after the section.
    drop(q);
}

/// Record the job on the engine's trace track: a slice from its start (or its
/// completion, for one that never ran) to its signal, and a flow from each fence it
/// waited for.
fn trace_job(s: &Shared, q: &Queued, started_ns: Option<u64>, ts: u64, status: i32) {
    use crate::trace;
    let Some(track) = trace::named_track(&format!("engine {}", s.name)) else {
        return;
    };
    let start = started_ns.unwrap_or(ts);
    let deps: Vec<String> = q
        .deps
        .iter()
        .map(|d| format!("{}:{}", d.context().id(), d.seqno()))
        .collect();
    trace::complete(
        track,
        &format!("{:?}", q.job.op.kind()),
        "job",
        start,
        ts,
        vec![
            (
                "fence",
                format!("{}:{}", q.fence.context().id(), q.fence.seqno()),
            ),
            ("deps", deps.join(" ")),
            ("status", status.to_string()),
            ("bytes", q.job.op.len().to_string()),
        ],
    );
    for d in &q.deps {
        trace::released_by(d, track, start);
    }
}

/// Sleep `d` of simulated device time, in slices, unless the deadline passes or the
/// engine stops: 0 or the errno.
fn stall(s: &Shared, d: Duration, deadline: Instant) -> i32 {
    let end = Instant::now() + d;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return ETIME;
        }
        if s.stop.is_interrupted() {
            return ECANCELED;
        }
        if now >= end {
            return 0;
        }
        std::thread::sleep(
            (end - now)
                .min(deadline - now)
                .min(Duration::from_millis(1)),
        );
    }
}

/// Run the operation chunk by chunk through the IOMMU; the checksum for a checksum job.
/// Errors: the positive errno to fail with.
fn execute(s: &Shared, job: &Job, deadline: Instant) -> std::result::Result<Option<u64>, i32> {
    let io = s.device.dma().iommu();
    let len = job.op.len();
    let mut buf = vec![0u8; CHUNK.min(len)];
    let mut sum = crate::device::job::Checksum::new();
    let at = |o: &Operand, off: usize| o.iova + off as u64;
    let mut off = 0;
    while off < len {
        if Instant::now() >= deadline {
            return Err(ETIME);
        }
        if s.stop.is_interrupted() {
            return Err(ECANCELED);
        }
        if !job.stall.is_zero() {
            match stall(s, job.stall, deadline) {
                0 => {}
                e => return Err(e),
            }
        }
        let n = CHUNK.min(len - off);
        let chunk = &mut buf[..n];
        let r = match &job.op {
            JobOp::Fill { dst, value } => {
                chunk.fill(*value);
                io.write(at(dst, off), chunk)
            }
            JobOp::Copy { src, dst } => io
                .read(at(src, off), chunk)
                .and_then(|_| io.write(at(dst, off), chunk)),
            JobOp::Checksum { src } => io.read(at(src, off), chunk).map(|_| sum.update(chunk)),
            JobOp::Invert { src, dst } => io.read(at(src, off), chunk).and_then(|_| {
                chunk.iter_mut().for_each(|b| *b = !*b);
                io.write(at(dst, off), chunk)
            }),
        };
        r.map_err(|e| e.errno())?;
        off += n;
    }
    Ok(matches!(job.op, JobOp::Checksum { .. }).then(|| sum.value()))
}
