use super::record::{decode_record, eventfd_info, hung_up, readable_now, Record};
use super::{watcher, FdState};
use crate::error::{Error, Result};
use crate::fence::{ktime_now, Fence, FenceOps};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use std::sync::Arc;

/// What a proxy's descriptor (and liveness descriptor) say now: one `poll` each while
/// pending, the fdinfo only once readable. A counter that is not a record (somebody wrote
/// garbage into it) reads as a signal with `-EINVAL`.
///
/// # Errors
///
/// Those of reading the fdinfo of a readable descriptor (`EMFILE` opening it,
/// procfs gone…): they say nothing about the producer, only that the record cannot be
/// read now.
pub(super) fn observe(efd: BorrowedFd<'_>, live: Option<BorrowedFd<'_>>) -> Result<FdState> {
    if !readable_now(efd) {
        match live {
            // The record, if any, was written before the writer exited: look again.
            Some(l) if hung_up(l) => {
                if !readable_now(efd) {
                    return Ok(FdState::SignallerGone);
                }
            }
            _ => return Ok(FdState::Pending),
        }
    }
    let invalid = FdState::Signaled {
        status: -Errno::INVAL.raw_os_error(),
        timestamp_ns: ktime_now(),
    };
    Ok(match eventfd_info(efd) {
        Ok(i) => match decode_record(i.count, ktime_now()) {
            Record::Signaled {
                status,
                timestamp_ns,
            } => FdState::Signaled {
                status,
                timestamp_ns,
            },
            // Readable a moment ago, 0 now: somebody read the record away.
            Record::Pending => FdState::Pending,
            Record::Invalid => invalid,
        },
        // Not an eventfd: cannot be (it was one at import, and a descriptor keeps its
        // file); counted as garbage.
        Err(Error::Invalid(_)) => invalid,
        Err(e) => return Err(e),
    })
}

pub(super) fn signal_from(fence: &Fence, st: FdState) {
    match st {
        FdState::Pending => {}
        FdState::Signaled {
            status,
            timestamp_ns,
        } => {
            if status < 0 {
                let _ = fence.set_error(status);
            }
            let _ = fence.signal_timestamp(timestamp_ns);
        }
        FdState::SignallerGone => {
            let _ = fence.set_error(-Errno::PIPE.raw_os_error());
            let _ = fence.signal();
        }
    }
}

/// Ops of a fence imported from a descriptor this process does not know (another
/// process's sync file).
pub(super) struct Proxy {
    /// A duplicate of the eventfd, shared with the id map's pin and the watcher.
    pub(super) fd: Arc<OwnedFd>,
    /// The origin's liveness read end, if it came along.
    pub(super) liveness: Option<Arc<OwnedFd>>,
}

impl Proxy {
    /// [`observe`]; an error reading the record counts as "not known to be signalled
    /// yet" (see the watcher for what happens then).
    fn observe(&self) -> FdState {
        observe(self.fd.as_fd(), self.liveness.as_deref().map(AsFd::as_fd))
            .unwrap_or(FdState::Pending)
    }
}

impl FenceOps for Proxy {
    fn driver_name(&self) -> &str {
        "sync_file"
    }
    fn timeline_name(&self) -> &str {
        "imported"
    }
    fn enable_signaling(&self, fence: &Fence) -> bool {
        match self.observe() {
            FdState::Pending => watcher::watch(fence.clone(), &self.fd, self.liveness.as_deref()),
            st => {
                signal_from(fence, st);
                true
            }
        }
    }
    fn signaled(&self, fence: &Fence) -> bool {
        match self.observe() {
            FdState::Pending => false,
            st => {
                signal_from(fence, st);
                true
            }
        }
    }
}
