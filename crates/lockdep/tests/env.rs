//! The `LOCKDEP` environment variable, read once: each setting is checked in a child
//! process that re-runs this binary's `child` test.

use lockdep::{acquire, release, Acquire, LockClass, OnReport};
use std::process::Command;

/// Does nothing unless started by `env_var_settings` with `LOCKDEP_TEST_EXPECT` set.
#[test]
fn child() {
    let Ok(expect) = std::env::var("LOCKDEP_TEST_EXPECT") else {
        return;
    };
    let x = LockClass::leak("X");
    match expect.as_str() {
        "off" => {
            assert!(!lockdep::enabled());
            acquire(x, 1, Acquire::write());
            acquire(x, 2, Acquire::write()); // not checked
            assert_eq!(lockdep::held_count(), 0);
            // The switch still works.
            lockdep::set_enabled(true);
            assert!(lockdep::enabled());
        }
        "collect" => {
            assert!(lockdep::enabled());
            assert_eq!(lockdep::on_report(), OnReport::Collect);
            release(x, 1);
            assert_eq!(lockdep::take_reports().len(), 1);
        }
        "print" => {
            assert_eq!(lockdep::on_report(), OnReport::PrintOnce);
            release(x, 1);
            release(x, 1);
            assert_eq!(lockdep::stats().printed, 1);
        }
        "panic" => {
            assert_eq!(lockdep::on_report(), OnReport::Panic);
            lockdep::set_on_report(OnReport::Collect); // overrides the environment
            assert_eq!(lockdep::on_report(), OnReport::Collect);
        }
        other => panic!("unknown expectation {other}"),
    }
}

#[test]
fn env_var_settings() {
    if cfg!(feature = "off") {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for (value, expect) in [
        ("off", "off"),
        ("0", "off"),
        ("collect", "collect"),
        ("print", "print"),
        ("panic", "panic"),
    ] {
        let out = Command::new(&exe)
            .args(["--exact", "child", "--test-threads=1"])
            .env("LOCKDEP", value)
            .env("LOCKDEP_TEST_EXPECT", expect)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "LOCKDEP={value}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }
}
