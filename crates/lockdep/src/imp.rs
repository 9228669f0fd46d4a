//! Implementation (stub: to be written).

use super::*;
use std::sync::Arc;

pub(crate) struct CaptureToken;

pub(crate) fn register_class(_class: &'static LockClass) -> u32 {
    1
}
pub(crate) fn set_on_report(_mode: OnReport) {}
pub(crate) fn on_report() -> OnReport {
    OnReport::Panic
}
pub(crate) fn take_reports() -> Vec<Report> {
    Vec::new()
}
pub(crate) fn set_enabled(_on: bool) {}
#[inline]
pub(crate) fn enabled() -> bool {
    false
}
pub(crate) fn acquire(
    _class: &'static LockClass,
    _instance: usize,
    _how: Acquire,
    _at: &'static Location<'static>,
) {
}
pub(crate) fn release(
    _class: &'static LockClass,
    _instance: usize,
    _at: &'static Location<'static>,
) {
}
pub(crate) fn is_held(_class: &'static LockClass, _mode: Option<Mode>) -> bool {
    false
}
pub(crate) fn is_instance_held(_class: &'static LockClass, _instance: usize) -> bool {
    false
}
pub(crate) fn assert_held(
    _class: &'static LockClass,
    _held: bool,
    _at: &'static Location<'static>,
) {
}
pub(crate) fn prime(_chain: &[&'static LockClass], _at: &'static Location<'static>) {}
pub(crate) fn report_external(
    _kind: ReportKind,
    _classes: &[&'static LockClass],
    _detail: &str,
    _at: &'static Location<'static>,
) {
}
pub(crate) fn held_locks_text() -> String {
    String::new()
}
pub(crate) fn held_count() -> usize {
    0
}
pub(crate) fn install_capture(_sink: Arc<parking_lot::Mutex<Vec<Report>>>) -> CaptureGuard {
    CaptureGuard {
        _private: CaptureToken,
    }
}
