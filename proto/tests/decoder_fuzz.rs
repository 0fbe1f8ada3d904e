//! The decoder as a fuzz target, in-process on stable Rust: images whose
//! bytes are mutated and then re-framed (body length and CRC32C trailer
//! recomputed), so that every mutation reaches the record parser and
//! [`validate`], plus images that lie about their counts. Each decode runs
//! under an allocation cap of [`bound`] bytes for its input (the `cap`
//! allocator, global to this test binary, which holds one test): an
//! image that asks for more aborts the binary, and the test fails.
//!
//! Each image is either refused with a reason, or accepted as one that
//! re-validates and re-encodes to the same checkpoint. The figures (images
//! tried, refused by reason, accepted) are printed.
//!
//! `UDP_REPAIR_DECODER_FUZZ_CASES` sets how many mutated images (default
//! 100 000; CI runs the default); `UDP_REPAIR_DECODER_FUZZ_SEED` the seed.

use std::alloc::System;
use std::collections::BTreeMap;

use cap::Cap;
mod support;
use support::{reseal, Rng};
use udp_repair_proto::v1::{self, Checkpoint};
use udp_repair_proto::{
    decode, encode, validate, ImageError, HEADER_LEN, RECORD_DATAGRAM, TRAILER_LEN,
    TRAILER_LEN_SHA256,
};

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// The most a decode of `n` input bytes may hold at once: 96 bytes per
/// input byte (a DATAGRAM record of 5 bytes becomes one `RecvDatagram` in a
/// growing `Vec`), plus 1 MiB.
fn bound(n: usize) -> usize {
    96 * n + (1 << 20)
}

/// Decodes `img` with the allocator capped at what is held now plus
/// [`bound`]`(img.len())`.
fn capped_decode(img: &[u8]) -> Result<Checkpoint, ImageError> {
    let held = ALLOC.allocated();
    ALLOC
        .set_limit(held + bound(img.len()))
        .expect("the cap is above what is held");
    let r = decode(img);
    ALLOC.set_limit(usize::MAX).expect("lifting the cap");
    r
}

fn addr(ip: &[u8], port: u32) -> v1::SockAddr {
    v1::SockAddr {
        ip: ip.to_vec(),
        port,
        flowinfo: 0,
        scope_id: 0,
    }
}

/// A valid checkpoint of `n` queued datagrams (IPv4 or IPv6), with a
/// pending datagram and options.
fn sample(n: usize, v6: bool) -> Checkpoint {
    let (lo, peer): (&[u8], &[u8]) = if v6 {
        (
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        )
    } else {
        (&[127, 0, 0, 1], &[127, 0, 0, 2])
    };
    let datagrams: Vec<v1::RecvDatagram> = (0..n)
        .map(|i| v1::RecvDatagram {
            payload: vec![i as u8; (i * 37) % 300].into(),
            source: Some(addr(peer, 4000 + i as u32)),
            destination: Some(addr(lo, 5000)),
            ifindex: Some(1),
            ttl: Some(64),
            tos: Some(0x10),
            timestamp: Some(v1::Timestamp {
                sec: 1_700_000_000,
                nsec: i as u32,
            }),
            peeked: i == 0,
            gso_size: None,
            ifname: if v6 { "lo".into() } else { String::new() },
        })
        .collect();
    let bytes = datagrams.iter().map(|d| d.payload.len() as u64).sum();
    Checkpoint {
        schema_version: 2,
        family: if v6 {
            v1::Family::Inet6 as i32
        } else {
            v1::Family::Inet as i32
        },
        protocol: v1::Protocol::Udp as i32,
        bound: Some(addr(lo, 5000)),
        peer: None,
        bound_device: String::new(),
        peek_offset: -1,
        options: vec![v1::SockOpt {
            level: libc_sol_socket(),
            name: 2,
            value: Some(v1::sock_opt::Value::Int(1)),
        }],
        filter: None,
        receive_queue: Some(v1::ReceiveQueue {
            count: n as u32,
            bytes,
            zero_length_vouched: true,
            zero_length_note: String::new(),
            rmem_alloc: 0,
            drops: 0,
            datagrams,
        }),
        send_queue: Some(v1::SendQueue {
            udp_cork: true,
            pending: Some(v1::PendingDatagram {
                family: if v6 { 10 } else { 2 },
                payload: b"pending".to_vec(),
                destination: Some(addr(lo, 9)),
                cork: Some(v1::CorkState {
                    ttl: Some(3),
                    ..Default::default()
                }),
                complete: true,
            }),
            reader: "getsockopt".into(),
            dropped: false,
            note: String::new(),
        }),
        dropped_state: vec![],
        kernel_release: "7.1.5".into(),
        dumped_at_unix_ns: 1,
        pending_error: 0,
        shutdown: 0,
        bound_ifname: String::new(),
    }
}

fn libc_sol_socket() -> i32 {
    1
}

/// One random change to the body (the header's length and the trailer are
/// recomputed after): a flipped or set byte, a cut, an inserted or removed
/// run, a record length rewritten, or a run copied from elsewhere (a
/// duplicated record).
fn mutate(img: &mut Vec<u8>, rng: &mut Rng) {
    let body = HEADER_LEN..img.len() - TRAILER_LEN;
    if body.is_empty() {
        return;
    }
    let at = body.start + rng.below(body.len());
    match rng.below(7) {
        0 => img[at] ^= 1 << rng.below(8),
        1 => img[at] = rng.next() as u8,
        2 => {
            let keep = at..body.end;
            img.drain(keep);
        }
        3 => {
            let n = 1 + rng.below(16);
            let run: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            img.splice(at..at, run);
        }
        4 => {
            let e = (at + 1 + rng.below(16)).min(body.end);
            img.drain(at..e);
        }
        5 => {
            // A little-endian u32 (a record length, or a count in a
            // varint's place) set to a large or boundary value.
            let v: u32 = [0, 1, 0xff, 0xffff, 0x00ff_ffff, u32::MAX][rng.below(6)];
            let e = (at + 4).min(body.end);
            img[at..e].copy_from_slice(&v.to_le_bytes()[..e - at]);
        }
        _ => {
            let from = body.start + rng.below(body.len());
            let n = (1 + rng.below(64)).min(body.end - from);
            let run = img[from..from + n].to_vec();
            img.splice(at..at, run);
        }
    }
}

fn reason(e: &ImageError) -> &'static str {
    match e {
        ImageError::BadRecord { .. } => "bad record",
        ImageError::MissingCheckpoint => "missing checkpoint",
        ImageError::Invalid(_) => "invalid checkpoint",
        ImageError::Truncated { .. } => "truncated",
        ImageError::TrailingBytes(_) => "trailing bytes",
        ImageError::ChecksumMismatch => "checksum",
        _ => "other",
    }
}

/// 10^5 empty DATAGRAM records behind a CHECKPOINT that announces 3:
/// refused at the fourth, with the cap set to what 3 need.
fn records_beyond_the_count_are_refused_at_once() {
    let honest = encode(&sample(3, false)).expect("encodes");
    let mut img = honest[..honest.len() - TRAILER_LEN].to_vec();
    for _ in 0..100_000 {
        img.extend_from_slice(&[RECORD_DATAGRAM, 0, 0, 0, 0]);
    }
    img.extend_from_slice(&[0; TRAILER_LEN]);
    let img = reseal(img);
    let held = ALLOC.allocated();
    ALLOC
        .set_limit(held + 4 * honest.len() + (1 << 20))
        .expect("the cap is above what is held");
    let r = decode(&img);
    ALLOC.set_limit(usize::MAX).expect("lifting the cap");
    let why = r.expect_err("refused").to_string();
    assert!(why.contains("more DATAGRAM records than the 3"), "{why}");
}

/// One test, so that nothing else allocates while a decode runs capped.
#[test]
fn hostile_images() {
    records_beyond_the_count_are_refused_at_once();
    lying_counts_are_refused_without_big_allocations();
    mutated_reframed_images_are_refused_or_accepted_whole();
}

fn mutated_reframed_images_are_refused_or_accepted_whole() {
    let cases: usize = std::env::var("UDP_REPAIR_DECODER_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = std::env::var("UDP_REPAIR_DECODER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0001);
    let mut rng = Rng::new(seed);
    let samples: Vec<Vec<u8>> = [0, 1, 3, 17, 64]
        .iter()
        .flat_map(|&n| [sample(n, false), sample(n, true)])
        .map(|cp| encode(&cp).expect("a valid sample encodes"))
        .collect();
    let mut refused: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut accepted = 0usize;
    let mut unchanged = 0usize;
    let t0 = std::time::Instant::now();
    for i in 0..cases {
        let base = &samples[i % samples.len()];
        let mut m = base.clone();
        for _ in 0..1 + rng.below(3) {
            mutate(&mut m, &mut rng);
        }
        let m = reseal(m);
        if m == *base {
            unchanged += 1;
            continue;
        }
        match capped_decode(&m) {
            Err(e) => {
                assert!(!e.to_string().is_empty(), "a refusal without a reason");
                *refused.entry(reason(&e)).or_default() += 1;
            }
            Ok(cp) => {
                // Accepted: whole and consistent, as the restore will
                // take it.
                validate(&cp).expect("an accepted image re-validates");
                let again = encode(&cp).expect("an accepted image re-encodes");
                assert_eq!(
                    decode(&again).expect("and decodes"),
                    cp,
                    "image {i}: accepted, but its checkpoint does not round-trip"
                );
                accepted += 1;
            }
        }
    }
    let total: usize = refused.values().sum();
    println!(
        "decoder fuzz: {cases} mutated images (seed {seed:#x}) in {:.1} s: {total} refused {refused:?}, \
         {accepted} accepted whole, {unchanged} unchanged by their mutations; cap {} bytes per input byte \
         + 1 MiB",
        t0.elapsed().as_secs_f64(),
        bound(1) - (1 << 20)
    );
    assert_eq!(total + accepted + unchanged, cases);
    assert!(total > cases / 2, "most mutations should be refused");
}

/// An image whose counts promise far more than it holds is refused with
/// the reason, and its decode stays under the cap: nothing is sized from a
/// count the image states.
fn lying_counts_are_refused_without_big_allocations() {
    for (count, bytes) in [(u32::MAX, 0u64), (1 << 20, u64::MAX), (3, 1 << 40)] {
        let mut cp = sample(3, false);
        let q = cp.receive_queue.as_mut().expect("a queue");
        q.count = count;
        q.bytes = bytes;
        // encode() validates; build the image from an honest one and patch
        // the CHECKPOINT record instead.
        let honest = encode(&sample(3, false)).expect("encodes");
        let lying = {
            let mut c = cp.clone();
            c.receive_queue.as_mut().expect("a queue").datagrams.clear();
            prost::Message::encode_to_vec(&c)
        };
        let mut img = honest[..HEADER_LEN].to_vec();
        img.push(honest[HEADER_LEN]);
        img.extend_from_slice(&(lying.len() as u32).to_le_bytes());
        img.extend_from_slice(&lying);
        // Keep the honest image's DATAGRAM records.
        let rec_len = u32::from_le_bytes(
            honest[HEADER_LEN + 1..HEADER_LEN + 5]
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        img.extend_from_slice(&honest[HEADER_LEN + 5 + rec_len..honest.len() - TRAILER_LEN]);
        img.extend_from_slice(&[0; TRAILER_LEN]);
        let e = capped_decode(&reseal(img)).expect_err("a lying count is refused");
        let why = e.to_string();
        assert!(
            why.contains("announces") || why.contains("bytes"),
            "count {count}, bytes {bytes}: {why}"
        );
    }
}
