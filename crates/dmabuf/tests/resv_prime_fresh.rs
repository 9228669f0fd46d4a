//! The reservation classes' boot-time lock order, checked in fresh processes.
//!
//! The kernel primes the order mmap lock → reservation acquire context → reservation
//! lock → reclaim → mmu notifier → fence wait once at boot, so that the first run of a
//! bad order is reported and a correct order is never blamed, whatever ran before. A
//! lockdep graph lives as long as its process, so each scenario runs in a child process
//! of its own: this test binary again, with `--exact child` and the scenario named in
//! [`SCENARIO`]. The child asserts its reports; the parent asserts that the child ran the
//! scenario and succeeded.
//!
//! With lockdep off (`LOCKDEP=off`, or the `lockdep-off` feature) the scenarios still
//! run, and assert that nothing is reported.

use dmabuf::fence::{begin_signalling, might_wait};
use dmabuf::resv::{Resv, RESERVATION_WW_CLASS};
use dmabuf::ww::AcquireCtx;
use lockdep::{Report, ReportKind};
use std::process::Command;

/// The environment variable naming the scenario a child runs.
const SCENARIO: &str = "DMABUF_RESV_PRIME_SCENARIO";

/// Run `scenario` in a fresh process and check that it passed.
fn in_fresh_process(scenario: &str) {
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new(exe)
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(SCENARIO, scenario)
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scenario {scenario} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(&format!("scenario {scenario}: passed")),
        "scenario {scenario} did not run:\n{stdout}\n{stderr}"
    );
}

/// Whether `r` is the cycle through the reservation acquire context and a fence wait.
fn is_ctx_in_section_cycle(r: &Report) -> bool {
    r.kind == ReportKind::CircularDependency
        && r.classes
            .iter()
            .any(|c| c == RESERVATION_WW_CLASS.acquire_class().name())
        && r.classes.iter().any(|c| c == "dma_fence_map")
}

/// The bad order: an acquire context of the reservation class started inside a fence
/// signalling section (a signaller that may have to wait for reservation locks, which
/// may be held across fence waits).
fn bad_order() -> Vec<Report> {
    let ((), reports) = lockdep::capture(|| {
        let section = begin_signalling();
        let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
        ctx.fini().expect("nothing locked");
        drop(section);
    });
    reports
}

/// The correct order: acquire context, reservation lock, then a fence wait under it.
fn correct_order() -> Vec<Report> {
    let ((), reports) = lockdep::capture(|| {
        let (a, b) = (Resv::new(), Resv::new());
        let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
        let ga = a.lock(&ctx).expect("free");
        let gb = b.lock(&ctx).expect("free");
        ctx.done();
        might_wait();
        drop((ga, gb));
        ctx.fini().expect("all unlocked");
        // And the lock without a context, with a wait under it.
        let g = a.lock_no_ctx();
        might_wait();
        drop(g);
    });
    reports
}

fn expect_bad_reported(reports: &[Report], what: &str) {
    if lockdep::enabled() {
        assert!(
            reports.iter().any(is_ctx_in_section_cycle),
            "{what}: the acquire context in a signalling section is reported, got {reports:#?}"
        );
    } else {
        assert!(reports.is_empty(), "{what}: lockdep off, got {reports:#?}");
    }
}

fn expect_clean(reports: &[Report], what: &str) {
    assert!(
        reports.is_empty(),
        "{what}: the correct order is not blamed, got {reports:#?}"
    );
}

/// The child side: runs the scenario [`SCENARIO`] names; does nothing in the parent.
#[test]
fn child() {
    let Ok(scenario) = std::env::var(SCENARIO) else {
        return;
    };
    match scenario.as_str() {
        "bad-first" => expect_bad_reported(&bad_order(), "the first thing the process does"),
        "bad-then-correct" => {
            expect_bad_reported(&bad_order(), "bad order");
            expect_clean(&correct_order(), "correct order after the bad one");
            expect_clean(&correct_order(), "correct order, again");
        }
        "correct-then-bad" => {
            expect_clean(&correct_order(), "correct order first");
            expect_bad_reported(&bad_order(), "bad order after the correct one");
        }
        "correct-only" => {
            expect_clean(&correct_order(), "correct order");
            expect_clean(&correct_order(), "correct order, again");
        }
        "resv-lock-in-section" => {
            let r = Resv::new();
            let ((), reports) = lockdep::capture(|| {
                let section = begin_signalling();
                drop(r.lock_no_ctx());
                drop(section);
            });
            if lockdep::enabled() {
                assert!(
                    reports
                        .iter()
                        .any(|r| r.kind == ReportKind::CircularDependency),
                    "a reservation lock in a signalling section is reported, got {reports:#?}"
                );
            } else {
                assert!(reports.is_empty(), "lockdep off, got {reports:#?}");
            }
        }
        other => panic!("unknown scenario {other}"),
    }
    println!("scenario {scenario}: passed");
}

#[test]
fn acquire_ctx_in_signalling_section_is_reported_in_a_fresh_process() {
    in_fresh_process("bad-first");
}

#[test]
fn correct_order_after_a_bad_one_is_not_blamed() {
    in_fresh_process("bad-then-correct");
}

#[test]
fn bad_order_after_a_correct_one_is_reported() {
    in_fresh_process("correct-then-bad");
}

#[test]
fn correct_order_alone_is_clean() {
    in_fresh_process("correct-only");
}

#[test]
fn resv_lock_in_signalling_section_is_reported_in_a_fresh_process() {
    in_fresh_process("resv-lock-in-section");
}
