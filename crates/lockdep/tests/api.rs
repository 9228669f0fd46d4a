//! API behaviour that does not change global settings (safe to run in parallel).

use lockdep::sync::{Mutex, RwLock};
use lockdep::{acquire, capture, release, Acquire, Capture, LockClass, Mode, ReportKind};

fn skip() -> bool {
    !lockdep::enabled()
}

#[test]
fn second_identical_sequence_hits_the_chain_cache() {
    if skip() {
        return;
    }
    let (a, b, c) = (
        LockClass::leak("A"),
        LockClass::leak("B"),
        LockClass::leak("C"),
    );
    let run = || {
        acquire(a, 1, Acquire::write());
        acquire(b, 2, Acquire::write());
        acquire(c, 3, Acquire::read());
        release(c, 3);
        release(b, 2);
        release(a, 1);
    };
    let before = lockdep::stats().thread_validations;
    run();
    let first = lockdep::stats().thread_validations - before;
    assert_eq!(first, 3, "one validation per new chain (A; A,B; A,B,C)");
    for _ in 0..10 {
        run();
    }
    let again = lockdep::stats().thread_validations - before - first;
    assert_eq!(again, 0, "cached chains are not validated again");
    // A different mode is a different chain.
    acquire(a, 1, Acquire::write());
    acquire(b, 2, Acquire::write());
    acquire(c, 3, Acquire::write());
    release(c, 3);
    release(b, 2);
    release(a, 1);
    assert_eq!(lockdep::stats().thread_validations - before - first, 1);
}

#[test]
fn another_thread_uses_the_global_chain_cache() {
    if skip() {
        return;
    }
    let (a, b) = (LockClass::leak("A"), LockClass::leak("B"));
    let run = move || {
        acquire(a, 1, Acquire::write());
        acquire(b, 2, Acquire::write());
        release(b, 2);
        release(a, 1);
        lockdep::stats().thread_validations
    };
    assert_eq!(std::thread::spawn(run).join().unwrap(), 2);
    assert_eq!(std::thread::spawn(run).join().unwrap(), 0);
}

#[test]
fn stats_count_classes_edges_chains() {
    if skip() {
        return;
    }
    let before = lockdep::stats();
    let (a, b) = (LockClass::leak("A"), LockClass::leak("B"));
    let ((), r) = capture(|| {
        acquire(a, 1, Acquire::write());
        acquire(b, 2, Acquire::write());
        release(b, 2);
        release(a, 1);
    });
    assert!(r.is_empty());
    let after = lockdep::stats();
    assert!(after.classes >= before.classes + 2);
    assert!(after.edges > before.edges);
    assert!(after.chains >= before.chains + 2);
    assert!(after.validations >= before.validations + 2);
}

#[test]
fn captures_are_per_thread() {
    if skip() {
        return;
    }
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let x = LockClass::leak(format!("X{i}"));
                let cap = Capture::new();
                let _g = cap.install();
                barrier.wait();
                for n in 0..=i {
                    acquire(x, 1, Acquire::write());
                    acquire(x, 2, Acquire::write());
                    release(x, 2);
                    release(x, 1);
                    let _ = n;
                }
                barrier.wait();
                cap.take()
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let reports = h.join().unwrap();
        assert_eq!(reports.len(), i + 1, "thread {i} sees only its own reports");
        for r in &reports {
            assert_eq!(r.kind, ReportKind::RecursiveLocking);
            assert_eq!(r.classes, vec![format!("X{i}")]);
        }
    }
}

#[test]
fn innermost_capture_wins_and_uninstalls() {
    if skip() {
        return;
    }
    let x = LockClass::leak("X");
    let outer = Capture::new();
    let inner = Capture::new();
    let _o = outer.install();
    {
        let _i = inner.install();
        release(x, 1);
    }
    release(x, 2);
    assert_eq!(inner.len(), 1);
    assert_eq!(outer.len(), 1);
    assert!(!inner.is_empty());
    assert_eq!(outer.take()[0].kind, ReportKind::BadUnlock);
    assert!(outer.is_empty());
}

#[test]
fn default_policy_panics_before_blocking() {
    if skip() || lockdep::on_report() != lockdep::OnReport::Panic {
        return;
    }
    static M: LockClass = LockClass::new("panicking-mutex");
    let res = std::thread::spawn(|| {
        let m = Mutex::new(&M, 0);
        let _g = m.lock();
        let _g2 = m.lock(); // AA: panics instead of deadlocking
    })
    .join();
    let err = res.expect_err("AA must panic under the default policy");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("RecursiveLocking"), "{msg}");
}

#[test]
fn splat_names_sites_of_every_chain_step() {
    if skip() {
        return;
    }
    let (a, b, c) = (
        LockClass::leak("A"),
        LockClass::leak("B"),
        LockClass::leak("C"),
    );
    let ((), r) = capture(|| {
        acquire(a, 1, Acquire::write()); // line L1
        acquire(b, 2, Acquire::write());
        release(b, 2);
        release(a, 1);
        acquire(b, 2, Acquire::write());
        acquire(c, 3, Acquire::write());
        release(c, 3);
        release(b, 2);
        acquire(c, 3, Acquire::write());
        acquire(a, 1, Acquire::write());
        release(a, 1);
        release(c, 3);
    });
    assert_eq!(r.len(), 1);
    let t = &r[0].text;
    assert!(t.contains("WARNING: possible circular locking dependency detected"));
    assert!(t.contains("is trying to acquire lock:"));
    assert!(t.contains("but task is already holding lock:"));
    assert!(t.contains("the existing dependency chain (in reverse order) is:"));
    assert!(t.contains("-> #2 (C)"), "{t}");
    assert!(t.contains("-> #1 (B)"), "{t}");
    assert!(t.contains("-> #0 (A)"), "{t}");
    assert!(t.contains("1 lock held by"), "{t}");
    // Every acquisition site of the cycle appears (file:line:col of this file).
    let sites = t.matches(file!()).count();
    assert!(sites >= 7, "{sites} sites in:\n{t}");
    assert_eq!(r[0].classes, vec!["A", "C", "B"]);
}

#[test]
fn sync_mutex_tracks_and_reports() {
    if skip() {
        return;
    }
    let (ca, cb) = (LockClass::leak("MA"), LockClass::leak("MB"));
    let a = Mutex::new(ca, 1);
    let b = Mutex::new(cb, 2);
    let ((), r) = capture(|| {
        {
            let ga = a.lock();
            assert!(lockdep::is_instance_held(ca, a.instance()));
            let gb = b.lock();
            assert_eq!(*ga + *gb, 3);
            assert_eq!(lockdep::held_count(), 2);
        }
        assert!(!lockdep::is_held(ca));
        let gb = b.lock();
        let ga = a.try_lock().expect("free"); // trylock: not a deadlock
        drop(ga);
        drop(gb);
        let _gb = b.lock();
        let _ga = a.lock(); // B → A against A → B
    });
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].kind, ReportKind::CircularDependency);
    assert_eq!(r[0].classes, vec!["MA", "MB"]);
}

#[test]
fn sync_mutex_nesting_annotations() {
    if skip() {
        return;
    }
    let (cx, cctx) = (LockClass::leak("X"), LockClass::leak("ctx"));
    let x1 = Mutex::new(cx, ());
    let x2 = Mutex::new(cx, ());
    let ctx = Mutex::new(cctx, ());
    let ((), r) = capture(|| {
        {
            let _a = x1.lock();
            let _b = x2.lock_nested(1);
        }
        {
            let g = ctx.lock();
            let _a = x1.lock_nest(ctx.instance());
            let _b = x2.lock_nest(ctx.instance());
            drop(g); // out-of-order release is fine
        }
        let mut m = Mutex::new(cx, 5);
        *m.get_mut() += 1;
        assert_eq!(m.into_inner(), 6);
    });
    assert!(r.is_empty(), "{r:?}");
}

#[test]
fn sync_rwlock_modes() {
    if skip() {
        return;
    }
    let c = LockClass::leak("RW");
    let l = RwLock::new(c, 7);
    let ((), r) = capture(|| {
        {
            let a = l.read_recursive();
            let b = l.read_recursive(); // recursive read: fine
            assert!(lockdep::is_held_mode(c, Mode::RecursiveRead));
            assert_eq!(*a + *b, 14);
        }
        {
            let mut w = l.write();
            *w += 1;
            assert!(lockdep::is_held_mode(c, Mode::Write));
        }
        {
            let _r = l.try_read().unwrap();
            assert!(l.try_write().is_none());
        }
    });
    assert!(r.is_empty(), "{r:?}");
    let ((), r) = capture(|| {
        let _a = l.read();
        // A second non-recursive read of a held rwsem is reported (a queued writer
        // would block it); this never blocks in parking_lot without writers.
        let _b = l.read();
    });
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].kind, ReportKind::RecursiveLocking);
    assert_eq!(*l.read(), 8);
}

#[test]
fn held_locks_text_lists_the_stack() {
    if skip() {
        return;
    }
    let (a, b) = (LockClass::leak("HA"), LockClass::leak("HB"));
    let ((), r) = capture(|| {
        acquire(a, 1, Acquire::write());
        acquire(b, 2, Acquire::recursive_read().subclass(2));
        let t = lockdep::held_locks_text();
        assert!(t.contains("2 locks held by"), "{t}");
        assert!(t.contains(" #0: (HA), at: "), "{t}");
        assert!(t.contains(" #1: (HB/2){recursive read}, at: "), "{t}");
        release(a, 1);
        release(b, 2);
        assert!(lockdep::held_locks_text().contains("no locks held by"));
    });
    assert!(r.is_empty());
}

/// Kinds of a list of reports.
fn kinds(r: &[lockdep::Report]) -> Vec<ReportKind> {
    r.iter().map(|r| r.kind).collect()
}

/// Holding A (write), B (recursive read), C (write), releasing B leaves A and C adjacent:
/// as the kernel re-acquires the locks above a released one, A → C is validated and
/// recorded then. (Taking C under B only recorded B → C, and B → C is SN, which a
/// path through A → B (ER) cannot continue: without the re-validation C → A would close
/// no strong cycle.) So a later C then A is reported.
#[test]
fn middle_release_revalidates_the_locks_above() {
    if skip() {
        return;
    }
    let [a, b, c] = ["rA", "rB", "rC"].map(LockClass::leak);
    let ((), r) = capture(|| {
        acquire(a, 1, Acquire::write());
        acquire(b, 2, Acquire::recursive_read()); // A -> B: ER
        acquire(c, 3, Acquire::write()); // B -> C: SN
        release(b, 2); // A, C: A -> C (EN)
        assert_eq!(lockdep::held_count(), 2);
        release(c, 3);
        release(a, 1);
    });
    assert!(r.is_empty(), "{:?}", kinds(&r));
    let ((), r) = capture(|| {
        acquire(c, 3, Acquire::write());
        acquire(a, 1, Acquire::write());
        release(a, 1);
        release(c, 3);
    });
    assert_eq!(kinds(&r), [ReportKind::CircularDependency]);
    assert_eq!(r[0].classes, ["rA", "rC"], "{}", r[0].text);
}

/// A release below the top keeps the chain cache exact: the entries above get the keys of
/// their new chains, and a chain seen before is not validated again.
#[test]
fn middle_release_uses_the_chain_cache() {
    if skip() {
        return;
    }
    let [a, b, c] = ["mA", "mB", "mC"].map(LockClass::leak);
    let run = || {
        acquire(a, 1, Acquire::write());
        acquire(b, 2, Acquire::write());
        acquire(c, 3, Acquire::write());
        release(b, 2);
        release(a, 1);
        release(c, 3);
    };
    let ((), r) = capture(|| {
        let before = lockdep::stats().thread_validations;
        run();
        // A; A,B; A,B,C; then A,C after B goes; then C after A goes.
        assert_eq!(lockdep::stats().thread_validations - before, 5);
        run();
        assert_eq!(
            lockdep::stats().thread_validations - before,
            5,
            "all cached"
        );
    });
    assert!(r.is_empty(), "{:?}", kinds(&r));
}

/// Locks of one class taken one after another under one nest lock share one held entry
/// (the kernel's `references`): one validation for the whole run, and any release order
/// costs no validation. Each lock stays visible: queries, the held-locks text, the
/// count, and a release of a lock that is not held.
#[test]
fn nest_locked_run_is_one_entry_that_still_knows_each_lock() {
    if skip() {
        return;
    }
    let [ctx, obj, x] = ["nCtx", "nObj", "nX"].map(LockClass::leak);
    let nest = Acquire::write().nest(ctx.map_instance());
    let take = |n: usize| {
        ctx.map_acquire();
        for i in 1..=n {
            acquire(obj, i, nest);
        }
    };
    let ((), r) = capture(|| {
        let before = lockdep::stats().thread_validations;
        take(64);
        assert_eq!(
            lockdep::stats().thread_validations - before,
            2,
            "ctx, then ctx+obj; the other 63 join the entry"
        );
        assert_eq!(lockdep::held_count(), 65);
        assert!((1..=64).all(|i| lockdep::is_instance_held(obj, i)));
        assert!(!lockdep::is_instance_held(obj, 65));
        let text = lockdep::held_locks_text();
        assert!(text.contains("65 locks held by"), "{text}");
        assert!(text.contains(" #64: (nObj){nest lock "), "{text}");
        // In acquisition order, in reverse, and scrambled: no validation, no report.
        for i in 1..=64 {
            release(obj, i);
        }
        for i in 1..=64 {
            acquire(obj, i, nest);
        }
        for i in (1..=64).rev() {
            release(obj, i);
        }
        for i in 1..=64 {
            acquire(obj, i, nest);
        }
        for i in (1..=64).map(|i| (i * 37) % 64 + 1) {
            assert!(lockdep::is_instance_held(obj, i));
            release(obj, i);
            assert!(!lockdep::is_instance_held(obj, i));
        }
        assert_eq!(lockdep::held_count(), 1, "the context");
        ctx.map_release();
        assert_eq!(lockdep::stats().thread_validations - before, 2);
        assert_eq!(lockdep::held_count(), 0);

        // A lock of another class in between starts a new entry; releasing it joins the
        // runs below and above it again (as the kernel's re-acquisition does).
        take(2);
        acquire(x, 1, Acquire::write());
        acquire(obj, 3, nest);
        acquire(obj, 4, nest);
        release(x, 1);
        assert_eq!(lockdep::held_count(), 5);
        for i in [4, 1, 3, 2] {
            release(obj, i);
        }
        ctx.map_release();
    });
    assert!(r.is_empty(), "{:?}", kinds(&r));

    // Per-lock bad unlocks are still found inside a run.
    let ((), r) = capture(|| {
        take(3);
        release(obj, 2);
        release(obj, 2); // not held any more
        release(obj, 9); // never taken
        release(obj, 1);
        release(obj, 3);
        ctx.map_release();
    });
    assert_eq!(kinds(&r), [ReportKind::BadUnlock, ReportKind::BadUnlock]);
}
