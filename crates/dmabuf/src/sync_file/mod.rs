//! Sync files: fences as file descriptors that poll, cross processes, and survive their
//! signaller's death as an error (the kernel's `sync_file`).
//!
//! # The descriptor
//!
//! A sync file is an `eventfd` (close-on-exec, non-blocking) whose counter holds the
//! fence's *signal record*: 0 while the fence is pending; when it signals, a fence
//! callback registered at export (run at once if the fence already signalled) adds the
//! record to the counter in one `write`. Readers never `read(2)` the descriptor, which
//! would consume the record: they *peek* it in `/proc/self/fdinfo/<fd>` (the kernel's
//! `eventfd-count:` line), so it stays for every reader and every duplicate. Hence:
//!
//! - the descriptor polls readable (`POLLIN`) exactly once the fence has signalled
//!   (ok or error), and a wait is a plain `poll` on it;
//! - it crosses processes with `SCM_RIGHTS` ([`send_fd`], [`recv_fd`]) like any fd;
//! - with the liveness channel below, readers in another process see an error
//!   (`-EPIPE`), not a hang, if the signalling process dies first.
//!
//! ## The signal record
//!
//! One `u64`, `v = 1 + (code | (ts mod 2^51) << 12)`:
//!
//! | bits of `v - 1` | meaning |
//! |-----------------|---------|
//! | 0..12  | `code`: 0 = signalled ok, else the errno magnitude, 1..=4095 (`MAX_ERRNO`) |
//! | 12..63 | the low 51 bits of the signal timestamp (ns, `CLOCK_MONOTONIC`) |
//!
//! So `v` is in `1..=2^63`: 0 means pending, and a counter above `2^63` is not a record
//! (the descriptor is rejected as "not a sync file"). `v` stays below the eventfd maximum
//! `2^64 - 2`, so the single `write` always fits a fresh counter.
//!
//! The timestamp is rebuilt against the reader's own clock reading `now`, on the same
//! system-wide `CLOCK_MONOTONIC` in every process: the latest time not after `now` with
//! those low bits, `ts = now - ((now - ts_low) mod 2^51)`. This is exact when the signal
//! happened less than `2^51` ns (about 26 days) before the read; an older timestamp (or one
//! in the reader's future, which only an explicit
//! [`signal_timestamp`](Fence::signal_timestamp) can produce) reads off by a multiple of
//! `2^51` ns.
//!
//! # Signaller death: the liveness channel
//!
//! An eventfd has no other end that closes when the signalling process dies. So each
//! process keeps one *liveness pipe*, created the first time it is needed (and again in a
//! child after `fork`, which then closes its inherited copy of the parent's write end). The
//! process holds the write end until it exits. [`send_fd`] of a sync file this process
//! knows sends a pipe read end as a second `SCM_RIGHTS` descriptor: this process's own for
//! its exports, the origin's for a proxy of another process's sync file (forwarding).
//! [`recv_fd`] keeps that second descriptor, keyed by the received eventfd's id, and a
//! later import of the descriptor ([`SyncFile::from_fd`], [`get_fence`]) gives a proxy
//! fence whose watcher also watches the pipe: a hang-up while the counter is still 0 means
//! the signaller is gone, and the proxy signals with `-EPIPE`. (A record is written
//! before its writer can exit, so a hang-up seen after the record never hides it.)
//!
//! # Identity
//!
//! Importing our own export gives back the very same fence and name, as the kernel's
//! `sync_file_get_fence` does, with its leaves for [`SyncFile::info`]:
//!
//! - **Fast path.** A registry keyed by descriptor *number* holds the descriptors owned
//!   by live [`SyncFile`]s: inserted at export and [`from_fd`](SyncFile::from_fd), removed
//!   by `Drop` and [`into_fd`](SyncFile::into_fd) before the descriptor can be closed. By
//!   Rust's I/O safety a number cannot be reused while its `OwnedFd` lives, so a hit is
//!   the sync file itself. This is the only lookup of the export → signal → poll →
//!   import round trip; it reads no `/proc` file.
//! - **Slow path**, for any other descriptor: read its fdinfo (not an eventfd, or a
//!   counter that is not a record: `EINVAL`) and its `eventfd-id` (unique among live
//!   eventfds of the whole system). A second map, keyed by that id, holds the sync files
//!   that left their [`SyncFile`] through [`into_fd`](SyncFile::into_fd) and the proxies
//!   below; each entry keeps a duplicate of the eventfd, so its id cannot be reused while
//!   the entry exists, and the fence (the kernel's file reference). Duplicates of a live
//!   [`SyncFile`]'s descriptor are found by the fast map's entries, whose ids are read
//!   once, lazily, on the first slow lookup that needs them.
//! - Anything else is another process's sync file: the first import makes a proxy fence
//!   (driver `sync_file`, timeline `imported`) that a background watcher thread signals,
//!   with the record's status and timestamp, when the descriptor becomes readable (or
//!   with `-EPIPE`, see above). The proxy goes into the id map, so every later import of
//!   that eventfd (the same number, a duplicate, a new copy received from its origin)
//!   gives the same proxy, as the kernel gives the file's one fence. A proxy holds one
//!   duplicate of the eventfd, which is also the id map's pin and what the watcher
//!   registers; a watch adds a duplicate of the liveness descriptor, if any.
//!
//! # Limits
//!
//! - Peeks, imports of descriptors not owned by a live [`SyncFile`], `into_fd`, `send_fd`
//!   of such descriptors and `recv_fd` of a liveness descriptor read
//!   `/proc/self/fdinfo`: they need procfs, and cost a few µs each. Without procfs such
//!   imports fail with `EINVAL` and `peek` with the error of the open.
//! - An fdinfo that cannot be read *now* (out of descriptors to open it, out of memory)
//!   is never taken as a verdict on the sync file: an import, peek, ioctl or `send_fd`
//!   returns that error; a proxy's `is_signaled` says "not yet"; the watcher keeps a
//!   proxy whose descriptor is readable but whose record cannot be read pending and
//!   tries again, for about 5 s in all, and only then signals it with `-EIO` (a wait
//!   that never ends would hide the failure; a made-up status would be worse). The
//!   kernel has no such case: its sync file reads its fence directly. A watcher that
//!   cannot be started (no epoll instance, no thread) signals the proxy being waited on
//!   with `-EMFILE` or `-ENOMEM`, and the next wait tries again. The id-map sweep keeps
//!   an entry whose fdinfo it cannot read.
//! - Entries of the id map (and of the received liveness descriptors) live while the
//!   descriptor *number* they were registered under (the one `into_fd` or `recv_fd`
//!   returned, or the one imported for a proxy; once that number is closed, the one of
//!   a later import that found the entry) still refers to their eventfd; entries whose number was closed are swept (amortised, each time the
//!   map has doubled since the last sweep), so they, their fences and their duplicates
//!   outlive the descriptor by a bounded amount. If the user closed that number but kept
//!   another duplicate, the entry is swept all the same: importing that duplicate later
//!   gives a new proxy (same status and timestamp when it signals, not the same
//!   [`Fence`]).
//! - A proxy being watched is held by the watcher until its record arrives (or its
//!   liveness descriptor hangs up), even if nobody else holds it any more: one fence and
//!   one or two descriptors per foreign sync file that was waited on and never signalled.
//!   A proxy keeps the liveness descriptor it was made with: one received later for the
//!   same eventfd does not reach it.
//! - Anybody holding the descriptor can `read(2)` the record away or `write(2)` a false
//!   one; the kernel's sync file has no such hole. A descriptor whose counter was consumed
//!   reads as pending again.
//! - Signaller death is seen only for descriptors that came with their origin's liveness
//!   descriptor through [`send_fd`] / [`recv_fd`]; one that arrived another way (inherited
//!   over `exec`, another library's `SCM_RIGHTS`) stays pending if its signaller dies.
//! - A child made by `fork` without `exec` shares its parent's eventfds but not its
//!   fences: its copies of the parent's exports never write a record (the export's
//!   callback compares the process id with the exporter's, read from a page the kernel
//!   wipes in a forked child, so no syscall), so neither its signals nor its releases
//!   (`-EDEADLK`) reach the parent's readers. It gets a watcher of its own on its first
//!   wait (its copy of the parent's shares the parent's epoll set and has no thread),
//!   which takes over the watches the child copied unless the parent's watcher was busy
//!   at the fork; those then signal only when a peek sees their record. It keeps a copy
//!   of the parent's liveness write end until it first uses the liveness channel; until
//!   then the parent's death is seen only once that child is gone too.
//! - The timestamp window above (26 days).
//! - Eventfd ids are allocated by the kernel with an IDA, so they are reused once an
//!   eventfd is freed; every id-keyed entry therefore pins its eventfd. On a kernel that
//!   prints no `eventfd-id:` line, only the fast path gives identity (after `into_fd`,
//!   imports give proxies, and each import of a foreign descriptor makes a new one: there
//!   is nothing to cache it by) and received liveness descriptors are dropped.
//!
//! # Known differences from the kernel
//!
//! Besides the limits above, a program written against the kernel's sync file can tell
//! these apart:
//!
//! - **Export enables signalling at once.** [`SyncFile::new`] registers the callback
//!   that writes the record, which enables signalling on the fence (its
//!   `enable_signaling` runs, a driver may start work, a timeline arms itself). The
//!   kernel's `sync_file_create` does not: it enables signalling only at the first
//!   `poll` of the file.
//! - **Any eventfd whose counter is a record is a sync file.** An eventfd made by anyone,
//!   holding 0 or a valid record (`1..=2^63`), imports as a sync file (a proxy); the
//!   kernel accepts only files made by `sync_file_create`. Nothing marks our
//!   descriptors either: they are anonymous `[eventfd]` inodes, not `sync_file` ones.
//! - **The descriptor also polls writable.** An eventfd reports `POLLOUT` whenever its
//!   counter can take a write, which for a sync file is always; the kernel's sync file
//!   reports `EPOLLIN` once signalled and nothing else. Poll for `POLLIN` only (as
//!   [`poll_readable`] does): a caller asking for `POLLOUT`, or for any event, sees the
//!   descriptor ready at once.
//! - **A descriptor passed without [`send_fd`] carries no liveness.** If its signalling
//!   process dies without signalling, readers elsewhere wait forever; in the kernel the
//!   fence belongs to a driver, not to the process, and does not depend on it staying
//!   alive (sw_sync, for one, signals its points with an error when the timeline's last
//!   file goes).
//!
//! # ioctl parity
//!
//! [`ioctl_merge`], [`ioctl_file_info`] and [`ioctl_set_deadline`] take the kernel's
//! argument structs ([`SyncMergeData`], [`SyncFileInfo`], [`SyncFenceInfo`],
//! [`SyncSetDeadline`]) and validate them with the kernel's errnos.

use crate::error::{Error, Result};
use crate::fence::unwrap::{merge, unwrap};
use crate::fence::{ktime_now, CallbackId, Context, Fence, FenceOps, Status, MAX_ERRNO};
use parking_lot::Mutex;
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

// ---- the signal record ----------------------------------------------------------------

/// Bits of the status code in a record.
const CODE_BITS: u32 = 12;
/// Mask of the status code.
const CODE_MASK: u64 = (1 << CODE_BITS) - 1;
/// The timestamp is kept modulo this (2^51 ns, about 26 days).
const TS_MOD: u64 = 1 << 51;
/// The largest counter value that is a record.
const RECORD_MAX: u64 = 1 << 63;

/// The counter value recording a signal with `status` (1 or any non-negative value: ok;
/// negative: an errno, which must be in `[-4095, -1]`, else it is recorded as `-EINVAL`)
/// at `ts_ns`.
fn encode_record(status: i32, ts_ns: u64) -> u64 {
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
enum Record {
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
fn decode_record(v: u64, now: u64) -> Record {
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
fn write_record(efd: &OwnedFd, f: &Fence) {
    let ts = f.timestamp().unwrap_or_else(ktime_now);
    let v = encode_record(f.error(), ts);
    // A fresh counter always has room; a failure would mean someone else wrote to it.
    let _ = rustix::io::write(efd, &v.to_ne_bytes());
}

// ---- fdinfo ---------------------------------------------------------------------------

/// What `/proc/self/fdinfo` says of an eventfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EventfdInfo {
    /// The counter (`eventfd-count:`, hex).
    count: u64,
    /// The system-wide id (`eventfd-id:`, decimal; older kernels do not print it).
    id: Option<u64>,
}

/// Parse fdinfo text; `None` if it is not an eventfd's (no valid `eventfd-count:` line).
fn parse_fdinfo(text: &[u8]) -> Option<EventfdInfo> {
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
/// Errors: [`Error::Invalid`] if it is not an eventfd; [`Error::BadFd`] if there is no
/// such descriptor (or no procfs); other errors of the open and read as [`Error::Os`].
fn fdinfo_of(n: RawFd) -> Result<EventfdInfo> {
    use rustix::fs::{Mode, OFlags};
    let path = format!("/proc/self/fdinfo/{n}");
    let file = match rustix::fs::open(
        path.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
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
    let info = parse_fdinfo(&buf[..len]).ok_or(Error::Invalid("not an eventfd"))?;
    #[cfg(test)]
    if hooks::fdinfo_fails(info.id) {
        return Err(Error::Os(Errno::MFILE));
    }
    Ok(info)
}

/// [`fdinfo_of`] an open descriptor.
fn eventfd_info(fd: BorrowedFd<'_>) -> Result<EventfdInfo> {
    fdinfo_of(fd.as_raw_fd())
}

/// A close-on-exec duplicate.
fn dup(fd: impl AsFd) -> Result<OwnedFd> {
    #[cfg(test)]
    if hooks::dup_fails() {
        return Err(Error::Os(Errno::MFILE));
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 0)?)
}

/// Fault injection for tests, per thread (tests run beside each other).
#[cfg(test)]
pub(crate) mod hooks {
    use std::cell::Cell;

    thread_local! {
        /// `Some(n)`: the `n + 1`-th `dup` from now on this thread fails with `EMFILE`.
        static FAIL_DUP: Cell<Option<u32>> = const { Cell::new(None) };
    }

    thread_local! {
        /// A pid that [`super::pid::current`] reports on this thread instead of the real
        /// one: this thread acts as a child made by `fork` would.
        static FAKE_PID: Cell<Option<rustix::process::Pid>> = const { Cell::new(None) };
    }

    /// Make this thread act as if it were in child number `n` made by `fork` (`Some`), or
    /// in this process again (`None`).
    pub(crate) fn act_as_forked_child(n: Option<u16>) {
        // No real pid is this large (`pid_max` is at most 2^22).
        let pid = n.and_then(|n| rustix::process::Pid::from_raw(i32::MAX - i32::from(n)));
        FAKE_PID.with(|c| c.set(pid));
    }

    thread_local! {
        /// Whether the next start of a watcher on this thread fails.
        static FAIL_WATCHER: Cell<bool> = const { Cell::new(false) };
    }

    /// Fail the next start of a watcher on this thread (once), as a failed
    /// `epoll_create` or thread spawn would.
    pub(crate) fn fail_next_watcher_start() {
        FAIL_WATCHER.with(|c| c.set(true));
    }

    pub(super) fn watcher_start_fails() -> bool {
        FAIL_WATCHER.with(|c| c.replace(false))
    }

    /// Eventfd ids whose fdinfo reads fail with `EMFILE`, how many more times, and on
    /// which thread (`None`: any, for the watcher's reads). Keyed by ids, unique among
    /// live eventfds; but another test's sweep may read a stale number that is now this
    /// eventfd's, hence the thread.
    #[allow(clippy::type_complexity)]
    static FAIL_FDINFO: parking_lot::Mutex<Vec<(u64, u32, Option<std::thread::ThreadId>)>> =
        parking_lot::const_mutex(Vec::new());

    /// Fail the next `n` fdinfo reads of the eventfd with id `id` (0: stop failing), on
    /// this thread only or on any.
    pub(crate) fn fail_fdinfo_reads(id: u64, n: u32, this_thread_only: bool) {
        let mut v = FAIL_FDINFO.lock();
        v.retain(|e| e.0 != id);
        if n > 0 {
            v.push((id, n, this_thread_only.then(|| std::thread::current().id())));
        }
    }

    /// How many failures are still to come for `id`.
    pub(crate) fn fdinfo_failures_left(id: u64) -> u32 {
        FAIL_FDINFO
            .lock()
            .iter()
            .find(|e| e.0 == id)
            .map_or(0, |e| e.1)
    }

    pub(super) fn fdinfo_fails(id: Option<u64>) -> bool {
        let Some(id) = id else {
            return false;
        };
        let me = std::thread::current().id();
        let mut v = FAIL_FDINFO.lock();
        let Some(i) = v
            .iter()
            .position(|e| e.0 == id && e.2.is_none_or(|t| t == me))
        else {
            return false;
        };
        v[i].1 -= 1;
        if v[i].1 == 0 {
            v.swap_remove(i);
        }
        true
    }

    pub(super) fn fake_pid() -> Option<rustix::process::Pid> {
        FAKE_PID.with(Cell::get)
    }

    /// Let `n` more duplicates succeed on this thread, then fail the next one (once).
    pub(crate) fn fail_dup_after(n: u32) {
        FAIL_DUP.with(|c| c.set(Some(n)));
    }

    /// Whether a failure is still to come.
    pub(crate) fn dup_armed() -> bool {
        FAIL_DUP.with(|c| c.get().is_some())
    }

    /// No failure to come.
    pub(crate) fn disarm() {
        FAIL_DUP.with(|c| c.set(None));
    }

    pub(super) fn dup_fails() -> bool {
        FAIL_DUP.with(|c| match c.get() {
            Some(0) => {
                c.set(None);
                true
            }
            Some(n) => {
                c.set(Some(n - 1));
                false
            }
            None => false,
        })
    }
}

/// Whether `fd` polls readable right now.
fn readable_now(fd: BorrowedFd<'_>) -> bool {
    poll_readable(fd, Some(Duration::ZERO)).unwrap_or(false)
}

/// Whether the pipe read end `fd` reports hang-up (every write end closed) right now.
fn hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut p = [PollFd::new(&fd, PollFlags::empty())];
    loop {
        match rustix::event::poll(&mut p, Some(&rustix::time::Timespec::default())) {
            Ok(_) => return p[0].revents().intersects(PollFlags::HUP | PollFlags::ERR),
            Err(Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}

// ---- this process ----------------------------------------------------------------------

/// This process's id, without a syscall each time: the export's fence callback asks for
/// it on every signal.
mod pid {
    use rustix::process::Pid;
    use std::sync::atomic::{AtomicI32, Ordering::Relaxed};
    use std::sync::OnceLock;

    /// A word in a page that the kernel zeroes in a child made by `fork`
    /// (`MADV_WIPEONFORK`, Linux 4.14): this process's pid once read, 0 in a new child.
    /// `None` if the page could not be had (an older kernel): then each call asks the
    /// kernel.
    fn cache() -> Option<&'static AtomicI32> {
        static CACHE: OnceLock<Option<&'static AtomicI32>> = OnceLock::new();
        *CACHE.get_or_init(|| {
            use rustix::mm::{madvise, mmap_anonymous, munmap, Advice, MapFlags, ProtFlags};
            let len = rustix::param::page_size();
            let prot = ProtFlags::READ | ProtFlags::WRITE;
            // SAFETY: a new private anonymous mapping at an address the kernel chooses:
            // it replaces no existing mapping, so no memory anybody uses changes.
            let page =
                unsafe { mmap_anonymous(std::ptr::null_mut(), len, prot, MapFlags::PRIVATE) }
                    .ok()?;
            // SAFETY: `page..page + len` is exactly the mapping just made, which nothing
            // else refers to yet; the advice changes only what a fork does with it.
            if unsafe { madvise(page, len, Advice::LinuxWipeOnFork) }.is_err() {
                // SAFETY: the same mapping, still referred to by nothing: unmapping it
                // invalidates no reference.
                let _ = unsafe { munmap(page, len) };
                return None;
            }
            // SAFETY: the mapping is never unmapped, so the reference is valid for
            // `'static`; it is page-aligned (more than `AtomicI32` needs), readable and
            // writable, and zero-filled (a valid `AtomicI32`, as it is again after a fork
            // wipes it); it is accessed only through this shared atomic reference.
            Some(unsafe { &*page.cast::<AtomicI32>() })
        })
    }

    /// This process's id (`getpid`). Costs a load once known; a child made by `fork`
    /// asks the kernel once. A `vfork` child shares the parent's memory, so it must not
    /// call this (it may only `exec` or `_exit` anyway): if the parent had not cached its
    /// id yet, the child would cache its own in the parent's page.
    pub(super) fn current() -> Pid {
        #[cfg(test)]
        if let Some(p) = super::hooks::fake_pid() {
            return p;
        }
        let Some(c) = cache() else {
            return rustix::process::getpid();
        };
        match Pid::from_raw(c.load(Relaxed)) {
            Some(p) => p,
            None => {
                let p = rustix::process::getpid();
                c.store(p.as_raw_pid(), Relaxed);
                p
            }
        }
    }
}

// ---- the liveness channel ---------------------------------------------------------------

mod liveness {
    use super::*;

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
    /// Errors: OS errors creating the pipe (`EMFILE`…).
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
}

// ---- what this process knows ------------------------------------------------------------

/// Who writes a sync file's record.
enum Origin {
    /// This process (its fence callback).
    Local,
    /// Another process; with its liveness read end if that came along.
    Remote(Option<Arc<OwnedFd>>),
}

/// One sync file as this process knows it.
struct Known {
    fence: Fence,
    name: String,
    origin: Origin,
}

/// An entry of the fast map: a descriptor owned by a live [`SyncFile`].
struct ByFd {
    known: Arc<Known>,
    /// The eventfd id, once read (`None`: not read yet; `Some(None)`: the kernel gives none).
    id: Option<Option<u64>>,
}

/// An entry of an id-keyed map: valid while descriptor number `fd_no` refers to the
/// eventfd.
struct Pinned<T> {
    value: T,
    /// A duplicate of the eventfd, never read: it keeps the eventfd, and so its id,
    /// alive while the entry exists, so that the id cannot name another eventfd.
    _pin: Arc<OwnedFd>,
    fd_no: RawFd,
}

/// A hasher for descriptor numbers and eventfd ids: small integers the kernel hands out,
/// which nobody picks to collide, so one multiply by an odd constant does instead of
/// SipHash's rounds on the export → import path (the low bits, the bucket, stay distinct
/// for nearby numbers; the high bits, the table's tag, are mixed).
#[derive(Default, Clone, Copy)]
struct IntHasher(u64);

impl std::hash::Hasher for IntHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_i32(&mut self, n: i32) {
        self.write_u64(u64::from(n as u32));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type IntMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IntHasher>>;

/// Whether descriptor number `n` no longer refers to the eventfd with id `id`: it is
/// closed, or names another file now. An fdinfo that cannot be read (`EMFILE`…) proves
/// neither: not stale.
fn is_stale(id: u64, n: RawFd) -> bool {
    match fdinfo_of(n) {
        Ok(i) => i.id != Some(id),
        Err(Error::BadFd | Error::Invalid(_)) => true,
        Err(_) => false,
    }
}

/// Smallest size at which an id-keyed map is swept.
const SWEEP_MIN: usize = 64;

/// A map keyed by eventfd id, swept each time it has doubled.
struct SweptMap<T> {
    map: IntMap<u64, Pinned<T>>,
    sweep_at: usize,
    /// Sweeps so far.
    sweeps: u64,
}

impl<T> SweptMap<T> {
    fn new() -> Self {
        SweptMap {
            map: IntMap::default(),
            sweep_at: SWEEP_MIN,
            sweeps: 0,
        }
    }

    /// Insert (replacing an entry of the same id); sweep if the map has grown enough.
    /// Returns the entries taken out, for the caller to drop after releasing the
    /// registry lock (dropping closes descriptors and may release fences).
    #[must_use]
    fn insert(&mut self, id: u64, p: Pinned<T>) -> Vec<Pinned<T>> {
        let mut out: Vec<Pinned<T>> = self.map.insert(id, p).into_iter().collect();
        if self.map.len() >= self.sweep_at {
            let stale: Vec<u64> = self
                .map
                .iter()
                .filter(|(id, p)| is_stale(**id, p.fd_no))
                .map(|(id, _)| *id)
                .collect();
            out.extend(stale.iter().filter_map(|id| self.map.remove(id)));
            self.sweeps += 1;
            self.sweep_at = (self.map.len() * 2).max(SWEEP_MIN);
        }
        out
    }
}

/// Every sync file this process knows, and the liveness descriptors it received.
struct Registry {
    /// Descriptors owned by live [`SyncFile`]s, by number (the fast path).
    by_fd: IntMap<RawFd, ByFd>,
    /// Sync files that left their [`SyncFile`] through `into_fd`, and proxies of other
    /// processes' sync files, by eventfd id.
    by_id: SweptMap<Arc<Known>>,
    /// Liveness read ends received beside a descriptor ([`recv_fd`]), by eventfd id.
    received: SweptMap<Arc<OwnedFd>>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| {
        Mutex::new(Registry {
            by_fd: IntMap::default(),
            by_id: SweptMap::new(),
            received: SweptMap::new(),
        })
    })
}

impl Registry {
    /// The sync file whose eventfd has id `id`: from the id map, else from the fast map,
    /// reading the ids of its entries that were never read. Each fast-map entry's number
    /// is open while the entry exists (it is removed before its descriptor can close).
    ///
    /// `seen_at`: a descriptor number that refers to that eventfd right now. If the
    /// id-map entry found was registered under a number that has been closed since (or
    /// names another file now), its sweep check moves to this one, which is open.
    fn known_by_id(&mut self, id: u64, seen_at: Option<RawFd>) -> Option<Arc<Known>> {
        if let Some(p) = self.by_id.map.get_mut(&id) {
            if let Some(n) = seen_at.filter(|&n| n != p.fd_no) {
                if is_stale(id, p.fd_no) {
                    p.fd_no = n;
                }
            }
            return Some(p.value.clone());
        }
        for (n, e) in self.by_fd.iter_mut() {
            let eid = match e.id {
                Some(eid) => eid,
                None => match fdinfo_of(*n) {
                    Ok(i) => *e.id.insert(i.id),
                    // Not remembered: read again next time.
                    Err(_) => continue,
                },
            };
            if eid == Some(id) {
                return Some(e.known.clone());
            }
        }
        None
    }
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

// ---- the sync file ----------------------------------------------------------------------

/// A fence exposed as a file descriptor (an eventfd, see the [module docs](self)).
///
/// Invariant: while it lives, the registry's fast map has an entry for its descriptor
/// number; `fd` is `None` only inside [`into_fd`](SyncFile::into_fd) and `drop`.
pub struct SyncFile {
    /// The eventfd, shared with the export's fence callback until that has run.
    fd: Option<Arc<OwnedFd>>,
    known: Arc<Known>,
}

impl std::fmt::Debug for SyncFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncFile")
            .field("fd", &self.fd.as_ref().map(|fd| fd.as_raw_fd()))
            .field("name", &self.known.name)
            .field("fence", &self.known.fence)
            .finish()
    }
}

/// What a reader learns from the descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdState {
    /// No record yet, and as far as this process can tell the signaller is alive.
    Pending,
    /// Signalled with this status (1 ok, negative errno) at this time.
    Signaled {
        /// 1, or a negative errno.
        status: i32,
        /// Monotonic ns, rebuilt from the record's low 51 bits (see the module docs).
        timestamp_ns: u64,
    },
    /// No record, and the signalling process is gone: the liveness descriptor that came
    /// with the descriptor (see [`recv_fd`]) has hung up.
    SignallerGone,
}

impl SyncFile {
    /// Export `fence` as a sync file (`sync_file_create`), named
    /// `<driver>-<timeline><context>-<seqno>`. The descriptor is a close-on-exec eventfd
    /// that polls readable once the fence has signalled.
    ///
    /// Errors: OS errors creating the eventfd (`EMFILE`…); nothing is registered then.
    pub fn new(fence: Fence) -> Result<SyncFile> {
        let name = default_name(&fence);
        Self::create(fence, name).map(|(sf, _)| sf)
    }

    /// Export `fence` under `name` (truncated to 31 bytes, as the kernel's 32-byte field).
    ///
    /// Errors: as [`new`](SyncFile::new).
    pub fn with_name(fence: Fence, name: &str) -> Result<SyncFile> {
        Self::create(fence, name[..name_len(name)].to_owned()).map(|(sf, _)| sf)
    }

    /// [`with_name`](SyncFile::with_name), also returning the export's fence callback
    /// (`None` if the fence had already signalled), for a caller that must undo the
    /// export of a sync file nobody else has seen. `name` is cut to 31 bytes in place,
    /// without a copy.
    fn create(fence: Fence, mut name: String) -> Result<(SyncFile, Option<CallbackId>)> {
        use rustix::event::{eventfd, EventfdFlags};
        let fd = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?);
        name.truncate(name_len(&name));
        let known = Arc::new(Known {
            fence: fence.clone(),
            name,
            origin: Origin::Local,
        });
        let old = registry().lock().by_fd.insert(
            fd.as_raw_fd(),
            ByFd {
                known: known.clone(),
                id: None,
            },
        );
        drop(old);
        // The callback keeps the eventfd open until it has written the record, even if
        // this object is dropped or gives its descriptor away first. A child made by
        // `fork` without `exec` shares the eventfd but not the fence: what happens to its
        // copy of the fence (say it drops the last copy unsignalled, -EDEADLK) is not a
        // signal of this one, and must not reach the parent's readers.
        let w = fd.clone();
        let exporter = pid::current();
        let cb = match fence.add_callback(move |f: &Fence| {
            if pid::current() == exporter {
                write_record(&w, f);
            }
        }) {
            Ok(id) => Some(id),
            Err((_, cb)) => {
                drop(cb);
                write_record(&fd, &fence);
                None
            }
        };
        Ok((
            SyncFile {
                fd: Some(fd),
                known,
            },
            cb,
        ))
    }

    /// Import a descriptor (`sync_file_fdget` + `sync_file_get_fence`), taking ownership.
    /// Our own export gives back the same fence and name; another process's a proxy fence
    /// (see the module docs).
    ///
    /// Errors: [`Error::Invalid`] (`EINVAL`) if `fd` is not a sync file (not an eventfd, or
    /// its counter is not a record, or no procfs to tell); OS errors reading its fdinfo
    /// (`EMFILE`, `ENFILE`, `ENOMEM`: nothing is known about the descriptor then) or
    /// duplicating it for a proxy (`EMFILE`). The descriptor is closed on error, as it
    /// was handed over.
    pub fn from_fd(fd: OwnedFd) -> Result<SyncFile> {
        let (known, id) = lookup(fd.as_fd())?;
        let old = registry().lock().by_fd.insert(
            fd.as_raw_fd(),
            ByFd {
                known: known.clone(),
                id,
            },
        );
        drop(old);
        Ok(SyncFile {
            fd: Some(Arc::new(fd)),
            known,
        })
    }

    /// The fence.
    pub fn fence(&self) -> &Fence {
        &self.known.fence
    }

    /// The name (merge-supplied or default).
    pub fn name(&self) -> &str {
        &self.known.name
    }

    fn owned_fd(&self) -> &OwnedFd {
        match &self.fd {
            Some(fd) => fd,
            None => unreachable!("the descriptor is only taken by into_fd and drop"),
        }
    }

    /// The descriptor.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.owned_fd().as_fd()
    }

    /// Give up the object, keep the descriptor: the caller owns it. Importing it (or a
    /// duplicate) later in this process still gives the same fence, through the id map
    /// (see the module docs), which keeps the fence referenced while the returned
    /// descriptor number refers to the eventfd.
    ///
    /// Costs a `dup` and an fdinfo read. If the fence is still pending, the returned
    /// descriptor is a duplicate (the fence callback keeps the original until it writes).
    ///
    /// # Panics
    ///
    /// Where [`try_into_fd`](SyncFile::try_into_fd) fails: the fence is still pending and
    /// the process is out of descriptors (`EMFILE`), so that the duplicate cannot be made
    /// (there is then no descriptor to hand over that the callback would not close under
    /// the caller). Use `try_into_fd` where that can happen.
    pub fn into_fd(self) -> OwnedFd {
        match self.try_into_fd() {
            Ok(fd) => fd,
            Err(e) => panic!("SyncFile::into_fd: cannot duplicate the descriptor: {e}"),
        }
    }

    /// [`into_fd`](SyncFile::into_fd), failing instead of panicking.
    ///
    /// Errors: OS errors duplicating the descriptor while the fence is still pending
    /// (`EMFILE`, `ENFILE`, `ENOMEM`). The sync file is then dropped as it is when it goes
    /// out of scope: its descriptor closes (once the fence callback has written, if
    /// others hold duplicates), and nothing is leaked.
    pub fn try_into_fd(mut self) -> Result<OwnedFd> {
        let Some(fd) = self.fd.take() else {
            unreachable!("the descriptor is only taken by into_fd and drop")
        };
        let n = fd.as_raw_fd();
        // The descriptor to hand over first: on failure `self` is whole again, and its
        // drop removes the fast-map entry before closing (number `n` is open until then).
        let (user, pin) = match Arc::try_unwrap(fd) {
            // The callback has run (or was never registered): hand over the original.
            Ok(own) => {
                let pin = dup(&own).ok().map(Arc::new);
                (own, pin)
            }
            Err(shared) => match dup(&*shared) {
                Ok(user) => (user, Some(shared)),
                Err(e) => {
                    self.fd = Some(shared);
                    return Err(e);
                }
            },
        };
        let cached = registry().lock().by_fd.remove(&n);
        let id = cached.as_ref().and_then(|e| e.id);
        drop(cached);
        // Without a duplicate to pin the id (out of descriptors), the identity is lost:
        // a later import gives a proxy.
        if let Some(pin) = pin {
            let id = id.unwrap_or_else(|| eventfd_info(pin.as_fd()).ok().and_then(|i| i.id));
            if let Some(id) = id {
                let out = registry().lock().by_id.insert(
                    id,
                    Pinned {
                        value: self.known.clone(),
                        _pin: pin,
                        fd_no: user.as_raw_fd(),
                    },
                );
                drop(out);
            }
        }
        Ok(user)
    }

    /// Whether the descriptor polls readable now (the fence signalled, ok or error).
    pub fn poll(&self) -> bool {
        readable_now(self.as_fd())
    }

    /// Merge with `other` into a new sync file named `name` (`SYNC_IOC_MERGE`): its
    /// fence signals when both have (see [`merge`]).
    ///
    /// Errors: [`Error::NoMem`] from the merge; as [`new`](SyncFile::new).
    pub fn merge(&self, name: &str, other: &SyncFile) -> Result<SyncFile> {
        let f = merge(&[self.known.fence.clone(), other.known.fence.clone()])?;
        SyncFile::with_name(f, name)
    }

    /// Name, overall status, and per leaf: timeline, driver, status, timestamp
    /// (`SYNC_IOC_FILE_INFO`).
    pub fn info(&self) -> FileInfo {
        file_info(&self.known.fence, &self.known.name)
    }

    /// Forward a deadline to the fence (`SYNC_IOC_SET_DEADLINE`).
    pub fn set_deadline(&self, deadline_ns: u64) {
        self.known.fence.set_deadline(deadline_ns);
    }

    /// Import `fd` as if it had arrived with `liveness` as its origin's liveness
    /// descriptor (what [`recv_fd`] does with a second descriptor).
    #[cfg(test)]
    pub(crate) fn from_fd_with_liveness(fd: OwnedFd, liveness: OwnedFd) -> Result<SyncFile> {
        stash_liveness(fd.as_fd(), liveness);
        SyncFile::from_fd(fd)
    }
}

impl Drop for SyncFile {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            // Out of the fast map before the number can be closed and reused.
            let entry = registry().lock().by_fd.remove(&fd.as_raw_fd());
            drop(entry);
            drop(fd);
        }
    }
}

/// Import without taking ownership: the fence behind `fd` (`sync_file_get_fence`).
///
/// Errors: [`Error::Invalid`] (`EINVAL`) if `fd` is not a sync file (or no procfs to
/// tell); OS errors reading its fdinfo (`EMFILE`, `ENFILE`, `ENOMEM`) or duplicating it
/// for a proxy (`EMFILE`).
pub fn get_fence(fd: BorrowedFd<'_>) -> Result<Fence> {
    lookup(fd).map(|(k, _)| k.fence.clone())
}

/// The sync file behind `fd`, and its eventfd id when it was read.
fn lookup(fd: BorrowedFd<'_>) -> Result<(Arc<Known>, Option<Option<u64>>)> {
    if let Some(e) = registry().lock().by_fd.get(&fd.as_raw_fd()) {
        return Ok((e.known.clone(), e.id));
    }
    let (known, id) = lookup_slow(fd)?;
    Ok((known, Some(id)))
}

/// [`lookup`] of a descriptor not owned by a live [`SyncFile`]: by eventfd id, else a
/// new proxy.
#[cold]
fn lookup_slow(fd: BorrowedFd<'_>) -> Result<(Arc<Known>, Option<u64>)> {
    let not = || Error::Invalid("not a sync file");
    // Not an eventfd, or no procfs to tell: not a sync file. An fdinfo that cannot be
    // read now (`EMFILE`…) is the caller's error, not a verdict on the descriptor.
    let info = eventfd_info(fd).map_err(|e| match e {
        Error::Invalid(_) | Error::BadFd => not(),
        e => e,
    })?;
    let record = decode_record(info.count, ktime_now());
    if record == Record::Invalid {
        return Err(not());
    }
    let mut liveness = None;
    if let Some(id) = info.id {
        let mut r = registry().lock();
        if let Some(k) = r.known_by_id(id, Some(fd.as_raw_fd())) {
            return Ok((k, info.id));
        }
        liveness = r.received.map.get(&id).map(|p| p.value.clone());
    }
    // The proxy's own duplicate: it pins the eventfd (and so its id) for the id map,
    // and the watcher registers it with epoll.
    let pfd = Arc::new(dup(fd)?);
    let fence = Fence::new(
        Proxy {
            fd: pfd.clone(),
            liveness: liveness.clone(),
        },
        Context::new(),
        1,
    );
    if let Record::Signaled {
        status,
        timestamp_ns,
    } = record
    {
        signal_from(
            &fence,
            FdState::Signaled {
                status,
                timestamp_ns,
            },
        );
    }
    let name = default_name(&fence);
    let known = Arc::new(Known {
        fence,
        name,
        origin: Origin::Remote(liveness),
    });
    // Cached by id, so that every later import of this eventfd gives the same fence,
    // as the kernel's file gives its one fence. Another thread may have cached one
    // meanwhile: then that one is the answer, and ours goes unused.
    if let Some(id) = info.id {
        let mut r = registry().lock();
        if let Some(k) = r.known_by_id(id, Some(fd.as_raw_fd())) {
            drop(r);
            return Ok((k, info.id));
        }
        let out = r.by_id.insert(
            id,
            Pinned {
                value: known.clone(),
                _pin: pfd,
                fd_no: fd.as_raw_fd(),
            },
        );
        drop(r);
        drop(out);
    }
    Ok((known, info.id))
}

/// Who writes the record of `fd`, as far as this process knows: `Some(None)` this
/// process, `Some(Some(l))` another process whose liveness read end is `l`, `None`
/// unknown (or another process without a liveness descriptor). `id` gives the eventfd
/// id when `fd` is not owned by a live [`SyncFile`].
///
/// Errors: those of `id`.
fn writer_of(
    fd: BorrowedFd<'_>,
    id: impl FnOnce() -> Result<Option<u64>>,
) -> Result<Option<Option<Arc<OwnedFd>>>> {
    fn of(k: &Known) -> Option<Option<Arc<OwnedFd>>> {
        match &k.origin {
            Origin::Local => Some(None),
            Origin::Remote(l) => l.clone().map(Some),
        }
    }
    if let Some(e) = registry().lock().by_fd.get(&fd.as_raw_fd()) {
        return Ok(of(&e.known));
    }
    let Some(id) = id()? else {
        return Ok(None);
    };
    let mut r = registry().lock();
    let stashed = r.received.map.get(&id).map(|p| p.value.clone());
    Ok(match r.known_by_id(id, None).as_deref().map(of) {
        Some(Some(w)) => Some(w),
        Some(None) | None => stashed.map(Some),
    })
}

/// Keep `live`, received beside `fd`, for later imports of `fd`'s eventfd. Silently
/// dropped if `fd` is not a sync file or cannot be pinned.
fn stash_liveness(fd: BorrowedFd<'_>, live: OwnedFd) {
    let Ok(info) = eventfd_info(fd) else {
        return;
    };
    let Some(id) = info.id else {
        return;
    };
    if decode_record(info.count, 0) == Record::Invalid {
        return;
    }
    let Ok(pin) = dup(fd) else {
        return;
    };
    let out = registry().lock().received.insert(
        id,
        Pinned {
            value: Arc::new(live),
            _pin: Arc::new(pin),
            fd_no: fd.as_raw_fd(),
        },
    );
    drop(out);
}

/// Peek the record of a sync-file descriptor without consuming it (reads its fdinfo).
/// Never blocks. `SignallerGone` is reported only for a descriptor that came with its
/// origin's liveness descriptor (see [`recv_fd`]).
///
/// Errors: [`Error::Invalid`] if `fd` is not an eventfd or its counter is not a record;
/// [`Error::BadFd`] if it is not open (or procfs is missing); OS errors reading the
/// fdinfo.
pub fn peek(fd: BorrowedFd<'_>) -> Result<FdState> {
    let info = eventfd_info(fd).map_err(|e| match e {
        Error::Invalid(_) => Error::Invalid("not a sync file"),
        e => e,
    })?;
    match decode_record(info.count, ktime_now()) {
        Record::Invalid => Err(Error::Invalid("not a sync-file record")),
        Record::Signaled {
            status,
            timestamp_ns,
        } => Ok(FdState::Signaled {
            status,
            timestamp_ns,
        }),
        Record::Pending => {
            let Ok(Some(Some(live))) = writer_of(fd, || Ok(info.id)) else {
                return Ok(FdState::Pending);
            };
            if !hung_up(live.as_fd()) {
                return Ok(FdState::Pending);
            }
            // The record, if any, was written before the writer exited: look again.
            match decode_record(eventfd_info(fd)?.count, ktime_now()) {
                Record::Pending => Ok(FdState::SignallerGone),
                Record::Invalid => Err(Error::Invalid("not a sync-file record")),
                Record::Signaled {
                    status,
                    timestamp_ns,
                } => Ok(FdState::Signaled {
                    status,
                    timestamp_ns,
                }),
            }
        }
    }
}

/// What a proxy's descriptor (and liveness descriptor) say now: one `poll` each while
/// pending, the fdinfo only once readable. A counter that is not a record (somebody wrote
/// garbage into it) reads as a signal with `-EINVAL`.
///
/// Errors: those of reading the fdinfo of a readable descriptor (`EMFILE` opening it,
/// procfs gone…): they say nothing about the producer, only that the record cannot be
/// read now.
fn observe(efd: BorrowedFd<'_>, live: Option<BorrowedFd<'_>>) -> Result<FdState> {
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

/// Ops of a fence imported from a descriptor this process does not know (another
/// process's sync file).
struct Proxy {
    /// A duplicate of the eventfd, shared with the id map's pin and the watcher.
    fd: Arc<OwnedFd>,
    /// The origin's liveness read end, if it came along.
    liveness: Option<Arc<OwnedFd>>,
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

/// The background thread that signals proxy fences when their descriptor is readable or
/// their liveness descriptor hangs up.
mod watcher {
    use super::*;
    use rustix::event::epoll;

    /// One proxy being watched: epoll key `k` (even) is its eventfd, `k + 1` its liveness
    /// descriptor. The eventfd is the proxy's own duplicate (a proxy is watched at most
    /// once: the core enables signalling once per fence); the liveness descriptor, which
    /// several proxies may share, is duplicated for the watch. Both are held here until
    /// they are removed from the epoll set (epoll forgets a registration only when the
    /// file itself goes, so the numbers must stay open until then).
    struct Watch {
        fence: Fence,
        efd: Arc<OwnedFd>,
        live: Option<OwnedFd>,
        /// Failed attempts to read the record so far.
        failures: u32,
        /// Whether a retry is scheduled.
        retry_due: bool,
    }

    /// A watcher: an epoll set and the thread that waits on it.
    struct W {
        /// The process it belongs to.
        pid: rustix::process::Pid,
        ep: OwnedFd,
        waiting: Mutex<IntMap<u64, Watch>>,
        /// Watches whose record could not be read: when to look again, and the key.
        /// Locked after `waiting`, never before.
        retries: Mutex<Vec<(std::time::Instant, u64)>>,
        next: std::sync::atomic::AtomicU64,
    }

    /// This process's watcher.
    static CURRENT: Mutex<Option<Arc<W>>> = parking_lot::const_mutex(None);

    /// This process's watcher, made on first use, and made again in a child made by
    /// `fork`: the child's copy of the parent's shares the parent's epoll instance and has
    /// no thread. A failed attempt is not remembered: the next call tries again.
    ///
    /// Errors: OS errors of `epoll_create` (`EMFILE`, `ENOMEM`); [`Error::NoMem`] if the
    /// thread cannot be spawned.
    fn get() -> Result<Arc<W>> {
        let pid = pid::current();
        let mut cur = CURRENT.lock();
        if let Some(w) = cur.as_ref().filter(|w| w.pid == pid) {
            return Ok(w.clone());
        }
        #[cfg(test)]
        if hooks::watcher_start_fails() {
            return Err(Error::NoMem);
        }
        let w = Arc::new(W {
            pid,
            ep: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            waiting: Mutex::new(HashMap::default()),
            retries: Mutex::new(Vec::new()),
            next: std::sync::atomic::AtomicU64::new(2),
        });
        let t = w.clone();
        // On failure the closure, and with it `t`, is dropped: nothing is left behind.
        std::thread::Builder::new()
            .name("sync_file-watch".into())
            .spawn(move || run(&t))
            .map_err(|_| Error::NoMem)?;
        if let Some(old) = cur.replace(w.clone()) {
            adopt(&w, &old);
            // The parent's watcher, copied by `fork`: its epoll set is the parent's, which
            // this process must not touch (not even by closing its copy of the epoll
            // descriptor), and its thread was not copied. Leaked.
            std::mem::forget(old);
        }
        Ok(w)
    }

    /// Move the watches of `old` (a parent's watcher copied by `fork`: proxies this child
    /// holds copies of) to `w`, so that they are signalled here too. Skipped if `old`'s
    /// lock was held when the process forked (its owner is not in this process).
    fn adopt(w: &W, old: &W) {
        let Some(mut from) = old.waiting.try_lock() else {
            return;
        };
        let mut to = w.waiting.lock();
        for (_, mut watch) in from.drain() {
            let key = w.next.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
            // A retry due in the parent: the new registration fires again instead.
            watch.retry_due = false;
            if register(w, key, &watch.efd, watch.live.as_ref()).is_ok() {
                to.insert(key, watch);
            }
            // Else the proxy stays pending until a peek sees its record.
        }
    }

    /// Add `efd` (and `live`) to `w`'s epoll set under `key`; nothing added on error.
    fn register(w: &W, key: u64, efd: &OwnedFd, live: Option<&OwnedFd>) -> Result<()> {
        epoll::add(&w.ep, efd, epoll::EventData::new_u64(key), EFD_FLAGS)?;
        if let Some(l) = live {
            if let Err(e) = epoll::add(&w.ep, l, epoll::EventData::new_u64(key + 1), LIVE_FLAGS) {
                let _ = epoll::delete(&w.ep, efd);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// The pid of the watcher this thread gets (for tests).
    #[cfg(test)]
    pub(super) fn pid_of_watcher() -> Result<rustix::process::Pid> {
        get().map(|w| w.pid)
    }

    const EFD_FLAGS: epoll::EventFlags = epoll::EventFlags::IN.union(epoll::EventFlags::ONESHOT);
    /// Hang-up and error are always reported; nothing else is asked of the pipe.
    const LIVE_FLAGS: epoll::EventFlags = epoll::EventFlags::ONESHOT;

    /// Watch `efd` (and `live`) for `fence`; false if watching is impossible (the fence
    /// is then signalled by the core, with the error set here).
    pub(super) fn watch(fence: Fence, efd: &Arc<OwnedFd>, live: Option<&OwnedFd>) -> bool {
        let w = match get() {
            Ok(w) => w,
            Err(e) => {
                let _ = fence.set_error(-e.errno());
                return false;
            }
        };
        let efd = efd.clone();
        let Ok(live) = live.map(dup).transpose() else {
            let _ = fence.set_error(-Errno::MFILE.raw_os_error());
            return false;
        };
        let key = w.next.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        // Locked before registering: the thread cannot look the key up before it is in.
        let mut waiting = w.waiting.lock();
        // Out of epoll watches (`ENOMEM`, `ENOSPC` for `max_user_watches`).
        if register(&w, key, &efd, live.as_ref()).is_err() {
            let _ = fence.set_error(-Errno::NOMEM.raw_os_error());
            return false;
        }
        waiting.insert(
            key,
            Watch {
                fence,
                efd,
                live,
                failures: 0,
                retry_due: false,
            },
        );
        true
    }

    /// How many watches this process's watcher holds for `fence` now.
    #[cfg(test)]
    pub(super) fn watches_of(fence: &Fence) -> usize {
        let w = CURRENT.lock().clone();
        w.map_or(0, |w| {
            w.waiting
                .lock()
                .values()
                .filter(|watch| Fence::ptr_eq(&watch.fence, fence))
                .count()
        })
    }

    /// Whether the watcher holds `fence` now (for tests that must know a waiter is
    /// blocked in the watcher before they act).
    #[cfg(test)]
    pub(super) fn is_watching(fence: &Fence) -> bool {
        watches_of(fence) > 0
    }

    /// Delays between attempts to read the record of a readable descriptor whose fdinfo
    /// could not be read (in units of [`RETRY_UNIT`]); once they are spent, the proxy
    /// signals with `-EIO`. About 5 s in all.
    const RETRY_DELAYS: [u32; 13] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 1000, 1000, 1000];
    #[cfg(not(test))]
    const RETRY_UNIT: Duration = Duration::from_millis(1);
    /// Tests do not wait 5 s for the last resort.
    #[cfg(test)]
    const RETRY_UNIT: Duration = Duration::from_micros(100);

    fn run(w: &W) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
        loop {
            events.clear();
            let timeout = w.retries.lock().iter().map(|r| r.0).min().map(|at| {
                let d = at.saturating_duration_since(std::time::Instant::now());
                rustix::time::Timespec {
                    tv_sec: d.as_secs() as i64,
                    tv_nsec: d.subsec_nanos() as _,
                }
            });
            let spare = rustix::buffer::spare_capacity(&mut events);
            if epoll::wait(&w.ep, spare, timeout.as_ref()).is_err() {
                continue;
            }
            for ev in events.iter() {
                let data = ev.data.u64();
                look(w, data & !1, Some(data));
            }
            let now = std::time::Instant::now();
            let due: Vec<u64> = {
                let mut r = w.retries.lock();
                let due = r.iter().filter(|x| x.0 <= now).map(|x| x.1).collect();
                r.retain(|x| x.0 > now);
                due
            };
            for key in due {
                look(w, key, None);
            }
        }
    }

    /// Look at watch `key` because its descriptor `fired` (the epoll data), or because a
    /// retry is due (`None`).
    fn look(w: &W, key: u64, fired: Option<u64>) {
        let mut waiting = w.waiting.lock();
        // Gone already: both of its descriptors fired in one batch.
        let Some(watch) = waiting.get_mut(&key) else {
            return;
        };
        if fired.is_none() {
            watch.retry_due = false;
        }
        let st = match observe(watch.efd.as_fd(), watch.live.as_ref().map(AsFd::as_fd)) {
            Ok(FdState::Pending) => {
                // Spurious (the record was read away): arm again what fired, or both
                // after a retry (the eventfd's registration fired before it).
                let rearm_efd = fired.is_none_or(|d| d & 1 == 0);
                let rearm_live = fired.is_none_or(|d| d & 1 == 1);
                if rearm_efd {
                    let data = epoll::EventData::new_u64(key);
                    let _ = epoll::modify(&w.ep, &watch.efd, data, EFD_FLAGS);
                }
                if let (true, Some(l)) = (rearm_live, &watch.live) {
                    let data = epoll::EventData::new_u64(key + 1);
                    let _ = epoll::modify(&w.ep, l, data, LIVE_FLAGS);
                }
                return;
            }
            Ok(st) => st,
            // The record is there but cannot be read now (out of descriptors for the
            // fdinfo, say): that is no verdict on the producer. Try again later, without
            // re-arming (the descriptor stays readable: it would fire at once).
            Err(_) if watch.retry_due => return,
            Err(_) if (watch.failures as usize) < RETRY_DELAYS.len() => {
                let delay = RETRY_UNIT * RETRY_DELAYS[watch.failures as usize];
                watch.failures += 1;
                watch.retry_due = true;
                w.retries
                    .lock()
                    .push((std::time::Instant::now() + delay, key));
                return;
            }
            // The last resort: an error, rather than a wait that never ends.
            Err(_) => FdState::Signaled {
                status: -Errno::IO.raw_os_error(),
                timestamp_ns: ktime_now(),
            },
        };
        let Some(watch) = waiting.remove(&key) else {
            return;
        };
        drop(waiting);
        let _ = epoll::delete(&w.ep, &*watch.efd);
        if let Some(l) = &watch.live {
            let _ = epoll::delete(&w.ep, l);
        }
        signal_from(&watch.fence, st);
    }
}

/// Wait until `fd` polls readable, at most `timeout` (`None` = forever). Returns whether
/// it did (for a descriptor that reports an error or hang-up instead, whether it
/// reported anything).
///
/// Errors: OS errors of `poll` other than `EINTR`, which is retried (with the full
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

/// The length of `name` cut to the kernel's 31 bytes (plus NUL), on a char boundary.
fn name_len(name: &str) -> usize {
    let mut end = name.len().min(31);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    end
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

/// The sync file an ioctl is made on: `ENOTTY` if `fd` is not one (the kernel would not
/// reach sync_file's ioctl); errors that keep us from telling (`EMFILE` reading its
/// fdinfo, or duplicating it for a proxy) are returned as they are.
fn this_file(fd: BorrowedFd<'_>) -> Result<(Fence, String)> {
    let (k, _) = lookup(fd).map_err(|e| match e {
        Error::Invalid(_) => Error::NoTty,
        e => e,
    })?;
    Ok((k.fence.clone(), k.name.clone()))
}

/// `SYNC_IOC_MERGE` on `fd`: a new sync file merging `fd` and `data.fd2`, named
/// `data.name`; `data.fence` receives its descriptor number, which the returned
/// `OwnedFd` owns.
///
/// Errors: [`Error::Invalid`] (`EINVAL`) if `flags` or `pad` is non-zero;
/// [`Error::NoEntry`] (`ENOENT`) if `fd2` is not an open sync file; [`Error::NoTty`]
/// (`ENOTTY`) if `fd` itself is not a sync file (wrong file for the ioctl); errors of
/// [`get_fence`] other than `EINVAL` if either cannot be told;
/// [`Error::NoMem`] (`ENOMEM`) from the merge; OS errors if no descriptor can be had for
/// the new sync file (`EMFILE`, `ENFILE`, `ENOMEM`). Nothing is created, nothing is
/// left registered and `data` is unchanged on error.
pub fn ioctl_merge(fd: BorrowedFd<'_>, data: &mut SyncMergeData) -> Result<OwnedFd> {
    let (f1, _) = this_file(fd)?;
    if data.flags != 0 || data.pad != 0 {
        return Err(Error::Invalid("sync_merge_data flags/pad must be 0"));
    }
    if data.fd2 < 0 {
        return Err(Error::NoEntry("fd2 is not a sync file"));
    }
    // What the kernel's `fdget` does: take one reference to whatever file the number
    // names right now, and work on that reference only.
    // SAFETY: the number comes from the caller and nothing keeps it open, so it is not a
    // descriptor this code owns or borrows for any length of time. The `BorrowedFd` made
    // here is passed to exactly one syscall, `fcntl(F_DUPFD_CLOEXEC)`, and then dropped;
    // nothing else reads, closes or keeps it. If the number is closed meanwhile, that
    // syscall fails with EBADF (mapped to ENOENT below); if it has been reused, it
    // duplicates the new file, which is then what is merged, as with `fdget`. In no case
    // is another owner's descriptor closed or used after this call.
    let fd2 = match dup(unsafe { BorrowedFd::borrow_raw(data.fd2) }) {
        Ok(fd2) => fd2,
        Err(Error::Os(Errno::BADF)) => return Err(Error::NoEntry("fd2 is not open")),
        Err(e) => return Err(e),
    };
    let (f2, _) = lookup(fd2.as_fd()).map_err(|e| match e {
        Error::Invalid(_) => Error::NoEntry("fd2 is not a sync file"),
        e => e,
    })?;
    drop(fd2);
    let name = c_name(&data.name);
    let merged = merge(&[f1, f2.fence.clone()])?;
    let (sf, cb) = SyncFile::create(merged.clone(), name)?;
    let out = match sf.try_into_fd() {
        Ok(out) => out,
        Err(e) => {
            // Nobody else saw this sync file: take its callback back, which closes the
            // eventfd now and releases the merged fence without an unsignalled-release
            // warning.
            if let Some(cb) = cb {
                merged.remove_callback(cb);
            }
            return Err(e);
        }
    };
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
/// file; errors of [`get_fence`] other than `EINVAL` (`EMFILE`…) if that cannot be told.
/// `info` and `out` are unchanged on error.
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
/// is not a sync file; errors of [`get_fence`] other than `EINVAL` (`EMFILE`…) if that
/// cannot be told.
pub fn ioctl_set_deadline(fd: BorrowedFd<'_>, arg: &SyncSetDeadline) -> Result<()> {
    let (fence, _) = this_file(fd)?;
    if arg.pad != 0 {
        return Err(Error::Invalid("sync_set_deadline pad must be 0"));
    }
    fence.set_deadline(arg.deadline_ns);
    Ok(())
}

/// The status a descriptor reports (0 pending, 1 ok, negative errno), from the record
/// alone (see [`peek`]); a dead signaller reads as `-EPIPE`.
///
/// Errors: as [`peek`].
pub fn fd_status(fd: BorrowedFd<'_>) -> Result<Status> {
    Ok(match peek(fd)? {
        FdState::Pending => Status::Pending,
        FdState::Signaled { status, .. } => Status::from_raw(status),
        FdState::SignallerGone => Status::Error(-Errno::PIPE.raw_os_error()),
    })
}

// ---- passing descriptors ----------------------------------------------------------------

/// Send `fd` over the Unix socket `sock` with `SCM_RIGHTS` (one byte of payload). When
/// `fd` is a sync file this process knows (its own export, or a proxy of another
/// process's sync file that came with that process's liveness descriptor), the liveness
/// read end goes along as a second descriptor, for [`recv_fd`] (see the module docs);
/// any other descriptor goes alone.
///
/// Errors: OS errors of `sendmsg` (`ENOTSOCK`, `EPIPE`…); OS errors creating this
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
    let live = match writer_of(fd, id)? {
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
/// Errors: [`Error::NoEntry`] if the message carried no descriptor (or the peer closed);
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

// ---- sw_sync as descriptors -----------------------------------------------------------

/// `SW_SYNC_IOC_CREATE_FENCE`: a point of `tl` at `value`, exported as a sync file.
///
/// Errors: as [`SyncFile::new`].
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
