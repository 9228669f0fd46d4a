// Guards end what they hold when dropped: dropping one at once (`buf.attach(&dev)?;`) is
// a mistake the compiler reports, as each guard type is #[must_use].
#![deny(unused_must_use)]
use dmabuf::buf::{simple::SimpleExporter, Direction};
use dmabuf::device::Device;

fn main() -> dmabuf::Result<()> {
    let buf = SimpleExporter::new(1)?.export()?;
    buf.attach(&Device::simple("d"))?;
    let att = buf.attach(&Device::simple("d"))?;
    att.map_unlocked(Direction::ToDevice)?;
    buf.vmap_unlocked()?;
    buf.cpu_access(Direction::FromDevice)?;
    buf.mmap(0, 1, false)?;
    let mut g = buf.resv().lock_no_ctx()?;
    buf.locked(&mut g)?;
    let view = buf.locked(&mut g)?;
    view.vmap()?;
    Ok(())
}
