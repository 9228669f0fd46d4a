//! The global dependency graph: one node per (class, subclass), one edge per "B was
//! acquired while A was held", each edge carrying the set of dependency *types* seen.
//!
//! # Edge types
//!
//! An edge `prev → next` has a type made of two letters, as in the kernel:
//!
//! | first letter | `prev` was held…                    |
//! |--------------|-------------------------------------|
//! | `E`          | exclusively ([`Mode::Write`])       |
//! | `S`          | shared (`Read` or `RecursiveRead`)  |
//!
//! | second letter | `next` was acquired…                     |
//! |---------------|------------------------------------------|
//! | `R`           | as a recursive reader                    |
//! | `N`           | otherwise (writer or non-recursive read) |
//!
//! A cycle is a possible deadlock only when it is *strong*: no edge ending in `R` is
//! immediately followed by an edge starting with `S` (the wrap-around pair included). A
//! recursive reader never waits for another reader, so such a pair cannot block.
//!
//! # Search
//!
//! Before adding `prev → next`, [`Graph::find_strong_path`] looks for a path from `next`
//! back to `prev` that, together with the new edge, forms a strong cycle. It is a
//! breadth-first search over states (node, "arrived through an edge ending in `R`"): from
//! a state arrived through `…R`, only `E…` types may be followed. Arriving through `…N`
//! allows every type, so it dominates: a node already reached through `…N` is never
//! searched again, and one reached only through `…R` is searched again if later reached
//! through `…N`. Breadth-first order makes the reported path a shortest one.

use super::held::Held;
use crate::{LockClass, Mode};
use std::collections::{HashMap, VecDeque};
use std::panic::Location;

type Loc = &'static Location<'static>;

/// `prev` held exclusively, `next` not a recursive read.
pub(crate) const EN: u8 = 1;
/// `prev` held exclusively, `next` a recursive read.
pub(crate) const ER: u8 = 2;
/// `prev` held shared, `next` not a recursive read.
pub(crate) const SN: u8 = 4;
/// `prev` held shared, `next` a recursive read.
pub(crate) const SR: u8 = 8;
/// Types that start with `E`.
const FROM_E: u8 = EN | ER;
/// Types that end with `N`.
const TO_N: u8 = EN | SN;
/// Types that end with `R`.
const TO_R: u8 = ER | SR;

/// The type of the dependency created by acquiring `next` (in `next_mode`) while
/// holding `prev` (in `prev_mode`).
pub(crate) fn dep_type(prev_mode: Mode, next_mode: Mode) -> u8 {
    let shared = prev_mode != Mode::Write;
    let recursive = next_mode == Mode::RecursiveRead;
    match (shared, recursive) {
        (false, false) => EN,
        (false, true) => ER,
        (true, false) => SN,
        (true, true) => SR,
    }
}

/// Text of a set of types, e.g. `EN|SR`.
pub(crate) fn types_text(types: u8) -> String {
    let names = [(EN, "EN"), (ER, "ER"), (SN, "SN"), (SR, "SR")];
    names
        .iter()
        .filter(|(bit, _)| types & bit != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("|")
}

/// Graph node of a class and subclass.
#[inline]
pub(crate) fn node_of(id: u32, subclass: u8) -> u32 {
    id * u32::from(crate::MAX_SUBCLASSES) + u32::from(subclass)
}

/// One dependency edge.
///
/// Invariant: it joins two different nodes; `types != 0`; the sites are those of the
/// acquisition that first created the edge.
#[derive(Clone)]
pub(crate) struct Edge {
    pub(crate) to: u32,
    pub(crate) from_class: &'static LockClass,
    pub(crate) from_sub: u8,
    pub(crate) to_class: &'static LockClass,
    pub(crate) to_sub: u8,
    pub(crate) types: u8,
    /// Where `from` was acquired when the edge was first seen.
    pub(crate) prev_at: Loc,
    /// Where `to` was acquired (while holding `from`) when the edge was first seen.
    pub(crate) next_at: Loc,
}

/// A copy of an edge for a report, taken while the graph lock is held.
pub(crate) type Step = Edge;

/// The class graph.
///
/// Invariant: `index[(a, b)]` is the position in `edges` of the only edge `a → b`, and
/// that position is listed in `out[a]`.
#[derive(Default)]
pub(crate) struct Graph {
    edges: Vec<Edge>,
    index: HashMap<(u32, u32), usize>,
    out: HashMap<u32, Vec<usize>>,
}

/// Outcome of [`Graph::add_dep`].
pub(crate) enum AddDep {
    /// The dependency (with this type) was already known.
    Known,
    /// A new edge, or a new type on an existing edge, was recorded.
    Added,
    /// The dependency would close a strong cycle; the path `next → … → prev` that
    /// proves it (not empty). Nothing was recorded.
    Cycle(Vec<Step>),
}

impl Graph {
    /// Number of edges.
    pub(crate) fn edge_count(&self) -> usize {
        self.edges.len()
    }

    /// Every edge, in the order they were recorded.
    pub(crate) fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// Record that `next` is acquired while `prev` is held, unless that closes a strong
    /// cycle. `prev` and `next` must be different nodes.
    pub(crate) fn add_dep(&mut self, prev: &Held, next: &Held) -> AddDep {
        debug_assert_ne!(prev.node, next.node);
        let ty = dep_type(prev.how.mode, next.how.mode);
        let existing = self.index.get(&(prev.node, next.node)).copied();
        if let Some(e) = existing {
            if self.edges[e].types & ty != 0 {
                return AddDep::Known;
            }
        }
        let next_r = next.how.mode == Mode::RecursiveRead;
        let prev_s = prev.how.mode != Mode::Write;
        if let Some(path) = self.find_strong_path(next.node, next_r, prev.node, prev_s) {
            return AddDep::Cycle(path.iter().map(|&e| self.step(e)).collect());
        }
        match existing {
            Some(e) => self.edges[e].types |= ty,
            None => {
                let e = self.edges.len();
                self.edges.push(Edge {
                    to: next.node,
                    from_class: prev.class,
                    from_sub: prev.how.subclass,
                    to_class: next.class,
                    to_sub: next.how.subclass,
                    types: ty,
                    prev_at: prev.at,
                    next_at: next.at,
                });
                self.index.insert((prev.node, next.node), e);
                self.out.entry(prev.node).or_default().push(e);
            }
        }
        AddDep::Added
    }

    fn step(&self, e: usize) -> Step {
        self.edges[e].clone()
    }

    /// Breadth-first search for a path `start → … → target` that closes a strong cycle
    /// with the new edge `target → start`. `start_r`: the new edge ends in `R`;
    /// `target_s`: it starts with `S`. Returns the edges of the path, in order.
    pub(crate) fn find_strong_path(
        &self,
        start: u32,
        start_r: bool,
        target: u32,
        target_s: bool,
    ) -> Option<Vec<usize>> {
        // visited[node]: bit 1 = reached through …N, bit 2 = reached through …R.
        const VIA_N: u8 = 1;
        const VIA_R: u8 = 2;
        let bit = |via_r: bool| if via_r { VIA_R } else { VIA_N };
        let mut visited: HashMap<u32, u8> = HashMap::new();
        // parent[(node, via_r)] = (edge into it, state it came from)
        let mut parent: HashMap<(u32, bool), (usize, (u32, bool))> = HashMap::new();
        let mut queue = VecDeque::new();
        visited.insert(start, bit(start_r));
        queue.push_back((start, start_r));
        while let Some(state @ (node, via_r)) = queue.pop_front() {
            if node == target && !(via_r && target_s) {
                let mut path = Vec::new();
                let mut cur = state;
                while let Some(&(e, from)) = parent.get(&cur) {
                    path.push(e);
                    cur = from;
                }
                path.reverse();
                return Some(path);
            }
            let Some(outs) = self.out.get(&node) else {
                continue;
            };
            for &e in outs {
                let edge = &self.edges[e];
                let allowed = if via_r {
                    edge.types & FROM_E
                } else {
                    edge.types
                };
                let next_r = if allowed & TO_N != 0 {
                    false
                } else if allowed & TO_R != 0 {
                    true
                } else {
                    continue;
                };
                let seen = visited.get(&edge.to).copied().unwrap_or(0);
                // Reached through …N before: nothing new. Through …R before: only a
                // …N arrival is new.
                if seen & VIA_N != 0 || (next_r && seen & VIA_R != 0) {
                    continue;
                }
                visited.insert(edge.to, seen | bit(next_r));
                parent.insert((edge.to, next_r), (e, state));
                queue.push_back((edge.to, next_r));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Acquire;
    use std::collections::VecDeque;

    fn held(class: &'static LockClass, mode: Mode) -> Held {
        Held {
            class,
            node: node_of(class.id(), 0),
            instance: class.map_instance(),
            how: Acquire {
                mode,
                ..Acquire::write()
            },
            at: Location::caller(),
            key: 0,
            more: VecDeque::new(),
        }
    }

    #[test]
    fn dependency_types() {
        use Mode::*;
        assert_eq!(dep_type(Write, Write), EN);
        assert_eq!(dep_type(Write, Read), EN);
        assert_eq!(dep_type(Write, RecursiveRead), ER);
        assert_eq!(dep_type(Read, Write), SN);
        assert_eq!(dep_type(RecursiveRead, Read), SN);
        assert_eq!(dep_type(RecursiveRead, RecursiveRead), SR);
        assert_eq!(types_text(EN | SR), "EN|SR");
    }

    #[test]
    fn types_accumulate_on_one_edge_and_cycles_are_refused() {
        let (a, b) = (LockClass::leak("ga"), LockClass::leak("gb"));
        let mut g = Graph::default();
        let (aw, ar) = (held(a, Mode::Write), held(a, Mode::RecursiveRead));
        let (bw, br) = (held(b, Mode::Write), held(b, Mode::RecursiveRead));
        assert!(matches!(g.add_dep(&ar, &br), AddDep::Added)); // SR
        assert!(matches!(g.add_dep(&ar, &br), AddDep::Known));
        // b(S) → a(N) with only SR on a → b: R then S, not strong.
        assert!(matches!(g.add_dep(&br, &aw), AddDep::Added));
        assert_eq!(g.edge_count(), 2);
        // a(E) → b(N) closes b → a → b strongly: refused, nothing recorded.
        match g.add_dep(&aw, &bw) {
            AddDep::Cycle(path) => {
                assert_eq!(path.len(), 1);
                assert_eq!(path[0].from_class.name(), "gb");
                assert_eq!(path[0].to_class.name(), "ga");
            }
            _ => panic!("expected a cycle"),
        }
        assert_eq!(g.edge_count(), 2);
    }
}
