//! The sync core of dmabuf-rs: wound/wait mutexes ([`ww`]), fences and their family
//! ([`fence`]), sync files ([`sync_file`]) and reservation objects ([`resv`]), with the
//! crate family's error type ([`Error`]), interruption ([`Interrupt`]) and fault
//! injection ([`fault`]).
//!
//! This crate sits directly above `lockdep` and below everything else: memory and
//! devices (`dmabuf-mem`), the dma-buf core (`dmabuf-core`), the exporters and simulated
//! hardware (`dmabuf-drivers`). It never imports any of them. See the repository's
//! `ARCHITECTURE.md`.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(clippy::missing_errors_doc)]

pub mod error;
pub mod fault;
pub mod fence;
pub mod interrupt;
pub mod resv;
pub(crate) mod shim;
pub mod sync_file;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod trace;
pub mod ww;

pub use error::{Error, Result};
pub use interrupt::Interrupt;
