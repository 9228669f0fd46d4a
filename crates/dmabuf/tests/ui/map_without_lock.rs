// Mapping an attachment is a call of the buffer's locked view, made from the reservation
// lock's guard: the attachment has no map of its own, and no view is made without a guard.
use dmabuf::buf::{simple::SimpleExporter, Direction};
use dmabuf::device::Device;

fn main() {
    let buf = SimpleExporter::new(1).unwrap().export().unwrap();
    let att = buf.attach(&Device::simple("d")).unwrap();
    let _m = att.map(Direction::ToDevice);
    let _m = buf.locked().map(|v| v.map(&att, Direction::ToDevice));
}
