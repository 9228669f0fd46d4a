//! Buffers as file descriptors: `DmaBuf::fd`, `buf::get`, the heap's descriptor uapi,
//! memory safety across holders, and sharing with another process (this test binary
//! run again as the peer: the ignored test `peer` reads its role from the environment
//! and its socket from standard input).

use dmabuf::buf::{self, sync_flags, Direction, DmaBuf, FileFlags};
use dmabuf::device::Device;
use dmabuf::fault::{self, Site};
use dmabuf::fence::{Context, Fence};
use dmabuf::heap::system::SystemHeap;
use dmabuf::heap::{heaps, AllocData, Heap, O_CLOEXEC, O_RDONLY, O_RDWR};
use dmabuf::sync_file::SyncFile;
use dmabuf::Error;
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::{MemfdFlags, SealFlags, SeekFrom};
use rustix::mm::{MapFlags, ProtFlags};
use std::process::{Command, Stdio};
use std::time::Duration;

const EINVAL: i32 = 22;
const EBADF: i32 = 9;
const EACCES: i32 = 13;
const EMFILE: i32 = 24;
const EOPNOTSUPP: i32 = 95;

fn errno<T>(r: Result<T, Error>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.errno(),
    }
}

fn page() -> usize {
    rustix::param::page_size()
}

fn sys(len: usize) -> DmaBuf {
    heaps()
        .alloc("system", &AllocData::new(len as u64))
        .unwrap()
}

fn pending(seqno: u64) -> Fence {
    dmabuf_sync::testing::named("fdtest", "fdtest", Context::new(), seqno)
}

/// Map `len` bytes of `fd` shared (read-only unless `write`), copy them out, unmap.
fn read_fd(fd: BorrowedFd<'_>, len: usize) -> Vec<u8> {
    // SAFETY: a fresh mapping chosen by the kernel; read within its length, then
    // unmapped; nothing else refers to it.
    unsafe {
        let p = rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ,
            MapFlags::SHARED,
            fd,
            0,
        )
        .unwrap();
        let v = std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec();
        rustix::mm::munmap(p, len).unwrap();
        v
    }
}

/// The buffer's bytes, read through a CPU access bracket and a vmap.
fn contents(b: &DmaBuf) -> Vec<u8> {
    let acc = b.cpu_access(Direction::FromDevice).unwrap();
    let v = b.vmap_unlocked().unwrap();
    let mut out = vec![0u8; b.size()];
    v.read_at(0, &mut out).unwrap();
    drop(v);
    acc.end().unwrap();
    out
}

fn fill(b: &DmaBuf, byte: u8) {
    let acc = b.cpu_access(Direction::ToDevice).unwrap();
    let v = b.vmap_unlocked().unwrap();
    v.write_at(0, &vec![byte; b.size()]).unwrap();
    drop(v);
    acc.end().unwrap();
}

// ---- fd and get in one process -----------------------------------------------------

#[test]
fn fd_flags_are_checked_as_the_kernel_does() {
    let b = sys(page());
    assert_eq!(errno(b.fd(0o4000)), EINVAL, "O_NONBLOCK");
    assert_eq!(errno(b.fd(O_RDWR | 0o100)), EINVAL, "O_CREAT");
    // Access mode 3, as open(2) takes it: a descriptor that can neither read nor write.
    let none = b.fd(3 | O_CLOEXEC).unwrap();
    assert_eq!(
        rustix::fs::fcntl_getfl(&none).unwrap() & rustix::fs::OFlags::ACCMODE,
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::WRONLY
    );
    // SAFETY: a mapping request that fails: nothing is mapped.
    let m = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            page(),
            ProtFlags::READ,
            MapFlags::SHARED,
            &none,
            0,
        )
    };
    assert_eq!(m.unwrap_err().raw_os_error(), EACCES);
    let ro = heaps()
        .alloc(
            "system",
            &AllocData {
                fd_flags: O_RDONLY | O_CLOEXEC,
                ..AllocData::new(page() as u64)
            },
        )
        .unwrap();
    assert_eq!(errno(ro.fd(O_RDWR)), EACCES, "write on a read-only buffer");
    assert_eq!(errno(ro.fd(1)), EACCES, "O_WRONLY on a read-only buffer");
    let fd = ro.fd(O_RDONLY | O_CLOEXEC).unwrap();
    assert_eq!(
        rustix::fs::fcntl_getfl(&fd).unwrap() & rustix::fs::OFlags::ACCMODE,
        rustix::fs::OFlags::RDONLY
    );
    // A read-only descriptor cannot be mapped shared-writable, by anyone.
    // SAFETY: a fresh mapping request; it fails, so nothing is mapped.
    let w = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            page(),
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            &fd,
            0,
        )
    };
    assert_eq!(w.unwrap_err().raw_os_error(), EACCES);
    // Close-on-exec exactly when asked.
    let c = b.fd(O_RDWR | O_CLOEXEC).unwrap();
    assert!(rustix::io::fcntl_getfd(&c)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC));
    let n = b.fd(O_RDWR).unwrap();
    assert!(!rustix::io::fcntl_getfd(&n)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC));
}

#[test]
fn get_in_the_exporting_process_is_the_same_buffer() {
    let b = sys(2 * page());
    b.set_name("frame").unwrap();
    let fd = b.fd(O_RDWR | O_CLOEXEC).unwrap();
    let refs = b.ref_count();
    let g = buf::get(fd.as_fd()).unwrap();
    assert!(DmaBuf::ptr_eq(&b, &g));
    assert!(std::sync::Arc::ptr_eq(b.resv(), g.resv()));
    assert_eq!(b.ref_count(), refs + 1);
    // A duplicate, a second descriptor, the raw number: all the same buffer.
    let fd2 = b.fd(O_RDWR).unwrap();
    assert!(DmaBuf::ptr_eq(&b, &buf::get(fd2.as_fd()).unwrap()));
    assert!(DmaBuf::ptr_eq(&b, &buf::get_raw(fd.as_raw_fd()).unwrap()));
    drop(g);
    assert_eq!(b.ref_count(), refs);
    assert!(b.fdinfo().contains(&format!("count:\t{refs}\n")));
    assert_eq!(
        buf::fdinfo(fd.as_fd()).unwrap(),
        format!(
            "size:\t{}\ncount:\t{}\nexp_name:\tsystem\nname:\tframe\n",
            2 * page(),
            refs
        )
    );
}

#[test]
fn the_descriptor_shows_the_buffer() {
    let b = sys(3 * page());
    fill(&b, 0x5a);
    let fd = b.fd(O_RDWR | O_CLOEXEC).unwrap();
    assert_eq!(
        rustix::fs::seek(&fd, SeekFrom::End(0)).unwrap(),
        (3 * page()) as u64
    );
    assert!(read_fd(fd.as_fd(), 3 * page()).iter().all(|&x| x == 0x5a));
    // Written through the descriptor, read through the buffer: zero copy.
    // SAFETY: a fresh shared mapping, written within its length, then unmapped.
    unsafe {
        let p = rustix::mm::mmap(
            std::ptr::null_mut(),
            page(),
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            &fd,
            page() as u64,
        )
        .unwrap();
        std::ptr::write_bytes(p.cast::<u8>(), 0xa5, page());
        rustix::mm::munmap(p, page()).unwrap();
    }
    let c = contents(&b);
    assert!(c[..page()].iter().all(|&x| x == 0x5a));
    assert!(c[page()..2 * page()].iter().all(|&x| x == 0xa5));
    // The size is invariant: nobody can truncate, grow or seal the file.
    assert!(rustix::fs::ftruncate(&fd, 0).is_err());
    assert!(rustix::fs::ftruncate(&fd, (8 * page()) as u64).is_err());
    assert!(rustix::fs::fcntl_add_seals(&fd, SealFlags::FUTURE_WRITE).is_err());
    // The file says what it is.
    let link =
        rustix::fs::readlink(format!("/proc/self/fd/{}", fd.as_raw_fd()), Vec::new()).unwrap();
    assert!(link.to_string_lossy().starts_with("/memfd:dmabuf:system"));
}

#[test]
fn get_refuses_what_is_not_a_dma_buf() {
    assert_eq!(errno(buf::get_raw(-1)), EBADF);
    // A number far beyond any descriptor table is never open.
    assert_eq!(errno(buf::get_raw(i32::MAX)), EBADF);
    let (r, w) = rustix::pipe::pipe().unwrap();
    assert_eq!(errno(buf::get(r.as_fd())), EINVAL, "pipe");
    assert_eq!(errno(buf::get(w.as_fd())), EINVAL, "pipe");
    let ev = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    assert_eq!(errno(buf::get(ev.as_fd())), EINVAL, "eventfd");
    let sf = SyncFile::new(pending(1)).unwrap();
    assert_eq!(errno(buf::get(sf.as_fd())), EINVAL, "sync file");
    sf.fence().signal().unwrap();
    let (s1, _s2) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    assert_eq!(errno(buf::get(s1.as_fd())), EINVAL, "socket");
    let null = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    assert_eq!(errno(buf::get(null.as_fd())), EINVAL, "character device");
    let dir = std::env::temp_dir().join(format!("dmabuf-fd-test-{}", std::process::id()));
    std::fs::write(&dir, vec![0u8; page()]).unwrap();
    let plain = std::fs::File::open(&dir).unwrap();
    std::fs::remove_file(&dir).unwrap();
    assert_eq!(errno(buf::get(plain.as_fd())), EINVAL, "plain file");
    // Memfds that are not ours: another name; our name without our seals; our name and
    // seals plus a write seal.
    let memfd = |name: &str, seals: SealFlags| {
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .unwrap();
        rustix::fs::ftruncate(&fd, page() as u64).unwrap();
        if !seals.is_empty() {
            rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
        }
        fd
    };
    let all = SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
    assert_eq!(errno(buf::get(memfd("other", all).as_fd())), EINVAL);
    assert_eq!(
        errno(buf::get(memfd("dmabuf:x\nname:\tforged", all).as_fd())),
        EINVAL,
        "control characters in the exporter's name"
    );
    let long = format!("dmabuf:{}", "e".repeat(65));
    assert_eq!(
        errno(buf::get(memfd(&long, all).as_fd())),
        EINVAL,
        "name too long"
    );
    assert_eq!(
        errno(buf::get(memfd("dmabuf:x", SealFlags::empty()).as_fd())),
        EINVAL
    );
    assert_eq!(
        errno(buf::get(memfd("dmabuf:x", SealFlags::SHRINK).as_fd())),
        EINVAL
    );
    assert_eq!(
        errno(buf::get(memfd("dmabuf:x", all | SealFlags::WRITE).as_fd())),
        EINVAL
    );
    assert_eq!(
        errno(buf::get(
            memfd("dmabuf:x", all | SealFlags::FUTURE_WRITE).as_fd()
        )),
        EINVAL
    );
    // One of ours made elsewhere (as another process's would be) imports.
    let b = buf::get(memfd("dmabuf:elsewhere", all).as_fd()).unwrap();
    assert_eq!((b.size(), b.exp_name()), (page(), "elsewhere"));
}

#[test]
fn buffers_without_one_file_have_no_descriptor() {
    // A udmabuf over part of a caller's memfd: no file is just the buffer.
    let m = rustix::fs::memfd_create("caller", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .unwrap();
    rustix::fs::ftruncate(&m, (4 * page()) as u64).unwrap();
    rustix::fs::fcntl_add_seals(&m, SealFlags::SHRINK).unwrap();
    let u = dmabuf::heap::udmabuf::create(m.as_fd(), page() as u64, page() as u64, 0).unwrap();
    assert_eq!(errno(u.fd(O_RDWR | O_CLOEXEC)), EOPNOTSUPP);
    assert_eq!(errno(buf::send(pair().0.as_fd(), &u, &[])), EOPNOTSUPP);
}

#[test]
fn contiguous_heap_buffers_have_descriptors_of_just_the_block() {
    let f = heaps().open("contig").unwrap();
    let mut d = AllocData::new(2 * page() as u64);
    let fd = f.alloc_fd(&mut d).unwrap();
    let b = buf::get(fd.as_fd()).unwrap();
    assert_eq!((b.size(), b.exp_name()), (2 * page(), "contig"));
    assert_eq!(
        rustix::fs::seek(&fd, SeekFrom::End(0)).unwrap(),
        (2 * page()) as u64
    );
    fill(&b, 0x6b);
    assert!(read_fd(fd.as_fd(), 2 * page()).iter().all(|&x| x == 0x6b));
    // The block's memory left: the next block is other memory, zero.
    drop(b);
    let c = f.alloc(&AllocData::new(2 * page() as u64)).unwrap();
    assert!(contents(&c).iter().all(|&x| x == 0));
    assert!(read_fd(fd.as_fd(), 2 * page()).iter().all(|&x| x == 0x6b));
}

#[test]
fn heap_uapi_returns_a_descriptor() {
    let f = heaps().open("system").unwrap();
    let mut d = AllocData::new(3 * page() as u64 - 7);
    let fd = f.alloc_fd(&mut d).unwrap();
    assert_eq!(d.fd as i32, fd.as_raw_fd());
    let b = buf::get(fd.as_fd()).unwrap();
    assert_eq!((b.size(), b.exp_name()), (3 * page(), "system"));
    assert!(read_fd(fd.as_fd(), b.size()).iter().all(|&x| x == 0));
    // The ioctl form writes the number back into the struct.
    let mut arg = AllocData::new(page() as u64).to_bytes();
    let fd2 = f
        .ioctl_fd(dmabuf::heap::DMA_HEAP_IOCTL_ALLOC, &mut arg)
        .unwrap();
    assert_eq!(
        u32::from_ne_bytes(arg[8..12].try_into().unwrap()) as i32,
        fd2.as_raw_fd()
    );
    assert!(rustix::io::fcntl_getfd(&fd2)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC));
    // Bad input: the kernel's errnos, the struct unchanged.
    let mut bad = AllocData {
        fd_flags: 0o4000,
        ..AllocData::new(page() as u64)
    };
    assert_eq!(errno(f.alloc_fd(&mut bad)), EINVAL);
    assert_eq!(bad.fd, 0);
    let mut bad = AllocData {
        fd: 5,
        ..AllocData::new(page() as u64)
    };
    assert_eq!(errno(f.alloc_fd(&mut bad)), EINVAL);
    assert_eq!(bad.fd, 5);
}

#[test]
fn emfile_while_handing_out_changes_nothing() {
    let h = SystemHeap::new("fd-emfile");
    let b = h.allocate(page(), FileFlags::RDWR, 0).unwrap();
    fault::fail_next(Site::Fd, rustix::io::Errno::MFILE);
    assert_eq!(errno(b.fd(O_RDWR | O_CLOEXEC)), EMFILE);
    // Nothing left: the memory still recycles, as a buffer that never had a fd.
    drop(b);
    assert_eq!(h.pool().pooled_bytes(), page());
    // An import that cannot duplicate the descriptor: EMFILE, no buffer made.
    let b = h.allocate(page(), FileFlags::RDWR, 0).unwrap();
    let fd = b.fd(O_RDWR | O_CLOEXEC).unwrap();
    drop(b);
    fault::fail_next(Site::Dup, rustix::io::Errno::MFILE);
    assert_eq!(errno(buf::get(fd.as_fd())), EMFILE);
    // Nothing was listed: the next get imports afresh, and is then found again.
    let g = buf::get(fd.as_fd()).unwrap();
    assert_eq!(g.size(), page());
    assert!(DmaBuf::ptr_eq(&g, &buf::get(fd.as_fd()).unwrap()));
}

// ---- memory safety across holders --------------------------------------------------

#[test]
fn the_files_mode_is_the_buffers() {
    let mode = |fd: &OwnedFd| rustix::fs::fstat(fd).unwrap().st_mode & 0o777;
    let rw = sys(page());
    assert_eq!(mode(&rw.fd(O_RDWR | O_CLOEXEC).unwrap()), 0o600);
    let ro = heaps()
        .alloc(
            "system",
            &AllocData {
                fd_flags: O_RDONLY,
                ..AllocData::new(page() as u64)
            },
        )
        .unwrap();
    let fd = ro.fd(O_RDONLY | O_CLOEXEC).unwrap();
    assert_eq!(mode(&fd), 0o400);
    let imported = buf::get(fd.as_fd()).unwrap();
    assert!(DmaBuf::ptr_eq(&imported, &ro));
}

#[test]
fn memory_another_object_holds_is_never_recycled() {
    // A second object of a buffer's file behind its back (a udmabuf of a segment's
    // memfd): the buffer's memory must not go back to the pool while it lives.
    let h = SystemHeap::new("fd-udmabuf-alias");
    let x = h.allocate(2 * page(), FileFlags::RDWR, 0).unwrap();
    fill(&x, 0x31);
    let dev = Device::new("alias", u32::MAX as u64, true, false).unwrap();
    let att = x.attach(&dev).unwrap();
    let m = att.map_unlocked(Direction::Bidirectional).unwrap();
    let seg = m.table().segments().next().unwrap().mem.clone();
    let u = dmabuf::heap::udmabuf::create(seg.fd(), 0, (2 * page()) as u64, 0).unwrap();
    drop((m, att, seg, x));
    assert_eq!(h.pool().pooled_bytes(), 0, "another object holds the file");
    let y = h.allocate(2 * page(), FileFlags::RDWR, 0).unwrap();
    assert!(contents(&y).iter().all(|&b| b == 0));
    fill(&y, 0x77);
    assert!(
        contents(&u).iter().all(|&b| b == 0x31),
        "the alias never sees y's data"
    );
}

#[test]
fn a_refused_message_changes_no_buffer() {
    let b = sys(page());
    let (a, c) = pair();
    let bfd = b.fd(O_RDWR | O_CLOEXEC).unwrap();
    let (r, _w) = rustix::pipe::pipe().unwrap();
    // The exporter's own buffer, a name, and a pipe where a fence should be.
    dmabuf::sync_file::send_fds(a.as_fd(), b"DBF1evil", &[bfd.as_fd(), r.as_fd()]).unwrap();
    assert_eq!(errno(buf::recv(c.as_fd())), EINVAL);
    assert_eq!(b.name(), None, "not renamed");
    // A name over 31 bytes is refused too.
    let mut long = b"DBF1".to_vec();
    long.extend_from_slice(&[b'n'; 40]);
    dmabuf::sync_file::send_fds(a.as_fd(), &long, &[bfd.as_fd()]).unwrap();
    assert_eq!(errno(buf::recv(c.as_fd())), EINVAL);
    assert_eq!(b.name(), None);
}

#[test]
fn memory_that_left_as_a_descriptor_is_never_recycled() {
    let h = SystemHeap::new("fd-recycle");
    let a = h.allocate(4 * page(), FileFlags::RDWR, 0).unwrap();
    fill(&a, 0x77);
    let kept = a.fd(O_RDWR | O_CLOEXEC).unwrap();
    drop(a);
    assert_eq!(h.pool().pooled_bytes(), 0, "a shared memfd is not pooled");
    // The next buffer of that size is new memory: zero, and private to it.
    let b = h.allocate(4 * page(), FileFlags::RDWR, 0).unwrap();
    assert!(contents(&b).iter().all(|&x| x == 0));
    fill(&b, 0x11);
    assert!(read_fd(kept.as_fd(), 4 * page()).iter().all(|&x| x == 0x77));
    // A buffer that never had a descriptor is recycled, zeroed.
    drop(b);
    assert_eq!(h.pool().pooled_bytes(), 4 * page());
    let c = h.allocate(4 * page(), FileFlags::RDWR, 0).unwrap();
    assert!(contents(&c).iter().all(|&x| x == 0));
    // The descriptor outlives the buffer object: get makes a new one over the memory.
    let again = buf::get(kept.as_fd()).unwrap();
    assert!(contents(&again).iter().all(|&x| x == 0x77));
}

// ---- across processes ----------------------------------------------------------------

/// Run this binary again as the peer `role`, with `sock` as its standard input.
fn spawn_peer(role: &str, sock: OwnedFd) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "peer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DMABUF_FD_PEER", role)
        .stdin(Stdio::from(sock))
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn pair() -> (OwnedFd, OwnedFd) {
    rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap()
}

/// The peer's side, when run by `spawn_peer`; a no-op otherwise.
#[test]
#[ignore = "run by the other tests as their peer process"]
fn peer() {
    let Ok(role) = std::env::var("DMABUF_FD_PEER") else {
        return;
    };
    // SAFETY: standard input is the socket the parent gave us; owned from here on.
    let sock = unsafe { <OwnedFd as rustix::fd::FromRawFd>::from_raw_fd(0) };
    let code = match role.as_str() {
        "consumer" => consumer(sock.as_fd()),
        "name" => {
            let r = buf::recv(sock.as_fd()).unwrap();
            let fd = r.buf.fd(O_RDWR | O_CLOEXEC).unwrap();
            // The name in the file (not the message): a fresh get of another file
            // would read it the same way.
            let n = r.buf.name().unwrap_or_default();
            rustix::io::write(&sock, n.as_bytes()).unwrap();
            drop(fd);
            0
        }
        "die" => {
            // Receive, then die without signalling the fence we promised.
            let r = buf::recv(sock.as_fd()).unwrap();
            let mine = pending(1);
            let sf = SyncFile::new(mine.clone()).unwrap();
            buf::send(sock.as_fd(), &r.buf, &[&sf]).unwrap();
            std::process::exit(3)
        }
        "inherit" => {
            // Standard input is the buffer's descriptor itself, inherited over
            // fork + exec; standard output our answer.
            let b = buf::get_raw(0).unwrap();
            let ok = b.exp_name() == "system" && contents(&b).iter().all(|&x| x == 0x42);
            fill(&b, 0x24);
            if ok {
                0
            } else {
                1
            }
        }
        "fork" => {
            // A buffer received, then a fork without exec: the child's get of the
            // inherited descriptor gives its copy of the same buffer, over the same
            // memory; its write is seen here.
            let r = buf::recv(sock.as_fd()).unwrap();
            let fd = r.buf.fd(O_RDWR | O_CLOEXEC).unwrap();
            // SAFETY: this process runs one test on one thread; the child only makes
            // system calls and the buffer calls below, then `_exit`s.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let code = match buf::get(fd.as_fd()) {
                    Ok(c) if DmaBuf::ptr_eq(&c, &r.buf) => {
                        fill(&c, 0x99);
                        0
                    }
                    _ => 1,
                };
                // SAFETY: leaving the forked child without running the parent's
                // destructors or atexit handlers.
                unsafe { libc::_exit(code) }
            }
            let mut st = 0;
            // SAFETY: waiting for the child just forked.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            let ok = libc::WIFEXITED(st)
                && libc::WEXITSTATUS(st) == 0
                && contents(&r.buf).iter().all(|&x| x == 0x99);
            rustix::io::write(&sock, if ok { b"K" } else { b"?" }).unwrap();
            0
        }
        "emfile" => {
            // Nearly out of descriptors: the receive fails EMFILE, no hang, no leak.
            let mut held = Vec::new();
            while let Ok(fd) = rustix::io::fcntl_dupfd_cloexec(&sock, 0) {
                held.push(fd);
            }
            // Room for one descriptor: the message brings three.
            drop(held.pop());
            let r = buf::recv(sock.as_fd());
            drop(held);
            let verdict: &[u8] = if errno(r) == EMFILE { b"E" } else { b"?" };
            rustix::io::write(&sock, verdict).unwrap();
            0
        }
        _ => 2,
    };
    std::process::exit(code);
}

/// Receive a buffer and a fence; wait; check the producer's bytes; attach to a
/// device of our own and read it there too; write our answer; send it back with our
/// fence, signalled after the write.
fn consumer(sock: BorrowedFd<'_>) -> i32 {
    let r = buf::recv(sock).unwrap();
    let b = r.buf;
    if b.exp_name() != "system" || b.name().as_deref() != Some("shared") {
        return 10;
    }
    r.fences[0]
        .fence()
        .wait_timeout(Duration::from_secs(10))
        .unwrap();
    if !contents(&b).iter().all(|&x| x == 0x3c) {
        return 11;
    }
    let dev = Device::new("peer-dev", u32::MAX as u64, false, false).unwrap();
    let att = b.attach(&dev).unwrap();
    let m = att.map_unlocked(Direction::FromDevice).unwrap();
    if m.table().is_empty() {
        return 12;
    }
    drop(m);
    drop(att);
    let done = pending(7);
    let sf = SyncFile::new(done.clone()).unwrap();
    buf::send(sock, &b, &[&sf]).unwrap();
    fill(&b, 0xc3);
    done.signal().unwrap();
    // Wait for the parent to hang up.
    let mut x = [0u8; 1];
    let _ = rustix::io::read(sock, &mut x);
    0
}

#[test]
fn a_buffer_and_its_fences_cross_to_another_process() {
    let (mine, theirs) = pair();
    let mut child = spawn_peer("consumer", theirs);
    let b = sys(8 * page());
    b.set_name("shared").unwrap();
    let ready = pending(1);
    let sf = SyncFile::new(ready.clone()).unwrap();
    // Sent mid-CPU-access and with the fence pending: the fence orders the peer.
    let acc = b.cpu_access(Direction::ToDevice).unwrap();
    buf::send(mine.as_fd(), &b, &[&sf]).unwrap();
    let v = b.vmap_unlocked().unwrap();
    v.write_at(0, &vec![0x3c; b.size()]).unwrap();
    drop(v);
    acc.end().unwrap();
    ready.signal().unwrap();
    // Back: the same buffer object, and the peer's fence.
    let back = buf::recv(mine.as_fd()).unwrap();
    assert!(DmaBuf::ptr_eq(&back.buf, &b));
    back.fences[0]
        .fence()
        .wait_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(back.fences[0].fence().get_status(), 1);
    assert!(contents(&b).iter().all(|&x| x == 0xc3), "the peer's write");
    drop(mine);
    assert!(child.wait().unwrap().success());
}

#[test]
fn the_descriptor_is_inherited_over_fork_and_exec() {
    let b = sys(2 * page());
    fill(&b, 0x42);
    // Not close-on-exec: the child gets it as its standard input.
    let fd = b.fd(O_RDWR).unwrap();
    let st = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "peer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DMABUF_FD_PEER", "inherit")
        .stdin(Stdio::from(fd))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert!(contents(&b).iter().all(|&x| x == 0x24), "the child's write");
}

#[test]
fn a_forked_child_shares_the_buffer() {
    let (mine, theirs) = pair();
    let mut child = spawn_peer("fork", theirs);
    let b = sys(page());
    buf::send(mine.as_fd(), &b, &[]).unwrap();
    let mut v = [0u8; 1];
    assert_eq!(rustix::io::read(&mine, &mut v).unwrap(), 1);
    assert_eq!(&v, b"K");
    assert!(child.wait().unwrap().success());
    assert!(
        contents(&b).iter().all(|&x| x == 0x99),
        "the grandchild's write"
    );
}

#[test]
fn concurrent_imports_of_one_file_give_one_buffer() {
    for _ in 0..20 {
        let fd = rustix::fs::memfd_create(
            "dmabuf:race",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .unwrap();
        rustix::fs::ftruncate(&fd, page() as u64).unwrap();
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .unwrap();
        let fd = std::sync::Arc::new(fd);
        let got: Vec<DmaBuf> = (0..4)
            .map(|_| {
                let fd = fd.clone();
                std::thread::spawn(move || buf::get(fd.as_fd()).unwrap())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert!(got.iter().all(|g| DmaBuf::ptr_eq(g, &got[0])));
    }
}

#[test]
fn a_buffer_with_pending_implicit_fences_can_be_sent() {
    // The importer has its own reservation object: implicit fences stay here, and the
    // order across processes is the sync file sent beside the buffer.
    let b = sys(page());
    let f = pending(1);
    b.import_sync_fence(sync_flags::WRITE, &f).unwrap();
    assert_eq!(b.poll(), (false, false));
    let (a, c) = pair();
    buf::send(a.as_fd(), &b, &[]).unwrap();
    let r = buf::recv(c.as_fd()).unwrap();
    assert!(
        DmaBuf::ptr_eq(&r.buf, &b),
        "same process: same object, same fences"
    );
    assert_eq!(r.buf.poll(), (false, false));
    f.signal().unwrap();
    assert_eq!(b.poll(), (true, true));
}

#[test]
fn the_name_crosses_in_the_file() {
    let (mine, theirs) = pair();
    let mut child = spawn_peer("name", theirs);
    let b = sys(page());
    let fd = b.fd(O_RDWR | O_CLOEXEC).unwrap();
    // Set after the descriptor left: the file carries it.
    b.set_name("late-name").unwrap();
    let msg_name = b.name();
    assert_eq!(msg_name.as_deref(), Some("late-name"));
    buf::send(mine.as_fd(), &b, &[]).unwrap();
    let mut got = [0u8; 32];
    let n = rustix::io::read(&mine, &mut got).unwrap();
    assert_eq!(&got[..n], b"late-name");
    drop(fd);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_peer_that_dies_is_an_error_not_a_hang() {
    let (mine, theirs) = pair();
    let mut child = spawn_peer("die", theirs);
    let b = sys(page());
    let sf = SyncFile::new(pending(1)).unwrap();
    sf.fence().signal().unwrap();
    buf::send(mine.as_fd(), &b, &[&sf]).unwrap();
    let back = buf::recv(mine.as_fd()).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(3));
    // Its fence signals with -EPIPE once it is gone, and the socket says end of file.
    back.fences[0]
        .fence()
        .wait_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(back.fences[0].fence().get_status(), -32);
    assert!(matches!(buf::recv(mine.as_fd()), Err(Error::NoEntry(_))));
    // Dying before sending anything: end of file at once.
    let (mine, theirs) = pair();
    drop(theirs);
    assert!(matches!(buf::recv(mine.as_fd()), Err(Error::NoEntry(_))));
}

#[test]
fn emfile_while_receiving() {
    let (mine, theirs) = pair();
    let mut child = spawn_peer("emfile", theirs);
    let b = sys(page());
    let sf = SyncFile::new(pending(1)).unwrap();
    sf.fence().signal().unwrap();
    buf::send(mine.as_fd(), &b, &[&sf]).unwrap();
    let mut v = [0u8; 1];
    assert_eq!(rustix::io::read(&mine, &mut v).unwrap(), 1);
    assert_eq!(&v, b"E", "the peer saw EMFILE");
    assert!(child.wait().unwrap().success());
}

#[test]
fn bad_messages_are_refused() {
    let (a, b) = pair();
    // A plain descriptor message is not a buffer message.
    dmabuf::sync_file::send_fds(a.as_fd(), b"nope", &[]).unwrap();
    assert_eq!(errno(buf::recv(b.as_fd())), EINVAL);
    // A buffer message whose descriptor is not a buffer.
    let (r, _w) = rustix::pipe::pipe().unwrap();
    dmabuf::sync_file::send_fds(a.as_fd(), b"DBF1", &[r.as_fd()]).unwrap();
    assert_eq!(errno(buf::recv(b.as_fd())), EINVAL);
    // Too many fences for one message.
    let fences: Vec<SyncFile> = (0..dmabuf::sync_file::MAX_FDS)
        .map(|i| {
            let f = pending(i as u64 + 1);
            f.signal().unwrap();
            SyncFile::new(f).unwrap()
        })
        .collect();
    let refs: Vec<&SyncFile> = fences.iter().collect();
    assert_eq!(errno(buf::send(a.as_fd(), &sys(page()), &refs)), EINVAL);
    // Sending to a closed peer: EPIPE. (A child another test forks at this moment may
    // hold a copy of `b` until it execs: the EPIPE comes once that copy is gone.)
    drop(b);
    let buf = sys(page());
    let mut e = 0;
    for _ in 0..500 {
        e = errno(buf::send(a.as_fd(), &buf, &[]));
        if e != 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(e, 32);
}

#[test]
fn the_descriptors_ioctls_are_the_kernels() {
    use dmabuf::buf::ioctl_nr;
    assert_eq!(ioctl_nr::SYNC, 0x4008_6200);
    assert_eq!(ioctl_nr::SET_NAME_A, 0x4004_6201);
    assert_eq!(ioctl_nr::SET_NAME_B, 0x4008_6201);
    assert_eq!(ioctl_nr::EXPORT_SYNC_FILE, 0xc008_6202);
    assert_eq!(ioctl_nr::IMPORT_SYNC_FILE, 0x4008_6203);
    let b = sys(page());
    let fd = b.fd(O_RDWR | O_CLOEXEC).unwrap();
    let fd = fd.as_fd();
    // SYNC: start/end; bad flags EINVAL; short argument EFAULT; unknown ENOTTY.
    let mut f = (sync_flags::READ | sync_flags::WRITE).to_ne_bytes();
    assert_eq!(buf::ioctl(fd, ioctl_nr::SYNC, &mut f).unwrap(), 0);
    let mut f = (sync_flags::RW | sync_flags::END).to_ne_bytes();
    assert_eq!(buf::ioctl(fd, ioctl_nr::SYNC, &mut f).unwrap(), 0);
    let mut f = 8u64.to_ne_bytes();
    assert_eq!(errno(buf::ioctl(fd, ioctl_nr::SYNC, &mut f)), EINVAL);
    let mut f = 0u64.to_ne_bytes();
    assert_eq!(
        errno(buf::ioctl(fd, ioctl_nr::SYNC, &mut f)),
        EINVAL,
        "no READ/WRITE"
    );
    assert_eq!(errno(buf::ioctl(fd, ioctl_nr::SYNC, &mut [1u8; 4])), 14);
    assert_eq!(errno(buf::ioctl(fd, 0x4008_62ff, &mut [0u8; 8])), 25);
    // SET_NAME, both numbers; 32 bytes without a NUL is EINVAL and changes nothing.
    assert_eq!(
        buf::ioctl(fd, ioctl_nr::SET_NAME_A, &mut b"cam0\0".to_vec()).unwrap(),
        0
    );
    assert_eq!(b.name().as_deref(), Some("cam0"));
    buf::ioctl(fd, ioctl_nr::SET_NAME_B, &mut b"cam1\0junk".to_vec()).unwrap();
    assert_eq!(b.name().as_deref(), Some("cam1"));
    let mut long = vec![b'x'; 32];
    assert_eq!(
        errno(buf::ioctl(fd, ioctl_nr::SET_NAME_A, &mut long)),
        EINVAL
    );
    assert_eq!(b.name().as_deref(), Some("cam1"));
    // EXPORT_SYNC_FILE with a pending writer: a pending sync file, owned by the caller.
    let w = pending(1);
    b.import_sync_fence(sync_flags::WRITE, &w).unwrap();
    let mut arg = [0u8; 8];
    arg[..4].copy_from_slice(&(sync_flags::READ as u32).to_ne_bytes());
    buf::ioctl(fd, ioctl_nr::EXPORT_SYNC_FILE, &mut arg).unwrap();
    let n = i32::from_ne_bytes(arg[4..8].try_into().unwrap());
    // SAFETY: the ioctl handed us this new descriptor; owned from here on.
    let sf =
        SyncFile::from_fd(unsafe { <OwnedFd as rustix::fd::FromRawFd>::from_raw_fd(n) }).unwrap();
    assert!(rustix::io::fcntl_getfd(sf.as_fd())
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC));
    assert!(!sf.poll());
    let mut bad = [0u8; 8];
    assert_eq!(
        errno(buf::ioctl(fd, ioctl_nr::EXPORT_SYNC_FILE, &mut bad)),
        EINVAL
    );
    assert_eq!(bad, [0u8; 8], "unchanged on error");
    w.signal().unwrap();
    assert!(sf.fence().wait_timeout(Duration::from_secs(5)).is_ok());
    // IMPORT_SYNC_FILE: a sync file's fence joins the buffer's; a pipe is EINVAL.
    let r = pending(2);
    let rsf = SyncFile::new(r.clone()).unwrap();
    let mut arg = [0u8; 8];
    arg[..4].copy_from_slice(&(sync_flags::WRITE as u32).to_ne_bytes());
    arg[4..].copy_from_slice(&rsf.as_fd().as_raw_fd().to_ne_bytes());
    buf::ioctl(fd, ioctl_nr::IMPORT_SYNC_FILE, &mut arg).unwrap();
    assert_eq!(b.poll(), (false, false));
    r.signal().unwrap();
    assert_eq!(b.poll(), (true, true));
    let (pr, _pw) = rustix::pipe::pipe().unwrap();
    arg[4..].copy_from_slice(&pr.as_raw_fd().to_ne_bytes());
    assert_eq!(
        errno(buf::ioctl(fd, ioctl_nr::IMPORT_SYNC_FILE, &mut arg)),
        EINVAL
    );
    arg[4..].copy_from_slice(&i32::MAX.to_ne_bytes());
    assert_eq!(
        errno(buf::ioctl(fd, ioctl_nr::IMPORT_SYNC_FILE, &mut arg)),
        EINVAL
    );
    // Not a dma-buf: ENOTTY, as the file's own ioctl would say; not open: EBADF.
    assert_eq!(
        errno(buf::ioctl(pr.as_fd(), ioctl_nr::SYNC, &mut [1u8; 8])),
        25
    );
}

#[test]
fn a_sync_file_received_with_its_liveness_reads_epipe_when_its_signaller_dies() {
    // recv_sync_file: recv_fd and from_fd in one, the liveness descriptor handed
    // straight to the proxy.
    let (mine, theirs) = pair();
    let mut child = spawn_peer("die", theirs);
    let b = sys(page());
    buf::send(mine.as_fd(), &b, &[]).unwrap();
    // The peer answers with a buf::send of the buffer and a fence it never signals.
    let (payload, mut fds) = dmabuf::sync_file::recv_message(mine.as_fd()).unwrap();
    assert!(payload.starts_with(b"DBF1"));
    assert_eq!(fds.len(), 2);
    let sf = fds.pop().unwrap().into_sync_file().unwrap();
    let bfd = fds.pop().unwrap().into_fd();
    assert!(DmaBuf::ptr_eq(&buf::get(bfd.as_fd()).unwrap(), &b));
    assert_eq!(child.wait().unwrap().code(), Some(3));
    sf.fence().wait_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(sf.fence().get_status(), -32);
}

#[test]
fn recv_sync_file_refuses_what_is_not_a_sync_file() {
    let (a, b) = pair();
    let (r, _w) = rustix::pipe::pipe().unwrap();
    dmabuf::sync_file::send_fd(a.as_fd(), r.as_fd()).unwrap();
    assert_eq!(
        errno(dmabuf::sync_file::recv_sync_file(b.as_fd())),
        EINVAL,
        "a pipe"
    );
    // A real one imports, signalled as sent.
    let f = pending(9);
    f.signal().unwrap();
    let sf = SyncFile::new(f).unwrap();
    dmabuf::sync_file::send_fd(a.as_fd(), sf.as_fd()).unwrap();
    let got = dmabuf::sync_file::recv_sync_file(b.as_fd()).unwrap();
    assert_eq!(got.fence().get_status(), 1);
    // The peer gone: end of file, not a hang.
    drop(a);
    assert!(matches!(
        dmabuf::sync_file::recv_sync_file(b.as_fd()),
        Err(Error::NoEntry(_))
    ));
}
