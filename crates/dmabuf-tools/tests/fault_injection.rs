//! The `fault/…` self-test scenarios, one after the other in a process of their own: each
//! compares process-wide live counts (buffers, fences, descriptors, mappings) before and
//! after an injected failure, which other tests running beside it would disturb.

mod common;

#[test]
fn every_fault_scenario_passes_alone() {
    let tally = common::run_all("fault/");
    assert!(tally.passed >= 10, "fault scenarios: {tally:?}");
}
