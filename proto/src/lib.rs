//! The checkpoint image of one UDP socket: the protobuf schema
//! (`proto/udp_repair.proto`, package `udp_repair.v1`) and the file format
//! around it.
//!
//! # File format (format version 2)
//!
//! ```text
//! offset  size  field
//!      0     8  magic "UDPRIMG\0"
//!      8     4  format version, u32 little endian (2)
//!     12     4  flags, u32 LE, reserved: must be 0
//!     16     8  body length B, u64 LE
//!     24     B  body: records
//!   24+B     4  CRC32C (Castagnoli) of bytes [0, 24+B), u32 LE
//! ```
//! and nothing after. A record is `kind: u8, len: u32 LE, len bytes of
//! protobuf`. The body holds exactly one CHECKPOINT record (a [`v1::Checkpoint`]
//! whose `receive_queue.datagrams` is empty) followed by
//! `receive_queue.count` DATAGRAM records (one [`v1::RecvDatagram`] each, in
//! queue order). Keeping datagrams out of the checkpoint message keeps each
//! protobuf message small and bounded (a receive queue can hold many
//! megabytes) and lets a reader name the datagram that is bad.
//!
//! Format version 1 is the same but for its trailer: 32 bytes of SHA-256
//! of bytes `[0, 24+B)`. [`decode`] reads both; [`encode`] writes version 2.
//!
//! # Why CRC32C
//! The checksum guards against truncation and corruption in storage or
//! transit, and [`decode`] checks it before parsing anything, so a damaged
//! image is refused whole rather than half read. It is not a signature
//! under either version: whoever can write the image can rewrite the
//! checksum, so restore treats the image as untrusted input all the same
//! ([`decode`] never panics, and [`validate`] checks every field that
//! restore relies on). What is left to choose is cost against detection:
//! the image is written and read while the socket is down, and SHA-256
//! (1.5 GB/s here even with the SHA extensions) took 2.7 ms per 4 MiB each
//! way, more than half the downtime of a queue of 64 KiB datagrams.
//! CRC32C runs at over 10 GB/s with SSE4.2 (the `crc32c` crate, detected
//! at run time) and detects every burst of up to 32 bits and all but
//! 1 in 2^32 other corruptions; it is the checksum of iSCSI, SCTP and
//! ext4/btrfs metadata for the same reason.

use prost::Message;
use sha2::{Digest, Sha256};
use std::fmt;

/// Generated types of `udp_repair.v1`.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/udp_repair.v1.rs"));
}

pub use v1::Checkpoint;

/// The file magic.
pub const MAGIC: [u8; 8] = *b"UDPRIMG\0";
/// The file format version written by [`encode`] (CRC32C trailer).
pub const FORMAT_VERSION: u32 = 2;
/// The first file format version (SHA-256 trailer), still read.
pub const FORMAT_VERSION_SHA256: u32 = 1;
/// The newest `Checkpoint.schema_version` this crate understands. A writer
/// sets the lowest version that holds what the image uses ([`schema_for`]),
/// so a reader that does not know some state refuses the image instead of
/// ignoring the field: version 2 adds `pending_error`, `shutdown`,
/// `bound_ifname` and a datagram's `gso_size` and `ifname`.
pub const SCHEMA_VERSION: u32 = 2;

/// The lowest schema version that holds everything `cp` uses.
pub fn schema_for(cp: &Checkpoint) -> u32 {
    let gro = cp.receive_queue.as_ref().is_some_and(|q| {
        q.datagrams
            .iter()
            .any(|d| d.gso_size.is_some() || !d.ifname.is_empty())
    });
    if cp.pending_error != 0 || gro || cp.shutdown != 0 || !cp.bound_ifname.is_empty() {
        2
    } else {
        1
    }
}
/// Length of the fixed header.
pub const HEADER_LEN: usize = 24;
/// Length of the trailer of [`FORMAT_VERSION`] (CRC32C).
pub const TRAILER_LEN: usize = 4;
/// Length of the trailer of [`FORMAT_VERSION_SHA256`].
pub const TRAILER_LEN_SHA256: usize = 32;

/// The trailer length of format `version`, if this reader knows it.
fn trailer_len(version: u32) -> Option<usize> {
    match version {
        FORMAT_VERSION => Some(TRAILER_LEN),
        FORMAT_VERSION_SHA256 => Some(TRAILER_LEN_SHA256),
        _ => None,
    }
}

/// Whether `trailer` is the checksum of `covered` under format `version`
/// (one [`trailer_len`] knows).
fn checksum_matches(version: u32, covered: &[u8], trailer: &[u8]) -> bool {
    if version == FORMAT_VERSION_SHA256 {
        Sha256::digest(covered).as_slice() == trailer
    } else {
        crc32c::crc32c(covered).to_le_bytes() == trailer
    }
}

/// Record kind of the checkpoint message.
pub const RECORD_CHECKPOINT: u8 = 1;
/// Record kind of one receive-queue datagram.
pub const RECORD_DATAGRAM: u8 = 2;

/// Largest CHECKPOINT record accepted (options, filter, pending datagram).
pub const MAX_CHECKPOINT_RECORD: usize = 4 << 20;
/// Largest DATAGRAM record accepted: a 64 KiB payload plus metadata.
pub const MAX_DATAGRAM_RECORD: usize = 70_000;
/// Largest UDP payload (IPv6 jumbograms aside): 65535 - 8.
pub const MAX_PAYLOAD: usize = 65_527;
/// The largest UDP payload over IPv4 (65535 - 20 - 8).
pub const MAX_PAYLOAD_V4: usize = 65_507;
/// Most segments of a UDP_SEGMENT send (`UDP_MAX_SEGMENTS`,
/// include/linux/udp.h).
pub const MAX_SEGMENTS: u64 = 128;
/// Largest image body accepted (a 1 GiB receive buffer is far above any
/// sane rmem_max).
pub const MAX_BODY: u64 = 1 << 30;

/// Why an image was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// Shorter than header + trailer.
    TooShort(usize),
    /// Not an image of this tool.
    BadMagic,
    /// A format version this reader does not know.
    UnsupportedFormat(u32),
    /// Reserved header flags set.
    ReservedFlags(u32),
    /// The body length in the header is beyond [`MAX_BODY`].
    BodyTooLarge(u64),
    /// The file is shorter than the header says.
    Truncated {
        /// Bytes the header announces (header + body + trailer).
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// Bytes after the trailer.
    TrailingBytes(u64),
    /// The checksum (CRC32C, or SHA-256 in format 1) does not match: the
    /// image is corrupted.
    ChecksumMismatch,
    /// A record is malformed.
    BadRecord {
        /// Index of the record in the body.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The body has no CHECKPOINT record first.
    MissingCheckpoint,
    /// Decoded, but the content is inconsistent or out of range.
    Invalid(String),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::TooShort(n) => {
                write!(
                    f,
                    "image too short ({n} bytes): not a checkpoint image or truncated"
                )
            }
            ImageError::BadMagic => write!(f, "bad magic: not a UDP repair checkpoint image"),
            ImageError::UnsupportedFormat(v) => {
                write!(f, "image format version {v} is not supported (this reader knows {FORMAT_VERSION_SHA256} and {FORMAT_VERSION})")
            }
            ImageError::ReservedFlags(x) => write!(f, "reserved header flags {x:#x} set"),
            ImageError::BodyTooLarge(n) => {
                write!(f, "image body of {n} bytes exceeds the {MAX_BODY} limit")
            }
            ImageError::Truncated { expected, actual } => {
                write!(
                    f,
                    "image truncated: header announces {expected} bytes, only {actual} present"
                )
            }
            ImageError::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the checksum"),
            ImageError::ChecksumMismatch => {
                write!(f, "checksum mismatch: the image is corrupted")
            }
            ImageError::BadRecord { index, reason } => write!(f, "record {index}: {reason}"),
            ImageError::MissingCheckpoint => {
                write!(f, "the first record is not a CHECKPOINT record")
            }
            ImageError::Invalid(s) => write!(f, "invalid checkpoint: {s}"),
        }
    }
}

impl std::error::Error for ImageError {}

fn put_record(out: &mut Vec<u8>, kind: u8, msg: &impl prost::Message) {
    let len = msg.encoded_len();
    out.push(kind);
    // Records are bounded well below 4 GiB by construction (a datagram is at
    // most 64 KiB; encode() refuses larger checkpoints through validate()).
    out.extend_from_slice(&(len as u32).to_le_bytes());
    msg.encode(out).expect("Vec<u8> grows as needed");
}

/// The CHECKPOINT record's message: `cp` without its queued datagrams,
/// which go in DATAGRAM records of their own. Copies no datagram (the
/// exhaustive patterns make a new field a compile error here, not a field
/// left out of the image).
fn shell(cp: &Checkpoint) -> Checkpoint {
    let Checkpoint {
        schema_version,
        family,
        protocol,
        bound,
        peer,
        bound_device,
        peek_offset,
        options,
        filter,
        receive_queue,
        send_queue,
        dropped_state,
        kernel_release,
        dumped_at_unix_ns,
        pending_error,
        shutdown,
        bound_ifname,
    } = cp;
    let receive_queue = receive_queue.as_ref().map(|q| {
        let v1::ReceiveQueue {
            count,
            bytes,
            zero_length_vouched,
            zero_length_note,
            rmem_alloc,
            drops,
            datagrams: _,
        } = q;
        v1::ReceiveQueue {
            count: *count,
            bytes: *bytes,
            zero_length_vouched: *zero_length_vouched,
            zero_length_note: zero_length_note.clone(),
            rmem_alloc: *rmem_alloc,
            drops: *drops,
            datagrams: Vec::new(),
        }
    });
    Checkpoint {
        schema_version: *schema_version,
        family: *family,
        protocol: *protocol,
        bound: bound.clone(),
        peer: peer.clone(),
        bound_device: bound_device.clone(),
        peek_offset: *peek_offset,
        options: options.clone(),
        filter: filter.clone(),
        receive_queue,
        send_queue: send_queue.clone(),
        dropped_state: dropped_state.clone(),
        kernel_release: kernel_release.clone(),
        dumped_at_unix_ns: *dumped_at_unix_ns,
        pending_error: *pending_error,
        shutdown: *shutdown,
        bound_ifname: bound_ifname.clone(),
    }
}

/// Serialises a checkpoint into an image of [`FORMAT_VERSION`]. Refuses
/// (with the reason) a checkpoint that [`validate`] rejects, so every
/// written image loads. Each payload is copied once, into the image:
/// [`encode_vectored`]'s bytes in one buffer.
pub fn encode(cp: &Checkpoint) -> Result<Vec<u8>, ImageError> {
    let mut cp = cp.clone();
    let image = encode_vectored(&mut cp)?.to_vec();
    Ok(image)
}

/// An image without copying the payloads: the framing and the records'
/// metadata in one buffer, each payload borrowed from the checkpoint in
/// its place. Its bytes ([`Encoded::slices`], in order) are the image,
/// checksum included ([`encode`] returns them in one buffer); a queue of
/// 4 MiB costs no 4 MiB copy before the write ([`Encoded::write_to`]).
#[derive(Debug)]
pub struct Encoded<'a> {
    /// Header, records without their payload bytes, trailer.
    meta: Vec<u8>,
    /// Each payload, after the byte of `meta` at the offset paired with it.
    payloads: Vec<(usize, &'a [u8])>,
}

impl Encoded<'_> {
    /// The image's length in bytes.
    pub fn len(&self) -> usize {
        self.meta.len() + self.payloads.iter().map(|(_, p)| p.len()).sum::<usize>()
    }

    /// Whether the image is empty (never: it has at least its header).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The image's bytes as slices, in order: 2 per datagram with a
    /// payload, plus 1.
    pub fn slices(&self) -> Vec<std::io::IoSlice<'_>> {
        let mut out = Vec::with_capacity(2 * self.payloads.len() + 1);
        let mut at = 0;
        for &(off, p) in &self.payloads {
            out.push(std::io::IoSlice::new(&self.meta[at..off]));
            out.push(std::io::IoSlice::new(p));
            at = off;
        }
        out.push(std::io::IoSlice::new(&self.meta[at..]));
        out
    }

    /// Writes the image to `w` with vectored writes (at most 1024 slices,
    /// the kernel's `IOV_MAX`, per call).
    ///
    /// # Errors
    /// The first error of `w`; `WriteZero` when it accepts nothing.
    pub fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut slices = self.slices();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = rest.len().min(1024);
            match w.write_vectored(&rest[..n]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(k) => std::io::IoSlice::advance_slices(&mut rest, k),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The image in one buffer (what [`encode`] returns).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        for s in self.slices() {
            v.extend_from_slice(&s);
        }
        v
    }
}

/// The image of `cp` without the payload copies: see [`Encoded`]. Each
/// datagram's payload is taken out of `cp` while the rest of its record
/// is encoded and put back (a `Bytes` move, no copy), so `cp` is as it was
/// when this returns, whatever it returns.
///
/// # Errors
/// A checkpoint that [`validate`] rejects, or a body over [`MAX_BODY`].
pub fn encode_vectored(cp: &mut Checkpoint) -> Result<Encoded<'_>, ImageError> {
    validate(cp)?;
    let head = shell(cp);
    let count = cp.receive_queue.as_ref().map_or(0, |q| q.datagrams.len());
    let mut meta = Vec::with_capacity(HEADER_LEN + head.encoded_len() + count * 64 + TRAILER_LEN);
    meta.extend_from_slice(&MAGIC);
    meta.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    meta.extend_from_slice(&0u32.to_le_bytes());
    meta.extend_from_slice(&0u64.to_le_bytes()); // body length, patched below
    put_record(&mut meta, RECORD_CHECKPOINT, &head);
    // The offset in `meta` after which each payload goes, in queue order.
    let mut offsets = Vec::with_capacity(count);
    for d in cp
        .receive_queue
        .as_mut()
        .map(|q| q.datagrams.as_mut_slice())
        .unwrap_or(&mut [])
    {
        meta.push(RECORD_DATAGRAM);
        meta.extend_from_slice(&(d.encoded_len() as u32).to_le_bytes());
        // prost writes fields in tag order, `payload` (tag 1) first, and
        // leaves it out when empty: its key and length here, its bytes
        // from the checkpoint, then the other fields as prost writes them.
        let payload = std::mem::take(&mut d.payload);
        if !payload.is_empty() {
            meta.push(PAYLOAD_KEY);
            put_varint(&mut meta, payload.len() as u64);
            offsets.push(meta.len());
        }
        d.encode(&mut meta).expect("Vec<u8> grows as needed");
        d.payload = payload;
    }
    let datagrams: &[v1::RecvDatagram] = cp
        .receive_queue
        .as_ref()
        .map(|q| q.datagrams.as_slice())
        .unwrap_or(&[]);
    let payloads: Vec<(usize, &[u8])> = offsets
        .into_iter()
        .zip(datagrams.iter().filter(|d| !d.payload.is_empty()))
        .map(|(off, d)| (off, &d.payload[..]))
        .collect();
    let payload_bytes: usize = payloads.iter().map(|(_, p)| p.len()).sum();
    let body = (meta.len() - HEADER_LEN + payload_bytes) as u64;
    if body > MAX_BODY {
        return Err(ImageError::BodyTooLarge(body));
    }
    meta[16..24].copy_from_slice(&body.to_le_bytes());
    let mut sum = 0u32;
    let mut at = 0;
    for &(off, p) in &payloads {
        sum = crc32c::crc32c_append(sum, &meta[at..off]);
        sum = crc32c::crc32c_append(sum, p);
        at = off;
    }
    sum = crc32c::crc32c_append(sum, &meta[at..]);
    meta.extend_from_slice(&sum.to_le_bytes());
    Ok(Encoded { meta, payloads })
}

/// The key of `RecvDatagram.payload`: field 1, wire type 2 (length
/// delimited).
const PAYLOAD_KEY: u8 = (1 << 3) | 2;

/// Appends `v` as a protobuf varint (7 bits a byte, low first).
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Loads an image: checks header, length and checksum first, then decodes
/// every record and [`validate`]s the result. Any defect refuses the whole
/// image with the reason. Never panics, whatever the bytes. Copies the
/// image once; [`decode_bytes`] does not.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, ImageError> {
    decode_bytes(bytes::Bytes::copy_from_slice(bytes))
}

/// [`decode`] without copies of the payloads: each datagram's `payload`
/// is a slice of `image` (which stays allocated while any is held), so
/// a 4 MiB queue costs no 4 MiB copy. Same checks and errors as
/// [`decode`].
pub fn decode_bytes(image: bytes::Bytes) -> Result<Checkpoint, ImageError> {
    let bytes: &[u8] = &image;
    if bytes.len() < HEADER_LEN + TRAILER_LEN {
        if bytes.len() >= MAGIC.len() && bytes[..MAGIC.len()] != MAGIC {
            return Err(ImageError::BadMagic);
        }
        return Err(ImageError::TooShort(bytes.len()));
    }
    if bytes[..8] != MAGIC {
        return Err(ImageError::BadMagic);
    }
    let version = le_u32(&bytes[8..12]);
    let Some(trailer) = trailer_len(version) else {
        return Err(ImageError::UnsupportedFormat(version));
    };
    let flags = le_u32(&bytes[12..16]);
    if flags != 0 {
        return Err(ImageError::ReservedFlags(flags));
    }
    let body_len = le_u64(&bytes[16..24]);
    if body_len > MAX_BODY {
        return Err(ImageError::BodyTooLarge(body_len));
    }
    // body_len <= 1 GiB: no overflow in usize on 64-bit, nor in u64.
    let expected = HEADER_LEN as u64 + body_len + trailer as u64;
    let actual = bytes.len() as u64;
    if actual < expected {
        return Err(ImageError::Truncated { expected, actual });
    }
    if actual > expected {
        return Err(ImageError::TrailingBytes(actual - expected));
    }
    let end = HEADER_LEN + body_len as usize;
    if !checksum_matches(version, &bytes[..end], &bytes[end..]) {
        return Err(ImageError::ChecksumMismatch);
    }

    let body = &bytes[HEADER_LEN..end];
    let mut pos = 0usize;
    let mut index = 0usize;
    let mut cp: Option<Checkpoint> = None;
    let mut datagrams = Vec::new();
    while pos < body.len() {
        let bad = |reason: String| ImageError::BadRecord { index, reason };
        if body.len() - pos < 5 {
            return Err(bad(format!(
                "record header cut short ({} bytes left)",
                body.len() - pos
            )));
        }
        let kind = body[pos];
        let len = le_u32(&body[pos + 1..pos + 5]) as usize;
        pos += 5;
        if len > body.len() - pos {
            return Err(bad(format!(
                "length {len} runs past the body end ({} bytes left)",
                body.len() - pos
            )));
        }
        let data = &body[pos..pos + len];
        let start = HEADER_LEN + pos;
        pos += len;
        match kind {
            RECORD_CHECKPOINT => {
                if index != 0 {
                    return Err(bad("a second CHECKPOINT record".into()));
                }
                if len > MAX_CHECKPOINT_RECORD {
                    return Err(bad(format!(
                        "CHECKPOINT record of {len} bytes exceeds {MAX_CHECKPOINT_RECORD}"
                    )));
                }
                let c = <Checkpoint as prost::Message>::decode(data)
                    .map_err(|e| bad(format!("CHECKPOINT does not decode: {e}")))?;
                if c.receive_queue
                    .as_ref()
                    .is_some_and(|q| !q.datagrams.is_empty())
                {
                    return Err(bad("CHECKPOINT record carries inline datagrams".into()));
                }
                cp = Some(c);
            }
            RECORD_DATAGRAM => {
                if cp.is_none() {
                    return Err(ImageError::MissingCheckpoint);
                }
                if len > MAX_DATAGRAM_RECORD {
                    return Err(bad(format!(
                        "DATAGRAM record of {len} bytes exceeds {MAX_DATAGRAM_RECORD}"
                    )));
                }
                // Never more than the CHECKPOINT announces: what the parse
                // holds stays bounded by the count it will be checked
                // against, whatever the body's length.
                let announced = cp
                    .as_ref()
                    .and_then(|c| c.receive_queue.as_ref())
                    .map_or(0, |q| q.count as usize);
                if datagrams.len() >= announced {
                    return Err(bad(format!(
                        "more DATAGRAM records than the {announced} the CHECKPOINT announces"
                    )));
                }
                // From a slice of the image: prost takes the payload
                // (a `Bytes` field) as a slice of it, without a copy.
                let d =
                    <v1::RecvDatagram as prost::Message>::decode(image.slice(start..start + len))
                        .map_err(|e| bad(format!("DATAGRAM does not decode: {e}")))?;
                datagrams.push(d);
            }
            k => return Err(bad(format!("unknown record kind {k}"))),
        }
        index += 1;
    }
    let mut cp = cp.ok_or(ImageError::MissingCheckpoint)?;
    let q = cp.receive_queue.get_or_insert_with(Default::default);
    q.datagrams = datagrams;
    validate(&cp)?;
    Ok(cp)
}

fn check_addr(what: &str, a: &v1::SockAddr) -> Result<(), ImageError> {
    if a.ip.len() != 4 && a.ip.len() != 16 {
        return Err(ImageError::Invalid(format!(
            "{what}: address of {} bytes (want 4 or 16)",
            a.ip.len()
        )));
    }
    if a.port > 65535 {
        return Err(ImageError::Invalid(format!(
            "{what}: port {} out of range",
            a.port
        )));
    }
    Ok(())
}

/// Checks everything restore relies on: known versions and enums, address
/// sizes and ports, counts and lengths that agree, payloads within UDP's
/// limit.
pub fn validate(cp: &Checkpoint) -> Result<(), ImageError> {
    let inv = |s: String| Err(ImageError::Invalid(s));
    if cp.schema_version == 0 || cp.schema_version > SCHEMA_VERSION {
        return inv(format!(
            "schema version {} (this reader knows 1..={SCHEMA_VERSION})",
            cp.schema_version
        ));
    }
    if cp.schema_version < schema_for(cp) {
        return inv(format!(
            "schema version {} cannot hold a pending socket error, a shutdown state, interface names or a UDP_GRO segment size (version 2 can)",
            cp.schema_version
        ));
    }
    if cp.bound_ifname.len() > 15 || cp.bound_ifname.bytes().any(|b| b == 0 || b == b'/') {
        return inv(format!("bound interface name {:?}", cp.bound_ifname));
    }
    if cp.shutdown > 3 {
        return inv(format!(
            "shutdown state {} (1 SHUT_RD, 2 SHUT_WR)",
            cp.shutdown
        ));
    }
    if cp.pending_error < 0 || cp.pending_error > 4095 {
        return inv(format!(
            "pending error {} is not an errno",
            cp.pending_error
        ));
    }
    let family = v1::Family::try_from(cp.family)
        .map_err(|_| ImageError::Invalid(format!("family {}", cp.family)))?;
    if family == v1::Family::Unspecified {
        return inv("family unspecified".into());
    }
    let proto = v1::Protocol::try_from(cp.protocol)
        .map_err(|_| ImageError::Invalid(format!("protocol {}", cp.protocol)))?;
    if proto == v1::Protocol::Unspecified {
        return inv("protocol unspecified".into());
    }
    let want_len = if family == v1::Family::Inet { 4 } else { 16 };
    let bound = cp
        .bound
        .as_ref()
        .ok_or_else(|| ImageError::Invalid("no bound address".into()))?;
    check_addr("bound address", bound)?;
    if bound.ip.len() != want_len {
        return inv(format!(
            "bound address of {} bytes on a {family:?} socket",
            bound.ip.len()
        ));
    }
    if let Some(p) = &cp.peer {
        check_addr("peer address", p)?;
        if p.ip.len() != want_len {
            return inv(format!(
                "peer address of {} bytes on a {family:?} socket",
                p.ip.len()
            ));
        }
    }
    if cp.bound_device.len() >= 16 || cp.bound_device.contains('\0') {
        return inv(format!(
            "bound device name {:?} is not an interface name",
            cp.bound_device
        ));
    }
    // Any negative SO_PEEK_OFF is valid (the kernel stores it; it means
    // "not peeking at an offset" like -1), so every i32 is.
    for o in &cp.options {
        if o.value.is_none() {
            return inv(format!("option ({}, {}) without a value", o.level, o.name));
        }
        if let Some(v1::sock_opt::Value::Raw(b)) = &o.value {
            if b.len() > 4096 {
                return inv(format!(
                    "option ({}, {}) of {} bytes",
                    o.level,
                    o.name,
                    b.len()
                ));
            }
        }
        if let Some(v1::sock_opt::Value::Int(v)) = &o.value {
            if i32::try_from(*v).is_err() {
                return inv(format!(
                    "option ({}, {}) value {v} is not an int",
                    o.level, o.name
                ));
            }
        }
    }
    if let Some(f) = &cp.filter {
        if f.insns.is_empty() || f.insns.len() > 4096 {
            return inv(format!(
                "socket filter of {} instructions (1..=4096)",
                f.insns.len()
            ));
        }
    }
    if let Some(q) = &cp.receive_queue {
        if q.datagrams.len() != q.count as usize {
            return inv(format!(
                "receive queue announces {} datagrams, image has {}",
                q.count,
                q.datagrams.len()
            ));
        }
        let mut total = 0u64;
        for (i, d) in q.datagrams.iter().enumerate() {
            if d.payload.len() > MAX_PAYLOAD {
                return inv(format!(
                    "datagram {i}: payload of {} bytes exceeds {MAX_PAYLOAD}",
                    d.payload.len()
                ));
            }
            let v4_source = d.source.as_ref().is_some_and(|s| {
                s.ip.len() == 4
                    || (s.ip.len() == 16
                        && s.ip[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff])
            });
            // A socket bound to a v4-mapped address receives IPv4
            // datagrams only; one bound to a native IPv6 address (not
            // `::`) IPv6 ones only.
            let mapped = |ip: &[u8]| {
                ip.len() == 16 && ip[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
            };
            if want_len == 16 && d.source.is_some() {
                let bound_v4 = mapped(&bound.ip);
                let bound_any = bound.ip.iter().all(|&b| b == 0);
                if (bound_v4 && !v4_source) || (!bound_v4 && !bound_any && v4_source) {
                    return inv(format!(
                        "datagram {i}: an IPv{} source on a socket bound to an IPv{} address",
                        if v4_source { 4 } else { 6 },
                        if bound_v4 { 4 } else { 6 }
                    ));
                }
            }
            if v4_source && d.payload.len() > MAX_PAYLOAD_V4 {
                return inv(format!(
                    "datagram {i}: an IPv4 payload of {} bytes exceeds {MAX_PAYLOAD_V4}",
                    d.payload.len()
                ));
            }
            total += d.payload.len() as u64;
            let src = d
                .source
                .as_ref()
                .ok_or_else(|| ImageError::Invalid(format!("datagram {i}: no source")))?;
            check_addr(&format!("datagram {i} source"), src)?;
            if src.ip.len() != want_len {
                return inv(format!(
                    "datagram {i}: source of {} bytes on a {family:?} socket",
                    src.ip.len()
                ));
            }
            if let Some(dst) = &d.destination {
                check_addr(&format!("datagram {i} destination"), dst)?;
                // An IPv4 socket's IP_PKTINFO destination is an IPv4
                // address; an IPv6 socket's is either (IP_PKTINFO for a
                // v4-mapped datagram, IPV6_PKTINFO).
                if want_len == 4 && dst.ip.len() != 4 {
                    return inv(format!(
                        "datagram {i}: destination of {} bytes on a {family:?} socket",
                        dst.ip.len()
                    ));
                }
                // One datagram is IPv4 or IPv6 end to end: an IPv4 (or
                // v4-mapped) source with an IPv4 destination, an IPv6 one
                // with an IPv6 destination.
                let v4_dst = dst.ip.len() == 4
                    || (dst.ip.len() == 16
                        && dst.ip[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
                if v4_source != v4_dst {
                    return inv(format!(
                        "datagram {i}: an IPv{} source with an IPv{} destination",
                        if v4_source { 4 } else { 6 },
                        if v4_dst { 4 } else { 6 }
                    ));
                }
            }
            if d.ttl.is_some_and(|t| t > 255) || d.tos.is_some_and(|t| t > 255) {
                return inv(format!("datagram {i}: TTL/TOS out of range"));
            }
            if d.timestamp
                .as_ref()
                .is_some_and(|t| t.nsec >= 1_000_000_000)
            {
                return inv(format!("datagram {i}: timestamp nanoseconds out of range"));
            }
            if d.ifname.len() > 15 || d.ifname.bytes().any(|b| b == 0 || b == b'/') {
                return inv(format!("datagram {i}: interface name {:?}", d.ifname));
            }
            // An aggregate holds two segments at least, each of 1..=65535
            // bytes (UDP_SEGMENT takes a u16).
            if let Some(g) = d.gso_size {
                let segs = (d.payload.len() as u64).div_ceil(u64::from(g.max(1)));
                if g == 0
                    || g > 65535
                    || d.payload.len() as u64 <= u64::from(g)
                    || segs > MAX_SEGMENTS
                {
                    return inv(format!(
                        "datagram {i}: UDP_GRO segment size {g} for {} bytes",
                        d.payload.len()
                    ));
                }
            }
        }
        if total != q.bytes {
            return inv(format!(
                "receive queue announces {} bytes, datagrams hold {total}",
                q.bytes
            ));
        }
    }
    if let Some(s) = &cp.send_queue {
        if let Some(p) = &s.pending {
            if p.family != 2 && p.family != 10 {
                return inv(format!("pending datagram of family {}", p.family));
            }
            if family == v1::Family::Inet && p.family != 2 {
                return inv("AF_INET6 data pending on an AF_INET socket".into());
            }
            if p.payload.len() > MAX_PAYLOAD {
                return inv(format!(
                    "pending datagram of {} bytes exceeds {MAX_PAYLOAD}",
                    p.payload.len()
                ));
            }
            let d = p.destination.as_ref().ok_or_else(|| {
                ImageError::Invalid("pending datagram without destination".into())
            })?;
            check_addr("pending destination", d)?;
            if let Some(c) = &p.cork {
                if c.ttl.is_some_and(|t| t > 255)
                    || c.tos.is_some_and(|t| t > 255)
                    || c.hop_limit.is_some_and(|t| t > 255)
                    || c.tclass.is_some_and(|t| t > 255)
                {
                    return inv("pending datagram: cork TTL/TOS out of range".into());
                }
                if let Some(s) = &c.source {
                    check_addr("pending source", s)?;
                }
                if c.ip_options.as_ref().is_some_and(|o| o.len() > 40) {
                    return inv("pending datagram: IP options longer than 40 bytes".into());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
