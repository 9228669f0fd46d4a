//! Runs every self-test scenario and lists the failures.

#[test]
fn every_selftest_case_passes() {
    if !lockdep::enabled() {
        return; // feature `off` or LOCKDEP=off: nothing is checked
    }
    let cases = lockdep::selftest::cases();
    assert!(cases.len() > 100, "only {} cases", cases.len());
    let mut failed = Vec::new();
    for case in &cases {
        if let Err(e) = (case.run)() {
            failed.push(format!("{}: {e}", case.name));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n\n")
    );
}

#[test]
fn case_names_are_unique_and_prefixed() {
    let cases = lockdep::selftest::cases();
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    assert!(names.iter().all(|n| n.starts_with("locking/")));
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "duplicate case names");
}
