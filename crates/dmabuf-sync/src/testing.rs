//! Helpers for tests of code built on these crates: mock fence ops and fences made
//! with them. Compiled for this crate's own tests and, for everyone else, with the
//! `testing` feature (`dmabuf = { features = ["testing"] }`); never part of a normal
//! build.
//!
//! A mock fence signals only when the test signals it ([`Fence::signal`]) and has no
//! `enable_signaling`, `signaled` peek or `wait` of its own: the core's defaults, as for
//! the kernel self-tests' mock fence.

use crate::fence::{Context, Fence, FenceOps};

/// The mock fence ops of the kernel's fence self-tests: driver and timeline `"mock"`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mock;

impl FenceOps for Mock {
    fn driver_name(&self) -> &str {
        "mock"
    }
    fn timeline_name(&self) -> &str {
        "mock"
    }
}

/// Mock fence ops with the driver and timeline names a test wants to see in reports,
/// `bufinfo` or sync file info.
#[derive(Clone, Copy, Debug)]
pub struct Named {
    /// What [`FenceOps::driver_name`] returns.
    pub driver: &'static str,
    /// What [`FenceOps::timeline_name`] returns.
    pub timeline: &'static str,
}

impl FenceOps for Named {
    fn driver_name(&self) -> &str {
        self.driver
    }
    fn timeline_name(&self) -> &str {
        self.timeline
    }
}

/// A fresh unsignalled mock fence: seqno 0 on a context of its own.
pub fn mock() -> Fence {
    Fence::new(Mock, Context::new(), 0)
}

/// An unsignalled mock fence at `seqno` on `ctx`.
pub fn mock_at(ctx: Context, seqno: u64) -> Fence {
    Fence::new(Mock, ctx, seqno)
}

/// An unsignalled fence at `seqno` on `ctx` whose ops report `driver` and `timeline`.
pub fn named(driver: &'static str, timeline: &'static str, ctx: Context, seqno: u64) -> Fence {
    Fence::new(Named { driver, timeline }, ctx, seqno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_fences_are_pending_until_signalled_and_name_themselves() {
        let f = mock();
        assert!(!f.is_signaled());
        assert_eq!((f.driver_name(), f.timeline_name()), ("mock", "mock"));
        let ctx = Context::new();
        let g = named("drv", "tl", ctx, 7);
        assert_eq!(
            (g.driver_name(), g.timeline_name(), g.seqno()),
            ("drv", "tl", 7)
        );
        assert_eq!(g.context(), ctx);
        assert!(f.signal().is_ok() && f.is_signaled());
        assert!(mock_at(ctx, 3).seqno() == 3);
    }
}
