//! Every self-test family runs as a test of its own, so a failure names the family.
//! (The `buf` and `device` scenarios get one test per case: `buf_cases.rs`,
//! `device_cases.rs`; the `ww` scenarios run from the library's own tests.)

use dmabuf_tools::selftest::{self, run_case};

fn run_prefix(prefix: &str) {
    let mut failed = Vec::new();
    let mut n = 0;
    for c in selftest::cases()
        .into_iter()
        .filter(|c| c.name.starts_with(prefix))
    {
        n += 1;
        if let Err(e) = run_case(&c).result {
            failed.push(format!("{}: {e}", c.name));
        }
    }
    assert!(n > 0, "no case under {prefix}");
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}

#[test]
fn selftest_fence() {
    run_prefix("fence/");
}

#[test]
fn selftest_fence_chain() {
    run_prefix("fence-chain/");
}

#[test]
fn selftest_fence_unwrap() {
    run_prefix("fence-unwrap/");
}

#[test]
fn every_dma_resv_case_passes() {
    run_prefix("dma-resv/");
}

#[test]
fn selftest_sync() {
    run_prefix("sync/");
}

#[test]
fn a_sw_sync_point_imports_into_a_buffer() {
    run_prefix("sync/sw-sync-point-implicit-sync");
}

#[test]
fn every_heap_selftest_case_passes() {
    run_prefix("dmabuf-heaps/");
}

#[test]
fn every_demo_case_passes() {
    run_prefix("demo/");
}
