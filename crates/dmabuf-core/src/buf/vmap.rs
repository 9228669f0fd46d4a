//! vmap: a CPU mapping of a whole buffer, reference-counted, made under the reservation
//! lock ([`LockedBuf::vmap`](super::LockedBuf::vmap)) or by [`DmaBuf::vmap_unlocked`]
//! with its guard.

use super::{must_not_hold_resv, DmaBuf, Segment};
use crate::error::{Error, Result};
use crate::resv::{ResvGuard, RESERVATION_WW_CLASS};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl DmaBuf {
    /// vmap proper ([`LockedBuf::vmap`](super::LockedBuf::vmap)); `lock` is this
    /// buffer's guard (checked by the caller).
    pub(super) fn vmap_locked(&self, lock: &ResvGuard<'_>) -> Result<VMap> {
        self.settle_owed(lock);
        if !self.inner.caps.vmap {
            return Err(Error::Invalid("exporter has no vmap"));
        }
        let mut l = self.inner.locked.lock();
        if let Some(v) = l.vmap.clone() {
            l.vmap_count += 1;
            return Ok(VMap {
                segs: v,
                _buf: self.clone(),
            });
        }
        drop(l);
        crate::fault::check(crate::fault::Site::Vmap)?;
        let segs = Arc::new(self.inner.ops.vmap(lock, self)?);
        let mut l = self.inner.locked.lock();
        l.vmap = Some(segs.clone());
        l.vmap_count = 1;
        Ok(VMap {
            segs,
            _buf: self.clone(),
        })
    }

    /// How many vmap references are live ([`LockedBuf::vmap`](super::LockedBuf::vmap)
    /// less [`LockedBuf::vunmap`](super::LockedBuf::vunmap)); 0 when the buffer is not vmapped. A snapshot: takes
    /// only the buffer's inner state lock, not the reservation lock.
    pub fn vmap_count(&self) -> usize {
        self.inner.locked.lock().vmap_count
    }

    /// vunmap proper, after settling ([`LockedBuf::vunmap`](super::LockedBuf::vunmap));
    /// `lock` is this buffer's guard (checked by the caller).
    pub(super) fn vunmap_locked(&self, lock: &ResvGuard<'_>, map: VMap) -> Result<()> {
        let mut l = self.inner.locked.lock();
        match &l.vmap {
            Some(v) if Arc::ptr_eq(v, &map.segs) && l.vmap_count > 0 => {}
            _ => return Err(Error::Invalid("vunmap of a mapping that is not live")),
        }
        l.vmap_count -= 1;
        if l.vmap_count == 0 {
            l.vmap = None;
            drop(l);
            self.inner.ops.vunmap(lock, self);
        }
        Ok(())
    }

    /// [`LockedBuf::vmap`](super::LockedBuf::vmap) taking the lock itself; the mapping is
    /// dropped (vunmapped, locking again) with the returned guard.
    ///
    /// Must not hold a reservation lock.
    ///
    /// # Errors
    ///
    /// `Invalid` (with a lockdep report) when this thread holds a reservation lock; then
    /// those of [`LockedBuf::vmap`](super::LockedBuf::vmap).
    #[track_caller]
    #[must_use = "the vmap is vunmapped when the returned guard drops"]
    pub fn vmap_unlocked(&self) -> Result<VMapGuard> {
        must_not_hold_resv("dma_buf_vmap_unlocked")?;
        let g = self.inner.resv.lock_no_ctx()?;
        let map = self.vmap_locked(&g)?;
        Ok(VMapGuard {
            buf: self.clone(),
            map: Some(map),
        })
    }

    fn defer_vunmap(&self, map: VMap) {
        let mut l = self.inner.locked.lock();
        l.owed_vmaps.push(map.segs.clone());
        self.inner.owed.store(true, Ordering::SeqCst);
    }
}

/// A CPU mapping of a whole buffer ([`LockedBuf::vmap`](super::LockedBuf::vmap)). Reads
/// and writes copy; CPU access still needs begin/end CPU access for coherency.
#[derive(Clone)]
#[must_use = "a vmap reference must be given back with LockedBuf::vunmap; dropping the VMap does not"]
pub struct VMap {
    pub(super) segs: Arc<Vec<Segment>>,
    /// Keeps the buffer — and so its memory — alive while any copy of the mapping is:
    /// a stale copy must never reach memory already given to another buffer.
    pub(super) _buf: DmaBuf,
}

impl std::fmt::Debug for VMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VMap")
            .field("segments", &self.segs.len())
            .finish()
    }
}

impl VMap {
    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.segs.iter().map(|s| s.len).sum()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn pieces(&self, offset: usize, len: usize) -> Result<Vec<(Segment, usize, usize)>> {
        let end = offset
            .checked_add(len)
            .ok_or(Error::Overflow("offset + length wraps"))?;
        if end > self.len() {
            return Err(Error::Invalid("range past the end of the vmap"));
        }
        let mut out = Vec::new();
        let (mut at, mut base) = (offset, 0usize);
        for s in self.segs.iter() {
            let s_end = base + s.len;
            if at < s_end && at < end {
                let n = (end.min(s_end)) - at;
                out.push((s.clone(), at - base, n));
                at += n;
            }
            base = s_end;
        }
        Ok(out)
    }

    /// Copy bytes at `offset` into `buf`.
    ///
    /// # Errors
    ///
    /// `Invalid` past the end, `Overflow` if the range wraps; nothing copied.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        for (s, off, n) in self.pieces(offset, buf.len())? {
            s.mem
                .map()
                .read_at(s.offset + off, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// Copy `data` to `offset`.
    ///
    /// # Errors
    ///
    /// As [`read_at`](Self::read_at); nothing written.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        let mut done = 0;
        for (s, off, n) in self.pieces(offset, data.len())? {
            s.mem
                .map()
                .write_at(s.offset + off, &data[done..done + n])?;
            done += n;
        }
        Ok(())
    }
}

/// A vmap that is vunmapped (taking the reservation lock) when dropped.
///
/// Dropping it while the thread holds a reservation lock (this buffer's or another's, as
/// lockdep sees it) is reported once (lockdep `Misuse`) and the vunmap DEFERRED to the
/// next call holding this buffer's lock (`vmap`, `vunmap`, `move_notify`, `attachments`,
/// attach, detach — not an attachment's map/unmap, whose fast path stays one load); a
/// vunmap still owed when the last buffer reference
/// drops is counted done, the exporter's release freeing the memory. With lockdep off
/// this cannot be seen: the drop locks, and under its own buffer's lock it deadlocks,
/// as the kernel's violation would.
#[must_use = "dropping the guard vunmaps at once"]
pub struct VMapGuard {
    buf: DmaBuf,
    map: Option<VMap>,
}

impl VMapGuard {
    /// The mapping.
    pub fn map(&self) -> &VMap {
        self.map.as_ref().expect("live until drop")
    }
}

impl std::ops::Deref for VMapGuard {
    type Target = VMap;
    fn deref(&self) -> &VMap {
        self.map()
    }
}

impl Drop for VMapGuard {
    fn drop(&mut self) {
        if let Some(m) = self.map.take() {
            if lockdep::is_held(RESERVATION_WW_CLASS.lock_class()) {
                // Defer first: the report may panic (the default policy).
                self.buf.defer_vunmap(m);
                let whose = if self.buf.resv().is_held_by_current_thread() {
                    "its own buffer's"
                } else {
                    "another buffer's"
                };
                lockdep::report(
                    lockdep::ReportKind::Misuse,
                    &[RESERVATION_WW_CLASS.lock_class()],
                    &format!(
                        "vmap of dma-buf {} dropped while holding {whose} reservation lock; \
                         the vunmap is deferred to the next locked call on the buffer",
                        self.buf.ino()
                    ),
                );
                return;
            }
            match self.buf.resv().lock_no_ctx() {
                Ok(g) => {
                    self.buf.settle_owed(&g);
                    let _ = self.buf.vunmap_locked(&g, m);
                }
                // This thread holds the buffer's lock and lockdep is off (else the
                // branch above ran): defer, as above, rather than wait forever.
                Err(_) => self.buf.defer_vunmap(m),
            }
        }
    }
}
