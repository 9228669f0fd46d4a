//! Jobs for a DMA [`Engine`](super::engine::Engine): what to do (fill, copy, checksum,
//! invert), on which mapped attachments ([`Operand`]), after which explicit fences, and
//! within how much time.
//!
//! DOC: operands are device addresses. An operand records what the device needs — the
//! IOVA range of a live mapping, the device, and for the submission the buffer's
//! reservation object — and no reference to the mapping itself, as a command stream
//! holds only addresses. The caller keeps each [`SgMapping`] alive until the job's fence
//! signals. Unmapping or freeing earlier is the bug the ownership tracker names
//! (`UnmapWhileBusy`, `FreeWhileBusy`), and the device then faults on the dead range.
//!
//! DOC: the checksum. [`checksum`] is FNV-1a, 64-bit: start from `0xcbf29ce484222325`, and
//! for each byte in order XOR it in, then multiply by `0x100000001b3` (wrapping). It is
//! cheap to compute the same way on the CPU and sensitive to each byte and its position.

use crate::buf::AccessTracker;
use crate::buf::SgMapping;
use crate::device::iommu::Fault;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::fence::Fence;
use crate::resv::Resv;
use std::sync::Arc;
use std::time::Duration;

/// The FNV-1a offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// The FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// An incremental [`checksum`]: feed bytes in order with [`update`](Self::update).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checksum(u64);

impl Default for Checksum {
    fn default() -> Self {
        Self::new()
    }
}

impl Checksum {
    /// The checksum of nothing.
    pub fn new() -> Self {
        Checksum(FNV_OFFSET)
    }

    /// Feed `data`.
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
    }

    /// The value so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}

/// The 64-bit checksum a checksum job computes: FNV-1a over `data` (see the module docs).
pub fn checksum(data: &[u8]) -> u64 {
    let mut c = Checksum::new();
    c.update(data);
    c.value()
}

/// A range of a live mapping, as a job's source or destination.
#[derive(Clone)]
pub struct Operand {
    pub(super) device: Arc<Device>,
    pub(super) resv: Arc<Resv>,
    pub(super) tracker: Option<Arc<dyn AccessTracker>>,
    pub(super) ino: u64,
    pub(super) key: u64,
    pub(super) iova: u64,
    pub(super) len: usize,
    /// First device address of the whole mapping.
    map_iova: u64,
    /// Length of the whole mapping (ranges are checked against it).
    map_len: usize,
}

impl std::fmt::Debug for Operand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operand")
            .field("device", &self.device.name())
            .field("buf", &self.ino)
            .field("iova", &format_args!("{:#x}", self.iova))
            .field("len", &self.len)
            .finish()
    }
}

impl Operand {
    /// The whole of mapping `m`: its device, its first device address and length, its
    /// buffer's reservation object and ownership tracker. Takes no lock.
    pub fn new(m: &SgMapping) -> Self {
        let att = m.attachment();
        let table = m.table();
        let iova = table.entries().first().map_or(0, |e| e.dma_addr);
        let len = table.total_len();
        Operand {
            device: att.device().clone(),
            resv: att.buf().resv().clone(),
            tracker: att.buf().tracker().cloned(),
            ino: att.buf().ino(),
            key: m.key(),
            iova,
            len,
            map_iova: iova,
            map_len: len,
        }
    }

    /// Narrow to `len` bytes at `offset` into the mapping (not into a previous range).
    ///
    /// # Errors
    ///
    /// `Invalid` for `len == 0` or a range that leaves the mapping; `Overflow`
    /// when `offset + len` wraps. The operand is unchanged (consumed and not returned).
    pub fn range(self, offset: usize, len: usize) -> Result<Self> {
        let end = offset
            .checked_add(len)
            .ok_or(Error::Overflow("offset + len wraps"))?;
        if len == 0 || end > self.map_len {
            return Err(Error::Invalid("operand range leaves the mapping"));
        }
        Ok(Operand {
            iova: self.map_iova + offset as u64,
            len,
            ..self
        })
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never: operands cover at least a byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its first device address.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// The buffer's inode number.
    pub fn buffer(&self) -> u64 {
        self.ino
    }
}

/// What a job does.
#[derive(Clone, Debug)]
pub enum JobOp {
    /// Write `value` to every byte of `dst`.
    Fill {
        /// Destination.
        dst: Operand,
        /// The byte value.
        value: u8,
    },
    /// Copy `src` to `dst` (same length).
    Copy {
        /// Source.
        src: Operand,
        /// Destination.
        dst: Operand,
    },
    /// Compute the [`checksum`] of `src`; the result is in the job's record.
    Checksum {
        /// Source.
        src: Operand,
    },
    /// Write the bitwise inverse of `src` to `dst` (same length; may be the same range).
    Invert {
        /// Source.
        src: Operand,
        /// Destination.
        dst: Operand,
    },
}

/// The kind of a job, for records and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// [`JobOp::Fill`].
    Fill,
    /// [`JobOp::Copy`].
    Copy,
    /// [`JobOp::Checksum`].
    Checksum,
    /// [`JobOp::Invert`].
    Invert,
}

impl JobOp {
    /// The kind.
    pub fn kind(&self) -> JobKind {
        match self {
            JobOp::Fill { .. } => JobKind::Fill,
            JobOp::Copy { .. } => JobKind::Copy,
            JobOp::Checksum { .. } => JobKind::Checksum,
            JobOp::Invert { .. } => JobKind::Invert,
        }
    }

    /// The operands with whether the job writes them, sources first.
    pub(super) fn operands(&self) -> Vec<(&Operand, bool)> {
        match self {
            JobOp::Fill { dst, .. } => vec![(dst, true)],
            JobOp::Copy { src, dst } | JobOp::Invert { src, dst } => {
                vec![(src, false), (dst, true)]
            }
            JobOp::Checksum { src } => vec![(src, false)],
        }
    }

    /// Bytes the job processes.
    pub fn len(&self) -> usize {
        match self {
            JobOp::Fill { dst, .. } => dst.len,
            JobOp::Copy { src, .. } | JobOp::Invert { src, .. } | JobOp::Checksum { src } => {
                src.len
            }
        }
    }

    /// Whether it processes nothing (never for a valid job).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A job to submit: an operation, explicit dependencies, and limits. Build it with the
/// constructors and the chained options; [`Engine::submit`](super::engine::Engine::submit)
/// checks it. The chained options take the job and return it changed.
#[derive(Clone, Debug)]
#[must_use = "a Job does nothing until it is submitted to an Engine"]
pub struct Job {
    pub(super) op: JobOp,
    pub(super) deps: Vec<Fence>,
    pub(super) timeout: Option<Duration>,
    pub(super) implicit: bool,
    pub(super) stall: Duration,
}

impl Job {
    fn with(op: JobOp) -> Job {
        Job {
            op,
            deps: Vec::new(),
            timeout: None,
            implicit: true,
            stall: Duration::ZERO,
        }
    }

    /// Fill `dst` with `value`.
    pub fn fill(dst: Operand, value: u8) -> Job {
        Self::with(JobOp::Fill { dst, value })
    }

    /// Copy `src` to `dst`.
    pub fn copy(src: Operand, dst: Operand) -> Job {
        Self::with(JobOp::Copy { src, dst })
    }

    /// Checksum `src`.
    pub fn checksum(src: Operand) -> Job {
        Self::with(JobOp::Checksum { src })
    }

    /// Write the inverse of `src` to `dst` (the transform; `src` and `dst` may be the same).
    pub fn invert(src: Operand, dst: Operand) -> Job {
        Self::with(JobOp::Invert { src, dst })
    }

    /// The operation.
    pub fn op(&self) -> &JobOp {
        &self.op
    }

    /// Run only after `fence` has signalled (an explicit dependency).
    pub fn after(mut self, fence: &Fence) -> Job {
        self.deps.push(fence.clone());
        self
    }

    /// Run only after the fence behind sync-file descriptor `fd` has signalled.
    ///
    /// # Errors
    ///
    /// `Invalid` when `fd` is not a sync file; the job is dropped.
    pub fn after_sync_file(self, fd: rustix::fd::BorrowedFd<'_>) -> Result<Job> {
        let f = crate::sync_file::get_fence(fd)?;
        Ok(self.after(&f))
    }

    /// Give the job `timeout` instead of the engine's default, counted from when the
    /// engine takes it off its queue: waiting for dependencies and running both count.
    pub fn timeout(mut self, timeout: Duration) -> Job {
        self.timeout = Some(timeout);
        self
    }

    /// Explicit sync only: collect no implicit dependencies from the buffers'
    /// reservation objects and publish the job's fence with `Bookkeep` usage, so that
    /// nobody waits for it implicitly either (the kernel's explicit-sync submissions).
    pub fn explicit_only(mut self) -> Job {
        self.implicit = false;
        self
    }

    /// Simulate a slow device: spend `per_chunk` of device time on each chunk of
    /// [`CHUNK`](super::engine::CHUNK) bytes (the wait is cooperative: the job is still
    /// cancelled on time).
    pub fn simulate_time(mut self, per_chunk: Duration) -> Job {
        self.stall = per_chunk;
        self
    }
}

/// What happened to a job: times, status, result. Filled in before the job's fence
/// signals, so it is there once the fence is.
#[derive(Clone, Debug)]
pub struct JobRecord {
    /// The engine's name.
    pub engine: String,
    /// The seqno of the job's fence.
    pub seqno: u64,
    /// What the job did.
    pub kind: JobKind,
    /// Bytes processed when complete.
    pub bytes: usize,
    /// When it was submitted (monotonic ns, [`crate::fence::ktime_now`]).
    pub submitted_ns: u64,
    /// When its dependencies were done and it began to run (None if it never ran).
    pub started_ns: Option<u64>,
    /// When its fence signalled (the fence's timestamp).
    pub signalled_ns: u64,
    /// 0, or the negative errno its fence carries: `-ETIME` (timed out), `-EFAULT`
    /// (IOMMU fault), `-ECANCELED` (a dependency failed, or the engine shut down).
    pub status: i32,
    /// The checksum, for a completed checksum job.
    pub checksum: Option<u64>,
    /// The IOMMU fault that failed the job, if one did.
    pub fault: Option<Fault>,
}

impl JobRecord {
    /// Submit → signal.
    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.signalled_ns.saturating_sub(self.submitted_ns))
    }

    /// Whether it completed without error.
    pub fn is_ok(&self) -> bool {
        self.status == 0
    }

    /// The status as a crate error (`None` when it succeeded).
    pub fn error(&self) -> Option<Error> {
        match -self.status {
            0 => None,
            62 => Some(Error::TimedOut),
            14 => Some(Error::Fault("IOMMU fault in a device job")),
            125 => Some(Error::Canceled),
            e => Some(Error::Os(rustix::io::Errno::from_raw_os_error(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_fnv1a() {
        assert_eq!(checksum(b""), 0xcbf29ce484222325);
        assert_eq!(checksum(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(checksum(b"foobar"), 0x85944171f73967e8);
        let mut c = Checksum::new();
        c.update(b"foo");
        c.update(b"bar");
        assert_eq!(c.value(), checksum(b"foobar"));
    }
}
