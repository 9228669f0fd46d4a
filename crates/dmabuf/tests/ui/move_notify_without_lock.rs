// Exporters call move_notify with the lock held: it is a call of the buffer's locked
// view, made from the reservation lock's guard; the buffer has none of its own.
use dmabuf::buf::simple::SimpleExporter;

fn main() {
    let buf = SimpleExporter::dynamic(1).unwrap().export().unwrap();
    let _ = buf.move_notify();
    let _ = buf.locked().map(|v| v.move_notify());
}
