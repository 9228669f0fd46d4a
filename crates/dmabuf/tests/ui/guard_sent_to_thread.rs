// A lock is released by the thread that took it: guards are not Send.
use dmabuf::resv::Resv;

fn main() {
    let r: &'static Resv = Box::leak(Box::new(Resv::new()));
    let g = r.lock_no_ctx();
    std::thread::spawn(move || drop(g));
}
