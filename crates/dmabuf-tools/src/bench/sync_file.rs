use crate::fence::{Context, Fence};
use crate::sync_file::{get_fence, poll_readable, SyncFile};
use crate::testing::Mock;
use rustix::fd::AsFd;
use std::time::Duration;

// ---- bench workloads ------------------------------------------------------------------

/// Bench: export a fence, signal it, poll the descriptor until readable, import it.
pub fn bench_export_poll_import(iters: u64) -> Duration {
    let ctx = Context::new();
    let start = std::time::Instant::now();
    for i in 0..iters {
        let f = Fence::new(Mock, ctx, i);
        let sf = SyncFile::new(f.clone()).expect("export");
        let _ = f.signal();
        let ok = poll_readable(sf.as_fd(), None).expect("poll");
        debug_assert!(ok);
        let back = get_fence(sf.as_fd()).expect("import");
        std::hint::black_box(&back);
    }
    start.elapsed()
}

/// Bench baseline: an eventfd created, written and polled.
pub fn bench_eventfd_baseline(iters: u64) -> Duration {
    use rustix::event::{eventfd, EventfdFlags};
    let start = std::time::Instant::now();
    for _ in 0..iters {
        let e = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).expect("eventfd");
        let _ = rustix::io::write(&e, &1u64.to_ne_bytes());
        let ok = poll_readable(e.as_fd(), None).expect("poll");
        std::hint::black_box(ok);
    }
    start.elapsed()
}
