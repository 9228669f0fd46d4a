use super::proxy::{observe, signal_from};
use super::record::{dup, new_fd};
use super::registry::IntMap;
use super::{pid, FdState};
use crate::error::{Error, Result};
use crate::fence::{ktime_now, Fence};
use parking_lot::Mutex;
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

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
/// # Errors
///
/// OS errors of `epoll_create` (`EMFILE`, `ENOMEM`); [`Error::NoMem`] if the
/// thread cannot be spawned.
fn get() -> Result<Arc<W>> {
    let pid = pid::current();
    let mut cur = CURRENT.lock();
    if let Some(w) = cur.as_ref().filter(|w| w.pid == pid) {
        return Ok(w.clone());
    }
    let w = Arc::new(W::new(pid)?);
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

impl W {
    /// A watcher of process `pid` with an empty epoll set and no thread yet.
    ///
    /// # Errors
    ///
    /// OS errors of `epoll_create` (`EMFILE`, `ENOMEM`).
    fn new(pid: rustix::process::Pid) -> Result<W> {
        Ok(W {
            pid,
            ep: new_fd(|| epoll::create(epoll::CreateFlags::CLOEXEC))?,
            waiting: Mutex::new(HashMap::default()),
            retries: Mutex::new(Vec::new()),
            next: std::sync::atomic::AtomicU64::new(2),
        })
    }
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
    match get() {
        Ok(w) => watch_on(&w, fence, efd, live),
        Err(e) => {
            let _ = fence.set_error(-e.errno());
            false
        }
    }
}

/// [`watch`] on watcher `w`.
fn watch_on(w: &W, fence: Fence, efd: &Arc<OwnedFd>, live: Option<&OwnedFd>) -> bool {
    let efd = efd.clone();
    let Ok(live) = live.map(dup).transpose() else {
        let _ = fence.set_error(-Errno::MFILE.raw_os_error());
        return false;
    };
    let key = w.next.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
    // Locked before registering: the thread cannot look the key up before it is in.
    let mut waiting = w.waiting.lock();
    // Out of epoll watches (`ENOMEM`, `ENOSPC` for `max_user_watches`).
    if register(w, key, &efd, live.as_ref()).is_err() {
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
        step(w, &mut events, None);
    }
}

/// One round of the watcher's thread: wait for a descriptor to fire or a retry to be
/// due (at most `cap`, if given), and look at what did.
fn step(w: &W, events: &mut Vec<epoll::Event>, cap: Option<Duration>) {
    events.clear();
    let retry = w.retries.lock().iter().map(|r| r.0).min();
    let wait = retry.map(|at| at.saturating_duration_since(std::time::Instant::now()));
    let timeout = match (wait, cap) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
    .map(|d| rustix::time::Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    let spare = rustix::buffer::spare_capacity(events);
    if epoll::wait(&w.ep, spare, timeout.as_ref()).is_err() {
        return;
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

/// A watcher of its own for a test, without a thread: the test drives it
/// ([`Driven::step`]) on its own thread, so that the faults it arms there
/// ([`crate::fault`]) reach the watcher's reads, and no other test's watches share it.
#[cfg(test)]
pub(super) struct Driven {
    w: W,
    events: Vec<epoll::Event>,
}

#[cfg(test)]
impl Driven {
    /// An empty watcher of this process.
    pub(super) fn new() -> Driven {
        Driven {
            w: W::new(pid::current()).expect("epoll_create"),
            events: Vec::with_capacity(64),
        }
    }

    /// [`watch`] on this watcher.
    pub(super) fn watch(&self, fence: Fence, efd: &Arc<OwnedFd>) -> bool {
        watch_on(&self.w, fence, efd, None)
    }

    /// One round of the watcher's loop, waiting at most `cap`.
    pub(super) fn step(&mut self, cap: Duration) {
        step(&self.w, &mut self.events, Some(cap));
    }

    /// Failed reads of `fence`'s record so far (`None`: not watched).
    pub(super) fn failures(&self, fence: &Fence) -> Option<u32> {
        let waiting = self.w.waiting.lock();
        let mut it = waiting.values().filter(|x| Fence::ptr_eq(&x.fence, fence));
        it.next().map(|x| x.failures)
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
