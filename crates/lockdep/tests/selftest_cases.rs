//! One test per self-test scenario, so `cargo test` names the failing one.
//!
//! `CASES` must list every scenario of `lockdep::selftest::cases()`; a test checks that.

use lockdep::selftest::cases;

fn run(name: &str) {
    if !lockdep::enabled() {
        return; // feature `off` or LOCKDEP=off: nothing is checked
    }
    let case = cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case named {name}"));
    if let Err(e) = (case.run)() {
        panic!("{name}: {e}");
    }
}

macro_rules! case_tests {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                run($name);
            }
        )*

        const CASES: &[&str] = &[$($name),*];
    };
}

case_tests! {
    aa_spin => "locking/AA-spin",
    aa_wlock => "locking/AA-wlock",
    aa_rlock => "locking/AA-rlock",
    aa_mutex => "locking/AA-mutex",
    aa_wsem => "locking/AA-wsem",
    aa_rsem => "locking/AA-rsem",
    abba_spin => "locking/ABBA-spin",
    abba_wlock => "locking/ABBA-wlock",
    abba_rlock => "locking/ABBA-rlock",
    abba_mutex => "locking/ABBA-mutex",
    abba_wsem => "locking/ABBA-wsem",
    abba_rsem => "locking/ABBA-rsem",
    abbcca_spin => "locking/ABBCCA-spin",
    abbcca_wlock => "locking/ABBCCA-wlock",
    abbcca_rlock => "locking/ABBCCA-rlock",
    abbcca_mutex => "locking/ABBCCA-mutex",
    abbcca_wsem => "locking/ABBCCA-wsem",
    abbcca_rsem => "locking/ABBCCA-rsem",
    abcabc_spin => "locking/ABCABC-spin",
    abcabc_wlock => "locking/ABCABC-wlock",
    abcabc_rlock => "locking/ABCABC-rlock",
    abcabc_mutex => "locking/ABCABC-mutex",
    abcabc_wsem => "locking/ABCABC-wsem",
    abcabc_rsem => "locking/ABCABC-rsem",
    abbccdda_spin => "locking/ABBCCDDA-spin",
    abbccdda_wlock => "locking/ABBCCDDA-wlock",
    abbccdda_rlock => "locking/ABBCCDDA-rlock",
    abbccdda_mutex => "locking/ABBCCDDA-mutex",
    abbccdda_wsem => "locking/ABBCCDDA-wsem",
    abbccdda_rsem => "locking/ABBCCDDA-rsem",
    abcdbdda_spin => "locking/ABCDBDDA-spin",
    abcdbdda_wlock => "locking/ABCDBDDA-wlock",
    abcdbdda_rlock => "locking/ABCDBDDA-rlock",
    abcdbdda_mutex => "locking/ABCDBDDA-mutex",
    abcdbdda_wsem => "locking/ABCDBDDA-wsem",
    abcdbdda_rsem => "locking/ABCDBDDA-rsem",
    abcdbcda_spin => "locking/ABCDBCDA-spin",
    abcdbcda_wlock => "locking/ABCDBCDA-wlock",
    abcdbcda_rlock => "locking/ABCDBCDA-rlock",
    abcdbcda_mutex => "locking/ABCDBCDA-mutex",
    abcdbcda_wsem => "locking/ABCDBCDA-wsem",
    abcdbcda_rsem => "locking/ABCDBCDA-rsem",
    double_unlock_spin => "locking/double-unlock-spin",
    double_unlock_wlock => "locking/double-unlock-wlock",
    double_unlock_rlock => "locking/double-unlock-rlock",
    double_unlock_mutex => "locking/double-unlock-mutex",
    double_unlock_wsem => "locking/double-unlock-wsem",
    double_unlock_rsem => "locking/double-unlock-rsem",
    read_aa1_same_instance_rlock => "locking/read-AA1-same-instance-rlock",
    read_aa1_same_instance_rsem => "locking/read-AA1-same-instance-rsem",
    read_aa1b_two_instances_rlock => "locking/read-AA1B-two-instances-rlock",
    read_aa1b_two_instances_rsem => "locking/read-AA1B-two-instances-rsem",
    read_aa2_read_then_write_rlock => "locking/read-AA2-read-then-write-rlock",
    read_aa2_read_then_write_rsem => "locking/read-AA2-read-then-write-rsem",
    read_aa3_write_then_read_rlock => "locking/read-AA3-write-then-read-rlock",
    read_aa3_write_then_read_rsem => "locking/read-AA3-write-then-read-rsem",
    read_abba1_r_l_l_w_rlock => "locking/read-ABBA1-R-L-L-W-rlock",
    read_abba1_r_l_l_w_rsem => "locking/read-ABBA1-R-L-L-W-rsem",
    read_abba2_r_l_l_r_rlock => "locking/read-ABBA2-R-L-L-R-rlock",
    read_abba2_r_l_l_r_rsem => "locking/read-ABBA2-R-L-L-R-rsem",
    read_abba3_w_l_l_w_rlock => "locking/read-ABBA3-W-L-L-W-rlock",
    read_abba3_w_l_l_w_rsem => "locking/read-ABBA3-W-L-L-W-rsem",
    read_chaincache_abba1 => "locking/read-chaincache-ABBA1",
    rlock_w1r2_w2r3_w3r1_123 => "locking/rlock-W1R2-W2R3-W3R1/123",
    rlock_w1r2_w2r3_w3r1_132 => "locking/rlock-W1R2-W2R3-W3R1/132",
    rlock_w1r2_w2r3_w3r1_213 => "locking/rlock-W1R2-W2R3-W3R1/213",
    rlock_w1r2_w2r3_w3r1_231 => "locking/rlock-W1R2-W2R3-W3R1/231",
    rlock_w1r2_w2r3_w3r1_312 => "locking/rlock-W1R2-W2R3-W3R1/312",
    rlock_w1r2_w2r3_w3r1_321 => "locking/rlock-W1R2-W2R3-W3R1/321",
    rlock_w1w2_r2r3_w3r1_123 => "locking/rlock-W1W2-R2R3-W3R1/123",
    rlock_w1w2_r2r3_w3r1_132 => "locking/rlock-W1W2-R2R3-W3R1/132",
    rlock_w1w2_r2r3_w3r1_213 => "locking/rlock-W1W2-R2R3-W3R1/213",
    rlock_w1w2_r2r3_w3r1_231 => "locking/rlock-W1W2-R2R3-W3R1/231",
    rlock_w1w2_r2r3_w3r1_312 => "locking/rlock-W1W2-R2R3-W3R1/312",
    rlock_w1w2_r2r3_w3r1_321 => "locking/rlock-W1W2-R2R3-W3R1/321",
    rlock_w1w2_r2r3_r3w1_123 => "locking/rlock-W1W2-R2R3-R3W1/123",
    rlock_w1w2_r2r3_r3w1_132 => "locking/rlock-W1W2-R2R3-R3W1/132",
    rlock_w1w2_r2r3_r3w1_213 => "locking/rlock-W1W2-R2R3-R3W1/213",
    rlock_w1w2_r2r3_r3w1_231 => "locking/rlock-W1W2-R2R3-R3W1/231",
    rlock_w1w2_r2r3_r3w1_312 => "locking/rlock-W1W2-R2R3-R3W1/312",
    rlock_w1w2_r2r3_r3w1_321 => "locking/rlock-W1W2-R2R3-R3W1/321",
    rlock_w1r2_r2r3_w3w1_123 => "locking/rlock-W1R2-R2R3-W3W1/123",
    rlock_w1r2_r2r3_w3w1_132 => "locking/rlock-W1R2-R2R3-W3W1/132",
    rlock_w1r2_r2r3_w3w1_213 => "locking/rlock-W1R2-R2R3-W3W1/213",
    rlock_w1r2_r2r3_w3w1_231 => "locking/rlock-W1R2-R2R3-W3W1/231",
    rlock_w1r2_r2r3_w3w1_312 => "locking/rlock-W1R2-R2R3-W3W1/312",
    rlock_w1r2_r2r3_w3w1_321 => "locking/rlock-W1R2-R2R3-W3W1/321",
    edge_types_accumulate => "locking/edge-types-accumulate",
    edge_types_sr_only => "locking/edge-types-SR-only",
    strong_path_revisit => "locking/strong-path-revisit",
    ring_6_mutex => "locking/ring-6-mutex",
    ring_10_mutex => "locking/ring-10-mutex",
    ring_6_rsem => "locking/ring-6-rsem",
    ring_10_rlock => "locking/ring-10-rlock",
    transitive_abc => "locking/transitive-ABC",
    long_chain_no_cycle => "locking/long-chain-no-cycle",
    abba_two_threads => "locking/ABBA-two-threads",
    nest_lock_held => "locking/nest-lock-held",
    nest_lock_not_held => "locking/nest-lock-not-held",
    nest_many_same_class => "locking/nest-many-same-class",
    nest_after_plain_lock => "locking/nest-after-plain-lock",
    plain_lock_after_nest => "locking/plain-lock-after-nest",
    trylock_try_try => "locking/trylock-try-try",
    trylock_try_block => "locking/trylock-try-block",
    trylock_block_try => "locking/trylock-block-try",
    trylock_not_checked => "locking/trylock-not-checked",
    trylock_later_locks_depend => "locking/trylock-later-locks-depend",
    trylock_walk_to_blocking => "locking/trylock-walk-to-blocking",
    ww_spinlock_block => "locking/ww-spinlock-block",
    ww_spinlock_try => "locking/ww-spinlock-try",
    ww_spinlock_context => "locking/ww-spinlock-context",
    subclass_nesting => "locking/subclass-nesting",
    subclass_aa => "locking/subclass-AA",
    subclass_abba => "locking/subclass-ABBA",
    subclass_out_of_range => "locking/subclass-out-of-range",
    unlock_not_held => "locking/unlock-not-held",
    unlock_wrong_instance => "locking/unlock-wrong-instance",
    unlock_out_of_order => "locking/unlock-out-of-order",
    unlock_middle_revalidates => "locking/unlock-middle-revalidates",
    nest_run_split_and_joined => "locking/nest-run-split-and-joined",
    held_at_exit => "locking/held-at-exit",
    exit_clean => "locking/exit-clean",
    assert_held => "locking/assert-held",
    held_queries => "locking/held-queries",
    external_report => "locking/external-report",
    prime_then_ba => "locking/prime-then-BA",
    prime_then_ca => "locking/prime-then-CA",
    prime_order_kept => "locking/prime-order-kept",
    prime_contradicts => "locking/prime-contradicts",
    map_wait_then_signal => "locking/map-wait-then-signal",
    map_signal_then_wait => "locking/map-signal-then-wait",
    map_two_threads => "locking/map-two-threads",
    map_nested_signalling => "locking/map-nested-signalling",
    map_disjoint_paths => "locking/map-disjoint-paths",
    map_wait_in_signalling => "locking/map-wait-in-signalling",
    map_try => "locking/map-try",
    atomic_blocking_lock_mutex => "locking/atomic-blocking-lock-mutex",
    atomic_blocking_lock_wsem => "locking/atomic-blocking-lock-wsem",
    atomic_blocking_lock_rsem => "locking/atomic-blocking-lock-rsem",
    atomic_trylock => "locking/atomic-trylock",
    atomic_might_sleep => "locking/atomic-might-sleep",
    atomic_nested => "locking/atomic-nested",
    atomic_pseudo_lock => "locking/atomic-pseudo-lock",
}

#[test]
fn every_case_has_a_test() {
    let missing: Vec<&str> = cases()
        .iter()
        .map(|c| c.name)
        .filter(|n| !CASES.contains(n))
        .collect();
    assert!(missing.is_empty(), "cases without a test: {missing:?}");
    assert_eq!(CASES.len(), cases().len());
}
