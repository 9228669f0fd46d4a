//! Criterion benches of the `ww` suite: the same workloads as `dmabuf bench ww`.

use criterion::{criterion_group, criterion_main, Criterion};

fn benches(c: &mut Criterion) {
    for case in dmabuf::bench::ww::cases() {
        let mut g = c.benchmark_group(format!("ww/{}", case.case));
        g.bench_function("ours", |b| b.iter_custom(case.ours));
        g.bench_function(case.baseline, |b| b.iter_custom(case.base));
        g.finish();
    }
}

criterion_group!(ww, benches);
criterion_main!(ww);
