//! The locking convention, enforced by types: calls that need the reservation lock do not
//! compile without its guard, and guards cannot escape their lock or their thread.

#[test]
fn locking_convention_is_enforced_by_types() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
