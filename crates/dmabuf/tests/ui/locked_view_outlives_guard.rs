// A buffer's locked view borrows the guard: the lock cannot be dropped (unlocked) while
// the view is still used.
use dmabuf::buf::simple::SimpleExporter;

fn main() {
    let buf = SimpleExporter::new(1).unwrap().export().unwrap();
    let mut g = buf.resv().lock_no_ctx().unwrap();
    let view = buf.locked(&mut g).unwrap();
    drop(g);
    let _ = view.vmap();
}
