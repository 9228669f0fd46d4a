//! Two processes share a buffer: the producer (this program) allocates a system-heap
//! buffer, sends it to the consumer with a sync file of a still-pending fence, writes a
//! pattern inside a CPU access bracket and signals the fence; the consumer (this program
//! run again with `DMABUF_EXAMPLE_ROLE=consumer`, its end of the socket as standard
//! input) receives the buffer, waits for the fence, reads the bytes and checks them.
//!
//! `cargo run -p dmabuf --example producer_consumer` — exits non-zero when the consumer
//! saw anything wrong (or failed, or could not be started).

use dmabuf::buf::{self, Direction};
use dmabuf::fence::Context;
use dmabuf::heap::{heaps, AllocData};
use dmabuf::sync_file::SyncFile;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

const ROLE: &str = "DMABUF_EXAMPLE_ROLE";
const LEN: usize = 1 << 20;

/// The frame's bytes: a pattern the consumer can check.
fn pattern() -> Vec<u8> {
    (0..LEN).map(|i| (i % 253) as u8 ^ 0x5a).collect()
}

fn producer() -> R {
    // A socket pair: ours, and the consumer's as its standard input.
    let (mine, theirs): (OwnedFd, OwnedFd) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let mut child = Command::new(std::env::current_exe()?)
        .env(ROLE, "consumer")
        .stdin(Stdio::from(theirs))
        .spawn()?;

    let b = heaps().alloc("system", &AllocData::new(LEN as u64))?;
    b.set_name("frame")?;
    let ready = dmabuf_sync::testing::named("producer", "frames", Context::new(), 1);
    let sf = SyncFile::new(ready.clone())?;

    // Send first, then write: the fence tells the consumer when the bytes are there.
    let acc = b.cpu_access(Direction::ToDevice)?;
    buf::send(mine.as_fd(), &b, &[&sf])?;
    b.vmap_unlocked()?.write_at(0, &pattern())?;
    acc.end()?;
    ready.signal()?;
    println!("producer: sent {} bytes and signalled the fence", b.size());

    let status = child.wait()?;
    if !status.success() {
        return Err(format!("the consumer failed: {status}").into());
    }
    println!("producer: the consumer checked the frame");
    Ok(())
}

fn consumer(sock: BorrowedFd<'_>) -> R {
    let r = buf::recv(sock)?;
    let b = r.buf;
    println!(
        "consumer: got buffer {:?} of {} bytes from {:?} with {} fence(s)",
        b.name().unwrap_or_default(),
        b.size(),
        b.exp_name(),
        r.fences.len()
    );
    let fence = r
        .fences
        .first()
        .ok_or("no fence came with the buffer")?
        .fence();
    fence.wait_timeout(Duration::from_secs(10))?;
    if fence.get_status() != 1 {
        return Err(format!("the fence signalled status {}", fence.get_status()).into());
    }
    let acc = b.cpu_access(Direction::FromDevice)?;
    let mut got = vec![0u8; b.size()];
    b.vmap_unlocked()?.read_at(0, &mut got)?;
    acc.end()?;
    let want = pattern();
    if let Some(i) = (0..LEN).find(|&i| got[i] != want[i]) {
        return Err(format!("byte {i} is {:#04x}, expected {:#04x}", got[i], want[i]).into());
    }
    println!(
        "consumer: all {LEN} bytes as expected (first {:02x?})",
        &got[..8]
    );
    Ok(())
}

fn main() -> ExitCode {
    let r = match std::env::var(ROLE).as_deref() {
        Ok("consumer") => {
            // Standard input is the socket the producer gave us.
            let stdin = std::io::stdin();
            consumer(stdin.as_fd())
        }
        _ => producer(),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("producer_consumer: {e}");
            ExitCode::FAILURE
        }
    }
}
