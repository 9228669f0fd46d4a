// Mapping an attachment needs the reservation lock's guard.
use dmabuf::buf::{simple::SimpleExporter, Direction};
use dmabuf::device::Device;

fn main() {
    let buf = SimpleExporter::new(1).unwrap().export().unwrap();
    let att = buf.attach(&Device::simple("d")).unwrap();
    let _m = att.map(Direction::ToDevice);
}
