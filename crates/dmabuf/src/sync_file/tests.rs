//! Sync-file tests: the sync self-tests, bad input at every entry point, polling, and a
//! real second process on the other end of a Unix socket.

use super::*;
use crate::fence::Fence;
use rustix::fd::{AsRawFd, FromRawFd};

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

#[test]
fn selftest_sync() {
    let mut failed = Vec::new();
    for c in selftest::cases() {
        if let Err(e) = crate::selftest::run_case(&c).result {
            failed.push(format!("{}: {e}", c.name));
        }
    }
    assert!(failed.is_empty(), "failed:\n{}", failed.join("\n"));
}

#[test]
fn polls_readable_once_signalled_and_reports_status() {
    let f = pending();
    let sf = SyncFile::new(f.clone()).unwrap();
    assert!(!sf.poll());
    assert_eq!(fd_status(sf.as_fd()).unwrap(), Status::Pending);
    assert_eq!(sf.name(), format!("test-tl{}-7", f.context().id()));
    f.set_error(-125).unwrap();
    f.signal_timestamp(4242).unwrap();
    assert!(sf.poll());
    assert!(sf.poll(), "the record is peeked, not consumed");
    assert_eq!(
        peek(sf.as_fd()).unwrap(),
        FdState::Signaled {
            status: -125,
            timestamp_ns: 4242
        }
    );
    // A duplicate of the descriptor sees the same.
    let dup = rustix::io::dup(sf.as_fd()).unwrap();
    assert_eq!(fd_status(dup.as_fd()).unwrap(), Status::Error(-125));
}

#[test]
fn export_of_signalled_fence_is_readable_at_once() {
    let f = pending();
    f.signal().unwrap();
    let sf = SyncFile::new(f).unwrap();
    assert!(sf.poll());
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
fn foreign_descriptor_becomes_a_proxy_fence() {
    // Build a sync-file-shaped socket pair by hand: not in the registry.
    let (r, w) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let sf = SyncFile::from_fd(r).unwrap();
    assert_eq!(sf.fence().driver_name(), "sync_file");
    assert!(!sf.fence().is_signaled());
    let f = sf.fence().clone();
    let t = std::thread::spawn(move || f.wait_timeout(Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(10));
    rustix::net::send(&w, &encode(-62, 99), SendFlags::empty()).unwrap();
    assert!(t.join().unwrap().is_ok());
    assert_eq!(sf.fence().status(), Status::Error(-62));
    assert_eq!(sf.fence().timestamp(), Some(99));
    // Signaller gone without a record → -EPIPE, not a hang.
    let (r, w) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let sf = SyncFile::from_fd(r).unwrap();
    let f = sf.fence().clone();
    let t = std::thread::spawn(move || f.wait_timeout(Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(10));
    drop(w);
    assert!(t.join().unwrap().is_ok());
    assert_eq!(sf.fence().status(), Status::Error(-32));
}

#[test]
fn import_rejects_non_sync_files() {
    let (r, _w) = rustix::pipe::pipe().unwrap();
    assert!(matches!(get_fence(r.as_fd()), Err(Error::Invalid(_))));
    let (a, _b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    assert!(matches!(get_fence(a.as_fd()), Err(Error::Invalid(_))));
    // A seqpacket socket holding garbage.
    let (x, y) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    rustix::net::send(&y, b"hello", SendFlags::empty()).unwrap();
    assert!(matches!(get_fence(x.as_fd()), Err(Error::Invalid(_))));
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
    let (p, _w) = rustix::pipe::pipe().unwrap();
    let mut bad = d;
    bad.fd2 = p.as_raw_fd();
    assert!(matches!(
        ioctl_merge(a.as_fd(), &mut bad),
        Err(Error::NoEntry(_))
    ));
    bad.fd2 = -1;
    assert_eq!(ioctl_merge(a.as_fd(), &mut bad).unwrap_err().errno(), 2);
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
    assert_eq!(c_name(&signalled[0].obj_name), "tl");
    assert_eq!(c_name(&signalled[0].driver_name), "test");
    // Leaves are sorted by context: f1 (error) comes first, and the aggregate takes the
    // first non-positive leaf status.
    assert_eq!(info2.status, -5);
    let (p, _w) = rustix::pipe::pipe().unwrap();
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

// ---- a second process -----------------------------------------------------------------

const CHILD_ENV: &str = "DMABUF_SYNC_FILE_CHILD";

/// The child's side; a no-op unless started by `cross_process` with the socket fd in the
/// environment.
#[test]
fn child_entry() {
    let Ok(n) = std::env::var(CHILD_ENV) else {
        return;
    };
    let n: i32 = n.parse().unwrap();
    // SAFETY: the parent passed us this inherited descriptor number for our exclusive use.
    let sock = unsafe { OwnedFd::from_raw_fd(n) };
    // 1. Receive a pending sync file, wait on it (watcher thread), report its status.
    let fd = recv_fd(sock.as_fd()).unwrap();
    let sf = SyncFile::from_fd(fd).unwrap();
    sf.fence().wait_timeout(Duration::from_secs(10)).unwrap();
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
    let (parent, child) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::empty(),
        None,
    )
    .unwrap();
    rustix::io::fcntl_setfd(&parent, rustix::io::FdFlags::CLOEXEC).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut proc = std::process::Command::new(exe)
        .args([
            "--exact",
            "sync_file::tests::child_entry",
            "--test-threads=1",
            "--quiet",
        ])
        .env(CHILD_ENV, child.as_raw_fd().to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop(child);
    // 1. Parent signals, child observes the error across the process boundary.
    let f = pending();
    let sf = SyncFile::new(f.clone()).unwrap();
    send_fd(parent.as_fd(), sf.as_fd()).unwrap();
    std::thread::sleep(Duration::from_millis(20));
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
