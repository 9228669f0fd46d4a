//! udmabuf (`/dev/udmabuf`): a caller's memfd ranges as a buffer. Creation checks
//! udmabuf's rules — page-aligned ranges, a size limit, a list limit, shmem (or
//! hugetlbfs) files only, sealed against shrinking and not against writing — in the
//! kernel's order, with its errnos; [`create`] and [`create_list`] (`UDMABUF_CREATE`,
//! `UDMABUF_CREATE_LIST`) export the ranges as one read-write buffer named `"udmabuf"`.
//!
//! The buffer shares the caller's memory (no copy; the ranges stay reachable through
//! the buffer for its whole life), maps shared only, and refuses `end_cpu_access` before
//! the first `begin_cpu_access` with `Invalid`, as udmabuf does.

use crate::buf::memory::{Backing, MemoryExporter, Rules};
use crate::buf::{export, DmaBuf, ExportInfo, FileFlags, Segment};
use crate::error::{Error, Result};
use dmabuf_mem::memfd::{page_size, Memfd};
use rustix::fd::{AsFd, BorrowedFd};
use rustix::fs::SealFlags;
use std::sync::Arc;

/// Largest buffer udmabuf makes (the kernel's default `size_limit_mb`, 64 MiB).
pub const SIZE_LIMIT: u64 = 64 << 20;
/// Most ranges in one list (the kernel's `list_limit`).
pub const LIST_LIMIT: usize = 1024;
/// The one flag honoured: close-on-exec for the new fd.
pub const FLAG_CLOEXEC: u32 = 0x01;

const TMPFS_MAGIC: i64 = 0x0102_1994;
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// One range of a caller's memfd (`struct udmabuf_create_item`).
#[derive(Clone, Copy, Debug)]
pub struct Item<'a> {
    /// The memfd.
    pub memfd: BorrowedFd<'a>,
    /// Byte offset in it (page-aligned).
    pub offset: u64,
    /// Length in bytes (page-aligned).
    pub size: u64,
}

/// Validate `items` with `flags` as `UDMABUF_CREATE_LIST` does, and return the memory as
/// segments (each memfd duplicated and mapped; the caller's fds are not consumed).
///
/// # Errors
///
/// Those listed at [`create_list`]; nothing is created on error.
pub(crate) fn collect(items: &[Item<'_>], flags: u32) -> Result<Vec<Segment>> {
    if flags & !FLAG_CLOEXEC != 0 {
        return Err(Error::Invalid("unknown udmabuf flags"));
    }
    if items.len() > LIST_LIMIT {
        return Err(Error::Invalid("more ranges than list_limit"));
    }
    let p = page_size() as u64;
    let mut total = 0u64;
    for it in items {
        if it.offset % p != 0 || it.size % p != 0 {
            return Err(Error::Invalid("range not page-aligned"));
        }
        total = total
            .checked_add(it.size)
            .filter(|&t| t <= SIZE_LIMIT)
            .ok_or(Error::Invalid("total size above size_limit"))?;
    }
    if total == 0 {
        return Err(Error::Invalid("zero-length buffer"));
    }
    let mut segs = Vec::with_capacity(items.len());
    for it in items {
        check_memfd(it.memfd)?;
        crate::fault::hit(crate::fault::Site::Dup)?;
        let mem = Arc::new(Memfd::from_fd(it.memfd.try_clone_to_owned()?)?);
        let end = it.offset.checked_add(it.size);
        if end.is_none_or(|e| e > mem.len() as u64) {
            return Err(Error::Invalid("range past the end of the memfd"));
        }
        segs.push(Segment::new(mem, it.offset as usize, it.size as usize)?);
    }
    Ok(segs)
}

/// `UDMABUF_CREATE`: the range `offset .. offset+size` of `memfd` as a buffer — the
/// one-item list of [`create_list`].
///
/// # Errors
///
/// Those of [`create_list`]; nothing is created on error.
pub fn create(memfd: BorrowedFd<'_>, offset: u64, size: u64, flags: u32) -> Result<DmaBuf> {
    create_list(
        &[Item {
            memfd,
            offset,
            size,
        }],
        flags,
    )
}

/// `UDMABUF_CREATE_LIST`: `items`, in order, as one buffer. [`FLAG_CLOEXEC`] concerns
/// only the kernel's fd and is accepted. The caller need hold no lock; none is taken
/// but the export's own.
///
/// # Errors
///
/// In the kernel's order: `Invalid` for flags other than [`FLAG_CLOEXEC`], more than
/// [`LIST_LIMIT`] items, an unaligned offset or size, a total above [`SIZE_LIMIT`], or a
/// zero total; then per item `BadFdState` (EBADFD) when the file is not shmem or
/// hugetlbfs, `Invalid` when it is not sealed against shrinking or is sealed against
/// writing, `Invalid` when the range passes the end of the file, `Os` when the fd
/// cannot be duplicated or mapped; then the export's errors. Nothing is created on
/// error.
pub fn create_list(items: &[Item<'_>], flags: u32) -> Result<DmaBuf> {
    let segs = collect(items, flags)?;
    let len = segs.iter().map(|s| s.len).sum();
    let ops = MemoryExporter::new(
        segs,
        Rules {
            shared_only: true,
            begin_before_end: true,
        },
        Backing::Imported,
    );
    let mut info = ExportInfo::new("udmabuf", len, ops);
    info.flags = FileFlags::RDWR;
    export(info)
}

/// The file checks of one item.
fn check_memfd(fd: BorrowedFd<'_>) -> Result<()> {
    let fs = rustix::fs::fstatfs(fd)?;
    let magic = fs.f_type as i64;
    if magic != TMPFS_MAGIC && magic != HUGETLBFS_MAGIC {
        return Err(Error::BadFdState("not a shmem or hugetlbfs file"));
    }
    let seals = rustix::fs::fcntl_get_seals(fd.as_fd())
        .map_err(|_| Error::BadFdState("file does not support seals"))?;
    if !seals.contains(SealFlags::SHRINK) {
        return Err(Error::Invalid("memfd not sealed against shrinking"));
    }
    if seals.intersects(SealFlags::WRITE | SealFlags::FUTURE_WRITE) {
        return Err(Error::Invalid("memfd sealed against writing"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::OwnedFd;
    use rustix::fs::MemfdFlags;

    fn memfd(pages: usize, seals: SealFlags) -> OwnedFd {
        let fd =
            rustix::fs::memfd_create("u", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&fd, (pages * page_size()) as u64).unwrap();
        if !seals.is_empty() {
            rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
        }
        fd
    }

    fn item(fd: &OwnedFd, offset: usize, size: usize) -> Item<'_> {
        Item {
            memfd: fd.as_fd(),
            offset: offset as u64,
            size: size as u64,
        }
    }

    #[test]
    fn sealed_memfd_ranges_become_segments_sharing_memory() {
        let p = page_size();
        let fd = memfd(4, SealFlags::SHRINK);
        let segs = collect(&[item(&fd, p, 2 * p), item(&fd, 0, p)], FLAG_CLOEXEC).unwrap();
        assert_eq!(segs.len(), 2);
        assert_eq!((segs[0].offset, segs[0].len), (p, 2 * p));
        // Same memory as the caller's memfd.
        segs[0].mem.map().write_at(p, b"shared").unwrap();
        let mut b = [0u8; 6];
        rustix::io::pread(&fd, &mut b, p as u64).unwrap();
        assert_eq!(&b, b"shared");
    }

    #[test]
    fn every_rule_has_its_errno() {
        let p = page_size();
        let good = memfd(4, SealFlags::SHRINK);
        let e = |r: Result<Vec<Segment>>| r.unwrap_err().errno();
        assert_eq!(e(collect(&[item(&good, 0, p)], 2)), 22, "unknown flag");
        let many: Vec<Item> = (0..LIST_LIMIT + 1).map(|_| item(&good, 0, p)).collect();
        assert_eq!(e(collect(&many, 0)), 22, "list limit");
        assert_eq!(e(collect(&[item(&good, 1, p)], 0)), 22, "unaligned offset");
        assert_eq!(
            e(collect(&[item(&good, 0, p + 1)], 0)),
            22,
            "unaligned size"
        );
        assert_eq!(e(collect(&[item(&good, 0, 0)], 0)), 22, "zero total");
        assert_eq!(e(collect(&[], 0)), 22, "empty list");
        let big = Item {
            memfd: good.as_fd(),
            offset: 0,
            size: SIZE_LIMIT + p as u64,
        };
        assert_eq!(e(collect(&[big], 0)), 22, "size limit");
        let wrap = Item {
            memfd: good.as_fd(),
            offset: 0,
            size: u64::MAX - (p as u64 - 1),
        };
        assert_eq!(e(collect(&[item(&good, 0, p), wrap], 0)), 22, "total wraps");
        let unsealed = memfd(4, SealFlags::empty());
        assert_eq!(
            e(collect(&[item(&unsealed, 0, p)], 0)),
            22,
            "no SHRINK seal"
        );
        let wsealed = memfd(4, SealFlags::SHRINK | SealFlags::WRITE);
        assert_eq!(e(collect(&[item(&wsealed, 0, p)], 0)), 22, "WRITE seal");
        let fwsealed = memfd(4, SealFlags::SHRINK | SealFlags::FUTURE_WRITE);
        assert_eq!(
            e(collect(&[item(&fwsealed, 0, p)], 0)),
            22,
            "FUTURE_WRITE seal"
        );
        assert_eq!(
            e(collect(&[item(&good, 3 * p, 2 * p)], 0)),
            22,
            "past the end"
        );
        // A pipe is not shmem.
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let not_shmem = Item {
            memfd: r.as_fd(),
            offset: 0,
            size: p as u64,
        };
        assert_eq!(e(collect(&[not_shmem], 0)), 77, "EBADFD");
        // Nothing was written to the good memfd by any failed call.
        let mut b = vec![1u8; 4 * p];
        rustix::io::pread(&good, &mut b, 0).unwrap();
        assert!(b.iter().all(|&x| x == 0));
    }
}
