//! Feature `off`: every entry point is an empty inline function.

use crate::{Acquire, CaptureGuard, LockClass, Mode, OnReport, Report, ReportKind, Stats};
use std::panic::Location;
use std::sync::Arc;

/// Nothing to undo when the feature `off` is set.
pub(crate) struct CaptureToken;

impl Drop for CaptureToken {
    /// Nothing to uninstall; the impl keeps `CaptureGuard` a type with drop glue in
    /// both builds.
    fn drop(&mut self) {}
}

/// A no-op atomic section (feature `off`).
pub(crate) struct AtomicToken {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl AtomicToken {
    #[inline]
    pub(crate) fn inert() -> Self {
        AtomicToken {
            _not_send: std::marker::PhantomData,
        }
    }
}

#[inline]
pub(crate) fn atomic_enter(_what: &'static str, _at: &'static Location<'static>) -> AtomicToken {
    AtomicToken::inert()
}
#[inline]
pub(crate) fn in_atomic() -> bool {
    false
}
#[inline]
pub(crate) fn might_sleep(
    _lock: Option<(&'static LockClass, u8)>,
    _at: &'static Location<'static>,
) {
}

#[inline]
pub(crate) fn register_class(_class: &'static LockClass) -> u32 {
    0
}
#[inline]
pub(crate) fn set_on_report(_mode: OnReport) {}
#[inline]
pub(crate) fn on_report() -> OnReport {
    OnReport::Panic
}
#[inline]
pub(crate) fn take_reports() -> Vec<Report> {
    Vec::new()
}
#[inline]
pub(crate) fn set_enabled(_on: bool) {}
#[inline(always)]
pub(crate) const fn enabled() -> bool {
    false
}
#[inline]
pub(crate) fn acquire(
    _class: &'static LockClass,
    _instance: usize,
    _how: Acquire,
    _at: &'static Location<'static>,
) {
}
#[inline]
pub(crate) fn release(
    _class: &'static LockClass,
    _instance: usize,
    _at: &'static Location<'static>,
) {
}
#[inline]
pub(crate) fn is_held(_class: &'static LockClass, _mode: Option<Mode>) -> bool {
    false
}
#[inline]
pub(crate) fn is_instance_held(_class: &'static LockClass, _instance: usize) -> bool {
    false
}
#[inline]
pub(crate) fn assert_held(
    _class: &'static LockClass,
    _held: bool,
    _at: &'static Location<'static>,
) {
}
#[inline]
pub(crate) fn prime(_chain: &[&'static LockClass], _at: &'static Location<'static>) {}
#[inline]
pub(crate) fn report_external(
    _kind: ReportKind,
    _classes: &[&'static LockClass],
    _detail: &str,
    _at: &'static Location<'static>,
) {
}
#[inline]
pub(crate) fn held_locks_text() -> String {
    String::new()
}
#[inline]
pub(crate) fn held_count() -> usize {
    0
}
#[inline]
pub(crate) fn install_capture(_sink: Arc<parking_lot::Mutex<Vec<Report>>>) -> CaptureGuard {
    CaptureGuard {
        _private: CaptureToken,
    }
}
#[inline]
pub(crate) fn classes_text() -> String {
    "lockdep is compiled out: no classes\n".to_string()
}

pub(crate) fn stats() -> Stats {
    Stats::default()
}
