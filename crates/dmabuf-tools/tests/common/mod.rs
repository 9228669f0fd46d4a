//! Helpers shared by the scenario tests: every case of a family through the tools' one
//! runner ([`run_all`]), and one `#[test]` per case ([`case_tests!`]).

#![allow(dead_code)] // each test binary uses a part

use dmabuf_tools::selftest::{self, Tally, DEFAULT_CASE_LIMIT};
use std::ops::ControlFlow;

/// Run every case whose name contains `filter` through [`selftest::run`] (under its
/// watchdog); panic listing the failures. There must be at least one such case.
pub fn run_all(filter: &str) -> Tally {
    let cases = selftest::select(Some(filter));
    assert!(!cases.is_empty(), "no case matches {filter:?}");
    let tally = selftest::run(&cases, DEFAULT_CASE_LIMIT, |_| ControlFlow::Continue(()));
    assert!(
        tally.failures.is_empty(),
        "failed cases:\n{}",
        tally.failures.join("\n")
    );
    tally
}

/// Run the case called `name` through [`selftest::run`]; panic with its failure.
pub fn run_one(name: &str) -> Tally {
    let cases: Vec<_> = selftest::select(Some(name))
        .into_iter()
        .filter(|c| c.name == name)
        .collect();
    assert_eq!(cases.len(), 1, "no case {name}");
    let tally = selftest::run(&cases, DEFAULT_CASE_LIMIT, |_| ControlFlow::Continue(()));
    if let Some(why) = tally.failures.first() {
        panic!("{why}");
    }
    tally
}

/// `case_tests!("family/", test_name => "family/case", …)`: one `#[test]` per case (so
/// a failure names it), and `every_case_has_a_test`, which fails when a case whose name
/// contains the family's text has no test here.
#[allow(unused_macros)] // not every test binary has per-case tests
macro_rules! case_tests {
    ($family:literal, $($f:ident => $n:literal),* $(,)?) => {
        $(#[test] fn $f() { $crate::common::run_one($n); })*

        #[test]
        fn every_case_has_a_test() {
            let named = [$($n),*];
            for c in dmabuf_tools::selftest::select(Some($family)) {
                assert!(named.contains(&c.name), "{} has no test", c.name);
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use case_tests;
