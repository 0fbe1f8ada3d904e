//! Shared by the unit tests (src/tests.rs), the decoder fuzz test and the
//! CLI's fuzz test (harness/tests/cli_fuzz.rs); the including module
//! provides `HEADER_LEN`, `TRAILER_LEN` and
//! `TRAILER_LEN_SHA256`.

use super::{HEADER_LEN, TRAILER_LEN, TRAILER_LEN_SHA256};
use sha2::{Digest, Sha256};

/// Recomputes an image's body length and checksum trailer (SHA-256 for a
/// format 1 image, else CRC32C), so that a change to its records reaches
/// the parser.
pub fn reseal(mut img: Vec<u8>) -> Vec<u8> {
    let v1 = img.get(8..12) == Some(&1u32.to_le_bytes()[..]);
    let trailer = if v1 { TRAILER_LEN_SHA256 } else { TRAILER_LEN };
    if img.len() < HEADER_LEN + trailer {
        return img;
    }
    let end = img.len() - trailer;
    let body = (end - HEADER_LEN) as u64;
    img[16..24].copy_from_slice(&body.to_le_bytes());
    if v1 {
        let sum = Sha256::digest(&img[..end]);
        img[end..].copy_from_slice(&sum);
    } else {
        let sum = crc32c::crc32c(&img[..end]);
        img[end..].copy_from_slice(&sum.to_le_bytes());
    }
    img
}

/// xorshift64*: reproducible mutations without a dependency of the
/// tests' own.
#[allow(dead_code)] // src/tests.rs draws no random numbers
pub struct Rng(u64);

#[allow(dead_code)]
impl Rng {
    /// A generator for `seed`, each seed its own sequence (splitmix64 of
    /// the seed, never the state 0 that xorshift cannot leave).
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
