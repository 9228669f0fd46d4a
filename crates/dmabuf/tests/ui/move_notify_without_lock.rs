// Exporters call move_notify with the lock held: the guard is the proof.
use dmabuf::buf::simple::SimpleExporter;

fn main() {
    let buf = SimpleExporter::dynamic(1).unwrap().export().unwrap();
    let _ = buf.move_notify();
}
