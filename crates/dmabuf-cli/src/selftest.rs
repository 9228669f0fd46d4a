//! `dmabuf selftest [FILTER]`.

use dmabuf_tools::selftest;
use std::io::Write;
use std::ops::ControlFlow;
use std::process::ExitCode;
use std::time::Duration;

pub fn main(filter: Option<&str>, list: bool, limit: Duration) -> ExitCode {
    let cases = selftest::select(filter);
    let mut out = std::io::stdout().lock();
    if let Some(f) = filter.filter(|_| cases.is_empty()) {
        eprintln!(
            "dmabuf selftest: no case name contains {f:?} (`dmabuf selftest --list` lists them)"
        );
        return ExitCode::from(2);
    }
    if list {
        for c in &cases {
            // A closed pipe (`--list | head`) ends the listing quietly.
            if writeln!(out, "{}", c.name).is_err() {
                break;
            }
        }
        return ExitCode::SUCCESS;
    }
    // Cases capture their own reports; anything else is printed, never fatal, so one
    // broken case cannot take the run down.
    lockdep::set_on_report(lockdep::OnReport::PrintOnce);
    // Some cases provoke panics on purpose and catch them; a failing case's panic
    // message is printed on its FAIL line. Keep the default hook's noise out.
    std::panic::set_hook(Box::new(|_| {}));
    let width = cases.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let bar = crate::ui::bar(
        cases.len() as u64,
        "{elapsed:>4} [{bar:20}] {pos}/{len} cases {eta_s}  {wide_msg}",
        "cases",
        cases.first().map_or("", |c| c.name),
    );
    let mut failed_so_far = 0;
    let mut next = cases.iter().map(|c| c.name).skip(1);
    // Each case runs under a watchdog: a hang is a FAIL with the case's name, and the run
    // goes on, so it ends in bounded time.
    let tally = selftest::run(&cases, limit, |o| {
        let ms = o.time.as_secs_f64() * 1e3;
        let line = match (&o.result, o.skipped) {
            (_, Some(why)) => format!("{:<width$}  skip  {ms:9.2} ms  {why}", o.name),
            (Ok(()), None) => format!("{:<width$}  ok    {ms:9.2} ms", o.name),
            (Err(why), None) => format!("{:<width$}  FAIL  {ms:9.2} ms  {why}", o.name),
        };
        bar.suspend(|| {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        });
        failed_so_far += usize::from(o.skipped.is_none() && o.result.is_err());
        bar.inc(1);
        let now = next.next().unwrap_or("");
        if failed_so_far > 0 {
            bar.set_message(format!("{failed_so_far} failed so far; now {now}"));
        } else {
            bar.set_message(now);
        }
        ControlFlow::Continue(())
    });
    bar.finish_and_clear();
    let (passed, failed, skipped) = (tally.passed, tally.failures.len(), tally.skipped);
    let tail = if skipped > 0 {
        format!(", {skipped} skipped")
    } else {
        String::new()
    };
    let _ = writeln!(out, "{passed} passed, {failed} failed{tail}");
    let _ = out.flush();
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
