//! The uapi of the `getsockopt` kernel series: `UDP_REPAIR_PENDING`.
//!
//! In repair mode (`setsockopt(SOL_UDP, UDP_REPAIR, 1)`, CAP_NET_ADMIN),
//! `getsockopt(SOL_UDP, UDP_REPAIR_PENDING)` fills `struct
//! udp_repair_pending` of `include/uapi/linux/udp.h` ([`RawPending`]) with
//! the state of the datagram pending on a corked socket, as `TCP_INFO`
//! does (min(optlen, its size) bytes, optlen set to that; nothing read
//! from the buffer), and `UDP_REPAIR_PENDING_DATA` copies its IP options
//! and payload, whose lengths the struct gives. [`read_pending`] turns
//! that into a [`Pending`]: the payload and a typed [`Cork`] with
//! everything needed to send the datagram again identically. The kernel
//! side is in `kernel-patches/getsockopt/`.
//!
//! Errors of the options (as `io::Error` raw OS errors; optlen untouched):
//! `ENOPROTOOPT`, a kernel without them (or, on 6.12, a UDP-Lite socket);
//! `EPERM`, not in repair mode; `ENODATA`, nothing pending
//! ([`read_pending`] returns `Ok(None)`); `EINVAL`, optlen shorter than
//! [`SIZE_VER0`].
//!
//! The `recvmsg` series uses the same `UDP_REPAIR` option: [`detect`] tells
//! whether `UDP_REPAIR_PENDING` itself exists.

use crate::sys;
use crate::UDP_REPAIR;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::BorrowedFd;

/// `SOL_UDP` option number of `UDP_REPAIR_PENDING`.
pub const UDP_REPAIR_PENDING: i32 = 3;

/// `SOL_UDP` option number of `UDP_REPAIR_PENDING_DATA`.
pub const UDP_REPAIR_PENDING_DATA: i32 = 4;

/// `UDP_REPAIR_PENDING_SIZE_VER0`: size of the first published struct.
pub const SIZE_VER0: usize = 96;

/// `UDP_REPAIR_PENDING_F_*`: bits of [`RawPending::flags`].
pub mod flags {
    /// Held by `UDP_CORK`, not only by `MSG_MORE`.
    pub const CORK: u32 = 1 << 0;
    /// TTL / hop limit fixed in the datagram (IPv4: `IP_TTL` cmsg; IPv6:
    /// always).
    pub const TTL: u32 = 1 << 1;
    /// TOS / traffic class fixed in the datagram (IPv6: always; IPv4: on
    /// mainline always, `ipcm_init_sk()` takes the socket's when corking;
    /// on 6.12 only with an `IP_TOS` cmsg).
    pub const TOS: u32 = 1 << 2;
    /// Priority fixed in the datagram (mainline: always, at cork time; 6.12:
    /// IPv4 with an `IP_TOS` cmsg only).
    pub const PRIORITY: u32 = 1 << 3;
    /// IPv6: `IPV6_DONTFRAG` set when the datagram was corked.
    pub const DONTFRAG: u32 = 1 << 4;
    /// [`super::RawPending::ts_opt_id`] is valid (`SOF_TIMESTAMPING_OPT_ID`).
    pub const TS_OPT_ID: u32 = 1 << 5;
    /// The first send had `MSG_CONFIRM`.
    pub const CONFIRM: u32 = 1 << 6;
    /// The 6.12 backport only: `SO_WIFI_STATUS` was on when the datagram
    /// was corked (6.12 keeps it in the skb; mainline reads the socket's
    /// when it sends).
    pub const WIFI_STATUS: u32 = 1 << 7;
    /// Every bit this version knows.
    pub const KNOWN: u32 = (1 << 8) - 1;
}

/// `UDP_REPAIR_PENDING_U_*`: bits of [`RawPending::unsupported`]: state
/// the kernel did not report and a restore would lose.
pub mod unsupported {
    /// `MSG_ZEROCOPY` data (its completion notifications).
    pub const ZEROCOPY: u32 = 1 << 0;
    /// Mainline: a transmit timestamp a BPF program requested
    /// (`SKBTX_BPF`), which no cmsg requests again.
    pub const BPF_TSTAMP: u32 = 1 << 1;
    /// The 6.12 backport only: a `SOF_TIMESTAMPING_OPT_ID` key, which
    /// 6.12 has no `SCM_TS_OPT_ID` cmsg to set again.
    pub const TS_OPT_ID: u32 = 1 << 2;
    /// The 6.12 backport only: `SOF_TIMESTAMPING_BIND_PHC` kept with the
    /// datagram, which no cmsg sets.
    pub const BIND_PHC: u32 = 1 << 3;
    /// Every bit this version names.
    pub const KNOWN: u32 = ZEROCOPY | BPF_TSTAMP | TS_OPT_ID | BIND_PHC;
}

/// `struct udp_repair_pending`, field for field (version 0, 96 bytes, the
/// same on every architecture: `transmit_time` is `__aligned_u64` at an
/// offset of 72).
///
/// Parsed from the bytes the kernel wrote with [`RawPending::parse`], in
/// safe code. Multi-byte fields hold host-order values except those the
/// uapi declares `__be`: `saddr`, `daddr`, `sport`, `dport`, `flowlabel`,
/// which keep their network-order bytes here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawPending {
    /// [`flags`] bits.
    pub flags: u32,
    /// [`unsupported`] bits.
    pub unsupported: u32,
    /// `AF_INET` or `AF_INET6`: family of the pending data.
    pub family: u16,
    /// `UDP_SEGMENT` size, 0 if none.
    pub gso_size: u16,
    /// IPv6: outgoing interface of the flow; IPv4: 0.
    pub ifindex: u32,
    /// Source address (network order); IPv4 in `saddr[0]`.
    pub saddr: [[u8; 4]; 4],
    /// Destination address (network order); IPv4 in `daddr[0]`.
    pub daddr: [[u8; 4]; 4],
    /// Source port (network order).
    pub sport: [u8; 2],
    /// Destination port (network order).
    pub dport: [u8; 2],
    /// IPv6 flow label, in the bits of `sin6_flowinfo` (network order).
    pub flowlabel: [u8; 4],
    /// `SO_PRIORITY` of the datagram.
    pub priority: u32,
    /// `SO_MARK` of the datagram.
    pub mark: u32,
    /// `SOF_TIMESTAMPING_TX_*` flags requested.
    pub tsflags: u32,
    /// Timestamp key, if [`flags::TS_OPT_ID`].
    pub ts_opt_id: u32,
    /// `SCM_TXTIME`, 0 if none.
    pub transmit_time: u64,
    /// TTL or hop limit.
    pub ttl: u8,
    /// TOS or traffic class.
    pub tos: u8,
    /// IPv4 options length.
    pub ip_opt_len: u16,
    /// IPv6 Hop-by-Hop options header length.
    pub hopopts_len: u16,
    /// IPv6 Destination options (before the routing header) length.
    pub rthdrdstopts_len: u16,
    /// IPv6 routing header length.
    pub rthdr_len: u16,
    /// IPv6 Destination options header length.
    pub dstopts_len: u16,
    /// Length of the payload.
    pub payload_len: u32,
}

/// Reads fixed-size fields off a byte slice, front to back.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        out
    }
    fn u16(&mut self) -> u16 {
        u16::from_ne_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_ne_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_ne_bytes(self.take())
    }
    fn addr(&mut self) -> [[u8; 4]; 4] {
        [self.take(), self.take(), self.take(), self.take()]
    }
}

impl RawPending {
    /// Parses the struct at the start of `buf`; `None` if `buf` is shorter
    /// than [`SIZE_VER0`]. Bytes past it (a newer kernel's fields) are
    /// not read.
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let mut f = Fields(buf.get(..SIZE_VER0)?);
        Some(Self {
            flags: f.u32(),
            unsupported: f.u32(),
            family: f.u16(),
            gso_size: f.u16(),
            ifindex: f.u32(),
            saddr: f.addr(),
            daddr: f.addr(),
            sport: f.take(),
            dport: f.take(),
            flowlabel: f.take(),
            priority: f.u32(),
            mark: f.u32(),
            tsflags: f.u32(),
            ts_opt_id: f.u32(),
            transmit_time: f.u64(),
            ttl: f.take::<1>()[0],
            tos: f.take::<1>()[0],
            ip_opt_len: f.u16(),
            hopopts_len: f.u16(),
            rthdrdstopts_len: f.u16(),
            rthdr_len: f.u16(),
            dstopts_len: f.u16(),
            payload_len: f.u32(),
        })
    }

    /// Sum of the option lengths.
    pub fn opt_len(&self) -> usize {
        [
            self.ip_opt_len,
            self.hopopts_len,
            self.rthdrdstopts_len,
            self.rthdr_len,
            self.dstopts_len,
        ]
        .iter()
        .map(|&l| usize::from(l))
        .sum()
    }

    /// Length of what `UDP_REPAIR_PENDING_DATA` returns: options, payload.
    pub fn data_len(&self) -> usize {
        self.opt_len() + self.payload_len as usize
    }
}

/// Family of the pending data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 (on an IPv6 socket: a v4-mapped destination).
    V4,
    /// IPv6.
    V6,
}

/// What holds the datagram back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorkedBy {
    /// `UDP_CORK` is set: clearing it sends the datagram.
    UdpCork,
    /// Only `MSG_MORE`: the next send without it sends the datagram.
    MsgMore,
}

/// A value of the datagram and whether it is fixed in it.
///
/// `fixed`: set when the datagram was corked (a cmsg of the first send, or
/// always: IPv6's hop limit and traffic class, and on mainline IPv4's TOS
/// and every priority); a restore passes it as a cmsg. Not fixed:
/// the value follows the socket option until the datagram is sent, and
/// `value` is what it would get now; a restore sets the socket option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Value<T> {
    /// The value the datagram gets if sent now.
    pub value: T,
    /// Fixed in the datagram rather than taken from the socket.
    pub fixed: bool,
}

/// IP options of the pending datagram, in the form the send cmsgs take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpOptions {
    /// IPv4 options, as `IP_RETOPTS` takes them.
    pub ipv4: Vec<u8>,
    /// IPv6 Hop-by-Hop options header (`IPV6_HOPOPTS`).
    pub hopopts: Vec<u8>,
    /// IPv6 Destination options before the routing header
    /// (`IPV6_RTHDRDSTOPTS`).
    pub rthdrdstopts: Vec<u8>,
    /// IPv6 routing header (`IPV6_RTHDR`).
    pub rthdr: Vec<u8>,
    /// IPv6 Destination options header (`IPV6_DSTOPTS`).
    pub dstopts: Vec<u8>,
}

impl IpOptions {
    /// No option at all.
    pub fn is_empty(&self) -> bool {
        self.ipv4.is_empty()
            && self.hopopts.is_empty()
            && self.rthdrdstopts.is_empty()
            && self.rthdr.is_empty()
            && self.dstopts.is_empty()
    }
}

/// The cork state of a pending datagram: everything besides the payload
/// that it will be sent with.
///
/// Stable interface: fields are only added. Values that a send cmsg can
/// fix are [`Value`]s; the others are fixed in the datagram when it was
/// corked (`mark`, `gso_size`, `transmit_time`, `tsflags`) or are part of
/// the flow (`source`, `destination`, `flowlabel`, `oif`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cork {
    /// Family of the pending data.
    pub family: Family,
    /// Where the datagram goes. IPv4 data on an IPv6 socket is reported as
    /// a [`SocketAddr::V4`]; the socket names it v4-mapped.
    pub destination: SocketAddr,
    /// The source address and port it leaves from.
    pub source: SocketAddr,
    /// IPv6 flow label (host order, 20 bits), 0 if none.
    pub flowlabel: u32,
    /// IPv6 outgoing interface of the flow (`IPV6_PKTINFO`, scope id,
    /// bound device), 0 if none; IPv4: always 0 (the kernel keeps only the
    /// route).
    pub oif: u32,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: Value<u8>,
    /// TOS (IPv4) or traffic class (IPv6).
    pub tos: Value<u8>,
    /// Priority (`SO_PRIORITY`). Mainline: fixed at cork time (the
    /// socket's then, or a cmsg's). 6.12: IPv4 fixed with the TOS of an
    /// `IP_TOS` cmsg, else, and for IPv6 always, the socket's.
    pub priority: Value<u32>,
    /// Mark (`SO_MARK` cmsg, or the socket's when corked).
    pub mark: u32,
    /// Segment size (`UDP_SEGMENT`), 0 if none.
    pub gso_size: u16,
    /// Transmit time (`SCM_TXTIME`), 0 if none.
    pub transmit_time: u64,
    /// `SOF_TIMESTAMPING_TX_*` flags requested (`SO_TIMESTAMPING` cmsg or
    /// the socket's when corked).
    pub tsflags: u32,
    /// Timestamp key (`SOF_TIMESTAMPING_OPT_ID`), if one was taken.
    pub tskey: Option<u32>,
    /// IPv6: `IPV6_DONTFRAG` was set (cmsg or socket) when corked. IPv4:
    /// false; the DF bit follows `IP_MTU_DISCOVER` when sent.
    pub dontfrag: bool,
    /// `SO_WIFI_STATUS` was on when corked (6.12 only; always false on
    /// mainline, which reads the socket's when it sends).
    pub wifi_status: bool,
    /// The first send had `MSG_CONFIRM`.
    pub confirm: bool,
    /// IP options.
    pub options: IpOptions,
    /// `UDP_CORK` or `MSG_MORE`.
    pub corked_by: CorkedBy,
    /// [`unsupported`] bits: state the kernel could not report. A tool must
    /// refuse to checkpoint when this is not 0, known bits or not.
    pub unsupported: u32,
    /// [`flags`] bits this version does not know (a newer kernel).
    pub unknown_flags: u32,
}

/// The datagram pending on a corked socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The state it will be sent with.
    pub cork: Cork,
    /// Its payload (without the UDP header).
    pub payload: Vec<u8>,
}

impl Pending {
    /// Why it cannot be restored faithfully on any kernel, one line per
    /// reason; empty when it can. What depends on the restoring kernel
    /// (the timestamp key needs `SCM_TS_OPT_ID`) is decided by the reader
    /// (readers.rs, `from_getsockopt`).
    pub fn losses(&self) -> Vec<String> {
        let mut out = Vec::new();
        let u = self.cork.unsupported;
        if u & unsupported::ZEROCOPY != 0 {
            out.push("MSG_ZEROCOPY data pending (completion notifications)".to_string());
        }
        if u & unsupported::BPF_TSTAMP != 0 {
            out.push("a transmit timestamp a BPF program requested (no cmsg requests it)".into());
        }
        if u & unsupported::TS_OPT_ID != 0 {
            out.push(
                "a SOF_TIMESTAMPING_OPT_ID key (this kernel has no SCM_TS_OPT_ID to set it)"
                    .to_string(),
            );
        }
        if u & unsupported::BIND_PHC != 0 {
            out.push("SOF_TIMESTAMPING_BIND_PHC kept with the datagram (no cmsg sets it)".into());
        }
        if u & !unsupported::KNOWN != 0 {
            out.push(format!(
                "state this tool does not know (unsupported bits {:#x})",
                u & !unsupported::KNOWN
            ));
        }
        out
    }

    /// Decodes what the kernel filled: `head`, the struct
    /// (`UDP_REPAIR_PENDING`, the bytes it reported), and `data`, the
    /// options then the payload (`UDP_REPAIR_PENDING_DATA`), which must be
    /// exactly as long as the struct says.
    pub fn decode(head: &[u8], data: &[u8]) -> io::Result<Self> {
        let raw = RawPending::parse(head)
            .ok_or_else(|| invalid(format!("{} bytes, < {SIZE_VER0}", head.len())))?;
        if data.len() != raw.data_len() {
            return Err(invalid(format!(
                "{} bytes of options and payload, the struct says {}",
                data.len(),
                raw.data_len()
            )));
        }
        let (opts, payload) = data.split_at(raw.opt_len());
        let payload = payload.to_vec();

        let mut rest = opts;
        let mut part = |len: u16| {
            let (a, b) = rest.split_at(usize::from(len));
            rest = b;
            a.to_vec()
        };
        let options = IpOptions {
            ipv4: part(raw.ip_opt_len),
            hopopts: part(raw.hopopts_len),
            rthdrdstopts: part(raw.rthdrdstopts_len),
            rthdr: part(raw.rthdr_len),
            dstopts: part(raw.dstopts_len),
        };

        let sport = u16::from_be_bytes(raw.sport);
        let dport = u16::from_be_bytes(raw.dport);
        let flowlabel = u32::from_be_bytes(raw.flowlabel);
        let (family, source, destination) = match i32::from(raw.family) {
            libc::AF_INET => (
                Family::V4,
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(raw.saddr[0]), sport)),
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(raw.daddr[0]), dport)),
            ),
            libc::AF_INET6 => (
                Family::V6,
                SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(flat(&raw.saddr)),
                    sport,
                    0,
                    0,
                )),
                SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(flat(&raw.daddr)),
                    dport,
                    flowlabel,
                    0,
                )),
            ),
            f => return Err(invalid(format!("family {f}"))),
        };
        let has = |bit: u32| raw.flags & bit != 0;
        Ok(Self {
            cork: Cork {
                family,
                destination,
                source,
                flowlabel,
                oif: raw.ifindex,
                ttl: Value {
                    value: raw.ttl,
                    fixed: has(flags::TTL),
                },
                tos: Value {
                    value: raw.tos,
                    fixed: has(flags::TOS),
                },
                priority: Value {
                    value: raw.priority,
                    fixed: has(flags::PRIORITY),
                },
                mark: raw.mark,
                gso_size: raw.gso_size,
                transmit_time: raw.transmit_time,
                tsflags: raw.tsflags,
                tskey: has(flags::TS_OPT_ID).then_some(raw.ts_opt_id),
                dontfrag: has(flags::DONTFRAG),
                wifi_status: has(flags::WIFI_STATUS),
                confirm: has(flags::CONFIRM),
                options,
                corked_by: if has(flags::CORK) {
                    CorkedBy::UdpCork
                } else {
                    CorkedBy::MsgMore
                },
                unsupported: raw.unsupported,
                unknown_flags: raw.flags & !flags::KNOWN,
            },
            payload,
        })
    }
}

fn flat(a: &[[u8; 4]; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, w) in a.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(w);
    }
    out
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("UDP_REPAIR_PENDING: {msg}"),
    )
}

/// Whether the kernel has `UDP_REPAIR_PENDING`: `Ok(false)` on
/// `ENOPROTOOPT`. `fd` is any UDP socket, in or out of repair mode (the
/// probe's `EPERM` or `ENODATA` means the option exists).
pub fn detect(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut buf = [0u8; SIZE_VER0];
    let (r, _) = sys::getsockopt_bytes_len(fd, libc::SOL_UDP, UDP_REPAIR_PENDING, &mut buf);
    match r {
        Ok(()) => Ok(true),
        Err(e) => match e.raw_os_error() {
            Some(libc::ENOPROTOOPT) => Ok(false),
            Some(libc::EPERM | libc::ENODATA) => Ok(true),
            _ => Err(e),
        },
    }
}

/// Enters (`true`) or leaves repair mode: `setsockopt(SOL_UDP, UDP_REPAIR)`.
/// Needs CAP_NET_ADMIN in the socket's network namespace (`EPERM`).
pub fn set_repair(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    sys::setsockopt_int(fd, libc::SOL_UDP, UDP_REPAIR, i32::from(on))
}

/// Whether the socket is in repair mode: `getsockopt(SOL_UDP, UDP_REPAIR)`.
pub fn repair_mode(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(sys::getsockopt_int(fd, libc::SOL_UDP, UDP_REPAIR)? != 0)
}

/// The struct as the kernel filled it: `Ok(None)` when nothing is
/// pending.
fn read_head(fd: BorrowedFd<'_>) -> io::Result<Option<Vec<u8>>> {
    // Room for a newer kernel's longer struct: its tail is not read.
    let mut head = vec![0u8; SIZE_VER0 + 64];
    let (r, got) = sys::getsockopt_bytes_len(fd, libc::SOL_UDP, UDP_REPAIR_PENDING, &mut head);
    match r {
        Ok(()) => {
            head.truncate(got);
            Ok(Some(head))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads the pending datagram: `Ok(None)` when nothing is pending. The
/// socket must be in repair mode. The struct, then the options and
/// payload it announces, then the struct again: the two reads are not one
/// atomic step, so a datagram that changed between them (the application
/// appended) is read again, up to 8 times.
pub fn read_pending(fd: BorrowedFd<'_>) -> io::Result<Option<Pending>> {
    for _ in 0..8 {
        let Some(head) = read_head(fd)? else {
            return Ok(None);
        };
        let raw = RawPending::parse(&head)
            .ok_or_else(|| invalid(format!("{} bytes, < {SIZE_VER0}", head.len())))?;
        let mut data = vec![0u8; raw.data_len()];
        let (r, got) =
            sys::getsockopt_bytes_len(fd, libc::SOL_UDP, UDP_REPAIR_PENDING_DATA, &mut data);
        match r {
            Ok(()) => data.truncate(got),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) => return Err(e),
        }
        if read_head(fd)?.as_deref() == Some(&head[..]) && data.len() == raw.data_len() {
            return Pending::decode(&head, &data).map(Some);
        }
    }
    Err(io::Error::other(
        "UDP_REPAIR_PENDING: the pending datagram kept changing while it was read",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    /// What the kernel writes for an IPv4 datagram: the struct, and 4
    /// bytes of IP options then the payload "hi".
    fn sample_v4() -> (Vec<u8>, Vec<u8>) {
        let mut b = vec![0u8; SIZE_VER0];
        let put = |b: &mut Vec<u8>, off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(
            &mut b,
            0,
            &(flags::CORK | flags::TTL | 1 << 20).to_ne_bytes(),
        );
        put(&mut b, 8, &(libc::AF_INET as u16).to_ne_bytes());
        put(&mut b, 10, &1400u16.to_ne_bytes());
        put(&mut b, 16, &[127, 0, 0, 1]);
        put(&mut b, 32, &[10, 0, 0, 2]);
        put(&mut b, 48, &4000u16.to_be_bytes());
        put(&mut b, 50, &53u16.to_be_bytes());
        put(&mut b, 56, &6u32.to_ne_bytes());
        put(&mut b, 60, &42u32.to_ne_bytes());
        put(&mut b, 72, &99u64.to_ne_bytes());
        b[80] = 7;
        b[81] = 0x28;
        put(&mut b, 82, &4u16.to_ne_bytes());
        put(&mut b, 92, &2u32.to_ne_bytes());
        let mut data = vec![1, 1, 1, 0];
        data.extend_from_slice(b"hi");
        (b, data)
    }

    #[test]
    fn decodes_a_v4_datagram() {
        let (head, data) = sample_v4();
        let p = Pending::decode(&head, &data).unwrap();
        assert_eq!(p.payload, b"hi");
        let c = &p.cork;
        assert_eq!(c.family, Family::V4);
        assert_eq!(c.source, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(c.destination, "10.0.0.2:53".parse().unwrap());
        assert_eq!(
            c.ttl,
            Value {
                value: 7,
                fixed: true
            }
        );
        assert_eq!(
            c.tos,
            Value {
                value: 0x28,
                fixed: false
            }
        );
        assert_eq!(c.priority.value, 6);
        assert_eq!((c.mark, c.gso_size, c.transmit_time), (42, 1400, 99));
        assert_eq!(c.options.ipv4, [1, 1, 1, 0]);
        assert!(c.options.dstopts.is_empty());
        assert_eq!(c.corked_by, CorkedBy::UdpCork);
        assert_eq!(c.unknown_flags, 1 << 20);
        assert!(p.losses().is_empty());
    }

    #[test]
    fn refuses_data_that_does_not_match_the_struct() {
        let (head, mut data) = sample_v4();
        assert!(Pending::decode(&head, &data[..data.len() - 1]).is_err());
        data.push(0);
        assert!(Pending::decode(&head, &data).is_err());
        assert!(Pending::decode(&head[..SIZE_VER0 - 1], &data).is_err());
        // A newer kernel's longer struct: its tail is not read.
        let mut longer = head.clone();
        longer.extend_from_slice(&[0xff; 8]);
        data.pop();
        assert!(Pending::decode(&longer, &data).is_ok());
    }

    #[test]
    fn reports_losses() {
        let (mut head, data) = sample_v4();
        let u = unsupported::KNOWN | 1 << 9;
        head[4..8].copy_from_slice(&u.to_ne_bytes());
        let p = Pending::decode(&head, &data).unwrap();
        assert_eq!(p.losses().len(), 5, "{:?}", p.losses());
    }

    #[test]
    fn the_layout_is_the_uapi_one() {
        // Offsets of struct udp_repair_pending (include/uapi/linux/udp.h),
        // the same for i386 and x86_64 (__aligned_u64 transmit_time).
        let mut b = [0u8; SIZE_VER0];
        b[12..16].copy_from_slice(&5u32.to_ne_bytes());
        b[68..72].copy_from_slice(&77u32.to_ne_bytes());
        b[92..96].copy_from_slice(&3u32.to_ne_bytes());
        let raw = RawPending::parse(&b).unwrap();
        assert_eq!((raw.ifindex, raw.ts_opt_id, raw.payload_len), (5, 77, 3));
    }

    #[test]
    fn detect_answers_on_this_kernel() {
        // The host kernel may or may not carry the series; either way the
        // probe must answer without an error.
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        detect(s.as_fd()).unwrap();
        if !detect(s.as_fd()).unwrap() {
            let e = read_pending(s.as_fd()).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT));
        }
    }
}
