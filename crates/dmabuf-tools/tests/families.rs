//! Every self-test family runs as a test of its own, through the tools' runner, so a
//! failure names the family. (The `dma-buf/` scenarios run from `buf_cases.rs`, the
//! `device/` ones one test per case from `device_cases.rs`, the `fault/` ones alone in
//! `fault_injection.rs`.)

mod common;

use common::run_all as run_prefix;

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

#[test]
fn selftest_ww() {
    run_prefix("ww/");
}
