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
    // A zero count is a usage error before the stage starts (the stage's own check of
    // its configuration stays behind it).
    let (code, _out, err) = run(&["demo", "--stage", "isp", "--ring", "0"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--ring") && err.contains("1 or more"), "{err}");
    let (code, _out, err) = run(&["demo", "--stage", "scanout"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no stage \"scanout\""), "{err}");
    // Standard input that is not the control socket: an error, not a hang.
    let (code, _out, err) = run(&["demo", "--stage", "camera"], &[]);
    assert_eq!(code, 1, "{err}");
}

/// A self-test case whose library code warns (an attachment dropped with live mappings).
const WARNING_CASE: &str = "dma-buf/drop-guard-with-live-mapping-detaches-at-last-unmap";

#[test]
fn library_warnings_reach_stderr_and_quiet_hides_them() {
    let (code, out, err) = run(&["selftest", WARNING_CASE], &[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("WARN")
            && err.contains("dmabuf_core::buf::attach")
            && err.contains("live mapping"),
        "{err}"
    );
    for (args, envs) in [
        (&["-q", "selftest", WARNING_CASE][..], &[][..]),
        (&["selftest", WARNING_CASE, "--quiet"][..], &[][..]),
        (
            &["selftest", WARNING_CASE][..],
            &[("RUST_LOG", "error")][..],
        ),
    ] {
        let (code, out, err) = run(args, envs);
        assert_eq!(code, 0, "{args:?}: stdout: {out}\nstderr: {err}");
        assert!(!err.contains("WARN"), "{args:?} {envs:?}: {err}");
        assert!(out.contains("1 passed, 0 failed"), "{out}");
    }
}

#[test]
fn verbose_and_rust_log_turn_on_debug_lines() {
    let demo = ["demo", "--frames", "4", "--size", "4K"];
    let (code, _out, err) = run(&demo, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("DEBUG"), "{err}");
    let verbose: Vec<&str> = std::iter::once("-v").chain(demo).collect();
    for (args, envs) in [
        (&verbose[..], &[][..]),
        (&demo[..], &[("RUST_LOG", "debug")][..]),
    ] {
        let (code, _out, err) = run(args, envs);
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains("DEBUG") && err.contains("demo configuration") && err.contains("ring=4"),
            "{args:?} {envs:?}: {err}"
        );
    }
    // -q wins over RUST_LOG; a RUST_LOG that is not a filter is named, not ignored.
    let (_, _, err) = run(&["-q", "demo", "--frames", "4"], &[("RUST_LOG", "debug")]);
    assert!(!err.contains("DEBUG"), "{err}");
    let (code, _, err) = run(&demo, &[("RUST_LOG", "dmabuf=[")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("RUST_LOG=\"dmabuf=[\" is not a valid filter"),
        "{err}"
    );
    let (code, _, err) = run(&["-q", "-v", "demo"], &[]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn an_unknown_heap_is_named_beside_the_heaps_that_exist() {
    let (code, out, err) = run(&["demo", "--heap", "foo"], &[]);
    assert_eq!(code, 2, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("--heap")
            && err.contains("no heap \"foo\"")
            && err.contains("system")
            && err.contains("contig"),
        "{err}"
    );
}

#[test]
fn sizes_take_the_usual_suffixes() {
    // A zero count after the size is the first error, so the size parsed.
    for size in ["4K", "1M", "1G", "1MiB", "1.5M", "4096", "256k", "2GiB"] {
        let (code, _out, err) = run(&["demo", "--size", size, "--frames", "0"], &[]);
        assert_eq!(code, 2, "{size}: {err}");
        assert!(
            err.contains("--frames") && !err.contains("--size"),
            "{size}: {err}"
        );
    }
    let (code, out, err) = run(
        &["demo", "--size", "1.5M", "--frames", "2", "--ring", "1"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1572864 bytes per frame"), "{out}");
    assert!(!err.contains("rounded up"), "{err}");
    for bad in ["1.5X", "0", "-1", "", "K"] {
        let (code, _out, err) = run(&["demo", "--size", bad], &[]);
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(
            err.contains("--size") && err.contains("e.g. 4096, 256K, 1.5M"),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn a_size_of_part_of_a_page_is_a_note_not_an_error() {
    let (code, out, err) = run(&["demo", "--size", "1000", "--frames", "2"], &[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("--size 1000 is not a whole number of")
            && err.contains("rounded up to 4096 bytes"),
        "{err}"
    );
    assert!(out.contains("demo: clean"), "{out}");
    let (_, _, err) = run(&["-q", "demo", "--size", "1000", "--frames", "2"], &[]);
    assert!(!err.contains("rounded up"), "{err}");
}

#[test]
fn zero_counts_name_the_flag_and_the_valid_range() {
    for flag in ["--ring", "--frames", "--inspect-every"] {
        for bad in ["0", "x", "-3"] {
            let (code, out, err) = run(&["demo", flag, bad], &[]);
            assert_eq!(code, 2, "{flag} {bad}: stdout: {out}\nstderr: {err}");
            assert!(
                err.contains(flag) && err.contains("valid range: 1 or more"),
                "{flag} {bad}: {err}"
            );
        }
    }
    let (code, _, err) = run(&["torture", "--seconds", "99999999999"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--seconds") && err.contains("valid range: 1 to"),
        "{err}"
    );
    let (code, _, err) = run(&["demo", "--processes", "--kill-stage", "gpu"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("camera, isp, encoder"), "{err}");
    let (code, _, err) = run(&["torture", "no-such-scenario"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("\"no-such-scenario\"") && err.contains("stress"),
        "{err}"
    );
}

#[test]
fn running_out_of_descriptors_names_the_limit() {
    // A ring of 200 pairs needs 400 descriptors; the limit is 128.
    for procs in [false, true] {
        let script = format!(
            "ulimit -n 128 && exec \"$0\" demo --ring 200 --size 4K --frames 8{}",
            if procs { " --processes" } else { "" }
        );
        let out = Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_dmabuf")])
            .output()
            .expect("run sh");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("RLIMIT_NOFILE")
                && err.contains("`ulimit -n`")
                && err.contains("128 open descriptors"),
            "{err}"
        );
        assert!(
            err.contains("a ring of 200 holds 400 buffers") && err.contains("--ring 32 or less"),
            "{err}"
        );
    }
}

#[test]
fn bench_prints_targets_beside_ratios_in_100_columns() {
    let (code, out, err) = run(&["bench", "ww", "--quick"], &[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    for line in out.lines() {
        assert!(
            line.chars().count() <= 100,
            "{} columns: {line}",
            line.chars().count()
        );
    }
    assert!(out.starts_with("suite") && out.contains("target"), "{out}");
    assert!(
        out.contains("≤ 1.5") && out.contains("≤ 80 ns") && out.contains("vs std::sync::Mutex"),
        "{out}"
    );
    let marks = out
        .lines()
        .filter(|l| l.ends_with(" ok") || l.ends_with(" MISS"))
        .count();
    assert_eq!(marks, 4, "{out}");
    assert!(out.contains("targets: "), "{out}");
    let (code, _, err) = run(&["bench", "nope"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("\"nope\"") && err.contains("ww, fence"),
        "{err}"
    );
}

#[test]
fn bench_check_exits_1_naming_each_miss_and_json_carries_the_targets() {
    let (code, out, err) = run(&["bench", "ww", "--quick", "--json", "--check"], &[]);
    let cases: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    let cases = cases.as_array().expect("an array");
    assert_eq!(cases.len(), 4, "{out}");
    let mut missed = Vec::new();
    for c in cases {
        for k in [
            "suite",
            "case",
            "ours_ns",
            "baseline",
            "baseline_ns",
            "ratio",
            "target",
            "target_of",
            "met",
        ] {
            assert!(c.get(k).is_some(), "{k} in {c}");
        }
        let t = c["target"].as_f64().expect("every ww case has a target");
        let (of, measured) = match c["target_of"].as_str() {
            Some("ratio") => ("ratio", c["ratio"].as_f64().unwrap()),
            Some("overhead_ns") => ("overhead", c["overhead_ns"].as_f64().unwrap()),
            other => panic!("target_of {other:?}"),
        };
        let met = c["met"].as_bool().unwrap();
        // Rounded in the JSON: compare away from the boundary.
        if (measured - t).abs() > 0.01 {
            assert_eq!(met, measured <= t, "{of}: {c}");
        }
        if !met {
            missed.push(c["case"].as_str().unwrap().to_string());
        }
    }
    let overhead = cases
        .iter()
        .find(|c| c["target_of"] == "overhead_ns")
        .expect("the lockdep case");
    assert_eq!(overhead["target"].as_f64(), Some(80.0));
    if missed.is_empty() {
        assert_eq!(code, 0, "{err}");
    } else {
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("{} of 4 cases missed", missed.len())),
            "{err}"
        );
        for m in &missed {
            assert!(
                err.contains(&format!("ww/{m}: ")) && err.contains("target ≤"),
                "{m}: {err}"
            );
        }
    }
}

/// The progress lines of a `--progress plain` run's stderr that contain `key`.
fn progress_lines<'a>(err: &'a str, key: &str) -> Vec<&'a str> {
    err.lines().filter(|l| l.contains(key)).collect()
}

#[test]
fn progress_shows_elapsed_eta_rates_and_what_runs() {
    let (code, out, err) = run(
        &[
            "--progress",
            "plain",
            "demo",
            "--frames",
            "3000",
            "--size",
            "64K",
        ],
        &[],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let lines = progress_lines(&err, "/3000 frames");
    assert!(
        lines[0].trim_start().starts_with("0s [") && lines[0].contains("0/3000 frames, 0 frames/s"),
        "{err}"
    );
    // Later lines (the run takes over a second in a debug build) carry a rate and an ETA.
    for l in &lines[1..] {
        assert!(
            l.contains(" frames/s ETA ") && !l.contains(", 0 frames/s"),
            "{l}"
        );
    }
    let (code, _, err) = run(&["--progress", "plain", "torture", "--seconds", "2"], &[]);
    assert_eq!(code, 0, "{err}");
    let lines = progress_lines(&err, "of 2s");
    assert!(!lines.is_empty(), "{err}");
    for l in &lines {
        assert!(
            l.contains("ETA ") && l.contains(" runs, ") && l.contains(" failed; now "),
            "{l}"
        );
    }
    let (code, _, err) = run(&["--progress", "plain", "bench", "ww", "--quick"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("0/4 cases") && err.contains("ww/uncontended lock+unlock"),
        "{err}"
    );
    // -q: no progress at all; without --progress, none when stderr is not a terminal.
    for args in [
        &["-q", "--progress", "plain", "demo", "--frames", "8"][..],
        &["demo", "--frames", "8"][..],
    ] {
        let (code, _, err) = run(args, &[]);
        assert_eq!(code, 0, "{err}");
        assert!(!err.contains("frames/s"), "{args:?}: {err}");
    }
}

#[test]
fn demo_trace_writes_a_perfetto_json_trace() {
    let path = std::env::temp_dir().join(format!("dmabuf-cli-trace-{}.json", std::process::id()));
    let p = path.to_str().unwrap();
    let (code, out, err) = run(
        &["demo", "--frames", "20", "--size", "16K", "--trace", p],
        &[],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("trace: ") && err.contains("0 dropped"),
        "{err}"
    );
    let json = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(json.starts_with("{\"traceEvents\":["));
    for want in [
        "engine camera",
        "engine isp",
        "engine encoder",
        "\"cat\":\"job\"",
        "\"ph\":\"s\"",
    ] {
        assert!(json.contains(want), "no {want} in the trace");
    }
    let (code, _, err) = run(&["demo", "--processes", "--trace", p], &[]);
    assert_eq!(code, 2, "--trace is for the one-process demo: {err}");
}

#[test]
fn bufinfo_fences_and_lockdep_of_a_live_process() {
    let dir = std::env::temp_dir().join(format!("dmabuf-cli-debug-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let xdg = dir.to_str().unwrap();
    let envs = [("XDG_RUNTIME_DIR", xdg)];
    let (code, out, _) = run(&["bufinfo"], &envs);
    assert_eq!(code, 0);
    assert!(
        out.contains("no process of this user exposes its state"),
        "{out}"
    );
    let mut demo = dmabuf()
        .args([
            "demo",
            "--frames",
            "10000000",
            "--size",
            "4K",
            "--progress",
            "never",
        ])
        .env("XDG_RUNTIME_DIR", xdg)
        .env("DMABUF_DEBUG_SOCKET", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = demo.id().to_string();
    let t = std::time::Instant::now();
    loop {
        let (_, out, _) = run(&["bufinfo"], &envs);
        if out.contains(&pid) {
            break;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "never served: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (code, out, err) = run(&["bufinfo", "--pid", &pid], &envs);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Dma-buf Objects:") && out.contains("ring0-in"),
        "{out}"
    );
    let (code, out, _) = run(&["fences", "--pid", &pid], &envs);
    assert_eq!(code, 0);
    assert!(out.starts_with("objs:") && out.contains("fences:"), "{out}");
    assert!(
        out.contains("contexts:") && out.contains("engine camera (device camera): context"),
        "{out}"
    );
    let (code, out, _) = run(&["lockdep", "--pid", &pid], &envs);
    assert_eq!(code, 0);
    // (With lockdep compiled out there are no classes to list, and it says so.)
    assert!(
        (out.starts_with("lock classes:") && out.contains("reservation_ww_class"))
            || out == "lockdep is compiled out: no classes\n",
        "{out}"
    );
    demo.kill().unwrap();
    demo.wait().unwrap();
    let (code, _, err) = run(&["bufinfo", "--pid", &pid], &envs);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("process {pid}")), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
