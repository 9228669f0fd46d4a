// A guard cannot outlive the object it locks.
use dmabuf::resv::Resv;

fn main() {
    let g = {
        let r = Resv::new();
        r.lock_no_ctx().unwrap()
    };
    drop(g);
}
