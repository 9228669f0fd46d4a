//! The `dmabuf` binary as a user runs it: exit codes, messages, and runs that must end.

use std::io::Read;
use std::process::{Command, Stdio};

fn dmabuf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dmabuf"))
}

fn run(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = dmabuf()
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run dmabuf");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn selftest_filter_matching_nothing_is_a_usage_error() {
    let (code, out, err) = run(&["selftest", "no-such-case-anywhere"], &[]);
    assert_eq!(code, 2, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("no-such-case-anywhere") && err.contains("--list"),
        "{err}"
    );
    assert!(!out.contains("passed"), "{out}");
}

#[test]
fn selftest_list_into_a_closed_pipe_ends_quietly() {
    let mut child = dmabuf()
        .args(["selftest", "--list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Close our end before the child writes (a pipe buffer would otherwise swallow the
    // whole listing): every write of the listing meets a closed pipe, as `| head -1`'s
    // would once head has exited.
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(status.code(), Some(0), "stderr: {err}");
}

#[test]
fn torture_zero_seconds_is_an_error() {
    let (code, out, err) = run(&["torture", "--seconds", "0"], &[]);
    assert_eq!(code, 2, "stdout: {out}");
    assert!(err.contains("at least 1"), "{err}");
    assert!(!out.contains("passed"), "{out}");
}

#[test]
fn lockdep_only_cases_are_skipped_with_lockdep_off() {
    let (code, out, err) = run(&["selftest", "locking/AA-spin"], &[("LOCKDEP", "off")]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("skip") && out.contains("skipped: lockdep off"),
        "{out}"
    );
    assert!(out.contains("0 passed, 0 failed, 1 skipped"), "{out}");
}
#[test]
fn misuse_with_lockdep_off_ends_with_an_errno_not_a_hang() {
    // A job submitted while the caller holds the buffer's reservation lock: refused with
    // EINVAL whatever lockdep's state; the watchdog bounds the run either way.
    let (code, out, err) = run(
        &["selftest", "device/submit-bad-input", "--timeout", "20"],
        &[("LOCKDEP", "off")],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("1 passed, 0 failed"), "{out}");
}

#[test]
fn demo_across_processes_is_clean_and_checks_for_leaks() {
    let (code, out, err) = run(
        &["demo", "--processes", "--frames", "48", "--size", "64K"],
        &[],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("48 run, 48 verified ok, 12 inspected"),
        "{out}"
    );
    assert!(out.contains("one process per stage"), "{out}");
    assert!(
        out.contains("3 stages exited 0") && out.contains("buffers 0 -> 0"),
        "{out}"
    );
    assert!(out.contains("demo: clean"), "{out}");
}

#[test]
fn a_stage_killed_mid_run_is_named_and_the_run_fails_quickly() {
    for stage in ["camera", "isp", "encoder"] {
        let t = std::time::Instant::now();
        let (code, out, err) = run(
            &[
                "demo",
                "--processes",
                "--frames",
                "100000",
                "--size",
                "16K",
                "--kill-stage",
                stage,
                "--kill-after",
                "30",
            ],
            &[],
        );
        assert_ne!(code, 0, "{stage}: stdout: {out}\nstderr: {err}");
        assert!(
            err.contains(&format!("stage {stage} was killed by signal 9")),
            "{stage}: {err}"
        );
        assert!(
            t.elapsed() < std::time::Duration::from_secs(8),
            "{stage}: took {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn demo_across_processes_on_the_contiguous_heap() {
    let (code, out, err) = run(
        &[
            "demo",
            "--processes",
            "--heap",
            "contig",
            "--frames",
            "24",
            "--size",
            "64K",
        ],
        &[],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("24 run, 24 verified ok") && out.contains("demo: clean"),
        "{out}"
    );
}

#[test]
fn a_stage_with_a_bad_configuration_or_name_fails_cleanly() {
    let (code, _out, err) = run(&["demo", "--stage", "isp", "--ring", "0"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("dmabuf demo (isp)") && err.contains("errno 22"),
        "{err}"
    );
    let (code, _out, err) = run(&["demo", "--stage", "scanout"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no stage \"scanout\""), "{err}");
    // Standard input that is not the control socket: an error, not a hang.
    let (code, _out, err) = run(&["demo", "--stage", "camera"], &[]);
    assert_eq!(code, 1, "{err}");
}
