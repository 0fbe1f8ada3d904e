//! The socket options a checkpoint saves and restore sets, as one table.
//!
//! Every option is stored by its uapi `(level, optname)` numbers, with the
//! value getsockopt returned. Save skips options the socket does not have
//! (ENOPROTOOPT/EOPNOTSUPP/EINVAL: e.g. IPv6 options on an IPv4 socket).
//! Restore sets only the values that differ from the fresh socket's, then
//! reads every saved option back and fails on any difference, so a restore
//! either reproduces the options exactly or says which one it could not.
//!
//! Handled elsewhere, not in this table: SO_BINDTODEVICE (`bound_device`),
//! SO_PEEK_OFF (`peek_offset`), UDP_CORK (the send queue), the socket filter
//! (`filter`), and SO_RCVBUF's final value (restored after the receive
//! queue, see restore.rs).

use crate::sys;
use std::io;
use std::os::fd::BorrowedFd;
use udp_repair_proto::v1;

/// How an option's value is read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An `int`.
    Int,
    /// Raw bytes, at most this many.
    Bytes(usize),
    /// A C struct: raw bytes, exactly this many (`struct timeval`,
    /// `struct sock_txtime`), or none when unset.
    Exact(usize),
    /// SO_RCVBUF/SO_SNDBUF: getsockopt returns twice what setsockopt takes.
    Doubled,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// `SOL_*`.
    pub level: i32,
    /// Option number.
    pub name: i32,
    /// Its uapi name.
    pub label: &'static str,
    /// Value layout.
    pub kind: Kind,
}

const fn int(level: i32, name: i32, label: &'static str) -> Opt {
    Opt {
        level,
        name,
        label,
        kind: Kind::Int,
    }
}

const fn bytes(level: i32, name: i32, label: &'static str, max: usize) -> Opt {
    Opt {
        level,
        name,
        label,
        kind: Kind::Bytes(max),
    }
}

/// `SO_NO_CHECK` (asm-generic/socket.h; not in `libc` for Linux).
pub const SO_NO_CHECK: i32 = 11;
/// `SO_BUF_LOCK` (asm-generic/socket.h): the `SOCK_SNDBUF_LOCK` and
/// `SOCK_RCVBUF_LOCK` bits that setting SO_SNDBUF/SO_RCVBUF also sets.
pub const SO_BUF_LOCK: i32 = 72;
/// `SO_BUSY_POLL_BUDGET` (include/uapi/asm-generic/socket.h).
pub const SO_BUSY_POLL_BUDGET: i32 = 70;

const SOL_SOCKET: i32 = libc::SOL_SOCKET;
const SOL_IP: i32 = libc::SOL_IP;
const SOL_IPV6: i32 = libc::SOL_IPV6;
const SOL_UDP: i32 = libc::SOL_UDP;
const SOL_UDPLITE: i32 = 136;

/// `SO_TIMESTAMP_NEW` / `SO_TIMESTAMPNS_NEW` (asm-generic/socket.h).
pub const SO_TIMESTAMP_NEW: i32 = 63;
/// See [`SO_TIMESTAMP_NEW`].
pub const SO_TIMESTAMPNS_NEW: i32 = 64;
/// `SO_TIMESTAMP_OLD`.
pub const SO_TIMESTAMP_OLD: i32 = 29;
/// `SO_TIMESTAMPNS_OLD`.
pub const SO_TIMESTAMPNS_OLD: i32 = 35;

/// Every option saved, in restore order. The order matters where options
/// interact: the SO_TIMESTAMP* family reads each flag combined with the
/// others, so the OLD variants come before the NEW ones, and IPV6_V6ONLY
/// comes before bind (all of these are set before bind).
pub const TABLE: &[Opt] = &[
    int(SOL_SOCKET, libc::SO_REUSEADDR, "SO_REUSEADDR"),
    int(SOL_SOCKET, libc::SO_REUSEPORT, "SO_REUSEPORT"),
    Opt {
        level: SOL_SOCKET,
        name: libc::SO_SNDBUF,
        label: "SO_SNDBUF",
        kind: Kind::Doubled,
    },
    Opt {
        level: SOL_SOCKET,
        name: libc::SO_RCVBUF,
        label: "SO_RCVBUF",
        kind: Kind::Doubled,
    },
    int(SOL_SOCKET, libc::SO_PRIORITY, "SO_PRIORITY"),
    int(SOL_SOCKET, libc::SO_MARK, "SO_MARK"),
    int(SOL_SOCKET, libc::SO_BROADCAST, "SO_BROADCAST"),
    int(SOL_SOCKET, libc::SO_DONTROUTE, "SO_DONTROUTE"),
    int(SOL_SOCKET, libc::SO_KEEPALIVE, "SO_KEEPALIVE"),
    int(SOL_SOCKET, libc::SO_RCVLOWAT, "SO_RCVLOWAT"),
    Opt {
        level: SOL_SOCKET,
        name: libc::SO_RCVTIMEO,
        label: "SO_RCVTIMEO",
        kind: Kind::Exact(16),
    },
    Opt {
        level: SOL_SOCKET,
        name: libc::SO_SNDTIMEO,
        label: "SO_SNDTIMEO",
        kind: Kind::Exact(16),
    },
    int(SOL_SOCKET, SO_TIMESTAMP_OLD, "SO_TIMESTAMP"),
    int(SOL_SOCKET, SO_TIMESTAMPNS_OLD, "SO_TIMESTAMPNS"),
    int(SOL_SOCKET, SO_TIMESTAMP_NEW, "SO_TIMESTAMP_NEW"),
    int(SOL_SOCKET, SO_TIMESTAMPNS_NEW, "SO_TIMESTAMPNS_NEW"),
    int(SOL_SOCKET, libc::SO_TIMESTAMPING, "SO_TIMESTAMPING"),
    int(SOL_SOCKET, libc::SO_RXQ_OVFL, "SO_RXQ_OVFL"),
    int(SOL_SOCKET, libc::SO_PASSCRED, "SO_PASSCRED"),
    int(SOL_SOCKET, libc::SO_PASSSEC, "SO_PASSSEC"),
    int(SOL_SOCKET, libc::SO_WIFI_STATUS, "SO_WIFI_STATUS"),
    int(SOL_SOCKET, libc::SO_SELECT_ERR_QUEUE, "SO_SELECT_ERR_QUEUE"),
    int(SOL_SOCKET, libc::SO_BUSY_POLL, "SO_BUSY_POLL"),
    int(SOL_SOCKET, libc::SO_INCOMING_CPU, "SO_INCOMING_CPU"),
    int(SOL_SOCKET, libc::SO_ZEROCOPY, "SO_ZEROCOPY"),
    Opt {
        level: SOL_SOCKET,
        name: libc::SO_TXTIME,
        label: "SO_TXTIME",
        kind: Kind::Exact(8),
    },
    int(SOL_SOCKET, 75, "SO_RCVMARK"),
    int(SOL_SOCKET, 82, "SO_RCVPRIORITY"),
    int(SOL_SOCKET, libc::SO_MAX_PACING_RATE, "SO_MAX_PACING_RATE"),
    // UDP over IPv4 without a checksum (sk_no_check_tx).
    int(SOL_SOCKET, SO_NO_CHECK, "SO_NO_CHECK"),
    // struct linger: no effect on a UDP close, but readable.
    Opt {
        level: SOL_SOCKET,
        name: libc::SO_LINGER,
        label: "SO_LINGER",
        kind: Kind::Exact(8),
    },
    int(SOL_SOCKET, libc::SO_OOBINLINE, "SO_OOBINLINE"),
    int(SOL_SOCKET, 69, "SO_PREFER_BUSY_POLL"),
    int(SOL_SOCKET, SO_BUSY_POLL_BUDGET, "SO_BUSY_POLL_BUDGET"),
    int(SOL_SOCKET, SO_BUF_LOCK, "SO_BUF_LOCK"),
    int(SOL_SOCKET, 73, "SO_RESERVE_MEM"),
    int(SOL_SOCKET, 74, "SO_TXREHASH"),
    int(SOL_SOCKET, 76, "SO_PASSPIDFD"),
    // IP level: also meaningful on AF_INET6 sockets for v4-mapped traffic.
    int(SOL_IP, libc::IP_TTL, "IP_TTL"),
    int(SOL_IP, libc::IP_TOS, "IP_TOS"),
    Opt {
        level: SOL_IP,
        name: libc::IP_OPTIONS,
        label: "IP_OPTIONS",
        kind: Kind::Bytes(40),
    },
    int(SOL_IP, libc::IP_PKTINFO, "IP_PKTINFO"),
    int(SOL_IP, libc::IP_RECVTTL, "IP_RECVTTL"),
    int(SOL_IP, libc::IP_RECVTOS, "IP_RECVTOS"),
    int(SOL_IP, libc::IP_RECVOPTS, "IP_RECVOPTS"),
    int(SOL_IP, libc::IP_RETOPTS, "IP_RETOPTS"),
    int(SOL_IP, libc::IP_RECVERR, "IP_RECVERR"),
    int(SOL_IP, 26, "IP_RECVERR_RFC4884"),
    int(SOL_IP, libc::IP_RECVORIGDSTADDR, "IP_RECVORIGDSTADDR"),
    int(SOL_IP, libc::IP_RECVFRAGSIZE, "IP_RECVFRAGSIZE"),
    int(SOL_IP, libc::IP_PASSSEC, "IP_PASSSEC"),
    int(SOL_IP, libc::IP_CHECKSUM, "IP_CHECKSUM"),
    int(SOL_IP, libc::IP_FREEBIND, "IP_FREEBIND"),
    int(SOL_IP, libc::IP_TRANSPARENT, "IP_TRANSPARENT"),
    int(
        SOL_IP,
        libc::IP_BIND_ADDRESS_NO_PORT,
        "IP_BIND_ADDRESS_NO_PORT",
    ),
    int(SOL_IP, libc::IP_MTU_DISCOVER, "IP_MTU_DISCOVER"),
    int(SOL_IP, libc::IP_MINTTL, "IP_MINTTL"),
    int(SOL_IP, libc::IP_NODEFRAG, "IP_NODEFRAG"),
    int(SOL_IP, libc::IP_MULTICAST_TTL, "IP_MULTICAST_TTL"),
    int(SOL_IP, libc::IP_MULTICAST_LOOP, "IP_MULTICAST_LOOP"),
    int(SOL_IP, libc::IP_MULTICAST_IF, "IP_MULTICAST_IF"),
    int(SOL_IP, libc::IP_MULTICAST_ALL, "IP_MULTICAST_ALL"),
    int(SOL_IP, libc::IP_UNICAST_IF, "IP_UNICAST_IF"),
    int(SOL_IP, 51, "IP_LOCAL_PORT_RANGE"),
    // IPv6 level.
    int(SOL_IPV6, libc::IPV6_V6ONLY, "IPV6_V6ONLY"),
    int(SOL_IPV6, libc::IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS"),
    int(SOL_IPV6, libc::IPV6_TCLASS, "IPV6_TCLASS"),
    int(SOL_IPV6, libc::IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO"),
    int(SOL_IPV6, libc::IPV6_RECVHOPLIMIT, "IPV6_RECVHOPLIMIT"),
    int(SOL_IPV6, libc::IPV6_RECVTCLASS, "IPV6_RECVTCLASS"),
    int(SOL_IPV6, libc::IPV6_RECVRTHDR, "IPV6_RECVRTHDR"),
    int(SOL_IPV6, libc::IPV6_RECVHOPOPTS, "IPV6_RECVHOPOPTS"),
    int(SOL_IPV6, libc::IPV6_RECVDSTOPTS, "IPV6_RECVDSTOPTS"),
    int(SOL_IPV6, libc::IPV6_RECVPATHMTU, "IPV6_RECVPATHMTU"),
    int(SOL_IPV6, libc::IPV6_RECVORIGDSTADDR, "IPV6_RECVORIGDSTADDR"),
    int(SOL_IPV6, libc::IPV6_RECVFRAGSIZE, "IPV6_RECVFRAGSIZE"),
    int(SOL_IPV6, libc::IPV6_FLOWINFO, "IPV6_FLOWINFO"),
    int(SOL_IPV6, libc::IPV6_FLOWINFO_SEND, "IPV6_FLOWINFO_SEND"),
    int(SOL_IPV6, libc::IPV6_RECVERR, "IPV6_RECVERR"),
    int(SOL_IPV6, 31, "IPV6_RECVERR_RFC4884"),
    int(SOL_IPV6, libc::IPV6_MTU_DISCOVER, "IPV6_MTU_DISCOVER"),
    int(SOL_IPV6, libc::IPV6_DONTFRAG, "IPV6_DONTFRAG"),
    int(SOL_IPV6, libc::IPV6_AUTOFLOWLABEL, "IPV6_AUTOFLOWLABEL"),
    int(
        SOL_IPV6,
        libc::IPV6_ADDR_PREFERENCES,
        "IPV6_ADDR_PREFERENCES",
    ),
    int(SOL_IPV6, libc::IPV6_MINHOPCOUNT, "IPV6_MINHOPCOUNT"),
    int(SOL_IPV6, libc::IPV6_MULTICAST_HOPS, "IPV6_MULTICAST_HOPS"),
    int(SOL_IPV6, libc::IPV6_MULTICAST_LOOP, "IPV6_MULTICAST_LOOP"),
    int(SOL_IPV6, libc::IPV6_MULTICAST_IF, "IPV6_MULTICAST_IF"),
    int(SOL_IPV6, libc::IPV6_MULTICAST_ALL, "IPV6_MULTICAST_ALL"),
    int(SOL_IPV6, libc::IPV6_UNICAST_IF, "IPV6_UNICAST_IF"),
    int(SOL_IPV6, libc::IPV6_ROUTER_ALERT, "IPV6_ROUTER_ALERT"),
    int(SOL_IPV6, 30, "IPV6_ROUTER_ALERT_ISOLATE"),
    int(SOL_IPV6, libc::IPV6_TRANSPARENT, "IPV6_TRANSPARENT"),
    int(SOL_IPV6, libc::IPV6_FREEBIND, "IPV6_FREEBIND"),
    // RFC 2292 receive flags: the cmsgs of the old API (their own bits of
    // rxopt, apart from the RFC 3542 ones above).
    int(SOL_IPV6, libc::IPV6_2292PKTINFO, "IPV6_2292PKTINFO"),
    int(SOL_IPV6, libc::IPV6_2292HOPOPTS, "IPV6_2292HOPOPTS"),
    int(SOL_IPV6, libc::IPV6_2292DSTOPTS, "IPV6_2292DSTOPTS"),
    int(SOL_IPV6, libc::IPV6_2292RTHDR, "IPV6_2292RTHDR"),
    int(SOL_IPV6, libc::IPV6_2292HOPLIMIT, "IPV6_2292HOPLIMIT"),
    // Sticky extension headers every datagram carries (RFC 3542 6.);
    // getsockopt returns the header, at most 2048 bytes ((hdrlen + 1) * 8).
    bytes(SOL_IPV6, libc::IPV6_HOPOPTS, "IPV6_HOPOPTS", 2048),
    bytes(SOL_IPV6, libc::IPV6_RTHDRDSTOPTS, "IPV6_RTHDRDSTOPTS", 2048),
    bytes(SOL_IPV6, libc::IPV6_RTHDR, "IPV6_RTHDR", 2048),
    bytes(SOL_IPV6, libc::IPV6_DSTOPTS, "IPV6_DSTOPTS", 2048),
    // UDP level.
    int(SOL_UDP, libc::UDP_SEGMENT, "UDP_SEGMENT"),
    int(SOL_UDP, libc::UDP_GRO, "UDP_GRO"),
    int(SOL_UDP, 101, "UDP_NO_CHECK6_TX"),
    int(SOL_UDP, 102, "UDP_NO_CHECK6_RX"),
    int(SOL_UDP, libc::UDP_ENCAP, "UDP_ENCAP"),
    // UDP-Lite only.
    int(SOL_UDPLITE, 10, "UDPLITE_SEND_CSCOV"),
    int(SOL_UDPLITE, 11, "UDPLITE_RECV_CSCOV"),
];

/// Options the dump reads but the restore does not set: a socket that has
/// one of them on is refused by name (see `engine/INVENTORY.md`).
/// `(level, name, label, why)`.
pub const REFUSED_IF_SET: &[(i32, i32, &str, &str)] = &[(
    SOL_SOCKET,
    libc::SO_DEBUG,
    "SO_DEBUG",
    "it needs CAP_NET_ADMIN and has no effect on UDP, so a restore does not set it from an image",
)];

/// The first of [`REFUSED_IF_SET`] that is on on `fd`, as a refusal
/// message.
pub fn refused_if_set(fd: BorrowedFd<'_>) -> io::Result<Option<String>> {
    for (level, name, label, why) in REFUSED_IF_SET {
        match sys::getsockopt_int(fd, *level, *name) {
            Ok(0) => {}
            Ok(v) => return Ok(Some(format!("{label} is set ({v}): {why}"))),
            Err(e) if not_applicable(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Receive options whose per-datagram metadata the restore cannot carry
/// into the re-created datagrams, `(level, name, what is lost)`: with one
/// of them on and datagrams queued, the dump names the loss (and refuses
/// under `DumpOptions::refuse_metadata_loss`). What the restore carries:
/// payload, source, TTL/hop limit, TOS/traffic class, the arrival address
/// and interface (IP_PKTINFO, IPV6_PKTINFO, IP_RECVORIGDSTADDR, where the
/// destination is an address of this host; see `engine/INVENTORY.md`), the
/// UDP_GRO segment size.
pub const METADATA_NOT_CARRIED: &[(i32, i32, &str)] = &[
    (SOL_SOCKET, SO_TIMESTAMP_OLD, "receive timestamps (SO_TIMESTAMP): the restored datagrams are stamped when re-injected; the image keeps the originals"),
    (SOL_SOCKET, SO_TIMESTAMPNS_OLD, "receive timestamps (SO_TIMESTAMPNS): the restored datagrams are stamped when re-injected; the image keeps the originals"),
    (SOL_SOCKET, SO_TIMESTAMP_NEW, "receive timestamps (SO_TIMESTAMP_NEW): stamped when re-injected"),
    (SOL_SOCKET, SO_TIMESTAMPNS_NEW, "receive timestamps (SO_TIMESTAMPNS_NEW): stamped when re-injected"),
    (SOL_SOCKET, libc::SO_TIMESTAMPING, "receive timestamps (SO_TIMESTAMPING): stamped when re-injected"),
    (SOL_SOCKET, libc::SO_RXQ_OVFL, "the drop counter (SO_RXQ_OVFL): the restored socket's starts at zero"),
    (SOL_SOCKET, 75, "the packet mark (SO_RCVMARK): re-injected datagrams carry none"),
    (SOL_SOCKET, 82, "the packet priority (SO_RCVPRIORITY): re-injected datagrams carry none"),
    (SOL_IP, libc::IP_RECVOPTS, "IP options (IP_RECVOPTS): re-injected datagrams carry none"),
    (SOL_IP, libc::IP_RETOPTS, "IP options (IP_RETOPTS): re-injected datagrams carry none"),
    (SOL_IP, libc::IP_RECVFRAGSIZE, "the fragment size (IP_RECVFRAGSIZE): re-injected datagrams are not fragmented"),
    (SOL_IP, libc::IP_CHECKSUM, "the checksum cmsg (IP_CHECKSUM)"),
    (SOL_IPV6, libc::IPV6_FLOWINFO, "the flow label (IPV6_FLOWINFO): re-injected datagrams carry none"),
    (SOL_IPV6, libc::IPV6_RECVHOPOPTS, "Hop-by-Hop options (IPV6_RECVHOPOPTS): re-injected datagrams carry none"),
    (SOL_IPV6, libc::IPV6_RECVRTHDR, "routing headers (IPV6_RECVRTHDR): re-injected datagrams carry none"),
    (SOL_IPV6, libc::IPV6_RECVDSTOPTS, "destination options (IPV6_RECVDSTOPTS): re-injected datagrams carry none"),
    (SOL_IPV6, libc::IPV6_2292HOPOPTS, "Hop-by-Hop options (IPV6_2292HOPOPTS): re-injected datagrams carry none"),
    (SOL_IPV6, libc::IPV6_2292RTHDR, "routing headers (IPV6_2292RTHDR): re-injected datagrams carry none"),
    (SOL_IPV6, libc::IPV6_2292DSTOPTS, "destination options (IPV6_2292DSTOPTS): re-injected datagrams carry none"),
    (SOL_IPV6, libc::IPV6_RECVFRAGSIZE, "the fragment size (IPV6_RECVFRAGSIZE): re-injected datagrams are not fragmented"),
];

/// What the saved options ask the kernel to deliver with each datagram
/// that the restore cannot carry ([`METADATA_NOT_CARRIED`]), named.
pub fn metadata_not_carried(saved: &[v1::SockOpt]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (level, name, what) in METADATA_NOT_CARRIED {
        let value = saved_int(saved, *level, *name).unwrap_or(0);
        // SO_TIMESTAMPING: only its receive flags (SOF_TIMESTAMPING_RX_*)
        // ask for stamps.
        let on = if *name == libc::SO_TIMESTAMPING && *level == SOL_SOCKET {
            value & (0x4 | 0x8) != 0
        } else {
            value != 0
        };
        if on && !out.contains(what) {
            out.push(what);
        }
    }
    out
}

/// The row of `(level, name)`.
pub fn lookup(level: i32, name: i32) -> Option<&'static Opt> {
    TABLE.iter().find(|o| o.level == level && o.name == name)
}

/// Options a checkpoint keeps outside its option list: an image that puts
/// one of them in `options` would bypass the step that restores it.
const HANDLED_ELSEWHERE: &[(i32, i32, &str, &str)] = &[
    (
        SOL_SOCKET,
        libc::SO_BINDTODEVICE,
        "SO_BINDTODEVICE",
        "bound_device",
    ),
    (SOL_SOCKET, libc::SO_PEEK_OFF, "SO_PEEK_OFF", "peek_offset"),
    (
        SOL_SOCKET,
        libc::SO_ATTACH_FILTER,
        "SO_ATTACH_FILTER",
        "filter",
    ),
    (SOL_SOCKET, libc::SO_LOCK_FILTER, "SO_LOCK_FILTER", "filter"),
    (SOL_UDP, libc::UDP_CORK, "UDP_CORK", "send_queue"),
];

/// uapi names of some options the table does not hold, so that a refusal
/// names them (asm-generic/socket.h, linux/in.h, linux/in6.h).
const FOREIGN_LABELS: &[(i32, i32, &str)] = &[
    (SOL_SOCKET, libc::SO_DEBUG, "SO_DEBUG"),
    (SOL_SOCKET, libc::SO_DETACH_FILTER, "SO_DETACH_FILTER"),
    (SOL_SOCKET, libc::SO_ATTACH_BPF, "SO_ATTACH_BPF"),
    (
        SOL_SOCKET,
        libc::SO_ATTACH_REUSEPORT_CBPF,
        "SO_ATTACH_REUSEPORT_CBPF",
    ),
    (
        SOL_SOCKET,
        libc::SO_ATTACH_REUSEPORT_EBPF,
        "SO_ATTACH_REUSEPORT_EBPF",
    ),
    (SOL_SOCKET, libc::SO_NOFCS, "SO_NOFCS"),
    (SOL_SOCKET, libc::SO_RCVBUFFORCE, "SO_RCVBUFFORCE"),
    (SOL_SOCKET, libc::SO_SNDBUFFORCE, "SO_SNDBUFFORCE"),
    (SOL_IP, libc::IP_HDRINCL, "IP_HDRINCL"),
    (SOL_IP, libc::IP_ROUTER_ALERT, "IP_ROUTER_ALERT"),
    (SOL_IP, libc::IP_ADD_MEMBERSHIP, "IP_ADD_MEMBERSHIP"),
    (SOL_IP, libc::IP_IPSEC_POLICY, "IP_IPSEC_POLICY"),
    (SOL_IP, libc::IP_XFRM_POLICY, "IP_XFRM_POLICY"),
    (SOL_IPV6, libc::IPV6_ADDRFORM, "IPV6_ADDRFORM"),
    (SOL_IPV6, libc::IPV6_ADD_MEMBERSHIP, "IPV6_ADD_MEMBERSHIP"),
    (SOL_IPV6, libc::IPV6_IPSEC_POLICY, "IPV6_IPSEC_POLICY"),
    (SOL_IPV6, libc::IPV6_XFRM_POLICY, "IPV6_XFRM_POLICY"),
];

fn level_label(level: i32) -> String {
    match level {
        SOL_SOCKET => "SOL_SOCKET".into(),
        SOL_IP => "SOL_IP".into(),
        SOL_IPV6 => "SOL_IPV6".into(),
        SOL_UDP => "SOL_UDP".into(),
        SOL_UDPLITE => "SOL_UDPLITE".into(),
        l => format!("level {l}"),
    }
}

/// Checks an image's option list against [`TABLE`] before anything is
/// created: restore sets only options the table holds, each once, with a
/// value of the row's layout ([`Kind::Int`] and [`Kind::Doubled`]: an
/// integer that fits a C `int`; [`Kind::Bytes`]: raw bytes no longer than
/// the row allows; [`Kind::Exact`]: the struct's size, or nothing), the
/// `SOL_IPV6` rows only on an IPv6 socket (`v6`), and the `SOL_UDPLITE`
/// rows only on a UDP-Lite socket.
///
/// An image is untrusted input and `restore` usually runs as root, so an
/// option the dump never saves (`SO_DEBUG`, say, which needs
/// `CAP_NET_ADMIN`) must not reach setsockopt.
///
/// # Errors
/// The first offending option, named (its uapi name where known, else its
/// level and number), and why.
pub fn check_saved(saved: &[v1::SockOpt], v6: bool, udplite: bool) -> Result<(), String> {
    for (i, o) in saved.iter().enumerate() {
        let name = || {
            FOREIGN_LABELS
                .iter()
                .find(|(l, n, _)| *l == o.level && *n == o.name)
                .map(|(_, _, s)| format!("{} ({}, {})", s, level_label(o.level), o.name))
                .unwrap_or_else(|| format!("{} option {}", level_label(o.level), o.name))
        };
        if let Some((_, _, label, field)) = HANDLED_ELSEWHERE
            .iter()
            .find(|(l, n, _, _)| *l == o.level && *n == o.name)
        {
            return Err(format!(
                "option {i}: {label} is not restored from the option list \
                 (the checkpoint keeps it in `{field}`)"
            ));
        }
        let Some(row) = lookup(o.level, o.name) else {
            return Err(format!(
                "option {i}: {} is not one udp-repair saves; refusing to set it",
                name()
            ));
        };
        if saved[..i]
            .iter()
            .any(|p| p.level == o.level && p.name == o.name)
        {
            return Err(format!("option {i}: {} appears twice", row.label));
        }
        if row.level == SOL_IPV6 && !v6 {
            return Err(format!(
                "option {i}: {} exists only on IPv6 sockets",
                row.label
            ));
        }
        if row.level == SOL_UDPLITE && !udplite {
            return Err(format!(
                "option {i}: {} exists only on UDP-Lite sockets",
                row.label
            ));
        }
        match (&o.value, row.kind) {
            (Some(v1::sock_opt::Value::Int(v)), Kind::Int | Kind::Doubled) => {
                if i32::try_from(*v).is_err() {
                    return Err(format!(
                        "option {i}: {} = {v} does not fit a C int",
                        row.label
                    ));
                }
            }
            (Some(v1::sock_opt::Value::Raw(b)), Kind::Bytes(max)) => {
                if b.len() > max {
                    return Err(format!(
                        "option {i}: {} holds {} bytes, at most {max} are valid",
                        row.label,
                        b.len()
                    ));
                }
            }
            (None, _) => return Err(format!("option {i}: {} has no value", row.label)),
            (Some(v1::sock_opt::Value::Raw(b)), Kind::Exact(n)) => {
                if !b.is_empty() && b.len() != n {
                    return Err(format!(
                        "option {i}: {} holds {} bytes, its struct has {n}",
                        row.label,
                        b.len()
                    ));
                }
            }
            (Some(_), Kind::Bytes(_) | Kind::Exact(_)) => {
                return Err(format!(
                    "option {i}: {} takes raw bytes, the image has an integer",
                    row.label
                ))
            }
            (Some(_), _) => {
                return Err(format!(
                    "option {i}: {} takes an integer, the image has raw bytes",
                    row.label
                ))
            }
        }
    }
    Ok(())
}

/// The row of a saved option, or an error naming it (see [`check_saved`]).
fn row_of(o: &v1::SockOpt) -> io::Result<&'static Opt> {
    lookup(o.level, o.name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} option {} is not in the option table",
                level_label(o.level),
                o.name
            ),
        )
    })
}

/// A readable name for `(level, name)`.
pub fn label(level: i32, name: i32) -> String {
    match lookup(level, name) {
        Some(o) => o.label.to_string(),
        None => format!("({level}, {name})"),
    }
}

fn not_applicable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOPROTOOPT | libc::EOPNOTSUPP | libc::EINVAL)
    )
}

/// Reads one option; `Ok(None)` when the socket does not have it.
pub fn read(fd: BorrowedFd<'_>, o: &Opt) -> io::Result<Option<v1::sock_opt::Value>> {
    let r = match o.kind {
        Kind::Int | Kind::Doubled => {
            sys::getsockopt_int(fd, o.level, o.name).map(|v| v1::sock_opt::Value::Int(v.into()))
        }
        Kind::Bytes(max) | Kind::Exact(max) => {
            let mut buf = vec![0u8; max];
            sys::getsockopt_bytes(fd, o.level, o.name, &mut buf).map(|n| {
                buf.truncate(n.min(max));
                v1::sock_opt::Value::Raw(buf)
            })
        }
    };
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if not_applicable(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads every option of the table that the socket has.
pub fn save(fd: BorrowedFd<'_>, udplite: bool) -> io::Result<Vec<v1::SockOpt>> {
    let mut out = Vec::new();
    for o in TABLE {
        if o.level == SOL_UDPLITE && !udplite {
            continue;
        }
        let v = read(fd, o)
            .map_err(|e| io::Error::new(e.kind(), format!("getsockopt {}: {e}", o.label)))?;
        if let Some(v) = v {
            out.push(v1::SockOpt {
                level: o.level,
                name: o.name,
                value: Some(v),
            });
        }
    }
    Ok(out)
}

/// Sets one saved option's value.
///
/// # Errors
/// `InvalidInput` for an option the table does not hold or an integer that
/// does not fit a C `int`; else setsockopt's error.
pub fn write(fd: BorrowedFd<'_>, o: &v1::SockOpt) -> io::Result<()> {
    let kind = row_of(o)?.kind;
    let int = |v: i64| {
        i32::try_from(v).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{v} does not fit a C int"),
            )
        })
    };
    match (&o.value, kind) {
        (Some(v1::sock_opt::Value::Int(v)), Kind::Doubled) => {
            let half = int(*v / 2)?;
            // The FORCE variants ignore rmem_max/wmem_max (CAP_NET_ADMIN);
            // without the capability fall back to the capped option.
            let force = if o.name == libc::SO_RCVBUF {
                libc::SO_RCVBUFFORCE
            } else {
                libc::SO_SNDBUFFORCE
            };
            sys::setsockopt_int(fd, o.level, force, half)
                .or_else(|_| sys::setsockopt_int(fd, o.level, o.name, half))
        }
        (Some(v1::sock_opt::Value::Int(v)), _) => {
            sys::setsockopt_int(fd, o.level, o.name, int(*v)?)
        }
        (Some(v1::sock_opt::Value::Raw(b)), _) => sys::setsockopt_bytes(fd, o.level, o.name, b),
        (None, _) => Ok(()),
    }
}

/// Whether setting another option of the table changes this one, so that
/// it must be set after the others: `IP_TOS` sets `sk_priority` from the
/// TOS (`__ip_sock_set_tos()`, net/ipv4/ip_sockglue.c).
fn reset_by_others(o: &v1::SockOpt) -> bool {
    o.level == SOL_SOCKET && o.name == libc::SO_PRIORITY
}

/// Sets the saved options that differ on `fd` (skipping those `skip`
/// accepts), in table order, except that an option another one resets
/// (`SO_PRIORITY`, by `IP_TOS`) comes last. Errors name the option.
pub fn apply(
    fd: BorrowedFd<'_>,
    saved: &[v1::SockOpt],
    skip: impl Fn(&v1::SockOpt) -> bool,
) -> io::Result<()> {
    let ordered = saved
        .iter()
        .filter(|o| !reset_by_others(o))
        .chain(saved.iter().filter(|o| reset_by_others(o)));
    for o in ordered {
        if skip(o) {
            continue;
        }
        let row = row_of(o)?;
        let now = read(fd, row)
            .map_err(|e| io::Error::new(e.kind(), format!("getsockopt {}: {e}", row.label)))?;
        if now.as_ref() == o.value.as_ref() {
            continue;
        }
        write(fd, o).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "setsockopt {} = {}: {e}",
                    label(o.level, o.name),
                    show_value(o)
                ),
            )
        })?;
    }
    Ok(())
}

/// Reads every saved option back and reports the first that differs.
pub fn verify(
    fd: BorrowedFd<'_>,
    saved: &[v1::SockOpt],
    skip: impl Fn(&v1::SockOpt) -> bool,
) -> io::Result<()> {
    for o in saved {
        if skip(o) {
            continue;
        }
        let row = row_of(o)?;
        let now = read(fd, row)?;
        if now.as_ref() != o.value.as_ref() {
            return Err(io::Error::other(format!(
                "{} reads {} after restore, the checkpoint has {}",
                row.label,
                now.map(|v| show_value(&v1::SockOpt {
                    level: 0,
                    name: 0,
                    value: Some(v)
                }))
                .unwrap_or_else(|| "nothing".into()),
                show_value(o)
            )));
        }
    }
    Ok(())
}

/// The value for people.
pub fn show_value(o: &v1::SockOpt) -> String {
    match &o.value {
        Some(v1::sock_opt::Value::Int(v)) => v.to_string(),
        Some(v1::sock_opt::Value::Raw(b)) => {
            if o.level == SOL_SOCKET && o.name == libc::SO_BINDTODEVICE {
                String::from_utf8_lossy(b)
                    .trim_end_matches('\0')
                    .to_string()
            } else {
                let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
                format!("0x{}", hex.join(""))
            }
        }
        None => "-".into(),
    }
}

/// The saved int value of `(level, name)`, if any.
pub fn saved_int(saved: &[v1::SockOpt], level: i32, name: i32) -> Option<i32> {
    saved
        .iter()
        .find(|o| o.level == level && o.name == name)
        .and_then(|o| match o.value {
            Some(v1::sock_opt::Value::Int(v)) => i32::try_from(v).ok(),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    /// IP_TOS 0x10 sets the priority to 6 (rt_tos2priority): a priority
    /// of 3 saved beside it must survive the restore's IP_TOS.
    #[test]
    fn a_priority_beside_a_tos_survives_apply() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        sys::setsockopt_int(a.as_fd(), libc::SOL_IP, libc::IP_TOS, 0x10).unwrap();
        sys::setsockopt_int(a.as_fd(), SOL_SOCKET, libc::SO_PRIORITY, 3).unwrap();
        let saved = save(a.as_fd(), false).unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        apply(b.as_fd(), &saved, |_| false).unwrap();
        verify(b.as_fd(), &saved, |_| false).unwrap();
        let prio = sys::getsockopt_int(b.as_fd(), SOL_SOCKET, libc::SO_PRIORITY).unwrap();
        assert_eq!(prio, 3);
    }
}
