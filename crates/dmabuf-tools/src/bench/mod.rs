//! Benchmark workloads, shared by `dmabuf bench SUITE` and the criterion benches under
//! `benches/`, so both measure the same code.
//!
//! A [`BenchCase`] pairs our workload with the baseline a user would otherwise pick. Each
//! side is a function that runs `iters` iterations and returns the time they took
//! (setup excluded), the shape of criterion's `iter_custom`. [`run`] alternates the two
//! sides sample by sample, so both see the same machine noise, and reports medians and
//! the ratio ours / baseline (lower is better).

use std::time::Duration;

mod demo;
mod fd;
mod fence;
mod heap;
mod resv;
mod sync_file;
mod trace;
mod ww;

/// One workload beside its baseline.
#[derive(Clone, Copy)]
pub struct BenchCase {
    /// Suite name (`ww`, `fence`, …).
    pub suite: &'static str,
    /// Case name within the suite.
    pub case: &'static str,
    /// What the baseline is, in a few words.
    pub baseline: &'static str,
    /// Our side: run `iters` iterations, return their total time.
    pub ours: fn(u64) -> Duration,
    /// The baseline side, same contract.
    pub base: fn(u64) -> Duration,
    /// When set, the target is not the ratio but the overhead ours − baseline in ns per
    /// iteration (e.g. lockdep on vs off); the ratio is still reported.
    pub overhead: bool,
    /// The target (README's bench table): the ratio ours / baseline must be at most this,
    /// or, for an `overhead` case, ours − baseline at most this many
    /// ns per iteration. `None`: measured for information, no target.
    pub target: Option<f64>,
}

impl BenchCase {
    /// A case of `suite` whose target is the ratio ours / baseline.
    pub(crate) const fn new(
        suite: &'static str,
        case: &'static str,
        baseline: &'static str,
        ours: fn(u64) -> Duration,
        base: fn(u64) -> Duration,
    ) -> Self {
        BenchCase {
            suite,
            case,
            baseline,
            ours,
            base,
            overhead: false,
            target: None,
        }
    }

    /// The same case with its target (a ratio bound, or an ns bound once
    /// [`overhead`](Self::overhead)).
    pub(crate) const fn target(self, target: f64) -> Self {
        BenchCase {
            target: Some(target),
            ..self
        }
    }

    /// The same case, its target the overhead ours − baseline instead of the ratio.
    pub(crate) const fn overhead(self) -> Self {
        BenchCase {
            overhead: true,
            ..self
        }
    }
}

impl std::fmt::Debug for BenchCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.suite, self.case)
    }
}

/// A suite: its name and the function that lists its cases.
pub type Suite = (&'static str, fn() -> Vec<BenchCase>);

/// Every suite, by name, for `dmabuf bench SUITE` and `dmabuf bench all`.
pub fn suites() -> Vec<Suite> {
    vec![
        ("ww", ww::cases),
        ("fence", fence::cases),
        ("resv", resv::cases),
        ("heap", heap::cases),
        ("demo", demo::cases),
        ("trace", trace::cases),
        ("fd", fd::cases),
    ]
}

/// The bench peer process: when this process was started as one (the environment
/// variable `DMABUF_BENCH_PEER` is set, as the `fd` suite sets it for the consumer
/// process it spawns by running the current executable again), serve the suite until
/// the spawning process is gone and return the exit code; `None` otherwise.
///
/// Every program that runs the suites calls it first thing in `main`:
///
/// ```no_run
/// if let Some(code) = dmabuf_tools::bench::peer_main() {
///     std::process::exit(code)
/// }
/// ```
pub fn peer_main() -> Option<i32> {
    let role = std::env::var_os(fd::PEER_ENV)?;
    Some(match role.to_str() {
        Some("fd") => fd::peer_main(),
        Some(r) if r.starts_with("demo:") => demo::stage_main(r),
        _ => {
            eprintln!("{}={role:?}: no such bench peer", fd::PEER_ENV);
            2
        }
    })
}

/// Run `body(thread, iters)` on `threads` threads released together; returns the wall
/// time from the first thread's start to the last thread's end, as the threads see it
/// (the spawning thread may not even be scheduled while they run).
pub(crate) fn run_threads(
    threads: usize,
    iters: u64,
    body: impl Fn(usize, u64) + Send + Sync + 'static,
) -> Duration {
    use std::time::Instant;
    let body = std::sync::Arc::new(body);
    let start = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (body, start) = (body.clone(), start.clone());
            std::thread::spawn(move || -> (Instant, Instant) {
                start.wait();
                let t0 = Instant::now();
                body(t, iters);
                (t0, Instant::now())
            })
        })
        .collect();
    let spans: Vec<(Instant, Instant)> = handles
        .into_iter()
        .map(|h| h.join().expect("bench thread"))
        .collect();
    let first = spans
        .iter()
        .map(|s| s.0)
        .min()
        .expect("at least one thread");
    let last = spans
        .iter()
        .map(|s| s.1)
        .max()
        .expect("at least one thread");
    last - first
}

/// For each of `threads` threads, 1024 pre-drawn sets of `pick` distinct indices of
/// `0..of`, in random order: the multi-lock workloads lock the same sets on both sides.
pub(crate) fn random_sets(
    threads: usize,
    pick: usize,
    of: usize,
    seed: u64,
) -> Vec<Vec<Vec<usize>>> {
    (0..threads)
        .map(|t| {
            let mut r = Rng::new(seed + t as u64);
            (0..1024).map(|_| r.distinct(pick, of)).collect()
        })
        .collect()
}

/// How long and how often to measure.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Wall time one sample should take (iterations are calibrated to it).
    pub sample_time: Duration,
    /// Samples per side (odd, so the median is a sample).
    pub samples: usize,
}

impl Settings {
    /// A few seconds per suite: for CI and quick checks.
    pub fn quick() -> Self {
        Settings {
            sample_time: Duration::from_millis(4),
            samples: 9,
        }
    }

    /// The default: steadier medians.
    pub fn full() -> Self {
        Settings {
            sample_time: Duration::from_millis(25),
            samples: 31,
        }
    }
}

/// The measured outcome of one case.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// Suite name.
    pub suite: &'static str,
    /// Case name.
    pub case: &'static str,
    /// Median ns per iteration of our side.
    pub ours_ns: f64,
    /// The baseline's description.
    pub baseline: &'static str,
    /// Median ns per iteration of the baseline.
    pub baseline_ns: f64,
    /// `ours_ns / baseline_ns`.
    pub ratio: f64,
    /// Whether the target is an overhead rather than a ratio.
    pub overhead: bool,
    /// The case's `target` (see [`BenchCase`]).
    pub target: Option<f64>,
}

impl Measurement {
    /// ours − baseline, ns per iteration.
    pub fn overhead_ns(&self) -> f64 {
        self.ours_ns - self.baseline_ns
    }

    /// What the target bounds: the overhead for an overhead case, else the ratio.
    pub fn measured(&self) -> f64 {
        if self.overhead {
            self.overhead_ns()
        } else {
            self.ratio
        }
    }

    /// Whether the case met its target; `None` without one. A measurement that is not a
    /// number (a side took no time) misses.
    pub fn met(&self) -> Option<bool> {
        self.target.map(|t| self.measured() <= t)
    }

    /// The JSON object of the bench contract: `suite`, `case`, `ours_ns`, `baseline`,
    /// `baseline_ns`, `ratio`, and the target: `target` (a number or null), `target_of`
    /// (`"ratio"` or `"overhead_ns"`), `met` (a bool, null without a target), and for
    /// overhead cases `overhead_ns`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut j = serde_json::json!({
            "suite": self.suite,
            "case": self.case,
            "ours_ns": round2(self.ours_ns),
            "baseline": self.baseline,
            "baseline_ns": round2(self.baseline_ns),
            "ratio": round3(self.ratio),
            "target": self.target,
            "target_of": if self.overhead { "overhead_ns" } else { "ratio" },
            "met": self.met(),
        });
        if self.overhead {
            j["overhead_ns"] = serde_json::json!(round2(self.overhead_ns()));
        }
        j
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Iterations of `f` that take about `target`.
fn calibrate(f: fn(u64) -> Duration, target: Duration) -> u64 {
    let mut iters = 1u64;
    loop {
        let t = f(iters);
        if t >= target / 4 || iters >= 1 << 40 {
            let per = t.as_secs_f64() / iters as f64;
            let want = if per > 0.0 {
                (target.as_secs_f64() / per) as u64
            } else {
                iters * 4
            };
            return want.clamp(1, 1 << 40);
        }
        iters = iters.saturating_mul(4);
    }
}

/// The median of `v` (sorted in place).
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Measure one case: calibrate each side, then alternate samples, then take medians.
pub fn run(case: &BenchCase, settings: Settings) -> Measurement {
    // Warm both sides (pools, caches, lazily built state).
    (case.ours)(16);
    (case.base)(16);
    let it_ours = calibrate(case.ours, settings.sample_time);
    let it_base = calibrate(case.base, settings.sample_time);
    let mut ours = Vec::with_capacity(settings.samples);
    let mut base = Vec::with_capacity(settings.samples);
    for _ in 0..settings.samples {
        ours.push((case.ours)(it_ours).as_nanos() as f64 / it_ours as f64);
        base.push((case.base)(it_base).as_nanos() as f64 / it_base as f64);
    }
    let ours_ns = median(&mut ours);
    let baseline_ns = median(&mut base);
    Measurement {
        suite: case.suite,
        case: case.case,
        ours_ns,
        baseline: case.baseline,
        baseline_ns,
        ratio: ours_ns / baseline_ns,
        overhead: case.overhead,
        target: case.target,
    }
}

/// A small, fast, deterministic random number generator for workloads (xorshift64*).
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded generator (a zero seed is replaced).
    pub(crate) fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// `k` distinct values of `0..n` in random order (`k <= n`).
    pub(crate) fn distinct(&mut self, k: usize, n: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(k);
        while out.len() < k {
            let x = self.below(n);
            if !out.contains(&x) {
                out.push(x);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_positive_and_only_informational_cases_lack_one() {
        for (_, cases) in suites() {
            for c in cases() {
                match c.target {
                    Some(t) => assert!(t.is_finite() && t > 0.0, "{c:?}"),
                    // README: the 4 KiB, 256 KiB and 16 MiB hand-offs have no target.
                    None => assert!(
                        c.suite == "fd"
                            && c.case.starts_with("frame hand-off")
                            && !c.case.ends_with(" 1 MiB"),
                        "{c:?}"
                    ),
                }
            }
        }
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn rng_distinct_is_distinct_and_in_range() {
        let mut r = Rng::new(7);
        for _ in 0..100 {
            let v = r.distinct(8, 256);
            assert_eq!(v.len(), 8);
            assert!(v.iter().all(|&x| x < 256));
            let mut s = v.clone();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), 8);
        }
    }

    fn spin(iters: u64) -> Duration {
        let t = std::time::Instant::now();
        for i in 0..iters {
            std::hint::black_box(i);
        }
        t.elapsed()
    }

    #[test]
    fn run_reports_a_ratio_near_one_for_identical_sides() {
        let c = BenchCase {
            suite: "t",
            case: "same",
            baseline: "same",
            ours: spin,
            base: spin,
            overhead: false,
            target: Some(1e9),
        };
        let m = run(
            &c,
            Settings {
                sample_time: Duration::from_micros(200),
                samples: 3,
            },
        );
        assert!(m.ratio.is_finite() && m.ratio > 0.0);
        let j = m.to_json();
        for k in [
            "suite",
            "case",
            "ours_ns",
            "baseline",
            "baseline_ns",
            "ratio",
            "target",
            "target_of",
            "met",
        ] {
            assert!(j.get(k).is_some(), "{k}");
        }
        assert_eq!(j["met"], serde_json::json!(true));
        assert_eq!(j["target_of"], "ratio");
        let over = Measurement {
            ours_ns: 30.0,
            baseline_ns: 10.0,
            overhead: true,
            target: Some(15.0),
            ..m
        };
        assert_eq!(over.met(), Some(false));
        assert_eq!(over.to_json()["overhead_ns"], serde_json::json!(20.0));
    }
}
