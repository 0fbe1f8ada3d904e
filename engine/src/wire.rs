//! Byte layouts the dump and restore exchange with the kernel, in safe code:
//! `sockaddr_in`/`sockaddr_in6`, cmsgs (x86_64/aarch64 layout: a
//! `size_t` length, two ints, data at `CMSG_ALIGN` = 8), and the IPv4/IPv6 +
//! UDP headers that the raw restore strategy writes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use udp_repair_proto::v1;

/// `sizeof(struct cmsghdr)` on 64-bit Linux.
pub const CMSG_HDR: usize = 16;

// The byte layouts of this module (cmsg headers), of peek.rs (the
// timespecs of SO_TIMESTAMP* cmsgs) and of dump.rs (struct group_filter:
// gf_group at 8, gf_fmode at 136, gf_numsrc at 140, gf_slist at 144) are
// those of 64-bit Linux on x86_64 and aarch64. Elsewhere the build fails
// here rather than misreading them at run time.
#[cfg(not(all(
    target_os = "linux",
    target_pointer_width = "64",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
compile_error!(
    "udp-repair-engine lays out cmsgs, timespecs and struct group_filter for 64-bit Linux \
     (x86_64, aarch64) only"
);

const _: () = {
    use std::mem::{align_of, size_of};
    assert!(size_of::<libc::cmsghdr>() == CMSG_HDR);
    assert!(align_of::<libc::cmsghdr>() == 8);
    assert!(size_of::<libc::timespec>() == 16);
    assert!(size_of::<libc::timeval>() == 16);
    assert!(size_of::<libc::sockaddr_in>() == 16);
    assert!(size_of::<libc::sockaddr_in6>() == 28);
    // struct group_filter's offsets follow from these two.
    assert!(size_of::<libc::sockaddr_storage>() == 128);
    assert!(align_of::<libc::sockaddr_storage>() == 8);
};

/// `CMSG_ALIGN(n)`.
pub const fn cmsg_align(n: usize) -> usize {
    (n + 7) & !7
}

/// `CMSG_SPACE(n)`.
pub const fn cmsg_space(n: usize) -> usize {
    CMSG_HDR + cmsg_align(n)
}

/// One cmsg as (level, type, data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cmsg<'a> {
    /// `cmsg_level`.
    pub level: i32,
    /// `cmsg_type`.
    pub kind: i32,
    /// The data after the header.
    pub data: &'a [u8],
}

/// Iterates the cmsgs of a control buffer the kernel filled (`len` bytes).
/// Stops at the first malformed header instead of reading past it.
pub fn cmsgs(buf: &[u8]) -> impl Iterator<Item = Cmsg<'_>> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off + CMSG_HDR > buf.len() {
            return None;
        }
        let len = u64::from_ne_bytes(buf[off..off + 8].try_into().ok()?) as usize;
        if len < CMSG_HDR || len > buf.len() - off {
            return None;
        }
        let level = i32::from_ne_bytes(buf[off + 8..off + 12].try_into().ok()?);
        let kind = i32::from_ne_bytes(buf[off + 12..off + 16].try_into().ok()?);
        let data = &buf[off + CMSG_HDR..off + len];
        off += cmsg_align(len);
        Some(Cmsg { level, kind, data })
    })
}

/// Builds a control buffer cmsg by cmsg.
#[derive(Debug, Default, Clone)]
pub struct CmsgBuilder {
    buf: Vec<u8>,
}

impl CmsgBuilder {
    /// Appends one cmsg.
    pub fn push(&mut self, level: i32, kind: i32, data: &[u8]) -> &mut Self {
        let len = CMSG_HDR + data.len();
        self.buf.extend_from_slice(&(len as u64).to_ne_bytes());
        self.buf.extend_from_slice(&level.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf
            .resize(self.buf.len() + cmsg_align(data.len()) - data.len(), 0);
        self
    }
    /// Appends an int cmsg.
    pub fn push_int(&mut self, level: i32, kind: i32, v: i32) -> &mut Self {
        self.push(level, kind, &v.to_ne_bytes())
    }
    /// The buffer (empty: no cmsg).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// Encodes a socket address as `sockaddr_in`/`sockaddr_in6` bytes.
pub fn sockaddr_bytes(a: &SocketAddr) -> Vec<u8> {
    match a {
        SocketAddr::V4(a) => {
            let mut b = Vec::with_capacity(16);
            b.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b.extend_from_slice(&a.port().to_be_bytes());
            b.extend_from_slice(&a.ip().octets());
            b.extend_from_slice(&[0u8; 8]);
            b
        }
        SocketAddr::V6(a) => {
            let mut b = Vec::with_capacity(28);
            b.extend_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b.extend_from_slice(&a.port().to_be_bytes());
            b.extend_from_slice(&a.flowinfo().to_be_bytes());
            b.extend_from_slice(&a.ip().octets());
            b.extend_from_slice(&a.scope_id().to_ne_bytes());
            b
        }
    }
}

/// Decodes `sockaddr_in`/`sockaddr_in6` bytes.
pub fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    if b.len() < 2 {
        return None;
    }
    let family = i32::from(u16::from_ne_bytes([b[0], b[1]]));
    if family == libc::AF_INET && b.len() >= 8 {
        let port = u16::from_be_bytes([b[2], b[3]]);
        let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
        Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
    } else if family == libc::AF_INET6 && b.len() >= 28 {
        let port = u16::from_be_bytes([b[2], b[3]]);
        let flow = u32::from_be_bytes(b[4..8].try_into().ok()?);
        let ip: [u8; 16] = b[8..24].try_into().ok()?;
        let scope = u32::from_ne_bytes(b[24..28].try_into().ok()?);
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            flow,
            scope,
        )))
    } else {
        None
    }
}

/// A socket address as the image stores it.
pub fn to_proto(a: &SocketAddr) -> v1::SockAddr {
    match a {
        SocketAddr::V4(a) => v1::SockAddr {
            ip: a.ip().octets().to_vec(),
            port: a.port().into(),
            flowinfo: 0,
            scope_id: 0,
        },
        SocketAddr::V6(a) => v1::SockAddr {
            ip: a.ip().octets().to_vec(),
            port: a.port().into(),
            flowinfo: a.flowinfo(),
            scope_id: a.scope_id(),
        },
    }
}

/// An image address as a socket address (the image was validated: 4 or 16
/// bytes, port in range; anything else maps to a harmless default).
pub fn from_proto(a: &v1::SockAddr) -> SocketAddr {
    let port = u16::try_from(a.port).unwrap_or(0);
    if let Ok(ip) = <[u8; 16]>::try_from(a.ip.as_slice()) {
        SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            a.flowinfo,
            a.scope_id,
        ))
    } else if let Ok(ip) = <[u8; 4]>::try_from(a.ip.as_slice()) {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))
    } else {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
    }
}

/// The IPv4 address behind an IPv4 or v4-mapped IPv6 address.
pub fn as_v4(ip: &IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    }
}

/// Whether `ip` is an IPv6 link-local address (fe80::/10), which only
/// names a host together with an interface (its scope).
pub fn is_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80)
}

/// Canonical form: v4-mapped IPv6 addresses become IPv4.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => a,
        },
        a => a,
    }
}

fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn add_bytes(mut sum: u64, b: &[u8]) -> u64 {
    // 64 bits at a time into a 128-bit accumulator: a one's complement sum
    // of big-endian 64-bit words folds to the same 16-bit sum as one of
    // 16-bit words (RFC 1071, 2.(B)), and 2^64 words of input cannot
    // overflow it. Then the 16-bit tail. The result stays unfolded.
    let mut words = b.chunks_exact(8);
    let mut wide = 0u128;
    for w in &mut words {
        wide += u128::from(u64::from_be_bytes(w.try_into().expect("8 bytes")));
    }
    // Fold 128 -> 64 -> 32 bits with the end-around carries.
    let mut w64 = (wide as u64 as u128) + (wide >> 64);
    w64 = (w64 as u64 as u128) + (w64 >> 64);
    let w64 = w64 as u64;
    sum += (w64 & 0xffff_ffff) + (w64 >> 32);
    let b = words.remainder();
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

/// Internet checksum of `b` (RFC 1071), as stored in a header.
pub fn inet_checksum(b: &[u8]) -> u16 {
    !fold(add_bytes(0, b))
}

/// Everything the raw strategy needs to write one datagram's headers.
#[derive(Debug, Clone, Copy)]
pub struct RawDatagram<'a> {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port (same family as `src`).
    pub dst: SocketAddr,
    /// TTL / hop limit.
    pub ttl: u8,
    /// TOS / traffic class.
    pub tos: u8,
    /// IPPROTO_UDP or IPPROTO_UDPLITE.
    pub protocol: u8,
    /// UDP payload.
    pub payload: &'a [u8],
}

/// Writes the UDP (or UDP-Lite, full coverage) header with its checksum
/// over header and `d.payload`, which it does not copy. The pseudo-header
/// follows RFC 768 / RFC 2460 8.1; UDP-Lite (RFC 3828) puts the checksum
/// coverage (0: whole datagram) where UDP has the length.
fn udp_header(d: &RawDatagram<'_>, out: &mut Vec<u8>) {
    let ulen = (8 + d.payload.len()) as u32;
    let len_field = if d.protocol == libc::IPPROTO_UDPLITE as u8 {
        0u16
    } else {
        ulen as u16
    };
    let start = out.len();
    out.extend_from_slice(&d.src.port().to_be_bytes());
    out.extend_from_slice(&d.dst.port().to_be_bytes());
    out.extend_from_slice(&len_field.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    // UDP over IPv4 may carry no checksum (0, RFC 768), and the receiving
    // kernel then verifies none (udp4_csum_init(),
    // skb_checksum_init_zero_check(): zero is okay): a re-created datagram
    // only crosses the loopback to a socket of this host, its payload
    // unchanged, so the checksum of a 64 KiB payload is not worth computing
    // twice. IPv6 (RFC 8200 8.1) and UDP-Lite (RFC 3828) need one.
    if d.protocol == libc::IPPROTO_UDP as u8 && d.src.is_ipv4() && d.dst.is_ipv4() {
        return;
    }
    let mut sum = 0u64;
    match (d.src.ip(), d.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(t)) => {
            sum = add_bytes(sum, &s.octets());
            sum = add_bytes(sum, &t.octets());
            sum += u64::from(d.protocol);
            sum += u64::from(ulen);
        }
        (s, t) => {
            let s = match s {
                IpAddr::V6(s) => s,
                IpAddr::V4(s) => s.to_ipv6_mapped(),
            };
            let t = match t {
                IpAddr::V6(t) => t,
                IpAddr::V4(t) => t.to_ipv6_mapped(),
            };
            sum = add_bytes(sum, &s.octets());
            sum = add_bytes(sum, &t.octets());
            sum += u64::from(ulen);
            sum += u64::from(d.protocol);
        }
    }
    // The header is 8 bytes: the payload's 16-bit words keep their parity.
    sum = add_bytes(sum, &out[start..]);
    sum = add_bytes(sum, d.payload);
    let mut c = !fold(sum);
    if c == 0 {
        c = 0xffff;
    }
    out[start + 6..start + 8].copy_from_slice(&c.to_be_bytes());
}

/// A complete IPv4 packet (20-byte header, DF set) for `IPPROTO_RAW`:
/// [`ipv4_headers`], then the payload.
pub fn ipv4_packet(d: &RawDatagram<'_>, out: &mut Vec<u8>) {
    ipv4_headers(d, out);
    if !out.is_empty() {
        out.extend_from_slice(d.payload);
    }
}

/// The IPv4 and UDP headers (28 bytes, checksums over the payload
/// included) of `d`, for a raw send that gathers them with the payload.
/// Writes nothing when `d` is not IPv4.
pub fn ipv4_headers(d: &RawDatagram<'_>, out: &mut Vec<u8>) {
    let (IpAddr::V4(s), IpAddr::V4(t)) = (d.src.ip(), d.dst.ip()) else {
        return;
    };
    out.clear();
    let total = (20 + 8 + d.payload.len()) as u16;
    out.extend_from_slice(&[0x45, d.tos]);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0x40, 0]); // id (kernel fills), DF
    out.extend_from_slice(&[d.ttl, d.protocol, 0, 0]);
    out.extend_from_slice(&s.octets());
    out.extend_from_slice(&t.octets());
    let c = inet_checksum(&out[..20]);
    out[10..12].copy_from_slice(&c.to_be_bytes());
    udp_header(d, out);
}

/// A complete IPv6 packet (40-byte header, flow label 0) for an IPv6
/// `IPPROTO_RAW` socket: [`ipv6_headers`], then the payload.
pub fn ipv6_packet(d: &RawDatagram<'_>, out: &mut Vec<u8>) {
    ipv6_headers(d, out);
    if !out.is_empty() {
        out.extend_from_slice(d.payload);
    }
}

/// The IPv6 and UDP headers (48 bytes) of `d`, as [`ipv4_headers`].
pub fn ipv6_headers(d: &RawDatagram<'_>, out: &mut Vec<u8>) {
    let (IpAddr::V6(s), IpAddr::V6(t)) = (d.src.ip(), d.dst.ip()) else {
        return;
    };
    out.clear();
    let plen = (8 + d.payload.len()) as u16;
    let word = (6u32 << 28) | (u32::from(d.tos) << 20);
    out.extend_from_slice(&word.to_be_bytes());
    out.extend_from_slice(&plen.to_be_bytes());
    out.extend_from_slice(&[d.protocol, d.ttl]);
    out.extend_from_slice(&s.octets());
    out.extend_from_slice(&t.octets());
    udp_header(d, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for a in ["127.0.0.1:53", "[fe80::1%3]:443", "[::ffff:1.2.3.4]:9"] {
            let mut a: SocketAddr = a.parse().unwrap();
            if let SocketAddr::V6(v6) = &mut a {
                v6.set_flowinfo(0x12345);
            }
            assert_eq!(parse_sockaddr(&sockaddr_bytes(&a)), Some(a));
            assert_eq!(from_proto(&to_proto(&a)), a);
        }
    }

    #[test]
    fn cmsg_round_trip_and_garbage() {
        let mut b = CmsgBuilder::default();
        b.push_int(0, 2, 64).push(0, 1, &[7]).push(41, 50, &[1; 20]);
        let v: Vec<_> = cmsgs(b.bytes()).collect();
        assert_eq!(v.len(), 3);
        assert_eq!(
            v[1],
            Cmsg {
                level: 0,
                kind: 1,
                data: &[7]
            }
        );
        assert_eq!(
            b.bytes().len(),
            cmsg_space(4) + cmsg_space(1) + cmsg_space(20)
        );
        // A length running past the end stops the walk.
        let mut bad = b.bytes().to_vec();
        bad[0] = 0xff;
        assert_eq!(cmsgs(&bad).count(), 0);
        assert_eq!(cmsgs(&bad[..5]).count(), 0);
    }

    #[test]
    fn checksum_agrees_with_the_16_bit_definition() {
        fn naive(b: &[u8]) -> u16 {
            let mut sum = 0u64;
            for c in b.chunks(2) {
                sum += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
            while sum >> 16 != 0 {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            !(sum as u16)
        }
        let mut x = 0x1234_5678_9abc_def1u64;
        for len in (0..70).chain([1399, 1400, 65_000, 65_507]) {
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            assert_eq!(inet_checksum(&b), naive(&b), "length {len}");
            let ones = vec![0xff; len];
            assert_eq!(inet_checksum(&ones), naive(&ones), "all ones, length {len}");
        }
    }

    #[test]
    fn checksums_verify_to_zero() {
        let d = RawDatagram {
            src: "192.0.2.1:1000".parse().unwrap(),
            dst: "127.0.0.1:2000".parse().unwrap(),
            ttl: 7,
            tos: 0x28,
            protocol: 17,
            payload: b"hello, world!",
        };
        let mut p = Vec::new();
        ipv4_packet(&d, &mut p);
        assert_eq!(inet_checksum(&p[..20]), 0);
        // UDP over IPv4: no checksum.
        assert_eq!(&p[26..28], &[0, 0]);
        // UDP-Lite over IPv4 has one: pseudo header + datagram sums to
        // 0xffff.
        let lite = RawDatagram { protocol: 136, ..d };
        ipv4_packet(&lite, &mut p);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, 136]);
        pseudo.extend_from_slice(&((p.len() - 20) as u16).to_be_bytes());
        pseudo.extend_from_slice(&p[20..]);
        assert_eq!(inet_checksum(&pseudo), 0);
        // UDP over IPv6 has one too.
        let v6 = RawDatagram {
            src: "[2001:db8::1]:1000".parse().unwrap(),
            dst: "[::1]:2000".parse().unwrap(),
            ..d
        };
        ipv6_packet(&v6, &mut p);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[8..40]);
        pseudo.extend_from_slice(&((p.len() - 40) as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 17]);
        pseudo.extend_from_slice(&p[40..]);
        assert_eq!(inet_checksum(&pseudo), 0);
        assert_ne!(&p[46..48], &[0, 0]);
    }
}
