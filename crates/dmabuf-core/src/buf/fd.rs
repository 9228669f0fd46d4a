//! Buffers as file descriptors: [`DmaBuf::fd`] (`dma_buf_fd`), [`get`] (`dma_buf_get`),
//! [`fdinfo`], and [`send`] / [`recv`] of a buffer with its fences in one message.
//!
//! # The descriptor
//!
//! A buffer whose memory is one whole memfd of ours ([`Exporter::file`](super::Exporter::file):
//! every system-heap and contiguous-heap buffer, every buffer that came in as a
//! descriptor) *is* that memfd:
//! its descriptors are descriptors of the file, so what userspace sees of them is the
//! buffer:
//!
//! - `mmap` of the descriptor maps the buffer's bytes (`MAP_SHARED`: zero copy, in any
//!   process); `lseek(SEEK_END)` gives the size; the size never changes (the memfd is
//!   sealed against shrinking and growing, and against further seals, so no holder can
//!   truncate it under another's mapping or seal it against writing);
//! - it crosses `SCM_RIGHTS` and `fork` like any descriptor; in the other process
//!   [`get`] gives a buffer over the same memory;
//! - the memfd is named `dmabuf:<exp_name>`, so `/proc/<pid>/fd/<n>` and
//!   `/proc/<pid>/maps` read `/memfd:dmabuf:<exp_name> (deleted)` where the kernel's
//!   read `/dmabuf:<name>`; the user-set name travels in the file's extended attribute
//!   `user.dmabuf.name` (kept up to date by [`DmaBuf::set_name`] once a descriptor has
//!   left), and in [`send`]'s message;
//! - [`fdinfo`] gives the kernel's `/proc/<pid>/fdinfo` lines for a buffer (`size`,
//!   `count`, `exp_name`, `name`): the procfs file itself is the memfd's and has none
//!   of them.
//!
//! Memory a descriptor has left with is never recycled: the memfd is marked
//! [shared](dmabuf_mem::memfd::Memfd::mark_shared) before the descriptor is made, and a
//! pool never takes a shared memfd back. It is freed when the last holder anywhere (a
//! descriptor, a mapping, a buffer object in any process) goes away.
//!
//! # Identity
//!
//! In the process that made the descriptor, [`get`] returns the same buffer object
//! (same reservation object, one more reference), found by the file's identity
//! (`st_dev`, `st_ino`) in a table of buffers whose descriptors left. In another
//! process the first [`get`] of the file makes a buffer over the same memory (exported
//! there by a [`MemoryExporter`] with the file as its backing), with the size, the
//! exporter's name and the name; later gets of the same file there return that one.
//!
//! # Differences from the kernel
//!
//! - The descriptor does not hold a reference to the buffer *object*: the object (its
//!   reservation object, attachments, fences) is released when its last Rust handle
//!   goes, even while descriptors of it are open; the memory stays while any holder
//!   does, and a later [`get`] of such a descriptor makes a new object over it.
//! - A buffer imported in another process has its own reservation object: implicit
//!   sync does not cross processes. Cross-process ordering is explicit — sync files sent
//!   with the buffer ([`send`]), as Vulkan and Wayland explicit sync do.
//! - The descriptor's file is a memfd, so `read(2)`/`write(2)` work on it (the kernel's
//!   dma-buf refuses `read` with `EINVAL`); `lseek` accepts any offset; its fdinfo is
//!   the memfd's (use [`fdinfo`]).
//! - A buffer whose memory is not one whole memfd (a udmabuf over a caller's memfd
//!   ranges, an exporter without a file) has no descriptor: [`DmaBuf::fd`] returns
//!   `EOPNOTSUPP`.
//! - The dma-buf ioctls are calls ([`ioctl`] takes the uapi's numbers and argument
//!   layouts); `ioctl(2)` on the descriptor itself is the memfd's (`ENOTTY`). `poll(2)`
//!   on it is always ready: poll the buffer ([`DmaBuf::poll`]).
//! - A memfd can be reopened through `/proc/<pid>/fd`: the file's permission bits are
//!   narrowed to the buffer's access mode at the first descriptor, which stops other
//!   users' and unprivileged reopens beyond it, but not root's; a narrower descriptor of
//!   a read-write buffer is no boundary against a process of the same user.
//! - Capacity: a contiguous-heap block whose descriptor left gives its run back to the
//!   region when this process's buffer object is released, while other holders keep
//!   the memory; the region counts what this process's objects hold (so descriptors
//!   from the heaps' `alloc_fd`, which keep no object, never exhaust it,
//!   where the kernel's CMA heap would say `ENOMEM`). An import has the default rules
//!   of its exporter: a contiguous buffer imported elsewhere maps privately too (the
//!   CMA heap refuses that with `EINVAL`).
//! - Identity holds for descriptors of the buffer's file from [`DmaBuf::fd`]: another
//!   descriptor of the same memory reached another way (a segment's memfd through a
//!   mapping's table) imports as a new buffer object over it.

use super::dmabuf::BufInner;
use super::memory::{Backing, MemoryExporter, Rules};
use super::{export, DmaBuf, ExportInfo, FileFlags, Segment, NAME_MAX};
use crate::error::{Error, Result};
use crate::fault::{self, Site};
use crate::sync_file::{self, SyncFile};
use dmabuf_mem::memfd::{Memfd, SEALS};
use parking_lot::Mutex;
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use rustix::fs::{FileType, OFlags, SealFlags};
use rustix::io::Errno;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// `O_ACCMODE`.
const O_ACCMODE: u32 = 0o3;
/// `O_CLOEXEC`.
const O_CLOEXEC: u32 = 0o2_000_000;
/// The flags [`DmaBuf::fd`] accepts: `O_CLOEXEC` and an access mode.
pub const FD_VALID_FLAGS: u32 = O_CLOEXEC | O_ACCMODE;

/// The memfd name prefix that marks a file as a buffer of ours.
pub(crate) const NAME_PREFIX: &str = "dmabuf:";
/// The extended attribute holding the user-set name.
const XATTR_NAME: &str = "user.dmabuf.name";
/// Longest exporter name an imported file may carry (no control characters either, so
/// that it cannot forge lines of fdinfo or bufinfo).
const EXP_NAME_MAX: usize = 64;
/// `TMPFS_MAGIC`: memfds live on shmem.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Buffers by the identity `(st_dev, st_ino)` of their file.
type FileTable = HashMap<(u64, u64), Weak<BufInner>>;

/// Buffers whose descriptors left (or that came in as one), by file identity. A leaf
/// lock, held only to look up, insert or remove.
fn by_file() -> &'static Mutex<FileTable> {
    static R: std::sync::OnceLock<Mutex<FileTable>> = std::sync::OnceLock::new();
    R.get_or_init(Default::default)
}

/// Forget `inner`'s file, if it is the one listed (called as the buffer is released).
pub(super) fn unlist(key: (u64, u64), inner: *const BufInner) {
    let mut t = by_file().lock();
    if t.get(&key).is_some_and(|w| std::ptr::eq(w.as_ptr(), inner)) {
        t.remove(&key);
    }
}

/// Write `name` into the file's attribute (remove it for `None`). Best effort: a file
/// system without user attributes keeps the name in this process (and in [`send`]'s
/// messages) only.
pub(super) fn write_name_attr(file: &Memfd, name: Option<&str>) {
    let r = match name {
        Some(n) => rustix::fs::fsetxattr(
            file.fd(),
            XATTR_NAME,
            n.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        ),
        None => match rustix::fs::fremovexattr(file.fd(), XATTR_NAME) {
            Err(Errno::NODATA) => Ok(()),
            r => r,
        },
    };
    if let Err(e) = r {
        tracing::debug!("dma-buf name not stored in the file: {e}");
    }
}

/// The name stored in the file's attribute, if any (and valid).
fn read_name_attr(fd: BorrowedFd<'_>) -> Option<String> {
    let mut b = [0u8; NAME_MAX + 1];
    let n = rustix::fs::fgetxattr(fd, XATTR_NAME, &mut b).ok()?;
    if n > NAME_MAX {
        return None;
    }
    let s = std::str::from_utf8(&b[..n]).ok()?;
    (!s.contains('\0')).then(|| s.to_string())
}

impl DmaBuf {
    /// A new descriptor of the buffer (`dma_buf_fd`), close-on-exec with `O_CLOEXEC`.
    /// The descriptor's file is the buffer's (see the module docs): `mmap` of it shows
    /// the buffer's bytes, `lseek(SEEK_END)` gives the size, and it may be sent to other
    /// processes, where [`get`] turns it back into a buffer over the same memory.
    ///
    /// The access mode in `flags` says what the descriptor may do: `O_RDWR` needs a
    /// read-write buffer, `O_WRONLY` a writable one, `O_RDONLY` (0) a readable one (a
    /// shared writable `mmap` of a read-only descriptor fails with `EACCES`), and
    /// `O_ACCMODE` (3) gives a descriptor that can neither read nor write, as `open(2)`
    /// does. A read-write buffer is thus shared read-write with `O_RDWR | O_CLOEXEC`, as
    /// the kernel's heaps hand out their buffers.
    ///
    /// From the first descriptor on, the buffer's memory is never reused for another
    /// buffer, the buffer's name is kept in the file (for other processes), and the
    /// file's permission bits are the buffer's access mode for its owner (`0600` for a
    /// read-write buffer, `0400` for a read-only one), so that a holder of a descriptor
    /// cannot reopen it through `/proc` for more than the buffer allows — except a
    /// process that may override file permissions (root): unlike the kernel's dma-buf, a
    /// memfd can be reopened. A narrower descriptor of a read-write buffer is thus no
    /// security boundary against processes of the same user.
    ///
    /// Takes no reservation lock; any thread.
    ///
    /// # Errors
    ///
    /// `Invalid` for flags outside `O_CLOEXEC | O_ACCMODE`; `Access` for an access mode
    /// the buffer's own does not allow; `EOPNOTSUPP` (`Os`) when the buffer's memory is
    /// not one file ([`Exporter::file`](super::Exporter::file): udmabuf, an exporter
    /// without a file); descriptor exhaustion (`EMFILE`, `ENFILE`) and `fstat`/`open`
    /// errors as `Os`; an injected [`Site::Fd`] fault. Nothing changes on error (the
    /// descriptor is made before the buffer is marked shared).
    pub fn fd(&self, flags: u32) -> Result<OwnedFd> {
        if flags & !FD_VALID_FLAGS != 0 {
            return Err(Error::Invalid(
                "dma-buf fd flags outside O_CLOEXEC | O_ACCMODE",
            ));
        }
        let acc = flags & O_ACCMODE;
        let (read, write) = match acc {
            0 => (true, false),
            1 => (false, true),
            2 => (true, true),
            _ => (false, false),
        };
        let mine = self.inner.flags;
        if (read && !mine.read) || (write && !mine.write) {
            return Err(Error::Access("access mode beyond the buffer's"));
        }
        let file = self.inner.ops.file().ok_or(Error::Os(Errno::OPNOTSUPP))?;
        fault::hit(Site::Fd)?;
        let cloexec = flags & O_CLOEXEC != 0;
        let fd = if read && write {
            if cloexec {
                rustix::io::fcntl_dupfd_cloexec(file.fd(), 0)?
            } else {
                rustix::io::dup(file.fd())?
            }
        } else {
            // A narrower mode needs a new open file of the same memfd.
            let mut o = match acc {
                0 => OFlags::RDONLY,
                1 => OFlags::WRONLY,
                _ => OFlags::RDWR | OFlags::WRONLY,
            };
            if cloexec {
                o |= OFlags::CLOEXEC;
            }
            let path = format!("/proc/self/fd/{}", file.fd().as_raw_fd());
            rustix::fs::open(path, o, rustix::fs::Mode::empty())?
        };
        self.list_file(file)?;
        Ok(fd)
    }

    /// Mark `file` shared, store the name in it, narrow its permission bits to the
    /// buffer's access mode and list the buffer by the file's identity — once, on the
    /// first descriptor.
    fn list_file(&self, file: &Arc<Memfd>) -> Result<()> {
        if self.inner.file_key.get().is_some() {
            return Ok(());
        }
        let key = file.file_id()?;
        // Under the name lock, so that a concurrent set_name writes after us.
        let name = self.inner.name.lock();
        file.mark_shared();
        if self.inner.file_key.set(key).is_ok() {
            if let Some(n) = name.as_deref() {
                write_name_attr(file, Some(n));
            }
            let f = self.inner.flags;
            let mode = if f.read { 0o400 } else { 0 } | if f.write { 0o200 } else { 0 };
            if let Err(e) = rustix::fs::fchmod(file.fd(), rustix::fs::Mode::from_raw_mode(mode)) {
                tracing::debug!("dma-buf file mode not narrowed: {e}");
            }
            by_file().lock().insert(key, Arc::downgrade(&self.inner));
        }
        Ok(())
    }

    /// The lines the kernel shows in `/proc/<pid>/fdinfo/<fd>` for a dma-buf
    /// descriptor, after the generic ones: `size:`, `count:` (the buffer's references,
    /// [`ref_count`](Self::ref_count)), `exp_name:`, and `name:` when set. No lock.
    pub fn fdinfo(&self) -> String {
        self.fdinfo_with_count(self.ref_count())
    }

    fn fdinfo_with_count(&self, count: usize) -> String {
        let mut s = format!(
            "size:\t{}\ncount:\t{count}\nexp_name:\t{}\n",
            self.inner.size, self.inner.exp_name
        );
        if let Some(n) = self.name() {
            s.push_str(&format!("name:\t{n}\n"));
        }
        s
    }
}

/// The buffer behind descriptor number `fd` (`dma_buf_get`); see [`get`]. A number
/// that is not open is `BadFd`.
///
/// # Errors
///
/// `BadFd` (`EBADF`) for a negative number or one that is not open; then those of
/// [`get`].
pub fn get_raw(fd: RawFd) -> Result<DmaBuf> {
    if fd < 0 {
        return Err(Error::BadFd);
    }
    // SAFETY: the borrow lives for this call only and the number is never closed here;
    // a number that is not open only makes the first system call on it fail with EBADF.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    get(b)
}

/// The buffer a descriptor refers to (`dma_buf_get`). A descriptor of one of this
/// process's buffers gives that very buffer (same object, same reservation object, one
/// more reference); a descriptor of a buffer of another process (received over a
/// socket, inherited) gives a buffer over the same memory, with its size, exporter
/// name, name and access mode (see the module docs). The descriptor is not consumed:
/// close it when done, as with the kernel's.
///
/// Must not hold a reservation lock (a new import exports a buffer).
///
/// # Errors
///
/// `BadFd` (`EBADF`) when `fd` is not open; `Invalid` (`EINVAL`) when it is not a
/// dma-buf: not a regular file (a pipe, a socket, an eventfd, a sync file), not a
/// memfd of ours (a plain file, a memfd named otherwise), or one without our seals
/// (it could be truncated under a mapping, or sealed against writing); `Invalid` (with
/// a lockdep report) while holding a reservation lock and the import is new; `Access`
/// for a descriptor not open for reading; `fstat`/`mmap` errors and descriptor
/// exhaustion (`EMFILE`) as `Os`; an injected [`Site::Dup`] fault. Nothing changes on
/// error.
pub fn get(fd: BorrowedFd<'_>) -> Result<DmaBuf> {
    let st = rustix::fs::fstat(fd).map_err(|e| match e {
        Errno::BADF => Error::BadFd,
        e => Error::Os(e),
    })?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(Error::Invalid("not a dma-buf: not a regular file"));
    }
    let key = (st.st_dev, st.st_ino);
    if let Some(inner) = by_file().lock().get(&key).and_then(Weak::upgrade) {
        return Ok(DmaBuf { inner });
    }
    let exp_name = check_ours(fd)?;
    super::must_not_hold_resv("dma_buf_get")?;
    let mode = rustix::fs::fcntl_getfl(fd)? & OFlags::ACCMODE;
    let flags = FileFlags {
        read: mode != OFlags::WRONLY,
        write: mode != OFlags::RDONLY,
        nonblock: false,
    };
    fault::hit(Site::Dup)?;
    let mem = Arc::new(Memfd::from_fd(rustix::io::fcntl_dupfd_cloexec(fd, 0)?)?);
    let size = mem.len();
    let seg = Segment::new(mem.clone(), 0, size)?;
    let ops = MemoryExporter::new(vec![seg], Rules::default(), Backing::File(mem.clone()));
    let mut info = ExportInfo::new(&exp_name, size, ops);
    info.flags = flags;
    let buf = export(info)?;
    if let Some(n) = read_name_attr(fd) {
        *buf.inner.name.lock() = Some(n);
    }
    // Another thread may have imported the same file meanwhile: one object per file.
    let mut t = by_file().lock();
    if let Some(inner) = t.get(&key).and_then(Weak::upgrade) {
        return Ok(DmaBuf { inner });
    }
    let _ = buf.inner.file_key.set(key);
    t.insert(key, Arc::downgrade(&buf.inner));
    Ok(buf)
}

/// Check that `fd` (a regular file) is a memfd of ours; its exporter's name.
fn check_ours(fd: BorrowedFd<'_>) -> Result<String> {
    let fs = rustix::fs::fstatfs(fd)?;
    if fs.f_type as i64 != TMPFS_MAGIC {
        return Err(Error::Invalid("not a dma-buf: not a memfd"));
    }
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let link = rustix::fs::readlink(path, Vec::new())
        .map_err(|_| Error::Invalid("not a dma-buf: its name cannot be read"))?;
    let link = link.to_string_lossy();
    let exp_name = link
        .strip_prefix("/memfd:")
        .and_then(|n| n.strip_prefix(NAME_PREFIX))
        .map(|n| n.strip_suffix(" (deleted)").unwrap_or(n))
        .filter(|n| !n.is_empty() && n.len() <= EXP_NAME_MAX && !n.chars().any(char::is_control))
        .ok_or(Error::Invalid(
            "not a dma-buf: a file that is not one of ours",
        ))?;
    let seals = rustix::fs::fcntl_get_seals(fd)
        .map_err(|_| Error::Invalid("not a dma-buf: a file without seals"))?;
    if !seals.contains(SEALS) {
        return Err(Error::Invalid(
            "not a dma-buf: not sealed against resizing (its size could change)",
        ));
    }
    if seals.intersects(SealFlags::WRITE | SealFlags::FUTURE_WRITE) {
        return Err(Error::Invalid("not a dma-buf: sealed against writing"));
    }
    Ok(exp_name.to_string())
}

/// The kernel's fdinfo lines for the buffer behind descriptor `fd` (see
/// [`DmaBuf::fdinfo`]): what `/proc/<pid>/fdinfo/<fd>` shows for a kernel dma-buf, its
/// `count` less the reference this call takes (as the kernel's less procfs' own).
///
/// # Errors
///
/// Those of [`get`].
pub fn fdinfo(fd: BorrowedFd<'_>) -> Result<String> {
    let b = get(fd)?;
    Ok(b.fdinfo_with_count(b.ref_count().saturating_sub(1)))
}

/// The dma-buf ioctl numbers (magic `'b'`), as the kernel's uapi defines them.
pub mod ioctl_nr {
    const fn ioc(dir: u32, nr: u32, size: u32) -> u32 {
        (dir << 30) | (size << 16) | ((b'b' as u32) << 8) | nr
    }
    /// `DMA_BUF_IOCTL_SYNC`: `_IOW('b', 0, u64)`.
    pub const SYNC: u32 = ioc(1, 0, 8);
    /// `DMA_BUF_SET_NAME_A`: `_IOW('b', 1, u32)`.
    pub const SET_NAME_A: u32 = ioc(1, 1, 4);
    /// `DMA_BUF_SET_NAME_B`: `_IOW('b', 1, u64)`.
    pub const SET_NAME_B: u32 = ioc(1, 1, 8);
    /// `DMA_BUF_IOCTL_EXPORT_SYNC_FILE`: `_IOWR('b', 2, struct dma_buf_export_sync_file)`.
    pub const EXPORT_SYNC_FILE: u32 = ioc(3, 2, 8);
    /// `DMA_BUF_IOCTL_IMPORT_SYNC_FILE`: `_IOW('b', 3, struct dma_buf_import_sync_file)`.
    pub const IMPORT_SYNC_FILE: u32 = ioc(1, 3, 8);
}

/// An ioctl on a buffer's descriptor, as the kernel's dma-buf file takes it — the
/// stand-in for `ioctl(2)`, which a memfd would refuse with `ENOTTY`. `arg` is the
/// argument's bytes (native endian, the uapi layout), read and, for `EXPORT_SYNC_FILE`,
/// written back; for `SET_NAME_A`/`_B` it is the name's bytes themselves (what the
/// kernel's pointer points at), up to a NUL. Returns 0, as the kernel does.
///
/// | `cmd` | `arg` | does |
/// |---|---|---|
/// | [`ioctl_nr::SYNC`] | `u64` flags | [`DmaBuf::sync_ioctl`] |
/// | [`ioctl_nr::SET_NAME_A`], [`ioctl_nr::SET_NAME_B`] | the name | [`DmaBuf::set_name`] |
/// | [`ioctl_nr::EXPORT_SYNC_FILE`] | `{u32 flags; s32 fd}` | [`DmaBuf::export_sync_file`]; `fd` is written: a new close-on-exec descriptor the caller owns |
/// | [`ioctl_nr::IMPORT_SYNC_FILE`] | `{u32 flags; s32 fd}` | [`DmaBuf::import_sync_file`] of `fd` (not consumed) |
///
/// Must not hold a reservation lock (the calls behind lock it or must run unlocked).
///
/// # Errors
///
/// `BadFd` when `fd` is not open; `NoTty` (`ENOTTY`) for an unknown command or a
/// descriptor that is not a dma-buf (its file does not know the command); `Fault`
/// (`EFAULT`) when `arg` is shorter than the command's argument; `Invalid` for a name
/// of 32 bytes or more without a NUL, or not UTF-8; then the errors of the call behind
/// (`EINVAL` for bad flags or an `fd` that is not a sync file, `EMFILE`…). `arg` is
/// unchanged on error.
pub fn ioctl(fd: BorrowedFd<'_>, cmd: u32, arg: &mut [u8]) -> Result<i32> {
    let known = [
        ioctl_nr::SYNC,
        ioctl_nr::SET_NAME_A,
        ioctl_nr::SET_NAME_B,
        ioctl_nr::EXPORT_SYNC_FILE,
        ioctl_nr::IMPORT_SYNC_FILE,
    ];
    let buf = get(fd).map_err(|e| match e {
        Error::Invalid(_) => Error::NoTty,
        e => e,
    })?;
    if !known.contains(&cmd) {
        return Err(Error::NoTty);
    }
    let u32_at = |a: &[u8], i: usize| -> Result<u32> {
        a.get(i..i + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
            .ok_or(Error::Fault("argument shorter than the ioctl's"))
    };
    match cmd {
        ioctl_nr::SYNC => {
            let b: [u8; 8] = arg
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or(Error::Fault("argument shorter than the ioctl's"))?;
            buf.sync_ioctl(u64::from_ne_bytes(b))?;
        }
        ioctl_nr::SET_NAME_A | ioctl_nr::SET_NAME_B => {
            let n = arg
                .iter()
                .take(NAME_MAX + 1)
                .position(|&c| c == 0)
                .ok_or(Error::Invalid("name of 32 bytes or more"))?;
            let name =
                std::str::from_utf8(&arg[..n]).map_err(|_| Error::Invalid("name not UTF-8"))?;
            buf.set_name(name)?;
        }
        ioctl_nr::EXPORT_SYNC_FILE => {
            let flags = u32_at(arg, 0)?;
            u32_at(arg, 4)?;
            let sf = buf.export_sync_file(u64::from(flags))?;
            let out = sf.try_into_fd()?;
            let n = rustix::fd::IntoRawFd::into_raw_fd(out);
            arg[4..8].copy_from_slice(&n.to_ne_bytes());
        }
        _ => {
            let flags = u32_at(arg, 0)?;
            let sfd = u32_at(arg, 4)? as i32;
            if sfd < 0 {
                return Err(Error::Invalid("not a sync file"));
            }
            // SAFETY: the number is only borrowed for this call and never closed here;
            // one that is not open makes the first system call on it fail (EBADF),
            // which the import reports as not a sync file.
            let sfd = unsafe { BorrowedFd::borrow_raw(sfd) };
            buf.import_sync_file(u64::from(flags), sfd)
                .map_err(|e| match e {
                    Error::BadFd => Error::Invalid("not a sync file"),
                    e => e,
                })?;
        }
    }
    Ok(0)
}

/// The payload tag of [`send`]'s messages.
const MSG_TAG: &[u8; 4] = b"DBF1";

/// Send `buf` and `fences` over the Unix socket `sock` in one message (`SCM_RIGHTS`),
/// for [`recv`]: a read-write (or, for a read-only buffer, read-only) descriptor of
/// the buffer, the fences' sync files with their signallers' liveness descriptors, and
/// the buffer's name. A buffer with pending fences or in the middle of a CPU access
/// can be sent: what the peer may touch when is the fences' business.
///
/// # Errors
///
/// Those of [`DmaBuf::fd`] (`EOPNOTSUPP` for a buffer without a file, `EMFILE`); `Invalid`
/// for more fences than fit one message ([`sync_file::MAX_FDS`], liveness descriptors
/// included); those of [`sync_file::send_fds`] (`EPIPE` when the peer is gone). The
/// temporary descriptor is closed; nothing is sent on error.
pub fn send(sock: BorrowedFd<'_>, buf: &DmaBuf, fences: &[&SyncFile]) -> Result<()> {
    let f = buf.flags();
    let mode = match (f.read, f.write) {
        (true, true) => 2,
        (true, false) => 0,
        (false, true) => 1,
        (false, false) => 3,
    };
    let fd = buf.fd(O_CLOEXEC | mode)?;
    let mut fds: Vec<BorrowedFd<'_>> = Vec::with_capacity(1 + fences.len());
    fds.push(fd.as_fd());
    fds.extend(fences.iter().map(|f| f.as_fd()));
    let mut payload = MSG_TAG.to_vec();
    payload.extend_from_slice(buf.name().unwrap_or_default().as_bytes());
    sync_file::send_fds(sock, &payload, &fds)
}

/// A buffer and its fences as [`recv`] received them.
#[derive(Debug)]
pub struct Received {
    /// The buffer (the same object, if it was this process's).
    pub buf: DmaBuf,
    /// The fences sent with it, in order.
    pub fences: Vec<SyncFile>,
}

/// Receive a buffer and its fences sent by [`send`] (blocking). The buffer's descriptor
/// is closed once the buffer is made; the sync files own theirs.
///
/// Must not hold a reservation lock.
///
/// # Errors
///
/// `NoEntry` when the peer closed the socket (it exited, or died); `TooManyFiles`
/// (`EMFILE`) when the descriptors did not fit this process's table (the message is
/// lost); `Invalid` for a message that is not [`send`]'s (no buffer descriptor, or a
/// descriptor that is not a dma-buf or a sync file, a name over 31 bytes); those of
/// [`get`] and [`SyncFile::from_fd`]; OS errors of `recvmsg`. Every descriptor
/// received is closed on error, and no buffer is changed (the name is set last); the
/// liveness descriptors that came with sync files stay with the sync-file registry
/// until their sync files' numbers are swept, as after [`sync_file::recv_fd`].
pub fn recv(sock: BorrowedFd<'_>) -> Result<Received> {
    let (payload, fds) = sync_file::recv_message(sock)?;
    let name = payload
        .strip_prefix(MSG_TAG)
        .ok_or(Error::Invalid("not a dma-buf message"))?;
    let mut fds = fds.into_iter();
    let bfd = fds
        .next()
        .ok_or(Error::Invalid("dma-buf message without a buffer"))?
        .into_fd();
    let fences = fds
        .map(sync_file::Incoming::into_sync_file)
        .collect::<Result<Vec<_>>>()?;
    let name = if name.is_empty() {
        None
    } else {
        let n = std::str::from_utf8(name).map_err(|_| Error::Invalid("name not UTF-8"))?;
        if n.len() > NAME_MAX || n.contains('\0') {
            return Err(Error::Invalid("name longer than 31 bytes"));
        }
        Some(n)
    };
    let buf = get(bfd.as_fd())?;
    drop(bfd);
    // Last, so that a refused message changes no buffer.
    if let (None, Some(n)) = (buf.name(), name) {
        buf.set_name(n)?;
    }
    Ok(Received { buf, fences })
}
