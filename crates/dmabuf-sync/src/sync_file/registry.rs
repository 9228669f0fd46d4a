use super::export::Export;
use super::proxy::{signal_from, Proxy};
use super::record::{decode_record, dup, eventfd_info, fdinfo_of, Record};
use super::FdState;
use crate::error::{Error, Result};
use crate::fence::{ktime_now, Context, Fence};
use parking_lot::Mutex;
use rustix::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

#[cfg(doc)]
use super::{recv_fd, SyncFile};

// ---- what this process knows ------------------------------------------------------------

/// Who writes a sync file's record.
pub(super) enum Origin {
    /// This process (its fence callback, through this writing side).
    Local(Arc<Export>),
    /// Another process; with its liveness read end if that came along.
    Remote(Option<Arc<OwnedFd>>),
}

/// One sync file as this process knows it.
pub(super) struct Known {
    pub(super) fence: Fence,
    pub(super) name: String,
    pub(super) origin: Origin,
}

/// An entry of the fast map: a descriptor owned by a live [`SyncFile`].
pub(super) struct ByFd {
    pub(super) known: Arc<Known>,
    /// The eventfd id, once read (`None`: not read yet; `Some(None)`: the kernel gives none).
    pub(super) id: Option<Option<u64>>,
}

/// An entry of an id-keyed map: valid while descriptor number `fd_no` refers to the
/// eventfd.
pub(super) struct Pinned<T> {
    pub(super) value: T,
    /// A duplicate of the eventfd, never read: it keeps the eventfd, and so its id,
    /// alive while the entry exists, so that the id cannot name another eventfd.
    pub(super) _pin: Arc<OwnedFd>,
    pub(super) fd_no: RawFd,
}

/// A hasher for descriptor numbers and eventfd ids: small integers the kernel hands out,
/// which nobody picks to collide, so one multiply by an odd constant does instead of
/// SipHash's rounds on the export → import path (the low bits, the bucket, stay distinct
/// for nearby numbers; the high bits, the table's tag, are mixed).
#[derive(Default, Clone, Copy)]
pub(super) struct IntHasher(u64);

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

pub(super) type IntMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IntHasher>>;

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
pub(super) const SWEEP_MIN: usize = 64;

/// A map keyed by eventfd id, swept each time it has doubled.
pub(super) struct SweptMap<T> {
    pub(super) map: IntMap<u64, Pinned<T>>,
    sweep_at: usize,
    /// Sweeps so far.
    pub(super) sweeps: u64,
}

impl<T> SweptMap<T> {
    pub(super) fn new() -> Self {
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
    pub(super) fn insert(&mut self, id: u64, p: Pinned<T>) -> Vec<Pinned<T>> {
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
pub(super) struct Registry {
    /// Descriptors owned by live [`SyncFile`]s, by number (the fast path).
    pub(super) by_fd: IntMap<RawFd, ByFd>,
    /// Sync files that left their [`SyncFile`] through `into_fd`, and proxies of other
    /// processes' sync files, by eventfd id.
    pub(super) by_id: SweptMap<Arc<Known>>,
    /// Liveness read ends received beside a descriptor ([`recv_fd`]), by eventfd id.
    pub(super) received: SweptMap<Arc<OwnedFd>>,
}

pub(super) fn registry() -> &'static Mutex<Registry> {
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

pub(super) fn default_name(f: &Fence) -> String {
    format!(
        "{}-{}{}-{}",
        f.driver_name(),
        f.timeline_name(),
        f.context().id(),
        f.seqno()
    )
}

/// Import without taking ownership: the fence behind `fd` (`sync_file_get_fence`).
///
/// # Errors
///
/// [`Error::Invalid`] (`EINVAL`) if `fd` is not a sync file (or no procfs to
/// tell); OS errors reading its fdinfo (`EMFILE`, `ENFILE`, `ENOMEM`) or duplicating it
/// for a proxy (`EMFILE`).
pub fn get_fence(fd: BorrowedFd<'_>) -> Result<Fence> {
    lookup(fd).map(|(k, _)| k.fence.clone())
}

/// The sync file behind `fd`, and its eventfd id when it was read.
pub(super) fn lookup(fd: BorrowedFd<'_>) -> Result<(Arc<Known>, Option<Option<u64>>)> {
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
    lookup_slow_with(fd, None)
}

/// [`lookup`] of a descriptor that just arrived with `live`, its origin's liveness
/// descriptor: one fdinfo read, and a new proxy takes `live` directly (nothing is
/// stashed). A sync file this process already knows by id is the answer (`live` is
/// dropped then: the known one keeps the liveness it was made with).
pub(super) fn lookup_received(
    fd: BorrowedFd<'_>,
    live: Option<OwnedFd>,
) -> Result<(Arc<Known>, Option<Option<u64>>)> {
    if let Some(e) = registry().lock().by_fd.get(&fd.as_raw_fd()) {
        return Ok((e.known.clone(), e.id));
    }
    let (known, id) = lookup_slow_with(fd, Some(live.map(Arc::new)))?;
    Ok((known, Some(id)))
}

/// [`lookup_slow`], with the liveness descriptor `given` (`Some`) instead of the one
/// stashed for the eventfd's id (`None`).
fn lookup_slow_with(
    fd: BorrowedFd<'_>,
    given: Option<Option<Arc<OwnedFd>>>,
) -> Result<(Arc<Known>, Option<u64>)> {
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
    let mut liveness = given.clone().flatten();
    if let Some(id) = info.id {
        let mut r = registry().lock();
        if let Some(k) = r.known_by_id(id, Some(fd.as_raw_fd())) {
            return Ok((k, info.id));
        }
        liveness = match &given {
            Some(g) => g.clone(),
            None => r.received.map.get(&id).map(|p| p.value.clone()),
        };
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
/// id when `fd` is not owned by a live [`SyncFile`]. With `share`, an export of this
/// process is marked shared (its descriptor is about to reach another holder).
///
/// # Errors
///
/// Those of `id`.
pub(super) fn writer_of(
    fd: BorrowedFd<'_>,
    id: impl FnOnce() -> Result<Option<u64>>,
    share: bool,
) -> Result<Option<Option<Arc<OwnedFd>>>> {
    let of = |k: &Known| match &k.origin {
        Origin::Local(e) => {
            if share {
                e.share();
            }
            Some(None)
        }
        Origin::Remote(l) => l.clone().map(Some),
    };
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
pub(super) fn stash_liveness(fd: BorrowedFd<'_>, live: OwnedFd) {
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

/// The sync files this process holds (live [`SyncFile`]s, and those that left theirs or
/// came from elsewhere), by name, each with its fence: for [`info_text`](super::info_text).
pub(super) fn live() -> Vec<(String, Fence)> {
    let r = registry().lock();
    let mut out: Vec<(String, Fence)> = r
        .by_fd
        .values()
        .map(|e| (e.known.name.clone(), e.known.fence.clone()))
        .chain(
            r.by_id
                .map
                .values()
                .map(|p| (p.value.name.clone(), p.value.fence.clone())),
        )
        .collect();
    drop(r);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup_by(|a, b| a.0 == b.0 && Fence::ptr_eq(&a.1, &b.1));
    out
}
