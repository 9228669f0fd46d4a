//! The registry of self-test scenarios that `dmabuf selftest` runs: ports of the kernel's
//! own self-tests, one [`Case`] each.

pub use lockdep::selftest::Case;
use std::time::{Duration, Instant};

/// What a scenario returns: `Err` says what went wrong.
pub type R = Result<(), String>;

/// `Ok` when `cond` holds, else `Err(what)`: the assertion of the scenarios.
pub fn ensure(cond: bool, what: &str) -> R {
    if cond {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

/// Every scenario of every subsystem, in a stable order.
pub fn cases() -> Vec<Case> {
    let mut v = lockdep::selftest::cases();
    v.extend(crate::ww::selftest::cases());
    v.extend(crate::fence::selftest::cases());
    v.extend(crate::sync_file::selftest::cases());
    v.extend(crate::resv::selftest::cases());
    v.extend(crate::buf::selftest::cases());
    v.extend(crate::device::selftest::cases());
    v.extend(crate::heap::selftest::cases());
    v.extend(crate::fault::selftest::cases());
    v.extend(crate::demo::cases());
    v
}

/// The outcome of one scenario.
#[derive(Debug)]
pub struct Outcome {
    /// The case name.
    pub name: &'static str,
    /// `Ok`, or what failed (a panic counts as a failure). A skipped case is `Ok`.
    pub result: Result<(), String>,
    /// Why the case did not run (e.g. [`lockdep::selftest::SKIPPED_LOCKDEP_OFF`]).
    pub skipped: Option<&'static str>,
    /// How long it ran.
    pub time: Duration,
}

/// Run one case on this thread, turning a panic into a failure; a lockdep-only case is
/// skipped while lockdep is off.
pub fn run_case(case: &Case) -> Outcome {
    let start = Instant::now();
    if let Some(why) = case.skip_reason() {
        return Outcome {
            name: case.name,
            result: Ok(()),
            skipped: Some(why),
            time: start.elapsed(),
        };
    }
    let result = match std::panic::catch_unwind(case.run) {
        Ok(r) => r,
        Err(p) => Err(panic_text(&p)),
    };
    Outcome {
        name: case.name,
        result,
        skipped: None,
        time: start.elapsed(),
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}

/// Cases whose name contains `filter` (all when `None`).
pub fn select(filter: Option<&str>) -> Vec<Case> {
    cases()
        .into_iter()
        .filter(|c| filter.is_none_or(|f| c.name.contains(f)))
        .collect()
}
