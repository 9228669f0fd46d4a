//! Debugging aids: the ownership tracker ([`ownership`]), the live-object counts
//! ([`live`](mod@live)), and the per-process debug socket ([`server`]: live
//! bufinfo, fences and lockdep state for `dmabuf bufinfo --pid N`).

pub mod live;
pub mod ownership;
pub mod server;

pub use live::{live, Drift, Live};
