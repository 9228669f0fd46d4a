//! The run-time switches: whether checking is on (the `LOCKDEP` environment variable,
//! [`set_enabled`]), the report policy, and the generation that `set_enabled(false)` bumps
//! so that every thread forgets its held stack (see [`super::held`]).

use super::held::with_state;
use crate::OnReport;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Once;

const UNINIT: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;

/// `UNINIT` until the environment was read, then `ON` or `OFF`.
static ENABLED: AtomicU8 = AtomicU8::new(UNINIT);
/// 0 = Panic, 1 = PrintOnce, 2 = Collect.
pub(super) static POLICY: AtomicU8 = AtomicU8::new(0);
/// Bumped by `set_enabled(false)`; threads clear their stacks when it changes.
pub(super) static GENERATION: AtomicU64 = AtomicU64::new(0);
static ENV_ONCE: Once = Once::new();

#[inline]
pub(crate) fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => init_env(),
    }
}

/// Read `LOCKDEP` once: `off`/`0` turn checking off; `panic`/`print`/`collect` choose
/// the default policy.
#[cold]
fn init_env() -> bool {
    ENV_ONCE.call_once(|| {
        let var = std::env::var("LOCKDEP").unwrap_or_default();
        let var = var.trim().to_ascii_lowercase();
        let on = !matches!(var.as_str(), "off" | "0");
        match var.as_str() {
            "panic" => POLICY.store(0, Ordering::Relaxed),
            "print" | "printonce" | "print-once" => POLICY.store(1, Ordering::Relaxed),
            "collect" => POLICY.store(2, Ordering::Relaxed),
            _ => {}
        }
        let _ = ENABLED.compare_exchange(
            UNINIT,
            if on { ON } else { OFF },
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    });
    ENABLED.load(Ordering::Relaxed) == ON
}

pub(crate) fn set_enabled(on: bool) {
    init_env();
    if on {
        ENABLED.store(ON, Ordering::Relaxed);
    } else {
        GENERATION.fetch_add(1, Ordering::Relaxed);
        ENABLED.store(OFF, Ordering::Relaxed);
        // Clear this thread's stack now; others do it on their next lockdep call. This
        // thread lives through the off period even if it never used lockdep before.
        with_state(|st| {
            st.sync_generation();
            st.lenient = true;
        });
    }
}

pub(crate) fn set_on_report(mode: OnReport) {
    init_env();
    let v = match mode {
        OnReport::Panic => 0,
        OnReport::PrintOnce => 1,
        OnReport::Collect => 2,
    };
    POLICY.store(v, Ordering::Relaxed);
}

pub(crate) fn on_report() -> OnReport {
    init_env();
    match POLICY.load(Ordering::Relaxed) {
        1 => OnReport::PrintOnce,
        2 => OnReport::Collect,
        _ => OnReport::Panic,
    }
}
