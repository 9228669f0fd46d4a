use super::liveness;
use super::record::eventfd_info;
use super::registry::{stash_liveness, writer_of};
use super::SyncFile;
use crate::error::{Error, Result};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::net::{RecvFlags, SendFlags};

// ---- passing descriptors ----------------------------------------------------------------

/// Most descriptors one [`send_fds`] message carries (each sync file may take a second
/// slot for its liveness descriptor).
pub const MAX_FDS: usize = 16;
/// Most payload bytes one [`send_fds`] message carries.
pub const MAX_PAYLOAD: usize = 240;

/// The liveness read end that must go along with `fd`: this process's own for a sync
/// file it exports, the origin's for a proxy that came with one, none for anything else.
fn liveness_for(fd: BorrowedFd<'_>) -> Result<Option<std::sync::Arc<OwnedFd>>> {
    // Only a sync file this process knows carries liveness: anything else (not an
    // eventfd, no procfs) goes alone, but an fdinfo that cannot be read now is an error,
    // not a reason to send a sync file without its liveness.
    let id = || match eventfd_info(fd) {
        Ok(i) => Ok(i.id),
        Err(Error::Invalid(_) | Error::BadFd) => Ok(None),
        Err(e) => Err(e),
    };
    Ok(match writer_of(fd, id, true)? {
        Some(None) => Some(liveness::read_end()?),
        Some(Some(l)) => Some(l),
        None => None,
    })
}

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
    let live = liveness_for(fd)?;
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

/// Send `payload` and `fds` in ONE message over the Unix socket `sock`, for
/// [`recv_fds`]: each sync file this process knows takes its liveness descriptor along
/// (as [`send_fd`] does), anything else goes alone. The message is a header (the count
/// of `fds` and, per descriptor, whether a liveness descriptor follows it) and then
/// `payload`; the descriptors, liveness ones included, travel as one `SCM_RIGHTS`
/// array, so the peer gets all of them or none.
///
/// # Errors
///
/// `Invalid` for more than [`MAX_FDS`] descriptors (liveness ones included) or a
/// payload over [`MAX_PAYLOAD`] bytes; then those of [`send_fd`]. Nothing is sent on
/// error.
pub fn send_fds(sock: BorrowedFd<'_>, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage};
    if payload.len() > MAX_PAYLOAD || fds.len() > MAX_FDS {
        return Err(Error::Invalid("message too large"));
    }
    let mut lives = Vec::with_capacity(fds.len());
    for fd in fds {
        lives.push(liveness_for(*fd)?);
    }
    let mut all: Vec<BorrowedFd<'_>> = Vec::with_capacity(fds.len() * 2);
    let mut head = Vec::with_capacity(1 + fds.len() + payload.len());
    head.push(fds.len() as u8);
    for (fd, l) in fds.iter().zip(&lives) {
        all.push(*fd);
        head.push(l.is_some() as u8);
        if let Some(l) = l {
            all.push(l.as_fd());
        }
    }
    if all.len() > MAX_FDS {
        return Err(Error::Invalid("message too large"));
    }
    head.extend_from_slice(payload);
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !all.is_empty() && !anc.push(SendAncillaryMessage::ScmRights(&all)) {
        return Err(Error::NoMem);
    }
    let iov = [std::io::IoSlice::new(&head)];
    rustix::net::sendmsg(sock, &iov, &mut anc, SendFlags::NOSIGNAL)?;
    Ok(())
}

/// A descriptor received by [`recv_message`], with the liveness descriptor that came
/// beside it, if any. Turn it into a plain descriptor ([`into_fd`](Self::into_fd)) or
/// import it as a sync file ([`into_sync_file`](Self::into_sync_file)).
#[derive(Debug)]
#[must_use = "dropping an incoming descriptor closes it"]
pub struct Incoming {
    fd: OwnedFd,
    live: Option<OwnedFd>,
}

impl Incoming {
    /// The descriptor; a liveness descriptor that came beside it is kept for later
    /// imports of its sync file (as [`recv_fd`] does).
    pub fn into_fd(self) -> OwnedFd {
        if let Some(live) = self.live {
            stash_liveness(self.fd.as_fd(), live);
        }
        self.fd
    }

    /// Import it as a sync file ([`SyncFile::from_fd`]), with the liveness descriptor
    /// that came beside it: one fdinfo read, where `into_fd` and then `from_fd` read
    /// twice.
    ///
    /// # Errors
    ///
    /// Those of [`SyncFile::from_fd`]; the descriptors are closed then.
    pub fn into_sync_file(self) -> Result<SyncFile> {
        SyncFile::from_received(self.fd, self.live)
    }
}

/// Receive one message sent by [`send_fds`] (blocking): its payload and its
/// descriptors, in the order sent, each with its liveness descriptor.
///
/// # Errors
///
/// `NoEntry` when the peer closed the socket (end of file); `TooManyFiles` (`EMFILE`)
/// when the descriptors did not fit this process's table (the kernel dropped them:
/// the message is lost); `Invalid` for a message that is not of [`send_fds`]'s form
/// (every descriptor that came is closed); OS errors of `recvmsg`.
pub fn recv_message(sock: BorrowedFd<'_>) -> Result<(Vec<u8>, Vec<Incoming>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, ReturnFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let mut bytes = [0u8; 1 + MAX_FDS + MAX_PAYLOAD];
    let mut iov = [std::io::IoSliceMut::new(&mut bytes)];
    let r = rustix::net::recvmsg(sock, &mut iov, &mut anc, RecvFlags::CMSG_CLOEXEC)?;
    let mut got: Vec<OwnedFd> = Vec::new();
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            got.extend(fds);
        }
    }
    if r.flags.contains(ReturnFlags::CTRUNC) {
        return Err(Error::TooManyFiles);
    }
    if r.bytes == 0 && got.is_empty() {
        return Err(Error::NoEntry("peer closed the socket"));
    }
    let msg = &bytes[..r.bytes.min(bytes.len())];
    let n = *msg.first().ok_or(Error::Invalid("empty message"))? as usize;
    let flags = msg
        .get(1..1 + n)
        .ok_or(Error::Invalid("message header cut short"))?;
    let want = n + flags.iter().filter(|&&f| f != 0).count();
    if got.len() != want || flags.iter().any(|&f| f > 1) {
        return Err(Error::Invalid(
            "descriptors do not match the message header",
        ));
    }
    let mut it = got.into_iter();
    let mut out = Vec::with_capacity(n);
    for &f in flags {
        let fd = it.next().ok_or(Error::Invalid("descriptor missing"))?;
        let live = if f == 1 {
            Some(it.next().ok_or(Error::Invalid("descriptor missing"))?)
        } else {
            None
        };
        out.push(Incoming { fd, live });
    }
    Ok((msg[1 + n..].to_vec(), out))
}

/// Receive one message sent by [`send_fds`] (blocking): its payload and its
/// descriptors, in the order sent. Liveness descriptors that came along are kept for
/// later imports of their sync files (as [`recv_fd`] does); [`recv_message`] hands
/// them over instead.
///
/// # Errors
///
/// Those of [`recv_message`].
pub fn recv_fds(sock: BorrowedFd<'_>) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    let (payload, fds) = recv_message(sock)?;
    Ok((payload, fds.into_iter().map(Incoming::into_fd).collect()))
}

/// Receive one sync file sent by [`send_fd`] (blocking) and import it, with the
/// liveness descriptor that came beside it: [`recv_fd`] and [`SyncFile::from_fd`] in
/// one, reading the descriptor's fdinfo once.
///
/// # Errors
///
/// `NoEntry` if the message carried no descriptor (or the peer closed); OS errors of
/// `recvmsg`; those of [`SyncFile::from_fd`].
pub fn recv_sync_file(sock: BorrowedFd<'_>) -> Result<SyncFile> {
    let (fd, live) = recv_one(sock)?;
    SyncFile::from_received(fd, live)
}

/// One descriptor of a [`send_fd`] message, and the liveness descriptor beside it.
fn recv_one(sock: BorrowedFd<'_>) -> Result<(OwnedFd, Option<OwnedFd>)> {
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
    Ok((fd, got.next()))
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
    let (fd, live) = recv_one(sock)?;
    if let Some(live) = live {
        stash_liveness(fd.as_fd(), live);
    }
    Ok(fd)
}
