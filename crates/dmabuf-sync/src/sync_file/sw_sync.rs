//! sw_sync timelines as descriptors (the kernel's debugfs `sync/sw_sync` file).
//!
//! The kernel's timeline is an open file: a child made by `fork` inherits it, it crosses
//! processes over a socket, and the last close of it anywhere signals every pending
//! point with `-ENOENT`. [`open`] gives a descriptor with those semantics, worked with
//! [`create_fence`] (`SW_SYNC_IOC_CREATE_FENCE`), [`inc`] (`SW_SYNC_IOC_INC`) and
//! [`get_deadline`] (`SW_SYNC_GET_DEADLINE`); the
//! in-process [`Timeline`] type is unchanged.
//!
//! # The descriptor
//!
//! A timeline descriptor is the write end of a close-on-exec pipe. The pipe holds one
//! *token*, 32 bytes: a magic number, the timeline's value (a 64-bit count of every
//! increment, whose low 32 bits are the kernel's `u32` value) and its name (the creating
//! process's `comm`, as the kernel names its timelines). The kernel keeps a pipe, and
//! its token, while any write end is open, in whatever process; that makes the
//! semantics:
//!
//! - **Shared value.** [`inc`] takes the token out of the pipe and puts the new one in
//!   (a `read` and a `write` of 32 bytes, each atomic on a pipe), holding a `flock` on a
//!   read end of the pipe opened by this process (`/proc/self/fd/<n>`), and an
//!   in-process lock, so that increments from all processes apply one after the other.
//!   Everybody else reads the token without taking it out (`tee` into a scratch pipe).
//! - **Points everywhere.** Each process keeps, per timeline it has used, an in-process
//!   [`Timeline`] that owns its points, and a read end of the pipe registered
//!   edge-triggered with a watcher thread: each token put in (every increment, by any
//!   process) wakes it, and it advances the local timeline to the token's value,
//!   signalling the points reached in order. An increment made by this process signals
//!   this process's points before [`inc`] returns, as the kernel's does.
//! - **Last close.** Read ends do not count as writers: when the last write end closes,
//!   anywhere, every process's read end hangs up, and its watcher signals that process's
//!   pending points with `-ENOENT` (after applying a last increment, if one came just
//!   before). A process that holds only sync files of the points learns it through the
//!   sync files' usual paths (the record written by the process whose point it is).
//! - **Inheritance, passing.** Nothing but the descriptor is needed: a child made by
//!   `fork`, one that inherited it over `exec` (close-on-exec cleared), a process that
//!   received it by [`send_fd`] or any other `SCM_RIGHTS`, works with it fully.
//! - **Not a timeline.** A descriptor that is not a pipe's write end holding a token
//!   is refused with `ENOTTY`, as the kernel's ioctl on another file would be (the
//!   crate's other ioctl-shaped entry points, such as [`ioctl_merge`], do the same for a
//!   descriptor that is not a sync file).
//!
//! # Limits
//!
//! - Needs `/proc` (to open a read end of the pipe) and Linux's `tee`.
//! - Anybody holding the descriptor can write to it and so break the timeline (the
//!   token would then read as garbage: [`inc`] fails with `EIO`, and a process that
//!   had not used the timeline yet takes it for a descriptor that is not one);
//!   the kernel's file has no such hole.
//! - A process killed in the few instructions between taking the token out and putting
//!   the new one in leaves the pipe without a token: [`inc`] then fails with `EIO` after
//!   waiting on the lock, which the dead process no longer holds.
//! - A child made by `fork` starts with no local state: points the parent made are the
//!   parent's (their sync files signal in the parent's readers only, see the sync-file
//!   module docs); the child's own points work as anywhere.
//! - Each process keeps one read end and a watch per timeline it has used, until the
//!   timeline's last close.

use super::pid;
use super::record::new_fd;
use super::{Reserved, SyncFile};
use crate::error::{Error, Result};
use crate::fence::timeline::Timeline;
use parking_lot::Mutex;
use rustix::event::epoll;
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

#[cfg(doc)]
use super::{get_fence, ioctl_merge, send_fd};

/// Marks a token ("sw_sync!" in little-endian bytes).
const MAGIC: u64 = u64::from_le_bytes(*b"sw_sync!");
/// Bytes of a token (at most `PIPE_BUF`, so that its read and write are atomic).
const TOKEN: usize = 32;

/// What a token says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Token {
    /// Every increment so far; the low 32 bits are the timeline's value.
    value: u64,
    /// The creating process's `comm`, NUL-padded.
    name: [u8; 16],
}

impl Token {
    fn encode(&self) -> [u8; TOKEN] {
        let mut b = [0u8; TOKEN];
        b[..8].copy_from_slice(&MAGIC.to_le_bytes());
        b[8..16].copy_from_slice(&self.value.to_le_bytes());
        b[16..].copy_from_slice(&self.name);
        b
    }

    fn decode(b: &[u8]) -> Option<Token> {
        if b.len() != TOKEN || b[..8] != MAGIC.to_le_bytes() {
            return None;
        }
        let mut name = [0u8; 16];
        name.copy_from_slice(&b[16..]);
        Some(Token {
            value: u64::from_le_bytes(b[8..16].try_into().ok()?),
            name,
        })
    }

    fn name(&self) -> String {
        let end = self.name.iter().position(|&c| c == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

/// A close-on-exec pipe.
fn new_pipe() -> Result<(OwnedFd, OwnedFd)> {
    new_fd(|| rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC))
}

/// This process's name, as the kernel names a timeline.
fn comm() -> [u8; 16] {
    let mut name = [0u8; 16];
    if let Ok(s) = std::fs::read("/proc/self/comm") {
        let s = s.strip_suffix(b"\n").unwrap_or(&s);
        let n = s.len().min(15);
        name[..n].copy_from_slice(&s[..n]);
    }
    name
}

/// Open a new timeline (the kernel's `open` of `sync/sw_sync`): value 0, named after
/// this process. The descriptor is close-on-exec.
///
/// # Errors
///
/// OS errors creating the pipe (`EMFILE`, `ENFILE`, `ENOMEM`); nothing is left
/// open then.
pub fn open() -> Result<OwnedFd> {
    let (r, w) = new_pipe()?;
    let t = Token {
        value: 0,
        name: comm(),
    };
    // An empty pipe always takes 32 bytes at once.
    let n = rustix::io::write(&w, &t.encode())?;
    if n != TOKEN {
        return Err(Error::Os(Errno::IO));
    }
    drop(r);
    Ok(w)
}

/// A point of the timeline `tl` at `value` (`SW_SYNC_IOC_CREATE_FENCE`), exported as a
/// close-on-exec sync file: a live pending point of the same value in this process is
/// reused; a value already reached gives a point signalled at birth; ordering is 32-bit
/// with wrap-around. The point signals when any process holding the timeline
/// increments it past `value`, or with `-ENOENT` at the timeline's last close.
///
/// # Errors
///
/// [`Error::NoTty`] (`ENOTTY`) if `tl` is not a timeline descriptor (see the
/// module docs; a timeline whose token was damaged before this process first used it
/// reads as one that is not); OS errors opening this process's read end of it,
/// starting the watcher, or creating the sync file (`EMFILE`, `ENFILE`, `ENOMEM`). On error nothing is left open or registered, and the timeline has no new
/// point.
pub fn create_fence(tl: BorrowedFd<'_>, value: u32) -> Result<SyncFile> {
    // The sync file's descriptor first: once the point exists, nothing can fail.
    let r = Reserved::new()?;
    let e = entry(tl)?;
    Ok(r.export(e.tl.create_fence(value)))
}

/// Advance the timeline `tl` by `n` (`SW_SYNC_IOC_INC`): for every process holding it,
/// the points reached signal in order; this process's have signalled when this returns
/// (those of other processes, as soon as their watcher runs). Increments by different
/// processes apply one after the other. From a callback of one of this timeline's
/// points (where the kernel's timeline lock would recurse), the increment is applied at
/// once and its points are signalled by the signalling already running on that thread,
/// in order, after the current point: nothing waits for itself.
///
/// # Errors
///
/// [`Error::NoTty`] (`ENOTTY`) if `tl` is not a timeline descriptor, or is not
/// open for writing; `EIO` if the token is damaged or missing (see the module docs);
/// OS errors opening this process's read end or starting the watcher (`EMFILE`,
/// `ENOMEM`). Nothing changes on error.
pub fn inc(tl: BorrowedFd<'_>, n: u32) -> Result<()> {
    let e = entry(tl)?;
    let new = {
        let _one_here = e.inc_lock.lock();
        let _lock = Flock::exclusive(&e.read)?;
        let mut buf = [0u8; TOKEN];
        let got = match rustix::io::read(&e.read, &mut buf) {
            Ok(k) => k,
            Err(Errno::AGAIN) => 0,
            Err(err) => return Err(err.into()),
        };
        let Some(mut t) = (got == TOKEN).then(|| Token::decode(&buf)).flatten() else {
            // Put back what was taken, as it was.
            if got > 0 {
                let _ = rustix::io::write(tl, &buf[..got]);
            }
            return Err(Error::Os(Errno::IO));
        };
        t.value = t.value.wrapping_add(u64::from(n));
        if let Err(err) = rustix::io::write(tl, &t.encode()) {
            let _ = rustix::io::write(tl, &buf);
            return Err(err.into());
        }
        t.value
    };
    e.advance_to(new);
    Ok(())
}

/// The earliest deadline set on the point behind sync file `fence` (`SW_SYNC_GET_DEADLINE`
/// on timeline `tl`).
///
/// # Errors
///
/// [`Error::NoTty`] (`ENOTTY`) if `tl` is not a timeline descriptor;
/// [`Error::Invalid`] (`EINVAL`) if `fence` is not a sync file of a sw_sync point;
/// [`Error::NoEntry`] (`ENOENT`) if no deadline was set; errors of [`get_fence`] other
/// than `EINVAL` (`EMFILE`…) if that cannot be told.
pub fn get_deadline(tl: BorrowedFd<'_>, fence: BorrowedFd<'_>) -> Result<u64> {
    entry(tl)?;
    let f = super::get_fence(fence)?;
    crate::fence::timeline::get_deadline(&f)
}

/// An exclusive `flock`, released on drop.
struct Flock<'a>(BorrowedFd<'a>);

impl<'a> Flock<'a> {
    fn exclusive(fd: &'a OwnedFd) -> Result<Flock<'a>> {
        use rustix::fs::FlockOperation;
        loop {
            match rustix::fs::flock(fd, FlockOperation::LockExclusive) {
                Ok(()) => return Ok(Flock(fd.as_fd())),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(self.0, rustix::fs::FlockOperation::Unlock);
    }
}

// ---- this process's side of a timeline -------------------------------------------------

/// What this process keeps of one timeline.
struct Entry {
    /// Its read end of the pipe: the watcher's, the peeks', the flock's.
    read: OwnedFd,
    /// This process's points.
    tl: Timeline,
    /// The token value the local timeline has been advanced to.
    seen: Mutex<u64>,
    /// The newest token value asked for (never moves backwards).
    target: AtomicU64,
    /// The [thread id](crate::shim::thread_id) advancing the local timeline (holding
    /// `seen`), 0 for none: an increment from a point's callback on that thread only
    /// raises `target`, and the loop running there carries it out.
    advancing: AtomicU32,
    /// One increment at a time from this process (the flock is per open file, which
    /// this process's threads share).
    inc_lock: Mutex<()>,
}

impl Entry {
    /// Advance the local timeline to token value `v` (never backwards), signalling the
    /// points reached in order. From a callback of one of its points on the thread
    /// advancing it, only records `v`: the loop running there gets to it next.
    fn advance_to(&self, v: u64) {
        let newer = |t: u64| (v.wrapping_sub(t).wrapping_sub(1) < u64::MAX / 2).then_some(v);
        let _ = self.target.fetch_update(SeqCst, SeqCst, newer);
        let me = crate::shim::thread_id();
        if self.advancing.load(SeqCst) == me {
            return;
        }
        let mut seen = self.seen.lock();
        self.advancing.store(me, SeqCst);
        loop {
            let t = self.target.load(SeqCst);
            let mut left = t.wrapping_sub(*seen);
            if left == 0 || left > u64::MAX / 2 {
                break;
            }
            *seen = t;
            while left > 0 {
                let step = left.min(u64::from(u32::MAX));
                self.tl.inc(step as u32);
                left -= step;
            }
        }
        self.advancing.store(0, SeqCst);
    }
}

/// The timelines this process has used, by pipe inode.
struct Local {
    pid: rustix::process::Pid,
    map: HashMap<u64, Arc<Entry>>,
}

static LOCAL: Mutex<Option<Local>> = parking_lot::const_mutex(None);

/// The entry of timeline descriptor `tl`, made on first use in this process.
fn entry(tl: BorrowedFd<'_>) -> Result<Arc<Entry>> {
    use rustix::fs::{FileType, OFlags};
    let st = rustix::fs::fstat(tl).map_err(Error::from)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Fifo {
        return Err(Error::NoTty);
    }
    let acc = rustix::fs::fcntl_getfl(tl)? & OFlags::RWMODE;
    if acc != OFlags::WRONLY && acc != OFlags::RDWR {
        return Err(Error::NoTty);
    }
    let ino = st.st_ino;
    let pid = pid::current();
    {
        let mut local = LOCAL.lock();
        if local.as_ref().is_some_and(|l| l.pid != pid) {
            // A parent's state copied by `fork`: its points and watches are the
            // parent's, and dropping them here would signal the child's copies of the
            // parent's fences. Leaked.
            std::mem::forget(local.take());
        }
        if let Some(e) = local.as_ref().and_then(|l| l.map.get(&ino)) {
            return Ok(e.clone());
        }
    }
    // A read end of our own: opened through procfs, it is a new open of the pipe, so
    // its flock is this process's, and it does not count as a writer.
    let path = format!("/proc/self/fd/{}", tl.as_raw_fd());
    let read = new_fd(|| {
        rustix::fs::open(
            path.as_str(),
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
    })?;
    // Same pipe still (the number may have been reused meanwhile by another thread).
    if rustix::fs::fstat(&read)?.st_ino != ino {
        return Err(Error::NoTty);
    }
    let w = watcher()?;
    // Watch first, then read the value: an increment after the read is an event.
    epoll::add(
        &w.ep,
        &read,
        epoll::EventData::new_u64(ino),
        epoll::EventFlags::IN | epoll::EventFlags::ET,
    )
    .map_err(Error::from)?;
    let unwatch = |read: &OwnedFd| {
        let _ = epoll::delete(&w.ep, read);
    };
    let token = {
        let _lock = match Flock::exclusive(&read) {
            Ok(l) => l,
            Err(e) => {
                unwatch(&read);
                return Err(e);
            }
        };
        match peek(&read, None) {
            Ok(Some(t)) => t,
            Ok(None) => {
                unwatch(&read);
                return Err(Error::NoTty);
            }
            Err(e) => {
                unwatch(&read);
                return Err(e);
            }
        }
    };
    let e = Arc::new(Entry {
        tl: Timeline::new(&token.name()),
        seen: Mutex::new(0),
        target: AtomicU64::new(0),
        advancing: AtomicU32::new(0),
        inc_lock: Mutex::new(()),
        read,
    });
    e.advance_to(token.value);
    let mut local = LOCAL.lock();
    let l = local.get_or_insert_with(|| Local {
        pid,
        map: HashMap::new(),
    });
    if let Some(other) = l.map.get(&ino) {
        // Another thread made one meanwhile: that one is the answer.
        let other = other.clone();
        drop(local);
        unwatch(&e.read);
        return Ok(other);
    }
    l.map.insert(ino, e.clone());
    Ok(e)
}

/// Read the token in the pipe without taking it out: `tee` it into a scratch pipe
/// (`scratch`, or a new one) and read that. `None` if the pipe holds no token (empty,
/// or not one of ours).
fn peek(read: &OwnedFd, scratch: Option<&(OwnedFd, OwnedFd)>) -> Result<Option<Token>> {
    use rustix::pipe::SpliceFlags;
    let made;
    let (sr, sw) = match scratch {
        Some(s) => (&s.0, &s.1),
        None => {
            made = new_pipe()?;
            (&made.0, &made.1)
        }
    };
    let n = match rustix::pipe::tee(read, sw, TOKEN, SpliceFlags::NONBLOCK) {
        Ok(n) => n,
        Err(Errno::AGAIN) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut buf = [0u8; TOKEN];
    let mut got = 0;
    while got < n {
        match rustix::io::read(sr, &mut buf[got..n]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Token::decode(&buf[..got]))
}

// ---- the watcher ------------------------------------------------------------------------

struct W {
    pid: rustix::process::Pid,
    ep: OwnedFd,
}

static WATCHER: Mutex<Option<Arc<W>>> = parking_lot::const_mutex(None);

/// This process's timeline watcher, started on first use (and again in a child made by
/// `fork`, whose copy shares the parent's epoll set and has no thread).
fn watcher() -> Result<Arc<W>> {
    let pid = pid::current();
    let mut cur = WATCHER.lock();
    if let Some(w) = cur.as_ref().filter(|w| w.pid == pid) {
        return Ok(w.clone());
    }
    let ep = new_fd(|| epoll::create(epoll::CreateFlags::CLOEXEC))?;
    let scratch = new_pipe()?;
    let w = Arc::new(W { pid, ep });
    let t = w.clone();
    std::thread::Builder::new()
        .name("sw_sync-watch".into())
        .spawn(move || run(&t, &scratch))
        .map_err(|_| Error::NoMem)?;
    if let Some(old) = cur.replace(w.clone()) {
        // The parent's, copied by `fork`: its epoll set is the parent's. Leaked.
        std::mem::forget(old);
    }
    Ok(w)
}

fn run(w: &W, scratch: &(OwnedFd, OwnedFd)) {
    let mut events: Vec<epoll::Event> = Vec::with_capacity(16);
    loop {
        events.clear();
        let spare = rustix::buffer::spare_capacity(&mut events);
        if epoll::wait(&w.ep, spare, None).is_err() {
            continue;
        }
        for ev in events.iter() {
            let data = ev.data;
            let ino = data.u64();
            let Some(e) = LOCAL
                .lock()
                .as_ref()
                .filter(|l| l.pid == w.pid)
                .and_then(|l| l.map.get(&ino).cloned())
            else {
                continue;
            };
            if let Ok(Some(t)) = peek(&e.read, Some(scratch)) {
                e.advance_to(t.value);
            }
            let flags = ev.flags;
            if flags.intersects(epoll::EventFlags::HUP | epoll::EventFlags::ERR) {
                // The last write end is gone: the timeline is closed.
                let gone = LOCAL.lock().as_mut().and_then(|l| l.map.remove(&ino));
                let _ = epoll::delete(&w.ep, &e.read);
                drop(gone);
                // Dropping the last reference to the local timeline signals its
                // pending points with -ENOENT.
                close_local(e);
            }
        }
    }
}

/// Signal every pending point of `e` with `-ENOENT` (the kernel's release of the
/// timeline file).
fn close_local(e: Arc<Entry>) {
    e.tl.close();
}

/// Whether this process keeps state for the timeline whose pipe has inode `ino`
/// (for tests).
#[cfg(test)]
pub(super) fn knows(ino: u64) -> bool {
    LOCAL
        .lock()
        .as_ref()
        .is_some_and(|l| l.map.contains_key(&ino))
}

/// Pending points of this process on the timeline with pipe inode `ino` (for tests).
#[cfg(test)]
pub(super) fn pending_here(ino: u64) -> usize {
    LOCAL
        .lock()
        .as_ref()
        .and_then(|l| l.map.get(&ino).map(|e| e.tl.pending_count()))
        .unwrap_or(0)
}

/// Whether this process's watcher is running (for tests).
#[cfg(test)]
pub(super) fn watcher_running() -> bool {
    let pid = pid::current();
    WATCHER.lock().as_ref().is_some_and(|w| w.pid == pid)
}

/// This process's timelines: name, value, pending points (for
/// [`info_text`](super::info_text)).
pub(super) fn timelines() -> Vec<(String, u32, usize)> {
    let g = LOCAL.lock();
    let mut v: Vec<(String, u32, usize)> = g
        .as_ref()
        .map(|l| {
            l.map
                .values()
                .map(|e| (e.tl.name().to_string(), e.tl.value(), e.tl.pending_count()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
