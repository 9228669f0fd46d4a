//! `dmabuf bench fd`: buffers as descriptors, and frames handed to another process.
//!
//! - `fd+get round trip`: [`DmaBuf::fd`] + [`buf::get`] + drop both, on one 4 KiB
//!   system-heap buffer, beside `dup` + `close` of a memfd. Where our time goes: ours is
//!   the same `F_DUPFD_CLOEXEC` and `close`, plus one `fstat` (the file's identity) and
//!   the lookup of that identity in the table of buffers whose descriptors left, which
//!   gives back the same buffer object (one reference more, then one less).
//! - `frame hand-off N`: two processes share a buffer of N bytes (sent once, at setup,
//!   with [`buf::send`]; the consumer maps the descriptor it received). Per frame the
//!   producer makes a sync file of a fresh fence, sends it
//!   ([`sync_file::send_fd`](crate::sync_file::send_fd), `SOCK_SEQPACKET`) and signals
//!   the fence; the consumer imports it ([`SyncFile::from_fd`]), waits, copies the whole
//!   frame out of its mapping into a local buffer and replies one byte, which the
//!   producer waits for. The baseline writes the same N bytes through a Unix stream
//!   socket; the consumer reads them all and replies one byte. Where our time goes: a
//!   constant part (the eventfd of the sync file and its registry entry, one
//!   `SCM_RIGHTS` message carrying it and the producer's liveness descriptor, the fdinfo
//!   read that imports it, the poll, two context switches each way) and one `memcpy` of
//!   the frame; the baseline copies the frame twice (into and out of the socket buffer)
//!   in socket-buffer-sized pieces, each piece a wake-up of the reader.
//!
//! The consumer is a peer process: this executable run again with
//! `DMABUF_BENCH_PEER=fd` in its environment and its end of a `SOCK_SEQPACKET` socket as
//! its standard input, spawned on first use and kept in a static (a case's function
//! cannot capture). Programs that run these cases call [`peer_main`](super::peer_main)
//! first thing in `main`. The peer exits by itself when its socket reaches end of file,
//! that is when this process is gone.

use super::BenchCase;
use crate::buf::{self, Direction, DmaBuf};
use crate::error::{Error, Result};
use crate::fence::Context;
use crate::heap::{heaps, AllocData, O_CLOEXEC, O_RDWR};
use crate::mem::memfd::Mapping;
use crate::sync_file::{self, SyncFile};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::MemfdFlags;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// The environment variable that makes a process the peer (its value: the suite).
pub(crate) const PEER_ENV: &str = "DMABUF_BENCH_PEER";

/// How long the consumer waits for a frame's fence before giving up.
const FENCE_TIMEOUT: Duration = Duration::from_secs(10);

/// The cases of the `fd` suite.
pub(crate) fn cases() -> Vec<BenchCase> {
    const STREAM: &str = "same bytes through a unix stream socket";
    let c = |case, baseline, ours, base| BenchCase::new("fd", case, baseline, ours, base);
    vec![
        c(
            "fd+get round trip",
            "dup+close of a memfd",
            fd_get,
            dup_close,
        )
        .target(3.0),
        c("frame hand-off 4 KiB", STREAM, hand_4k, stream_4k),
        c("frame hand-off 256 KiB", STREAM, hand_256k, stream_256k),
        c("frame hand-off 1 MiB", STREAM, hand_1m, stream_1m).target(0.2),
        c("frame hand-off 16 MiB", STREAM, hand_16m, stream_16m),
    ]
}

// ---- fd + get ------------------------------------------------------------------------

fn small_buf() -> &'static DmaBuf {
    static B: OnceLock<DmaBuf> = OnceLock::new();
    B.get_or_init(|| {
        heaps()
            .alloc("system", &AllocData::new(4 * KIB as u64))
            .expect("system heap allocation")
    })
}

fn small_memfd() -> &'static OwnedFd {
    static M: OnceLock<OwnedFd> = OnceLock::new();
    M.get_or_init(|| {
        let fd = rustix::fs::memfd_create("bench", MemfdFlags::CLOEXEC).expect("memfd_create");
        rustix::fs::ftruncate(&fd, 4 * KIB as u64).expect("ftruncate");
        fd
    })
}

fn fd_get(iters: u64) -> Duration {
    let b = small_buf();
    let t = Instant::now();
    for _ in 0..iters {
        let fd = b.fd(O_RDWR | O_CLOEXEC).expect("fd");
        let g = buf::get(fd.as_fd()).expect("get");
        drop(black_box(g));
        drop(fd);
    }
    t.elapsed()
}

fn dup_close(iters: u64) -> Duration {
    let m = small_memfd();
    let t = Instant::now();
    for _ in 0..iters {
        let fd = rustix::io::fcntl_dupfd_cloexec(m, 0).expect("dup");
        drop(black_box(fd));
    }
    t.elapsed()
}

// ---- the producer's side ---------------------------------------------------------------

/// Commands to the peer, one `SOCK_SEQPACKET` message each.
mod cmd {
    /// A [`buf::send`](crate::buf::send) message follows: map it, reply its byte sum.
    pub(super) const BUF: u8 = b'B';
    /// A descriptor follows: the stream socket of the baseline.
    pub(super) const STREAM: u8 = b'S';
    /// `[HAND, index: u32, iters: u64]`: that many frames of buffer `index`.
    pub(super) const HAND: u8 = b'H';
    /// `[COPY, len: u32, iters: u64]`: that many frames of `len` bytes on the stream.
    pub(super) const COPY: u8 = b'C';
}

/// The peer process and what this process shares with it.
struct Peer {
    /// The peer process (never waited for: it exits when this process's sockets close).
    _child: Child,
    /// Our end of the peer's standard input.
    ctl: OwnedFd,
    /// Our end of the baseline's stream socket.
    stream: OwnedFd,
    /// The shared buffers, by frame size, in the order the peer got them.
    bufs: Vec<(usize, DmaBuf)>,
    /// The baseline's frame bytes (the largest frame).
    data: Vec<u8>,
    /// The context of the frames' fences, and the next seqno.
    ctx: Context,
    seqno: u64,
}

fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair")
}

fn stream_pair() -> (OwnedFd, OwnedFd) {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair")
}

/// This executable again as a bench peer of `role` ([`peer_main`](super::peer_main)),
/// with `stdin` as its standard input.
pub(super) fn spawn_peer(role: &str, stdin: OwnedFd) -> std::io::Result<Child> {
    let mut c = Command::new(std::env::current_exe()?);
    if cfg!(test) {
        // The unit-test binary: run only the test that turns into the peer.
        c.args([
            "--ignored",
            "--exact",
            "bench::fd::tests::peer",
            "--test-threads=1",
        ]);
    }
    c.env(PEER_ENV, role)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .spawn()
}

/// The `fd` suite's consumer, with `sock` as its standard input.
fn spawn(sock: OwnedFd) -> Child {
    spawn_peer("fd", sock).expect("spawn the bench peer")
}

fn peer() -> std::sync::MutexGuard<'static, Peer> {
    static P: OnceLock<Mutex<Peer>> = OnceLock::new();
    let p = P.get_or_init(|| {
        let (ctl, theirs) = seqpacket_pair();
        let child = spawn(theirs);
        let (stream, their_stream) = stream_pair();
        send_msg(ctl.as_fd(), &[cmd::STREAM]);
        sync_file::send_fd(ctl.as_fd(), their_stream.as_fd()).expect("send the stream socket");
        drop(their_stream);
        Mutex::new(Peer {
            _child: child,
            ctl,
            stream,
            bufs: Vec::new(),
            data: (0..16 * MIB).map(|i| (i * 7) as u8).collect(),
            ctx: Context::new(),
            seqno: 0,
        })
    });
    p.lock().unwrap_or_else(|e| e.into_inner())
}

fn send_msg(sock: BorrowedFd<'_>, msg: &[u8]) {
    let n =
        rustix::net::send(sock, msg, rustix::net::SendFlags::NOSIGNAL).expect("bench peer gone");
    assert_eq!(n, msg.len());
}

/// Wait for the peer's one-byte reply on `sock`.
fn reply(sock: BorrowedFd<'_>) -> u8 {
    let mut b = [0u8; 1];
    let n = rustix::io::read(sock, &mut b).expect("read the bench peer's reply");
    assert_eq!(n, 1, "the bench peer is gone");
    b[0]
}

/// The index of the shared buffer of `len` bytes, made and sent to the peer on first use.
fn shared(p: &mut Peer, len: usize) -> u32 {
    if let Some(i) = p.bufs.iter().position(|(l, _)| *l == len) {
        return i as u32;
    }
    let b = heaps()
        .alloc("system", &AllocData::new(len as u64))
        .expect("system heap allocation");
    let acc = b.cpu_access(Direction::ToDevice).expect("begin CPU access");
    b.vmap_unlocked()
        .expect("vmap")
        .write_at(0, &p.data[..len])
        .expect("inside the buffer");
    acc.end().expect("end CPU access");
    send_msg(p.ctl.as_fd(), &[cmd::BUF]);
    buf::send(p.ctl.as_fd(), &b, &[]).expect("send the buffer");
    let sum = p.data[..len].iter().fold(0u8, |s, &x| s.wrapping_add(x));
    assert_eq!(
        reply(p.ctl.as_fd()),
        sum,
        "the peer sees the buffer's bytes"
    );
    p.bufs.push((len, b));
    (p.bufs.len() - 1) as u32
}

fn command(op: u8, arg: u32, iters: u64) -> [u8; 13] {
    let mut m = [0u8; 13];
    m[0] = op;
    m[1..5].copy_from_slice(&arg.to_le_bytes());
    m[5..].copy_from_slice(&iters.to_le_bytes());
    m
}

fn hand_off(iters: u64, len: usize) -> Duration {
    let mut p = peer();
    let idx = shared(&mut p, len);
    send_msg(p.ctl.as_fd(), &command(cmd::HAND, idx, iters));
    let Peer {
        ctl, ctx, seqno, ..
    } = &mut *p;
    let ctl = ctl.as_fd();
    let t = Instant::now();
    for _ in 0..iters {
        *seqno += 1;
        let f = crate::testing::named("bench", "frames", *ctx, *seqno);
        let sf = SyncFile::new(f.clone()).expect("sync file");
        sync_file::send_fd(ctl, sf.as_fd()).expect("send the sync file");
        f.signal().expect("signal");
        reply(ctl);
        drop(sf);
    }
    t.elapsed()
}

fn stream_copy(iters: u64, len: usize) -> Duration {
    let p = peer();
    send_msg(p.ctl.as_fd(), &command(cmd::COPY, len as u32, iters));
    let s = p.stream.as_fd();
    let t = Instant::now();
    for _ in 0..iters {
        let mut rest = &p.data[..len];
        while !rest.is_empty() {
            let n = rustix::io::write(s, rest).expect("write to the bench peer");
            rest = &rest[n..];
        }
        reply(s);
    }
    t.elapsed()
}

fn hand_4k(i: u64) -> Duration {
    hand_off(i, 4 * KIB)
}
fn hand_256k(i: u64) -> Duration {
    hand_off(i, 256 * KIB)
}
fn hand_1m(i: u64) -> Duration {
    hand_off(i, MIB)
}
fn hand_16m(i: u64) -> Duration {
    hand_off(i, 16 * MIB)
}
fn stream_4k(i: u64) -> Duration {
    stream_copy(i, 4 * KIB)
}
fn stream_256k(i: u64) -> Duration {
    stream_copy(i, 256 * KIB)
}
fn stream_1m(i: u64) -> Duration {
    stream_copy(i, MIB)
}
fn stream_16m(i: u64) -> Duration {
    stream_copy(i, 16 * MIB)
}

// ---- the peer's side -------------------------------------------------------------------

/// The consumer: serve commands on standard input until it reaches end of file. Returns
/// the exit code: 0 at end of file, 1 on any error (printed).
pub(crate) fn peer_main() -> i32 {
    lockdep::set_enabled(false);
    let stdin = std::io::stdin();
    match serve(stdin.as_fd()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("dmabuf bench peer: {e}");
            1
        }
    }
}

/// One buffer the peer got: the buffer and its mapping, made from its descriptor.
struct Frame {
    _buf: DmaBuf,
    map: Mapping,
}

fn serve(sock: BorrowedFd<'_>) -> Result<()> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut stream: Option<OwnedFd> = None;
    let mut local: Vec<u8> = Vec::new();
    loop {
        let mut m = [0u8; 16];
        let n = rustix::io::read(sock, &mut m)?;
        if n == 0 {
            return Ok(()); // the producer is gone
        }
        let (arg, iters) = if n == 13 {
            (
                u32::from_le_bytes(m[1..5].try_into().expect("4 bytes")) as usize,
                u64::from_le_bytes(m[5..13].try_into().expect("8 bytes")),
            )
        } else {
            (0, 0)
        };
        match m[0] {
            cmd::BUF => {
                let r = match buf::recv(sock) {
                    Err(Error::NoEntry(_)) => return Ok(()),
                    r => r?,
                };
                let fd = r.buf.fd(O_RDWR | O_CLOEXEC)?;
                let map = Mapping::new(fd.as_fd(), r.buf.size(), true)?;
                let mut all = vec![0u8; map.len()];
                map.read_at(0, &mut all)?;
                let sum = all.iter().fold(0u8, |s, &x| s.wrapping_add(x));
                write_all(sock, &[sum])?;
                frames.push(Frame { _buf: r.buf, map });
            }
            cmd::STREAM => {
                stream = Some(match sync_file::recv_fd(sock) {
                    Err(Error::NoEntry(_)) => return Ok(()),
                    r => r?,
                });
            }
            cmd::HAND if n == 13 => {
                let f = frames.get(arg).ok_or(Error::Invalid("no such buffer"))?;
                let len = f.map.len();
                if local.len() < len {
                    local.resize(len, 0);
                }
                for _ in 0..iters {
                    let sf = match sync_file::recv_sync_file(sock) {
                        Err(Error::NoEntry(_)) => return Ok(()),
                        r => r?,
                    };
                    // Wait as userspace waits on a sync file: poll its descriptor
                    // (`sync_wait`); the status then reads the record.
                    if !sync_file::poll_readable(sf.as_fd(), Some(FENCE_TIMEOUT))? {
                        return Err(Error::Invalid("a frame's fence did not signal"));
                    }
                    if sf.fence().get_status() != 1 {
                        return Err(Error::Invalid("a frame's fence signalled an error"));
                    }
                    f.map.read_at(0, &mut local[..len])?;
                    black_box(&local);
                    write_all(sock, b"k")?;
                }
            }
            cmd::COPY if n == 13 => {
                let s = stream
                    .as_ref()
                    .ok_or(Error::Invalid("no stream socket"))?
                    .as_fd();
                if local.len() < arg {
                    local.resize(arg, 0);
                }
                for _ in 0..iters {
                    let mut got = 0;
                    while got < arg {
                        let n = rustix::io::read(s, &mut local[got..arg])?;
                        if n == 0 {
                            return Ok(()); // the producer is gone
                        }
                        got += n;
                    }
                    black_box(&local);
                    write_all(s, b"k")?;
                }
            }
            _ => return Err(Error::Invalid("unknown command")),
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut b: &[u8]) -> Result<()> {
    while !b.is_empty() {
        let n = rustix::io::write(fd, b)?;
        b = &b[n..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peer process of the other tests (this binary run again by [`spawn`]).
    #[test]
    #[ignore = "run by the other tests as their peer process"]
    fn peer() {
        if let Some(code) = crate::bench::peer_main() {
            std::process::exit(code);
        }
    }

    #[test]
    fn every_side_runs() {
        for c in cases() {
            assert!((c.ours)(2) > Duration::ZERO, "{}", c.case);
            assert!((c.base)(2) > Duration::ZERO, "{}", c.case);
        }
    }
}
