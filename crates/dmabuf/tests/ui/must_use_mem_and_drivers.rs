// Dropping a resource of the memory or driver layers the moment it is made is a bug the
// compiler names: a mapping unmapped at once, a DMA mapping leaked, an engine stopped,
// a CPU view vunmapped, a job never submitted. Each type is #[must_use], so even the
// value of `?` is checked.
#![deny(unused_must_use)]

use dmabuf::buf::{Direction, DmaBuf};
use dmabuf::device::{CpuView, Engine, Job, Operand};
use dmabuf::mem::memfd::{Mapping, Memfd};
use dmabuf::mem::{Device, Segment};
use dmabuf::Result;
use std::sync::Arc;
use std::time::Duration;

fn memory(m: &Memfd) -> Result<()> {
    Memfd::create("m", 1, false)?;
    Mapping::new(m.fd(), m.len(), false)?;
    Ok(())
}

fn dma(dev: &Device, segs: &[Segment]) -> Result<()> {
    dev.dma().map(segs, Direction::ToDevice, "x")?;
    Ok(())
}

fn drivers(dev: &Arc<Device>, buf: &DmaBuf, op: Operand, job: Job) -> Result<()> {
    Engine::new(dev, "e")?;
    CpuView::new(buf)?;
    Job::fill(op, 1);
    job.timeout(Duration::from_secs(1));
    Ok(())
}

fn main() {
    let _ = (memory, dma, drivers);
}
