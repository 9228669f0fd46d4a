//! One process, both roles: an exporter (the system heap) hands a buffer to an importer
//! (a simulated, non-coherent device), which attaches and maps it under the locking
//! convention; the CPU brackets its accesses; the buffer's descriptor gives back the same
//! buffer; and a reader's sync file waits for a device write.
//!
//! `cargo run -p dmabuf --example importer_exporter` — exits non-zero on any failure.

use dmabuf::buf::{self, sync_flags, Direction, DmaBuf};
use dmabuf::device::Device;
use dmabuf::fence::Context;
use dmabuf::heap::{heaps, AllocData, O_CLOEXEC, O_RDWR};
use dmabuf::resv::Usage;
use dmabuf::sync_file::poll_readable;
use rustix::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn check(ok: bool, what: &str) -> R {
    if ok {
        Ok(())
    } else {
        Err(format!("check failed: {what}").into())
    }
}

fn run() -> R {
    const LEN: usize = 64 * 1024;

    // The exporter: a system-heap buffer.
    let b = heaps().alloc("system", &AllocData::new(LEN as u64))?;
    b.set_name("example")?;
    println!("exported {} bytes by {:?}", b.size(), b.exp_name());

    // The CPU writes a pattern inside a begin/end CPU access bracket.
    let pattern: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    let acc = b.cpu_access(Direction::ToDevice)?;
    b.vmap_unlocked()?.write_at(0, &pattern)?;
    acc.end()?;

    // The importer: a device with a 32-bit DMA mask, non-coherent (bounce buffers).
    let dev = Device::new("dev", u32::MAX as u64, false, false)?;
    let att = b.attach(&dev)?;

    // Locked calls go through the locked view: lock the reservation object, make the
    // view once, map and unmap through it. The device's job writes the buffer: its
    // fence goes into the reservation object (implicit sync) while locked.
    let write = dmabuf_sync::testing::named("dev", "jobs", Context::new(), 1);
    {
        let mut g = b.resv().lock_no_ctx()?;
        g.reserve_fences(1)?;
        g.add_fence(&write, Usage::Write)?;
        let v = b.locked(&mut g)?;
        let m = v.map(&att, Direction::Bidirectional)?;
        let bytes = m.table().total_len();
        println!(
            "mapped for {}: {} segment(s), {} bytes",
            dev.name(),
            m.table().len(),
            bytes
        );
        check(bytes >= LEN, "the device sees the whole buffer")?;
        v.unmap(&att, m).map_err(|(e, _)| e)?;
    }

    // A reader asks for a sync file of what it must wait for: the pending write.
    let sf = b.export_sync_file(sync_flags::READ)?;
    check(
        !poll_readable(sf.as_fd(), Some(Duration::ZERO))?,
        "the reader's sync file waits for the device's write",
    )?;
    write.signal()?;
    check(
        poll_readable(sf.as_fd(), Some(Duration::from_secs(5)))?,
        "the sync file signals with the write",
    )?;
    println!("sync file signalled: status {}", sf.fence().get_status());

    // Unlocked map (the call takes the lock itself), then detach.
    let m = att.map_unlocked(Direction::FromDevice)?;
    check(!m.table().is_empty(), "an unlocked map")?;
    att.unmap_unlocked(m).map_err(|(e, _)| e)?;
    att.detach().map_err(|(e, _)| e)?;

    // The CPU reads the bytes back inside its bracket.
    let acc = b.cpu_access(Direction::FromDevice)?;
    let mut back = vec![0u8; LEN];
    b.vmap_unlocked()?.read_at(0, &mut back)?;
    acc.end()?;
    check(back == pattern, "the CPU reads what it wrote")?;

    // The descriptor is the buffer: get gives back the same object.
    let fd = b.fd(O_RDWR | O_CLOEXEC)?;
    let g = buf::get(fd.as_fd())?;
    check(
        DmaBuf::ptr_eq(&b, &g),
        "get of our own descriptor is the same buffer",
    )?;
    check(
        std::sync::Arc::ptr_eq(b.resv(), g.resv()),
        "with the same reservation object",
    )?;
    print!("{}", b.fdinfo());
    println!("ok");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("importer_exporter: {e}");
            ExitCode::FAILURE
        }
    }
}
