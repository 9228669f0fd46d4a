//! Report routing: building a report, delivering it to the installed capture or by
//! the global policy (panic, print once, collect), and captures themselves.

use super::graph::Step;
use super::held::{with_state, Held, Loc, ThreadState};
use super::switch::{on_report, POLICY};
use super::text;
use crate::{CaptureGuard, LockClass, OnReport, Report, ReportKind};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::io::Write as _;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

pub(super) type Sink = Arc<Mutex<Vec<Report>>>;

static COLLECTED: Mutex<Vec<Report>> = Mutex::new(Vec::new());
/// (kind, classes) of the reports printed under `PrintOnce`.
type PrintedSet = HashSet<(ReportKind, Vec<String>)>;
static PRINTED_ONCE: LazyLock<Mutex<PrintedSet>> = LazyLock::new(|| Mutex::new(HashSet::new()));
pub(super) static PRINTED: AtomicU64 = AtomicU64::new(0);

pub(crate) fn take_reports() -> Vec<Report> {
    std::mem::take(&mut *COLLECTED.lock())
}

/// A report built while the thread state was borrowed, to be delivered after.
pub(super) struct Pending {
    pub(super) report: Report,
    pub(super) sink: Option<Sink>,
}

impl ThreadState {
    fn sink(&self) -> Option<Sink> {
        self.captures.last().cloned()
    }

    /// Whether delivering a report now would panic (so the caller should not record
    /// the acquisition it is about to abandon).
    pub(super) fn report_panics(&self) -> bool {
        self.captures.is_empty() && POLICY.load(Ordering::Relaxed) == 0 && !std::thread::panicking()
    }

    pub(super) fn pending(&self, kind: ReportKind, classes: Vec<String>, text: String) -> Pending {
        Pending {
            report: Report {
                kind,
                classes,
                thread: self.name.clone(),
                text,
            },
            sink: self.sink(),
        }
    }
}

/// The class names of a cycle in the order the splat names them.
pub(super) fn cycle_classes(next: &Held, prev: &Held, path: &[Step]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    let mut add = |c: &LockClass| {
        let n = c.name().to_string();
        if !v.contains(&n) {
            v.push(n);
        }
    };
    add(next.class);
    add(prev.class);
    for s in path.iter().rev() {
        add(s.to_class);
        add(s.from_class);
    }
    v
}

fn print_splat(text: &str) {
    PRINTED.fetch_add(1, Ordering::Relaxed);
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Route a report: to the capture, else by the global policy. `may_panic` is false where
/// panicking is not allowed (thread-local destructors).
pub(super) fn deliver(p: Pending, may_panic: bool) {
    let Pending { report, sink } = p;
    crate::tell_listener(&report);
    if let Some(sink) = sink {
        sink.lock().push(report);
        return;
    }
    match on_report() {
        OnReport::Collect => COLLECTED.lock().push(report),
        OnReport::PrintOnce => {
            let fresh = PRINTED_ONCE
                .lock()
                .insert((report.kind, report.classes.clone()));
            if fresh {
                print_splat(&report.text);
            }
        }
        OnReport::Panic => {
            print_splat(&report.text);
            if may_panic && !std::thread::panicking() {
                panic!(
                    "lockdep: {:?} report on {} involving {:?} (splat above)",
                    report.kind, report.thread, report.classes
                );
            }
        }
    }
}

pub(crate) fn report_external(
    kind: ReportKind,
    classes: &[&'static LockClass],
    detail: &str,
    at: Loc,
) {
    let names: Vec<String> = classes.iter().map(|c| c.name().to_string()).collect();
    let title = match kind {
        ReportKind::CircularDependency => "possible circular locking dependency detected",
        ReportKind::RecursiveLocking => "possible recursive locking detected",
        ReportKind::BadUnlock => "bad unlock balance detected!",
        ReportKind::HeldAtExit => "lock held when thread exits!",
        ReportKind::AssertHeld => "lock assertion failed",
        ReportKind::BadAnnotation => "bad lockdep annotation",
        ReportKind::SleepInAtomic => "sleeping function called from invalid context",
        _ => "lock API misuse detected",
    };
    let mut detail = detail.trim_end().to_string();
    if !names.is_empty() {
        let list: Vec<String> = names.iter().map(|n| format!("({n})")).collect();
        detail = format!("{detail}\ninvolving lock classes: {}", list.join(", "));
    }
    let p = with_state(|st| {
        st.sync_generation();
        let t = text::generic(title, &st.name, &detail, at, &st.held);
        st.pending(kind, names.clone(), t)
    })
    .unwrap_or_else(|| Pending {
        report: Report {
            kind,
            classes: names.clone(),
            thread: "<exiting thread>".into(),
            text: text::generic(title, "<exiting thread>", &detail, at, &[]),
        },
        sink: None,
    });
    deliver(p, true);
}

/// Uninstalls its capture from the thread that installed it.
pub(crate) struct CaptureToken {
    sink: Sink,
    /// Captures are per thread: the guard must drop where it was made.
    _not_send: PhantomData<*const ()>,
}

impl Drop for CaptureToken {
    fn drop(&mut self) {
        with_state(|st| {
            if let Some(i) = st.captures.iter().rposition(|c| Arc::ptr_eq(c, &self.sink)) {
                st.captures.remove(i);
            }
        });
    }
}

pub(crate) fn install_capture(sink: Sink) -> CaptureGuard {
    with_state(|st| st.captures.push(sink.clone()));
    CaptureGuard {
        _private: CaptureToken {
            sink,
            _not_send: PhantomData,
        },
    }
}
