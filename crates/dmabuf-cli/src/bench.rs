//! `dmabuf bench SUITE [--quick] [--json] [--check]`.

use crate::ui;
use dmabuf_tools::bench::{self, Measurement, Settings};
use std::process::ExitCode;

/// The widest a table line gets.
const WIDTH: usize = 100;
/// The case column's width (longer names wrap).
const CASE_W: usize = 40;

pub fn main(suite: &str, quick: bool, json: bool, check: bool) -> ExitCode {
    let suites = bench::suites();
    let chosen: Vec<_> = suites
        .iter()
        .filter(|(name, _)| suite == "all" || *name == suite)
        .collect();
    if chosen.is_empty() {
        let names: Vec<_> = suites.iter().map(|(n, _)| *n).collect();
        eprintln!(
            "dmabuf bench: unknown suite {suite:?}; suites: {}, all",
            names.join(", ")
        );
        return ExitCode::from(2);
    }
    let settings = if quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    // A bench never stops on a lockdep report; none is expected. Lockdep is a debugging
    // aid (the kernel's CONFIG_PROVE_LOCKING): workloads run with it switched off at run
    // time, except the cases that measure lockdep itself and switch it on.
    lockdep::set_on_report(lockdep::OnReport::PrintOnce);
    lockdep::set_enabled(false);
    let cases: Vec<_> = chosen.iter().flat_map(|(_, f)| f()).collect();
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        ui::bar(
            cases.len() as u64,
            "{elapsed:>4} [{bar:20}] {pos}/{len} cases {eta_s}  {wide_msg}",
            "cases",
            &cases
                .first()
                .map_or(String::new(), |c| format!("{}/{}", c.suite, c.case)),
        )
    };
    let mut results = Vec::new();
    for case in &cases {
        bar.set_message(format!("{}/{}", case.suite, case.case));
        let m = bench::run(case, settings);
        tracing::debug!(
            suite = m.suite,
            case = m.case,
            ours_ns = m.ours_ns,
            baseline_ns = m.baseline_ns,
            ratio = m.ratio,
            met = ?m.met(),
            "bench case measured"
        );
        results.push(m);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if json {
        let arr: Vec<_> = results.iter().map(Measurement::to_json).collect();
        println!("{}", serde_json::Value::Array(arr));
    } else {
        print_table(&results);
    }
    let missed: Vec<_> = results.iter().filter(|m| m.met() == Some(false)).collect();
    if !json {
        let with = results.iter().filter(|m| m.target.is_some()).count();
        println!(
            "targets: {} met, {} missed, {} without a target{}",
            with - missed.len(),
            missed.len(),
            results.len() - with,
            if missed.is_empty() || check {
                ""
            } else {
                " (with --check a miss exits 1)"
            }
        );
    }
    if check && !missed.is_empty() {
        eprintln!(
            "dmabuf bench --check: {} of {} cases missed their targets:",
            missed.len(),
            results.len()
        );
        for m in &missed {
            let what = if m.overhead { "overhead" } else { "ratio" };
            eprintln!(
                "  {}/{}: {what} {}, target {}",
                m.suite,
                m.case,
                result(m),
                target(m)
            );
        }
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Nanoseconds in a unit that keeps three or four significant digits.
fn ns(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        format!("{x} ns")
    } else if a < 1e3 {
        format!("{x:.1} ns")
    } else if a < 1e6 {
        format!("{:.2} µs", x / 1e3)
    } else if a < 1e9 {
        format!("{:.2} ms", x / 1e6)
    } else {
        format!("{:.2} s", x / 1e9)
    }
}

/// What the target bounds, as measured: the ratio, or the overhead in ns.
fn result(m: &Measurement) -> String {
    if m.overhead {
        format!("{:+.1} ns", m.overhead_ns())
    } else {
        format!("{:.3}", m.ratio)
    }
}

fn target(m: &Measurement) -> String {
    match (m.target, m.overhead) {
        (None, _) => "—".into(),
        (Some(t), false) => format!("≤ {t}"),
        (Some(t), true) => format!("≤ {t} ns"),
    }
}

/// `text` in lines of at most `width` characters, broken at spaces where it can be.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let line = lines.last_mut().expect("one line at least");
            let len = line.chars().count();
            let sep = usize::from(len > 0);
            if len + sep + word.len() <= width {
                if sep == 1 {
                    line.push(' ');
                }
                line.extend(word.iter());
                break;
            }
            if len > 0 {
                lines.push(String::new());
                continue;
            }
            // A word wider than a line: split it.
            line.extend(word.drain(..width));
        }
    }
    lines
}

fn print_table(results: &[Measurement]) {
    let row = |suite: &str, case: &str, ours: &str, base: &str, res: &str, tgt: &str, v: &str| {
        let line =
            format!("{suite:<5}  {case:<CASE_W$}  {ours:>9}  {base:>9}  {res:>9}  {tgt:<8}  {v}");
        println!("{}", line.trim_end());
    };
    row("suite", "case", "ours", "baseline", "result", "target", "");
    let indent = " ".repeat(7);
    for m in results {
        let verdict = match m.met() {
            None => "",
            Some(true) => "ok",
            Some(false) => "MISS",
        };
        let case = wrap(m.case, CASE_W);
        row(
            m.suite,
            &case[0],
            &ns(m.ours_ns),
            &ns(m.baseline_ns),
            &result(m),
            &target(m),
            verdict,
        );
        for more in &case[1..] {
            println!("{indent}{more}");
        }
        let ratio = if m.overhead {
            format!(" (ratio {:.3})", m.ratio)
        } else {
            String::new()
        };
        for line in wrap(&format!("vs {}{ratio}", m.baseline), WIDTH - 9) {
            println!("{indent}  {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces_and_splits_long_words() {
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap("abcdefgh", 3), ["abc", "def", "gh"]);
        assert_eq!(wrap("", 3), [""]);
    }

    #[test]
    fn ns_keeps_a_few_digits() {
        assert_eq!(ns(0.42), "0.4 ns");
        assert_eq!(ns(3261.4), "3.26 µs");
        assert_eq!(ns(14_288_703.0), "14.29 ms");
    }
}
