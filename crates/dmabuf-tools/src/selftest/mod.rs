//! The registry of self-test scenarios that `dmabuf selftest` runs: ports of the kernel's
//! own self-tests, one [`Case`] each, and the one runner ([`run`]) that the CLI's
//! `selftest` and `torture` and the cargo tests share.

// The two macros are defined before the family modules, so each family sees them without
// an import; `case_table!` is also exported by path, for `crate::demo`.

/// The case table of a self-test family: `case_table!["family/name" => scenario, …]`
/// makes a `Vec<Case>` in the order written. A scenario is a `fn() -> R` or a
/// closure that captures nothing (`|| stress(WD, 4)`). An entry written
/// `lockdep_only "family/name" => scenario` is a [`Case::lockdep_only`]: skipped while
/// lockdep is off.
macro_rules! case_table {
    ($($($kind:ident)? $name:literal => $run:expr),* $(,)?) => {
        vec![$($crate::selftest::case_table!(@case $($kind)? $name, $run)),*]
    };
    (@case $name:literal, $run:expr) => {
        $crate::selftest::Case::new($name, $run)
    };
    (@case lockdep_only $name:literal, $run:expr) => {
        $crate::selftest::Case::lockdep_only($name, $run)
    };
}
pub(crate) use case_table;

/// `ensure!(cond, "format", args…)`: return `Err` with the formatted text from the
/// scenario unless `cond` holds (the formatted form of [`ensure`]).
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

mod buf;
mod device;
mod fault;
mod fence;
mod heap;
pub(crate) mod resv;
mod sync_file;
mod ww;

pub use lockdep::selftest::Case;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

/// What a scenario returns: `Err` says what went wrong.
pub(crate) type R = Result<(), String>;

/// `Ok` when `cond` holds, else `Err(what)`: the assertion of the scenarios.
pub(crate) fn ensure(cond: bool, what: &str) -> R {
    if cond {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

/// A tiny deterministic xorshift for the scenarios' random orders and choices, seeded by
/// the case (`Rng(seed)`, a non-zero seed): a failing run repeats.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Shuffle `v` in place (Fisher-Yates).
    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }

    /// `0..n` in random order.
    pub(crate) fn order(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        self.shuffle(&mut v);
        v
    }
}

/// Every scenario of every subsystem, in a stable order.
pub(crate) fn cases() -> Vec<Case> {
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
pub(crate) fn run_case(case: &Case) -> Outcome {
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

/// How long [`run`] waits for a case by default: the slowest scenario takes
/// well under a second, so a case still running after this long is hung.
pub const DEFAULT_CASE_LIMIT: Duration = Duration::from_secs(60);

/// Run one case on a thread of its own under a watchdog: if it has not finished within
/// `limit`, the outcome is a failure that says it hung, and the case's thread is left
/// behind (a hung thread cannot be stopped; the caller should end the process once it is
/// done reporting). A skipped case never starts a thread.
pub(crate) fn run_case_watched(case: &Case, limit: Duration) -> Outcome {
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

/// Cases whose name contains `filter` (all when `None`), in the registry's order.
pub fn select(filter: Option<&str>) -> Vec<Case> {
    cases()
        .into_iter()
        .filter(|c| filter.is_none_or(|f| c.name.contains(f)))
        .collect()
}

/// What [`run`] counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that did not run (a lockdep-only case while lockdep is off).
    pub skipped: usize,
    /// One `name: why` line per failed case (a hang or a panic counts), in run order.
    pub failures: Vec<String>,
}

impl Tally {
    /// Cases that ran: passed or failed (a skipped case did not run).
    pub fn ran(&self) -> usize {
        self.passed + self.failures.len()
    }
}

/// The runner: run `cases` one after the other, each on a thread of its own under the
/// watchdog (a case still running after `limit` is a failure that says it hung, and the
/// run goes on; see [`DEFAULT_CASE_LIMIT`]), hand every outcome — skipped ones too — to
/// `each` as it comes (to print it, to move a progress bar), and count them. `each`
/// returns [`ControlFlow::Break`] to stop before the next case.
///
/// A hung case's thread is left behind: a caller that saw a hang should end the process
/// once it is done reporting.
pub fn run(
    cases: &[Case],
    limit: Duration,
    mut each: impl FnMut(&Outcome) -> ControlFlow<()>,
) -> Tally {
    let mut tally = Tally::default();
    for case in cases {
        let o = run_case_watched(case, limit);
        match (&o.result, o.skipped) {
            (_, Some(_)) => tally.skipped += 1,
            (Ok(()), None) => tally.passed += 1,
            (Err(why), None) => tally.failures.push(format!("{}: {why}", o.name)),
        }
        if each(&o).is_break() {
            break;
        }
    }
    tally
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
    fn run_counts_every_outcome_and_hands_each_to_the_callback() {
        let cases = case_table![
            "test/ok" => || Ok(()),
            "test/err" => || Err("no".into()),
            "test/panic" => || panic!("boom"),
            lockdep_only "test/lockdep" => || Ok(()),
        ];
        let mut seen = Vec::new();
        let t = run(&cases, DEFAULT_CASE_LIMIT, |o| {
            seen.push((o.name, o.result.is_ok(), o.skipped.is_some()));
            ControlFlow::Continue(())
        });
        let on = lockdep::enabled();
        assert_eq!(
            seen,
            [
                ("test/ok", true, false),
                ("test/err", false, false),
                ("test/panic", false, false),
                ("test/lockdep", true, !on),
            ]
        );
        assert_eq!((t.passed, t.skipped), (1 + on as usize, !on as usize));
        assert_eq!(t.failures, ["test/err: no", "test/panic: panicked: boom"]);
        assert_eq!(t.ran(), 3 + on as usize);
    }

    #[test]
    fn run_stops_when_the_callback_breaks() {
        let cases = case_table!["test/a" => || Err("a".into()), "test/b" => || Ok(())];
        let mut n = 0;
        let t = run(&cases, DEFAULT_CASE_LIMIT, |_| {
            n += 1;
            ControlFlow::Break(())
        });
        assert_eq!(n, 1);
        assert_eq!((t.passed, t.skipped, t.failures.len()), (0, 0, 1));
    }

    #[test]
    fn every_case_name_is_registered_once() {
        let all = cases();
        let mut names: Vec<_> = all.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len(), "a case name is registered twice");
        assert_eq!(select(None).len(), all.len());
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
