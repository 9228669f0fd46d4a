//! Cost of lockdep on an already-validated chain:
//! `cargo run --release -p lockdep --example overhead`.
//!
//! Times lock+unlock of a tracked mutex (with one outer lock held, so the chain has two
//! entries) with checking on and off (off = one relaxed atomic load per call).

use lockdep::{sync::Mutex, LockClass};
use std::hint::black_box;
use std::time::Instant;

static OUTER: LockClass = LockClass::new("outer");
static INNER: LockClass = LockClass::new("inner");

fn per_op(iters: u32, m: &Mutex<u64>) -> f64 {
    let t = Instant::now();
    for _ in 0..iters {
        let mut g = black_box(m).lock();
        *g += 1;
    }
    t.elapsed().as_nanos() as f64 / f64::from(iters)
}

fn main() {
    let outer = Mutex::new(&OUTER, ());
    let inner = Mutex::new(&INNER, 0u64);
    let iters = 2_000_000;
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        lockdep::set_enabled(true);
        let o = outer.lock();
        per_op(1000, &inner); // validate the chain once
        let on = per_op(iters, &inner);
        assert_eq!(lockdep::held_count(), 1);
        drop(o);
        lockdep::set_enabled(false);
        let o = outer.lock();
        let off = per_op(iters, &inner);
        drop(o);
        best = (best.0.min(on), best.1.min(off));
    }
    lockdep::set_enabled(true);
    println!(
        "lock+unlock: on {:.1} ns, off {:.1} ns, overhead {:.1} ns (validations: {})",
        best.0,
        best.1,
        best.0 - best.1,
        lockdep::stats().validations
    );
}
