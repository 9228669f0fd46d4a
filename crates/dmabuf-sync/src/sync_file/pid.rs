// ---- this process ----------------------------------------------------------------------

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
            unsafe { mmap_anonymous(std::ptr::null_mut(), len, prot, MapFlags::PRIVATE) }.ok()?;
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
    if let Some(p) = FAKE_PID.with(std::cell::Cell::get) {
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

#[cfg(test)]
thread_local! {
    /// A pid that [`current`] reports on this thread instead of the real one: this
    /// thread acts as a child made by `fork` would (a test hook, not a fault: see
    /// [`crate::fault`] for those).
    static FAKE_PID: std::cell::Cell<Option<Pid>> = const { std::cell::Cell::new(None) };
}

/// Make this thread act as if it were in child number `n` made by `fork` (`Some`), or
/// in this process again (`None`).
#[cfg(test)]
pub(super) fn act_as_forked_child(n: Option<u16>) {
    // No real pid is this large (`pid_max` is at most 2^22).
    let pid = n.and_then(|n| Pid::from_raw(i32::MAX - i32::from(n)));
    FAKE_PID.with(|c| c.set(pid));
}
