//! Helpers shared by the integration tests.

use std::sync::mpsc;
use std::time::Duration;

/// Run `f` on a thread of its own and fail (naming `what`) if it has not finished
/// within `limit`: a hang becomes a failing test instead of a stuck suite. A panic in
/// `f` is passed on.
pub fn watchdog(what: &str, limit: Duration, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => t.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: hung (still running after {limit:?})")
        }
    }
}
