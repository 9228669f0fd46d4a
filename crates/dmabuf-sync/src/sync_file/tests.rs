//! Sync-file tests: the sync self-tests, the record's encoding, identity, proxies and
//! the liveness channel, bad input at every entry point, polling, and a real second
//! process on the other end of a Unix socket.

use super::ioctl::{c_name, copy_name};
use super::record::{
    decode_record, encode_record, hung_up, parse_fdinfo, EventfdInfo, Record, RECORD_MAX, TS_MOD,
};
use super::registry::SWEEP_MIN;
use super::*;
use super::{export, record};
use crate::error::Error;
use crate::fault::{self, Site};
use crate::fence::unwrap::unwrap;
use crate::fence::Fence;
use crate::fence::{ktime_now, Context, FenceOps, Status, MAX_ERRNO};
use rustix::fd::{AsRawFd, FromRawFd};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::net::{RecvFlags, SendFlags};
use std::time::Duration;

struct T;
impl FenceOps for T {
    fn driver_name(&self) -> &str {
        "test"
    }
    fn timeline_name(&self) -> &str {
        "tl"
    }
}

fn pending() -> Fence {
    Fence::new(T, Context::new(), 7)
}

/// A close-on-exec pipe: a child spawned by a test running beside this one (see
/// `cross_process`) must not inherit its write end, or hang-up tests would stall.
fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap()
}

/// A close-on-exec duplicate, for the same reason.
fn cloexec_dup(fd: impl AsFd) -> OwnedFd {
    rustix::io::fcntl_dupfd_cloexec(fd, 0).unwrap()
}

/// Wait (at most 10 s) until the watcher thread holds `f`, so that what the test does
/// next is seen by the watcher and not by the peek at the start of the wait.
fn wait_until_watched(f: &Fence) {
    let t0 = std::time::Instant::now();
    while !watcher::is_watching(f) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the watcher never took the fence"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn polls_readable_once_signalled_and_reports_status() {
    let f = pending();
    let sf = SyncFile::new(f.clone()).unwrap();
    assert!(!sf.poll());
    assert_eq!(fd_status(sf.as_fd()).unwrap(), Status::Pending);
    assert_eq!(peek(sf.as_fd()).unwrap(), FdState::Pending);
    assert_eq!(sf.name(), format!("test-tl{}-7", f.context().id()));
    let ts = ktime_now() - 4242;
    f.set_error(-125).unwrap();
    f.signal_timestamp(ts).unwrap();
    assert!(sf.poll());
    assert!(sf.poll(), "the record is peeked, not consumed");
    for _ in 0..2 {
        assert_eq!(
            peek(sf.as_fd()).unwrap(),
            FdState::Signaled {
                status: -125,
                timestamp_ns: ts
            }
        );
    }
    assert_eq!(counter(sf.as_fd()), encode_record(-125, ts));
    // A duplicate of the descriptor sees the same.
    let dup = cloexec_dup(sf.as_fd());
    assert_eq!(fd_status(dup.as_fd()).unwrap(), Status::Error(-125));
}

#[test]
fn export_of_signalled_fence_is_readable_at_once() {
    let f = pending();
    f.signal().unwrap();
    let ts = f.timestamp().unwrap();
    let sf = SyncFile::new(f).unwrap();
    assert!(sf.poll());
    assert_eq!(
        peek(sf.as_fd()).unwrap(),
        FdState::Signaled {
            status: 1,
            timestamp_ns: ts
        }
    );
}

#[test]
fn import_own_export_is_same_fence_even_after_into_fd() {
    let f = pending();
    let sf = SyncFile::with_name(f.clone(), "a-very-long-name-that-goes-beyond-32-bytes").unwrap();
    assert_eq!(sf.name().len(), 31);
    let fd = sf.into_fd();
    let back = SyncFile::from_fd(fd).unwrap();
    assert!(Fence::ptr_eq(back.fence(), &f));
    assert_eq!(back.name().len(), 31);
}

#[test]
fn names_are_truncated_on_a_char_boundary() {
    let sf = SyncFile::with_name(pending(), &"é".repeat(20)).unwrap();
    assert_eq!(sf.name(), "é".repeat(15));
    // The default name too (cut in place).
    struct Long;
    impl FenceOps for Long {
        fn driver_name(&self) -> &str {
            "drïver-with-a-long-name"
        }
        fn timeline_name(&self) -> &str {
            "tïmeline"
        }
    }
    let sf = SyncFile::new(Fence::new(Long, Context::new(), 1)).unwrap();
    assert_eq!(sf.name(), "drïver-with-a-long-name-tïmel");
    assert_eq!(sf.name().len(), 31);
}

// ---- the record ---------------------------------------------------------------------------

#[test]
fn record_round_trip_every_errno_and_the_timestamp_window() {
    let nows = [
        0,
        1,
        4242,
        TS_MOD - 1,
        TS_MOD,
        TS_MOD + 7,
        3 * TS_MOD + 5,
        u64::MAX / 2,
        u64::MAX,
    ];
    for now in nows {
        for age in [0, 1, 15, 1_000_000_007, TS_MOD - 1] {
            let Some(ts) = now.checked_sub(age) else {
                continue;
            };
            for code in 0..=MAX_ERRNO {
                let status = if code == 0 { 1 } else { -code };
                let v = encode_record(status, ts);
                assert!((1..=RECORD_MAX).contains(&v), "{v:#x}");
                assert_eq!(
                    decode_record(v, now),
                    Record::Signaled {
                        status,
                        timestamp_ns: ts
                    },
                    "now {now} age {age} status {status}"
                );
            }
        }
    }
    // Across a wrap of the low 51 bits.
    let now = 3 * TS_MOD + 5;
    let ts = 3 * TS_MOD - 10;
    assert_eq!((encode_record(1, ts) - 1) >> 12, TS_MOD - 10);
    assert_eq!(
        decode_record(encode_record(1, ts), now),
        Record::Signaled {
            status: 1,
            timestamp_ns: ts
        }
    );
    // 2^51 ns old or more: read off by a multiple of 2^51.
    for (now, ts, read) in [
        (5 * TS_MOD, 4 * TS_MOD, 5 * TS_MOD),
        (5 * TS_MOD + 3, 3 * TS_MOD + 2, 5 * TS_MOD + 2),
    ] {
        assert_eq!(
            decode_record(encode_record(-4, ts), now),
            Record::Signaled {
                status: -4,
                timestamp_ns: read
            }
        );
    }
    // In the reader's future: the latest candidate not after `now`, or, early after
    // boot, the earliest after it.
    assert_eq!(
        decode_record(encode_record(1, 5 * TS_MOD + 10), 5 * TS_MOD),
        Record::Signaled {
            status: 1,
            timestamp_ns: 4 * TS_MOD + 10
        }
    );
    assert_eq!(
        decode_record(encode_record(1, 5000), 1000),
        Record::Signaled {
            status: 1,
            timestamp_ns: 5000
        }
    );
    // Boundaries of the code: positive statuses are "ok", out-of-range errnos EINVAL.
    for (status, read) in [
        (1, 1),
        (7, 1),
        (0, 1),
        (-1, -1),
        (-4095, -4095),
        (-4096, -22),
        (i32::MIN, -22),
    ] {
        assert_eq!(
            decode_record(encode_record(status, 99), 100),
            Record::Signaled {
                status: read,
                timestamp_ns: 99
            },
            "status {status}"
        );
    }
    // Boundaries of the counter.
    assert_eq!(decode_record(0, 5), Record::Pending);
    assert_eq!(
        decode_record(1, TS_MOD + 5),
        Record::Signaled {
            status: 1,
            timestamp_ns: TS_MOD
        }
    );
    assert_eq!(
        decode_record(RECORD_MAX, TS_MOD - 1),
        Record::Signaled {
            status: -4095,
            timestamp_ns: TS_MOD - 1
        }
    );
    assert_eq!(encode_record(-4095, TS_MOD - 1), RECORD_MAX);
    for v in [RECORD_MAX + 1, u64::MAX - 1, u64::MAX] {
        assert_eq!(decode_record(v, 5), Record::Invalid);
    }
}

#[test]
fn fdinfo_parsing() {
    let text = b"pos:\t0\nflags:\t02004002\nmnt_id:\t17\nino:\t1038\n\
        eventfd-count:                5\neventfd-id: 12\neventfd-semaphore: 0\n";
    assert_eq!(
        parse_fdinfo(text),
        Some(EventfdInfo {
            count: 5,
            id: Some(12)
        })
    );
    assert_eq!(
        parse_fdinfo(b"eventfd-count: 8000000000000005\n"),
        Some(EventfdInfo {
            count: 0x8000_0000_0000_0005,
            id: None
        })
    );
    assert_eq!(
        parse_fdinfo(b"pos:\t0\nflags:\t02\nmnt_id:\t1\nino:\t4\n"),
        None
    );
    assert_eq!(parse_fdinfo(b"eventfd-count: xyz\neventfd-id: 1\n"), None);
    assert_eq!(parse_fdinfo(b""), None);
    // The real thing.
    let e = efd(0x1234);
    let info = eventfd_info(e.as_fd()).unwrap();
    assert_eq!(info.count, 0x1234);
    assert!(info.id.is_some());
    let (r, _w) = pipe();
    assert!(matches!(eventfd_info(r.as_fd()), Err(Error::Invalid(_))));
}

// ---- foreign descriptors ------------------------------------------------------------------

/// An eventfd holding `count`, made by hand: not known to the registry.
fn efd(count: u64) -> OwnedFd {
    let e = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    if count != 0 {
        rustix::io::write(&e, &count.to_ne_bytes()).unwrap();
    }
    e
}

/// The eventfd counter, from fdinfo.
fn counter(fd: BorrowedFd<'_>) -> u64 {
    eventfd_info(fd).unwrap().count
}

fn wait_in_thread(f: &Fence) -> std::thread::JoinHandle<Result<()>> {
    let f = f.clone();
    std::thread::spawn(move || f.wait_timeout(Duration::from_secs(5)).map(|_| ()))
}

#[test]
fn foreign_descriptor_becomes_a_proxy_fence() {
    // Already holding a record: signalled at import, with its status and timestamp.
    let ts = ktime_now() - 1_000;
    let sf = SyncFile::from_fd(efd(encode_record(-62, ts))).unwrap();
    assert_eq!(sf.fence().ops().driver_name(), "sync_file");
    assert_eq!(sf.fence().ops().timeline_name(), "imported");
    // Signalled at import: the names read detached (the kernel since 6.17).
    assert_eq!(sf.fence().driver_name(), "detached-driver");
    assert_eq!(sf.fence().timeline_name(), "signaled-timeline");
    assert!(sf.fence().test_signaled_flag());
    assert_eq!(sf.fence().status(), Status::Error(-62));
    assert_eq!(sf.fence().timestamp(), Some(ts));
    // Named from the names of the signalled fence, which read detached.
    assert_eq!(
        sf.name(),
        format!(
            "detached-driver-signaled-timeline{}-1",
            sf.fence().context().id()
        )
    );
    // Count 0: a pending proxy that the watcher signals when the record is written.
    let e = efd(0);
    let w = cloexec_dup(&e);
    let sf = SyncFile::from_fd(e).unwrap();
    assert!(!sf.fence().is_signaled());
    let t = wait_in_thread(sf.fence());
    wait_until_watched(sf.fence());
    let ts = ktime_now();
    rustix::io::write(&w, &encode_record(1, ts).to_ne_bytes()).unwrap();
    t.join().unwrap().unwrap();
    assert_eq!(sf.fence().status(), Status::Signaled);
    assert_eq!(sf.fence().timestamp(), Some(ts));
    // Without a waiter: `is_signaled` peeks the descriptor.
    let e = efd(0);
    let w = cloexec_dup(&e);
    let f = get_fence(e.as_fd()).unwrap();
    assert!(!f.is_signaled());
    let ts = ktime_now();
    rustix::io::write(&w, &encode_record(-5, ts).to_ne_bytes()).unwrap();
    assert!(f.is_signaled());
    assert_eq!((f.status(), f.timestamp()), (Status::Error(-5), Some(ts)));
    // Every import of the same eventfd gives that one proxy, as the kernel gives the
    // file's one fence: through the same number, a duplicate, or an owning import.
    assert!(Fence::ptr_eq(&f, &get_fence(e.as_fd()).unwrap()));
    assert!(Fence::ptr_eq(&f, &get_fence(w.as_fd()).unwrap()));
    let n = e.as_raw_fd();
    let owned = SyncFile::from_fd(e).unwrap();
    assert!(Fence::ptr_eq(&f, owned.fence()));
    assert!(Fence::ptr_eq(&f, &get_fence(w.as_fd()).unwrap()));
    drop(owned);
    assert!(!registry().lock().by_fd.contains_key(&n));
}

#[test]
fn reimporting_a_pending_foreign_descriptor_neither_leaks_nor_multiplies() {
    // What leaked before: every import made a new proxy with its own duplicate, and every
    // wait on it a watch with more; a never-signalling descriptor ran out of
    // descriptors after a few hundred rounds.
    let e = efd(0);
    let first = get_fence(e.as_fd()).unwrap();
    for _ in 0..400 {
        let f = get_fence(e.as_fd()).unwrap();
        assert!(Fence::ptr_eq(&f, &first));
        assert!(matches!(
            f.wait_timeout(Duration::from_micros(200)),
            Err(Error::TimedOut)
        ));
    }
    assert_eq!(watcher::watches_of(&first), 1);
    // The one watch still delivers the record.
    let ts = ktime_now();
    rustix::io::write(&e, &encode_record(-7, ts).to_ne_bytes()).unwrap();
    first.wait_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        (first.status(), first.timestamp()),
        (Status::Error(-7), Some(ts))
    );
    // The watcher lets go once it has seen the record (a peek by the waiter may have
    // signalled the fence first).
    let t0 = std::time::Instant::now();
    while watcher::watches_of(&first) != 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "still watched");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn proxy_reads_epipe_when_the_liveness_pipe_hangs_up() {
    // The signaller dies while a waiter sleeps.
    let (r, w) = pipe();
    let sf = SyncFile::from_fd_with_liveness(efd(0), r).unwrap();
    assert_eq!(peek(sf.as_fd()).unwrap(), FdState::Pending);
    let t = wait_in_thread(sf.fence());
    wait_until_watched(sf.fence());
    drop(w);
    t.join().unwrap().unwrap();
    assert_eq!(sf.fence().status(), Status::Error(-32));
    assert_eq!(peek(sf.as_fd()).unwrap(), FdState::SignallerGone);
    assert_eq!(fd_status(sf.as_fd()).unwrap(), Status::Error(-32));
    assert!(!sf.poll(), "the descriptor itself holds no record");
    // Already gone at import: the first peek says so.
    let (r, w) = pipe();
    drop(w);
    let sf = SyncFile::from_fd_with_liveness(efd(0), r).unwrap();
    assert!(sf.fence().is_signaled());
    assert_eq!(sf.fence().status(), Status::Error(-32));
    // A record written before the death wins over the hang-up.
    let (r, w) = pipe();
    let e = efd(0);
    let writer = cloexec_dup(&e);
    let sf = SyncFile::from_fd_with_liveness(e, r).unwrap();
    let t = wait_in_thread(sf.fence());
    wait_until_watched(sf.fence());
    let ts = ktime_now();
    rustix::io::write(&writer, &encode_record(-125, ts).to_ne_bytes()).unwrap();
    drop(w);
    t.join().unwrap().unwrap();
    assert_eq!(sf.fence().status(), Status::Error(-125));
    assert_eq!(sf.fence().timestamp(), Some(ts));
}

#[test]
fn import_rejects_non_sync_files() {
    let rejected = |fd: BorrowedFd<'_>| {
        assert!(matches!(get_fence(fd), Err(Error::Invalid(_))));
        assert!(matches!(peek(fd), Err(Error::Invalid(_))));
        assert!(matches!(fd_status(fd), Err(Error::Invalid(_))));
        let owned = cloexec_dup(fd);
        let n = owned.as_raw_fd();
        assert!(matches!(SyncFile::from_fd(owned), Err(Error::Invalid(_))));
        assert!(!registry().lock().by_fd.contains_key(&n));
    };
    let (r, w) = pipe();
    rejected(r.as_fd());
    rejected(w.as_fd());
    let (a, _b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    rejected(a.as_fd());
    // A seqpacket socket holding a record of the old design.
    let (x, y) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    rustix::net::send(&y, &[0u8; 16], SendFlags::empty()).unwrap();
    rejected(x.as_fd());
    // A regular file.
    let m = rustix::fs::memfd_create("not-a-sync-file", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rejected(m.as_fd());
    // Eventfds whose counter is not a record: rejected, and left as they were.
    for garbage in [RECORD_MAX + 1, 0xdead_beef_dead_beef, u64::MAX - 1] {
        let e = efd(garbage);
        rejected(e.as_fd());
        assert_eq!(counter(e.as_fd()), garbage);
    }
}

// ---- identity -------------------------------------------------------------------------

#[test]
fn into_fd_then_dup_then_import_gives_the_same_fence() {
    let f = pending();
    let sf = SyncFile::with_name(f.clone(), "same").unwrap();
    // A duplicate of a live sync file's descriptor: found through its eventfd id.
    let d0 = cloexec_dup(sf.as_fd());
    assert!(Fence::ptr_eq(&get_fence(d0.as_fd()).unwrap(), &f));
    // Pending: the caller gets a duplicate, the callback keeps the original.
    let fd = sf.into_fd();
    let d = cloexec_dup(&fd);
    assert!(Fence::ptr_eq(&get_fence(d.as_fd()).unwrap(), &f));
    let back = SyncFile::from_fd(d).unwrap();
    assert!(Fence::ptr_eq(back.fence(), &f));
    assert_eq!(back.name(), "same");
    assert!(Fence::ptr_eq(&get_fence(fd.as_fd()).unwrap(), &f));
    // The record still reaches every copy.
    f.set_error(-71).unwrap();
    f.signal().unwrap();
    for d in [fd.as_fd(), d0.as_fd(), back.as_fd()] {
        assert!(poll_readable(d, Some(Duration::ZERO)).unwrap());
        assert_eq!(fd_status(d).unwrap(), Status::Error(-71));
    }
    drop(back);
    assert!(Fence::ptr_eq(&get_fence(fd.as_fd()).unwrap(), &f));
    // Signalled: the callback has let go, so the caller gets the descriptor itself.
    let g = pending();
    g.signal().unwrap();
    let sf = SyncFile::new(g.clone()).unwrap();
    let n = sf.as_fd().as_raw_fd();
    let fd = sf.into_fd();
    assert_eq!(fd.as_raw_fd(), n);
    assert!(!registry().lock().by_fd.contains_key(&n));
    let d = cloexec_dup(&fd);
    assert!(Fence::ptr_eq(&get_fence(d.as_fd()).unwrap(), &g));
}

/// Whether descriptor number `n` still refers to the eventfd with id `id` (another test
/// may have reused the number for another file meanwhile: that is "no").
fn still_open(n: i32, id: u64) -> bool {
    matches!(record::fdinfo_of(n), Ok(i) if i.id == Some(id))
}

#[test]
fn dropping_an_unshared_pending_export_closes_its_descriptor_now() {
    let f = pending();
    let sf = SyncFile::new(f.clone()).unwrap();
    let n = sf.as_fd().as_raw_fd();
    let id = eventfd_info(sf.as_fd()).unwrap().id.unwrap();
    drop(sf);
    assert!(
        !still_open(n, id),
        "the dropped sync file's descriptor is still open"
    );
    // The callback finds nothing to write to, and frees nothing twice.
    f.signal().unwrap();
    // The same through a merge of pending fences.
    let (g, h) = (pending(), pending());
    let (a, b) = (
        SyncFile::new(g.clone()).unwrap(),
        SyncFile::new(h.clone()).unwrap(),
    );
    let m = a.merge("m", &b).unwrap();
    let (n, id) = (
        m.as_fd().as_raw_fd(),
        eventfd_info(m.as_fd()).unwrap().id.unwrap(),
    );
    drop(m);
    assert!(!still_open(n, id));
    g.signal().unwrap();
    h.signal().unwrap();
    assert!(a.poll() && b.poll());
}

#[test]
fn dropped_shared_export_of_a_pending_fence_still_signals_its_copies() {
    // Each way this process knows the descriptor reached another holder: that holder
    // still gets the record after the sync file is dropped, and the export's own
    // descriptor stays open only until then.
    let (sa, sb) = seqpacket_pair();
    type Share = fn(&SyncFile, BorrowedFd<'_>, BorrowedFd<'_>) -> OwnedFd;
    let ways: [(&str, Share); 4] = [
        ("try_clone_fd", |sf, _, _| sf.try_clone_fd().unwrap()),
        ("send_fd", |sf, a, b| {
            send_fd(a, sf.as_fd()).unwrap();
            recv_all(b).swap_remove(0)
        }),
        ("from_fd of a duplicate", |sf, _, _| {
            // Held as a second sync file, which is leaked here on purpose into its
            // descriptor: it is what must keep seeing the record.
            SyncFile::from_fd(cloexec_dup(sf.as_fd()))
                .unwrap()
                .into_fd()
        }),
        ("fork", |sf, _, _| {
            export::pretend_fork();
            cloexec_dup(sf.as_fd())
        }),
    ];
    for (i, (how, share)) in ways.into_iter().enumerate() {
        // A second sync file holds the fence, as the kernel's file does: it is not
        // released by dropping `f`.
        let releases: &[bool] = if i == 2 { &[false] } else { &[false, true] };
        for &release in releases {
            let f = pending();
            let sf = SyncFile::new(f.clone()).unwrap();
            let n = sf.as_fd().as_raw_fd();
            let id = eventfd_info(sf.as_fd()).unwrap().id.unwrap();
            let d = share(&sf, sa.as_fd(), sb.as_fd());
            drop(sf);
            assert!(still_open(n, id), "{how}: closed before the record");
            assert!(!poll_readable(d.as_fd(), Some(Duration::ZERO)).unwrap());
            // Signalled, or released unsignalled (the core's -EDEADLK).
            let want = if release {
                drop(f);
                Status::Error(-35)
            } else {
                f.signal().unwrap();
                Status::Signaled
            };
            assert_eq!(fd_status(d.as_fd()).unwrap(), want, "{how}");
            assert!(!still_open(n, id), "{how}: kept after the record");
        }
    }
    // into_fd hands over a descriptor the caller may do anything with.
    let f = pending();
    let fd = SyncFile::new(f.clone()).unwrap().into_fd();
    let d = cloexec_dup(&fd);
    drop(fd);
    f.signal().unwrap();
    assert_eq!(fd_status(d.as_fd()).unwrap(), Status::Signaled);
}

#[test]
fn try_clone_fd_out_of_descriptors_or_memory_changes_nothing() {
    for errno in [Errno::MFILE, Errno::NOMEM] {
        let f = pending();
        let sf = SyncFile::new(f.clone()).unwrap();
        let n = sf.as_fd().as_raw_fd();
        let id = eventfd_info(sf.as_fd()).unwrap().id.unwrap();
        fault::fail_next(Site::Fd, errno);
        assert_eq!(sf.try_clone_fd().unwrap_err().errno(), errno.raw_os_error());
        // Not shared by the failed attempt: dropping still closes at once.
        drop(sf);
        assert!(!still_open(n, id));
        f.signal().unwrap();
    }
}

/// What a duplicate made behind the crate's back gets: the record while the sync file
/// lives, nothing once it was dropped before the signal (the documented price of
/// closing at once).
#[test]
fn a_raw_duplicate_sees_the_record_only_while_its_sync_file_lives() {
    let f = pending();
    let sf = SyncFile::new(f.clone()).unwrap();
    let d = cloexec_dup(sf.as_fd());
    f.signal().unwrap();
    assert_eq!(fd_status(d.as_fd()).unwrap(), Status::Signaled);
    drop(sf);
    let f = pending();
    let sf = SyncFile::new(f.clone()).unwrap();
    let d = cloexec_dup(sf.as_fd());
    drop(sf);
    f.signal().unwrap();
    assert_eq!(fd_status(d.as_fd()).unwrap(), Status::Pending);
}

const FD_CHILD_ENV: &str = "DMABUF_SYNC_FILE_FD_CHILD";

/// Descriptors open in this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Run test `name` of this binary alone in a child process with `env` set, and
/// assert that it passed.
fn run_alone(name: &str, env: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(env, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} failed in its own process:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 2000 merges over pending fences, each dropping the previous sync file, with at most
/// 256 descriptors: the count stays flat (the kernel keeps two files: the newest merge
/// and the one being made), and signalling leaves everything clean. Run in a process of
/// its own, where nothing else opens descriptors meanwhile.
#[test]
fn merging_in_a_loop_over_pending_fences_keeps_the_descriptor_count_flat() {
    if std::env::var(FD_CHILD_ENV).is_err() {
        return run_alone(
            "sync_file::tests::merging_in_a_loop_over_pending_fences_keeps_the_descriptor_count_flat",
            FD_CHILD_ENV,
        );
    }
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    lim.current = Some(256);
    setrlimit(Resource::Nofile, lim).unwrap();
    let (fa, fb) = (pending(), pending());
    let a = SyncFile::new(fa.clone()).unwrap();
    let b = SyncFile::new(fb.clone()).unwrap();
    let mut m = a.merge("m", &b).unwrap();
    let before = open_fds();
    let mut peak = before;
    for i in 0..2000 {
        m = match m.merge("m", &b) {
            Ok(next) => next,
            Err(e) => panic!("merge {i}: {e} with {} descriptors open", open_fds()),
        };
        peak = peak.max(open_fds());
    }
    assert!(
        peak <= before + 1,
        "{before} descriptors before, {peak} at the peak"
    );
    assert!(!m.poll());
    fa.signal().unwrap();
    fb.signal().unwrap();
    assert!(m.poll());
    assert_eq!(fd_status(m.as_fd()).unwrap(), Status::Signaled);
    drop((m, a, b));
    // The three sync files' descriptors (a, b, m) were all that the loop left open.
    assert_eq!(open_fds(), before - 3, "descriptors left after the signal");
}

// ---- fork without exec ------------------------------------------------------------------
//
// A real `fork` of the multi-threaded test process cannot be done safely here (nor without
// `libc` or rustix's `runtime`), so these tests let one thread act as the child: the
// per-thread pid hook makes the module's pid differ from the exporter's, which is all the
// module looks at.

#[test]
fn a_forked_child_releasing_or_signalling_its_copy_writes_no_record() {
    // Released unsignalled in the child: the core's -EDEADLK stays in the child.
    let f = pending();
    let sf = SyncFile::new(f.clone()).unwrap();
    let d = cloexec_dup(sf.as_fd());
    let releases = crate::fence::unsignalled_releases_here();
    pid::act_as_forked_child(Some(1));
    drop(sf);
    drop(f);
    pid::act_as_forked_child(None);
    assert_eq!(crate::fence::unsignalled_releases_here(), releases + 1);
    assert_eq!(counter(d.as_fd()), 0);
    assert_eq!(fd_status(d.as_fd()).unwrap(), Status::Pending);
    // Signalled in the child: no record either (the parent's fence is still pending).
    let g = pending();
    let sf = SyncFile::new(g.clone()).unwrap();
    pid::act_as_forked_child(Some(1));
    g.signal().unwrap();
    pid::act_as_forked_child(None);
    assert_eq!(counter(sf.as_fd()), 0);
    assert!(!sf.poll());
    // In the exporting process itself, the record is written as ever.
    let h = pending();
    let sf = SyncFile::new(h.clone()).unwrap();
    h.signal().unwrap();
    assert!(sf.poll());
}

#[test]
fn a_forked_child_gets_a_watcher_of_its_own() {
    let real = rustix::process::getpid();
    assert_eq!(watcher::pid_of_watcher().unwrap(), real);
    let e = efd(0);
    let f = get_fence(e.as_fd()).unwrap();
    pid::act_as_forked_child(Some(2));
    let child = watcher::pid_of_watcher().unwrap();
    // The child's wait goes to the child's watcher, which signals it.
    f.enable_sw_signaling();
    pid::act_as_forked_child(None);
    assert_ne!(child, real);
    let ts = ktime_now();
    rustix::io::write(&e, &encode_record(-3, ts).to_ne_bytes()).unwrap();
    f.wait_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((f.status(), f.timestamp()), (Status::Error(-3), Some(ts)));
    // Back in this process, a watcher of this pid again; it serves new waits.
    assert_eq!(watcher::pid_of_watcher().unwrap(), real);
    let e = efd(0);
    let g = get_fence(e.as_fd()).unwrap();
    let t = wait_in_thread(&g);
    wait_until_watched(&g);
    rustix::io::write(&e, &encode_record(1, ktime_now()).to_ne_bytes()).unwrap();
    t.join().unwrap().unwrap();
    assert_eq!(g.status(), Status::Signaled);
}

// ---- transient errors ---------------------------------------------------------------------

#[test]
fn a_watcher_that_cannot_start_is_reported_and_tried_again() {
    // Act as a new child, so that the next wait must start a watcher.
    pid::act_as_forked_child(Some(3));
    let e = efd(0);
    let f = get_fence(e.as_fd()).unwrap();
    // The watcher's epoll instance cannot be made.
    fault::fail_next(Site::Fd, Errno::NOMEM);
    f.enable_sw_signaling();
    assert!(!fault::pending(Site::Fd), "no watcher was started");
    let (e2, g) = {
        let e2 = efd(0);
        let g = get_fence(e2.as_fd()).unwrap();
        g.enable_sw_signaling();
        (e2, g)
    };
    pid::act_as_forked_child(None);
    // The failure reached the waiter, as the fence's error...
    assert!(f.test_signaled_flag());
    assert_eq!(f.status(), Status::Error(-12));
    // ...and was not remembered: the next wait got a watcher, which signals.
    assert!(!g.test_signaled_flag());
    rustix::io::write(&e2, &encode_record(1, ktime_now()).to_ne_bytes()).unwrap();
    g.wait_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(g.status(), Status::Signaled);
}

#[test]
fn an_unreadable_fdinfo_is_the_callers_error_not_a_verdict() {
    let e = efd(0);
    // Imports, peeks and ioctls report the error (not EINVAL / ENOTTY), and change
    // nothing.
    for call in 0..4 {
        fault::fail_next(Site::FdInfo, Errno::MFILE);
        let errno = match call {
            0 => get_fence(e.as_fd()).unwrap_err().errno(),
            1 => peek(e.as_fd()).unwrap_err().errno(),
            2 => ioctl_set_deadline(e.as_fd(), &SyncSetDeadline::default())
                .unwrap_err()
                .errno(),
            _ => SyncFile::from_fd(cloexec_dup(&e)).unwrap_err().errno(),
        };
        assert_eq!(errno, 24, "call {call}");
        assert!(!fault::pending(Site::FdInfo), "call {call}");
    }
    // What the watcher does when it cannot read a record: driven on this thread, where
    // the fault is armed.
    let mut w = watcher::Driven::new();
    let drive = |w: &mut watcher::Driven, f: &Fence| {
        let mut failures = 0;
        for _ in 0..1000 {
            if f.is_signaled() {
                return failures;
            }
            w.step(Duration::from_millis(10));
            failures = w.failures(f).unwrap_or(failures);
        }
        panic!("the watcher never signalled");
    };
    // A record that cannot be read for a while: the fence stays pending and the watcher
    // tries again; the right status arrives in the end.
    let e = Arc::new(efd(0));
    let f = pending();
    assert!(w.watch(f.clone(), &e));
    fault::fail_times(Site::FdInfo, 3, Errno::MFILE);
    let ts = ktime_now();
    rustix::io::write(&*e, &encode_record(-9, ts).to_ne_bytes()).unwrap();
    assert_eq!(drive(&mut w, &f), 3, "one retry per failed read");
    assert!(!fault::pending(Site::FdInfo));
    assert_eq!((f.status(), f.timestamp()), (Status::Error(-9), Some(ts)));
    // One that can never be read: -EIO, as a last resort, once the retries are spent.
    let e = Arc::new(efd(0));
    let f = pending();
    assert!(w.watch(f.clone(), &e));
    fault::fail_times(Site::FdInfo, u32::MAX, Errno::MFILE);
    rustix::io::write(&*e, &encode_record(1, ktime_now()).to_ne_bytes()).unwrap();
    let failures = drive(&mut w, &f);
    fault::disarm();
    assert_eq!(failures, 13, "every retry was tried");
    assert_eq!(f.status(), Status::Error(-5));
}

#[test]
fn a_sweep_keeps_entries_whose_fdinfo_cannot_be_read() {
    use super::registry::{Pinned, SweptMap};
    let e = efd(0);
    let id = eventfd_info(e.as_fd()).unwrap().id.unwrap();
    let pin = |fd_no| Pinned {
        value: (),
        _pin: Arc::new(cloexec_dup(&e)),
        fd_no,
    };
    let mut m = SweptMap::new();
    assert!(m.insert(id, pin(e.as_raw_fd())).is_empty());
    // Entries under a number that is not open (-1): stale, once that can be read.
    let mut fake = u64::MAX;
    let mut fill = |m: &mut SweptMap<()>| {
        let sweeps = m.sweeps;
        let mut out = Vec::new();
        while m.sweeps == sweeps {
            assert!(fake > u64::MAX - 10 * SWEEP_MIN as u64, "never swept");
            out.extend(m.insert(fake, pin(-1)));
            fake -= 1;
        }
        out.len()
    };
    // No fdinfo can be read: nothing is known to be stale, everything stays.
    fault::fail_times(Site::FdInfo, u32::MAX, Errno::MFILE);
    let swept = fill(&mut m);
    fault::disarm();
    assert_eq!(swept, 0);
    assert!(m.map.contains_key(&id));
    // Readable again: the stale entries go, the live one stays.
    let swept = fill(&mut m);
    assert!(swept >= SWEEP_MIN, "{swept} swept");
    assert_eq!(m.map.len(), 1);
    assert!(m.map.contains_key(&id));
}

#[test]
fn fd_number_registry_never_returns_a_stale_fence() {
    let mut reused = 0;
    for _ in 0..50 {
        let f = pending();
        let sf = SyncFile::new(f.clone()).unwrap();
        // Signalled: the callback has closed its handle, so dropping the sync file closes
        // the descriptor and frees its number.
        f.signal().unwrap();
        let n = sf.as_fd().as_raw_fd();
        drop(sf);
        assert!(!registry().lock().by_fd.contains_key(&n));
        let e = efd(encode_record(-5, ktime_now()));
        if e.as_raw_fd() == n {
            reused += 1;
        }
        let g = get_fence(e.as_fd()).unwrap();
        assert!(!Fence::ptr_eq(&g, &f));
        // Signalled: the names read detached; the ops say who made it.
        assert_eq!(g.ops().driver_name(), "sync_file");
        assert_eq!(g.driver_name(), "detached-driver");
        assert_eq!(g.status(), Status::Error(-5));
    }
    assert!(
        reused > 0,
        "the number was never reused: the test proved nothing"
    );
}

#[test]
fn id_map_entries_are_swept_once_their_descriptor_is_closed() {
    let f = pending();
    f.signal().unwrap();
    let fd = SyncFile::new(f.clone()).unwrap().into_fd();
    let id = eventfd_info(fd.as_fd()).unwrap().id.unwrap();
    assert!(registry().lock().by_id.map.contains_key(&id));
    drop(fd);
    // The pin keeps the id: a new eventfd never takes it while the entry exists.
    let e = efd(0);
    assert_ne!(eventfd_info(e.as_fd()).unwrap().id, Some(id));
    // Enough further entries force a sweep, which finds the number closed.
    for i in 0.. {
        assert!(i < 10 * SWEEP_MIN, "entry never swept");
        if !registry().lock().by_id.map.contains_key(&id) {
            break;
        }
        drop(SyncFile::new(Fence::private_stub(1)).unwrap().into_fd());
    }
    // The entry's fence reference went with it (a sweep on another thread drops what it
    // took out just after releasing the registry lock).
    let t0 = std::time::Instant::now();
    while f.ref_count() != 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "fence still referenced"
        );
        std::thread::yield_now();
    }
}

// ---- passing descriptors --------------------------------------------------------------

/// Receive one message and return every descriptor it carried.
fn recv_all(sock: BorrowedFd<'_>) -> Vec<OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    rustix::net::recvmsg(sock, &mut iov, &mut anc, RecvFlags::CMSG_CLOEXEC).unwrap();
    let mut out = Vec::new();
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            out.extend(fds);
        }
    }
    out
}

fn is_fifo(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(fd).unwrap().st_mode)
        == rustix::fs::FileType::Fifo
}

fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    let (a, b) = (rustix::fs::fstat(a).unwrap(), rustix::fs::fstat(b).unwrap());
    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
}

fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap()
}

#[test]
fn send_fd_adds_the_liveness_descriptor_only_to_known_sync_files() {
    let (a, b) = seqpacket_pair();
    // Our own export: the eventfd and this process's liveness read end.
    let f = pending();
    let sf = SyncFile::new(f.clone()).unwrap();
    send_fd(a.as_fd(), sf.as_fd()).unwrap();
    let got = recv_all(b.as_fd());
    assert_eq!(got.len(), 2);
    assert_eq!(
        eventfd_info(got[0].as_fd()).unwrap().id,
        eventfd_info(sf.as_fd()).unwrap().id
    );
    assert!(is_fifo(got[1].as_fd()));
    assert!(!hung_up(got[1].as_fd()), "this process is alive");
    // Once the descriptor has left its sync file too.
    let fd = sf.into_fd();
    send_fd(a.as_fd(), fd.as_fd()).unwrap();
    let again = recv_all(b.as_fd());
    assert_eq!(again.len(), 2);
    assert!(same_file(again[1].as_fd(), got[1].as_fd()));
    // Anything else goes alone: a pipe, an eventfd nobody knows.
    let (r, _w) = pipe();
    send_fd(a.as_fd(), r.as_fd()).unwrap();
    assert_eq!(recv_all(b.as_fd()).len(), 1);
    let e = efd(0);
    send_fd(a.as_fd(), e.as_fd()).unwrap();
    assert_eq!(recv_all(b.as_fd()).len(), 1);
    // A proxy without liveness: alone; with: its origin's liveness is forwarded.
    let p = SyncFile::from_fd(efd(0)).unwrap();
    send_fd(a.as_fd(), p.as_fd()).unwrap();
    assert_eq!(recv_all(b.as_fd()).len(), 1);
    let (lr, _lw) = pipe();
    let lr2 = cloexec_dup(&lr);
    let p = SyncFile::from_fd_with_liveness(efd(0), lr).unwrap();
    send_fd(a.as_fd(), p.as_fd()).unwrap();
    let fwd = recv_all(b.as_fd());
    assert_eq!(fwd.len(), 2);
    assert!(same_file(fwd[1].as_fd(), lr2.as_fd()));
}

#[test]
fn recv_of_a_sync_file_carrying_the_liveness_descriptor() {
    let (a, b) = seqpacket_pair();
    // Our own export comes back as the same fence.
    let f = pending();
    let sf = SyncFile::new(f.clone()).unwrap();
    send_fd(a.as_fd(), sf.as_fd()).unwrap();
    let got = recv_fd(b.as_fd()).unwrap();
    let id = eventfd_info(got.as_fd()).unwrap().id.unwrap();
    assert!(registry().lock().received.map.contains_key(&id));
    assert!(Fence::ptr_eq(&get_fence(got.as_fd()).unwrap(), &f));
    // A proxy forwarded and dropped: the receiver's import is that same proxy (the
    // eventfd is the same file), which carries the origin's liveness and reads -EPIPE
    // when the origin goes.
    let (lr, lw) = pipe();
    let p = SyncFile::from_fd_with_liveness(efd(0), lr).unwrap();
    let old = p.fence().clone();
    send_fd(a.as_fd(), p.as_fd()).unwrap();
    let got = recv_fd(b.as_fd()).unwrap();
    let sf = SyncFile::from_fd(got).unwrap();
    drop(p);
    assert!(Fence::ptr_eq(sf.fence(), &old));
    assert_eq!(sf.fence().driver_name(), "sync_file");
    let t = wait_in_thread(sf.fence());
    wait_until_watched(sf.fence());
    drop(lw);
    t.join().unwrap().unwrap();
    assert_eq!(sf.fence().status(), Status::Error(-32));
    // A liveness descriptor beside something that is not a sync file is dropped.
    let (r, _w) = pipe();
    let (lr, lw) = pipe();
    {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage};
        let fds = [r.as_fd(), lr.as_fd()];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        assert!(anc.push(SendAncillaryMessage::ScmRights(&fds)));
        let iov = [std::io::IoSlice::new(b"F")];
        rustix::net::sendmsg(&a, &iov, &mut anc, SendFlags::empty()).unwrap();
    }
    drop(lr);
    let got = recv_fd(b.as_fd()).unwrap();
    assert!(same_file(got.as_fd(), r.as_fd()));
    // Our copy of the liveness read end was closed: writing to the pipe fails.
    assert_eq!(rustix::io::write(&lw, b"x"), Err(Errno::PIPE));
}

#[test]
fn bad_input_at_every_entry_point_changes_nothing() {
    let f = pending();
    let sf = SyncFile::new(f.clone()).unwrap();
    let n = sf.as_fd().as_raw_fd();
    let (r, w) = pipe();
    // Imports and peeks of a non-sync file.
    assert!(matches!(get_fence(r.as_fd()), Err(Error::Invalid(_))));
    assert!(matches!(peek(r.as_fd()), Err(Error::Invalid(_))));
    assert!(matches!(fd_status(w.as_fd()), Err(Error::Invalid(_))));
    // send_fd on something that is not a socket: nothing sent, the sync file as it was.
    assert!(send_fd(w.as_fd(), sf.as_fd()).is_err());
    assert!(send_fd(r.as_fd(), r.as_fd()).is_err());
    // recv_fd: not a socket; a message without a descriptor; a closed peer.
    assert!(recv_fd(r.as_fd()).is_err());
    let (a, b) = seqpacket_pair();
    rustix::net::send(&a, b"x", SendFlags::empty()).unwrap();
    assert!(matches!(recv_fd(b.as_fd()), Err(Error::NoEntry(_))));
    drop(a);
    assert!(matches!(recv_fd(b.as_fd()), Err(Error::NoEntry(_))));
    // ioctls on a non-sync file: ENOTTY, nothing touched.
    let mut merge = SyncMergeData {
        fd2: n,
        ..Default::default()
    };
    let before = merge;
    assert!(matches!(
        ioctl_merge(r.as_fd(), &mut merge),
        Err(Error::NoTty)
    ));
    assert_eq!(merge, before);
    let mut info = SyncFileInfo::default();
    assert!(matches!(
        ioctl_file_info(r.as_fd(), &mut info, &mut []),
        Err(Error::NoTty)
    ));
    assert_eq!(info, SyncFileInfo::default());
    let dl = SyncSetDeadline {
        deadline_ns: 5,
        pad: 0,
    };
    assert!(matches!(
        ioctl_set_deadline(r.as_fd(), &dl),
        Err(Error::NoTty)
    ));
    let g = efd(RECORD_MAX + 1);
    assert!(matches!(
        ioctl_set_deadline(g.as_fd(), &dl),
        Err(Error::NoTty)
    ));
    assert_eq!(counter(g.as_fd()), RECORD_MAX + 1);
    // The sync file is untouched throughout.
    assert!(!f.is_signaled());
    assert_eq!(f.deadline(), None);
    assert!(!sf.poll());
    assert_eq!(counter(sf.as_fd()), 0);
    assert!(Fence::ptr_eq(
        &registry().lock().by_fd.get(&n).unwrap().known.fence,
        &f
    ));
    // The pipe too: still open both ways, nothing written into it.
    assert!(!poll_readable(r.as_fd(), Some(Duration::ZERO)).unwrap());
    rustix::io::write(&w, b"y").unwrap();
}

#[test]
fn merge_ioctl_validation() {
    let (f1, f2) = (pending(), pending());
    let a = SyncFile::new(f1.clone()).unwrap();
    let b = SyncFile::new(f2.clone()).unwrap();
    let mut d = SyncMergeData {
        fd2: b.as_fd().as_raw_fd(),
        ..Default::default()
    };
    copy_name(&mut d.name, "merged");
    for (flags, pad) in [(1, 0), (0, 1)] {
        let mut bad = d;
        bad.flags = flags;
        bad.pad = pad;
        let before = bad;
        assert!(matches!(
            ioctl_merge(a.as_fd(), &mut bad),
            Err(Error::Invalid(_))
        ));
        assert_eq!(bad, before);
    }
    let (p, _w) = pipe();
    let mut bad = d;
    bad.fd2 = p.as_raw_fd();
    assert!(matches!(
        ioctl_merge(a.as_fd(), &mut bad),
        Err(Error::NoEntry(_))
    ));
    bad.fd2 = -1;
    assert_eq!(ioctl_merge(a.as_fd(), &mut bad).unwrap_err().errno(), 2);
    // A number that is not open: ENOENT (the kernel's failed fdget).
    bad.fd2 = i32::MAX;
    assert_eq!(ioctl_merge(a.as_fd(), &mut bad).unwrap_err().errno(), 2);
    // fd2 names a duplicate of a sync file, or one that left its SyncFile: merged.
    let b2 = cloexec_dup(b.as_fd());
    let mut ok = d;
    ok.fd2 = b2.as_raw_fd();
    let m = SyncFile::from_fd(ioctl_merge(a.as_fd(), &mut ok).unwrap()).unwrap();
    assert_eq!(m.info().fences.len(), 2);
    assert!(unwrap(m.fence()).any(|l| Fence::ptr_eq(&l, &f2)));
    // ioctl on something that is not a sync file.
    assert!(matches!(ioctl_merge(p.as_fd(), &mut d), Err(Error::NoTty)));
    // Unterminated name is force-terminated.
    d.name = [b'x'; 32];
    let out = ioctl_merge(a.as_fd(), &mut d).unwrap();
    assert_eq!(d.fence, out.as_raw_fd());
    let m = SyncFile::from_fd(out).unwrap();
    assert_eq!(m.name(), "x".repeat(31));
    assert_eq!(m.info().fences.len(), 2);
    f1.signal().unwrap();
    assert!(!m.poll());
    f2.signal().unwrap();
    assert!(m.poll());
}

#[test]
fn try_into_fd_out_of_descriptors_is_emfile_and_leaks_nothing() {
    let f = pending();
    let sf = SyncFile::new(f.clone()).unwrap();
    let n = sf.as_fd().as_raw_fd();
    let d = sf.try_clone_fd().unwrap();
    fault::fail_next(Site::Dup, Errno::MFILE);
    assert_eq!(sf.try_into_fd().unwrap_err().errno(), 24);
    // Dropped as usual: out of the registry, the fence no longer referenced by it (the
    // callback keeps only the eventfd, for the shared duplicate `d`).
    assert!(!registry().lock().by_fd.contains_key(&n));
    assert_eq!(f.ref_count(), 1);
    // The record still reaches the duplicate.
    f.set_error(-5).unwrap();
    f.signal().unwrap();
    assert_eq!(fd_status(d.as_fd()).unwrap(), Status::Error(-5));
    // Once the fence has signalled the original is handed over: only the id map's pin
    // is a duplicate, and without it the descriptor still comes (as a proxy later).
    let g = pending();
    g.signal().unwrap();
    let sf = SyncFile::new(g).unwrap();
    fault::fail_next(Site::Dup, Errno::MFILE);
    let fd = sf.try_into_fd().unwrap();
    assert!(!fault::pending(Site::Dup), "the pin was not attempted");
    assert_eq!(fd_status(fd.as_fd()).unwrap(), Status::Signaled);
}

#[test]
fn merge_ioctl_out_of_descriptors_is_an_errno_not_a_panic() {
    let (f1, f2) = (pending(), pending());
    let a = SyncFile::new(f1.clone()).unwrap();
    let b = SyncFile::new(f2.clone()).unwrap();
    let mut d = SyncMergeData {
        fd2: b.as_fd().as_raw_fd(),
        ..Default::default()
    };
    copy_name(&mut d.name, "m");
    let before = d;
    let releases = crate::fence::unsignalled_releases_here();
    // Fail each duplicate the merge makes in turn, until it makes no more.
    let mut failed = 0;
    for after in 0.. {
        assert!(after < 10, "the merge keeps duplicating");
        fault::fail_nth(Site::Dup, after, Errno::MFILE);
        let r = ioctl_merge(a.as_fd(), &mut d);
        let fired = !fault::pending(Site::Dup);
        fault::disarm();
        match r {
            Err(e) => {
                assert!(fired, "{e}");
                assert_eq!(e.errno(), 24);
                assert_eq!(d, before);
                failed += 1;
            }
            Ok(out) => {
                assert_eq!(d.fence, out.as_raw_fd());
                if !fired {
                    break;
                }
                d = before;
            }
        }
    }
    assert!(
        failed > 0,
        "no duplicate was ever made: the test proved nothing"
    );
    // The failed merges registered nothing: both inputs are referenced by their own
    // sync files and the merges' arrays only, and none was released unsignalled.
    assert_eq!(crate::fence::unsignalled_releases_here(), releases);
    f1.signal().unwrap();
    f2.signal().unwrap();
    assert_eq!(crate::fence::unsignalled_releases_here(), releases);
}

#[test]
fn file_info_ioctl_validation() {
    let (f1, f2) = (pending(), pending());
    let a = SyncFile::new(f1.clone()).unwrap();
    let b = SyncFile::new(f2.clone()).unwrap();
    let m = a.merge("m", &b).unwrap();
    for (flags, pad) in [(1, 0), (0, 1)] {
        let mut info = SyncFileInfo {
            flags,
            pad,
            ..Default::default()
        };
        let before = info;
        assert!(matches!(
            ioctl_file_info(m.as_fd(), &mut info, &mut []),
            Err(Error::Invalid(_))
        ));
        assert_eq!(info, before);
    }
    let mut info = SyncFileInfo::default();
    ioctl_file_info(m.as_fd(), &mut info, &mut []).unwrap();
    assert_eq!(info.num_fences, 2);
    assert_eq!(info.status, 0);
    assert_eq!(c_name(&info.name), "m");
    // Too small a count: EINVAL, nothing written.
    let mut small = SyncFileInfo {
        num_fences: 1,
        ..Default::default()
    };
    let mut out = [SyncFenceInfo::default(); 2];
    assert!(matches!(
        ioctl_file_info(m.as_fd(), &mut small, &mut out),
        Err(Error::Invalid(_))
    ));
    assert_eq!(out, [SyncFenceInfo::default(); 2]);
    // Count fine but buffer short: EFAULT.
    let mut info2 = SyncFileInfo {
        num_fences: 2,
        ..Default::default()
    };
    assert!(matches!(
        ioctl_file_info(m.as_fd(), &mut info2, &mut out[..1]),
        Err(Error::Fault(_))
    ));
    f1.set_error(-5).unwrap();
    f1.signal_timestamp(10).unwrap();
    ioctl_file_info(m.as_fd(), &mut info2, &mut out).unwrap();
    assert_eq!(info2.num_fences, 2);
    let signalled: Vec<_> = out.iter().filter(|i| i.status == -5).collect();
    assert_eq!(signalled.len(), 1);
    assert_eq!(signalled[0].timestamp_ns, 10);
    // A signalled fence's names read detached (the kernel since 6.17).
    assert_eq!(c_name(&signalled[0].obj_name), "signaled-timeline");
    assert_eq!(c_name(&signalled[0].driver_name), "detached-driver");
    // Leaves are sorted by context: f1 (error) comes first, and the aggregate takes the
    // first non-positive leaf status.
    assert_eq!(info2.status, -5);
    let (p, _w) = pipe();
    assert!(matches!(
        ioctl_file_info(p.as_fd(), &mut info2, &mut out),
        Err(Error::NoTty)
    ));
}

#[test]
fn set_deadline_ioctl_validation() {
    let f = pending();
    let a = SyncFile::new(f.clone()).unwrap();
    assert!(matches!(
        ioctl_set_deadline(
            a.as_fd(),
            &SyncSetDeadline {
                deadline_ns: 5,
                pad: 1
            }
        ),
        Err(Error::Invalid(_))
    ));
    assert_eq!(f.deadline(), None);
    ioctl_set_deadline(
        a.as_fd(),
        &SyncSetDeadline {
            deadline_ns: 5,
            pad: 0,
        },
    )
    .unwrap();
    assert_eq!(f.deadline(), Some(5));
}

#[test]
fn sw_sync_get_deadline() {
    use crate::fence::timeline::{get_deadline, Timeline};
    let tl = Timeline::new("dl");
    let p = tl.create_fence(3);
    assert!(matches!(get_deadline(&p), Err(Error::NoEntry(_))));
    p.set_deadline(100);
    p.set_deadline(50);
    assert_eq!(get_deadline(&p).unwrap(), 50);
    assert!(matches!(get_deadline(&pending()), Err(Error::Invalid(_))));
}

#[test]
fn a_sw_sync_point_is_not_a_container() {
    use crate::fence::timeline::Timeline;
    use crate::resv::{Resv, Usage};
    for usage in [Usage::Kernel, Usage::Write, Usage::Read, Usage::Bookkeep] {
        let tl = Timeline::new("resv");
        let p = tl.create_fence(1);
        assert!(!p.is_container());
        let r = Resv::new();
        let mut g = r.lock_no_ctx().unwrap();
        g.reserve_fences(1).unwrap();
        g.add_fence(&p, usage).unwrap();
        drop(g);
        assert_eq!(r.num_fences(), 1);
        assert!(!r.test_signaled(Usage::Bookkeep), "{usage:?}");
        tl.inc(1);
        assert!(r.test_signaled(Usage::Bookkeep), "{usage:?}");
    }
}

// ---- sw_sync timelines as descriptors ---------------------------------------------------

fn ino(fd: BorrowedFd<'_>) -> u64 {
    rustix::fs::fstat(fd).unwrap().st_ino
}

/// Wait (at most 10 s) until `sf` polls readable; its status then.
fn status_within_10s(sf: &SyncFile) -> Status {
    assert!(
        poll_readable(sf.as_fd(), Some(Duration::from_secs(10))).unwrap(),
        "not signalled within 10 s"
    );
    fd_status(sf.as_fd()).unwrap()
}

#[test]
fn sw_sync_timeline_descriptor_in_one_process() {
    let tl = sw_sync::open().unwrap();
    let key = ino(tl.as_fd());
    let p1 = sw_sync::create_fence(tl.as_fd(), 1).unwrap();
    let p3 = sw_sync::create_fence(tl.as_fd(), 3).unwrap();
    // A live pending point of the same value is reused.
    let again = sw_sync::create_fence(tl.as_fd(), 3).unwrap();
    assert!(Fence::ptr_eq(again.fence(), p3.fence()));
    assert_eq!(p1.fence().driver_name(), "sw_sync");
    assert_eq!(sw_sync::pending_here(key), 2);
    // An increment signals this process's points before it returns, in order.
    sw_sync::inc(tl.as_fd(), 1).unwrap();
    assert!(p1.poll() && !p3.poll());
    assert_eq!(fd_status(p1.as_fd()).unwrap(), Status::Signaled);
    // A value reached gives a point signalled at birth.
    assert!(sw_sync::create_fence(tl.as_fd(), 1).unwrap().poll());
    // Deadlines, through the descriptors.
    assert_eq!(
        sw_sync::get_deadline(tl.as_fd(), p3.as_fd())
            .unwrap_err()
            .errno(),
        2
    );
    p3.set_deadline(77);
    assert_eq!(sw_sync::get_deadline(tl.as_fd(), p3.as_fd()).unwrap(), 77);
    let other = SyncFile::new(pending()).unwrap();
    assert_eq!(
        sw_sync::get_deadline(tl.as_fd(), other.as_fd())
            .unwrap_err()
            .errno(),
        22
    );
    assert_eq!(
        sw_sync::get_deadline(other.as_fd(), p3.as_fd())
            .unwrap_err()
            .errno(),
        25
    );
    // A duplicate of the descriptor is the same timeline.
    let d = cloexec_dup(&tl);
    let p4 = sw_sync::create_fence(d.as_fd(), 4).unwrap();
    sw_sync::inc(d.as_fd(), 1).unwrap();
    assert!(!p3.poll() && !p4.poll());
    // Closing one descriptor is not the last close.
    drop(d);
    sw_sync::inc(tl.as_fd(), 1).unwrap();
    assert!(p3.poll() && !p4.poll());
    // The last close signals the pending points with -ENOENT.
    drop(tl);
    assert_eq!(status_within_10s(&p4), Status::Error(-2));
    assert_eq!(fd_status(p3.as_fd()).unwrap(), Status::Signaled);
    let t0 = std::time::Instant::now();
    while sw_sync::knows(key) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "state kept after close"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn sw_sync_timeline_refuses_other_descriptors() {
    let tl = sw_sync::open().unwrap();
    // A pipe of somebody else's: empty, or holding bytes that are not a token (kept).
    let (r, w) = pipe();
    let garbage = [7u8; 32];
    let (r2, w2) = pipe();
    rustix::io::write(&w2, &garbage).unwrap();
    // A timeline's read end cannot be had from the API; one opened by hand is refused
    // as not writable.
    let tl_read = rustix::fs::open(
        format!("/proc/self/fd/{}", tl.as_raw_fd()).as_str(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let e = efd(0);
    let sf = SyncFile::new(pending()).unwrap();
    for fd in [
        w.as_fd(),
        r.as_fd(),
        w2.as_fd(),
        tl_read.as_fd(),
        e.as_fd(),
        sf.as_fd(),
    ] {
        let err = sw_sync::create_fence(fd, 1).unwrap_err();
        assert_eq!(err.errno(), 25, "{err}");
        assert_eq!(sw_sync::inc(fd, 1).unwrap_err().errno(), 25);
    }
    for p in [&w, &w2] {
        assert!(!sw_sync::knows(ino(p.as_fd())));
    }
    let mut back = [0u8; 32];
    assert_eq!(rustix::io::read(&r2, &mut back).unwrap(), 32);
    assert_eq!(back, garbage);
    // The real one still works.
    let p = sw_sync::create_fence(tl.as_fd(), 1).unwrap();
    sw_sync::inc(tl.as_fd(), 1).unwrap();
    assert!(p.poll());
}

const SW_SYNC_FAULT_ENV: &str = "DMABUF_SW_SYNC_FAULT_CHILD";

/// Every descriptor `open`, `create_fence` and `inc` make, failed in turn with EMFILE
/// and ENOMEM: the errno comes back, the process has the same descriptors open, the
/// timeline has the same points and value. In a process of its own, for exact counts.
#[test]
fn sw_sync_descriptor_faults_leave_nothing_behind() {
    if std::env::var(SW_SYNC_FAULT_ENV).is_err() {
        return run_alone(
            "sync_file::tests::sw_sync_descriptor_faults_leave_nothing_behind",
            SW_SYNC_FAULT_ENV,
        );
    }
    for errno in [Errno::MFILE, Errno::NOMEM] {
        let before = open_fds();
        fault::fail_next(Site::Fd, errno);
        assert_eq!(sw_sync::open().unwrap_err().errno(), errno.raw_os_error());
        assert_eq!(open_fds(), before);
        type Op = fn(BorrowedFd<'_>) -> Result<Option<SyncFile>>;
        let ops: [(&str, Op); 2] = [
            ("create_fence", |tl| sw_sync::create_fence(tl, 2).map(Some)),
            ("inc", |tl| sw_sync::inc(tl, 1).map(|()| None)),
        ];
        for (what, op) in ops {
            let tl = sw_sync::open().unwrap();
            let key = ino(tl.as_fd());
            let mut failed = 0;
            for after in 0.. {
                assert!(after < 10, "{what} keeps making descriptors");
                let before = open_fds();
                let had_watcher = sw_sync::watcher_running();
                fault::fail_nth(Site::Fd, after, errno);
                let r = op(tl.as_fd());
                let fired = !fault::pending(Site::Fd);
                fault::disarm();
                match r {
                    Err(e) => {
                        assert!(fired, "{what}: {e}");
                        assert_eq!(e.errno(), errno.raw_os_error(), "{what}");
                        // Only the process's watcher, if this attempt started it (its
                        // epoll set and scratch pipe), stays: it serves every timeline.
                        let grown = open_fds() - before;
                        let started = !had_watcher && sw_sync::watcher_running();
                        assert_eq!(
                            grown,
                            if started { 3 } else { 0 },
                            "{what}: descriptors left open"
                        );
                        assert!(!sw_sync::knows(key), "{what}: state left registered");
                        failed += 1;
                    }
                    Ok(out) => {
                        assert!(!fired, "{what} succeeded through a fault");
                        // The timeline did not move on any failed attempt.
                        let p = sw_sync::create_fence(tl.as_fd(), 1).unwrap();
                        assert_eq!(p.poll(), what == "inc", "{what}");
                        drop(out);
                        break;
                    }
                }
            }
            assert!(failed > 0, "{what}: no descriptor was ever made");
            // The last close of the timeline: the watcher forgets it (closing what it
            // held for it) on its own thread; wait for that, or the next count races it.
            drop(tl);
            let end = std::time::Instant::now() + Duration::from_secs(10);
            while sw_sync::knows(key) {
                assert!(
                    std::time::Instant::now() < end,
                    "{what}: timeline never forgotten"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            // It unregisters the timeline a few instructions before its last reference
            // (and the read end) goes.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// In a child started by [`spawn_entry`] with `env`: the descriptor it inherited.
/// `None` in a normal test run (the entry is then a no-op).
fn inherited_fd(env: &str) -> Option<OwnedFd> {
    let n: i32 = std::env::var(env).ok()?.parse().unwrap();
    // SAFETY: the parent left this descriptor number open across fork and exec for this
    // child's exclusive use, and nothing else in the child owns it.
    Some(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Start this test binary again running only the test `entry`, with `env` set to the
/// descriptor number `fd` (left open across the fork and exec for the child to take).
fn spawn_entry(entry: &str, env: &str, fd: BorrowedFd<'_>) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", entry, "--test-threads=1", "--quiet"])
        .env(env, fd.as_raw_fd().to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// A socket pair for a child: the parent's end closes on exec, the child's end does not;
/// the child is [`spawn_entry`]'d with the latter, which the parent then drops.
fn spawn_with_socket(entry: &str, env: &str) -> (OwnedFd, std::process::Child) {
    let (parent, child) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::empty(),
        None,
    )
    .unwrap();
    rustix::io::fcntl_setfd(&parent, rustix::io::FdFlags::CLOEXEC).unwrap();
    let proc = spawn_entry(entry, env, child.as_fd());
    (parent, proc)
}

const SW_SYNC_CHILD_ENV: &str = "DMABUF_SW_SYNC_CHILD";

/// The child's side of `sw_sync_timeline_across_processes`; a no-op unless started by
/// it with the socket in the environment.
#[test]
fn sw_sync_child_entry() {
    let Some(sock) = inherited_fd(SW_SYNC_CHILD_ENV) else {
        return;
    };
    let tl = recv_fd(sock.as_fd()).unwrap();
    // A point of our own, and an increment that the parent's points see.
    let mine = sw_sync::create_fence(tl.as_fd(), 2).unwrap();
    sw_sync::inc(tl.as_fd(), 1).unwrap();
    rustix::io::write(&sock, b"i").unwrap();
    // The parent's increment signals our point.
    let st = status_within_10s(&mine);
    rustix::io::write(&sock, &st.to_raw().to_ne_bytes()).unwrap();
    // Hold the timeline until told, then close it: the last close.
    let mut b = [0u8; 1];
    let _ = rustix::io::read(&sock, &mut b);
    drop(tl);
    rustix::io::write(&sock, b"c").unwrap();
    let _ = rustix::io::read(&sock, &mut b);
    std::process::exit(0);
}

#[test]
fn sw_sync_timeline_across_processes() {
    let (parent, mut proc) =
        spawn_with_socket("sync_file::tests::sw_sync_child_entry", SW_SYNC_CHILD_ENV);
    let tl = sw_sync::open().unwrap();
    let p1 = sw_sync::create_fence(tl.as_fd(), 1).unwrap();
    let p5 = sw_sync::create_fence(tl.as_fd(), 5).unwrap();
    send_fd(parent.as_fd(), tl.as_fd()).unwrap();
    // The child's increment signals our point at 1, not the one at 5.
    let mut b = [0u8; 1];
    rustix::io::read(&parent, &mut b).unwrap();
    assert_eq!(&b, b"i");
    assert_eq!(status_within_10s(&p1), Status::Signaled);
    assert!(!p5.poll());
    // Ours signals the child's point at 2.
    sw_sync::inc(tl.as_fd(), 1).unwrap();
    let mut st = [0u8; 4];
    rustix::io::read(&parent, &mut st).unwrap();
    assert_eq!(i32::from_ne_bytes(st), 1);
    // We close ours: the child still holds the timeline, so nothing happens...
    drop(tl);
    std::thread::sleep(Duration::from_millis(50));
    assert!(!p5.poll(), "signalled while the child holds the timeline");
    rustix::io::write(&parent, b"x").unwrap();
    rustix::io::read(&parent, &mut b).unwrap();
    assert_eq!(&b, b"c");
    // ...until the child's close, the last one: our pending point reads -ENOENT.
    assert_eq!(status_within_10s(&p5), Status::Error(-2));
    rustix::io::write(&parent, b"x").unwrap();
    assert!(proc.wait().unwrap().success());
}

// ---- a second process -----------------------------------------------------------------

const CHILD_ENV: &str = "DMABUF_SYNC_FILE_CHILD";

/// The child's side; a no-op unless started by `cross_process` with the socket fd in the
/// environment.
#[test]
fn child_entry() {
    let Some(sock) = inherited_fd(CHILD_ENV) else {
        return;
    };
    // 1. Receive a pending sync file, wait on it (watcher thread), say so once the
    //    watcher holds it, report its status.
    let fd = recv_fd(sock.as_fd()).unwrap();
    let sf = SyncFile::from_fd(fd).unwrap();
    let t = {
        let f = sf.fence().clone();
        std::thread::spawn(move || f.wait_timeout(Duration::from_secs(10)).map(|_| ()))
    };
    wait_until_watched(sf.fence());
    rustix::io::write(&sock, b"w").unwrap();
    t.join().unwrap().unwrap();
    let st = sf.fence().get_status();
    rustix::io::write(&sock, &st.to_ne_bytes()).unwrap();
    // 2. Export a pending fence to the parent and die without signalling it.
    let f = pending();
    let mine = SyncFile::new(f.clone()).unwrap();
    send_fd(sock.as_fd(), mine.as_fd()).unwrap();
    let mut b = [0u8; 1];
    let _ = rustix::io::read(&sock, &mut b);
    std::process::exit(0);
}

#[test]
fn cross_process() {
    let (parent, mut proc) = spawn_with_socket("sync_file::tests::child_entry", CHILD_ENV);
    // 1. Parent signals, child observes the error across the process boundary, though
    //    the parent dropped its sync file as soon as it was sent.
    let f = pending();
    let sf = SyncFile::new(f.clone()).unwrap();
    send_fd(parent.as_fd(), sf.as_fd()).unwrap();
    drop(sf);
    // The child's waiter is blocked in its watcher before we signal.
    let mut ready = [0u8; 1];
    rustix::io::read(&parent, &mut ready).unwrap();
    assert_eq!(&ready, b"w");
    f.set_error(-125).unwrap();
    f.signal().unwrap();
    let mut st = [0u8; 4];
    rustix::io::read(&parent, &mut st).unwrap();
    assert_eq!(i32::from_ne_bytes(st), -125);
    // 2. The child's fence arrives pending; the child dies; we read an error.
    let fd = recv_fd(parent.as_fd()).unwrap();
    let theirs = SyncFile::from_fd(fd).unwrap();
    assert!(!theirs.poll());
    rustix::io::write(&parent, b"x").unwrap();
    theirs
        .fence()
        .wait_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(theirs.fence().status(), Status::Error(-32));
    assert!(proc.wait().unwrap().success());
}

const SW_SYNC_INHERIT_ENV: &str = "DMABUF_SW_SYNC_INHERIT_CHILD";

/// The child's side of `sw_sync_timeline_inherited_across_fork`: increment the timeline
/// it inherited (descriptor number in the environment) and exit, closing it.
#[test]
fn sw_sync_inherit_child_entry() {
    let Some(tl) = inherited_fd(SW_SYNC_INHERIT_ENV) else {
        return;
    };
    sw_sync::inc(tl.as_fd(), 1).unwrap();
    drop(tl);
    std::process::exit(0);
}

/// A timeline descriptor inherited across `fork` (and `exec`) is the same timeline: the
/// child's increment signals the parent's point, and the parent's close is the last one
/// only once the child's copy is gone too.
#[test]
fn sw_sync_timeline_inherited_across_fork() {
    let tl = sw_sync::open().unwrap();
    let p1 = sw_sync::create_fence(tl.as_fd(), 1).unwrap();
    let p5 = sw_sync::create_fence(tl.as_fd(), 5).unwrap();
    // A copy without close-on-exec, for the child to inherit.
    let inherited = rustix::io::dup(&tl).unwrap();
    let mut proc = spawn_entry(
        "sync_file::tests::sw_sync_inherit_child_entry",
        SW_SYNC_INHERIT_ENV,
        inherited.as_fd(),
    );
    drop(inherited);
    assert!(proc.wait().unwrap().success());
    assert_eq!(status_within_10s(&p1), Status::Signaled);
    assert!(!p5.poll(), "the child's exit is not the last close");
    drop(tl);
    assert_eq!(status_within_10s(&p5), Status::Error(-2));
}
