//! Atomic sections (`atomic_enter`) and `might_sleep`: the kernel's "sleeping function
//! called from invalid context" check.

use super::held::{with_state, Loc};
use super::report::{deliver, Pending};
use super::text;
use crate::{LockClass, Report, ReportKind};
use std::cell::Cell;
use std::marker::PhantomData;

/// This thread's atomic-section depth and its innermost section (name, entry site).
type AtomicState = (u32, Option<(&'static str, Loc)>);

thread_local! {
    static ATOMIC: Cell<AtomicState> = const { Cell::new((0, None)) };
}

/// Restores the atomic state from before its section when dropped.
pub(crate) struct AtomicToken {
    /// `None` for a section entered while checking was off (nothing to restore).
    prev: Option<AtomicState>,
    _not_send: PhantomData<*const ()>,
}

impl AtomicToken {
    pub(crate) fn inert() -> Self {
        AtomicToken {
            prev: None,
            _not_send: PhantomData,
        }
    }
}

impl Drop for AtomicToken {
    #[inline]
    fn drop(&mut self) {
        if let Some(prev) = self.prev {
            let _ = ATOMIC.try_with(|c| c.set(prev));
        }
    }
}

#[inline]
pub(crate) fn atomic_enter(what: &'static str, at: Loc) -> AtomicToken {
    let prev = ATOMIC
        .try_with(|c| {
            let prev = c.get();
            c.set((prev.0 + 1, Some((what, at))));
            prev
        })
        .ok();
    AtomicToken {
        prev,
        _not_send: PhantomData,
    }
}

#[inline]
pub(crate) fn in_atomic() -> bool {
    ATOMIC.try_with(|c| c.get().0 > 0).unwrap_or(false)
}

/// Report a sleep (a blocking acquisition of `lock`, or a `might_sleep`) if this thread
/// is inside an atomic section.
#[inline]
pub(crate) fn might_sleep(lock: Option<(&'static LockClass, u8)>, at: Loc) {
    if let Ok((n, Some((what, entered)))) = ATOMIC.try_with(Cell::get) {
        if n > 0 {
            sleep_in_atomic(what, entered, lock, at);
        }
    }
}

#[cold]
#[inline(never)]
fn sleep_in_atomic(
    what: &'static str,
    entered: Loc,
    lock: Option<(&'static LockClass, u8)>,
    at: Loc,
) {
    let mut classes = vec![what.to_string()];
    let sleeper = match lock {
        Some((class, subclass)) => {
            classes.push(class.name().to_string());
            format!(
                "a blocking acquisition of ({})",
                text::class_text(class, subclass)
            )
        }
        None => "a call that may sleep".to_string(),
    };
    let detail = format!(
        "{sleeper} inside an atomic section: ({what})\n\
         the section was entered at: {entered}"
    );
    let title = "sleeping function called from invalid context";
    let p = with_state(|st| {
        st.sync_generation();
        let t = text::generic(title, &st.name, &detail, at, &st.held);
        st.pending(ReportKind::SleepInAtomic, classes.clone(), t)
    })
    .unwrap_or_else(|| Pending {
        report: Report {
            kind: ReportKind::SleepInAtomic,
            classes: classes.clone(),
            thread: "<exiting thread>".into(),
            text: text::generic(title, "<exiting thread>", &detail, at, &[]),
        },
        sink: None,
    });
    deliver(p, true);
}
