//! Implementation behind the public API.
//!
//! With the cargo feature `off`, `off` provides empty inline functions and `enabled()`
//! is a constant `false`, so every check compiles out. Otherwise `on` is the real
//! validator's entry points, over its parts: the run-time switches (`switch`), the class
//! registry (`classes`), the per-thread held-lock stacks (`held`), chain keys and the
//! chain cache (`chain`), validation (`validate`) against the global class graph and
//! its strong-cycle search (`graph`), report routing and captures (`report`), the
//! splat text (`text`), and atomic sections (`atomic`).

#[cfg(feature = "off")]
mod off;
#[cfg(feature = "off")]
pub(crate) use off::*;

#[cfg(not(feature = "off"))]
mod atomic;
#[cfg(not(feature = "off"))]
mod chain;
#[cfg(not(feature = "off"))]
mod classes;
#[cfg(not(feature = "off"))]
mod graph;
#[cfg(not(feature = "off"))]
mod held;
#[cfg(not(feature = "off"))]
mod on;
#[cfg(not(feature = "off"))]
mod report;
#[cfg(not(feature = "off"))]
mod switch;
#[cfg(not(feature = "off"))]
mod text;
#[cfg(not(feature = "off"))]
mod validate;
#[cfg(not(feature = "off"))]
pub(crate) use on::*;
