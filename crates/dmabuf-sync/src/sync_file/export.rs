// ---- the writing side of an export ------------------------------------------------------
//
// The kernel's sync file holds its fence; the fence does not hold the file. Closing the
// last descriptor of a pending sync file frees the file at once, and a loop of merges over
// pending fences keeps about two files open. Here the record must be written into the
// eventfd when the fence signals, which needs a reference to it; holding one from the
// fence callback until the signal kept every pending export's descriptor open long after
// its `SyncFile` was gone (`EMFILE` after about a thousand merges).
//
// So the callback holds the export's descriptor only *weakly* while its `SyncFile` owns
// it: when that `SyncFile` is dropped, the descriptor closes at once, unless another
// holder may still be waiting for the record. The holders this process can know of are:
//
// - a `send_fd` of it (another process has it),
// - `into_fd` / `try_into_fd` (the caller owns a descriptor of it, to do anything with),
// - `SyncFile::from_fd` of a duplicate of it, or `SyncFile::try_clone_fd`,
// - a `fork` while the export lived (the child has a copy; seen by a `pthread_atfork`
//   handler that counts forks).
//
// After any of these the export is *shared*: when its `SyncFile` goes, the callback takes
// over the descriptor and holds it until it has written the record, as before. A
// duplicate made any other way (`dup` of `as_fd()`, a `sendmsg` of another library, a
// descriptor inherited over `exec` with close-on-exec cleared) is invisible: it receives
// the record while the `SyncFile` lives, and not once the `SyncFile` was dropped before
// the signal. That is the price of closing at once; the module docs list it among the
// differences from the kernel.

use super::record::write_record;
use crate::fence::Fence;
use parking_lot::Mutex;
use rustix::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, OnceLock, Weak};

/// The writing side of one export of this process.
pub(super) struct Export {
    /// The descriptor the export made, while something else owns it (its `SyncFile`,
    /// or the id map's pin after `into_fd`).
    fd: Weak<OwnedFd>,
    /// [`forks`] read before the eventfd was made.
    forks_at_birth: u64,
    st: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Another holder may exist (see the file's comment).
    shared: bool,
    /// The callback has run (or is running): the record is, or is being, written.
    written: bool,
    /// The descriptor, taken over from its owner that went while the export was
    /// shared and the record not written yet.
    keep: Option<Arc<OwnedFd>>,
}

impl Export {
    /// The writing side of the export whose descriptor is `fd`. Call [`forks`] before
    /// making the eventfd and pass what it said as `forks_at_birth`.
    pub(super) fn new(fd: &Arc<OwnedFd>, forks_at_birth: u64) -> Export {
        Export {
            fd: Arc::downgrade(fd),
            forks_at_birth,
            st: Mutex::new(State::default()),
        }
    }

    /// Whether `fd` is the export's own descriptor (not a duplicate of it).
    pub(super) fn is_original(&self, fd: &Arc<OwnedFd>) -> bool {
        std::ptr::eq(self.fd.as_ptr(), Arc::as_ptr(fd))
    }

    /// Another holder of the eventfd may exist: keep the descriptor until the record is
    /// written, even once its owner is gone.
    pub(super) fn share(&self) {
        self.st.lock().shared = true;
    }

    /// Whether the record is written (or being written).
    pub(super) fn written(&self) -> bool {
        self.st.lock().written
    }

    /// Whether a child made by `fork` may hold a copy: a fork began since the export was
    /// made (or was under way then: an odd count).
    fn forked(&self) -> bool {
        self.forks_at_birth % 2 == 1 || forks() != self.forks_at_birth
    }

    /// The owner of the original descriptor gives it up. It closes now unless the export
    /// is shared and its record not written yet; then it is kept until the callback has
    /// written it.
    pub(super) fn release(&self, fd: Arc<OwnedFd>) {
        let mut st = self.st.lock();
        if !st.written && (st.shared || self.forked()) {
            st.keep = Some(fd);
            return;
        }
        drop(st);
        drop(fd);
    }

    /// The fence callback: write `f`'s record through the descriptor if anything still
    /// holds it (this object, or the owner); drop what this object kept.
    pub(super) fn write(&self, f: &Fence) {
        let fd = {
            let mut st = self.st.lock();
            st.written = true;
            st.keep.take().or_else(|| self.fd.upgrade())
        };
        if let Some(fd) = fd {
            write_record(&fd, f);
        }
    }
}

/// Forks seen by this process: each `fork` adds 1 before (odd while under way) and 1
/// after, in the parent. Registers the handlers on first use.
pub(super) fn forks() -> u64 {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        extern "C" {
            fn pthread_atfork(
                prepare: Option<unsafe extern "C" fn()>,
                parent: Option<unsafe extern "C" fn()>,
                child: Option<unsafe extern "C" fn()>,
            ) -> i32;
        }
        // SAFETY: `pthread_atfork` has this C signature in every libc this crate
        // builds against (glibc, musl). The handlers are plain functions that live for
        // the whole program and only add to an atomic, which is safe in the middle of a
        // fork (no lock, no allocation). A failure (ENOMEM) leaves forks uncounted: the
        // count stays 0, and exports are then treated as unshared by forks.
        let _ = unsafe { pthread_atfork(Some(on_fork), Some(on_fork), None) };
    });
    #[cfg(test)]
    let pretended = PRETENDED.with(std::cell::Cell::get);
    #[cfg(not(test))]
    let pretended = 0;
    FORKS.load(SeqCst) + pretended
}

static FORKS: AtomicU64 = AtomicU64::new(0);

/// The `pthread_atfork` prepare and parent handler.
unsafe extern "C" fn on_fork() {
    FORKS.fetch_add(1, SeqCst);
}

#[cfg(test)]
thread_local! {
    /// Forks pretended on this thread (tests run beside each other: a pretended fork
    /// must not make other tests' exports shared).
    static PRETENDED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Act, on this thread, as if this process forked now (both handlers), for tests: a
/// real fork of the multi-threaded test process is not safe.
#[cfg(test)]
pub(super) fn pretend_fork() {
    PRETENDED.with(|c| c.set(c.get() + 2));
}
