//! Debugging aids: the ownership tracker, and the live-object counts ([`live`]).

pub mod live;
pub mod ownership;

pub use live::{live, Drift, Live};
