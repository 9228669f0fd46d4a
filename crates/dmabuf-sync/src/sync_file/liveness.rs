// ---- the liveness channel ---------------------------------------------------------------

use super::pid;
use crate::error::Result;
use parking_lot::Mutex;
use rustix::fd::OwnedFd;
use std::sync::Arc;

/// This process's liveness pipe.
struct Channel {
    /// The process that made it (a `fork` child must make its own).
    pid: rustix::process::Pid,
    /// The end sent beside our sync files.
    read: Arc<OwnedFd>,
    /// Held until the process exits: its closing is the signal.
    _write: OwnedFd,
}

static CHANNEL: Mutex<Option<Channel>> = parking_lot::const_mutex(None);

/// The read end of this process's liveness pipe, made on first use (and again after
/// a `fork`, closing the inherited copies).
///
/// # Errors
///
/// OS errors creating the pipe (`EMFILE`…).
pub(super) fn read_end() -> Result<Arc<OwnedFd>> {
    let pid = pid::current();
    let mut ch = CHANNEL.lock();
    if let Some(c) = ch.as_ref().filter(|c| c.pid == pid) {
        return Ok(c.read.clone());
    }
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let read = Arc::new(r);
    // After a fork: this drops the child's copies of the parent's ends.
    let inherited = ch.replace(Channel {
        pid,
        read: read.clone(),
        _write: w,
    });
    drop(ch);
    drop(inherited);
    Ok(read)
}
