//! Shared by the unit tests (src/tests.rs) and the decoder fuzz test; the
//! including module provides `HEADER_LEN` and `TRAILER_LEN`.

use super::{HEADER_LEN, TRAILER_LEN};
use sha2::{Digest, Sha256};

/// Recomputes an image's body length and SHA-256 trailer, so that a change
/// to its records reaches the parser.
pub fn reseal(mut img: Vec<u8>) -> Vec<u8> {
    if img.len() < HEADER_LEN + TRAILER_LEN {
        return img;
    }
    let end = img.len() - TRAILER_LEN;
    let body = (end - HEADER_LEN) as u64;
    img[16..24].copy_from_slice(&body.to_le_bytes());
    let sum = Sha256::digest(&img[..end]);
    img[end..].copy_from_slice(&sum);
    img
}
