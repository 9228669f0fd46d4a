//! Benchmark workloads, shared by `dmabuf bench SUITE` and the criterion benches under
//! `benches/`, so both measure the same code.
//!
//! A [`BenchCase`] pairs our workload with the baseline a user would otherwise pick. Each
//! side is a function that runs `iters` iterations and returns the time they took
//! (setup excluded), the shape of criterion's `iter_custom`. The runner alternates the
//! two sides sample by sample and reports medians and the ratio ours / baseline
//! (lower is better).

use std::time::Duration;

pub mod fence;

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
    /// When set, the ratio is not the target: the report gives ours − baseline per
    /// iteration as an overhead in ns instead (e.g. lockdep on vs off).
    pub overhead: bool,
}

impl std::fmt::Debug for BenchCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.suite, self.case)
    }
}

/// A suite: its name and the function listing its cases.
pub type Suite = (&'static str, fn() -> Vec<BenchCase>);

/// Every suite's cases, for `dmabuf bench all`.
pub fn suites() -> Vec<Suite> {
    vec![("fence", fence::cases)]
}
