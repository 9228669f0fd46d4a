//! Unit tests of the heaps: every entry point's bad inputs (with their errnos, leaving
//! pools, regions and registries as they were), the system heap's tables and pool, the
//! contiguous heap, the heap exporter's CPU-access syncs, udmabuf buffers.

use super::contig::ContigHeap;
use super::system::{self, SystemHeap};
use super::*;
use crate::buf::{sync_flags, Direction};
use crate::device::Device;
use dmabuf_mem::memfd::page_size;
use rustix::fd::AsFd;
use rustix::fs::{MemfdFlags, SealFlags};
use std::sync::Arc;

const MIB: usize = 1 << 20;

fn errno<T>(r: Result<T>) -> i32 {
    r.err().map_or(0, |e| e.errno())
}

fn msg<T>(r: Result<T>) -> &'static str {
    match r {
        Err(Error::Invalid(m)) => m,
        _ => "",
    }
}

fn sys() -> Arc<SystemHeap> {
    SystemHeap::with_options(
        "system",
        system::Options {
            pool_limit: 64 * MIB,
            prefault: false,
        },
    )
}

fn file(h: Arc<dyn Heap>) -> HeapFile {
    let r = HeapRegistry::new();
    r.add(h).unwrap();
    r.open(&r.names()[0]).unwrap()
}

struct Named(String);
impl Heap for Named {
    fn name(&self) -> &str {
        &self.0
    }
    fn allocate(&self, _: usize, _: FileFlags, _: u64) -> Result<DmaBuf> {
        Err(Error::NoMem)
    }
}

fn named(n: &str) -> Arc<dyn Heap> {
    Arc::new(Named(n.to_string()))
}

#[test]
fn heap_add_rules() {
    let r = HeapRegistry::new();
    assert!(r.is_empty());
    assert_eq!(errno(r.add(named(""))), 22, "empty name");
    assert!(r.is_empty());
    r.add(named("a")).unwrap();
    assert_eq!(errno(r.add(named("a"))), 22, "duplicate");
    assert_eq!(r.names(), ["a"]);
    for i in 1..MAX_HEAPS {
        r.add(named(&format!("h{i}"))).unwrap();
    }
    assert_eq!(r.len(), MAX_HEAPS);
    assert_eq!(
        errno(r.add(named("one-too-many"))),
        16,
        "no free minor: EBUSY"
    );
    assert_eq!(errno(r.add(named(""))), 22, "empty name is checked first");
    assert_eq!(r.len(), MAX_HEAPS);
    assert!(r.get("one-too-many").is_none());
    assert_eq!(r.names()[..2], ["a", "h1"], "registration order");
}

#[test]
fn open_unknown_is_enodev_before_any_argument_check() {
    let r = HeapRegistry::new();
    r.add(sys()).unwrap();
    assert_eq!(errno(r.open("nope")), 19);
    let bad = AllocData {
        fd: 1,
        ..AllocData::new(0)
    };
    assert_eq!(errno(r.alloc("nope", &bad)), 19, "open fails first");
    assert_eq!(errno(r.alloc("system", &bad)), 22);
}

#[test]
fn alloc_checks_in_the_uapi_order_and_changes_nothing() {
    let h = sys();
    let f = file(h.clone());
    let p = page_size() as u64;
    // Warm the pool with one page so "unchanged" is visible.
    drop(f.alloc(&AllocData::new(p)).unwrap());
    let pooled = h.pool().pooled_bytes();
    assert_eq!(pooled, p as usize);
    let all_bad = AllocData {
        len: 0,
        fd: 5,
        fd_flags: 0x8000_0000,
        heap_flags: 1,
    };
    assert!(msg(f.alloc(&all_bad)).contains("fd must be 0"));
    let d = AllocData { fd: 0, ..all_bad };
    assert!(msg(f.alloc(&d)).contains("fd_flags"));
    let d = AllocData {
        fd_flags: O_RDWR,
        ..d
    };
    assert!(msg(f.alloc(&d)).contains("heap flags"));
    let d = AllocData { heap_flags: 0, ..d };
    assert!(msg(f.alloc(&d)).contains("zero"));
    for len in [0, u64::MAX, u64::MAX - p + 2] {
        assert_eq!(errno(f.alloc(&AllocData { len, ..d })), 22, "len {len:#x}");
    }
    for fd_flags in [!(O_RDWR | O_CLOEXEC), 0o4000, 0o100] {
        let d = AllocData {
            fd_flags,
            ..AllocData::new(p)
        };
        assert_eq!(errno(f.alloc(&d)), 22, "fd_flags {fd_flags:#o}");
    }
    assert_eq!(
        h.pool().pooled_bytes(),
        pooled,
        "nothing taken from the pool"
    );
    // Direct heap calls check too.
    assert_eq!(errno(h.allocate(0, FileFlags::RDWR, 0)), 22);
    assert_eq!(errno(h.allocate(1, FileFlags::RDWR, 0)), 22, "unaligned");
    assert_eq!(errno(h.allocate(p as usize, FileFlags::RDWR, 2)), 22);
    assert_eq!(h.pool().pooled_bytes(), pooled);
    // Every valid combination works.
    for acc in [O_RDONLY, O_WRONLY, O_RDWR, O_ACCMODE] {
        for cloexec in [0, O_CLOEXEC] {
            let d = AllocData {
                fd_flags: acc | cloexec,
                ..AllocData::new(1)
            };
            assert_eq!(f.alloc(&d).unwrap().size(), p as usize);
        }
    }
}

#[test]
fn access_mode_decides_the_file_flags() {
    let f = file(sys());
    let with = |fd_flags| {
        f.alloc(&AllocData {
            fd_flags,
            ..AllocData::new(page_size() as u64)
        })
        .unwrap()
    };
    let ro = with(O_RDONLY);
    assert_eq!(ro.flags(), FileFlags::RDONLY);
    assert_eq!(errno(ro.mmap(0, 1, true)), 13, "shared writable: EACCES");
    assert!(ro.mmap(0, 1, false).is_ok());
    let m = ro.mmap_with(0, 1, true, false).unwrap();
    m.mapping().write_at(0, b"cow").unwrap();
    let wo = with(O_WRONLY);
    assert!(wo.flags().write && !wo.flags().read);
    assert_eq!(errno(wo.mmap(0, 1, false)), 13, "not readable: EACCES");
    assert_eq!(with(O_RDWR).flags(), FileFlags::RDWR);
    let none = with(O_ACCMODE);
    assert!(!none.flags().read && !none.flags().write);
}

#[test]
fn ioctl_dispatch_and_struct_sizes() {
    let f = file(sys());
    let p = page_size() as u64;
    let full = AllocData::new(p).to_bytes();
    assert_eq!(DMA_HEAP_IOCTL_ALLOC, 0xC018_4800);
    assert_eq!(
        f.ioctl(DMA_HEAP_IOCTL_ALLOC, &full).unwrap().size(),
        p as usize
    );
    assert_eq!(
        f.ioctl(ioc(3, b'H', 0, 16), &full[..16]).unwrap().size(),
        p as usize
    );
    let mut big = full.to_vec();
    big.extend_from_slice(&[0xff; 24]);
    assert_eq!(
        f.ioctl(ioc(3, b'H', 0, 48), &big).unwrap().size(),
        p as usize
    );
    assert_eq!(errno(f.ioctl(ioc(3, b'H', 1, 24), &full)), 22, "nr 1");
    assert_eq!(
        errno(f.ioctl(ioc(3, b'H', 0, 24), &full[..23])),
        14,
        "short"
    );
    // Without the write direction nothing is copied in: len 0.
    assert_eq!(errno(f.ioctl(ioc(2, b'H', 0, 24), &full)), 22);
    let bad = AllocData {
        fd: 9,
        ..AllocData::new(p)
    }
    .to_bytes();
    assert_eq!(errno(f.ioctl(DMA_HEAP_IOCTL_ALLOC, &bad)), 22);
}

#[test]
fn system_tables_use_large_chunks_first() {
    let h = sys();
    let p = page_size();
    let big = p << 8;
    let mid = p << 4;
    let b = h
        .allocate(2 * big + mid + 3 * p, FileFlags::RDWR, 0)
        .unwrap();
    let dev = Device::simple("d");
    let att = b.attach(&dev).unwrap();
    let sg = att.map_unlocked(Direction::ToDevice).unwrap();
    let lens: Vec<usize> = sg.table().segments().map(|s| s.len).collect();
    assert_eq!(lens, [big, big, mid, p, p, p]);
    let offs: Vec<usize> = sg.table().segments().map(|s| s.offset).collect();
    assert_eq!(offs[..3], [0, big, 2 * big]);
    let b16 = h.allocate(16 * MIB, FileFlags::RDWR, 0).unwrap();
    let att16 = b16.attach(&dev).unwrap();
    let sg16 = att16.map_unlocked(Direction::ToDevice).unwrap();
    assert_eq!(sg16.table().len(), 16 * MIB / big);
    assert_eq!(sg16.table().total_len(), 16 * MIB);
}

#[test]
fn system_huge_requests_are_enomem_and_change_nothing() {
    let h = sys();
    let p = page_size();
    drop(h.allocate(p, FileFlags::RDWR, 0).unwrap());
    let pooled = h.pool().pooled_bytes();
    for len in [1usize << 62, usize::MAX / p * p] {
        assert_eq!(errno(h.allocate(len, FileFlags::RDWR, 0)), 12, "{len:#x}");
    }
    let f = file(h.clone());
    assert_eq!(errno(f.alloc(&AllocData::new(u64::MAX - 2 * p as u64))), 12);
    assert_eq!(h.pool().pooled_bytes(), pooled);
}

#[test]
fn chunking_rejects_bad_lengths() {
    let p = page_size();
    let m = Arc::new(dmabuf_mem::memfd::Memfd::create("c", 4, false).unwrap());
    assert_eq!(errno(system::chunk_segments(&m, 0)), 22);
    assert_eq!(errno(system::chunk_segments(&m, p + 1)), 22);
    assert_eq!(errno(system::chunk_segments(&m, 5 * p)), 22);
    assert_eq!(system::chunk_segments(&m, 4 * p).unwrap().len(), 4);
}

struct BadMmap(Arc<dmabuf_mem::memfd::Memfd>);
impl crate::buf::Exporter for BadMmap {
    fn caps(&self) -> crate::buf::Caps {
        crate::buf::Caps {
            mmap: true,
            ..Default::default()
        }
    }
    fn map(
        &self,
        _: &crate::resv::ResvGuard<'_>,
        _: &crate::buf::Attachment,
        _: Direction,
    ) -> Result<crate::buf::SgTable> {
        Err(Error::NoMem)
    }
    fn unmap(
        &self,
        _: &crate::resv::ResvGuard<'_>,
        _: &crate::buf::Attachment,
        _: crate::buf::SgTable,
        _: Direction,
    ) {
    }
    fn release(&self, _: u64) {}
    fn mmap(&self, _: &DmaBuf, _: usize, _: usize, _: bool) -> Result<Vec<crate::buf::Segment>> {
        // Always one page, whatever was asked.
        Ok(vec![crate::buf::Segment::new(
            self.0.clone(),
            0,
            page_size(),
        )?])
    }
}

#[test]
fn mmap_refuses_segments_that_miss_the_range() {
    let m = Arc::new(dmabuf_mem::memfd::Memfd::create("b", 2, false).unwrap());
    let b = crate::buf::export(crate::buf::ExportInfo::new(
        "bad",
        2 * page_size(),
        Arc::new(BadMmap(m)),
    ))
    .unwrap();
    assert!(b.mmap(0, 1, false).is_ok());
    assert_eq!(errno(b.mmap(0, 2, false)), 22);
}

#[test]
fn system_pool_recycles_zeroed_and_only_when_unreachable() {
    let h = sys();
    let p = page_size();
    let b = h.allocate(4 * p, FileFlags::RDWR, 0).unwrap();
    let m = b.mmap(0, 4, true).unwrap();
    m.mapping().fill(0, 4 * p, 0x5A).unwrap();
    drop(b);
    assert_eq!(
        h.pool().pooled_bytes(),
        0,
        "a user mapping keeps the buffer"
    );
    drop(m);
    assert_eq!(h.pool().pooled_bytes(), 4 * p, "released: back in the pool");
    let b = h.allocate(4 * p, FileFlags::RDWR, 0).unwrap();
    assert_eq!(h.pool().pooled_bytes(), 0, "reused");
    let v = b.vmap_unlocked().unwrap();
    let mut data = vec![1u8; 4 * p];
    v.read_at(0, &mut data).unwrap();
    assert!(data.iter().all(|&x| x == 0), "zeroed");
    // A vmap clone kept past release still reaches the memory: not pooled.
    let kept = v.map().clone();
    drop(v);
    drop(b);
    assert_eq!(
        h.pool().pooled_bytes(),
        0,
        "reachable memory is not recycled"
    );
    kept.write_at(0, b"still mine").unwrap();
    drop(kept);
    let b = h.allocate(4 * p, FileFlags::RDWR, 0).unwrap();
    let v = b.vmap_unlocked().unwrap();
    v.read_at(0, &mut data).unwrap();
    assert!(data.iter().all(|&x| x == 0), "a fresh memfd instead");
}

#[test]
fn system_prefault_makes_every_page_resident() {
    let h = SystemHeap::with_options(
        "pf",
        system::Options {
            pool_limit: MIB,
            prefault: true,
        },
    );
    let p = page_size();
    let b = h.allocate(8 * p, FileFlags::RDWR, 0).unwrap();
    let dev = Device::simple("d");
    let att = b.attach(&dev).unwrap();
    let sg = att.map_unlocked(Direction::ToDevice).unwrap();
    let mem = &sg.table().entries()[0].segment.mem;
    assert_eq!(mem.data_ranges().unwrap(), [(0, 8 * p)]);
    let lazy = sys().allocate(8 * p, FileFlags::RDWR, 0).unwrap();
    let att = lazy.attach(&dev).unwrap();
    let sg = att.map_unlocked(Direction::ToDevice).unwrap();
    assert!(sg.table().entries()[0]
        .segment
        .mem
        .data_ranges()
        .unwrap()
        .is_empty());
}

#[test]
fn contig_is_contiguous_shared_only_and_fails_cleanly() {
    let p = page_size();
    let h = ContigHeap::new("cma", 16 * p).unwrap();
    let f = file(h.clone());
    let a = f.alloc(&AllocData::new(5 * p as u64)).unwrap();
    let dev = Device::simple("d");
    let att = a.attach(&dev).unwrap();
    let sg = att.map_unlocked(Direction::Bidirectional).unwrap();
    assert_eq!(sg.table().len(), 1, "one segment");
    assert_eq!(sg.table().total_len(), 5 * p);
    drop(sg);
    drop(att);
    let free = h.free_pages();
    assert_eq!(free, 11);
    assert_eq!(errno(f.alloc(&AllocData::new(12 * p as u64))), 12, "ENOMEM");
    assert_eq!(errno(h.allocate(0, FileFlags::RDWR, 0)), 22);
    assert_eq!(errno(h.allocate(p + 1, FileFlags::RDWR, 0)), 22);
    assert_eq!(errno(h.allocate(p, FileFlags::RDWR, 1)), 22);
    assert_eq!(h.free_pages(), free, "nothing carved by failures");
    assert_eq!(
        errno(a.mmap_with(0, 1, false, false)),
        22,
        "private: EINVAL"
    );
    let m = a.mmap(0, 5, true).unwrap();
    m.mapping().fill(0, 5 * p, 0xEE).unwrap();
    drop(a);
    assert_eq!(h.free_pages(), free, "mapped: not released");
    drop(m);
    assert_eq!(h.free_pages(), 16);
    let b = h.allocate(16 * p, FileFlags::RDWR, 0).unwrap();
    let v = b.vmap_unlocked().unwrap();
    let mut data = vec![1u8; 16 * p];
    v.read_at(0, &mut data).unwrap();
    assert!(
        data.iter().all(|&x| x == 0),
        "no block shows another's data"
    );
    assert_eq!(errno(ContigHeap::new("x", 0)), 22);
}

#[test]
fn contig_fragmentation_is_served_by_any_long_enough_run() {
    let p = page_size();
    let h = ContigHeap::new("cma", 16 * p).unwrap();
    let bufs: Vec<DmaBuf> = (0..16)
        .map(|_| h.allocate(p, FileFlags::RDWR, 0).unwrap())
        .collect();
    let kept: Vec<DmaBuf> = bufs.into_iter().step_by(4).collect();
    assert_eq!(h.free_pages(), 12);
    assert!(h.allocate(3 * p, FileFlags::RDWR, 0).is_ok());
    assert_eq!(errno(h.allocate(4 * p, FileFlags::RDWR, 0)), 12);
    assert_eq!(h.free_pages(), 12);
    drop(kept);
    assert_eq!(h.largest_free(), 16);
}

#[test]
fn cpu_access_syncs_every_mapped_attachment() {
    let p = page_size();
    let h = sys();
    let b = h.allocate(2 * p, FileFlags::RDWR, 0).unwrap();
    let nc = Device::new("nc", u32::MAX as u64, false, false).unwrap();
    let idle = Device::new("idle", u32::MAX as u64, false, false).unwrap();
    let att = b.attach(&nc).unwrap();
    let _unmapped = b.attach(&idle).unwrap();
    let sg = att.map_unlocked(Direction::Bidirectional).unwrap();
    let iova = sg.table().entries()[0].dma_addr;
    let m = b.mmap(0, 2, true).unwrap();
    b.sync_ioctl(sync_flags::START | sync_flags::WRITE).unwrap();
    m.mapping().write_at(0, b"cpu").unwrap();
    let mut got = [0u8; 3];
    nc.dma().iommu().read(iova, &mut got).unwrap();
    assert_eq!(got, [0; 3], "stale before SYNC_END");
    b.sync_ioctl(sync_flags::END | sync_flags::WRITE).unwrap();
    nc.dma().iommu().read(iova, &mut got).unwrap();
    assert_eq!(&got, b"cpu");
    nc.dma().iommu().write(iova + p as u64, b"dev").unwrap();
    m.mapping().read_at(p, &mut got).unwrap();
    assert_eq!(got, [0; 3], "stale before SYNC_START");
    b.sync_ioctl(sync_flags::START | sync_flags::READ).unwrap();
    m.mapping().read_at(p, &mut got).unwrap();
    assert_eq!(&got, b"dev");
    b.sync_ioctl(sync_flags::END | sync_flags::READ).unwrap();
    // One table per attachment: a second live map of the same attachment is EBUSY.
    assert_eq!(errno(att.map_unlocked(Direction::ToDevice)), 16);
    assert_eq!(nc.dma().iommu().mapping_count(), 1, "nothing more mapped");
    drop(sg);
    assert_eq!(nc.dma().iommu().mapping_count(), 0, "DMA-unmapped at unmap");
    let sg = att.map_unlocked(Direction::ToDevice).unwrap();
    assert_eq!(nc.dma().iommu().mapping_count(), 1);
    drop(sg);
}

#[test]
fn dynamic_importer_gets_the_cached_bidirectional_table() {
    struct Nop;
    impl crate::buf::Importer for Nop {
        fn move_notify(&self, _: &crate::resv::ResvGuard<'_>, _: &crate::buf::Attachment) {}
    }
    let h = sys();
    let b = h.allocate(page_size(), FileFlags::RDWR, 0).unwrap();
    let dev = Device::simple("dyn");
    let att = b.dynamic_attach(&dev, Some(Arc::new(Nop))).unwrap();
    assert!(att.has_cached_mapping());
    let a = att.map_unlocked(Direction::ToDevice).unwrap();
    let c = att.map_unlocked(Direction::FromDevice).unwrap();
    assert_eq!(
        a.table().entries()[0].dma_addr,
        c.table().entries()[0].dma_addr
    );
    drop((a, c));
    att.detach().map_err(|e| e.0).unwrap();
    assert_eq!(dev.dma().iommu().mapping_count(), 0);
}

fn sealed_memfd(pages: usize) -> rustix::fd::OwnedFd {
    let fd =
        rustix::fs::memfd_create("u", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::ftruncate(&fd, (pages * page_size()) as u64).unwrap();
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK).unwrap();
    fd
}

#[test]
fn udmabuf_buffers_share_the_memfd_and_keep_its_rules() {
    let p = page_size();
    let fd = sealed_memfd(3);
    let items = [
        udmabuf::Item {
            memfd: fd.as_fd(),
            offset: 2 * p as u64,
            size: p as u64,
        },
        udmabuf::Item {
            memfd: fd.as_fd(),
            offset: 0,
            size: p as u64,
        },
    ];
    let b = udmabuf::create_list(&items, 0).unwrap();
    assert_eq!(b.size(), 2 * p);
    assert_eq!(b.flags(), FileFlags::RDWR);
    // A mapping across both ranges: buffer page 0 is memfd page 2, page 1 is page 0.
    let m = b.mmap(0, 2, true).unwrap();
    m.mapping().write_at(p - 1, b"xy").unwrap();
    let mut got = [0u8; 1];
    rustix::io::pread(&fd, &mut got, (3 * p - 1) as u64).unwrap();
    assert_eq!(&got, b"x");
    rustix::io::pread(&fd, &mut got, 0).unwrap();
    assert_eq!(&got, b"y");
    // A range inside the second piece only.
    let m2 = b.mmap(1, 1, false).unwrap();
    m2.mapping().read_at(0, &mut got).unwrap();
    assert_eq!(&got, b"y");
    assert_eq!(errno(b.mmap_with(0, 2, false, false)), 22);
    assert_eq!(errno(b.end_cpu_access(Direction::ToDevice)), 22);
    b.begin_cpu_access(Direction::FromDevice).unwrap();
    b.end_cpu_access(Direction::ToDevice).unwrap();
    // Bad input: nothing created, the memfd untouched.
    assert_eq!(errno(udmabuf::create(fd.as_fd(), 0, 0, 0)), 22);
    assert_eq!(errno(udmabuf::create(fd.as_fd(), 0, p as u64, 4)), 22);
    assert_eq!(errno(udmabuf::create_list(&[], 0)), 22);
    drop((m, m2, b));
    let mut all = vec![0u8; 3 * p];
    rustix::io::pread(&fd, &mut all, 0).unwrap();
    assert_eq!(
        all.iter().filter(|&&x| x != 0).count(),
        2,
        "only our two bytes"
    );
}

#[test]
fn mapping_pieces_rejects_bad_pieces() {
    use dmabuf_mem::memfd::{Mapping, Memfd};
    let m = Memfd::create("t", 2, false).unwrap();
    let p = page_size();
    assert_eq!(errno(Mapping::new_pieces(&[], true, true)), 22);
    assert_eq!(
        errno(Mapping::new_pieces(&[(m.fd(), 0, 0)], true, true)),
        22
    );
    assert_eq!(
        errno(Mapping::new_pieces(&[(m.fd(), 1, p)], true, true)),
        22
    );
    assert_eq!(
        errno(Mapping::new_pieces(&[(m.fd(), 0, p + 1)], true, true)),
        22
    );
    let two = Mapping::new_pieces(&[(m.fd(), p, p), (m.fd(), 0, p)], true, true).unwrap();
    assert_eq!(two.len(), 2 * p);
    two.write_at(0, b"B").unwrap();
    two.write_at(p, b"A").unwrap();
    let mut got = [0u8; 1];
    m.map().read_at(0, &mut got).unwrap();
    assert_eq!(&got, b"A");
    m.map().read_at(p, &mut got).unwrap();
    assert_eq!(&got, b"B");
    let private = Mapping::new_pieces(&[(m.fd(), 0, p)], true, false).unwrap();
    private.write_at(0, b"Z").unwrap();
    m.map().read_at(0, &mut got).unwrap();
    assert_eq!(&got, b"A", "private writes do not reach the file");
}

#[test]
fn global_registry_has_system_and_contig() {
    let names = heaps().names();
    assert!(names.iter().any(|n| n == "system"));
    assert!(names.iter().any(|n| n == "contig"));
    assert_eq!(
        errno(heap_add(named("system"))),
        22,
        "duplicate of a default"
    );
}
