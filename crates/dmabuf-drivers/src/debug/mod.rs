//! Debugging aids: the ownership tracker ([`ownership`]), and the live-object counts
//! ([`live`](mod@live)).

pub mod live;
pub mod ownership;

pub use live::{live, Drift, Live};
