//! The `fault/…` self-test scenarios, one after the other in a process of their own: each
//! compares process-wide live counts (buffers, fences, descriptors, mappings) before and
//! after an injected failure, which other tests running beside it would disturb.

#[test]
fn every_fault_scenario_passes_alone() {
    let cases = dmabuf_tools::selftest::select(Some("fault/"));
    assert!(cases.len() >= 10, "fault scenarios: {}", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            let o = dmabuf_tools::selftest::run_case(c);
            o.result.err().map(|e| format!("{}: {e}", c.name))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
