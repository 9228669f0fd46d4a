//! `dmabuf bench trace`: what recording a trace costs, per event source, against the
//! same work with no recording (the hooks' cost while nothing records is one relaxed
//! load each, below what these cases can resolve).
//!
//! - `fence create+signal+drop, recording`: two events per fence (its creation is
//!   remembered; its signal writes the slice), each a leaf-mutex push into the ring.
//! - `resv lock+unlock, recording`: one slice per lock hold.
//!
//! Both are overhead cases: the target is the added time per iteration. The ring is
//! large enough that every event of a sample is kept; each sample starts and stops its
//! own recording.

use super::BenchCase;
use crate::fence::{Context, Fence, FenceOps};
use crate::resv::Resv;
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Ops;
impl FenceOps for Ops {
    fn driver_name(&self) -> &str {
        "bench"
    }
    fn timeline_name(&self) -> &str {
        "trace"
    }
}

/// The cases of the `trace` suite.
pub(crate) fn cases() -> Vec<BenchCase> {
    vec![
        BenchCase::new(
            "trace",
            "fence create+signal+drop, recording",
            "the same, not recording",
            fence_on,
            fence_off,
        )
        .overhead()
        .target(600.0),
        BenchCase::new(
            "trace",
            "resv lock+unlock, recording",
            "the same, not recording",
            resv_on,
            resv_off,
        )
        .overhead()
        .target(500.0),
    ]
}

fn ctx() -> Context {
    static C: OnceLock<Context> = OnceLock::new();
    *C.get_or_init(Context::new)
}

fn fences(iters: u64) -> Duration {
    let c = ctx();
    let t = Instant::now();
    for i in 0..iters {
        let f = Fence::new(Ops, c, i + 1);
        let _ = f.signal();
        drop(black_box(f));
    }
    t.elapsed()
}

fn recording(iters: u64, work: fn(u64) -> Duration) -> Duration {
    // Two events an iteration at most, and headroom: nothing of the sample is dropped.
    let _ = crate::trace::stop();
    crate::trace::start((2 * iters as usize).max(16) + 16).expect("start a trace");
    let d = work(iters);
    drop(crate::trace::stop());
    d
}

fn fence_on(iters: u64) -> Duration {
    recording(iters, fences)
}

fn fence_off(iters: u64) -> Duration {
    fences(iters)
}

fn resv() -> &'static Resv {
    static R: OnceLock<Resv> = OnceLock::new();
    R.get_or_init(Resv::new)
}

fn locks(iters: u64) -> Duration {
    let r = resv();
    let t = Instant::now();
    for _ in 0..iters {
        let g = r.lock_no_ctx().expect("uncontended");
        drop(black_box(g));
    }
    t.elapsed()
}

fn resv_on(iters: u64) -> Duration {
    recording(iters, locks)
}

fn resv_off(iters: u64) -> Duration {
    locks(iters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_run() {
        for c in cases() {
            assert!((c.ours)(4) > Duration::ZERO, "{}", c.case);
            assert!((c.base)(4) > Duration::ZERO, "{}", c.case);
        }
    }
}
