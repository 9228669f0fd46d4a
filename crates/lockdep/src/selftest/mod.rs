//! Self-test scenarios: ports of the kernel's `lib/locking-selftest.c`, as library
//! functions so that both `cargo test` and `dmabuf selftest` run them. Behind the cargo
//! feature `selftest`: they are test code, not part of the library's normal build.
//!
//! Every scenario uses fresh classes ([`crate::LockClass::leak`]), so scenarios never
//! share graph nodes and may run concurrently; a [`crate::capture`] collects its reports
//! whatever the global policy. Scenarios only make annotation calls: nothing blocks.
//!
//! The kernel runs most scenarios once per lock kind. Lockdep only sees the mode, so the
//! kinds map to modes: `spin`, `wlock`, `mutex`, `wsem` are [`crate::Mode::Write`];
//! `rlock` (an rwlock reader, which the kernel's self-test treats as recursive) is
//! [`crate::Mode::RecursiveRead`]; `rsem` (an rwsem reader) is [`crate::Mode::Read`].
//!
//! Every scenario here is [`Case::lockdep_only`]: with checking off (feature `off`,
//! `LOCKDEP=off`, or [`crate::set_enabled`]) runners report it as skipped, never as
//! passed. The scenarios live in one file per family (`kinds`, `read`, `nest`,
//! `subclass`, `balance`, `atomic`, `order`, `maps`), over the shared steps and checks of
//! `vocab`; [`cases`] lists them all.

mod atomic;
mod balance;
mod kinds;
mod maps;
mod nest;
mod order;
mod read;
mod subclass;
mod vocab;

use atomic::*;
use balance::*;
use kinds::*;
use maps::*;
use nest::*;
use order::*;
use read::*;
use subclass::*;
use vocab::{Outcome, R, RR, W};

/// One self-test scenario.
#[derive(Clone, Copy)]
pub struct Case {
    /// `suite/name`, e.g. `locking/AA-spin`.
    pub name: &'static str,
    /// Runs the scenario; `Err` says what went wrong.
    pub run: fn() -> Result<(), String>,
    /// The scenario's whole point is a lockdep report (or lockdep's own bookkeeping):
    /// with checking off there is nothing to check, and runners skip it
    /// ([`Case::skip_reason`]) instead of failing it. Scenarios that check an errno *and*
    /// a report are not lockdep-only: they check the errno always and the report only
    /// when [`crate::enabled`].
    pub lockdep_only: bool,
}

/// What a runner prints for a lockdep-only case while checking is off.
pub const SKIPPED_LOCKDEP_OFF: &str = "skipped: lockdep off";

impl Case {
    /// A scenario that runs with lockdep on or off. `run` returns `Err(what went wrong)`
    /// when the scenario fails; it checks lockdep reports only `if crate::enabled()`, so
    /// that it passes with checking off too.
    pub const fn new(name: &'static str, run: fn() -> Result<(), String>) -> Self {
        Case {
            name,
            run,
            lockdep_only: false,
        }
    }

    /// A scenario that checks lockdep itself; skipped while checking is off. `run` returns
    /// `Err(what went wrong)` when the scenario fails.
    pub const fn lockdep_only(name: &'static str, run: fn() -> Result<(), String>) -> Self {
        Case {
            name,
            run,
            lockdep_only: true,
        }
    }

    /// Why this case does not run now (`Some(SKIPPED_LOCKDEP_OFF)` for a lockdep-only
    /// case while checking is off), or `None` when it runs.
    pub fn skip_reason(&self) -> Option<&'static str> {
        (self.lockdep_only && !crate::enabled()).then_some(SKIPPED_LOCKDEP_OFF)
    }
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

macro_rules! per_kind {
    ($name:literal, $f:ident) => {
        [
            Case::lockdep_only(concat!("locking/", $name, "-spin"), || $f(W)),
            Case::lockdep_only(concat!("locking/", $name, "-wlock"), || $f(W)),
            Case::lockdep_only(concat!("locking/", $name, "-rlock"), || $f(RR)),
            Case::lockdep_only(concat!("locking/", $name, "-mutex"), || $f(W)),
            Case::lockdep_only(concat!("locking/", $name, "-wsem"), || $f(W)),
            Case::lockdep_only(concat!("locking/", $name, "-rsem"), || $f(R)),
        ]
    };
}

macro_rules! per_read_kind {
    ($name:literal, $f:ident) => {
        [
            Case::lockdep_only(concat!("locking/", $name, "-rlock"), || $f(RR)),
            Case::lockdep_only(concat!("locking/", $name, "-rsem"), || $f(R)),
        ]
    };
}

macro_rules! permutations {
    ($name:literal, $f:ident) => {
        [
            Case::lockdep_only(concat!("locking/", $name, "/123"), || $f([1, 2, 3])),
            Case::lockdep_only(concat!("locking/", $name, "/132"), || $f([1, 3, 2])),
            Case::lockdep_only(concat!("locking/", $name, "/213"), || $f([2, 1, 3])),
            Case::lockdep_only(concat!("locking/", $name, "/231"), || $f([2, 3, 1])),
            Case::lockdep_only(concat!("locking/", $name, "/312"), || $f([3, 1, 2])),
            Case::lockdep_only(concat!("locking/", $name, "/321"), || $f([3, 2, 1])),
        ]
    };
}

type Run = fn() -> Outcome;

/// Every lockdep scenario, in a fixed order. Each is [`Case::lockdep_only`], named
/// `locking/…` (names are unique), and uses fresh classes, so they may run concurrently
/// and in any order.
pub fn cases() -> Vec<Case> {
    let mut v = Vec::from(per_kind!("AA", aa));
    v.extend(per_kind!("ABBA", abba));
    v.extend(per_kind!("ABBCCA", abbcca));
    v.extend(per_kind!("ABCABC", abcabc));
    v.extend(per_kind!("ABBCCDDA", abbccdda));
    v.extend(per_kind!("ABCDBDDA", abcdbdda));
    v.extend(per_kind!("ABCDBCDA", abcdbcda));
    v.extend(per_kind!("double-unlock", double_unlock));
    v.extend(per_read_kind!("read-AA1-same-instance", read_aa1));
    v.extend(per_read_kind!("read-AA1B-two-instances", read_aa1b));
    v.extend(per_read_kind!("read-AA2-read-then-write", read_aa2));
    v.extend(per_read_kind!("read-AA3-write-then-read", read_aa3));
    v.extend(per_read_kind!("read-ABBA1-R-L-L-W", read_abba1));
    v.extend(per_read_kind!("read-ABBA2-R-L-L-R", read_abba2));
    v.extend(per_read_kind!("read-ABBA3-W-L-L-W", read_abba3));
    v.push(Case::lockdep_only(
        "locking/read-chaincache-ABBA1",
        rlock_chaincache_abba1,
    ));
    v.extend(permutations!("rlock-W1R2-W2R3-W3R1", w1r2_w2r3_w3r1));
    v.extend(permutations!("rlock-W1W2-R2R3-W3R1", w1w2_r2r3_w3r1));
    v.extend(permutations!("rlock-W1W2-R2R3-R3W1", w1w2_r2r3_r3w1));
    v.extend(permutations!("rlock-W1R2-R2R3-W3W1", w1r2_r2r3_w3w1));
    let more: [(&'static str, Run); 47] = [
        ("locking/edge-types-accumulate", edge_types_accumulate),
        ("locking/edge-types-SR-only", edge_types_sr_only),
        ("locking/strong-path-revisit", strong_path_revisit),
        ("locking/ring-6-mutex", || ring(6, W)),
        ("locking/ring-10-mutex", || ring(10, W)),
        ("locking/ring-6-rsem", || ring(6, R)),
        ("locking/ring-10-rlock", || ring(10, RR)),
        ("locking/transitive-ABC", transitive_abc),
        ("locking/long-chain-no-cycle", long_chain_no_cycle),
        ("locking/ABBA-two-threads", abba_two_threads),
        ("locking/nest-lock-held", nest_lock_held),
        ("locking/nest-lock-not-held", nest_lock_not_held),
        ("locking/nest-many-same-class", nest_many),
        ("locking/nest-after-plain-lock", nest_after_plain),
        ("locking/plain-lock-after-nest", nest_then_plain),
        ("locking/trylock-try-try", try_try),
        ("locking/trylock-try-block", try_block),
        ("locking/trylock-block-try", block_try),
        ("locking/trylock-not-checked", trylock_not_checked),
        ("locking/trylock-later-locks-depend", trylock_then_depends),
        (
            "locking/trylock-walk-to-blocking",
            trylock_walks_to_blocking,
        ),
        ("locking/ww-spinlock-block", spin_block),
        ("locking/ww-spinlock-try", spin_try),
        ("locking/ww-spinlock-context", spin_context),
        ("locking/subclass-nesting", subclass_nesting),
        ("locking/subclass-AA", subclass_aa),
        ("locking/subclass-ABBA", subclass_abba),
        ("locking/subclass-out-of-range", subclass_out_of_range),
        ("locking/unlock-not-held", unlock_not_held),
        ("locking/unlock-wrong-instance", unlock_wrong_instance),
        ("locking/unlock-out-of-order", unlock_out_of_order),
        (
            "locking/unlock-middle-revalidates",
            unlock_middle_revalidates,
        ),
        (
            "locking/nest-run-split-and-joined",
            nest_run_split_and_joined,
        ),
        ("locking/held-at-exit", held_at_exit),
        ("locking/exit-clean", exit_clean),
        ("locking/assert-held", assertions),
        ("locking/held-queries", queries),
        ("locking/external-report", external_report),
        ("locking/prime-then-BA", prime_then_ba),
        ("locking/prime-then-CA", prime_then_ca),
        ("locking/prime-order-kept", prime_order_kept),
        ("locking/prime-contradicts", prime_contradicts),
        ("locking/map-wait-then-signal", map_wait_then_signal),
        ("locking/map-signal-then-wait", map_signal_then_wait),
        ("locking/map-two-threads", map_two_threads),
        ("locking/map-nested-signalling", map_nested_signalling),
        ("locking/map-disjoint-paths", map_disjoint_paths),
    ];
    v.extend(
        more.into_iter()
            .map(|(name, run)| Case::lockdep_only(name, run)),
    );
    v.push(Case::lockdep_only(
        "locking/map-wait-in-signalling",
        map_wait_in_signalling,
    ));
    v.push(Case::lockdep_only("locking/map-try", map_try));
    // Sleeping lock kinds only: the kernel's spinlocks do not sleep (lockdep here has no
    // spinning kind; every blocking acquisition counts as a sleep).
    let atomic: [(&'static str, Run); 7] = [
        ("locking/atomic-blocking-lock-mutex", || {
            atomic_blocking_lock(W)
        }),
        ("locking/atomic-blocking-lock-wsem", || {
            atomic_blocking_lock(W)
        }),
        ("locking/atomic-blocking-lock-rsem", || {
            atomic_blocking_lock(R)
        }),
        ("locking/atomic-trylock", atomic_trylock),
        ("locking/atomic-might-sleep", atomic_might_sleep),
        ("locking/atomic-nested", atomic_nested),
        ("locking/atomic-pseudo-lock", atomic_pseudo_lock),
    ];
    v.extend(
        atomic
            .into_iter()
            .map(|(name, run)| Case::lockdep_only(name, run)),
    );
    v
}
