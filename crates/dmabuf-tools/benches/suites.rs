//! Criterion benches of every suite: the same workloads as `dmabuf bench SUITE`, each
//! case's two sides (ours and the baseline) in one group. Lockdep is switched off at run
//! time, as in `dmabuf bench`, except where a case measures it.

use criterion::{criterion_group, Criterion};

fn benches(c: &mut Criterion) {
    lockdep::set_enabled(false);
    for (suite, cases) in dmabuf_tools::bench::suites() {
        for case in cases() {
            let mut g = c.benchmark_group(format!("{suite}/{}", case.case));
            g.bench_function("ours", |b| b.iter_custom(case.ours));
            g.bench_function(case.baseline, |b| b.iter_custom(case.base));
            g.finish();
        }
    }
}

criterion_group!(suites, benches);

// `criterion_main!`, after the bench peer's check: the `fd` suite runs this binary again
// as its consumer process.
fn main() {
    if let Some(code) = dmabuf_tools::bench::peer_main() {
        std::process::exit(code)
    }
    suites();
    Criterion::default().configure_from_args().final_summary();
}
