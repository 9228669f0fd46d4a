//! Implementation behind the public API.
//!
//! With the cargo feature `off`, [`off`] provides empty inline functions and `enabled()`
//! is a constant `false`, so every check compiles out. Otherwise [`on`] is the real
//! validator: per-thread held-lock stacks and chain caches ([`on`]), the global class
//! graph and its strong-cycle search ([`graph`]), and the splat text ([`text`]).

#[cfg(feature = "off")]
mod off;
#[cfg(feature = "off")]
pub(crate) use off::*;

#[cfg(not(feature = "off"))]
mod graph;
#[cfg(not(feature = "off"))]
mod on;
#[cfg(not(feature = "off"))]
mod text;
#[cfg(not(feature = "off"))]
pub(crate) use on::*;
