//! The debugfs `dma_buf/bufinfo` text.

use super::dmabuf::live_buffers;
use std::fmt::Write as _;

/// Every live buffer in the kernel's `bufinfo` format: a header, per buffer its size,
/// flags, mode, file count, exporter name, inode and name, its fences (KERNEL, WRITE and
/// READ usages) and attached devices, then the totals. Each buffer's reservation is
/// locked while it is described, so this must not be called holding one: a buffer whose
/// lock this thread holds is listed as one line saying so, without its details.
pub fn bufinfo() -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\nDma-buf Objects:");
    let _ = writeln!(
        s,
        "{:<8}\t{:<8}\t{:<8}\t{:<8}\texp_name\t{:<8}\tname",
        "size", "flags", "mode", "count", "ino"
    );
    let (mut n, mut bytes) = (0usize, 0usize);
    for b in live_buffers() {
        let Ok(g) = b.resv().lock_no_ctx() else {
            let _ = writeln!(
                s,
                "{:08}\t<details skipped: this thread holds the reservation lock>",
                b.size()
            );
            n += 1;
            bytes += b.size();
            continue;
        };
        let atts = b.attachments_locked(&g);
        // The file count: references less the walk's own and the attachments' (in the
        // kernel attachments hold no file reference).
        let count = b.ref_count().saturating_sub(1 + atts.len());
        let f = b.flags();
        let mode = (if f.read { 0o4 } else { 0 }) | (if f.write { 0o2 } else { 0 });
        let _ = writeln!(
            s,
            "{:08}\t{:08x}\t{:08x}\t{:08}\t{}\t{:08}\t{}",
            b.size(),
            f.bits(),
            mode,
            count,
            b.exp_name(),
            b.ino(),
            b.name().unwrap_or_else(|| "<none>".to_string())
        );
        s.push_str(&g.describe());
        let _ = writeln!(s, "\tAttached Devices:");
        for a in &atts {
            let _ = writeln!(s, "\t{}", a.device().name());
        }
        let _ = writeln!(s, "Total {} devices attached\n", atts.len());
        n += 1;
        bytes += b.size();
    }
    let _ = writeln!(s, "\nTotal {n} objects, {bytes} bytes");
    s
}
