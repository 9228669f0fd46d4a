//! Ownership tracking: one owner at a time per buffer — the CPU, devices, or nobody —
//! checked the way the kernel's DMA-API debugging checks drivers, so that a coherency bug
//! is named where it happens instead of showing up later as stale data.
//!
//! The tracker is told of every event that moves ownership (begin/end CPU access, DMA
//! map/unmap, device jobs starting and ending, syncs) and of every CPU access. It reports:
//!
//! | kind | when |
//! |---|---|
//! | [`Violation::CpuAccessOutsideBracket`] | the CPU reads or writes a buffer outside begin/end CPU access |
//! | [`Violation::CpuWriteInReadBracket`] | the CPU writes inside a bracket begun for reading only |
//! | [`Violation::DeviceJobWhileCpuOwns`] | a device job starts while the CPU owns the buffer |
//! | [`Violation::CpuBeginWhileDeviceBusy`] | begin CPU access while a device job still runs |
//! | [`Violation::UnmapWhileBusy`] | a mapping is unmapped while a job on it still runs |
//! | [`Violation::FreeWhileBusy`] | a buffer is freed while a device job still runs, or still mapped |
//! | [`Violation::SyncDirectionMismatch`] | a sync names a direction its mapping was not made for |
//! | [`Violation::UnbalancedCpuAccess`] | end CPU access without a matching begin |
//! | [`Violation::UnknownMapping`] | a sync, job or unmap names a mapping that is not live |
//! | [`Violation::DetachWhileMapped`] | an attachment is detached (or its guard dropped) while mappings made through it are live |
//!
//! Reports are kept (see [`Tracker::take_reports`]) and logged through `tracing`; the
//! tracked operation itself always goes on — the tracker observes, it never refuses.
//!
//! Wiring: a buffer is tracked once [`DmaBuf::set_tracker`](crate::buf::DmaBuf::set_tracker)
//! names a tracker. From then on the dma-buf core reports begin/end CPU access, every
//! mapping made and unmapped through an attachment (keyed by
//! [`Attachment::mapping_key`](crate::buf::Attachment::mapping_key)) and the release;
//! exporters report their DMA syncs ([`crate::simple`] does); DMA engines
//! ([`crate::device::engine`]) report job start and end per mapping; CPU reads and writes
//! through [`CpuView`](crate::device::CpuView) are reported as CPU accesses.

use crate::buf::{AccessTracker, Direction};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Violation {
    /// CPU access outside begin/end CPU access.
    CpuAccessOutsideBracket,
    /// CPU write inside a bracket begun for reading only.
    CpuWriteInReadBracket,
    /// A device job started while the CPU owns the buffer.
    DeviceJobWhileCpuOwns,
    /// Begin CPU access while a device job still runs.
    CpuBeginWhileDeviceBusy,
    /// Unmap while a job on the mapping still runs.
    UnmapWhileBusy,
    /// Free while a device job still runs or a mapping is live.
    FreeWhileBusy,
    /// A sync in a direction the mapping was not made for.
    SyncDirectionMismatch,
    /// End CPU access without begin.
    UnbalancedCpuAccess,
    /// A mapping id that is not live.
    UnknownMapping,
    /// Detach (or the drop of the attachment's guard) while mappings made through the
    /// attachment are live: the importer must unmap first.
    DetachWhileMapped,
}

/// One report: the violation, the buffer, the device if one is involved, and a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnershipReport {
    /// What went wrong.
    pub violation: Violation,
    /// The buffer's id.
    pub buffer: u64,
    /// The buffer's name (or empty).
    pub buffer_name: String,
    /// The device involved, if any.
    pub device: Option<String>,
    /// A human sentence that names the bug.
    pub message: String,
}

impl fmt::Display for OwnershipReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dma-buf ownership: buffer {} ({}): {:?}: {}",
            self.buffer,
            if self.buffer_name.is_empty() {
                "<none>"
            } else {
                &self.buffer_name
            },
            self.violation,
            self.message
        )
    }
}

/// Who owns a buffer now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Nobody: no CPU bracket open, no device job running.
    None,
    /// The CPU, inside begin/end CPU access in this direction (`FromDevice` = read,
    /// `ToDevice` = write, `Bidirectional` = both).
    Cpu(Direction),
    /// Devices running jobs on it (names).
    Devices(Vec<String>),
}

#[derive(Default)]
struct BufState {
    name: String,
    cpu: Vec<Direction>,
    jobs: HashMap<u64, (String, usize)>,
    maps: HashMap<u64, (String, Direction)>,
}

/// The tracker: shared by every buffer, device and mapping it watches.
///
/// Locks: two internal mutexes taken briefly by every method — the buffers' states,
/// and nested inside it the reports (a leaf). The core calls it with or without a reservation lock held, and from
/// engines' signalling sections, so it never calls back into the core, never blocks
/// on anything else, and never refuses an operation.
#[derive(Default)]
pub struct Tracker {
    bufs: Mutex<HashMap<u64, BufState>>,
    reports: Mutex<Vec<OwnershipReport>>,
}

impl Tracker {
    /// A tracker with nothing tracked.
    pub fn new() -> Self {
        Self::default()
    }

    fn report(&self, b: u64, st: Option<&BufState>, v: Violation, dev: Option<&str>, msg: String) {
        let r = OwnershipReport {
            violation: v,
            buffer: b,
            buffer_name: st.map(|s| s.name.clone()).unwrap_or_default(),
            device: dev.map(str::to_string),
            message: msg,
        };
        tracing::warn!("{r}");
        self.reports.lock().push(r);
    }

    /// A buffer came into existence.
    pub fn buffer_created(&self, buf: u64, name: &str) {
        self.bufs.lock().insert(
            buf,
            BufState {
                name: name.to_string(),
                ..Default::default()
            },
        );
    }

    /// A buffer is being freed: reports if a device job still runs or a mapping is live.
    pub fn buffer_freed(&self, buf: u64) {
        let st = self.bufs.lock().remove(&buf);
        let Some(st) = st else { return };
        let busy: usize = st.jobs.values().map(|j| j.1).sum();
        if busy > 0 {
            let devs: Vec<&str> = st.jobs.values().map(|j| j.0.as_str()).collect();
            self.report(
                buf,
                Some(&st),
                Violation::FreeWhileBusy,
                devs.first().copied(),
                format!(
                    "freed while {busy} device job(s) still run on it ({})",
                    devs.join(", ")
                ),
            );
        } else if let Some((dev, _)) = st.maps.values().next() {
            let dev = dev.clone();
            self.report(
                buf,
                Some(&st),
                Violation::FreeWhileBusy,
                Some(&dev),
                format!(
                    "freed while still mapped for {dev} ({} mapping(s))",
                    st.maps.len()
                ),
            );
        }
    }

    /// Who owns `buf` now (`None` also for an unknown buffer).
    pub fn owner(&self, buf: u64) -> Owner {
        let g = self.bufs.lock();
        let Some(st) = g.get(&buf) else {
            return Owner::None;
        };
        if let Some(&d) = st.cpu.last() {
            return Owner::Cpu(d);
        }
        let mut devs: Vec<String> = st
            .jobs
            .values()
            .filter(|j| j.1 > 0)
            .map(|j| j.0.clone())
            .collect();
        if devs.is_empty() {
            return Owner::None;
        }
        devs.sort();
        devs.dedup();
        Owner::Devices(devs)
    }

    /// Begin CPU access in `dir`: the CPU owns the buffer until the matching end.
    pub fn begin_cpu_access(&self, buf: u64, dir: Direction) {
        let mut g = self.bufs.lock();
        let st = g.entry(buf).or_default();
        if let Some((_, (dev, n))) = st.jobs.iter().find(|j| j.1 .1 > 0) {
            let (dev, n) = (dev.clone(), *n);
            self.report(
                buf,
                Some(st),
                Violation::CpuBeginWhileDeviceBusy,
                Some(&dev),
                format!("begin_cpu_access while {dev} still runs {n} job(s) on it: wait for its fences first"),
            );
        }
        st.cpu.push(dir);
    }

    /// End CPU access in `dir`.
    pub fn end_cpu_access(&self, buf: u64, dir: Direction) {
        let mut g = self.bufs.lock();
        let st = g.entry(buf).or_default();
        match st.cpu.iter().rposition(|&d| d == dir) {
            Some(i) => {
                st.cpu.remove(i);
            }
            None => self.report(
                buf,
                Some(st),
                Violation::UnbalancedCpuAccess,
                None,
                format!("end_cpu_access({dir:?}) without a matching begin_cpu_access"),
            ),
        }
    }

    /// The CPU reads (`write == false`) or writes the buffer's memory.
    pub fn cpu_access(&self, buf: u64, write: bool) {
        let g = self.bufs.lock();
        let st = g.get(&buf);
        let what = if write { "write" } else { "read" };
        match st.and_then(|s| s.cpu.last().copied()) {
            None => self.report(
                buf,
                st,
                Violation::CpuAccessOutsideBracket,
                None,
                format!("CPU {what} outside begin_cpu_access/end_cpu_access: the CPU may see or leave stale data"),
            ),
            Some(Direction::FromDevice) if write => self.report(
                buf,
                st,
                Violation::CpuWriteInReadBracket,
                None,
                "CPU write inside a bracket begun for reading only: the write may never reach the device".to_string(),
            ),
            Some(_) => {}
        }
    }

    /// `device` mapped the buffer for `dir`; `map` is the mapping's id.
    pub fn mapped(&self, buf: u64, map: u64, device: &str, dir: Direction) {
        self.bufs
            .lock()
            .entry(buf)
            .or_default()
            .maps
            .insert(map, (device.to_string(), dir));
    }

    /// The mapping `map` is being unmapped: reports if a job on it still runs.
    pub fn unmapped(&self, buf: u64, map: u64) {
        let mut g = self.bufs.lock();
        let st = g.entry(buf).or_default();
        let Some((dev, _)) = st.maps.remove(&map) else {
            self.report(
                buf,
                Some(st),
                Violation::UnknownMapping,
                None,
                format!("unmap of mapping {map}, which is not live"),
            );
            return;
        };
        if let Some(&(_, n)) = st.jobs.get(&map).filter(|j| j.1 > 0) {
            self.report(
                buf,
                Some(st),
                Violation::UnmapWhileBusy,
                Some(&dev),
                format!("unmapped from {dev} while {n} job(s) on the mapping still run"),
            );
            // The device still works on the buffer until the jobs end: keep counting
            // them (ownership, free while busy).
        } else {
            st.jobs.remove(&map);
        }
    }

    /// A sync of mapping `map` for `dir` (the DMA API's `sync_for_cpu`/`for_device`).
    pub fn synced(&self, buf: u64, map: u64, dir: Direction) {
        let g = self.bufs.lock();
        let st = g.get(&buf);
        match st.and_then(|s| s.maps.get(&map)) {
            None => self.report(
                buf,
                st,
                Violation::UnknownMapping,
                None,
                format!("sync of mapping {map}, which is not live"),
            ),
            Some((dev, mdir)) if !mdir.covers(dir) => {
                let dev = dev.clone();
                let mdir = *mdir;
                self.report(
                    buf,
                    st,
                    Violation::SyncDirectionMismatch,
                    Some(&dev),
                    format!("sync for {dir:?} of a mapping made for {mdir:?} on {dev}"),
                )
            }
            Some(_) => {}
        }
    }

    /// A job of the mapping's device starts on mapping `map`.
    pub fn job_started(&self, buf: u64, map: u64) {
        let mut g = self.bufs.lock();
        let st = g.entry(buf).or_default();
        let Some((dev, _)) = st.maps.get(&map).cloned() else {
            self.report(
                buf,
                Some(st),
                Violation::UnknownMapping,
                None,
                format!("device job on mapping {map}, which is not live"),
            );
            return;
        };
        if let Some(&d) = st.cpu.last() {
            self.report(
                buf,
                Some(st),
                Violation::DeviceJobWhileCpuOwns,
                Some(&dev),
                format!("{dev} starts a job while the CPU owns the buffer (begin_cpu_access({d:?}) without end)"),
            );
        }
        st.jobs.entry(map).or_insert((dev, 0)).1 += 1;
    }

    /// A job on mapping `map` ended.
    pub fn job_ended(&self, buf: u64, map: u64) {
        let mut g = self.bufs.lock();
        if let Some(st) = g.get_mut(&buf) {
            if let Some(j) = st.jobs.get_mut(&map) {
                j.1 = j.1.saturating_sub(1);
                // A mapping unmapped while its jobs ran is forgotten with the last one.
                if j.1 == 0 && !st.maps.contains_key(&map) {
                    st.jobs.remove(&map);
                }
            }
        }
    }

    /// `device`'s attachment of `buf` was detached while `live` mappings made through it
    /// were still live: `dropped` when its guard was dropped (the detach then waits for
    /// the unmaps), else an explicit detach (refused with `EBUSY`). The mappings stay
    /// tracked until they are unmapped.
    pub fn detached_while_mapped(&self, buf: u64, device: &str, live: usize, dropped: bool) {
        let g = self.bufs.lock();
        let st = g.get(&buf);
        let msg = if dropped {
            format!(
                "attachment of {device} dropped with {live} live mapping(s): unmap before \
                 detaching (the detach waits for the last unmap)"
            )
        } else {
            format!(
                "detach of {device}'s attachment with {live} live mapping(s): unmap before \
                 detaching (refused)"
            )
        };
        self.report(buf, st, Violation::DetachWhileMapped, Some(device), msg);
    }

    /// The reports so far, oldest first.
    pub fn reports(&self) -> Vec<OwnershipReport> {
        self.reports.lock().clone()
    }

    /// The reports so far; the record is emptied.
    pub fn take_reports(&self) -> Vec<OwnershipReport> {
        std::mem::take(&mut *self.reports.lock())
    }
}

/// The core reports to the tracker through this trait; each call forwards to the
/// inherent method of the same name.
impl AccessTracker for Tracker {
    fn buffer_created(&self, buf: u64, name: &str) {
        Tracker::buffer_created(self, buf, name)
    }
    fn buffer_freed(&self, buf: u64) {
        Tracker::buffer_freed(self, buf)
    }
    fn begin_cpu_access(&self, buf: u64, dir: Direction) {
        Tracker::begin_cpu_access(self, buf, dir)
    }
    fn end_cpu_access(&self, buf: u64, dir: Direction) {
        Tracker::end_cpu_access(self, buf, dir)
    }
    fn cpu_access(&self, buf: u64, write: bool) {
        Tracker::cpu_access(self, buf, write)
    }
    fn mapped(&self, buf: u64, map: u64, device: &str, dir: Direction) {
        Tracker::mapped(self, buf, map, device, dir)
    }
    fn unmapped(&self, buf: u64, map: u64) {
        Tracker::unmapped(self, buf, map)
    }
    fn synced(&self, buf: u64, map: u64, dir: Direction) {
        Tracker::synced(self, buf, map, dir)
    }
    fn job_started(&self, buf: u64, map: u64) {
        Tracker::job_started(self, buf, map)
    }
    fn job_ended(&self, buf: u64, map: u64) {
        Tracker::job_ended(self, buf, map)
    }
    fn detached_while_mapped(&self, buf: u64, device: &str, live: usize, dropped: bool) {
        Tracker::detached_while_mapped(self, buf, device, live, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::*;

    fn kinds(t: &Tracker) -> Vec<Violation> {
        t.take_reports().into_iter().map(|r| r.violation).collect()
    }

    #[test]
    fn a_correct_sequence_reports_nothing() {
        let t = Tracker::new();
        t.buffer_created(1, "frame");
        t.mapped(1, 10, "gpu", Bidirectional);
        t.job_started(1, 10);
        assert_eq!(t.owner(1), Owner::Devices(vec!["gpu".into()]));
        t.job_ended(1, 10);
        assert_eq!(t.owner(1), Owner::None);
        t.begin_cpu_access(1, Bidirectional);
        assert_eq!(t.owner(1), Owner::Cpu(Bidirectional));
        t.cpu_access(1, false);
        t.cpu_access(1, true);
        t.end_cpu_access(1, Bidirectional);
        t.synced(1, 10, ToDevice);
        t.unmapped(1, 10);
        t.buffer_freed(1);
        assert!(t.reports().is_empty(), "{:?}", t.reports());
    }

    #[test]
    fn cpu_access_outside_bracket_and_write_in_read_bracket() {
        let t = Tracker::new();
        t.buffer_created(2, "b");
        t.cpu_access(2, true);
        t.begin_cpu_access(2, FromDevice);
        t.cpu_access(2, false);
        t.cpu_access(2, true);
        t.end_cpu_access(2, FromDevice);
        t.end_cpu_access(2, FromDevice);
        assert_eq!(
            kinds(&t),
            [
                Violation::CpuAccessOutsideBracket,
                Violation::CpuWriteInReadBracket,
                Violation::UnbalancedCpuAccess
            ]
        );
    }

    #[test]
    fn device_and_cpu_conflicts_are_named() {
        let t = Tracker::new();
        t.buffer_created(3, "frame3");
        t.mapped(3, 30, "isp", ToDevice);
        t.begin_cpu_access(3, ToDevice);
        t.job_started(3, 30);
        let r = t.take_reports();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].violation, Violation::DeviceJobWhileCpuOwns);
        assert_eq!(r[0].device.as_deref(), Some("isp"));
        assert_eq!(r[0].buffer_name, "frame3");
        assert!(r[0].to_string().contains("frame3"));
        t.end_cpu_access(3, ToDevice);
        t.begin_cpu_access(3, FromDevice);
        assert_eq!(kinds(&t), [Violation::CpuBeginWhileDeviceBusy]);
        t.end_cpu_access(3, FromDevice);
        t.unmapped(3, 30);
        assert_eq!(kinds(&t), [Violation::UnmapWhileBusy]);
    }

    #[test]
    fn free_while_busy_or_mapped() {
        let t = Tracker::new();
        t.buffer_created(4, "");
        t.mapped(4, 40, "dev", Bidirectional);
        t.job_started(4, 40);
        t.buffer_freed(4);
        assert_eq!(kinds(&t), [Violation::FreeWhileBusy]);
        t.buffer_created(5, "");
        t.mapped(5, 50, "dev", Bidirectional);
        t.buffer_freed(5);
        assert_eq!(kinds(&t), [Violation::FreeWhileBusy]);
    }

    #[test]
    fn detach_while_mapped_names_the_device() {
        let t = Tracker::new();
        t.buffer_created(7, "scanout");
        t.mapped(7, 70, "display", ToDevice);
        t.detached_while_mapped(7, "display", 1, true);
        let r = t.take_reports();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].violation, Violation::DetachWhileMapped);
        assert_eq!(r[0].device.as_deref(), Some("display"));
        assert!(r[0].message.contains("dropped with 1 live mapping"));
        // The mapping is still known: its unmap is not an unknown mapping.
        t.unmapped(7, 70);
        assert!(t.reports().is_empty());
    }

    #[test]
    fn sync_direction_and_unknown_mappings() {
        let t = Tracker::new();
        t.buffer_created(6, "");
        t.mapped(6, 60, "dev", ToDevice);
        t.synced(6, 60, ToDevice);
        t.synced(6, 60, FromDevice);
        t.synced(6, 61, ToDevice);
        t.job_started(6, 61);
        t.unmapped(6, 61);
        assert_eq!(
            kinds(&t),
            [
                Violation::SyncDirectionMismatch,
                Violation::UnknownMapping,
                Violation::UnknownMapping,
                Violation::UnknownMapping
            ]
        );
    }
}
