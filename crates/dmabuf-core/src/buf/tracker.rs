//! The hook through which an ownership tracker watches buffers.
//!
//! The core reports every event that changes who owns a buffer's memory — CPU access
//! brackets, mappings made and unmapped, detaches with live mappings, the release — to
//! the buffer's tracker, if one was set ([`DmaBuf::set_tracker`](super::DmaBuf::set_tracker)).
//! Exporters report their DMA syncs, and engines their jobs, through the same trait
//! ([`DmaBuf::tracker`](super::DmaBuf::tracker)). The core defines the trait and never
//! knows the tracker behind it (`dmabuf-drivers` provides one: `debug::ownership::Tracker`).
//!
//! Every method is called without the buffer's reservation lock held unless its doc
//! says otherwise, and must not block on it; a tracker records and returns.

use super::Direction;

/// Receives a buffer's ownership events. `buf` is the buffer's inode number
/// ([`DmaBuf::ino`](super::DmaBuf::ino)), `map` a mapping's id
/// ([`Attachment::mapping_key`](super::Attachment::mapping_key)).
pub trait AccessTracker: Send + Sync + 'static {
    /// The buffer came into existence (or was first told of this tracker), named `name`.
    fn buffer_created(&self, buf: u64, name: &str);
    /// The buffer is being released.
    fn buffer_freed(&self, buf: u64);
    /// CPU access in `dir` begins (`DMA_BUF_IOCTL_SYNC` start, `begin_cpu_access`).
    fn begin_cpu_access(&self, buf: u64, dir: Direction);
    /// CPU access in `dir` ends.
    fn end_cpu_access(&self, buf: u64, dir: Direction);
    /// The CPU reads (`write == false`) or writes the buffer's memory.
    fn cpu_access(&self, buf: u64, write: bool);
    /// `device` mapped the buffer for `dir` (called with the reservation lock held).
    fn mapped(&self, buf: u64, map: u64, device: &str, dir: Direction);
    /// The mapping `map` is being unmapped (called with the reservation lock held).
    fn unmapped(&self, buf: u64, map: u64);
    /// The exporter synced mapping `map` for `dir` (`sync_for_cpu` / `sync_for_device`).
    fn synced(&self, buf: u64, map: u64, dir: Direction);
    /// A device job starts on mapping `map`.
    fn job_started(&self, buf: u64, map: u64);
    /// A device job on mapping `map` ended.
    fn job_ended(&self, buf: u64, map: u64);
    /// `device`'s attachment was detached while `live` of its mappings were live:
    /// `dropped` when its guard was dropped (the detach then waits for the unmaps),
    /// else an explicit detach (refused with `EBUSY`).
    fn detached_while_mapped(&self, buf: u64, device: &str, live: usize, dropped: bool);
}
