use super::*;

#[path = "../tests/support/mod.rs"]
mod support;
use proptest::prelude::*;
use support::reseal;
use v1::*;

fn addr(ip: &[u8], port: u32) -> SockAddr {
    SockAddr {
        ip: ip.to_vec(),
        port,
        flowinfo: 0,
        scope_id: 0,
    }
}

fn sample(n: usize) -> Checkpoint {
    let datagrams: Vec<RecvDatagram> = (0..n)
        .map(|i| RecvDatagram {
            payload: vec![i as u8; i % 7].into(),
            source: Some(addr(&[127, 0, 0, 2], 4000 + i as u32)),
            destination: Some(addr(&[127, 0, 0, 1], 5000)),
            ifindex: Some(1),
            ttl: Some(64),
            tos: Some(0x10),
            timestamp: Some(Timestamp {
                sec: 1_700_000_000,
                nsec: 5,
            }),
            peeked: false,
            gso_size: None,
            ifname: String::new(),
        })
        .collect();
    let bytes = datagrams.iter().map(|d| d.payload.len() as u64).sum();
    Checkpoint {
        schema_version: 1,
        family: Family::Inet as i32,
        protocol: Protocol::Udp as i32,
        bound: Some(addr(&[127, 0, 0, 1], 5000)),
        peer: None,
        bound_device: String::new(),
        peek_offset: -1,
        options: vec![
            SockOpt {
                level: 1,
                name: 2,
                value: Some(sock_opt::Value::Int(1)),
            },
            SockOpt {
                level: 0,
                name: 4,
                value: Some(sock_opt::Value::Raw(vec![1, 2, 3])),
            },
        ],
        filter: Some(Filter {
            insns: vec![0x6 | (0xffff_u64 << 32)],
            locked: false,
        }),
        receive_queue: Some(ReceiveQueue {
            count: n as u32,
            bytes,
            zero_length_vouched: true,
            zero_length_note: String::new(),
            rmem_alloc: 0,
            drops: 0,
            datagrams,
        }),
        send_queue: Some(SendQueue {
            udp_cork: true,
            pending: Some(PendingDatagram {
                family: 2,
                payload: b"pending".to_vec(),
                destination: Some(addr(&[127, 0, 0, 3], 9)),
                cork: Some(CorkState {
                    ttl: Some(3),
                    tos: Some(4),
                    ..Default::default()
                }),
                complete: true,
            }),
            reader: "getsockopt".into(),
            dropped: false,
            note: String::new(),
        }),
        dropped_state: vec![],
        kernel_release: "6.18".into(),
        dumped_at_unix_ns: 1,
        pending_error: 0,
        shutdown: 0,
        bound_ifname: String::new(),
    }
}

#[test]
fn round_trip() {
    for n in [0, 1, 5, 100] {
        let cp = sample(n);
        let img = encode(&cp).unwrap();
        assert_eq!(decode(&img).unwrap(), cp, "{n} datagrams");
    }
}

/// A writer that accepts at most `chunk` bytes per call, across slices.
struct Trickle {
    out: Vec<u8>,
    chunk: usize,
}

impl std::io::Write for Trickle {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = b.len().min(self.chunk);
        self.out.extend_from_slice(&b[..n]);
        Ok(n)
    }
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let mut n = 0;
        for b in bufs {
            let k = b.len().min(self.chunk - n);
            self.out.extend_from_slice(&b[..k]);
            n += k;
            if n == self.chunk {
                break;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_vectored_image_is_the_image_at_varint_boundaries() {
    for len in [0usize, 1, 127, 128, 16_383, 16_384, 65_507] {
        let mut cp = sample(3);
        for d in &mut cp.receive_queue.as_mut().unwrap().datagrams {
            d.payload = vec![0xa5; len].into();
        }
        let q = cp.receive_queue.as_mut().unwrap();
        q.bytes = 3 * len as u64;
        let img = encode(&cp).unwrap();
        let mut c = cp.clone();
        assert_eq!(
            encode_vectored(&mut c).unwrap().to_vec(),
            img,
            "payloads of {len} bytes"
        );
        assert_eq!(decode(&img).unwrap(), cp);
    }
}

#[test]
fn every_truncation_is_refused_with_a_reason() {
    let img = encode(&sample(3)).unwrap();
    for cut in 0..img.len() {
        let e = decode(&img[..cut]).unwrap_err();
        let ok = matches!(e, ImageError::TooShort(_) | ImageError::Truncated { .. });
        assert!(ok, "cut at {cut}: {e}");
    }
    let e = decode(&img[..img.len() - 1]).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn every_bit_flip_is_refused() {
    let img = encode(&sample(2)).unwrap();
    for i in 0..img.len() {
        for bit in [0, 3, 7] {
            let mut m = img.clone();
            m[i] ^= 1 << bit;
            assert!(
                decode(&m).is_err(),
                "flip of bit {bit} at byte {i} accepted"
            );
        }
    }
    let mut m = img.clone();
    let mid = HEADER_LEN + 10;
    m[mid] ^= 0x40;
    assert_eq!(decode(&m).unwrap_err(), ImageError::ChecksumMismatch);
}

#[test]
fn specific_refusals() {
    let img = encode(&sample(1)).unwrap();
    let mut m = img.clone();
    m[0] = b'X';
    assert_eq!(decode(&m).unwrap_err(), ImageError::BadMagic);
    let mut m = img.clone();
    m[8] = 9;
    assert_eq!(decode(&m).unwrap_err(), ImageError::UnsupportedFormat(9));
    let mut m = img.clone();
    m.push(0);
    assert_eq!(decode(&m).unwrap_err(), ImageError::TrailingBytes(1));
    assert!(matches!(decode(b"").unwrap_err(), ImageError::TooShort(0)));
}

/// The image of `cp` in format 1: the same header and body, version 1,
/// and a SHA-256 trailer.
fn format1(cp: &Checkpoint) -> Vec<u8> {
    let img = encode(cp).unwrap();
    let mut v1 = img[..img.len() - TRAILER_LEN].to_vec();
    v1[8..12].copy_from_slice(&FORMAT_VERSION_SHA256.to_le_bytes());
    v1.extend_from_slice(&[0u8; TRAILER_LEN_SHA256]);
    reseal(v1)
}

#[test]
fn format1_images_still_load_and_their_checksum_is_checked() {
    let cp = sample(3);
    let old = format1(&cp);
    assert_eq!(&old[8..12], &1u32.to_le_bytes());
    assert_eq!(decode(&old).unwrap(), cp);
    let mut m = old.clone();
    m[HEADER_LEN + 10] ^= 1;
    assert_eq!(decode(&m).unwrap_err(), ImageError::ChecksumMismatch);
    // A format 1 image cut to a format 2 trailer's length is truncated,
    // not read with the other trailer.
    let cut = &old[..old.len() - (TRAILER_LEN_SHA256 - TRAILER_LEN)];
    assert!(matches!(
        decode(cut).unwrap_err(),
        ImageError::Truncated { .. }
    ));
    // The writer writes format 2, with a CRC32C (Castagnoli) trailer.
    let img = encode(&cp).unwrap();
    assert_eq!(&img[8..12], &FORMAT_VERSION.to_le_bytes());
    let end = img.len() - TRAILER_LEN;
    // The check value of CRC32C: "123456789" sums to 0xe3069283.
    assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    assert_eq!(&img[end..], &crc32c::crc32c(&img[..end]).to_le_bytes()[..]);
}

#[test]
fn decode_bytes_lends_payloads_from_the_image() {
    let cp = sample(4);
    let img = bytes::Bytes::from(encode(&cp).unwrap());
    let range = img.as_ptr_range();
    let got = decode_bytes(img.clone()).unwrap();
    assert_eq!(got, cp);
    for d in &got.receive_queue.as_ref().unwrap().datagrams {
        if !d.payload.is_empty() {
            assert!(
                range.contains(&d.payload.as_ptr()),
                "a payload was copied out of the image"
            );
        }
    }
}

/// Rewrites the trailer so that a mutated body passes the checksum and
/// reaches the record parser and validate().

#[test]
fn resealed_semantic_errors_are_refused() {
    // A datagram count that disagrees with the records.
    let mut cp = sample(2);
    cp.receive_queue.as_mut().unwrap().datagrams.pop();
    assert!(encode(&cp).is_err());
    // Newer schema than this reader knows.
    let mut cp = sample(0);
    cp.schema_version = SCHEMA_VERSION + 1;
    assert!(matches!(encode(&cp).unwrap_err(), ImageError::Invalid(_)));
    // Version-2 state in an image that says version 1: a version-1 reader
    // would drop it silently, so the image is refused.
    let mut cp = sample(0);
    cp.pending_error = libc_econnrefused();
    assert!(matches!(encode(&cp).unwrap_err(), ImageError::Invalid(_)));
    cp.schema_version = 2;
    assert_eq!(decode(&encode(&cp).unwrap()).unwrap(), cp);
    cp.pending_error = -1;
    assert!(encode(&cp).is_err());
    // An IPv6 destination recorded for a datagram of an IPv4 socket.
    let mut cp = sample(1);
    cp.receive_queue.as_mut().unwrap().datagrams[0].destination = Some(addr(
        &[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        5000,
    ));
    let e = encode(&cp).unwrap_err();
    assert!(e.to_string().contains("destination of 16 bytes"), "{e}");
    // A record cut inside, resealed: the parser names the record.
    let img = encode(&sample(2)).unwrap();
    let mut body = img[..img.len() - TRAILER_LEN - 3].to_vec();
    body.extend_from_slice(&[0u8; TRAILER_LEN]);
    let e = decode(&reseal(body)).unwrap_err();
    assert!(matches!(e, ImageError::BadRecord { .. }), "{e}");
}

/// ECONNREFUSED on Linux (the proto crate does not depend on libc).
fn libc_econnrefused() -> i32 {
    111
}

fn arb_addr(v6: bool) -> impl Strategy<Value = SockAddr> {
    let n = if v6 { 16 } else { 4 };
    (
        proptest::collection::vec(any::<u8>(), n),
        0u32..65536,
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(ip, port, flowinfo, scope_id)| SockAddr {
            ip,
            port,
            flowinfo,
            scope_id,
        })
}

fn arb_checkpoint() -> impl Strategy<Value = Checkpoint> {
    any::<bool>().prop_flat_map(|v6| {
        let dgram = (
            proptest::collection::vec(any::<u8>(), 0..300),
            arb_addr(v6),
            proptest::option::of(arb_addr(v6)),
            proptest::option::of(0u32..256),
            proptest::option::of(any::<u32>()),
        )
            .prop_map(|(payload, src, dst, ttl, ifindex)| RecvDatagram {
                payload: payload.into(),
                source: Some(src),
                destination: dst,
                ifindex,
                ttl,
                tos: ttl,
                timestamp: None,
                peeked: false,
                gso_size: None,
                ifname: String::new(),
            });
        (
            arb_addr(v6),
            proptest::option::of(arb_addr(v6)),
            proptest::collection::vec(dgram, 0..8),
            -1i32..100,
            proptest::collection::vec((any::<i32>(), any::<i32>(), any::<i32>()), 0..10),
        )
            .prop_map(move |(bound, peer, datagrams, peek, opts)| {
                let bytes = datagrams.iter().map(|d| d.payload.len() as u64).sum();
                Checkpoint {
                    schema_version: 1,
                    family: if v6 { Family::Inet6 } else { Family::Inet } as i32,
                    protocol: Protocol::Udp as i32,
                    bound: Some(bound),
                    peer,
                    peek_offset: peek,
                    options: opts
                        .into_iter()
                        .map(|(l, n, v)| SockOpt {
                            level: l,
                            name: n,
                            value: Some(sock_opt::Value::Int(v.into())),
                        })
                        .collect(),
                    receive_queue: Some(ReceiveQueue {
                        count: datagrams.len() as u32,
                        bytes,
                        datagrams,
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            })
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
    ]
}

fn apply(img: &mut Vec<u8>, m: &Mutation) {
    if img.is_empty() {
        return;
    }
    match m {
        Mutation::Flip(i, b) => {
            let i = i % img.len();
            img[i] ^= b | 1;
        }
        Mutation::Set(i, b) => {
            let i = i % img.len();
            img[i] = *b;
        }
        Mutation::Truncate(n) => img.truncate(n % img.len()),
        Mutation::Insert(i, v) => {
            let i = i % (img.len() + 1);
            img.splice(i..i, v.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let i = i % img.len();
            let e = (i + n).min(img.len());
            img.drain(i..e);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode(&bytes);
        // And with a valid header + checksum around random records.
        let mut img = Vec::new();
        img.extend_from_slice(&MAGIC);
        img.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        img.extend_from_slice(&0u32.to_le_bytes());
        img.extend_from_slice(&0u64.to_le_bytes());
        img.extend_from_slice(&bytes);
        img.extend_from_slice(&[0u8; TRAILER_LEN]);
        let _ = decode(&reseal(img));
    }

    #[test]
    fn round_trips(cp in arb_checkpoint()) {
        let img = encode(&cp).unwrap();
        prop_assert_eq!(decode(&img).unwrap(), cp);
    }

    #[test]
    fn the_vectored_image_is_the_image(cp in arb_checkpoint(), chunk in 1usize..300) {
        let img = encode(&cp).unwrap();
        let mut c = cp.clone();
        let v = encode_vectored(&mut c).unwrap();
        prop_assert_eq!(v.len(), img.len());
        prop_assert_eq!(&v.to_vec(), &img);
        // Through a writer that takes at most `chunk` bytes a call.
        let mut w = Trickle { out: Vec::new(), chunk };
        v.write_to(&mut w).unwrap();
        prop_assert_eq!(&w.out, &img);
        drop(v);
        prop_assert_eq!(c, cp);
    }

    #[test]
    fn mutated_images_are_refused_never_panic(cp in arb_checkpoint(), ms in proptest::collection::vec(arb_mutation(), 1..4)) {
        let img = encode(&cp).unwrap();
        let mut m = img.clone();
        for x in &ms { apply(&mut m, x); }
        if m != img {
            // Any change to a sealed image is refused.
            prop_assert!(decode(&m).is_err());
        }
        // Resealed, the change reaches the parser: it must not panic, and
        // whatever it accepts must re-validate and re-encode.
        if let Ok(cp2) = decode(&reseal(m)) {
            prop_assert!(validate(&cp2).is_ok());
            prop_assert!(encode(&cp2).is_ok());
        }
    }
}
