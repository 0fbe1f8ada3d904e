//! Shared by the unit tests (src/tests.rs) and the decoder fuzz test; the
//! including module provides `HEADER_LEN`, `TRAILER_LEN` and
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
