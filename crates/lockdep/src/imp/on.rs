//! The validator's entry points, over its parts: the switches ([`super::switch`]), the
//! class registry ([`super::classes`]), the per-thread held stack ([`super::held`]), chain
//! keys ([`super::chain`]), validation ([`super::validate`]) against the class graph
//! ([`super::graph`]), report routing ([`super::report`]) and the splat text
//! ([`super::text`]), and atomic sections ([`super::atomic`]).
//!
//! # Hot path
//!
//! `acquire` on a chain already validated costs: one relaxed load (enabled), one load of
//! the class id, a thread-local borrow, one relaxed load (generation), a hash step, a
//! lookup in the thread's chain cache (identity-hashed `u64`s), and a push. Releasing the
//! innermost lock pops it. No global lock is taken unless the chain is new to the thread.

pub(crate) use super::atomic::{atomic_enter, in_atomic, might_sleep, AtomicToken};
pub(crate) use super::classes::register_class;
pub(crate) use super::report::{install_capture, report_external, take_reports, CaptureToken};
pub(crate) use super::switch::{enabled, on_report, set_enabled, set_on_report};

use super::chain::CHAINS;
use super::classes::CLASSES;
use super::graph::{node_of, AddDep};
use super::held::{with_state, Held, Loc};
use super::report::{cycle_classes, deliver, PRINTED};
use super::text;
use super::validate::{EDGES, GRAPH, VALIDATIONS};
use crate::{Acquire, LockClass, Mode, ReportKind, Stats};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

pub(crate) fn stats() -> Stats {
    Stats {
        classes: CLASSES.lock().len(),
        edges: EDGES.load(Ordering::Relaxed),
        chains: CHAINS.read().len(),
        validations: VALIDATIONS.load(Ordering::Relaxed),
        thread_validations: with_state(|st| st.validations).unwrap_or(0),
        printed: PRINTED.load(Ordering::Relaxed),
    }
}

pub(crate) fn classes_text() -> String {
    use std::fmt::Write as _;
    let classes: Vec<&'static LockClass> = CLASSES.lock().clone();
    let edges: Vec<(u32, u8, u32, u8, String)> = super::validate::GRAPH
        .lock()
        .edges()
        .iter()
        .map(|e| {
            (
                e.from_class.id(),
                e.from_sub,
                e.to_class.id(),
                e.to_sub,
                e.to_class.name().to_string(),
            )
        })
        .collect();
    let st = stats();
    let mut o = format!(
        "lock classes: {}, dependencies: {}, chains: {}, validations: {}\n",
        st.classes, st.edges, st.chains, st.validations
    );
    for c in classes {
        let id = c.id();
        let fd = edges.iter().filter(|e| e.0 == id).count();
        let bd = edges.iter().filter(|e| e.2 == id).count();
        let _ = writeln!(o, "{id:08x} FD:{fd:4} BD:{bd:4} {}", c.name());
        for e in edges.iter().filter(|e| e.0 == id) {
            let sub = |s: u8| {
                if s == 0 {
                    String::new()
                } else {
                    format!("/{s}")
                }
            };
            let _ = writeln!(
                o,
                " -> [{:08x}] {}{} (from {}{})",
                e.2,
                e.4,
                sub(e.3),
                c.name(),
                sub(e.1)
            );
        }
    }
    o
}

#[inline]
pub(crate) fn acquire(class: &'static LockClass, instance: usize, how: Acquire, at: Loc) {
    let id = class.id();
    if let Some(p) = with_state(|st| st.acquire(class, id, instance, how, at)).flatten() {
        deliver(p, true);
    }
}

#[inline]
pub(crate) fn release(class: &'static LockClass, instance: usize, at: Loc) {
    if let Some(p) = with_state(|st| st.release(class, instance, at)).flatten() {
        deliver(p, true);
    }
}

pub(crate) fn is_held(class: &'static LockClass, mode: Option<Mode>) -> bool {
    with_state(|st| {
        st.sync_generation();
        st.held
            .iter()
            .any(|h| std::ptr::eq(h.class, class) && mode.is_none_or(|m| h.how.mode == m))
    })
    .unwrap_or(false)
}

pub(crate) fn is_instance_held(class: &'static LockClass, instance: usize) -> bool {
    with_state(|st| {
        st.sync_generation();
        st.held
            .iter()
            .any(|h| std::ptr::eq(h.class, class) && h.holds(instance))
    })
    .unwrap_or(false)
}

pub(crate) fn assert_held(class: &'static LockClass, want_held: bool, at: Loc) {
    let p = with_state(|st| {
        st.sync_generation();
        let held = st.held.iter().any(|h| std::ptr::eq(h.class, class));
        if held == want_held {
            return None;
        }
        let t = text::assert_failed(&st.name, class, want_held, at, &st.held);
        Some(st.pending(ReportKind::AssertHeld, vec![class.name().into()], t))
    });
    if let Some(p) = p.flatten() {
        deliver(p, true);
    }
}

pub(crate) fn prime(chain: &[&'static LockClass], at: Loc) {
    let p = with_state(|st| {
        st.sync_generation();
        let mut prev: Option<Held> = None;
        for &class in chain {
            let node = node_of(class.id(), 0);
            let next = Held {
                class,
                node,
                instance: class.map_instance(),
                how: Acquire::write(),
                at,
                key: 0,
                more: VecDeque::new(),
            };
            if let Some(prev) = prev.take() {
                if prev.node == next.node {
                    let t = text::generic(
                        "lockdep annotation: class primed after itself",
                        &st.name,
                        &format!("prime() lists ({}) twice in a row", class.name()),
                        at,
                        &st.held,
                    );
                    return Some(st.pending(
                        ReportKind::BadAnnotation,
                        vec![class.name().into()],
                        t,
                    ));
                }
                let mut graph = GRAPH.lock();
                match graph.add_dep(&prev, &next) {
                    AddDep::Known => {}
                    AddDep::Added => EDGES.store(graph.edge_count(), Ordering::Relaxed),
                    AddDep::Cycle(path) => {
                        drop(graph);
                        let t = text::circular(
                            &st.name,
                            &next,
                            &prev,
                            &path,
                            &st.held,
                            "(while priming the lock order with lockdep::prime)",
                        );
                        let classes = cycle_classes(&next, &prev, &path);
                        return Some(st.pending(ReportKind::CircularDependency, classes, t));
                    }
                }
            }
            prev = Some(next);
        }
        None
    });
    if let Some(p) = p.flatten() {
        deliver(p, true);
    }
}

pub(crate) fn held_locks_text() -> String {
    with_state(|st| {
        st.sync_generation();
        text::held_text(&st.name, &st.held)
    })
    .unwrap_or_default()
}

pub(crate) fn held_count() -> usize {
    with_state(|st| {
        st.sync_generation();
        st.held.iter().map(Held::count).sum()
    })
    .unwrap_or(0)
}
