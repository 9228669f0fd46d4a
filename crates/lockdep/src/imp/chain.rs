//! Chain keys and the global cache of chains validated clean.
//!
//! # Chain keys
//!
//! Each held entry stores the key of the chain ending with it: the previous key mixed
//! with the entry's (class, subclass, mode, trylock, has-nest-lock) word. Two stacks with
//! equal keys took the same classes in the same ways, so the validation of one holds for
//! the other. A chain whose validation raised a report is not cached, so a repeat is
//! reported again (subject to the report policy).

use crate::{Acquire, Mode};
use parking_lot::RwLock;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::LazyLock;

/// Chain keys validated clean by any thread.
pub(super) static CHAINS: LazyLock<RwLock<HashSet<u64, IdBuild>>> =
    LazyLock::new(|| RwLock::new(HashSet::with_hasher(IdBuild)));

/// Key of the empty chain.
pub(super) const CHAIN_SEED: u64 = 0x6c6f_636b_6465_7021;

/// Mix one held-lock word into a chain key (a splitmix64 finalizer over both).
#[inline]
pub(super) fn chain_mix(key: u64, word: u64) -> u64 {
    let mut z = key.rotate_left(23) ^ word.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The part of an acquisition that decides its validation.
#[inline]
pub(super) fn chain_word(node: u32, how: &Acquire) -> u64 {
    let mode = match how.mode {
        Mode::Write => 0u64,
        Mode::Read => 1,
        Mode::RecursiveRead => 2,
    };
    u64::from(node)
        | mode << 40
        | u64::from(how.trylock) << 42
        | u64::from(how.nest.is_some()) << 43
}

/// Chain keys are already well mixed: hash them as themselves.
#[derive(Clone, Copy, Default)]
pub(super) struct IdBuild;

impl BuildHasher for IdBuild {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = chain_mix(self.0, u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_keys_depend_on_order_and_mode() {
        let w = |node, mode| {
            chain_word(
                node,
                &Acquire {
                    mode,
                    ..Acquire::write()
                },
            )
        };
        let ab = chain_mix(chain_mix(CHAIN_SEED, w(8, Mode::Write)), w(16, Mode::Write));
        let ba = chain_mix(chain_mix(CHAIN_SEED, w(16, Mode::Write)), w(8, Mode::Write));
        let ab_r = chain_mix(
            chain_mix(CHAIN_SEED, w(8, Mode::Write)),
            w(16, Mode::RecursiveRead),
        );
        assert_ne!(ab, ba);
        assert_ne!(ab, ab_r);
        let try_word = chain_word(16, &Acquire::write().trylock());
        let nest_word = chain_word(16, &Acquire::write().nest(1));
        assert_ne!(try_word, w(16, Mode::Write));
        assert_ne!(nest_word, w(16, Mode::Write));
    }
}
