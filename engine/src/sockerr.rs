//! The pending socket error (`sk->sk_err`): how the dump sees it without
//! reading it, and how the restore re-creates it.
//!
//! Kernel behaviour relied on:
//! - An ICMP error for a UDP socket sets `sk->sk_err` when the error is
//!   hard and the socket connected, or always with `IP_RECVERR` /
//!   `IPV6_RECVERR` (`__udp4_lib_err()` in net/ipv4/udp.c,
//!   `__udp6_lib_err()` in net/ipv6/udp.c); with those options it also
//!   queues the error on the error queue.
//! - The next `recvmsg`, `MSG_PEEK` or not, returns the error first and
//!   clears it (`__skb_recv_udp()` calls `sock_error()`), as does
//!   `getsockopt(SO_ERROR)`; so does a send that allocates a buffer.
//! - `poll` reports `POLLERR` while `sk->sk_err` is set or the error queue
//!   is not empty (`udp_poll()`, `datagram_poll()` in
//!   net/core/datagram.c), without changing either.
//!
//! Nothing sets `sk_err` directly; the restore sends the ICMP error that
//! set it, quoting a datagram from the restored socket to its peer, on a
//! raw socket (`CAP_NET_RAW`).

use crate::wire;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use udp_repair_proto::v1;

/// Whether `poll(2)` reports `POLLERR` on `fd`: a pending socket error or
/// a non-empty error queue. Reads and changes nothing.
pub fn error_signalled(fd: BorrowedFd<'_>) -> io::Result<bool> {
    use rustix::event::PollFlags;
    Ok(crate::sys::poll_now(fd, PollFlags::empty())?.contains(PollFlags::ERR))
}

/// `SOF_TIMESTAMPING_TX_*` and `SOF_TIMESTAMPING_TX_SCHED`/`_ACK` bits
/// (linux/net_tstamp.h): transmit timestamps go to the error queue.
const SOF_TIMESTAMPING_TX_ANY: i64 = 0x1 | 0x2 | 0x100 | 0x200;

/// What, among the saved options, can put entries on the error queue, by
/// name: `IP_RECVERR`, `IPV6_RECVERR`, transmit timestamping, zerocopy
/// completions. Empty: the queue is always empty, and `POLLERR` means a
/// pending socket error.
pub fn error_queue_sources(options: &[v1::SockOpt]) -> Vec<&'static str> {
    let value = |level, name| crate::options::saved_int(options, level, name).unwrap_or(0);
    let on = |level, name| value(level, name) != 0;
    let mut out = Vec::new();
    if on(libc::SOL_IP, libc::IP_RECVERR) {
        out.push("IP_RECVERR");
    }
    if on(libc::SOL_IPV6, libc::IPV6_RECVERR) {
        out.push("IPV6_RECVERR");
    }
    let tsing =
        i64::from(value(libc::SOL_SOCKET, libc::SO_TIMESTAMPING)) & SOF_TIMESTAMPING_TX_ANY != 0;
    if tsing {
        out.push("SO_TIMESTAMPING (transmit timestamps)");
    }
    if on(libc::SOL_SOCKET, libc::SO_ZEROCOPY) {
        out.push("SO_ZEROCOPY (completions)");
    }
    out
}

/// The ICMP (or ICMPv6) type and code that set `errno` on a connected UDP
/// socket as a hard error (`icmp_err_convert` and `__udp4_lib_err()` in
/// net/ipv4; `icmpv6_err_convert()` and `__udp6_lib_err()` in net/ipv6),
/// if any. `EMSGSIZE` (fragmentation needed, packet too big) is hard only
/// with path MTU discovery on, as it was on the dumped socket if it had
/// the error; the restore copies that setting before it sends the ICMP.
pub fn icmp_for(errno: i32, v6: bool) -> Option<(u8, u8)> {
    // Only errors the kernel counts as hard: a soft one (network or host
    // unreachable, time exceeded, and, for IPv6, address unreachable) sets
    // no error on a socket without IP_RECVERR, so a dumped socket cannot
    // have it from one.
    if v6 {
        match errno {
            libc::EACCES => Some((1, 1)),       // administratively prohibited
            libc::ECONNREFUSED => Some((1, 4)), // port unreachable
            libc::EMSGSIZE => Some((2, 0)),     // packet too big
            libc::EPROTO => Some((4, 0)),       // parameter problem
            _ => None,
        }
    } else {
        match errno {
            libc::ENOPROTOOPT => Some((3, 2)),   // protocol unreachable
            libc::ECONNREFUSED => Some((3, 3)),  // port unreachable
            libc::EMSGSIZE => Some((3, 4)),      // fragmentation needed
            libc::ENETUNREACH => Some((3, 6)),   // network unknown
            libc::EHOSTDOWN => Some((3, 7)),     // host unknown
            libc::ENONET => Some((3, 8)),        // host isolated
            libc::EHOSTUNREACH => Some((3, 10)), // host administratively prohibited
            libc::EPROTO => Some((12, 0)),       // parameter problem
            _ => None,
        }
    }
}

/// Whether the restore can re-create a pending `errno` on a socket whose
/// peer is `peer` (an IPv4 ICMP error for IPv4 or v4-mapped traffic).
pub fn recreatable(errno: i32, peer: SocketAddr) -> bool {
    icmp_for(errno, wire::canonical(peer).is_ipv6()).is_some()
}

/// The ICMP message (type, code, checksum, unused, then the quoted IPv4
/// header and UDP header of a datagram `local` → `peer`) that reports
/// `code` to the socket at `local`.
fn icmp4_message(
    (kind, code): (u8, u8),
    mtu: u16,
    local: SocketAddr,
    peer: SocketAddr,
) -> Option<Vec<u8>> {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (local.ip(), peer.ip()) else {
        return None;
    };
    let mut quoted = vec![
        0x45,
        0,
        0,
        28,
        0,
        0,
        0x40,
        0,
        64,
        libc::IPPROTO_UDP as u8,
        0,
        0,
    ];
    quoted.extend_from_slice(&src.octets());
    quoted.extend_from_slice(&dst.octets());
    let c = wire::inet_checksum(&quoted);
    quoted[10..12].copy_from_slice(&c.to_be_bytes());
    quoted.extend_from_slice(&local.port().to_be_bytes());
    quoted.extend_from_slice(&peer.port().to_be_bytes());
    quoted.extend_from_slice(&[0, 8, 0, 0]);
    // Bytes 4..8: the next-hop MTU of "fragmentation needed", the pointer
    // of "parameter problem" (0: the first byte of the quoted header).
    let mut m = vec![kind, code, 0, 0, 0, 0, 0, 0];
    if (kind, code) == (3, 4) {
        m[6..8].copy_from_slice(&mtu.to_be_bytes());
    }
    m.extend_from_slice(&quoted);
    let c = wire::inet_checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    Some(m)
}

/// The ICMPv6 message reporting `code` for a datagram `local` → `peer`
/// (the kernel fills in the checksum of a raw ICMPv6 socket).
fn icmp6_message(
    (kind, code): (u8, u8),
    mtu: u32,
    local: SocketAddr,
    peer: SocketAddr,
) -> Option<Vec<u8>> {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (local.ip(), peer.ip()) else {
        return None;
    };
    // Bytes 4..8: the MTU of "packet too big", the pointer of "parameter
    // problem".
    let mut m = vec![kind, code, 0, 0, 0, 0, 0, 0];
    if kind == 2 {
        m[4..8].copy_from_slice(&mtu.to_be_bytes());
    }
    m.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, libc::IPPROTO_UDP as u8, 64]);
    m.extend_from_slice(&src.octets());
    m.extend_from_slice(&dst.octets());
    m.extend_from_slice(&local.port().to_be_bytes());
    m.extend_from_slice(&peer.port().to_be_bytes());
    m.extend_from_slice(&[0, 8, 0, 0]);
    Some(m)
}

/// Sets the pending error `errno` on `fd`, connected to `peer`, by
/// sending it the ICMP error that would ([`icmp_for`]), quoting a datagram
/// from `fd`'s address to `peer`, through a raw socket to `fd`'s own
/// address, which must be a local unicast one (nothing leaves the
/// machine). A "too big" error carries the socket's current path MTU, so
/// the route's MTU does not change. Checks that the socket then signals
/// `POLLERR`. The socket must be connected (without `IP_RECVERR` only a
/// connected socket keeps a hard ICMP error).
///
/// # Errors
/// `Unsupported` for an errno no ICMP error sets; the raw socket's errors
/// (`EPERM` without `CAP_NET_RAW`); `Other` when the socket does not
/// signal the error after it was sent.
pub fn recreate(fd: BorrowedFd<'_>, peer: SocketAddr, errno: i32) -> io::Result<()> {
    let local = SocketAddr::try_from(rustix::net::getsockname(fd)?)
        .map_err(|_| io::Error::other("getsockname: not an inet address"))?;
    // An IPv6 socket with IPv4 traffic gets IPv4 ICMP errors.
    let (local, peer) = (wire::canonical(local), wire::canonical(peer));
    let v6 = peer.is_ipv6();
    let unsupported = || {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "no ICMP{} error sets errno {errno} ({}) on a UDP socket",
                if v6 { "v6" } else { "" },
                io::Error::from_raw_os_error(errno)
            ),
        )
    };
    let icmp = icmp_for(errno, v6).ok_or_else(unsupported)?;
    if !crate::inject::is_local(local) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "the socket's address {} is not a local unicast address here: the ICMP error \
                 would leave the machine",
                local.ip()
            ),
        ));
    }
    let mtu = if v6 {
        crate::sys::getsockopt_int(fd, libc::SOL_IPV6, libc::IPV6_MTU)
    } else {
        crate::sys::getsockopt_int(fd, libc::SOL_IP, libc::IP_MTU)
    }
    .unwrap_or(1500)
    .clamp(68, 65535);
    let (domain, proto, msg) = if v6 {
        (
            rustix::net::AddressFamily::INET6,
            libc::IPPROTO_ICMPV6,
            icmp6_message(icmp, mtu as u32, local, peer),
        )
    } else {
        (
            rustix::net::AddressFamily::INET,
            libc::IPPROTO_ICMP,
            icmp4_message(icmp, mtu as u16, local, peer),
        )
    };
    let msg = msg.ok_or_else(unsupported)?;
    let raw = rustix::net::socket(
        domain,
        rustix::net::SocketType::RAW,
        Some(rustix::net::Protocol::from_raw(
            rustix::net::RawProtocol::new(proto as u32).expect("nonzero"),
        )),
    )?;
    let to = SocketAddr::new(local.ip(), 0);
    rustix::net::sendto(&raw, &msg, rustix::net::SendFlags::empty(), &to)?;
    // Loopback delivery is normally done inside sendto; allow a deferred
    // softirq a moment.
    for _ in 0..200 {
        if error_signalled(fd.as_fd())? {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Err(io::Error::other(format!(
        "the socket does not signal the error after an ICMP{} error (type {}, code {}) was sent to it",
        if v6 { "v6" } else { "" },
        icmp.0,
        icmp.1
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_messages_checksum_and_quote_the_datagram() {
        let l: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let p: SocketAddr = "127.0.0.2:53".parse().unwrap();
        let m = icmp4_message((3, 3), 1500, l, p).unwrap();
        assert_eq!(wire::inet_checksum(&m), 0);
        assert_eq!(&m[..2], &[3, 3]);
        assert_eq!(&m[8 + 12..8 + 16], &[127, 0, 0, 1]);
        assert_eq!(&m[8 + 20..8 + 24], &[0x13, 0x88, 0, 53]);
        assert!(icmp4_message((3, 3), 1500, l, "[::1]:53".parse().unwrap()).is_none());
        let m = icmp4_message((3, 4), 1400, l, p).unwrap();
        assert_eq!(&m[6..8], &1400u16.to_be_bytes());
        assert_eq!(wire::inet_checksum(&m), 0);
        let m = icmp6_message(
            (1, 4),
            1280,
            "[::1]:5000".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(m.len(), 8 + 40 + 8);
        assert_eq!(m[8 + 6], libc::IPPROTO_UDP as u8);
    }

    #[test]
    fn codes_cover_the_hard_errors() {
        assert_eq!(icmp_for(libc::ECONNREFUSED, false), Some((3, 3)));
        assert_eq!(icmp_for(libc::ECONNREFUSED, true), Some((1, 4)));
        assert_eq!(icmp_for(libc::EMSGSIZE, false), Some((3, 4)));
        assert_eq!(icmp_for(libc::EPROTO, true), Some((4, 0)));
        assert_eq!(icmp_for(libc::ETIMEDOUT, false), None);
    }
}
