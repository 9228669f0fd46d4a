//! Debugging aids. (So far: the ownership tracker.)

pub mod ownership;
