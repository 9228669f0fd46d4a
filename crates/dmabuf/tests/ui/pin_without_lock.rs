// pin is a call of the buffer's locked view, made from the reservation lock's guard: the
// attachment has no pin of its own, and no view is made without a guard.
use dmabuf::buf::simple::SimpleExporter;
use dmabuf::device::Device;

fn main() {
    let buf = SimpleExporter::dynamic(1).unwrap().export().unwrap();
    let att = buf.attach(&Device::simple("d")).unwrap();
    let _ = att.pin();
    let _ = buf.locked().map(|v| v.pin(&att));
}
