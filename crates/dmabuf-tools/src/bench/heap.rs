//! `dmabuf bench heap`: heap allocation beside what a user would do instead.
//!
//! - System heap alloc + free (pool warm: the steady state) beside creating and dropping
//!   a memfd of the same size the plain way (`memfd_create` + `ftruncate` + `mmap` +
//!   `munmap` + `close`). Where our time goes: the pool lookup, the exporter and the
//!   buffer object (`export`), and at free one `lseek(SEEK_DATA)` that finds nothing to
//!   zero.
//! - The same with every page touched once: ours through the buffer's vmap (the
//!   library's persistent CPU mapping: pooled pages stay resident and mapped, so no page
//!   faults; freeing zeroes the written pages with `memset`), the baseline through its
//!   fresh mapping (a page fault and a kernel page clear per page, pages freed at close).
//! - Contiguous heap alloc + free of mixed sizes, four live at a time, beside the system
//!   heap doing the same: the buddy carve and the hole punch against the pool.

use super::BenchCase;
use crate::buf::{DmaBuf, FileFlags};
use crate::heap::contig::ContigHeap;
use crate::heap::system::{Options, SystemHeap};
use crate::heap::Heap;
use crate::mem::memfd::{page_size, Mapping};
use rustix::fd::AsFd;
use rustix::fs::MemfdFlags;
use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// The cases of the `heap` suite.
pub(crate) fn cases() -> Vec<BenchCase> {
    const BASE: &str = "memfd_create+ftruncate+mmap+munmap+close";
    const BASE_TOUCH: &str = "memfd_create+ftruncate+mmap+touch+munmap+close";
    let c = |case, baseline, ours, base| BenchCase::new("heap", case, baseline, ours, base);
    vec![
        c("system alloc+free 4 KiB", BASE, sys_4k, memfd_4k).target(0.5),
        c("system alloc+free 1 MiB", BASE, sys_1m, memfd_1m).target(0.5),
        c("system alloc+free 16 MiB", BASE, sys_16m, memfd_16m).target(0.5),
        c(
            "system alloc+touch+free 4 KiB",
            BASE_TOUCH,
            sys_touch_4k,
            memfd_touch_4k,
        )
        .target(0.8),
        c(
            "system alloc+touch+free 1 MiB",
            BASE_TOUCH,
            sys_touch_1m,
            memfd_touch_1m,
        )
        .target(0.8),
        c(
            "system alloc+touch+free 16 MiB",
            BASE_TOUCH,
            sys_touch_16m,
            memfd_touch_16m,
        )
        .target(0.8),
        c(
            "contig alloc+free mixed sizes, 4 live",
            "system heap, same sequence",
            contig_mixed,
            system_mixed,
        )
        .target(1.0),
    ]
}

/// A system heap with its own pool. Each group of cases gets its own: pages once
/// touched stay resident (and are re-zeroed at every free), so a pool shared with the
/// touching cases would slow the others down.
fn new_system(name: &str) -> Arc<SystemHeap> {
    SystemHeap::with_options(
        name,
        Options {
            pool_limit: 256 * MIB,
            prefault: false,
        },
    )
}

/// The heap of the untouched alloc + free cases.
fn system() -> &'static SystemHeap {
    static H: OnceLock<Arc<SystemHeap>> = OnceLock::new();
    H.get_or_init(|| new_system("bench-system"))
}

/// The heap of the touching cases.
fn system_touched() -> &'static SystemHeap {
    static H: OnceLock<Arc<SystemHeap>> = OnceLock::new();
    H.get_or_init(|| new_system("bench-system-touched"))
}

/// The heap of the mixed-size baseline.
fn system_mixed_heap() -> &'static SystemHeap {
    static H: OnceLock<Arc<SystemHeap>> = OnceLock::new();
    H.get_or_init(|| new_system("bench-system-mixed"))
}

fn contig() -> &'static ContigHeap {
    static H: OnceLock<Arc<ContigHeap>> = OnceLock::new();
    H.get_or_init(|| ContigHeap::new("bench-contig", 64 * MIB).expect("reserve the region"))
}

fn alloc(h: &dyn Heap, len: usize) -> DmaBuf {
    h.allocate(len, FileFlags::RDWR, 0)
        .expect("heap allocation")
}

fn touch(b: &DmaBuf) {
    let v = b.vmap_unlocked().expect("vmap");
    let p = page_size();
    for off in (0..b.size()).step_by(p) {
        v.write_at(off, &[1]).expect("inside the buffer");
    }
}

fn sys_run(iters: u64, len: usize, touched: bool) -> Duration {
    let h = if touched { system_touched() } else { system() };
    let t = Instant::now();
    for _ in 0..iters {
        let b = alloc(h, len);
        if touched {
            touch(&b);
        }
        drop(black_box(b));
    }
    t.elapsed()
}

fn memfd_run(iters: u64, len: usize, touched: bool) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        let fd = rustix::fs::memfd_create("bench", MemfdFlags::CLOEXEC).expect("memfd_create");
        rustix::fs::ftruncate(&fd, len as u64).expect("ftruncate");
        let m = Mapping::new(fd.as_fd(), len, false).expect("mmap");
        if touched {
            m.touch_pages();
        }
        drop(black_box(m));
        drop(fd);
    }
    t.elapsed()
}

fn sys_4k(i: u64) -> Duration {
    sys_run(i, 4 * KIB, false)
}
fn sys_1m(i: u64) -> Duration {
    sys_run(i, MIB, false)
}
fn sys_16m(i: u64) -> Duration {
    sys_run(i, 16 * MIB, false)
}
fn memfd_4k(i: u64) -> Duration {
    memfd_run(i, 4 * KIB, false)
}
fn memfd_1m(i: u64) -> Duration {
    memfd_run(i, MIB, false)
}
fn memfd_16m(i: u64) -> Duration {
    memfd_run(i, 16 * MIB, false)
}
fn sys_touch_4k(i: u64) -> Duration {
    sys_run(i, 4 * KIB, true)
}
fn sys_touch_1m(i: u64) -> Duration {
    sys_run(i, MIB, true)
}
fn sys_touch_16m(i: u64) -> Duration {
    sys_run(i, 16 * MIB, true)
}
fn memfd_touch_4k(i: u64) -> Duration {
    memfd_run(i, 4 * KIB, true)
}
fn memfd_touch_1m(i: u64) -> Duration {
    memfd_run(i, MIB, true)
}
fn memfd_touch_16m(i: u64) -> Duration {
    memfd_run(i, 16 * MIB, true)
}

/// The mixed sizes, cycled.
const MIXED: [usize; 8] = [
    4 * KIB,
    64 * KIB,
    MIB,
    16 * KIB,
    256 * KIB,
    8 * KIB,
    2 * MIB,
    128 * KIB,
];

fn mixed(h: &dyn Heap, iters: u64) -> Duration {
    let mut live = VecDeque::with_capacity(5);
    let t = Instant::now();
    for i in 0..iters {
        live.push_back(alloc(h, MIXED[i as usize % MIXED.len()]));
        if live.len() > 4 {
            drop(black_box(live.pop_front()));
        }
    }
    live.clear();
    t.elapsed()
}

fn contig_mixed(i: u64) -> Duration {
    mixed(contig(), i)
}

fn system_mixed(i: u64) -> Duration {
    mixed(system_mixed_heap(), i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_side_runs() {
        for c in cases() {
            assert!((c.ours)(2) > Duration::ZERO, "{}", c.case);
            assert!((c.base)(2) > Duration::ZERO, "{}", c.case);
        }
    }
}
