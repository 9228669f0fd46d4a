//! Live-object counts for leak checks: buffers, fences, open descriptors, memory
//! mappings and resident memory of this process ([`live`]), and the difference between
//! two samples ([`Live::drift`]).
//!
//! Buffers come from the buffer list bufinfo walks. Fences are counted as they are made
//! and freed, per thread (a fence made on one thread and freed on another moves one
//! thread's count up and another's down; only the sum means anything), so that the
//! count costs the fence paths a plain load and store of a thread's own cache line. Descriptors,
//! mappings and resident memory are read from `/proc/self` (0 where it cannot be read).

use std::fmt;
use std::time::{Duration, Instant};

/// What is alive in this process now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// Exported buffers not yet released.
    pub buffers: usize,
    /// Fence objects not yet freed (every kind: plain, arrays, chains, stubs...).
    pub fences: usize,
    /// Open descriptors (`/proc/self/fd`).
    pub open_fds: usize,
    /// Memory mappings (lines of `/proc/self/maps`).
    pub mappings: usize,
    /// Resident memory in bytes (`/proc/self/statm`).
    pub rss_bytes: u64,
}

/// The difference between two [`Live`] samples, later less earlier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drift {
    /// Buffers.
    pub buffers: i64,
    /// Fences.
    pub fences: i64,
    /// Open descriptors.
    pub open_fds: i64,
    /// Memory mappings.
    pub mappings: i64,
    /// Resident bytes.
    pub rss_bytes: i64,
}

impl Drift {
    /// Whether no buffer, fence or descriptor was gained or lost (mappings and resident
    /// memory move with the allocator's own caches and are not judged).
    pub fn objects_zero(&self) -> bool {
        self.buffers == 0 && self.fences == 0 && self.open_fds == 0
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fds {:+}, buffers {:+}, fences {:+}, maps {:+}, rss {:+} KiB",
            self.open_fds,
            self.buffers,
            self.fences,
            self.mappings,
            self.rss_bytes / 1024
        )
    }
}

impl Live {
    /// `self` less `earlier`.
    pub fn drift(&self, earlier: &Live) -> Drift {
        let d = |a: usize, b: usize| a as i64 - b as i64;
        Drift {
            buffers: d(self.buffers, earlier.buffers),
            fences: d(self.fences, earlier.fences),
            open_fds: d(self.open_fds, earlier.open_fds),
            mappings: d(self.mappings, earlier.mappings),
            rss_bytes: self.rss_bytes as i64 - earlier.rss_bytes as i64,
        }
    }

    /// Whether buffers, fences, descriptors and mappings equal `other`'s (resident
    /// memory is not compared).
    pub fn same_objects(&self, other: &Live) -> bool {
        (self.buffers, self.fences, self.open_fds, self.mappings)
            == (other.buffers, other.fences, other.open_fds, other.mappings)
    }
}

/// Sample the counts now. Reads three `/proc/self` files and takes the buffer list's
/// lock briefly; not for hot paths.
pub fn live() -> Live {
    Live {
        buffers: dmabuf_core::buf::live_buffer_count(),
        fences: dmabuf_sync::fence::live_fences(),
        open_fds: open_fds(),
        mappings: std::fs::read("/proc/self/maps")
            .map(|m| m.iter().filter(|&&b| b == b'\n').count())
            .unwrap_or(0),
        rss_bytes: rss_bytes(),
    }
}

/// Sample until two samples `interval` apart agree on buffers, fences, descriptors and
/// mappings (background work — engines, watchers, deferred drops — has quiesced), at
/// most until `timeout`; returns the last sample.
pub fn live_settled(interval: Duration, timeout: Duration) -> Live {
    let end = Instant::now() + timeout;
    let mut last = live();
    loop {
        std::thread::sleep(interval);
        let now = live();
        if now.same_objects(&last) || Instant::now() >= end {
            return now;
        }
        last = now;
    }
}

fn open_fds() -> usize {
    // The listing includes the directory's own descriptor.
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}

fn rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * dmabuf_mem::memfd::page_size() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_counts_follow_descriptors() {
        let l = live();
        assert!(
            l.open_fds >= 3 && l.mappings > 0 && l.rss_bytes > 0,
            "{l:?}"
        );
        let d = l.drift(&l);
        assert!(d.objects_zero());
        assert_eq!(
            d.to_string(),
            "fds +0, buffers +0, fences +0, maps +0, rss +0 KiB"
        );
    }
}
