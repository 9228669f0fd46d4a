// A guard dropped as soon as it is made unlocks (or ends, or unregisters) at once: each
// such statement is a bug, and the guards are #[must_use] so that it does not compile
// quietly.
#![deny(unused_must_use)]

use dmabuf::resv::{exec::Exec, Resv, RESERVATION_WW_CLASS};
use dmabuf::sync_file::SyncFile;
use dmabuf::ww::AcquireCtx;

fn main() -> dmabuf::Result<()> {
    let r = Resv::new();
    let ctx = AcquireCtx::new(&RESERVATION_WW_CLASS);
    r.lock(&ctx)?;
    r.lock_no_ctx()?;
    r.try_lock();
    Exec::new(&ctx);
    dmabuf::fence::begin_signalling();
    dmabuf::Interrupt::new().on_interrupt(|| {});
    SyncFile::new(dmabuf::fence::Fence::stub())?;
    SyncFile::new(dmabuf::fence::Fence::stub())?.into_fd();
    Ok(())
}
