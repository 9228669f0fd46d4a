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
//! ## The descriptor's lifetime
//!
//! As in the kernel, dropping a [`SyncFile`] closes its descriptor at once, pending or
//! not: the fence callback that writes the record holds the descriptor only weakly, and
//! writes nothing if it is gone. A loop of merges over pending fences that drops each
//! previous sync file keeps a constant number of descriptors open. The callback takes the
//! descriptor over, and holds it until it has written the record, only where another
//! holder may be waiting for it, which this process can tell when the descriptor went
//! through the crate: a [`send_fd`] of it, [`SyncFile::into_fd`] (or `try_into_fd`, and so
//! [`ioctl_merge`]), [`SyncFile::try_clone_fd`], a [`SyncFile::from_fd`] of a duplicate,
//! or a `fork` while it lived (counted by a `pthread_atfork` handler). See *Known
//! differences* for duplicates made any other way.
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
//! - **A duplicate made behind the crate's back loses the record once its [`SyncFile`]
//!   is gone.** A `dup` of [`as_fd`](SyncFile::as_fd), a descriptor sent by another
//!   library's `sendmsg` or inherited over `exec` with close-on-exec cleared, sees the
//!   record if the fence signals while the sync file lives; if the sync file is dropped
//!   first, its descriptor closes and the record is never written, so the duplicate
//!   stays pending. The kernel's file lives while any descriptor does. The crate cannot
//!   see such duplicates, and keeping every pending export's descriptor open for them
//!   would keep them all open (the `EMFILE` this replaced): make duplicates with
//!   [`SyncFile::try_clone_fd`] or [`into_fd`](SyncFile::into_fd), and send with
//!   [`send_fd`]. A `fork` done without `pthread_atfork` handlers (a raw `clone`) is
//!   not seen either. Conversely, a shared export's descriptor stays open until its
//!   fence signals (or is released), even if every other holder is gone; in particular
//!   descriptors returned by [`ioctl_merge`] and `into_fd` for pending fences each keep
//!   one eventfd open until then.
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

#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::fence::unwrap::merge;
use crate::fence::{CallbackId, Fence};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// The writing side of an export: holds its descriptor only while another holder may
/// wait for the record.
mod export;
mod ioctl;
mod liveness;
mod passing;
/// This process's id, without a syscall each time: the export's fence callback asks for
/// it on every signal.
mod pid;
mod proxy;
mod record;
mod registry;
pub mod sw_sync;
/// The background thread that signals proxy fences when their descriptor is readable or
/// their liveness descriptor hangs up.
mod watcher;

pub use ioctl::{
    fd_status, ioctl_file_info, ioctl_merge, ioctl_set_deadline, sw_sync_create_fence, FileInfo,
    LeafInfo, SyncFenceInfo, SyncFileInfo, SyncMergeData, SyncSetDeadline,
};
pub use passing::{
    recv_fd, recv_fds, recv_message, recv_sync_file, send_fd, send_fds, Incoming, MAX_FDS,
    MAX_PAYLOAD,
};
#[cfg(any(test, feature = "testing"))]
pub use record::encode_record;
pub use record::{peek, poll_readable};
pub use registry::get_fence;

use export::Export;
use ioctl::file_info;
use record::{dup, eventfd_info, new_fd, readable_now};
#[cfg(test)]
use registry::stash_liveness;
use registry::{default_name, lookup, registry, ByFd, Known, Origin, Pinned};

// ---- the sync file ----------------------------------------------------------------------

/// A fence exposed as a file descriptor (an eventfd, see the [module docs](self)).
///
/// Invariant: while it lives, the registry's fast map has an entry for its descriptor
/// number; `fd` is `None` only inside [`into_fd`](SyncFile::into_fd) and `drop`.
#[must_use = "dropping a SyncFile closes its descriptor at once"]
pub struct SyncFile {
    /// The eventfd. For an export of this process, its fence callback holds it weakly,
    /// and takes it over on drop only if the export was shared (see the module docs).
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

/// The descriptor of a sync file about to be made (see [`SyncFile::create_on`]).
pub(super) struct Reserved {
    fd: OwnedFd,
    /// [`export::forks`] read before the eventfd was made.
    forks: u64,
}

impl Reserved {
    /// A new close-on-exec, non-blocking eventfd at 0.
    ///
    /// # Errors
    ///
    /// OS errors creating it (`EMFILE`, `ENFILE`, `ENOMEM`).
    pub(super) fn new() -> Result<Reserved> {
        use rustix::event::{eventfd, EventfdFlags};
        // Read before the eventfd exists: a fork from here on is seen (see `export`).
        let forks = export::forks();
        let fd = new_fd(|| eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK))?;
        Ok(Reserved { fd, forks })
    }

    /// Export `fence` under its default name on this descriptor. Cannot fail.
    pub(super) fn export(self, fence: Fence) -> SyncFile {
        let name = default_name(&fence);
        SyncFile::create_on(self, fence, name).0
    }
}

impl SyncFile {
    /// Export `fence` as a sync file (`sync_file_create`), named
    /// `<driver>-<timeline><context>-<seqno>`. The descriptor is a close-on-exec eventfd
    /// that polls readable once the fence has signalled.
    ///
    /// # Errors
    ///
    /// OS errors creating the eventfd (`EMFILE`…); nothing is registered then.
    pub fn new(fence: Fence) -> Result<SyncFile> {
        let name = default_name(&fence);
        Self::create(fence, name).map(|(sf, _)| sf)
    }

    /// Export `fence` under `name` (truncated to 31 bytes, as the kernel's 32-byte field).
    ///
    /// # Errors
    ///
    /// As [`new`](SyncFile::new).
    pub fn with_name(fence: Fence, name: &str) -> Result<SyncFile> {
        Self::create(fence, name[..name_len(name)].to_owned()).map(|(sf, _)| sf)
    }

    /// [`with_name`](SyncFile::with_name), also returning the export's fence callback
    /// (`None` if the fence had already signalled), for a caller that must undo the
    /// export of a sync file nobody else has seen. `name` is cut to 31 bytes in place,
    /// without a copy.
    fn create(fence: Fence, name: String) -> Result<(SyncFile, Option<CallbackId>)> {
        let r = Reserved::new()?;
        Ok(Self::create_on(r, fence, name))
    }

    /// [`create`](SyncFile::create) on a descriptor made beforehand, by a caller that
    /// must not fail once it has the fence. Cannot fail.
    fn create_on(r: Reserved, fence: Fence, mut name: String) -> (SyncFile, Option<CallbackId>) {
        let Reserved { fd, forks } = r;
        let fd = Arc::new(fd);
        name.truncate(name_len(&name));
        let exp = Arc::new(Export::new(&fd, forks));
        let known = Arc::new(Known {
            fence: fence.clone(),
            name,
            origin: Origin::Local(exp.clone()),
        });
        let old = registry().lock().by_fd.insert(
            fd.as_raw_fd(),
            ByFd {
                known: known.clone(),
                id: None,
            },
        );
        drop(old);
        // The callback writes through the export's descriptor while something holds it
        // (see `export`): it does not keep it open by itself. A child made by `fork`
        // without `exec` shares the eventfd but not the fence: what happens to its copy of
        // the fence (say it drops the last copy unsignalled, -EDEADLK) is not a signal of
        // this one, and must not reach the parent's readers.
        let exporter = pid::current();
        let writer = exp.clone();
        let cb = match fence.add_callback(move |f: &Fence| {
            if pid::current() == exporter {
                writer.write(f);
            }
        }) {
            Ok(id) => Some(id),
            Err((_, cb)) => {
                drop(cb);
                exp.write(&fence);
                None
            }
        };
        (
            SyncFile {
                fd: Some(fd),
                known,
            },
            cb,
        )
    }

    /// Import a descriptor (`sync_file_fdget` + `sync_file_get_fence`), taking ownership.
    /// Our own export gives back the same fence and name; another process's a proxy fence
    /// (see the module docs).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] (`EINVAL`) if `fd` is not a sync file (not an eventfd, or
    /// its counter is not a record, or no procfs to tell); OS errors reading its fdinfo
    /// (`EMFILE`, `ENFILE`, `ENOMEM`: nothing is known about the descriptor then) or
    /// duplicating it for a proxy (`EMFILE`). The descriptor is closed on error, as it
    /// was handed over.
    pub fn from_fd(fd: OwnedFd) -> Result<SyncFile> {
        let (known, id) = lookup(fd.as_fd())?;
        Ok(Self::from_known(fd, known, id))
    }

    /// [`from_fd`](Self::from_fd) of a descriptor that just arrived beside `live` (its
    /// origin's liveness descriptor): one fdinfo read instead of two.
    pub(crate) fn from_received(fd: OwnedFd, live: Option<OwnedFd>) -> Result<SyncFile> {
        let (known, id) = registry::lookup_received(fd.as_fd(), live)?;
        Ok(Self::from_known(fd, known, id))
    }

    fn from_known(fd: OwnedFd, known: Arc<registry::Known>, id: Option<Option<u64>>) -> SyncFile {
        // A second holder of one of our exports: it must get the record even if the
        // export's own sync file goes first.
        if let Origin::Local(e) = &known.origin {
            e.share();
        }
        let old = registry().lock().by_fd.insert(
            fd.as_raw_fd(),
            ByFd {
                known: known.clone(),
                id,
            },
        );
        drop(old);
        SyncFile {
            fd: Some(Arc::new(fd)),
            known,
        }
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

    /// The descriptor, valid while this sync file lives. A duplicate made from it by
    /// other means than the crate's gets the record only if the fence signals before
    /// this sync file is dropped: use [`try_clone_fd`](SyncFile::try_clone_fd),
    /// [`into_fd`](SyncFile::into_fd) or [`send_fd`] (see the module docs).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.owned_fd().as_fd()
    }

    /// Give up the object, keep the descriptor: the caller owns it. Importing it (or a
    /// duplicate) later in this process still gives the same fence, through the id map
    /// (see the module docs), which keeps the fence referenced while the returned
    /// descriptor number refers to the eventfd.
    ///
    /// Costs a `dup` and an fdinfo read. If the fence is still pending, the returned
    /// descriptor is a duplicate, and the fence callback keeps the original until it
    /// writes: the caller may duplicate, send or close the one it got as it likes.
    ///
    /// # Panics
    ///
    /// Where [`try_into_fd`](SyncFile::try_into_fd) fails: the fence is still pending and
    /// the process is out of descriptors (`EMFILE`), so that the duplicate cannot be made
    /// (there is then no descriptor to hand over that the callback would not close under
    /// the caller). Use `try_into_fd` where that can happen.
    #[must_use = "dropping the descriptor closes it"]
    pub fn into_fd(self) -> OwnedFd {
        match self.try_into_fd() {
            Ok(fd) => fd,
            Err(e) => panic!("SyncFile::into_fd: cannot duplicate the descriptor: {e}"),
        }
    }

    /// [`into_fd`](SyncFile::into_fd), failing instead of panicking.
    ///
    /// # Errors
    ///
    /// OS errors duplicating the descriptor while the fence is still pending
    /// (`EMFILE`, `ENFILE`, `ENOMEM`). The sync file is then dropped as it is when it goes
    /// out of scope: its descriptor closes (once the fence callback has written, if the
    /// export was shared: see the module docs), and nothing is leaked.
    pub fn try_into_fd(mut self) -> Result<OwnedFd> {
        let Some(fd) = self.fd.take() else {
            unreachable!("the descriptor is only taken by into_fd and drop")
        };
        let n = fd.as_raw_fd();
        // The descriptor to hand over first: on failure `self` is whole again, and its
        // drop removes the fast-map entry before closing (number `n` is open until then).
        let export = match &self.known.origin {
            Origin::Local(e) if e.is_original(&fd) => Some(e.clone()),
            _ => None,
        };
        let (user, pin) = match export {
            // Pending: the caller gets a duplicate, to do anything with (send it, dup
            // it, close it); the original is the id map's pin and is kept for the
            // callback until it has written (the export is shared from now on).
            Some(e) if !e.written() => match dup(&*fd) {
                Ok(user) => {
                    e.share();
                    e.release(fd.clone());
                    (user, Some(fd))
                }
                Err(err) => {
                    self.fd = Some(fd);
                    return Err(err);
                }
            },
            _ => match Arc::try_unwrap(fd) {
                // Signalled, or not our export: hand over the original.
                Ok(own) => {
                    let pin = dup(&own).ok().map(Arc::new);
                    (own, pin)
                }
                // The callback is writing through it right now.
                Err(shared) => match dup(&*shared) {
                    Ok(user) => (user, Some(shared)),
                    Err(e) => {
                        self.fd = Some(shared);
                        return Err(e);
                    }
                },
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

    /// A close-on-exec duplicate of the descriptor that receives the record even if
    /// this sync file is dropped first (a duplicate made from [`as_fd`](SyncFile::as_fd)
    /// by other means does not: see the module docs).
    ///
    /// # Errors
    ///
    /// OS errors of the duplicate (`EMFILE`, `ENFILE`, `ENOMEM`); nothing changes
    /// then.
    pub fn try_clone_fd(&self) -> Result<OwnedFd> {
        let d = dup(self.owned_fd())?;
        if let Origin::Local(e) = &self.known.origin {
            e.share();
        }
        Ok(d)
    }

    /// Whether the descriptor polls readable now (the fence signalled, ok or error).
    pub fn poll(&self) -> bool {
        readable_now(self.as_fd())
    }

    /// Merge with `other` into a new sync file named `name` (`SYNC_IOC_MERGE`): its
    /// fence signals when both have (see [`merge`]).
    ///
    /// # Errors
    ///
    /// [`Error::NoMem`] from the merge; as [`new`](SyncFile::new).
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
            // Closed now, unless the export is shared and still pending (then its
            // callback keeps it until it has written the record).
            match &self.known.origin {
                Origin::Local(e) if e.is_original(&fd) => e.release(fd),
                _ => drop(fd),
            }
        }
    }
}

/// This process's sync objects in the layout of the kernel's sw_sync debugfs file
/// `sync/info`: under `objs:` each `sw_sync` timeline this process uses (its name,
/// value and pending points), under `fences:` each sync file it holds (its name and
/// status: 1 signalled, 0 pending, negative an error) with its fence (driver, timeline,
/// `context:seqno`). Takes the registries' locks briefly.
pub fn info_text() -> String {
    use std::fmt::Write as _;
    let mut o = String::from("objs:\n--------------\n");
    for (name, value, pending) in sw_sync::timelines() {
        let _ = writeln!(o, "{name}: {value} ({pending} pending)");
    }
    o.push_str("fences:\n--------------\n");
    for (name, f) in registry::live() {
        let st = f.get_status();
        let _ = writeln!(o, "{name}: {st}");
        let _ = writeln!(
            o,
            "  {} {} {}:{} {}",
            f.driver_name(),
            f.timeline_name(),
            f.context().id(),
            f.seqno(),
            if st == 0 { "unsignalled" } else { "signalled" }
        );
    }
    o
}

/// The length of `name` cut to the kernel's 31 bytes (plus NUL), on a char boundary.
fn name_len(name: &str) -> usize {
    let mut end = name.len().min(31);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests;
