// Fences are added through the guard only: the object itself has no add_fence.
use dmabuf::resv::{Resv, Usage};

fn main() {
    let r = Resv::new();
    let f = dmabuf::fence::Fence::stub();
    let _ = r.add_fence(&f, Usage::Write);
}
