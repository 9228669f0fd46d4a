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

thread_local! {
    /// `Some((n, e))`: the `n + 1`-th new descriptor from now on this thread (in the
    /// code paths that ask: sync-file exports, sw_sync timelines) fails with `e`.
    static FAIL_FD: Cell<Option<(u32, rustix::io::Errno)>> = const { Cell::new(None) };
}

/// Let `n` more new descriptors succeed on this thread, then fail the next one with
/// `errno` (once).
pub(crate) fn fail_fd_after(n: u32, errno: rustix::io::Errno) {
    FAIL_FD.with(|c| c.set(Some((n, errno))));
}

/// Whether a descriptor failure is still to come (then clears it).
pub(crate) fn fd_fault_armed_then_disarm() -> bool {
    FAIL_FD.with(|c| c.take().is_some())
}

pub(super) fn fd_fails() -> Option<rustix::io::Errno> {
    FAIL_FD.with(|c| match c.get() {
        Some((0, e)) => {
            c.set(None);
            Some(e)
        }
        Some((n, e)) => {
            c.set(Some((n - 1, e)));
            None
        }
        None => None,
    })
}
