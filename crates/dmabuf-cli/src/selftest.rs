//! `dmabuf selftest [FILTER]`.

use std::io::Write;
use std::process::ExitCode;

pub fn main(filter: Option<&str>, list: bool) -> ExitCode {
    let cases = dmabuf::selftest::select(filter);
    if list {
        for c in &cases {
            println!("{}", c.name);
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
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut out = std::io::stdout().lock();
    for case in &cases {
        let o = dmabuf::selftest::run_case(case);
        let ms = o.time.as_secs_f64() * 1e3;
        match &o.result {
            Ok(()) => {
                passed += 1;
                let _ = writeln!(out, "{:<width$}  ok    {ms:9.2} ms", o.name);
            }
            Err(why) => {
                failed += 1;
                let _ = writeln!(out, "{:<width$}  FAIL  {ms:9.2} ms  {why}", o.name);
            }
        }
        let _ = out.flush();
    }
    let _ = writeln!(out, "{passed} passed, {failed} failed");
    if failed > 0 || (cases.is_empty() && filter.is_some()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
