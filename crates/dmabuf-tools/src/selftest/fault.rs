//! Fault-injection scenarios (`fault/…`): every entry point that creates a descriptor or
//! maps or allocates memory, made to fail with `EMFILE` (where it creates a descriptor)
//! and `ENOMEM` through [`crate::fault`]'s sites. Each checks that the errno comes back
//! ([`Error::errno`](crate::error::Error::errno)), that the object it was called on is
//! unchanged (heap statistics, mapped state, vmap count, references), and that the live
//! buffers, fences, descriptors and mappings
//! ([`crate::debug::live`](mod@crate::debug::live)) return to where they were.
//!
//! The counts are process-wide, so these cases mean the most run alone, one after the
//! other (`dmabuf selftest fault/`, or the `fault_injection` integration test): a
//! comparison that sees other work move the counts is made again (three times at most)
//! before it fails.

use crate::buf::{Direction, DmaBuf, FileFlags, Importer};
use crate::debug::live::{live_settled, Live};
use crate::device::{Device, Engine};
use crate::fault::{disarm, fail_nth, pending, Site};
use crate::heap::contig::ContigHeap;
use crate::heap::system::{Options, SystemHeap};
use crate::heap::udmabuf::{self, Item};
use crate::heap::{AllocData, Heap, HeapRegistry};
use crate::mem::memfd::{page_size, Memfd};
use crate::resv::ResvGuard;
use crate::selftest::{ensure, R};
use lockdep::selftest::Case;
use rustix::fd::AsFd;
use rustix::io::Errno;
use std::sync::Arc;
use std::time::Duration;

/// Every fault-injection scenario.
pub(crate) fn cases() -> Vec<Case> {
    case_table![
        "fault/memfd-create" => memfd_create,
        "fault/system-heap-alloc" => system_heap_alloc,
        "fault/contig-heap-alloc" => contig_heap_alloc,
        "fault/udmabuf-create" => udmabuf_create,
        "fault/buffer-mmap" => buffer_mmap,
        "fault/vmap" => vmap,
        "fault/iommu-map" => iommu_map,
        "fault/bounce-buffer" => bounce_buffer,
        "fault/dynamic-attach" => dynamic_attach,
        "fault/pinned-attach-and-export" => pinned_attach_and_export,
        "fault/engine-start" => engine_start,
        "fault/sync-file" => sync_file,
    ]
}

fn settled() -> Live {
    live_settled(Duration::from_millis(5), Duration::from_secs(1))
}

/// Run `op` (which arms a fault and checks what it did), then check the live counts
/// came back; the sample pair is taken again (up to three times) when they moved, so
/// that unrelated work in the process is not taken for a leak. Disarms after each run.
fn no_leak(what: &str, op: impl Fn() -> R) -> R {
    let mut last = String::new();
    for _ in 0..3 {
        let before = settled();
        let r = op();
        disarm();
        r.map_err(|e| format!("{what}: {e}"))?;
        let after = settled();
        if after.same_objects(&before) {
            return Ok(());
        }
        last = format!("{what}: counts moved: {}", after.drift(&before));
    }
    Err(last)
}

/// `r` failed with `e`, and the armed fault at `site` fired.
fn failed_with<T>(r: crate::Result<T>, e: Errno, site: Site, what: &str) -> R {
    match r {
        Ok(_) => Err(format!(
            "{what}: succeeded, want errno {}",
            e.raw_os_error()
        )),
        Err(got) => {
            ensure(
                got.errno() == e.raw_os_error(),
                &format!(
                    "{what}: errno {} ({got}), want {}",
                    got.errno(),
                    e.raw_os_error()
                ),
            )?;
            ensure(!pending(site), &format!("{what}: {site:?} never reached"))
        }
    }
}

fn s<T>(r: crate::Result<T>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

fn name(e: Errno) -> &'static str {
    match e {
        Errno::MFILE => "EMFILE",
        Errno::NOMEM => "ENOMEM",
        Errno::AGAIN => "EAGAIN",
        _ => "errno",
    }
}

const EMFILE: Errno = Errno::MFILE;
const ENOMEM: Errno = Errno::NOMEM;

fn memfd_create() -> R {
    for (site, e) in [
        (Site::MemfdCreate, EMFILE),
        (Site::MemfdCreate, ENOMEM),
        (Site::Mmap, ENOMEM),
    ] {
        no_leak(&format!("{site:?} {}", name(e)), || {
            fail_nth(site, 0, e);
            failed_with(Memfd::create("fault", 4, false), e, site, "Memfd::create")?;
            let m = s(Memfd::create("fault", 4, false))?;
            ensure(m.pages() == 4, "a later create works")
        })?;
    }
    Ok(())
}

fn system_heap() -> (Arc<SystemHeap>, HeapRegistry) {
    let heap = SystemHeap::with_options(
        "fault-system",
        Options {
            pool_limit: 1 << 20,
            prefault: false,
        },
    );
    let r = HeapRegistry::new();
    r.add(heap.clone()).expect("fresh registry");
    (heap, r)
}

fn alloc(r: &HeapRegistry, name: &str, pages: usize) -> crate::Result<DmaBuf> {
    r.alloc(name, &AllocData::new((pages * page_size()) as u64))
}

fn system_heap_alloc() -> R {
    // A new memfd: its creation, its mapping.
    for (site, e) in [
        (Site::MemfdCreate, EMFILE),
        (Site::MemfdCreate, ENOMEM),
        (Site::Mmap, ENOMEM),
    ] {
        no_leak(&format!("new memfd, {site:?} {}", name(e)), || {
            let (heap, r) = system_heap();
            fail_nth(site, 0, e);
            failed_with(alloc(&r, "fault-system", 4), e, site, "alloc")?;
            ensure(heap.pool().pooled_bytes() == 0, "nothing pooled")?;
            let b = s(alloc(&r, "fault-system", 4))?;
            ensure(b.size() == 4 * page_size(), "a later alloc works")
        })?;
    }
    // A pooled memfd: the pool's take, the export; the memfd stays (or goes back) in
    // the pool.
    for (site, e) in [
        (Site::HeapAlloc, ENOMEM),
        (Site::Export, EMFILE),
        (Site::Export, ENOMEM),
    ] {
        no_leak(&format!("pooled memfd, {site:?} {}", name(e)), || {
            let (heap, r) = system_heap();
            drop(s(alloc(&r, "fault-system", 4))?);
            let pooled = heap.pool().pooled_bytes();
            ensure(pooled == 4 * page_size(), "the freed buffer was pooled")?;
            fail_nth(site, 0, e);
            failed_with(alloc(&r, "fault-system", 4), e, site, "alloc")?;
            ensure(
                heap.pool().pooled_bytes() == pooled,
                &format!(
                    "pool holds {} bytes, had {pooled}",
                    heap.pool().pooled_bytes()
                ),
            )?;
            let b = s(alloc(&r, "fault-system", 4))?;
            ensure(
                heap.pool().pooled_bytes() == 0,
                "the pooled memfd was reused",
            )?;
            drop(b);
            ensure(heap.pool().pooled_bytes() == pooled, "and pooled again")
        })?;
    }
    Ok(())
}

fn contig_heap_alloc() -> R {
    // Each block's memory is its own memfd, made at the block's allocation (the region
    // reserves page numbers, not memory): its faults fail the allocation.
    for (site, e) in [
        (Site::HeapAlloc, ENOMEM),
        (Site::MemfdCreate, EMFILE),
        (Site::MemfdCreate, ENOMEM),
        (Site::Mmap, ENOMEM),
        (Site::Export, EMFILE),
        (Site::Export, ENOMEM),
    ] {
        no_leak(&format!("block, {site:?} {}", name(e)), || {
            let heap = s(ContigHeap::new("fault-contig", 16 * page_size()))?;
            let r = HeapRegistry::new();
            s(r.add(heap.clone()))?;
            let keep = s(alloc(&r, "fault-contig", 4))?;
            let (free, largest) = (heap.free_pages(), heap.largest_free());
            fail_nth(site, 0, e);
            failed_with(alloc(&r, "fault-contig", 8), e, site, "alloc")?;
            ensure(
                heap.free_pages() == free && heap.largest_free() == largest,
                &format!(
                    "region: {} free, largest {}; had {free}, {largest}",
                    heap.free_pages(),
                    heap.largest_free()
                ),
            )?;
            let b = s(alloc(&r, "fault-contig", 8))?;
            ensure(b.size() == 8 * page_size(), "a later alloc works")?;
            drop((b, keep));
            ensure(heap.free_pages() == 16, "every page back")
        })?;
    }
    Ok(())
}

fn sealed_memfd(pages: usize) -> Result<rustix::fd::OwnedFd, String> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = s(rustix::fs::memfd_create(
        "fault-u",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(Into::into))?;
    s(rustix::fs::ftruncate(&fd, (pages * page_size()) as u64).map_err(Into::into))?;
    s(rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK).map_err(Into::into))?;
    Ok(fd)
}

fn udmabuf_create() -> R {
    let p = page_size() as u64;
    // Two ranges of one memfd: fail at the first and at the second.
    for (site, n, e) in [
        (Site::Dup, 0, EMFILE),
        (Site::Dup, 1, EMFILE),
        (Site::Mmap, 0, ENOMEM),
        (Site::Mmap, 1, ENOMEM),
        (Site::Export, 0, EMFILE),
        (Site::Export, 0, ENOMEM),
    ] {
        no_leak(&format!("{site:?} #{n} {}", name(e)), || {
            let fd = sealed_memfd(4)?;
            s(rustix::io::pwrite(&fd, b"kept", 0).map_err(Into::into))?;
            let items = [
                Item {
                    memfd: fd.as_fd(),
                    offset: 0,
                    size: p,
                },
                Item {
                    memfd: fd.as_fd(),
                    offset: 2 * p,
                    size: 2 * p,
                },
            ];
            fail_nth(site, n, e);
            failed_with(udmabuf::create_list(&items, 0), e, site, "create_list")?;
            let mut b = [0u8; 4];
            s(rustix::io::pread(&fd, &mut b, 0).map_err(Into::into))?;
            ensure(&b == b"kept", "the caller's memfd is unchanged")?;
            let buf = s(udmabuf::create_list(&items, 0))?;
            ensure(buf.size() == 3 * p as usize, "a later create works")
        })?;
    }
    Ok(())
}

fn buffer_mmap() -> R {
    let p = page_size();
    // 256 + 16 + 1 pages: three segments of the system heap, so a user mapping is a
    // reservation (mmap #0) and three pieces (#1..#3).
    let pages = 256 + 16 + 1;
    for n in [0, 1, 2, 3] {
        no_leak(&format!("mmap #{n}"), || {
            let (_heap, r) = system_heap();
            let b = s(alloc(&r, "fault-system", pages))?;
            fail_nth(Site::Mmap, n, ENOMEM);
            failed_with(b.mmap(0, pages, true), ENOMEM, Site::Mmap, "mmap")?;
            ensure(b.ref_count() == 1, "no mapping holds the buffer")?;
            let m = s(b.mmap(0, pages, true))?;
            s(m.mapping().write_at(pages * p - 1, b"x"))?;
            ensure(b.ref_count() == 2, "the mapping holds the buffer")
        })?;
    }
    // One piece (a contiguous block).
    no_leak("contig mmap", || {
        let heap = s(ContigHeap::new("fault-contig", 8 * p))?;
        let b = s(heap.allocate(4 * p, FileFlags::RDWR, 0))?;
        fail_nth(Site::Mmap, 0, ENOMEM);
        failed_with(b.mmap(1, 2, false), ENOMEM, Site::Mmap, "mmap")?;
        ensure(b.ref_count() == 1, "no mapping holds the buffer")?;
        let m = s(b.mmap(1, 2, false))?;
        ensure(m.mapping().len() == 2 * p, "a later mmap works")
    })
}

fn vmap() -> R {
    no_leak("vmap", || {
        let (_heap, r) = system_heap();
        let b = s(alloc(&r, "fault-system", 2))?;
        let mut g = s(b.resv().lock_no_ctx())?;
        let v = s(b.locked(&mut g))?;
        fail_nth(Site::Vmap, 0, ENOMEM);
        failed_with(v.vmap(), ENOMEM, Site::Vmap, "vmap")?;
        ensure(b.vmap_count() == 0, "not vmapped")?;
        ensure(b.ref_count() == 1, "no vmap holds the buffer")?;
        let vm = s(v.vmap())?;
        // A second vmap shares the first: it reaches no exporter, so nothing fails.
        fail_nth(Site::Vmap, 0, ENOMEM);
        let v2 = s(v.vmap())?;
        ensure(pending(Site::Vmap), "a shared vmap calls no exporter")?;
        disarm();
        ensure(b.vmap_count() == 2, "two references")?;
        s(v.vunmap(v2))?;
        s(v.vunmap(vm))?;
        ensure(b.vmap_count() == 0, "vunmapped")?;
        drop(g);
        // The unlocked form and the CPU view built on it.
        fail_nth(Site::Vmap, 0, ENOMEM);
        failed_with(
            crate::device::CpuView::new(&b),
            ENOMEM,
            Site::Vmap,
            "CpuView::new",
        )?;
        ensure(b.vmap_count() == 0, "not vmapped")?;
        let cpu = s(crate::device::CpuView::new(&b))?;
        s(cpu.write_at(0, b"ok"))
    })
}

fn iommu_map() -> R {
    no_leak("attachment map", || {
        let (_heap, r) = system_heap();
        let b = s(alloc(&r, "fault-system", 4))?;
        let dev = Device::simple("fault-dev");
        let att = s(b.attach(&dev))?;
        fail_nth(Site::IommuMap, 0, ENOMEM);
        failed_with(
            att.map_unlocked(Direction::Bidirectional),
            ENOMEM,
            Site::IommuMap,
            "map",
        )?;
        ensure(dev.dma().iommu().mapping_count() == 0, "nothing mapped")?;
        // Still unmapped: a map now is the attachment's first (not `Busy`).
        let m = s(att.map_unlocked(Direction::Bidirectional))?;
        ensure(dev.dma().iommu().mapping_count() == 1, "mapped")?;
        s(att.unmap_unlocked(m).map_err(|e| e.0))?;
        s(att.detach().map_err(|e| e.0))?;
        ensure(dev.dma().iommu().mapping_count() == 0, "unmapped")
    })?;
    no_leak("iommu alone", || {
        let dev = Device::simple("fault-dev");
        let m = Arc::new(s(Memfd::create("fault", 2, false))?);
        let seg = s(crate::buf::Segment::new(m, 0, 2 * page_size()))?;
        fail_nth(Site::IommuMap, 0, ENOMEM);
        failed_with(
            dev.dma()
                .iommu()
                .map(std::slice::from_ref(&seg), Direction::ToDevice, "x"),
            ENOMEM,
            Site::IommuMap,
            "Iommu::map",
        )?;
        ensure(dev.dma().iommu().mapping_count() == 0, "nothing mapped")
    })
}

fn bounce_buffer() -> R {
    // A non-coherent device: mapping makes a bounce memfd, maps it, copies, then maps
    // the IOMMU; a failure at each step leaves the attachment unmapped and nothing open.
    for (site, e) in [
        (Site::MemfdCreate, EMFILE),
        (Site::MemfdCreate, ENOMEM),
        (Site::Mmap, ENOMEM),
        (Site::IommuMap, ENOMEM),
    ] {
        no_leak(&format!("{site:?} {}", name(e)), || {
            let (_heap, r) = system_heap();
            let b = s(alloc(&r, "fault-system", 4))?;
            let dev = s(Device::new("fault-nc", u32::MAX as u64, false, false))?;
            let att = s(b.attach(&dev))?;
            fail_nth(site, 0, e);
            failed_with(att.map_unlocked(Direction::Bidirectional), e, site, "map")?;
            ensure(dev.dma().iommu().mapping_count() == 0, "nothing mapped")?;
            let m = s(att.map_unlocked(Direction::Bidirectional))?;
            s(att.unmap_unlocked(m).map_err(|e| e.0))?;
            s(att.detach().map_err(|e| e.0))
        })?;
    }
    Ok(())
}

struct Quiet;
impl Importer for Quiet {
    fn move_notify(&self, _lock: &ResvGuard<'_>, _att: &crate::buf::Attachment) {}
}

fn dynamic_attach() -> R {
    // A dynamic importer of a static exporter is mapped at attach.
    no_leak("dynamic attach", || {
        let (_heap, r) = system_heap();
        let b = s(alloc(&r, "fault-system", 4))?;
        let dev = Device::simple("fault-dyn");
        fail_nth(Site::IommuMap, 0, ENOMEM);
        failed_with(
            b.dynamic_attach(&dev, Some(Arc::new(Quiet))),
            ENOMEM,
            Site::IommuMap,
            "dynamic_attach",
        )?;
        ensure(dev.dma().iommu().mapping_count() == 0, "nothing mapped")?;
        {
            let mut g = s(b.resv().lock_no_ctx())?;
            let v = s(b.locked(&mut g))?;
            ensure(v.attachments().is_empty(), "nothing attached")?;
        }
        ensure(b.ref_count() == 1, "no attachment holds the buffer")?;
        let att = s(b.dynamic_attach(&dev, Some(Arc::new(Quiet))))?;
        ensure(dev.dma().iommu().mapping_count() == 1, "mapped at attach")?;
        s(att.detach().map_err(|e| e.0))?;
        ensure(dev.dma().iommu().mapping_count() == 0, "unmapped at detach")
    })
}

fn pinned_attach_and_export() -> R {
    use crate::buf::simple::{Calls, SimpleExporter};
    // A static importer of a dynamic exporter is pinned and mapped at attach; a failed
    // map unpins and detaches again.
    no_leak("pinned attach", || {
        let exp = s(SimpleExporter::dynamic(4))?;
        let b = s(exp.export())?;
        let dev = Device::simple("fault-pin");
        fail_nth(Site::IommuMap, 0, ENOMEM);
        failed_with(b.attach(&dev), ENOMEM, Site::IommuMap, "attach")?;
        let c = &exp.calls;
        ensure(
            Calls::get(&c.pin) == 1 && Calls::get(&c.unpin) == 1,
            "pinned once, unpinned once",
        )?;
        ensure(
            Calls::get(&c.attach) == 1 && Calls::get(&c.detach) == 1,
            "attached once, detached once",
        )?;
        ensure(dev.dma().iommu().mapping_count() == 0, "nothing mapped")?;
        ensure(b.ref_count() == 1, "no attachment holds the buffer")?;
        let att = s(b.attach(&dev))?;
        ensure(dev.dma().iommu().mapping_count() == 1, "mapped at attach")?;
        s(att.detach().map_err(|e| e.0))?;
        ensure(
            Calls::get(&c.pin) == Calls::get(&c.unpin),
            "every pin undone",
        )
    })?;
    // A failed export never reaches the exporter's release (nothing was exported).
    for e in [EMFILE, ENOMEM] {
        no_leak(&format!("export {}", name(e)), || {
            let exp = s(SimpleExporter::new(2))?;
            fail_nth(Site::Export, 0, e);
            failed_with(exp.export(), e, Site::Export, "export")?;
            ensure(Calls::get(&exp.calls.release) == 0, "no release")?;
            let b = s(exp.export())?;
            drop(b);
            ensure(Calls::get(&exp.calls.release) == 1, "released once")
        })?;
    }
    Ok(())
}

fn engine_start() -> R {
    for e in [Errno::AGAIN, ENOMEM] {
        no_leak(name(e), || {
            let dev = Device::simple("fault-engine");
            fail_nth(Site::Thread, 0, e);
            failed_with(Engine::new(&dev, "fault"), e, Site::Thread, "Engine::new")?;
            let eng = s(Engine::new(&dev, "fault"))?;
            ensure(eng.pending() == 0, "a later engine starts")
        })?;
    }
    Ok(())
}

/// Sync files: a descriptor that cannot be made (the export's eventfd, a duplicate) or
/// an fdinfo that cannot be read (an import) is the call's errno, and changes nothing:
/// the fence gains no reference, and the next call works and finds the same fence.
fn sync_file() -> R {
    use crate::fence::Fence;
    use crate::sync_file::{get_fence, SyncFile};
    for e in [EMFILE, ENOMEM] {
        no_leak(&format!("sync file {}", name(e)), || {
            let f = crate::testing::mock();
            fail_nth(Site::Fd, 0, e);
            failed_with(SyncFile::new(f.clone()), e, Site::Fd, "SyncFile::new")?;
            ensure(f.ref_count() == 1, "a failed export holds no reference")?;
            let sf = s(SyncFile::new(f.clone()))?;
            fail_nth(Site::Dup, 0, e);
            failed_with(sf.try_clone_fd(), e, Site::Dup, "try_clone_fd")?;
            // A duplicate made behind the crate's back: importing it reads its fdinfo.
            let raw = s(rustix::io::fcntl_dupfd_cloexec(sf.as_fd(), 0).map_err(Into::into))?;
            fail_nth(Site::FdInfo, 0, e);
            failed_with(get_fence(raw.as_fd()), e, Site::FdInfo, "get_fence")?;
            let g = s(get_fence(raw.as_fd()))?;
            ensure(Fence::ptr_eq(&g, &f), "the import finds the exported fence")?;
            s(f.signal())?;
            ensure(sf.poll(), "the sync file reports the signal")
        })?;
    }
    Ok(())
}
