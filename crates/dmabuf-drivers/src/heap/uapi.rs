//! The dma-heap uapi: `open` flags, the allocation ioctl's number and argument
//! (`struct dma_heap_allocation_data`), and what `fd_flags` mean for the buffer.

use crate::buf::FileFlags;

/// Most heaps a registry holds (the kernel's `NUM_HEAP_MINORS`).
pub const MAX_HEAPS: usize = 128;

/// `O_ACCMODE`.
pub const O_ACCMODE: u32 = 0o3;
/// `O_RDONLY`.
pub const O_RDONLY: u32 = 0o0;
/// `O_WRONLY`.
pub const O_WRONLY: u32 = 0o1;
/// `O_RDWR`.
pub const O_RDWR: u32 = 0o2;
/// `O_CLOEXEC`.
pub const O_CLOEXEC: u32 = 0o2_000_000;
/// The `fd_flags` an allocation accepts (`DMA_HEAP_VALID_FD_FLAGS`).
pub const VALID_FD_FLAGS: u32 = O_CLOEXEC | O_ACCMODE;
/// The `heap_flags` an allocation accepts (`DMA_HEAP_VALID_HEAP_FLAGS`): none.
pub const VALID_HEAP_FLAGS: u64 = 0;
/// `DMA_HEAP_IOCTL_ALLOC`: `_IOWR('H', 0, struct dma_heap_allocation_data)`.
pub const DMA_HEAP_IOCTL_ALLOC: u32 = ioc(IOC_READ | IOC_WRITE, b'H', 0, AllocData::SIZE);

/// `_IOC_WRITE`: userspace passes the argument in.
pub(crate) const IOC_WRITE: u32 = 1;
/// `_IOC_READ`: the kernel passes the argument back.
pub(crate) const IOC_READ: u32 = 2;

/// An ioctl command number (`_IOC(dir, type, nr, size)`).
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    (dir << 30) | ((size as u32 & 0x3fff) << 16) | ((ty as u32) << 8) | nr as u32
}

/// The file flags of a buffer allocated with `fd_flags` (its access mode; close-on-exec
/// concerns only the fd). Access mode 3 opens for neither reading nor writing, as in the
/// kernel.
pub(crate) fn file_flags(fd_flags: u32) -> FileFlags {
    let (read, write) = match fd_flags & O_ACCMODE {
        O_RDONLY => (true, false),
        O_WRONLY => (false, true),
        O_RDWR => (true, true),
        _ => (false, false),
    };
    FileFlags {
        read,
        write,
        nonblock: false,
    }
}

/// The argument of `DMA_HEAP_IOCTL_ALLOC` (`struct dma_heap_allocation_data`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocData {
    /// Length in bytes (rounded up to pages).
    pub len: u64,
    /// Output in the kernel; must be 0 on input.
    pub fd: u32,
    /// `O_CLOEXEC` and an access mode.
    pub fd_flags: u32,
    /// Heap flags: none defined, must be 0.
    pub heap_flags: u64,
}

impl AllocData {
    /// Size of the uapi struct.
    pub const SIZE: usize = 24;

    /// A request for `len` bytes, `O_RDWR | O_CLOEXEC`, no heap flags (what the
    /// kernel's selftest asks for).
    pub fn new(len: u64) -> Self {
        AllocData {
            len,
            fd: 0,
            fd_flags: O_RDWR | O_CLOEXEC,
            heap_flags: 0,
        }
    }

    /// Decode the uapi layout (native endian) from exactly [`Self::SIZE`] bytes.
    pub(crate) fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let u64_at = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        AllocData {
            len: u64_at(0),
            fd: u32_at(8),
            fd_flags: u32_at(12),
            heap_flags: u64_at(16),
        }
    }

    /// Encode in the uapi layout (native endian).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..8].copy_from_slice(&self.len.to_ne_bytes());
        b[8..12].copy_from_slice(&self.fd.to_ne_bytes());
        b[12..16].copy_from_slice(&self.fd_flags.to_ne_bytes());
        b[16..24].copy_from_slice(&self.heap_flags.to_ne_bytes());
        b
    }
}
