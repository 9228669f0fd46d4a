//! Cost of releasing N locks taken under one nest lock (a ww transaction), in
//! acquisition order (what dropping the `Vec` returned by `ww::lock_all` does) and in
//! reverse: `cargo run --release -p lockdep --example release_order`.

use lockdep::{acquire, release, Acquire, LockClass};
use std::time::{Duration, Instant};

static CTX: LockClass = LockClass::new("release_order_ctx");
static OBJ: LockClass = LockClass::new("release_order_obj");

/// One transaction of `n` locks; returns (acquire, release) times.
fn round(n: usize, fifo: bool) -> (Duration, Duration) {
    let nest = Acquire::write().nest(CTX.map_instance());
    let base = OBJ.map_instance() + 1;
    let t = Instant::now();
    acquire(&CTX, CTX.map_instance(), Acquire::write());
    for i in 0..n {
        acquire(&OBJ, base + i, nest);
    }
    let t_acq = t.elapsed();
    let t = Instant::now();
    if fifo {
        for i in 0..n {
            release(&OBJ, base + i);
        }
    } else {
        for i in (0..n).rev() {
            release(&OBJ, base + i);
        }
    }
    let t_rel = t.elapsed();
    release(&CTX, CTX.map_instance());
    (t_acq, t_rel)
}

fn main() {
    assert!(lockdep::enabled(), "run with lockdep on");
    for &n in &[256usize, 1024, 4096] {
        round(n, true); // warm the chain caches
        let mut best = [Duration::MAX; 3];
        for _ in 0..5 {
            let (a, f) = round(n, true);
            let (_, l) = round(n, false);
            best = [best[0].min(a), best[1].min(f), best[2].min(l)];
        }
        println!(
            "n={n:5}: acquire {:>10.1?}  release in order {:>10.1?}  reverse {:>10.1?}  \
             (in order: {:.1} ns/lock)",
            best[0],
            best[1],
            best[2],
            best[1].as_nanos() as f64 / n as f64
        );
    }
}
