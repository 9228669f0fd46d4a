//! The class registry: a class gets its small id (its index + 1) on first use.

use crate::LockClass;
use parking_lot::Mutex;
use std::sync::atomic::Ordering;

/// Registered classes; a class's id is its index + 1.
pub(super) static CLASSES: Mutex<Vec<&'static LockClass>> = Mutex::new(Vec::new());

pub(crate) fn register_class(class: &'static LockClass) -> u32 {
    let mut classes = CLASSES.lock();
    let slot = class.raw_id_slot();
    let id = slot.load(Ordering::Acquire);
    if id != 0 {
        return id;
    }
    classes.push(class);
    let id = u32::try_from(classes.len()).expect("lockdep: too many lock classes");
    slot.store(id, Ordering::Release);
    id
}

/// A class's identity as a number: its address (classes never move).
pub(super) fn class_key(class: &'static LockClass) -> usize {
    class as *const LockClass as usize
}
