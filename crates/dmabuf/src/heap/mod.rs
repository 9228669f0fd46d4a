//! Heaps: where buffer memory comes from. (So far: the page allocator of the
//! contiguous heap.)

pub mod buddy;
pub mod memfd;
pub mod region;
pub mod udmabuf;
