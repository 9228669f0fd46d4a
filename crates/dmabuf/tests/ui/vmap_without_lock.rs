// vmap is a call of the buffer's locked view, made from the reservation lock's guard:
// the buffer has no locked vmap of its own, and no view is made without a guard.
use dmabuf::buf::simple::SimpleExporter;

fn main() {
    let buf = SimpleExporter::new(1).unwrap().export().unwrap();
    let _v = buf.vmap();
    let _v = buf.locked().map(|v| v.vmap());
}
