use super::liveness;
use super::record::eventfd_info;
use super::registry::{stash_liveness, writer_of};
use crate::error::{Error, Result};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::net::{RecvFlags, SendFlags};

#[cfg(doc)]
use super::SyncFile;

// ---- passing descriptors ----------------------------------------------------------------

/// Send `fd` over the Unix socket `sock` with `SCM_RIGHTS` (one byte of payload). When
/// `fd` is a sync file this process knows (its own export, or a proxy of another
/// process's sync file that came with that process's liveness descriptor), the liveness
/// read end goes along as a second descriptor, for [`recv_fd`] (see the module docs);
/// any other descriptor goes alone.
///
/// # Errors
///
/// OS errors of `sendmsg` (`ENOTSOCK`, `EPIPE`…); OS errors creating this
/// process's liveness pipe on the first send of an own sync file (`EMFILE`); OS errors
/// reading the fdinfo of a descriptor not owned by a live [`SyncFile`] (`EMFILE`: it
/// cannot be told whether a liveness descriptor must go along). Nothing is sent on
/// error.
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage};
    // Only a sync file this process knows carries liveness: anything else (not an
    // eventfd, no procfs) goes alone, but an fdinfo that cannot be read now is an error,
    // not a reason to send a sync file without its liveness.
    let id = || match eventfd_info(fd) {
        Ok(i) => Ok(i.id),
        Err(Error::Invalid(_) | Error::BadFd) => Ok(None),
        Err(e) => Err(e),
    };
    let live = match writer_of(fd, id, true)? {
        Some(None) => Some(liveness::read_end()?),
        Some(Some(l)) => Some(l),
        None => None,
    };
    let both;
    let fds: &[BorrowedFd<'_>] = match &live {
        Some(l) => {
            both = [fd, l.as_fd()];
            &both
        }
        None => std::slice::from_ref(&fd),
    };
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !anc.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(Error::NoMem);
    }
    let iov = [std::io::IoSlice::new(b"F")];
    rustix::net::sendmsg(sock, &iov, &mut anc, SendFlags::NOSIGNAL)?;
    Ok(())
}

/// Receive one descriptor sent by [`send_fd`] (blocking). If a liveness descriptor came
/// along, it is kept for later imports of the received descriptor, so that they see the
/// sender's death as `-EPIPE` (it is dropped if the received descriptor is not a sync
/// file, or cannot be pinned for lack of descriptors).
///
/// # Errors
///
/// [`Error::NoEntry`] if the message carried no descriptor (or the peer closed);
/// OS errors of `recvmsg`.
pub fn recv_fd(sock: BorrowedFd<'_>) -> Result<OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    rustix::net::recvmsg(sock, &mut iov, &mut anc, RecvFlags::CMSG_CLOEXEC)?;
    let mut got: Vec<OwnedFd> = Vec::new();
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            got.extend(fds);
        }
    }
    let mut got = got.into_iter();
    let fd = got.next().ok_or(Error::NoEntry("no descriptor received"))?;
    if let Some(live) = got.next() {
        stash_liveness(fd.as_fd(), live);
    }
    Ok(fd)
}
