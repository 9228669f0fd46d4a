//! Chain validation: recursion (AA) first, then the new dependencies against the global
//! graph ([`super::graph`]), as the kernel's `validate_chain` does.

use super::chain::CHAINS;
use super::graph::{AddDep, Graph, Step};
use super::held::{Held, ThreadState};
use super::report::{cycle_classes, Pending};
use super::text;
use crate::{Mode, ReportKind};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::LazyLock;

pub(super) static GRAPH: LazyLock<Mutex<Graph>> = LazyLock::new(|| Mutex::new(Graph::default()));
pub(super) static VALIDATIONS: AtomicU64 = AtomicU64::new(0);
pub(super) static EDGES: AtomicUsize = AtomicUsize::new(0);

impl ThreadState {
    /// Validate `held` on top of the stack (its chain is not in this thread's cache) and
    /// push it. `always_push`: push it even when the report panics (re-acquisition after
    /// an out-of-order release, where the lock is held whatever lockdep thinks).
    #[cold]
    pub(super) fn acquire_slow(&mut self, held: Held, always_push: bool) -> Option<Pending> {
        if CHAINS.read().contains(&held.key) {
            self.cache.insert(held.key);
            self.held.push(held);
            return None;
        }
        self.validations += 1;
        VALIDATIONS.fetch_add(1, Ordering::Relaxed);
        match validate(&self.held, &held) {
            Ok(()) => {
                CHAINS.write().insert(held.key);
                self.cache.insert(held.key);
                self.held.push(held);
                None
            }
            Err(problem) => {
                let p = self.problem_report(problem, &held);
                if always_push || !self.report_panics() {
                    self.held.push(held);
                }
                Some(p)
            }
        }
    }

    fn problem_report(&self, problem: Problem, next: &Held) -> Pending {
        match problem {
            Problem::Recursive(i) => {
                let prev = &self.held[i];
                let t = text::recursive(&self.name, next, prev, &self.held);
                self.pending(
                    ReportKind::RecursiveLocking,
                    vec![next.class.name().into()],
                    t,
                )
            }
            Problem::Circular(i, path) => {
                let prev = &self.held[i];
                let t = text::circular(&self.name, next, prev, &path, &self.held, "");
                self.pending(
                    ReportKind::CircularDependency,
                    cycle_classes(next, prev, &path),
                    t,
                )
            }
        }
    }
}

enum Problem {
    /// AA against `held[i]`.
    Recursive(usize),
    /// Taking `next` while holding `held[i]` closes the cycle `next → … → held[i]`.
    Circular(usize, Vec<Step>),
}

/// Validate acquiring `next` on top of `held`: recursion first, then the new
/// dependencies, as the kernel's `validate_chain` does.
fn validate(held: &[Held], next: &Held) -> Result<(), Problem> {
    let mut nest_seen = false;
    for (i, prev) in held.iter().enumerate() {
        if Some(prev.instance) == next.how.nest {
            nest_seen = true;
        }
        if prev.node != next.node {
            continue;
        }
        // A recursive reader may retake a class its thread holds for read.
        if next.how.mode == Mode::RecursiveRead && prev.how.mode != Mode::Write {
            continue;
        }
        if nest_seen {
            // Serialized by the held nest lock: allowed, and it adds no dependency.
            return Ok(());
        }
        return Err(Problem::Recursive(i));
    }
    if held.is_empty() {
        return Ok(());
    }
    // Add prev → next for each held lock from the top down to and including the first
    // one that is not a trylock: locks below it reach `next` through it.
    let mut graph = GRAPH.lock();
    for (i, prev) in held.iter().enumerate().rev() {
        if prev.node != next.node {
            match graph.add_dep(prev, next) {
                AddDep::Known => {}
                AddDep::Added => {
                    EDGES.store(graph.edge_count(), Ordering::Relaxed);
                }
                AddDep::Cycle(path) => return Err(Problem::Circular(i, path)),
            }
        }
        if !prev.how.trylock {
            break;
        }
    }
    Ok(())
}
