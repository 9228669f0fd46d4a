//! The dma-buf core: export, attachments, map/unmap, pin, move_notify, vmap, mmap, CPU
//! access and implicit sync through sync files, under the kernel's dynamic locking
//! convention ([`buf`]).
//!
//! It sits above the sync core (`dmabuf-sync`) and memory/devices (`dmabuf-mem`), and
//! never imports an exporter, a heap or a simulated engine: those (`dmabuf-drivers`)
//! plug in through [`buf::Exporter`], and the ownership tracker through
//! [`buf::AccessTracker`]. See the repository's `ARCHITECTURE.md`.

#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::missing_errors_doc)]

use dmabuf_sync::{error, fault, fence, interrupt, resv, sync_file};

pub mod buf;

pub use dmabuf_sync::{Error, Result};
