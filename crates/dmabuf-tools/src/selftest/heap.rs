//! Ports of the kernel's dmabuf-heaps selftest, run against every heap of the
//! process-wide registry ([`heaps()`]), and of udmabuf's create rules.
//!
//! Per heap (`dmabuf-heaps/<heap>/…`): open and lookup; allocations of several sizes;
//! allocate, map, write a pattern under the SYNC ioctl, import into a device (a
//! non-coherent one, standing in for vgem) and write again under SYNC; the older and
//! newer (smaller and larger) ioctl structs; the error cases (fd, fd_flags, heap_flags,
//! zero length, unknown heap, unknown ioctl); allocations are zeroed (32 buffers filled
//! and freed, 32 more checked, at 4 KiB and 1 MiB); mmap, write and read back, the
//! access mode and the shared-only rule.

use crate::buf::{sync_flags, Direction, DmaBuf};
use crate::device::Device;
use crate::heap::udmabuf::{self, Item};
use crate::heap::{
    heaps, ioc, AllocData, HeapFile, DMA_HEAP_IOCTL_ALLOC, O_CLOEXEC, O_RDONLY, O_RDWR,
};
use lockdep::selftest::Case;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{MemfdFlags, SealFlags};

use crate::selftest::{ensure, R};

fn s<T>(r: crate::Result<T>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

fn errno<T>(r: crate::Result<T>) -> i32 {
    r.err().map_or(0, |e| e.errno())
}

const ONE_MEG: usize = 1 << 20;

/// The heaps the per-heap cases run on, in this order.
pub const HEAPS: [&str; 2] = ["system", "contig"];

fn open(h: usize) -> Result<HeapFile, String> {
    s(heaps().open(HEAPS[h]))
}

fn alloc(f: &HeapFile, len: usize) -> Result<DmaBuf, String> {
    s(f.alloc(&AllocData::new(len as u64)))
}

/// Every heap scenario.
pub(crate) fn cases() -> Vec<Case> {
    case_table![
        "dmabuf-heaps/system/open" => open_lookup::<0>,
        "dmabuf-heaps/contig/open" => open_lookup::<1>,
        "dmabuf-heaps/system/alloc-sizes" => alloc_sizes::<0>,
        "dmabuf-heaps/contig/alloc-sizes" => alloc_sizes::<1>,
        "dmabuf-heaps/system/alloc-and-import" => alloc_and_import::<0>,
        "dmabuf-heaps/contig/alloc-and-import" => alloc_and_import::<1>,
        "dmabuf-heaps/system/alloc-compat" => alloc_compat::<0>,
        "dmabuf-heaps/contig/alloc-compat" => alloc_compat::<1>,
        "dmabuf-heaps/system/alloc-errors" => alloc_errors::<0>,
        "dmabuf-heaps/contig/alloc-errors" => alloc_errors::<1>,
        "dmabuf-heaps/system/alloc-zeroed" => alloc_zeroed::<0>,
        "dmabuf-heaps/contig/alloc-zeroed" => alloc_zeroed::<1>,
        "dmabuf-heaps/system/sync-ioctl" => sync_ioctl::<0>,
        "dmabuf-heaps/contig/sync-ioctl" => sync_ioctl::<1>,
        "dmabuf-heaps/system/mmap" => mmap::<0>,
        "dmabuf-heaps/contig/mmap" => mmap::<1>,
        "dmabuf-heaps/udmabuf/create" => udmabuf_create,
        "dmabuf-heaps/udmabuf/create-list" => udmabuf_create_list,
        "dmabuf-heaps/udmabuf/errors" => udmabuf_errors,
        "dmabuf-heaps/udmabuf/cpu-access-order" => udmabuf_cpu_order,
    ]
}

fn open_lookup<const H: usize>() -> R {
    let f = open(H)?;
    ensure(f.heap().name() == HEAPS[H], "opened the heap asked for")?;
    ensure(
        heaps().names().iter().any(|n| n == HEAPS[H]),
        "listed in the registry",
    )?;
    ensure(
        errno(heaps().open("no-such-heap")) == 19,
        "unknown heap: ENODEV",
    )?;
    ensure(errno(heaps().open("")) == 19, "empty heap name: ENODEV")
}

fn alloc_sizes<const H: usize>() -> R {
    let f = open(H)?;
    let p = crate::mem::memfd::page_size();
    for len in [p, 16 * p, ONE_MEG, ONE_MEG + p, 4 * ONE_MEG] {
        let b = alloc(&f, len)?;
        ensure(b.size() == len, "size as asked")?;
        ensure(b.exp_name() == HEAPS[H], "exp_name is the heap's name")?;
    }
    let b = alloc(&f, 1)?;
    ensure(b.size() == p, "length rounded up to a page")?;
    let b = alloc(&f, p + 1)?;
    ensure(b.size() == 2 * p, "length rounded up to pages")
}

fn alloc_and_import<const H: usize>() -> R {
    let f = open(H)?;
    let b = alloc(&f, ONE_MEG)?;
    let m = s(b.mmap(0, ONE_MEG / crate::mem::memfd::page_size(), true))?;
    let map = m.mapping();
    s(b.sync_ioctl(sync_flags::START | sync_flags::RW))?;
    s(map.fill(0, ONE_MEG / 2, 1))?;
    s(map.fill(ONE_MEG / 2, ONE_MEG / 2, 0))?;
    s(b.sync_ioctl(sync_flags::END | sync_flags::RW))?;
    // The importer: a non-coherent device, so a missing sync would show.
    let dev = s(Device::new("vgem", u32::MAX as u64, false, false))?;
    let att = s(b.attach(&dev))?;
    let sg = s(att.map_unlocked(Direction::Bidirectional))?;
    let iova = sg.table().entries()[0].dma_addr;
    let mut got = [0u8; 2];
    s(dev.dma().iommu().read(iova, &mut got[..1]))?;
    s(dev
        .dma()
        .iommu()
        .read(iova + ONE_MEG as u64 / 2, &mut got[1..]))?;
    ensure(got == [1, 0], "the device sees the pattern")?;
    s(b.sync_ioctl(sync_flags::START | sync_flags::RW))?;
    s(map.fill(0, ONE_MEG, 0xff))?;
    s(b.sync_ioctl(sync_flags::END | sync_flags::RW))?;
    let mut got = [0u8; 1];
    s(dev.dma().iommu().read(iova + ONE_MEG as u64 - 1, &mut got))?;
    ensure(
        got == [0xff],
        "the device sees the CPU writes after SYNC_END",
    )?;
    // The device writes; SYNC_START brings it to the CPU.
    s(dev.dma().iommu().write(iova + 8, b"dev"))?;
    s(b.sync_ioctl(sync_flags::START | sync_flags::READ))?;
    let mut back = [0u8; 3];
    s(map.read_at(8, &mut back))?;
    ensure(
        &back == b"dev",
        "the CPU sees device writes after SYNC_START",
    )?;
    s(b.sync_ioctl(sync_flags::END | sync_flags::READ))?;
    drop(sg);
    att.detach().map_err(|e| e.0.to_string())
}

fn alloc_compat<const H: usize>() -> R {
    let f = open(H)?;
    let full = AllocData::new(ONE_MEG as u64).to_bytes();
    // An older, smaller struct: no heap_flags (zero-extended).
    let older = ioc(3, b'H', 0, 16);
    let b = s(f.ioctl(older, &full[..16]))?;
    ensure(b.size() == ONE_MEG, "older struct allocates")?;
    // A newer, larger struct: unknown trailing fields ignored.
    let mut newer = full.to_vec();
    newer.extend_from_slice(&0xffff_ffffu64.to_ne_bytes());
    newer.extend_from_slice(&0x8888_8888u64.to_ne_bytes());
    newer.extend_from_slice(&0x1111_1111u64.to_ne_bytes());
    let b = s(f.ioctl(ioc(3, b'H', 0, newer.len()), &newer))?;
    ensure(b.size() == ONE_MEG, "newer struct allocates")?;
    let b = s(f.ioctl(DMA_HEAP_IOCTL_ALLOC, &full))?;
    ensure(b.size() == ONE_MEG, "current struct allocates")
}

fn alloc_errors<const H: usize>() -> R {
    let f = open(H)?;
    let len = ONE_MEG as u64;
    let bad_fd = AllocData {
        fd: 3,
        ..AllocData::new(len)
    };
    ensure(errno(f.alloc(&bad_fd)) == 22, "fd != 0: EINVAL")?;
    let bad_heap_flags = AllocData {
        heap_flags: 0x111111,
        ..AllocData::new(len)
    };
    ensure(errno(f.alloc(&bad_heap_flags)) == 22, "heap_flags: EINVAL")?;
    let bad_fd_flags = AllocData {
        fd_flags: !(O_RDWR | O_CLOEXEC),
        ..AllocData::new(len)
    };
    ensure(errno(f.alloc(&bad_fd_flags)) == 22, "fd_flags: EINVAL")?;
    ensure(
        errno(f.alloc(&AllocData::new(0))) == 22,
        "zero length: EINVAL",
    )?;
    ensure(
        errno(f.alloc(&AllocData::new(u64::MAX))) == 22,
        "length wraps to zero: EINVAL",
    )?;
    ensure(
        errno(heaps().alloc("no-such-heap", &AllocData::new(len))) == 19,
        "unknown heap: ENODEV",
    )?;
    let full = AllocData::new(len).to_bytes();
    ensure(
        errno(f.ioctl(ioc(3, b'H', 1, 24), &full)) == 22,
        "ioctl nr beyond the table: EINVAL",
    )?;
    ensure(
        errno(f.ioctl(DMA_HEAP_IOCTL_ALLOC, &full[..8])) == 14,
        "argument shorter than the ioctl size: EFAULT",
    )
}

fn alloc_zeroed<const H: usize>() -> R {
    let f = open(H)?;
    let p = crate::mem::memfd::page_size();
    for len in [p, ONE_MEG] {
        let mut bufs = Vec::new();
        for _ in 0..32 {
            let b = alloc(&f, len)?;
            let m = s(b.mmap(0, len / p, true))?;
            s(m.mapping().fill(0, len, 0xff))?;
            bufs.push(b);
        }
        drop(bufs);
        for _ in 0..32 {
            let b = alloc(&f, len)?;
            let m = s(b.mmap(0, len / p, false))?;
            let mut data = vec![0xAAu8; len];
            s(m.mapping().read_at(0, &mut data))?;
            ensure(
                data.iter().all(|&x| x == 0),
                "a new buffer shows no freed buffer's data",
            )?;
        }
    }
    Ok(())
}

fn sync_ioctl<const H: usize>() -> R {
    let f = open(H)?;
    let b = alloc(&f, ONE_MEG)?;
    ensure(errno(b.sync_ioctl(8)) == 22, "unknown sync bit: EINVAL")?;
    ensure(
        errno(b.sync_ioctl(sync_flags::START)) == 22,
        "neither READ nor WRITE: EINVAL",
    )?;
    for flags in [sync_flags::READ, sync_flags::WRITE, sync_flags::RW] {
        s(b.sync_ioctl(sync_flags::START | flags))?;
        s(b.sync_ioctl(sync_flags::END | flags))?;
    }
    Ok(())
}

fn mmap<const H: usize>() -> R {
    let f = open(H)?;
    let p = crate::mem::memfd::page_size();
    let b = alloc(&f, 4 * p)?;
    let w = s(b.mmap(1, 2, true))?;
    s(w.mapping().write_at(p - 3, b"heap!!"))?;
    let r = s(b.mmap(0, 4, false))?;
    let mut got = [0u8; 6];
    s(r.mapping().read_at(2 * p - 3, &mut got))?;
    ensure(&got == b"heap!!", "a second mapping reads the write back")?;
    let v = s(b.vmap_unlocked())?;
    let mut got = [0u8; 6];
    s(v.read_at(2 * p - 3, &mut got))?;
    ensure(&got == b"heap!!", "vmap reads the write back")?;
    drop(v);
    ensure(errno(b.mmap(3, 2, false)) == 22, "past the end: EINVAL")?;
    let private = b.mmap_with(0, 1, true, false);
    if H == 0 {
        let m = s(private)?;
        s(m.mapping().write_at(0, b"mine"))?;
        let mut got = [0u8; 4];
        s(r.mapping().read_at(0, &mut got))?;
        ensure(got == [0; 4], "private writes stay private")?;
    } else {
        ensure(errno(private) == 22, "private mapping of contig: EINVAL")?;
    }
    let ro = s(f.alloc(&AllocData {
        fd_flags: O_RDONLY | O_CLOEXEC,
        ..AllocData::new(p as u64)
    }))?;
    ensure(!ro.flags().write, "O_RDONLY buffer is read-only")?;
    ensure(
        errno(ro.mmap(0, 1, true)) == 13,
        "shared writable map of an O_RDONLY buffer: EACCES",
    )?;
    s(ro.mmap(0, 1, false)).map(|_| ())
}

fn memfd(pages: usize) -> Result<OwnedFd, String> {
    let p = crate::mem::memfd::page_size();
    let fd = s(rustix::fs::memfd_create(
        "udmabuf-test",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(Into::into))?;
    s(rustix::fs::ftruncate(&fd, (pages * p) as u64).map_err(Into::into))?;
    s(rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK).map_err(Into::into))?;
    Ok(fd)
}

fn udmabuf_create() -> R {
    let p = crate::mem::memfd::page_size();
    let fd = memfd(4)?;
    let b = s(udmabuf::create(fd.as_fd(), p as u64, 2 * p as u64, 0))?;
    ensure(b.size() == 2 * p, "size of the range")?;
    ensure(b.exp_name() == "udmabuf", "exp_name")?;
    let m = s(b.mmap(0, 2, true))?;
    s(m.mapping().write_at(p, b"udma"))?;
    let mut got = [0u8; 4];
    s(rustix::io::pread(&fd, &mut got, 2 * p as u64).map_err(Into::into))?;
    ensure(&got == b"udma", "the buffer is the memfd's memory")?;
    ensure(
        errno(b.mmap_with(0, 1, false, false)) == 22,
        "private mapping: EINVAL",
    )?;
    let b = s(udmabuf::create(
        fd.as_fd(),
        0,
        p as u64,
        udmabuf::FLAG_CLOEXEC,
    ))?;
    ensure(b.size() == p, "CLOEXEC is accepted")
}

fn udmabuf_create_list() -> R {
    let p = crate::mem::memfd::page_size();
    let (a, c) = (memfd(2)?, memfd(2)?);
    let items = [
        Item {
            memfd: a.as_fd(),
            offset: p as u64,
            size: p as u64,
        },
        Item {
            memfd: c.as_fd(),
            offset: 0,
            size: 2 * p as u64,
        },
    ];
    let b = s(udmabuf::create_list(&items, 0))?;
    ensure(b.size() == 3 * p, "sum of the ranges")?;
    // One mapping across both memfds.
    let m = s(b.mmap(0, 3, true))?;
    s(m.mapping().write_at(p - 2, b"abcd"))?;
    let mut got = [0u8; 2];
    s(rustix::io::pread(&a, &mut got, 2 * p as u64 - 2).map_err(Into::into))?;
    ensure(&got == b"ab", "first range is the first memfd")?;
    s(rustix::io::pread(&c, &mut got, 0).map_err(Into::into))?;
    ensure(&got == b"cd", "second range is the second memfd")?;
    let dev = Device::simple("udma-dev");
    let att = s(b.attach(&dev))?;
    let sg = s(att.map_unlocked(Direction::ToDevice))?;
    ensure(sg.table().len() == 2, "one table entry per range")?;
    let mut got = [0u8; 4];
    s(dev
        .dma()
        .iommu()
        .read(sg.table().entries()[0].dma_addr + p as u64 - 2, &mut got))?;
    ensure(&got == b"abcd", "the device sees the ranges back to back")
}

fn udmabuf_errors() -> R {
    let p = crate::mem::memfd::page_size() as u64;
    let fd = memfd(4)?;
    ensure(
        errno(udmabuf::create(fd.as_fd(), 0, p, 2)) == 22,
        "unknown flag: EINVAL",
    )?;
    ensure(
        errno(udmabuf::create(fd.as_fd(), 1, p, 0)) == 22,
        "unaligned offset: EINVAL",
    )?;
    ensure(
        errno(udmabuf::create(fd.as_fd(), 0, p - 1, 0)) == 22,
        "unaligned size: EINVAL",
    )?;
    ensure(
        errno(udmabuf::create(fd.as_fd(), 0, 0, 0)) == 22,
        "zero size: EINVAL",
    )?;
    ensure(
        errno(udmabuf::create(fd.as_fd(), 0, udmabuf::SIZE_LIMIT + p, 0)) == 22,
        "above size_limit: EINVAL",
    )?;
    ensure(
        errno(udmabuf::create(fd.as_fd(), 3 * p, 2 * p, 0)) == 22,
        "past the end of the memfd: EINVAL",
    )?;
    let items: Vec<Item> = (0..udmabuf::LIST_LIMIT + 1)
        .map(|_| Item {
            memfd: fd.as_fd(),
            offset: 0,
            size: p,
        })
        .collect();
    ensure(
        errno(udmabuf::create_list(&items, 0)) == 22,
        "more than list_limit: EINVAL",
    )?;
    let unsealed = s(rustix::fs::memfd_create("u", MemfdFlags::ALLOW_SEALING).map_err(Into::into))?;
    s(rustix::fs::ftruncate(&unsealed, p).map_err(Into::into))?;
    ensure(
        errno(udmabuf::create(unsealed.as_fd(), 0, p, 0)) == 22,
        "not sealed against shrinking: EINVAL",
    )?;
    s(
        rustix::fs::fcntl_add_seals(&unsealed, SealFlags::SHRINK | SealFlags::WRITE)
            .map_err(Into::into),
    )?;
    ensure(
        errno(udmabuf::create(unsealed.as_fd(), 0, p, 0)) == 22,
        "sealed against writing: EINVAL",
    )?;
    let (r, _w) = s(rustix::pipe::pipe().map_err(Into::into))?;
    ensure(
        errno(udmabuf::create(r.as_fd(), 0, p, 0)) == 77,
        "not shmem: EBADFD",
    )
}

fn udmabuf_cpu_order() -> R {
    let fd = memfd(1)?;
    let p = crate::mem::memfd::page_size() as u64;
    let b = s(udmabuf::create(fd.as_fd(), 0, p, 0))?;
    ensure(
        errno(b.sync_ioctl(sync_flags::END | sync_flags::RW)) == 22,
        "end before any begin: EINVAL",
    )?;
    s(b.sync_ioctl(sync_flags::START | sync_flags::RW))?;
    s(b.sync_ioctl(sync_flags::END | sync_flags::RW))?;
    // Once begun, later ends are fine (udmabuf keeps its table).
    s(b.sync_ioctl(sync_flags::END | sync_flags::WRITE))?;
    let other = s(udmabuf::create(fd.as_fd(), 0, p, 0))?;
    ensure(
        errno(other.end_cpu_access(Direction::ToDevice)) == 22,
        "the rule is per buffer",
    )
}
