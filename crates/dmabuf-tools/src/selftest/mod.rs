//! The registry of self-test scenarios that `dmabuf selftest` runs: ports of the kernel's
//! own self-tests, one [`Case`] each.

pub mod buf;
pub mod device;
pub mod fault;
pub mod fence;
pub mod heap;
pub mod resv;
pub mod sync_file;
pub mod ww;

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
    v.extend(ww::cases());
    v.extend(fence::cases());
    v.extend(sync_file::cases());
    v.extend(resv::cases());
    v.extend(buf::cases());
    v.extend(device::cases());
    v.extend(heap::cases());
    v.extend(fault::cases());
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

/// How long [`run_case_watched`] waits for a case by default: the slowest scenario takes
/// well under a second, so a case still running after this long is hung.
pub const DEFAULT_CASE_LIMIT: Duration = Duration::from_secs(60);

/// Run one case on a thread of its own under a watchdog: if it has not finished within
/// `limit`, the outcome is a failure that says it hung, and the case's thread is left
/// behind (a hung thread cannot be stopped; the caller should end the process once it is
/// done reporting). A skipped case never starts a thread.
pub fn run_case_watched(case: &Case, limit: Duration) -> Outcome {
    if case.skip_reason().is_some() {
        return run_case(case);
    }
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let c = *case;
    let spawned = std::thread::Builder::new()
        .name(format!("case {}", case.name))
        .spawn(move || {
            let _ = tx.send(run_case(&c));
        });
    if let Err(e) = spawned {
        return Outcome {
            name: case.name,
            result: Err(format!("could not start the case's thread: {e}")),
            skipped: None,
            time: start.elapsed(),
        };
    }
    match rx.recv_timeout(limit) {
        Ok(o) => o,
        Err(_) => Outcome {
            name: case.name,
            result: Err(format!(
                "hung: no result after {:.0} s (watchdog; the case's thread is left running)",
                limit.as_secs_f64()
            )),
            skipped: None,
            time: start.elapsed(),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hangs() -> R {
        loop {
            std::thread::park();
        }
    }

    #[test]
    fn watchdog_turns_a_hang_into_a_failure() {
        let c = Case::new("test/hangs", hangs);
        let limit = Duration::from_millis(200);
        let o = run_case_watched(&c, limit);
        let why = o.result.expect_err("a hung case must fail");
        assert!(why.starts_with("hung"), "{why}");
        assert!(o.time >= limit && o.skipped.is_none());
    }

    #[test]
    fn watchdog_passes_results_and_panics_through() {
        let ok = run_case_watched(&Case::new("test/ok", || Ok(())), DEFAULT_CASE_LIMIT);
        assert_eq!(ok.result, Ok(()));
        let bad = run_case_watched(
            &Case::new("test/err", || Err("no".into())),
            DEFAULT_CASE_LIMIT,
        );
        assert_eq!(bad.result, Err("no".to_string()));
        let p = run_case_watched(
            &Case::new("test/panic", || panic!("boom")),
            DEFAULT_CASE_LIMIT,
        );
        assert_eq!(p.result, Err("panicked: boom".to_string()));
    }

    #[test]
    fn lockdep_only_case_is_skipped_while_lockdep_is_off() {
        let c = Case::lockdep_only("test/lockdep", || Err("ran".into()));
        let o = run_case_watched(&c, DEFAULT_CASE_LIMIT);
        if lockdep::enabled() {
            assert_eq!(o.result, Err("ran".to_string()));
            assert!(o.skipped.is_none());
        } else {
            assert_eq!(o.result, Ok(()));
            assert_eq!(o.skipped, Some(lockdep::selftest::SKIPPED_LOCKDEP_OFF));
        }
    }
}
