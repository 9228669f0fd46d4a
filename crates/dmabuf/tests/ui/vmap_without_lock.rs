// vmap needs the reservation lock's guard.
use dmabuf::buf::simple::SimpleExporter;

fn main() {
    let buf = SimpleExporter::new(1).unwrap().export().unwrap();
    let _v = buf.vmap();
}
