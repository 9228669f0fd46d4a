//! `dmabuf bench SUITE [--quick] [--json]`.

use dmabuf_tools::bench::{self, Measurement, Settings};
use std::process::ExitCode;

pub fn main(suite: &str, quick: bool, json: bool) -> ExitCode {
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
        indicatif::ProgressBar::new(cases.len() as u64)
    };
    let mut results = Vec::new();
    for case in &cases {
        bar.set_message(format!("{}/{}", case.suite, case.case));
        results.push(bench::run(case, settings));
        bar.inc(1);
    }
    bar.finish_and_clear();
    if json {
        let arr: Vec<_> = results.iter().map(Measurement::to_json).collect();
        println!("{}", serde_json::Value::Array(arr));
    } else {
        print_table(&results);
    }
    ExitCode::SUCCESS
}

fn print_table(results: &[Measurement]) {
    let cw = results.iter().map(|m| m.case.len()).max().unwrap_or(4);
    let bw = results.iter().map(|m| m.baseline.len()).max().unwrap_or(8);
    println!(
        "{:<6} {:<cw$} {:>12}  {:<bw$} {:>12} {:>7}",
        "suite", "case", "ours ns", "baseline", "base ns", "ratio"
    );
    for m in results {
        let extra = if m.overhead {
            format!("  (overhead {:+.1} ns)", m.ours_ns - m.baseline_ns)
        } else {
            String::new()
        };
        println!(
            "{:<6} {:<cw$} {:>12.1}  {:<bw$} {:>12.1} {:>7.3}{extra}",
            m.suite, m.case, m.ours_ns, m.baseline, m.baseline_ns, m.ratio
        );
    }
}
