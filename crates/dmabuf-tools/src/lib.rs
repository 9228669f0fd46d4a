//! The tools behind the `dmabuf` command: the self-test scenarios ([`selftest`]: ports
//! of the kernel's own self-tests, one runner), the bench suites
//! ([`bench`](mod@bench): our code beside the baseline a user would pick, in the same
//! run) and the demo pipeline ([`demo`]).
//!
//! This crate is the top of the house: it uses the `dmabuf` facade (with its `testing`
//! feature) and nothing below depends on it, so the library's normal build carries no
//! test, bench or JSON code. See the repository's `ARCHITECTURE.md`.
//!
//! The public surface is what the `dmabuf` command and the crate's own tests and
//! criterion benches use; everything else is `pub(crate)`.

#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

use dmabuf::{
    buf, debug, device, error, fault, fence, heap, interrupt, mem, resv, sync_file, testing, trace,
    ww,
};
use dmabuf::{Interrupt, Result};

pub mod bench;
pub mod demo;
pub mod selftest;
