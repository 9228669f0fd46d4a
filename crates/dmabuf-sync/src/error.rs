//! The crate's error type. Every variant maps to the errno the kernel returns in the same
//! case ([`Error::errno`]).

use rustix::io::Errno;

/// Errors of the dmabuf crate.
///
/// Each variant documents the kernel errno it stands for. The `&'static str` payloads say
/// which check failed, for humans; match on the variant, not the text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `EDEADLK`: a wound/wait lock lost: drop every lock of the context, `lock_slow` the
    /// contended one, retry. Also the error of a fence released unsignalled with waiters.
    #[error("deadlock: back off, then lock_slow the contended lock")]
    Deadlock,
    /// `EALREADY`: the acquire context already holds this lock.
    #[error("already locked by this acquire context")]
    Already,
    /// `EINTR` (the kernel's `-ERESTARTSYS`/`-EINTR`): an interruptible wait was
    /// interrupted or its deadline passed.
    #[error("interrupted")]
    Interrupted,
    /// `EINVAL`: bad argument or API misuse; the text says which check failed.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// `EINVAL`: a fence was signalled a second time.
    #[error("fence already signalled")]
    AlreadySignaled,
    /// `ENOENT`: no such entry (e.g. a callback added to a signalled fence).
    #[error("no such entry: {0}")]
    NoEntry(&'static str),
    /// `EBUSY`: the object is in a state that forbids the request.
    #[error("busy: {0}")]
    Busy(&'static str),
    /// `ENOMEM`: out of memory or out of space in a fixed region.
    #[error("out of memory")]
    NoMem,
    /// `ETIME`: a wait or a job ran out of time.
    #[error("timed out")]
    TimedOut,
    /// `EBADF`: not an open file descriptor.
    #[error("bad file descriptor")]
    BadFd,
    /// `EBADFD`: the descriptor is of the wrong kind for this request.
    #[error("file descriptor in bad state: {0}")]
    BadFdState(&'static str),
    /// `EACCES`: the access mode forbids the request.
    #[error("permission denied: {0}")]
    Access(&'static str),
    /// `EOVERFLOW`: an offset or length wraps.
    #[error("value too large: {0}")]
    Overflow(&'static str),
    /// `ENOTTY`: unknown ioctl-like request.
    #[error("inappropriate request")]
    NoTty,
    /// `ENODEV`: no such device or heap.
    #[error("no such device")]
    NoDev,
    /// `EMFILE`: out of file descriptors.
    #[error("too many open files")]
    TooManyFiles,
    /// `EFAULT`: an address outside a valid mapping.
    #[error("bad address: {0}")]
    Fault(&'static str),
    /// `ECANCELED`: the operation was cancelled.
    #[error("cancelled")]
    Canceled,
    /// An operating-system error, with its errno.
    #[error("os error: {0}")]
    Os(#[from] Errno),
}

impl Error {
    /// The errno the kernel returns in the same case (positive).
    pub fn errno(&self) -> i32 {
        let e = match self {
            Error::Deadlock => Errno::DEADLK,
            Error::Already => Errno::ALREADY,
            Error::Interrupted => Errno::INTR,
            Error::Invalid(_) | Error::AlreadySignaled => Errno::INVAL,
            Error::NoEntry(_) => Errno::NOENT,
            Error::Busy(_) => Errno::BUSY,
            Error::NoMem => Errno::NOMEM,
            Error::TimedOut => Errno::TIME,
            Error::BadFd => Errno::BADF,
            Error::BadFdState(_) => Errno::BADFD,
            Error::Access(_) => Errno::ACCESS,
            Error::Overflow(_) => Errno::OVERFLOW,
            Error::NoTty => Errno::NOTTY,
            Error::NoDev => Errno::NODEV,
            Error::TooManyFiles => Errno::MFILE,
            Error::Fault(_) => Errno::FAULT,
            Error::Canceled => Errno::CANCELED,
            Error::Os(e) => *e,
        };
        e.raw_os_error()
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(n) => Error::Os(Errno::from_raw_os_error(n)),
            None => Error::Os(Errno::IO),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_match_the_kernel() {
        assert_eq!(Error::Deadlock.errno(), 35);
        assert_eq!(Error::Already.errno(), 114);
        assert_eq!(Error::Interrupted.errno(), 4);
        assert_eq!(Error::Invalid("x").errno(), 22);
        assert_eq!(Error::AlreadySignaled.errno(), 22);
        assert_eq!(Error::NoEntry("x").errno(), 2);
        assert_eq!(Error::Busy("x").errno(), 16);
        assert_eq!(Error::NoMem.errno(), 12);
        assert_eq!(Error::TimedOut.errno(), 62);
        assert_eq!(Error::BadFd.errno(), 9);
        assert_eq!(Error::BadFdState("x").errno(), 77);
        assert_eq!(Error::Access("x").errno(), 13);
        assert_eq!(Error::Overflow("x").errno(), 75);
        assert_eq!(Error::NoTty.errno(), 25);
        assert_eq!(Error::NoDev.errno(), 19);
        assert_eq!(Error::TooManyFiles.errno(), 24);
        assert_eq!(Error::Fault("x").errno(), 14);
        assert_eq!(Error::Canceled.errno(), 125);
        let io = std::io::Error::from_raw_os_error(9);
        assert_eq!(Error::from(io).errno(), 9);
    }
}
