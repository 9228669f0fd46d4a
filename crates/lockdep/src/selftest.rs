//! Self-test scenarios: ports of the kernel's `lib/locking-selftest.c`, as library
//! functions so that both `cargo test` and `dmabuf selftest` run them.

/// One self-test scenario.
#[derive(Clone, Copy)]
pub struct Case {
    /// `suite/name`, e.g. `locking/AA-write`.
    pub name: &'static str,
    /// Runs the scenario; `Err` says what went wrong.
    pub run: fn() -> Result<(), String>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Every lockdep scenario.
pub fn cases() -> Vec<Case> {
    Vec::new()
}
