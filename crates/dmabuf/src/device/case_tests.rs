//! Each device self-test scenario as its own test, so a failure names the case.

use super::selftest::cases;

fn run(name: &str) {
    let c = cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name}"));
    if let Err(e) = (c.run)() {
        panic!("{name}: {e}");
    }
}

macro_rules! case_tests {
    ($($f:ident => $n:expr),* $(,)?) => {
        $(#[test] fn $f() { run($n) })*

        #[test]
        fn every_case_has_a_test() {
            let named = [$($n),*];
            for c in cases() {
                assert!(named.contains(&c.name), "{} has no test", c.name);
            }
        }
    };
}

case_tests! {
    jobs_coherent => "device/jobs-coherent",
    jobs_non_coherent => "device/jobs-non-coherent",
    implicit_sync => "device/implicit-sync-producer-consumer",
    explicit_sync => "device/explicit-sync-sync-file",
    timeout => "device/timeout-error-fence-engine-continues",
    iommu_fault => "device/iommu-fault-error-fence",
    seqno_ordered => "device/fences-seqno-ordered",
    failed_dependency => "device/failed-dependency-cancels",
    bad_input => "device/submit-bad-input",
    ownership_cpu_access_outside_bracket => "device/ownership-cpu-access-outside-bracket",
    ownership_job_while_cpu_owns => "device/ownership-job-while-cpu-owns",
    ownership_unmap_while_busy => "device/ownership-unmap-while-busy",
    ownership_free_while_busy => "device/ownership-free-while-busy",
    ownership_sync_direction_mismatch => "device/ownership-sync-direction-mismatch",
    non_coherent_missing_end_cpu_access => "device/non-coherent-missing-end-cpu-access",
    pipeline => "device/pipeline",
}
