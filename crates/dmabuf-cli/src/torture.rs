//! `dmabuf torture [--seconds N] [FILTER]`: the self-test scenarios that race threads
//! against each other (stress, races, contention), run over and over for a while with
//! lockdep on — the long runs that `cargo test` keeps short.

use crate::ui;
use dmabuf_tools::selftest;
use std::ops::ControlFlow;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Whether a case is one of the racing ones.
fn is_racing(name: &str) -> bool {
    ["stress", "race", "contention"]
        .iter()
        .any(|k| name.contains(k))
}

pub fn main(seconds: u64, filter: Option<&str>, limit: Duration) -> ExitCode {
    let cases: Vec<_> = selftest::select(filter)
        .into_iter()
        .filter(|c| is_racing(c.name))
        .collect();
    if cases.is_empty() {
        let racing = selftest::select(None)
            .into_iter()
            .filter(|c| is_racing(c.name))
            .count();
        eprintln!(
            "dmabuf torture: no racing scenario's name contains {:?}; the {racing} racing ones have \"stress\", \"race\" or \"contention\" in their names (`dmabuf selftest --list` lists every case)",
            filter.unwrap_or("")
        );
        return ExitCode::from(2);
    }
    lockdep::set_on_report(lockdep::OnReport::Collect);
    std::panic::set_hook(Box::new(|_| {}));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut runs, mut failures) = (0u64, Vec::new());
    let start = Instant::now();
    let status =
        |runs: u64, failed: usize, next: &str| format!("{runs} runs, {failed} failed; now {next}");
    let bar = ui::bar_with(
        seconds,
        ui::style("{elapsed:>4} of {len}s [{bar:20}] {left}  {wide_msg}", "s").with_key(
            "left",
            move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(
                    w,
                    "ETA {}",
                    ui::duration(deadline.saturating_duration_since(Instant::now()))
                );
            },
        ),
        &status(0, 0, cases[0].name),
    );
    let mut at = 0; // the case running now, by the runner's order
    let mut base = None; // live counts after the warm-up pass, and the runs then
    while Instant::now() < deadline {
        // Under the watchdog: a run that hangs is a failure and the loop goes on, so the
        // command ends in bounded time.
        let (ran_before, failed_before) = (runs, failures.len());
        let (mut ran, mut failed) = (0, 0);
        let pass = selftest::run(&cases, limit, |o| {
            at = (at + 1) % cases.len();
            if o.skipped.is_some() {
                return ControlFlow::Continue(());
            }
            ran += 1;
            failed += usize::from(o.result.is_err());
            bar.set_position(start.elapsed().as_secs().min(seconds));
            bar.set_message(status(
                ran_before + ran,
                failed_before + failed,
                cases[at].name,
            ));
            if Instant::now() >= deadline {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        runs += pass.ran() as u64;
        failures.extend(pass.failures);
        base = base.or_else(|| Some((settled(Duration::from_secs(2)), runs)));
    }
    bar.finish_and_clear();
    let reports = lockdep::take_reports();
    for r in &reports {
        println!("{r}");
    }
    for f in &failures {
        println!("FAIL {f}");
    }
    println!(
        "torture: {} scenarios, {runs} runs in {:.1} s, {} failures, {} lockdep reports",
        cases.len(),
        start.elapsed().as_secs_f64(),
        failures.len(),
        reports.len()
    );
    let drift_ok = drift(base, runs);
    let passed = runs - failures.len() as u64;
    println!("{passed} passed, {} failed", failures.len() + reports.len());
    if failures.is_empty() && reports.is_empty() && drift_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn settled(timeout: Duration) -> dmabuf::debug::Live {
    dmabuf::debug::live::live_settled(Duration::from_millis(50), timeout)
}

/// Print the drift of live descriptors, buffers, fences, mappings and resident memory
/// since the warm-up pass (the first pass fills pools and caches), once background work
/// has quiesced. False when descriptors, buffers or fences drifted; mappings and resident
/// memory follow the allocator's per-thread arenas and the heaps' pools, so they are
/// only printed.
fn drift(base: Option<(dmabuf::debug::Live, u64)>, runs: u64) -> bool {
    match base {
        Some((b, at)) if runs > at => {
            let d = settled(Duration::from_secs(10)).drift(&b);
            println!("drift: {d}");
            d.objects_zero()
        }
        _ => {
            println!("drift: not measured (no run after the warm-up pass)");
            true
        }
    }
}
