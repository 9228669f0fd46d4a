//! Sync files: fences as file descriptors that poll, cross processes, and survive their
//! signaller's death as an error (the kernel's `sync_file`).
//!
//! # The descriptor
//!
//! A sync file is one end of a `SOCK_SEQPACKET` Unix socket pair. The other end belongs
//! to the signaller: when the fence signals, a fence callback sends exactly one 16-byte
//! record `{magic: u32, status: i32, timestamp_ns: u64}` on it. Readers only ever *peek*
//! the record (`MSG_PEEK`), so it stays for every reader and every duplicate of the
//! descriptor. Hence:
//!
//! - the descriptor polls readable (`POLLIN`) exactly once the fence has signalled;
//! - it crosses processes with `SCM_RIGHTS` ([`send_fd`], [`recv_fd`]) like any fd;
//! - if the signalling process dies first, its end closes and readers see end-of-file
//!   without a record: the import reads that as an error (`-EPIPE`), not a hang.
//!
//! # Identity
//!
//! Within the exporting process a registry maps the socket's cookie (`SO_COOKIE`, unique
//! for the boot) to the exported fence, its name and the signaller end, so importing our
//! own descriptor gives back the very same fence (as the kernel's `sync_file_get_fence`
//! does), with its leaves for [`SyncFile::info`]. The registry holds a reference to the
//! fence while the descriptor is open anywhere (the kernel's file reference); entries
//! whose descriptor has been closed everywhere (the signaller end reports hang-up) are
//! swept as the registry grows. A descriptor from another process becomes a proxy fence
//! (driver `sync_file`, timeline `imported`) that a background watcher thread signals,
//! with the record's status and timestamp, when the descriptor becomes readable.
//!
//! # ioctl parity
//!
//! [`ioctl_merge`], [`ioctl_file_info`] and [`ioctl_set_deadline`] take the kernel's
//! argument structs ([`SyncMergeData`], [`SyncFileInfo`], [`SyncFenceInfo`],
//! [`SyncSetDeadline`]) and validate them with the kernel's errnos.

use crate::error::{Error, Result};
use crate::fence::unwrap::{merge, unwrap};
use crate::fence::{Context, Fence, FenceOps, Status};
use parking_lot::Mutex;
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Magic of the signal record ("SYNC").
const MAGIC: u32 = 0x434e_5953;
/// Size of the signal record.
const RECORD: usize = 16;

/// A fence exposed as a file descriptor.
#[derive(Debug)]
pub struct SyncFile {
    fd: OwnedFd,
    fence: Fence,
    name: String,
}

/// What a reader learns from the descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdState {
    /// No record yet, signaller alive.
    Pending,
    /// Signalled with this status (1 ok, negative errno) at this time.
    Signaled {
        /// 1, or a negative errno.
        status: i32,
        /// Monotonic ns.
        timestamp_ns: u64,
    },
    /// The signaller's end closed without a record (its process died).
    SignallerGone,
}

struct Entry {
    fence: Fence,
    name: String,
    signaller: Arc<OwnedFd>,
}

#[derive(Default)]
struct Registry {
    map: HashMap<u64, Entry>,
    sweep_at: usize,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| {
        Mutex::new(Registry {
            map: HashMap::new(),
            sweep_at: 64,
        })
    })
}

impl Registry {
    /// Insert; returns whether the registry has grown enough to be swept.
    fn insert(&mut self, cookie: u64, e: Entry) -> bool {
        self.map.insert(cookie, e);
        self.map.len() >= self.sweep_at
    }

    /// Take out the entries whose reader descriptor is closed everywhere (one poll for
    /// all), for the caller to drop after releasing the lock: dropping them closes
    /// their signaller ends, which is slow.
    fn take_dead(&mut self) -> Vec<Entry> {
        let keys: Vec<u64> = self.map.keys().copied().collect();
        let mut gone = Vec::new();
        {
            let mut pfds: Vec<PollFd<'_>> = keys
                .iter()
                .map(|k| PollFd::new(&*self.map[k].signaller, PollFlags::empty()))
                .collect();
            if rustix::event::poll(&mut pfds, Some(&rustix::time::Timespec::default())).is_ok() {
                for (k, p) in keys.iter().zip(pfds.iter()) {
                    if p.revents().contains(PollFlags::HUP) {
                        gone.push(*k);
                    }
                }
            }
        }
        let dead = gone.iter().filter_map(|k| self.map.remove(k)).collect();
        self.sweep_at = (self.map.len() * 2).max(64);
        dead
    }
}

/// Sweep the registry now if it has grown enough, closing dead signaller ends outside
/// the registry lock.
fn sweep() {
    let dead = {
        let mut r = registry().lock();
        if r.map.len() < r.sweep_at {
            return;
        }
        r.take_dead()
    };
    drop(dead);
}

fn default_name(f: &Fence) -> String {
    format!(
        "{}-{}{}-{}",
        f.driver_name(),
        f.timeline_name(),
        f.context().id(),
        f.seqno()
    )
}

fn encode(status: i32, ts: u64) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[0..4].copy_from_slice(&MAGIC.to_ne_bytes());
    r[4..8].copy_from_slice(&status.to_ne_bytes());
    r[8..16].copy_from_slice(&ts.to_ne_bytes());
    r
}

fn send_record(signaller: &OwnedFd, f: &Fence) {
    let status = match f.error() {
        0 => 1,
        e => e,
    };
    let ts = f.timestamp().unwrap_or(0);
    // The reader may be gone (EPIPE) or the socket full of nothing else: ignore.
    let _ = rustix::net::send(signaller, &encode(status, ts), SendFlags::NOSIGNAL);
}

/// Peek the record of a sync-file descriptor without consuming it. Never blocks.
///
/// Errors: [`Error::Invalid`] if what is queued is not a sync-file record; OS errors
/// of `recv` (e.g. `ENOTSOCK` for a non-socket).
pub fn peek(fd: BorrowedFd<'_>) -> Result<FdState> {
    let mut buf = [0u8; RECORD + 1];
    match rustix::net::recv(fd, &mut buf[..], RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        Ok((0, _)) => Ok(FdState::SignallerGone),
        Ok((n, _)) => {
            if n != RECORD || u32::from_ne_bytes(buf[0..4].try_into().expect("4")) != MAGIC {
                return Err(Error::Invalid("not a sync-file record"));
            }
            let status = i32::from_ne_bytes(buf[4..8].try_into().expect("4"));
            let ts = u64::from_ne_bytes(buf[8..16].try_into().expect("8"));
            Ok(FdState::Signaled {
                status,
                timestamp_ns: ts,
            })
        }
        Err(Errno::AGAIN) => Ok(FdState::Pending),
        Err(e) => Err(Error::Os(e)),
    }
}

/// Whether `fd` looks like a sync file: a Unix seqpacket socket.
fn is_sync_socket(fd: BorrowedFd<'_>) -> bool {
    matches!(
        rustix::net::sockopt::socket_type(fd),
        Ok(SocketType::SEQPACKET)
    ) && matches!(
        rustix::net::sockopt::socket_domain(fd),
        Ok(AddressFamily::UNIX)
    )
}

impl SyncFile {
    /// Export `fence` as a sync file (`sync_file_create`), named
    /// `<driver>-<timeline><context>-<seqno>`. The descriptor is close-on-exec.
    ///
    /// Errors: OS errors creating the socket pair (`EMFILE`…).
    pub fn new(fence: Fence) -> Result<SyncFile> {
        let name = default_name(&fence);
        Self::with_name(fence, &name)
    }

    /// Export `fence` under `name` (truncated to 31 bytes, as the kernel's 32-byte field).
    pub fn with_name(fence: Fence, name: &str) -> Result<SyncFile> {
        let (reader, signaller) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        let name = truncate_name(name);
        let signaller = Arc::new(signaller);
        if let Ok(cookie) = rustix::net::sockopt::socket_cookie(&reader) {
            let grown = registry().lock().insert(
                cookie,
                Entry {
                    fence: fence.clone(),
                    name: name.clone(),
                    signaller: signaller.clone(),
                },
            );
            if grown {
                sweep();
            }
        }
        let s = signaller.clone();
        if let Err((_, _cb)) = fence.add_callback(move |f: &Fence| send_record(&s, f)) {
            send_record(&signaller, &fence);
        }
        Ok(SyncFile {
            fd: reader,
            fence,
            name,
        })
    }

    /// Import a descriptor (`sync_file_fdget` + `sync_file_get_fence`), taking ownership.
    /// Our own export gives back the same fence and name; a foreign one a proxy fence.
    ///
    /// Errors: [`Error::Invalid`] (`EINVAL`) if `fd` is not a sync file.
    pub fn from_fd(fd: OwnedFd) -> Result<SyncFile> {
        let (fence, name) = lookup(fd.as_fd())?;
        Ok(SyncFile { fd, fence, name })
    }

    /// The fence.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The name (merge-supplied or default).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The descriptor.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Give up the object, keep the descriptor (the fence stays referenced by the
    /// registry while the descriptor is open).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Whether the descriptor polls readable now (the fence signalled, ok or error).
    pub fn poll(&self) -> bool {
        poll_readable(self.fd.as_fd(), Some(Duration::ZERO)).unwrap_or(false)
    }

    /// Merge with `other` into a new sync file named `name` (`SYNC_IOC_MERGE`): its
    /// fence signals when both have (see [`merge`]).
    pub fn merge(&self, name: &str, other: &SyncFile) -> Result<SyncFile> {
        let f = merge(&[self.fence.clone(), other.fence.clone()])?;
        SyncFile::with_name(f, name)
    }

    /// Name, overall status, and per leaf: timeline, driver, status, timestamp
    /// (`SYNC_IOC_FILE_INFO`).
    pub fn info(&self) -> FileInfo {
        file_info(&self.fence, &self.name)
    }

    /// Forward a deadline to the fence (`SYNC_IOC_SET_DEADLINE`).
    pub fn set_deadline(&self, deadline_ns: u64) {
        self.fence.set_deadline(deadline_ns);
    }
}

/// Import without taking ownership: the fence behind `fd` (`sync_file_get_fence`).
///
/// Errors: [`Error::Invalid`] (`EINVAL`) if `fd` is not a sync file.
pub fn get_fence(fd: BorrowedFd<'_>) -> Result<Fence> {
    lookup(fd).map(|(f, _)| f)
}

fn lookup(fd: BorrowedFd<'_>) -> Result<(Fence, String)> {
    let cookie =
        rustix::net::sockopt::socket_cookie(fd).map_err(|_| Error::Invalid("not a sync file"))?;
    if let Some(e) = registry().lock().map.get(&cookie) {
        return Ok((e.fence.clone(), e.name.clone()));
    }
    if !is_sync_socket(fd) {
        return Err(Error::Invalid("not a sync file"));
    }
    let fence = Fence::new(
        Proxy {
            fd: rustix::io::dup(fd)?,
        },
        Context::new(),
        1,
    );
    match peek(fd) {
        Ok(FdState::Pending) => {}
        Ok(st) => signal_from(&fence, st),
        Err(_) => return Err(Error::Invalid("not a sync file")),
    }
    let name = default_name(&fence);
    Ok((fence, name))
}

fn signal_from(fence: &Fence, st: FdState) {
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

/// Ops of a fence imported from another process's descriptor.
struct Proxy {
    fd: OwnedFd,
}

impl FenceOps for Proxy {
    fn driver_name(&self) -> &str {
        "sync_file"
    }
    fn timeline_name(&self) -> &str {
        "imported"
    }
    fn enable_signaling(&self, fence: &Fence) -> bool {
        match peek(self.fd.as_fd()) {
            Ok(FdState::Pending) => watcher::watch(fence.clone(), &self.fd),
            Ok(st) => {
                signal_from(fence, st);
                true
            }
            Err(_) => {
                let _ = fence.set_error(-Errno::INVAL.raw_os_error());
                false
            }
        }
    }
    fn signaled(&self, fence: &Fence) -> bool {
        match peek(self.fd.as_fd()) {
            Ok(FdState::Pending) => false,
            Ok(st) => {
                signal_from(fence, st);
                true
            }
            Err(_) => false,
        }
    }
}

/// The background thread that signals proxy fences when their descriptor is readable.
mod watcher {
    use super::*;
    use rustix::event::epoll;

    struct W {
        ep: OwnedFd,
        waiting: Mutex<HashMap<u64, (Fence, OwnedFd)>>,
        next: std::sync::atomic::AtomicU64,
    }

    fn get() -> Option<&'static W> {
        static W: OnceLock<Option<W>> = OnceLock::new();
        W.get_or_init(|| {
            let ep = epoll::create(epoll::CreateFlags::CLOEXEC).ok()?;
            let w = W {
                ep,
                waiting: Mutex::new(HashMap::new()),
                next: std::sync::atomic::AtomicU64::new(1),
            };
            Some(w)
        })
        .as_ref()
        .inspect(|w| {
            static STARTED: OnceLock<()> = OnceLock::new();
            STARTED.get_or_init(|| {
                let w: &'static W = w;
                let _ = std::thread::Builder::new()
                    .name("sync_file-watch".into())
                    .spawn(move || run(w));
            });
        })
    }

    /// Watch `fd` for `fence`; false if watching is impossible (the fence is then
    /// signalled by the core, with the error set here).
    pub(super) fn watch(fence: Fence, fd: &OwnedFd) -> bool {
        let Some(w) = get() else {
            let _ = fence.set_error(-Errno::NOMEM.raw_os_error());
            return false;
        };
        let Ok(dup) = rustix::io::dup(fd) else {
            let _ = fence.set_error(-Errno::MFILE.raw_os_error());
            return false;
        };
        let id = w.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ONESHOT;
        let mut waiting = w.waiting.lock();
        if epoll::add(&w.ep, &dup, epoll::EventData::new_u64(id), flags).is_err() {
            let _ = fence.set_error(-Errno::NOMEM.raw_os_error());
            return false;
        }
        waiting.insert(id, (fence, dup));
        true
    }

    fn run(w: &'static W) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
        loop {
            events.clear();
            if epoll::wait(&w.ep, rustix::buffer::spare_capacity(&mut events), None).is_err() {
                continue;
            }
            for ev in events.iter() {
                let id = ev.data.u64();
                let Some((fence, fd)) = w.waiting.lock().remove(&id) else {
                    continue;
                };
                let _ = epoll::delete(&w.ep, &fd);
                let st = peek(fd.as_fd()).unwrap_or(FdState::SignallerGone);
                signal_from(&fence, st);
            }
        }
    }
}

/// Wait until `fd` polls readable, at most `timeout` (`None` = forever). Returns whether
/// it did.
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

fn truncate_name(name: &str) -> String {
    let mut end = name.len().min(31);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// Per-leaf information of [`SyncFile::info`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafInfo {
    /// Timeline name (the kernel's `obj_name`).
    pub timeline: String,
    /// Driver name.
    pub driver: String,
    /// 0 pending, 1 signalled, negative errno.
    pub status: i32,
    /// Signal time in monotonic ns (0 while pending).
    pub timestamp_ns: u64,
}

/// What [`SyncFile::info`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// The sync file's name.
    pub name: String,
    /// Aggregate status: 1, or the first non-positive leaf status.
    pub status: i32,
    /// The leaves.
    pub fences: Vec<LeafInfo>,
}

fn leaf_info(f: &Fence) -> LeafInfo {
    let status = f.get_status();
    LeafInfo {
        timeline: f.timeline_name().to_owned(),
        driver: f.driver_name().to_owned(),
        status,
        timestamp_ns: if status != 0 {
            f.timestamp().unwrap_or(0)
        } else {
            0
        },
    }
}

fn file_info(fence: &Fence, name: &str) -> FileInfo {
    let fences: Vec<LeafInfo> = unwrap(fence).map(|f| leaf_info(&f)).collect();
    let mut status = 1;
    for l in &fences {
        if l.status <= 0 {
            status = l.status;
            break;
        }
    }
    FileInfo {
        name: name.to_owned(),
        status,
        fences,
    }
}

// ---- ioctl-shaped entry points --------------------------------------------------------

/// `struct sync_merge_data`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncMergeData {
    /// Name of the new sync file (NUL-terminated; force-terminated at 31).
    pub name: [u8; 32],
    /// The other sync file.
    pub fd2: i32,
    /// Out: the new descriptor.
    pub fence: i32,
    /// Must be 0.
    pub flags: u32,
    /// Must be 0.
    pub pad: u32,
}

/// `struct sync_fence_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncFenceInfo {
    /// Timeline name.
    pub obj_name: [u8; 32],
    /// Driver name.
    pub driver_name: [u8; 32],
    /// 0 pending, 1 signalled, negative errno.
    pub status: i32,
    /// Unused, 0.
    pub flags: u32,
    /// Signal time (0 while pending).
    pub timestamp_ns: u64,
}

/// `struct sync_file_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncFileInfo {
    /// Out: the sync file's name.
    pub name: [u8; 32],
    /// Out: aggregate status.
    pub status: i32,
    /// Must be 0.
    pub flags: u32,
    /// In: capacity of the array (0 = only count); out: leaf count.
    pub num_fences: u32,
    /// Must be 0.
    pub pad: u32,
    /// The kernel's user pointer to the array; here the array is a slice argument, and
    /// this field is ignored.
    pub sync_fence_info: u64,
}

/// `struct sync_set_deadline`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncSetDeadline {
    /// Absolute monotonic deadline in ns.
    pub deadline_ns: u64,
    /// Must be 0.
    pub pad: u64,
}

fn copy_name(dst: &mut [u8; 32], src: &str) {
    *dst = [0; 32];
    let b = src.as_bytes();
    let n = b.len().min(31);
    dst[..n].copy_from_slice(&b[..n]);
}

fn c_name(src: &[u8; 32]) -> String {
    let end = src.iter().take(31).position(|&c| c == 0).unwrap_or(31);
    String::from_utf8_lossy(&src[..end]).into_owned()
}

fn this_file(fd: BorrowedFd<'_>) -> Result<(Fence, String)> {
    lookup(fd).map_err(|_| Error::NoTty)
}

/// `SYNC_IOC_MERGE` on `fd`: a new sync file merging `fd` and `data.fd2`, named
/// `data.name`; `data.fence` receives its descriptor number, which the returned
/// `OwnedFd` owns.
///
/// Errors: [`Error::Invalid`] (`EINVAL`) if `flags` or `pad` is non-zero;
/// [`Error::NoEntry`] (`ENOENT`) if `fd2` is not a sync file; [`Error::NoTty`]
/// (`ENOTTY`) if `fd` itself is not a sync file (wrong file for the ioctl). Nothing is
/// created and `data` is unchanged on error.
pub fn ioctl_merge(fd: BorrowedFd<'_>, data: &mut SyncMergeData) -> Result<OwnedFd> {
    let (f1, _) = this_file(fd)?;
    if data.flags != 0 || data.pad != 0 {
        return Err(Error::Invalid("sync_merge_data flags/pad must be 0"));
    }
    if data.fd2 < 0 {
        return Err(Error::NoEntry("fd2 is not a sync file"));
    }
    // SAFETY: `fd2` is a descriptor number supplied by the caller, borrowed only for the
    // duration of this call, as the kernel's `sync_file_fdget` does; it is never closed
    // here. If it is not open, the socket queries below fail with EBADF and we report
    // ENOENT.
    let fd2 = unsafe { BorrowedFd::borrow_raw(data.fd2) };
    let (f2, _) = lookup(fd2).map_err(|_| Error::NoEntry("fd2 is not a sync file"))?;
    let name = c_name(&data.name);
    let merged = merge(&[f1, f2])?;
    let sf = SyncFile::with_name(merged, &name)?;
    let out = sf.into_fd();
    data.fence = out.as_raw_fd();
    Ok(out)
}

/// `SYNC_IOC_FILE_INFO` on `fd`. With `info.num_fences == 0`, fills name, status and the
/// leaf count only; otherwise `info.num_fences` must be at least the leaf count and
/// `out` must hold that many entries, which are filled.
///
/// Errors: [`Error::Invalid`] (`EINVAL`) if `flags` or `pad` is non-zero or
/// `0 < num_fences < count`; [`Error::Fault`] (`EFAULT`) if `out` is shorter than the
/// leaf count (the kernel's failed copy to user); [`Error::NoTty`] if `fd` is not a sync
/// file. `info` and `out` are unchanged on error.
pub fn ioctl_file_info(
    fd: BorrowedFd<'_>,
    info: &mut SyncFileInfo,
    out: &mut [SyncFenceInfo],
) -> Result<()> {
    let (fence, name) = this_file(fd)?;
    if info.flags != 0 || info.pad != 0 {
        return Err(Error::Invalid("sync_file_info flags/pad must be 0"));
    }
    let fi = file_info(&fence, &name);
    let count = fi.fences.len() as u32;
    if info.num_fences == 0 {
        copy_name(&mut info.name, &fi.name);
        info.status = fence.get_status();
        info.num_fences = count;
        return Ok(());
    }
    if info.num_fences < count {
        return Err(Error::Invalid("num_fences smaller than the leaf count"));
    }
    if out.len() < fi.fences.len() {
        return Err(Error::Fault("fence info array too short"));
    }
    for (o, l) in out.iter_mut().zip(fi.fences.iter()) {
        *o = SyncFenceInfo::default();
        copy_name(&mut o.obj_name, &l.timeline);
        copy_name(&mut o.driver_name, &l.driver);
        o.status = l.status;
        o.timestamp_ns = l.timestamp_ns;
    }
    copy_name(&mut info.name, &fi.name);
    info.status = fi.status;
    info.num_fences = count;
    Ok(())
}

/// `SYNC_IOC_SET_DEADLINE` on `fd`.
///
/// Errors: [`Error::Invalid`] (`EINVAL`) if `pad` is non-zero; [`Error::NoTty`] if `fd`
/// is not a sync file.
pub fn ioctl_set_deadline(fd: BorrowedFd<'_>, arg: &SyncSetDeadline) -> Result<()> {
    let (fence, _) = this_file(fd)?;
    if arg.pad != 0 {
        return Err(Error::Invalid("sync_set_deadline pad must be 0"));
    }
    fence.set_deadline(arg.deadline_ns);
    Ok(())
}

/// The status a descriptor reports (0 pending, 1 ok, negative errno), from the record
/// alone; a dead signaller reads as `-EPIPE`.
pub fn fd_status(fd: BorrowedFd<'_>) -> Result<Status> {
    Ok(match peek(fd)? {
        FdState::Pending => Status::Pending,
        FdState::Signaled { status, .. } => Status::from_raw(status),
        FdState::SignallerGone => Status::Error(-Errno::PIPE.raw_os_error()),
    })
}

// ---- passing descriptors ----------------------------------------------------------------

/// Send `fd` over the Unix socket `sock` with `SCM_RIGHTS` (one byte of payload).
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage};
    let fds = [fd];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !anc.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(Error::NoMem);
    }
    let iov = [std::io::IoSlice::new(b"F")];
    rustix::net::sendmsg(sock, &iov, &mut anc, SendFlags::NOSIGNAL)?;
    Ok(())
}

/// Receive one descriptor sent by [`send_fd`] (blocking).
///
/// Errors: [`Error::NoEntry`] if the message carried no descriptor (or the peer closed).
pub fn recv_fd(sock: BorrowedFd<'_>) -> Result<OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    rustix::net::recvmsg(sock, &mut iov, &mut anc, RecvFlags::CMSG_CLOEXEC)?;
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = m {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err(Error::NoEntry("no descriptor received"))
}

// ---- sw_sync as descriptors -----------------------------------------------------------

/// `SW_SYNC_IOC_CREATE_FENCE`: a point of `tl` at `value`, exported as a sync file.
pub fn sw_sync_create_fence(tl: &crate::fence::timeline::Timeline, value: u32) -> Result<SyncFile> {
    SyncFile::new(tl.create_fence(value))
}

// ---- bench workloads ------------------------------------------------------------------

struct BenchOps;
impl FenceOps for BenchOps {
    fn driver_name(&self) -> &str {
        "bench"
    }
    fn timeline_name(&self) -> &str {
        "bench"
    }
}

#[doc(hidden)]
/// Bench: export a fence, signal it, poll the descriptor until readable, import it.
pub fn bench_export_poll_import(iters: u64) -> Duration {
    let ctx = Context::new();
    let start = std::time::Instant::now();
    for i in 0..iters {
        let f = Fence::new(BenchOps, ctx, i);
        let sf = SyncFile::new(f.clone()).expect("export");
        let _ = f.signal();
        let ok = poll_readable(sf.as_fd(), None).expect("poll");
        debug_assert!(ok);
        let back = get_fence(sf.as_fd()).expect("import");
        std::hint::black_box(&back);
    }
    start.elapsed()
}

#[doc(hidden)]
/// Bench baseline: an eventfd created, written and polled.
pub fn bench_eventfd_baseline(iters: u64) -> Duration {
    use rustix::event::{eventfd, EventfdFlags};
    let start = std::time::Instant::now();
    for _ in 0..iters {
        let e = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).expect("eventfd");
        let _ = rustix::io::write(&e, &1u64.to_ne_bytes());
        let ok = poll_readable(e.as_fd(), None).expect("poll");
        std::hint::black_box(ok);
    }
    start.elapsed()
}

pub mod selftest;

#[cfg(test)]
mod tests;
