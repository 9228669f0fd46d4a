//! Prints a few splats: `cargo run -p lockdep --example splat`.

use lockdep::{sync::Mutex, sync::RwLock, LockClass, OnReport};

static A: LockClass = LockClass::new("A");
static B: LockClass = LockClass::new("B");
static C: LockClass = LockClass::new("C");

fn main() {
    lockdep::set_on_report(OnReport::PrintOnce);
    let a = Mutex::new(&A, ());
    let b = RwLock::new(&B, ());
    let c = Mutex::new(&C, ());
    {
        let _a = a.lock();
        let _b = b.read();
    }
    {
        let _b = b.write();
        let _c = c.lock();
    }
    {
        let _c = c.lock();
        let _a = a.lock();
    }
    {
        let _b = b.read();
        let _b2 = b.read();
    }
    println!("{} splats printed", lockdep::stats().printed);
}
