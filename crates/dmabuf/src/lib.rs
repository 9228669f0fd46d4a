//! dmabuf-rs: the Linux DMA-BUF buffer-sharing framework as a userspace library.
//!
//! Layers, lowest first: [`ww`] (wound/wait mutexes), fences, reservation objects,
//! buffers, heaps and devices. Lock-order validation comes from the `lockdep` crate.
//! See `DESIGN.md` for the architecture and the kernel contracts each part keeps.

pub mod bench;
pub mod buf;
pub mod debug;
pub mod demo;
pub mod device;
pub mod error;
pub mod fault;
pub mod fence;
pub mod heap;
pub mod interrupt;
pub mod resv;
pub mod selftest;
pub mod sync_file;
pub mod ww;

pub use error::{Error, Result};
pub use interrupt::Interrupt;
