//! `getsockopt::`: the `UDP_REPAIR_PENDING` option of the `getsockopt`
//! series, through `udp_repair_engine::uapi::getsockopt`: in repair mode
//! `getsockopt(SOL_UDP, UDP_REPAIR_PENDING)` returns the pending datagram
//! with its whole cork state, enough to send it again identically.
//!
//! The `roundtrip` cases cork a datagram, read it back, recreate it in a
//! fresh socket bound to the same address with existing interfaces only
//! (`UDP_CORK` or `MSG_MORE`, send cmsgs, socket options), check that the
//! fresh socket reports the same pending state, uncork both and compare
//! what a receiver gets from each: payload, segment sizes, TTL / hop limit,
//! TOS / traffic class, mark (`SO_RCVMARK`), IP options and source.
//!
//! Cases run for IPv4, IPv6, and IPv6 sockets sending IPv4 data to a
//! v4-mapped address (`::ffff:127.0.0.1`). Names are
//! `getsockopt::<group>::<case>::<family>`. On a kernel without
//! `UDP_REPAIR_PENDING` (`ENOPROTOOPT`; the `recvmsg` series' kernels too)
//! every case is a SKIP saying so.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::net::{AddressFamily, SocketType};
use udp_repair_engine::probe::so_priority_cmsg;
use udp_repair_engine::sys::{
    getsockopt_bytes_len, getsockopt_int, recvmsg_bytes, sendmsg_bytes, set_interface_mtu,
    setsockopt_bytes, setsockopt_int,
};
use udp_repair_engine::uapi::getsockopt::{
    self as gs, CorkedBy, Family as DataFamily, Pending, RawPending, SIZE_VER0, UDP_REPAIR_PENDING,
    UDP_REPAIR_PENDING_DATA,
};
use udp_repair_engine::wire::{self, CmsgBuilder};
use udp_repair_engine::UDP_REPAIR;

use crate::ktap::{self, Completion, Context, Failed, Outcome, Test};
use crate::util::{in_netns, without_cap_net_admin};
use crate::{check, check_eq};

/// `SO_TXTIME` / `SCM_TXTIME` (asm-generic/socket.h; not in `libc`).
const SO_TXTIME: i32 = 61;
/// `SO_RCVMARK` (asm-generic/socket.h; not in `libc`).
const SO_RCVMARK: i32 = 75;

const TTL: u8 = 7;
const TOS: u8 = 0x28;
const MARK: u32 = 42;
const PRIORITY: u32 = 5;
const GSO: u16 = 100;
const TXTIME: u64 = 123_456_789;

/// How long a receive waits for a datagram that should be there.
const TIMEOUT: Duration = Duration::from_millis(500);

/// One socket family variant.
#[derive(Debug, Clone, Copy)]
struct Family {
    /// Last component of the test names.
    name: &'static str,
    /// Address the sending sockets bind to (port 0 for the first).
    local: IpAddr,
    /// Address the receiver binds to.
    peer: IpAddr,
    /// Family of the datagrams.
    data: DataFamily,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "ipv4",
        local: IpAddr::V4(Ipv4Addr::LOCALHOST),
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
        data: DataFamily::V4,
    },
    Family {
        name: "ipv6",
        local: IpAddr::V6(Ipv6Addr::LOCALHOST),
        peer: IpAddr::V6(Ipv6Addr::LOCALHOST),
        data: DataFamily::V6,
    },
    Family {
        name: "v4mapped",
        local: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
        data: DataFamily::V4,
    },
];

type Case = fn(Family) -> Result<(), Failed>;
type SingleCase = fn() -> Result<(), Failed>;

/// `(group::case, body)`, run for every family.
const CASES: &[(&str, Case)] = &[
    ("roundtrip::cork_cmsgs", roundtrip_cork_cmsgs),
    ("roundtrip::msg_more_sockopts", roundtrip_msg_more_sockopts),
    ("roundtrip::ip_options", roundtrip_ip_options),
    ("roundtrip::empty", roundtrip_empty),
    ("roundtrip::fragmented", roundtrip_fragmented),
    ("read::leaves_datagram_pending", read_leaves_pending),
    ("errors::not_in_repair_mode", err_not_in_repair),
    ("errors::nothing_pending", err_nothing_pending),
    ("errors::buffer_too_short", err_buffer_too_short),
];

/// Cases that do not depend on the family.
const SINGLE: &[(&str, SingleCase)] = &[
    ("errors::malformed_request", err_malformed),
    ("errors::udplite", err_udplite),
    ("errors::without_cap_net_admin", err_without_cap),
    ("mode::values", mode_values),
];

/// All tests of the suite.
pub fn tests() -> Vec<Test> {
    let mut tests = Vec::new();
    for &(case, body) in CASES {
        for &f in FAMILIES {
            tests.push(Test::skippable(
                format!("getsockopt::{case}::{}", f.name),
                move || guarded(|| body(f)),
            ));
        }
    }
    for &(case, body) in SINGLE {
        let name = format!("getsockopt::{case}");
        tests.push(if case.contains("udplite") {
            Test::skippable(name, move || crate::util::needs_udplite(|| guarded(body)))
        } else {
            Test::skippable(name, move || guarded(body))
        });
    }
    for (case, body) in crate::handover::cases("getsockopt", read_payload_and_destination) {
        tests.push(Test::skippable(
            format!("getsockopt::privilege::{case}"),
            move || guarded(body),
        ));
    }
    tests
}

/// The payload and destination of the pending datagram, read with
/// `UDP_REPAIR_PENDING` (the socket is in repair mode; for
/// [`crate::handover`]).
pub fn read_payload_and_destination(fd: BorrowedFd<'_>) -> Result<(Vec<u8>, SocketAddr), Failed> {
    let p = gs::read_pending(fd)
        .ctx("UDP_REPAIR_PENDING")?
        .ok_or_else(|| Failed::from("nothing pending"))?;
    Ok((p.payload, p.cork.destination))
}

/// Runs `body` if the kernel has `UDP_REPAIR_PENDING`, else SKIPs.
fn guarded(body: impl FnOnce() -> Result<(), Failed>) -> Outcome {
    let s = UdpSocket::bind("127.0.0.1:0").ctx("bind a probe socket")?;
    if !gs::detect(s.as_fd()).ctx("probe UDP_REPAIR_PENDING")? {
        return ktap::skip(
            "kernel has no UDP_REPAIR_PENDING: getsockopt(SOL_UDP, UDP_REPAIR_PENDING) fails with ENOPROTOOPT",
        );
    }
    body().map(|()| Completion::Completed)
}

// ---------------------------------------------------------------------------
// Sockets

fn domain(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    }
}

/// A UDP socket with `SO_REUSEADDR` and `SO_TXTIME`, bound to `at`.
fn sender(at: SocketAddr) -> Result<UdpSocket, Failed> {
    let fd: OwnedFd =
        rustix::net::socket(domain(at.ip()), SocketType::DGRAM, None).ctx("socket")?;
    setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).ctx("SO_REUSEADDR")?;
    // struct sock_txtime { clockid_t clockid; __u32 flags; }
    let mut txtime = (libc::CLOCK_MONOTONIC).to_ne_bytes().to_vec();
    txtime.extend_from_slice(&0u32.to_ne_bytes());
    setsockopt_bytes(fd.as_fd(), libc::SOL_SOCKET, SO_TXTIME, &txtime).ctx("SO_TXTIME")?;
    rustix::net::bind(&fd, &at).ctx(&format!("bind {at}"))?;
    Ok(UdpSocket::from(fd))
}

fn int(fd: BorrowedFd<'_>, level: i32, name: i32, v: i32, what: &str) -> Result<(), Failed> {
    setsockopt_int(fd, level, name, v).ctx(what)
}

/// The receiver, with every cmsg the comparison reads turned on.
fn receiver(f: Family) -> Result<UdpSocket, Failed> {
    let s = UdpSocket::bind(SocketAddr::new(f.peer, 0)).ctx("bind the receiver")?;
    let fd = s.as_fd();
    if f.peer.is_ipv4() {
        int(fd, libc::SOL_IP, libc::IP_RECVTTL, 1, "IP_RECVTTL")?;
        int(fd, libc::SOL_IP, libc::IP_RECVTOS, 1, "IP_RECVTOS")?;
        int(fd, libc::SOL_IP, libc::IP_RECVOPTS, 1, "IP_RECVOPTS")?;
    } else {
        int(
            fd,
            libc::SOL_IPV6,
            libc::IPV6_RECVHOPLIMIT,
            1,
            "IPV6_RECVHOPLIMIT",
        )?;
        int(
            fd,
            libc::SOL_IPV6,
            libc::IPV6_RECVTCLASS,
            1,
            "IPV6_RECVTCLASS",
        )?;
        int(
            fd,
            libc::SOL_IPV6,
            libc::IPV6_RECVDSTOPTS,
            1,
            "IPV6_RECVDSTOPTS",
        )?;
    }
    int(fd, libc::SOL_SOCKET, SO_RCVMARK, 1, "SO_RCVMARK")?;
    s.set_read_timeout(Some(TIMEOUT)).ctx("SO_RCVTIMEO")?;
    Ok(s)
}

/// How the sending sockets name `to`: v4-mapped on an IPv6 socket.
fn name_for(sock_is_v6: bool, to: SocketAddr) -> SocketAddr {
    match to {
        SocketAddr::V4(a) if sock_is_v6 => {
            SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port())
        }
        a => a,
    }
}

fn repair(s: &UdpSocket, on: bool) -> Result<(), Failed> {
    gs::set_repair(s.as_fd(), on).ctx(&format!("UDP_REPAIR {}", i32::from(on)))
}

/// Reads the pending datagram of `s` (repair mode on around it).
fn dump(s: &UdpSocket, what: &str) -> Result<Pending, Failed> {
    repair(s, true)?;
    let p = gs::read_pending(s.as_fd()).ctx(&format!("read_pending ({what})"));
    repair(s, false)?;
    let p = p?.ok_or_else(|| Failed::from(format!("{what}: nothing pending")))?;
    check!(
        p.losses().is_empty(),
        "{what}: the dump reports losses: {:?}",
        p.losses()
    );
    check_eq!(
        p.cork.unknown_flags,
        0,
        "{what}: flags unknown to this test"
    );
    Ok(p)
}

/// What a first send sets in the cork, as cmsgs.
#[derive(Debug, Clone, Default)]
struct FirstSend {
    ttl: Option<u8>,
    tos: Option<u8>,
    mark: Option<u32>,
    /// `SO_PRIORITY` cmsg (kernels that have it: `probe::so_priority_cmsg`).
    priority: Option<u32>,
    gso: Option<u16>,
    txtime: Option<u64>,
    dontfrag: bool,
    /// IPv4: `IP_RETOPTS`; IPv6: `IPV6_DSTOPTS`.
    options: Vec<u8>,
    /// `IP_PKTINFO` / `IPV6_PKTINFO`: source and interface.
    source: Option<(IpAddr, u32)>,
}

impl FirstSend {
    fn cmsgs(&self, data: DataFamily) -> CmsgBuilder {
        let v4 = data == DataFamily::V4;
        let (ip, ttl, tos) = if v4 {
            (libc::SOL_IP, libc::IP_TTL, libc::IP_TOS)
        } else {
            (libc::SOL_IPV6, libc::IPV6_HOPLIMIT, libc::IPV6_TCLASS)
        };
        let mut c = CmsgBuilder::default();
        if let Some(v) = self.ttl {
            c.push_int(ip, ttl, v.into());
        }
        if let Some(v) = self.tos {
            c.push_int(ip, tos, v.into());
        }
        if self.dontfrag {
            c.push_int(libc::SOL_IPV6, libc::IPV6_DONTFRAG, 1);
        }
        if let Some(v) = self.mark {
            c.push(libc::SOL_SOCKET, libc::SO_MARK, &v.to_ne_bytes());
        }
        // After IP_TOS, which sets the priority from the TOS.
        if let Some(v) = self.priority {
            c.push(libc::SOL_SOCKET, libc::SO_PRIORITY, &v.to_ne_bytes());
        }
        if let Some(v) = self.gso {
            c.push(libc::SOL_UDP, libc::UDP_SEGMENT, &v.to_ne_bytes());
        }
        if let Some(v) = self.txtime {
            c.push(libc::SOL_SOCKET, SO_TXTIME, &v.to_ne_bytes());
        }
        if !self.options.is_empty() {
            let kind = if v4 {
                libc::IP_RETOPTS
            } else {
                libc::IPV6_DSTOPTS
            };
            c.push(ip, kind, &self.options);
        }
        match self.source {
            Some((IpAddr::V4(a), oif)) => {
                // struct in_pktinfo { int ifindex; spec_dst; addr; }
                let mut b = (oif as i32).to_ne_bytes().to_vec();
                b.extend_from_slice(&a.octets());
                b.extend_from_slice(&[0; 4]);
                c.push(libc::SOL_IP, libc::IP_PKTINFO, &b);
            }
            Some((IpAddr::V6(a), oif)) => {
                // struct in6_pktinfo { struct in6_addr addr; int ifindex; }
                let mut b = a.octets().to_vec();
                b.extend_from_slice(&(oif as i32).to_ne_bytes());
                c.push(libc::SOL_IPV6, libc::IPV6_PKTINFO, &b);
            }
            None => {}
        }
        c
    }
}

fn send_first(
    s: &UdpSocket,
    data: DataFamily,
    payload: &[u8],
    to: SocketAddr,
    first: &FirstSend,
    flags: i32,
) -> Result<(), Failed> {
    let name = wire::sockaddr_bytes(&to);
    let cmsgs = first.cmsgs(data);
    let n = sendmsg_bytes(s.as_fd(), payload, &name, cmsgs.bytes(), flags)
        .ctx(&format!("sendmsg to {to} with cmsgs {first:?}"))?;
    check_eq!(n, payload.len(), "short sendmsg");
    Ok(())
}

/// Recreates `p` in `s`, from the dump alone, with existing interfaces:
/// socket options for what follows the socket, cmsgs of the first send for
/// what the datagram fixes, `UDP_CORK` or `MSG_MORE` for the corking.
fn restore(s: &UdpSocket, p: &Pending) -> Result<(), Failed> {
    let c = &p.cork;
    let fd = s.as_fd();
    let sock_is_v6 = s.local_addr().ctx("getsockname")?.is_ipv6();
    let v4 = c.family == DataFamily::V4;
    check_eq!(
        c.flowlabel,
        0,
        "flow labels need IPV6_FLOWLABEL_MGR, not restored here"
    );
    check!(
        c.options.hopopts.is_empty()
            && c.options.rthdrdstopts.is_empty()
            && c.options.rthdr.is_empty(),
        "this test restores only IPv4 options and Destination options: {:?}",
        c.options
    );
    // Not fixed in the datagram: the socket option. IP_TOS resets the
    // priority: SO_PRIORITY goes last. Where the kernel has an SO_PRIORITY
    // cmsg, ip_setup_cork() fixes every corked datagram's priority, and
    // the cmsg sets it again.
    let (ip, ttl, tos) = if v4 {
        (libc::SOL_IP, libc::IP_TTL, libc::IP_TOS)
    } else {
        (libc::SOL_IPV6, libc::IPV6_UNICAST_HOPS, libc::IPV6_TCLASS)
    };
    if !c.ttl.fixed {
        int(fd, ip, ttl, c.ttl.value.into(), "TTL socket option")?;
    }
    if !c.tos.fixed {
        int(fd, ip, tos, c.tos.value.into(), "TOS socket option")?;
    }
    if !c.priority.fixed {
        int(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PRIORITY,
            c.priority.value as i32,
            "SO_PRIORITY",
        )?;
    }
    let first = FirstSend {
        ttl: c.ttl.fixed.then_some(c.ttl.value),
        tos: c.tos.fixed.then_some(c.tos.value),
        mark: (c.mark != 0).then_some(c.mark),
        priority: (c.priority.fixed && so_priority_cmsg()).then_some(c.priority.value),
        gso: (c.gso_size != 0).then_some(c.gso_size),
        txtime: (c.transmit_time != 0).then_some(c.transmit_time),
        dontfrag: c.dontfrag,
        options: if v4 {
            c.options.ipv4.clone()
        } else {
            c.options.dstopts.clone()
        },
        source: Some((c.source.ip(), c.oif)),
    };
    let flags = match c.corked_by {
        CorkedBy::UdpCork => {
            int(fd, libc::SOL_UDP, libc::UDP_CORK, 1, "UDP_CORK")?;
            0
        }
        CorkedBy::MsgMore => libc::MSG_MORE,
    };
    let flags = flags | if c.confirm { libc::MSG_CONFIRM } else { 0 };
    send_first(
        s,
        c.family,
        &p.payload,
        name_for(sock_is_v6, c.destination),
        &first,
        flags,
    )
}

/// Sends what is pending on `s`.
fn uncork(s: &UdpSocket, by: CorkedBy) -> Result<(), Failed> {
    match by {
        CorkedBy::UdpCork => int(
            s.as_fd(),
            libc::SOL_UDP,
            libc::UDP_CORK,
            0,
            "clear UDP_CORK",
        ),
        CorkedBy::MsgMore => {
            sendmsg_bytes(s.as_fd(), &[], &[], &[], 0).ctx("empty send")?;
            Ok(())
        }
    }
}

/// What a receiver saw of one datagram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Seen {
    data: Vec<u8>,
    from: Option<SocketAddr>,
    ttl: Option<i32>,
    tos: Option<i32>,
    mark: Option<u32>,
    options: Vec<u8>,
}

fn ne_i32(d: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(d.get(..4)?.try_into().ok()?))
}

fn recv_one(s: &UdpSocket) -> Result<Option<Seen>, Failed> {
    let mut buf = vec![0u8; 70_000];
    let mut name = [0u8; 128];
    let mut control = [0u8; 512];
    let out = match recvmsg_bytes(
        s.as_fd(),
        &mut buf,
        &mut name,
        &mut control,
        libc::MSG_DONTWAIT,
    ) {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(Failed::from(format!("recvmsg: {e}"))),
    };
    check_eq!(
        out.flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC),
        0,
        "truncated receive"
    );
    let mut seen = Seen {
        data: buf[..out.len].to_vec(),
        from: wire::parse_sockaddr(&name[..out.name_len]),
        ..Seen::default()
    };
    for c in wire::cmsgs(&control[..out.control_len]) {
        match (c.level, c.kind) {
            (libc::SOL_IP, libc::IP_TTL) | (libc::SOL_IPV6, libc::IPV6_HOPLIMIT) => {
                seen.ttl = ne_i32(c.data)
            }
            (libc::SOL_IP, libc::IP_TOS) => seen.tos = c.data.first().map(|&b| b.into()),
            (libc::SOL_IPV6, libc::IPV6_TCLASS) => seen.tos = ne_i32(c.data),
            (libc::SOL_SOCKET, libc::SO_MARK) => seen.mark = ne_i32(c.data).map(|v| v as u32),
            (libc::SOL_IP, libc::IP_RECVOPTS) | (libc::SOL_IPV6, libc::IPV6_DSTOPTS) => {
                seen.options = c.data.to_vec()
            }
            _ => {}
        }
    }
    Ok(Some(seen))
}

/// Receives every datagram sent so far: the first with a timeout, the
/// others without waiting (loopback delivers in the sending call).
fn recv_all(s: &UdpSocket) -> Result<Vec<Seen>, Failed> {
    let mut fds = [rustix::event::PollFd::new(s, rustix::event::PollFlags::IN)];
    let timeout = rustix::event::Timespec::try_from(TIMEOUT).ctx("timespec")?;
    rustix::event::poll(&mut fds, Some(&timeout)).ctx("poll")?;
    let mut out = Vec::new();
    while let Some(d) = recv_one(s)? {
        out.push(d);
    }
    Ok(out)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// The common round trip: `setup` configures the original socket, the
/// payload goes in `parts` sends (the first with `first`), and the result
/// is what the receiver got from the original, after checking that the
/// restored socket's datagrams are the same.
fn round_trip(
    f: Family,
    setup: impl Fn(&UdpSocket) -> Result<(), Failed>,
    first: &FirstSend,
    by: CorkedBy,
    payload: &[u8],
    parts: usize,
) -> Result<(Pending, Vec<Seen>), Failed> {
    let rx = receiver(f)?;
    let to = rx.local_addr().ctx("receiver address")?;
    let orig = sender(SocketAddr::new(f.local, 0))?;
    let bound = orig.local_addr().ctx("getsockname")?;
    setup(&orig)?;
    let to_name = name_for(f.local.is_ipv6(), to);

    let flags = match by {
        CorkedBy::UdpCork => {
            int(orig.as_fd(), libc::SOL_UDP, libc::UDP_CORK, 1, "UDP_CORK")?;
            0
        }
        CorkedBy::MsgMore => libc::MSG_MORE,
    };
    let chunk = payload.len() / parts;
    send_first(&orig, f.data, &payload[..chunk], to_name, first, flags)?;
    let mut off = chunk;
    for i in 1..parts {
        let end = if i == parts - 1 {
            payload.len()
        } else {
            off + chunk
        };
        sendmsg_bytes(orig.as_fd(), &payload[off..end], &[], &[], flags).ctx("append")?;
        off = end;
    }

    let p = dump(&orig, "original")?;
    check_eq!(p.cork.family, f.data, "family of the pending data");
    check_eq!(p.payload, payload, "payload read back");
    check_eq!(p.cork.corked_by, by, "corked by");
    check_eq!(p.cork.destination, to, "destination");
    check_eq!(p.cork.source.port(), bound.port(), "source port");

    let copy = sender(bound)?;
    restore(&copy, &p)?;
    let q = dump(&copy, "restored")?;
    check_eq!(q, p, "the restored socket's pending datagram differs");

    uncork(&orig, by)?;
    let a = recv_all(&rx)?;
    uncork(&copy, by)?;
    let b = recv_all(&rx)?;
    check!(!a.is_empty(), "nothing received from the original");
    check_eq!(a.len(), b.len(), "number of datagrams (original, restored)");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        check_eq!(x, y, "datagram {i}: original vs restored");
    }
    Ok((p, a))
}

// ---------------------------------------------------------------------------
// Cases

/// A corked datagram with non-default TTL, TOS, mark, priority, segment
/// size and transmit time, in three sends.
fn roundtrip_cork_cmsgs(f: Family) -> Result<(), Failed> {
    let first = FirstSend {
        ttl: Some(TTL),
        tos: Some(TOS),
        mark: Some(MARK),
        gso: Some(GSO),
        txtime: Some(TXTIME),
        dontfrag: f.data == DataFamily::V6,
        ..FirstSend::default()
    };
    let setup = |s: &UdpSocket| {
        int(
            s.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_PRIORITY,
            PRIORITY as i32,
            "SO_PRIORITY",
        )
    };
    let (p, seen) = round_trip(f, setup, &first, CorkedBy::UdpCork, &pattern(250), 3)?;
    let c = &p.cork;
    check_eq!((c.ttl.value, c.ttl.fixed), (TTL, true), "ttl");
    check_eq!((c.tos.value, c.tos.fixed), (TOS, true), "tos");
    check_eq!(
        (c.mark, c.gso_size, c.transmit_time),
        (MARK, GSO, TXTIME),
        "mark, gso, txtime"
    );
    check_eq!(c.dontfrag, f.data == DataFamily::V6, "dontfrag");
    if f.data == DataFamily::V6 {
        check_eq!(
            (c.priority.value, c.priority.fixed),
            (PRIORITY, so_priority_cmsg()),
            "priority (fixed at cork time where an SO_PRIORITY cmsg exists)"
        );
    } else {
        // An IP_TOS cmsg fixes the priority that goes with the TOS.
        check!(c.priority.fixed, "IPv4 priority fixed by the IP_TOS cmsg");
    }
    let lens: Vec<usize> = seen.iter().map(|d| d.data.len()).collect();
    check_eq!(lens, vec![100, 100, 50], "UDP_SEGMENT segments");
    check_eq!(seen[0].ttl, Some(TTL.into()), "received TTL");
    check_eq!(seen[0].tos, Some(TOS.into()), "received TOS");
    check_eq!(seen[0].mark, Some(MARK), "received mark");
    Ok(())
}

/// Held by MSG_MORE only, TTL, TOS, mark and priority from socket options.
fn roundtrip_msg_more_sockopts(f: Family) -> Result<(), Failed> {
    let v4 = f.data == DataFamily::V4;
    let setup = move |s: &UdpSocket| {
        let fd = s.as_fd();
        if v4 {
            int(fd, libc::SOL_IP, libc::IP_TTL, 33, "IP_TTL")?;
            int(fd, libc::SOL_IP, libc::IP_TOS, 0x10, "IP_TOS")?;
        } else {
            int(
                fd,
                libc::SOL_IPV6,
                libc::IPV6_UNICAST_HOPS,
                33,
                "IPV6_UNICAST_HOPS",
            )?;
            int(fd, libc::SOL_IPV6, libc::IPV6_TCLASS, 0x10, "IPV6_TCLASS")?;
        }
        int(fd, libc::SOL_SOCKET, libc::SO_MARK, MARK as i32, "SO_MARK")?;
        int(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PRIORITY,
            PRIORITY as i32,
            "SO_PRIORITY",
        )
    };
    let payload = pattern(1000);
    let (p, seen) = round_trip(
        f,
        setup,
        &FirstSend::default(),
        CorkedBy::MsgMore,
        &payload,
        4,
    )?;
    let c = &p.cork;
    // IPv4 keeps following the socket options; IPv6 fixes them when corking.
    check_eq!(c.ttl.fixed, !v4, "ttl fixed");
    check_eq!(
        (c.ttl.value, c.tos.value, c.mark),
        (33, 0x10, MARK),
        "ttl, tos, mark"
    );
    check_eq!(
        (c.priority.value, c.priority.fixed),
        (PRIORITY, so_priority_cmsg()),
        "priority (fixed at cork time where an SO_PRIORITY cmsg exists)"
    );
    check_eq!(seen.len(), 1, "one datagram");
    check_eq!(seen[0].data, payload, "payload");
    check_eq!(seen[0].ttl, Some(33), "received TTL");
    check_eq!(seen[0].tos, Some(0x10), "received TOS");
    check_eq!(seen[0].mark, Some(MARK), "received mark");
    Ok(())
}

/// IPv4: a record route option, which the kernel rewrites as it parses it
/// (the dump must undo that); IPv6: a Destination options header.
fn roundtrip_ip_options(f: Family) -> Result<(), Failed> {
    let options = match f.data {
        // Record route with room for two addresses, padded to 12 bytes.
        DataFamily::V4 => vec![7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0],
        // nexthdr, hdrlen 0, PadN of 4.
        DataFamily::V6 => vec![0, 0, 1, 4, 0, 0, 0, 0],
    };
    let first = FirstSend {
        options: options.clone(),
        ..FirstSend::default()
    };
    let (p, seen) = round_trip(f, |_| Ok(()), &first, CorkedBy::UdpCork, b"options", 1)?;
    match f.data {
        DataFamily::V4 => {
            let mut want = options;
            want.push(0); // IPOPT_END padding
            check_eq!(
                p.cork.options.ipv4,
                want,
                "IP options as IP_RETOPTS takes them"
            );
            check_eq!(seen[0].options.first(), Some(&7), "received record route");
        }
        DataFamily::V6 => {
            check_eq!(
                p.cork.options.dstopts.len(),
                8,
                "Destination options header"
            );
            check_eq!(seen[0].options.len(), 8, "received Destination options");
        }
    }
    Ok(())
}

/// A zero-length datagram held by MSG_MORE.
fn roundtrip_empty(f: Family) -> Result<(), Failed> {
    let (p, seen) = round_trip(
        f,
        |_| Ok(()),
        &FirstSend::default(),
        CorkedBy::MsgMore,
        &[],
        1,
    )?;
    check!(p.payload.is_empty(), "empty payload");
    check_eq!(seen.len(), 1, "one datagram");
    check!(seen[0].data.is_empty(), "received an empty datagram");
    Ok(())
}

/// A datagram larger than the MTU: the kernel keeps it as several buffers
/// (fragments to be), which the read must stitch back together.
fn roundtrip_fragmented(f: Family) -> Result<(), Failed> {
    in_netns(|| {
        let s = UdpSocket::bind("127.0.0.1:0").ctx("bind")?;
        set_interface_mtu(s.as_fd(), "lo", 1500).ctx("lo mtu 1500")?;
        let payload = pattern(9000);
        let (_, seen) = round_trip(
            f,
            |_| Ok(()),
            &FirstSend::default(),
            CorkedBy::UdpCork,
            &payload,
            5,
        )?;
        check_eq!(seen.len(), 1, "one datagram, reassembled");
        check_eq!(seen[0].data, payload, "payload");
        Ok(())
    })
}

/// Reading twice gives the same answer and leaves the datagram to be sent.
fn read_leaves_pending(f: Family) -> Result<(), Failed> {
    let rx = receiver(f)?;
    let to = name_for(f.local.is_ipv6(), rx.local_addr().ctx("receiver")?);
    let s = sender(SocketAddr::new(f.local, 0))?;
    send_first(
        &s,
        f.data,
        b"once",
        to,
        &FirstSend::default(),
        libc::MSG_MORE,
    )?;
    let a = dump(&s, "first read")?;
    let b = dump(&s, "second read")?;
    check_eq!(a, b, "two reads");
    check!(recv_all(&rx)?.is_empty(), "a read sent the datagram");
    uncork(&s, CorkedBy::MsgMore)?;
    let seen = recv_all(&rx)?;
    check_eq!(seen.len(), 1, "one datagram");
    check_eq!(seen[0].data, b"once", "payload");
    Ok(())
}

fn errno_of(r: std::io::Result<impl std::fmt::Debug>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// `getsockopt(SOL_UDP, name)` into `buf`: the result and the optlen the
/// kernel left.
fn raw_get(s: &UdpSocket, name: i32, buf: &mut [u8]) -> (std::io::Result<()>, usize) {
    getsockopt_bytes_len(s.as_fd(), libc::SOL_UDP, name, buf)
}

fn corked(f: Family, payload: &[u8]) -> Result<(UdpSocket, UdpSocket), Failed> {
    let rx = receiver(f)?;
    let to = name_for(f.local.is_ipv6(), rx.local_addr().ctx("receiver")?);
    let s = sender(SocketAddr::new(f.local, 0))?;
    send_first(
        &s,
        f.data,
        payload,
        to,
        &FirstSend::default(),
        libc::MSG_MORE,
    )?;
    Ok((s, rx))
}

fn err_not_in_repair(f: Family) -> Result<(), Failed> {
    let (s, _rx) = corked(f, b"x")?;
    let e = gs::read_pending(s.as_fd())
        .err()
        .and_then(|e| e.raw_os_error());
    check_eq!(e, Some(libc::EPERM), "read out of repair mode");
    Ok(())
}

fn err_nothing_pending(f: Family) -> Result<(), Failed> {
    let s = sender(SocketAddr::new(f.local, 0))?;
    repair(&s, true)?;
    let r = gs::read_pending(s.as_fd()).ctx("read_pending")?;
    check!(r.is_none(), "nothing pending, got {r:?}");
    let mut buf = vec![0u8; 4096];
    for name in [UDP_REPAIR_PENDING, UDP_REPAIR_PENDING_DATA] {
        let (r, len) = raw_get(&s, name, &mut buf);
        check_eq!(errno_of(r), Some(libc::ENODATA), "raw errno of {name}");
        check_eq!(len, 4096, "optlen after ENODATA of {name}");
    }
    Ok(())
}

/// The data of a large datagram read in a short buffer: what fits, and
/// its length; the struct gives the whole length first.
fn err_buffer_too_short(f: Family) -> Result<(), Failed> {
    let payload = pattern(3000);
    let (s, _rx) = corked(f, &payload)?;
    repair(&s, true)?;
    let mut head = vec![0u8; SIZE_VER0];
    let (r, got) = raw_get(&s, UDP_REPAIR_PENDING, &mut head);
    r.ctx("UDP_REPAIR_PENDING")?;
    check_eq!(got, SIZE_VER0, "struct length");
    let raw = RawPending::parse(&head).ok_or("struct")?;
    check_eq!(raw.payload_len, 3000, "payload length");
    let mut data = vec![0u8; 1000];
    let (r, got) = raw_get(&s, UDP_REPAIR_PENDING_DATA, &mut data);
    r.ctx("UDP_REPAIR_PENDING_DATA, short")?;
    check_eq!(got, 1000, "what fits");
    check_eq!(&data[..], &payload[..1000], "the start of the payload");
    let mut data = vec![0u8; 4000];
    let (r, got) = raw_get(&s, UDP_REPAIR_PENDING_DATA, &mut data);
    r.ctx("UDP_REPAIR_PENDING_DATA")?;
    check_eq!(got, 3000, "the whole payload");
    check_eq!(&data[..3000], &payload[..], "payload");
    let p = gs::read_pending(s.as_fd())
        .ctx("read_pending")?
        .ok_or("pending")?;
    check_eq!(p.payload, payload, "read_pending");
    Ok(())
}

/// Output only: optlen below version 0 is EINVAL with optlen untouched; a
/// longer buffer gets the kernel's struct and its length, the rest of the
/// buffer unwritten; what the buffer held does not matter.
fn err_malformed() -> Result<(), Failed> {
    let f = FAMILIES[0];
    let (s, _rx) = corked(f, b"hello")?;
    repair(&s, true)?;
    let mut buf = vec![0u8; 4096];
    let (r, len) = raw_get(&s, UDP_REPAIR_PENDING, &mut buf[..SIZE_VER0 - 1]);
    check_eq!(errno_of(r), Some(libc::EINVAL), "buffer below version 0");
    check_eq!(len, SIZE_VER0 - 1, "optlen after EINVAL");
    buf.fill(0xa5);
    let (r, got) = raw_get(&s, UDP_REPAIR_PENDING, &mut buf);
    r.ctx("larger buffer")?;
    check_eq!(got, SIZE_VER0, "the kernel's struct length");
    check!(
        buf[SIZE_VER0..].iter().all(|&b| b == 0xa5),
        "written past the struct"
    );
    let raw = RawPending::parse(&buf).ok_or("struct")?;
    check_eq!(raw.payload_len, 5, "payload length");
    buf.fill(0);
    let (r, got) = raw_get(&s, UDP_REPAIR_PENDING, &mut buf[..SIZE_VER0]);
    r.ctx("zeroed buffer")?;
    check_eq!(
        (got, RawPending::parse(&buf).ok_or("struct")?),
        (SIZE_VER0, raw),
        "the same struct whatever the buffer held"
    );
    Ok(())
}

fn err_udplite() -> Result<(), Failed> {
    let fd = rustix::net::socket(
        AddressFamily::INET,
        SocketType::DGRAM,
        Some(rustix::net::ipproto::UDPLITE),
    )
    .ctx("UDP-Lite socket")?;
    gs::set_repair(fd.as_fd(), true).ctx("UDP_REPAIR on UDP-Lite")?;
    let e = gs::read_pending(fd.as_fd())
        .err()
        .and_then(|e| e.raw_os_error());
    check_eq!(e, Some(libc::ENOPROTOOPT), "UDP_REPAIR_PENDING on UDP-Lite");
    Ok(())
}

fn err_without_cap() -> Result<(), Failed> {
    let s = UdpSocket::bind("127.0.0.1:0").ctx("bind")?;
    let (on, off, mode) = without_cap_net_admin(|| {
        (
            errno_of(gs::set_repair(s.as_fd(), true)),
            errno_of(gs::set_repair(s.as_fd(), false)),
            gs::repair_mode(s.as_fd()).ok(),
        )
    })?;
    check_eq!(on, Some(libc::EPERM), "UDP_REPAIR 1 without CAP_NET_ADMIN");
    check_eq!(off, Some(libc::EPERM), "UDP_REPAIR 0 without CAP_NET_ADMIN");
    check_eq!(mode, Some(false), "reading the mode needs no privilege");
    Ok(())
}

fn mode_values() -> Result<(), Failed> {
    let s = UdpSocket::bind("127.0.0.1:0").ctx("bind")?;
    check_eq!(gs::repair_mode(s.as_fd()).ctx("mode")?, false, "default");
    repair(&s, true)?;
    check_eq!(gs::repair_mode(s.as_fd()).ctx("mode")?, true, "after 1");
    let e = errno_of(setsockopt_int(s.as_fd(), libc::SOL_UDP, UDP_REPAIR, 2));
    check_eq!(e, Some(libc::EINVAL), "value 2");
    check_eq!(
        getsockopt_int(s.as_fd(), libc::SOL_UDP, UDP_REPAIR).ctx("mode")?,
        1,
        "unchanged by a refused value"
    );
    repair(&s, false)?;
    check_eq!(gs::repair_mode(s.as_fd()).ctx("mode")?, false, "after 0");
    Ok(())
}

// ---------------------------------------------------------------------------
// Threads with another namespace or fewer capabilities
