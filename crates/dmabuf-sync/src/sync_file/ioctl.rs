use super::record::dup;
use super::registry::lookup;
use super::{peek, FdState, SyncFile};
use crate::error::{Error, Result};
use crate::fence::unwrap::{merge, unwrap};
use crate::fence::{Fence, Status};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;

#[cfg(doc)]
use super::get_fence;

/// Per-leaf information of [`SyncFile::info`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafInfo {
    /// Timeline name (the kernel's `obj_name`).
    pub timeline: String,
    /// Driver name.
    pub driver: String,
    /// 0 pending, 1 signalled, negative errno.
    pub status: i32,
    /// Signal time in monotonic ns (0 while pending).
    pub timestamp_ns: u64,
}

/// What [`SyncFile::info`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// The sync file's name.
    pub name: String,
    /// Aggregate status: 1, or the first non-positive leaf status.
    pub status: i32,
    /// The leaves.
    pub fences: Vec<LeafInfo>,
}

fn leaf_info(f: &Fence) -> LeafInfo {
    let status = f.get_status();
    LeafInfo {
        timeline: f.timeline_name().to_owned(),
        driver: f.driver_name().to_owned(),
        status,
        timestamp_ns: if status != 0 {
            f.timestamp().unwrap_or(0)
        } else {
            0
        },
    }
}

pub(super) fn file_info(fence: &Fence, name: &str) -> FileInfo {
    let fences: Vec<LeafInfo> = unwrap(fence).map(|f| leaf_info(&f)).collect();
    let mut status = 1;
    for l in &fences {
        if l.status <= 0 {
            status = l.status;
            break;
        }
    }
    FileInfo {
        name: name.to_owned(),
        status,
        fences,
    }
}

// ---- ioctl-shaped entry points --------------------------------------------------------

/// `struct sync_merge_data`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncMergeData {
    /// Name of the new sync file (NUL-terminated; force-terminated at 31).
    pub name: [u8; 32],
    /// The other sync file.
    pub fd2: i32,
    /// Out: the new descriptor.
    pub fence: i32,
    /// Must be 0.
    pub flags: u32,
    /// Must be 0.
    pub pad: u32,
}

/// `struct sync_fence_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncFenceInfo {
    /// Timeline name.
    pub obj_name: [u8; 32],
    /// Driver name.
    pub driver_name: [u8; 32],
    /// 0 pending, 1 signalled, negative errno.
    pub status: i32,
    /// Unused, 0.
    pub flags: u32,
    /// Signal time (0 while pending).
    pub timestamp_ns: u64,
}

/// `struct sync_file_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncFileInfo {
    /// Out: the sync file's name.
    pub name: [u8; 32],
    /// Out: aggregate status.
    pub status: i32,
    /// Must be 0.
    pub flags: u32,
    /// In: capacity of the array (0 = only count); out: leaf count.
    pub num_fences: u32,
    /// Must be 0.
    pub pad: u32,
    /// The kernel's user pointer to the array; here the array is a slice argument, and
    /// this field is ignored.
    pub sync_fence_info: u64,
}

/// `struct sync_set_deadline`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncSetDeadline {
    /// Absolute monotonic deadline in ns.
    pub deadline_ns: u64,
    /// Must be 0.
    pub pad: u64,
}

pub(super) fn copy_name(dst: &mut [u8; 32], src: &str) {
    *dst = [0; 32];
    let b = src.as_bytes();
    let n = b.len().min(31);
    dst[..n].copy_from_slice(&b[..n]);
}

pub(super) fn c_name(src: &[u8; 32]) -> String {
    let end = src.iter().take(31).position(|&c| c == 0).unwrap_or(31);
    String::from_utf8_lossy(&src[..end]).into_owned()
}

/// The sync file an ioctl is made on: `ENOTTY` if `fd` is not one (the kernel would not
/// reach sync_file's ioctl); errors that keep us from telling (`EMFILE` reading its
/// fdinfo, or duplicating it for a proxy) are returned as they are.
fn this_file(fd: BorrowedFd<'_>) -> Result<(Fence, String)> {
    let (k, _) = lookup(fd).map_err(|e| match e {
        Error::Invalid(_) => Error::NoTty,
        e => e,
    })?;
    Ok((k.fence.clone(), k.name.clone()))
}

/// `SYNC_IOC_MERGE` on `fd`: a new sync file merging `fd` and `data.fd2`, named
/// `data.name`; `data.fence` receives its descriptor number, which the returned
/// `OwnedFd` owns.
///
/// # Errors
///
/// [`Error::Invalid`] (`EINVAL`) if `flags` or `pad` is non-zero;
/// [`Error::NoEntry`] (`ENOENT`) if `fd2` is not an open sync file; [`Error::NoTty`]
/// (`ENOTTY`) if `fd` itself is not a sync file (wrong file for the ioctl); errors of
/// [`get_fence`] other than `EINVAL` if either cannot be told;
/// [`Error::NoMem`] (`ENOMEM`) from the merge; OS errors if no descriptor can be had for
/// the new sync file (`EMFILE`, `ENFILE`, `ENOMEM`). Nothing is created, nothing is
/// left registered and `data` is unchanged on error.
pub fn ioctl_merge(fd: BorrowedFd<'_>, data: &mut SyncMergeData) -> Result<OwnedFd> {
    let (f1, _) = this_file(fd)?;
    if data.flags != 0 || data.pad != 0 {
        return Err(Error::Invalid("sync_merge_data flags/pad must be 0"));
    }
    if data.fd2 < 0 {
        return Err(Error::NoEntry("fd2 is not a sync file"));
    }
    // What the kernel's `fdget` does: take one reference to whatever file the number
    // names right now, and work on that reference only.
    // SAFETY: the number comes from the caller and nothing keeps it open, so it is not a
    // descriptor this code owns or borrows for any length of time. The `BorrowedFd` made
    // here is passed to exactly one syscall, `fcntl(F_DUPFD_CLOEXEC)`, and then dropped;
    // nothing else reads, closes or keeps it. If the number is closed meanwhile, that
    // syscall fails with EBADF (mapped to ENOENT below); if it has been reused, it
    // duplicates the new file, which is then what is merged, as with `fdget`. In no case
    // is another owner's descriptor closed or used after this call.
    let fd2 = match dup(unsafe { BorrowedFd::borrow_raw(data.fd2) }) {
        Ok(fd2) => fd2,
        Err(Error::Os(Errno::BADF)) => return Err(Error::NoEntry("fd2 is not open")),
        Err(e) => return Err(e),
    };
    let (f2, _) = lookup(fd2.as_fd()).map_err(|e| match e {
        Error::Invalid(_) => Error::NoEntry("fd2 is not a sync file"),
        e => e,
    })?;
    drop(fd2);
    let name = c_name(&data.name);
    let merged = merge(&[f1, f2.fence.clone()])?;
    let (sf, cb) = SyncFile::create(merged.clone(), name)?;
    let out = match sf.try_into_fd() {
        Ok(out) => out,
        Err(e) => {
            // Nobody else saw this sync file (its eventfd closed with it, unshared):
            // take its callback back, which releases the merged fence without an
            // unsignalled-release warning.
            if let Some(cb) = cb {
                merged.remove_callback(cb);
            }
            return Err(e);
        }
    };
    data.fence = out.as_raw_fd();
    Ok(out)
}

/// `SYNC_IOC_FILE_INFO` on `fd`. With `info.num_fences == 0`, fills name, status and the
/// leaf count only; otherwise `info.num_fences` must be at least the leaf count and
/// `out` must hold that many entries, which are filled.
///
/// # Errors
///
/// [`Error::Invalid`] (`EINVAL`) if `flags` or `pad` is non-zero or
/// `0 < num_fences < count`; [`Error::Fault`] (`EFAULT`) if `out` is shorter than the
/// leaf count (the kernel's failed copy to user); [`Error::NoTty`] if `fd` is not a sync
/// file; errors of [`get_fence`] other than `EINVAL` (`EMFILE`…) if that cannot be told.
/// `info` and `out` are unchanged on error.
pub fn ioctl_file_info(
    fd: BorrowedFd<'_>,
    info: &mut SyncFileInfo,
    out: &mut [SyncFenceInfo],
) -> Result<()> {
    let (fence, name) = this_file(fd)?;
    if info.flags != 0 || info.pad != 0 {
        return Err(Error::Invalid("sync_file_info flags/pad must be 0"));
    }
    let fi = file_info(&fence, &name);
    let count = fi.fences.len() as u32;
    if info.num_fences == 0 {
        copy_name(&mut info.name, &fi.name);
        info.status = fence.get_status();
        info.num_fences = count;
        return Ok(());
    }
    if info.num_fences < count {
        return Err(Error::Invalid("num_fences smaller than the leaf count"));
    }
    if out.len() < fi.fences.len() {
        return Err(Error::Fault("fence info array too short"));
    }
    for (o, l) in out.iter_mut().zip(fi.fences.iter()) {
        *o = SyncFenceInfo::default();
        copy_name(&mut o.obj_name, &l.timeline);
        copy_name(&mut o.driver_name, &l.driver);
        o.status = l.status;
        o.timestamp_ns = l.timestamp_ns;
    }
    copy_name(&mut info.name, &fi.name);
    info.status = fi.status;
    info.num_fences = count;
    Ok(())
}

/// `SYNC_IOC_SET_DEADLINE` on `fd`.
///
/// # Errors
///
/// [`Error::Invalid`] (`EINVAL`) if `pad` is non-zero; [`Error::NoTty`] if `fd`
/// is not a sync file; errors of [`get_fence`] other than `EINVAL` (`EMFILE`…) if that
/// cannot be told.
pub fn ioctl_set_deadline(fd: BorrowedFd<'_>, arg: &SyncSetDeadline) -> Result<()> {
    let (fence, _) = this_file(fd)?;
    if arg.pad != 0 {
        return Err(Error::Invalid("sync_set_deadline pad must be 0"));
    }
    fence.set_deadline(arg.deadline_ns);
    Ok(())
}

/// The status a descriptor reports (0 pending, 1 ok, negative errno), from the record
/// alone (see [`peek`]); a dead signaller reads as `-EPIPE`.
///
/// # Errors
///
/// As [`peek`].
pub fn fd_status(fd: BorrowedFd<'_>) -> Result<Status> {
    Ok(match peek(fd)? {
        FdState::Pending => Status::Pending,
        FdState::Signaled { status, .. } => Status::from_raw(status),
        FdState::SignallerGone => Status::Error(-Errno::PIPE.raw_os_error()),
    })
}

// ---- sw_sync as descriptors -----------------------------------------------------------

/// `SW_SYNC_IOC_CREATE_FENCE`: a point of the in-process timeline `tl` at `value`,
/// exported as a sync file. For a timeline that is itself a descriptor (inherited,
/// sent, closed by its last close), see [`super::sw_sync`].
///
/// # Errors
///
/// As [`SyncFile::new`].
pub fn sw_sync_create_fence(tl: &crate::fence::timeline::Timeline, value: u32) -> Result<SyncFile> {
    SyncFile::new(tl.create_fence(value))
}
