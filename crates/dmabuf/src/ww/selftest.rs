//! Self-test scenarios for wound/wait mutexes: ports of `kernel/locking/test-ww_mutex.c`
//! and the ww cases of `lib/locking-selftest.c`.

use lockdep::selftest::Case;

/// Every ww scenario.
pub fn cases() -> Vec<Case> {
    Vec::new()
}
