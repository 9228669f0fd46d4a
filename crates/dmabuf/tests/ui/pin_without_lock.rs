// pin needs the reservation lock's guard.
use dmabuf::buf::simple::SimpleExporter;
use dmabuf::device::Device;

fn main() {
    let buf = SimpleExporter::dynamic(1).unwrap().export().unwrap();
    let att = buf.attach(&Device::simple("d")).unwrap();
    let _ = att.pin();
}
