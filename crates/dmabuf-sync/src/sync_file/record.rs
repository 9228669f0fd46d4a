use super::registry::writer_of;
use super::FdState;
use crate::error::{Error, Result};
use crate::fault::{self, Site};
use crate::fence::{ktime_now, Fence, MAX_ERRNO};
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use rustix::io::Errno;
use std::time::Duration;

#[cfg(doc)]
use super::recv_fd;

// ---- the signal record ----------------------------------------------------------------

/// Bits of the status code in a record.
const CODE_BITS: u32 = 12;
/// Mask of the status code.
const CODE_MASK: u64 = (1 << CODE_BITS) - 1;
/// The timestamp is kept modulo this (2^51 ns, about 26 days).
pub(super) const TS_MOD: u64 = 1 << 51;
/// The largest counter value that is a record.
pub(super) const RECORD_MAX: u64 = 1 << 63;

/// The counter value recording a signal with `status` (1 or any non-negative value: ok;
/// negative: an errno, which must be in `[-4095, -1]`, else it is recorded as `-EINVAL`)
/// at `ts_ns`.
pub fn encode_record(status: i32, ts_ns: u64) -> u64 {
    let code = if status >= 0 {
        0
    } else if status >= -MAX_ERRNO {
        u64::from(status.unsigned_abs())
    } else {
        Errno::INVAL.raw_os_error() as u64
    };
    1 + (code | ((ts_ns % TS_MOD) << CODE_BITS))
}

/// What a counter value says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Record {
    /// 0: not signalled yet.
    Pending,
    /// A record: status 1 or a negative errno, and the rebuilt timestamp.
    Signaled { status: i32, timestamp_ns: u64 },
    /// Not a record (above `2^63`).
    Invalid,
}

/// Decode counter value `v`, rebuilding the timestamp against `now` (see the module
/// docs): the latest time not after `now` with the recorded low bits, or, if `now` is
/// too early for one (a timestamp in the future), the earliest after it.
pub(super) fn decode_record(v: u64, now: u64) -> Record {
    if v == 0 {
        return Record::Pending;
    }
    if v > RECORD_MAX {
        return Record::Invalid;
    }
    let r = v - 1;
    let code = (r & CODE_MASK) as i32;
    let low = r >> CODE_BITS;
    // (now - low) mod 2^51; 2^51 divides 2^64, so the wrapping subtraction is exact.
    let back = now.wrapping_sub(low) % TS_MOD;
    let timestamp_ns = if back <= now {
        now - back
    } else {
        now + (TS_MOD - back)
    };
    Record::Signaled {
        status: if code == 0 { 1 } else { -code },
        timestamp_ns,
    }
}

/// Add `f`'s signal record to the eventfd (the export's fence callback).
pub(super) fn write_record(efd: &OwnedFd, f: &Fence) {
    let ts = f.timestamp().unwrap_or_else(ktime_now);
    let v = encode_record(f.error(), ts);
    // A fresh counter always has room; a failure would mean someone else wrote to it.
    let _ = rustix::io::write(efd, &v.to_ne_bytes());
}

// ---- fdinfo ---------------------------------------------------------------------------

/// What `/proc/self/fdinfo` says of an eventfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct EventfdInfo {
    /// The counter (`eventfd-count:`, hex).
    pub(super) count: u64,
    /// The system-wide id (`eventfd-id:`, decimal; older kernels do not print it).
    pub(super) id: Option<u64>,
}

/// Parse fdinfo text; `None` if it is not an eventfd's (no valid `eventfd-count:` line).
pub(super) fn parse_fdinfo(text: &[u8]) -> Option<EventfdInfo> {
    fn value<'a>(line: &'a [u8], key: &[u8]) -> Option<&'a str> {
        std::str::from_utf8(line.strip_prefix(key)?)
            .ok()
            .map(str::trim)
    }
    let mut count = None;
    let mut id = None;
    for line in text.split(|&b| b == b'\n') {
        if let Some(v) = value(line, b"eventfd-count:") {
            count = Some(u64::from_str_radix(v, 16).ok()?);
        } else if let Some(v) = value(line, b"eventfd-id:") {
            id = v.parse().ok();
        }
    }
    Some(EventfdInfo { count: count?, id })
}

/// Read the fdinfo of descriptor number `n` of this process. Only a path is read: `n`
/// itself is never used as a descriptor, so it may be closed or reused meanwhile (the
/// answer is then about whatever it is now).
///
/// # Errors
///
/// [`Error::Invalid`] if it is not an eventfd; [`Error::BadFd`] if there is no
/// such descriptor (or no procfs); other errors of the open and read as [`Error::Os`].
pub(super) fn fdinfo_of(n: RawFd) -> Result<EventfdInfo> {
    use rustix::fs::{Mode, OFlags};
    let path = format!("/proc/self/fdinfo/{n}");
    let file = match fault::hit(Site::FdInfo).and_then(|()| {
        rustix::fs::open(
            path.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
    }) {
        Ok(f) => f,
        Err(Errno::NOENT) => return Err(Error::BadFd),
        Err(e) => return Err(Error::Os(e)),
    };
    // An eventfd's fdinfo is about 130 bytes; a longer file is not one, and its first
    // kilobytes are enough to tell.
    let mut buf = [0u8; 2048];
    let mut len = 0;
    while len < buf.len() {
        match rustix::io::read(&file, &mut buf[len..]) {
            Ok(0) => break,
            Ok(k) => len += k,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(Error::Os(e)),
        }
    }
    parse_fdinfo(&buf[..len]).ok_or(Error::Invalid("not an eventfd"))
}

/// [`fdinfo_of`] an open descriptor.
pub(super) fn eventfd_info(fd: BorrowedFd<'_>) -> Result<EventfdInfo> {
    fdinfo_of(fd.as_raw_fd())
}

/// A close-on-exec duplicate (fault sites [`Site::Dup`], then [`Site::Fd`]).
///
/// # Errors
///
/// OS errors of the duplicate (`EMFILE`…).
pub(super) fn dup(fd: impl AsFd) -> Result<OwnedFd> {
    fault::hit(Site::Dup)?;
    new_fd(|| rustix::io::fcntl_dupfd_cloexec(fd, 0))
}

/// A new descriptor made by `make` (fault site [`Site::Fd`]: an armed failure comes
/// back as `make`'s own error would, and `make` is not called).
///
/// # Errors
///
/// `make`'s OS error, as [`Error::Os`].
pub(super) fn new_fd<T>(make: impl FnOnce() -> rustix::io::Result<T>) -> Result<T> {
    fault::hit(Site::Fd)?;
    Ok(make()?)
}

/// Whether `fd` polls readable right now.
pub(super) fn readable_now(fd: BorrowedFd<'_>) -> bool {
    poll_readable(fd, Some(Duration::ZERO)).unwrap_or(false)
}

/// Whether the pipe read end `fd` reports hang-up (every write end closed) right now.
pub(super) fn hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut p = [PollFd::new(&fd, PollFlags::empty())];
    loop {
        match rustix::event::poll(&mut p, Some(&rustix::time::Timespec::default())) {
            Ok(_) => return p[0].revents().intersects(PollFlags::HUP | PollFlags::ERR),
            Err(Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}

/// Peek the record of a sync-file descriptor without consuming it (reads its fdinfo).
/// Never blocks. `SignallerGone` is reported only for a descriptor that came with its
/// origin's liveness descriptor (see [`recv_fd`]).
///
/// # Errors
///
/// [`Error::Invalid`] if `fd` is not an eventfd or its counter is not a record;
/// [`Error::BadFd`] if it is not open (or procfs is missing); OS errors reading the
/// fdinfo.
pub fn peek(fd: BorrowedFd<'_>) -> Result<FdState> {
    let info = eventfd_info(fd).map_err(|e| match e {
        Error::Invalid(_) => Error::Invalid("not a sync file"),
        e => e,
    })?;
    match decode_record(info.count, ktime_now()) {
        Record::Pending => {
            let Ok(Some(Some(live))) = writer_of(fd, || Ok(info.id), false) else {
                return Ok(FdState::Pending);
            };
            if !hung_up(live.as_fd()) {
                return Ok(FdState::Pending);
            }
            // The record, if any, was written before the writer exited: look again.
            match decode_record(eventfd_info(fd)?.count, ktime_now()) {
                Record::Pending => Ok(FdState::SignallerGone),
                r => fd_state(r),
            }
        }
        r => fd_state(r),
    }
}

/// What a record that is not pending says.
fn fd_state(r: Record) -> Result<FdState> {
    match r {
        Record::Invalid => Err(Error::Invalid("not a sync-file record")),
        Record::Signaled {
            status,
            timestamp_ns,
        } => Ok(FdState::Signaled {
            status,
            timestamp_ns,
        }),
        Record::Pending => Ok(FdState::Pending),
    }
}

/// Wait until `fd` polls readable, at most `timeout` (`None` = forever). Returns whether
/// it did (for a descriptor that reports an error or hang-up instead, whether it
/// reported anything).
///
/// # Errors
///
/// OS errors of `poll` other than `EINTR`, which is retried (with the full
/// timeout again).
pub fn poll_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<bool> {
    let ts = timeout.map(|d| rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    let mut p = [PollFd::new(&fd, PollFlags::IN)];
    loop {
        match rustix::event::poll(&mut p, ts.as_ref()) {
            Ok(n) => return Ok(n > 0 && !p[0].revents().is_empty()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(Error::Os(e)),
        }
    }
}
