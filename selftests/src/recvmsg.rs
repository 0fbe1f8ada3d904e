//! `recvmsg::`: the `UDP_REPAIR` of the `recvmsg` series, through the
//! wrappers of `udp_repair_engine::uapi::recvmsg`: in repair mode
//! `recvmsg(MSG_PEEK)` reads the datagram that `UDP_CORK` or `MSG_MORE`
//! keeps pending, with its destination, and leaves the socket as it was.
//!
//! Most cases run for each entry of [`FAMILIES`]: IPv4, IPv6, and IPv6
//! sockets carrying IPv4 data (bound to and sending to `::ffff:127.0.0.1`:
//! the datagram is pending as `AF_INET` on an IPv6 socket). Names are
//! `recvmsg::<group>::<case>::<family>`.
//!
//! Every case first asks the kernel what it offers ([`rr::probe`]): without
//! `UDP_REPAIR` (`ENOPROTOOPT`), or with the option of another series, it
//! is a SKIP saying so, never a pass.
//!
//! Every case ends the same way ([`Corked::finish`]): repair off, the
//! socket uncorked, the datagram arrives intact at the right receiver and
//! nowhere else, and the socket's receive queue still holds the one
//! datagram put there before the test, which a plain read returns.

use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendto, AddressFamily, RecvAncillaryBuffer, RecvFlags, SendFlags, SocketType,
};
use udp_repair_engine::sys::{add_ipv6_address, getsockopt_int, set_interface_mtu, setsockopt_int};
use udp_repair_engine::uapi::recvmsg::{self as rr, Len, PendingRead, Support};

use crate::ktap::{self, Completion, Context, Failed, Outcome, Test};
use crate::util::{in_netns, without_cap_net_admin};
use crate::{check, check_eq};

/// How long a receive waits for a datagram that should be there.
const TIMEOUT: Duration = Duration::from_millis(500);

/// What the socket under test holds in its receive queue during each case.
const MARKER: &[u8] = b"in the receive queue";

/// The index of `lo`, the first device of every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// One socket family variant.
#[derive(Debug, Clone, Copy)]
struct Family {
    /// Last component of the test names.
    name: &'static str,
    /// Address every socket of the variant binds to (port 0).
    local: IpAddr,
    /// IPv4 data on IPv6 sockets: the wrappers report the destination as
    /// the IPv4 address and set `v4_on_v6`.
    v4_on_v6: bool,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "ipv4",
        local: IpAddr::V4(Ipv4Addr::LOCALHOST),
        v4_on_v6: false,
    },
    Family {
        name: "ipv6",
        local: IpAddr::V6(Ipv6Addr::LOCALHOST),
        v4_on_v6: false,
    },
    Family {
        name: "v4mapped",
        local: IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
        v4_on_v6: true,
    },
];

type Case = fn(Family) -> Result<(), Failed>;

/// `(group::case, body)`, run for every family.
const CASES: &[(&str, Case)] = &[
    ("read::udp_cork", read_udp_cork),
    ("read::msg_more", read_msg_more),
    ("read::second_destination_appended", read_second_destination),
    ("read::pieces_with_peek_off", read_pieces),
    ("read::msg_trunc", read_msg_trunc),
    ("read::empty_datagram", read_empty),
    ("read::large_paged", read_large_paged),
    ("read::large_fragmented", read_large_fragmented),
    ("read::udplite", read_udplite),
    ("errors::without_msg_peek", err_without_peek),
    ("errors::without_cap_net_admin", err_without_cap),
    ("errors::nothing_pending", err_nothing_pending),
    ("mode::repair_keeps_peek_off", mode_keeps_peek_off),
    (
        "mode::off_reads_receive_queue",
        mode_off_reads_receive_queue,
    ),
    ("dump::resend_is_identical", dump_resend_identical),
    ("dump::peek_offset_restored", dump_peek_offset_restored),
    ("dump::repair_mode_kept_on", dump_repair_kept_on),
];

/// All tests of the suite.
pub fn tests() -> Vec<Test> {
    let mut tests = Vec::new();
    for &(case, body) in CASES {
        for &f in FAMILIES {
            let name = format!("recvmsg::{case}::{}", f.name);
            tests.push(if case.contains("udplite") {
                Test::skippable(name, move || {
                    crate::util::needs_udplite(|| guarded(|| body(f)))
                })
            } else {
                Test::skippable(name, move || guarded(|| body(f)))
            });
        }
    }
    tests.push(Test::skippable(
        "recvmsg::read::ipv6_scope_and_flowinfo",
        || guarded(read_ipv6_scope_and_flowinfo),
    ));
    for (case, body) in crate::handover::cases("recvmsg", read_payload_and_destination) {
        tests.push(Test::skippable(
            format!("recvmsg::privilege::{case}"),
            move || guarded(body),
        ));
    }
    tests
}

/// The payload and destination of the pending datagram, read with this
/// series' `recvmsg(MSG_PEEK)` in repair mode (for [`crate::handover`]).
pub fn read_payload_and_destination(
    fd: std::os::fd::BorrowedFd<'_>,
) -> Result<(Vec<u8>, SocketAddr), Failed> {
    let p = rr::read_pending(fd)
        .ctx("recvmsg(MSG_PEEK) in repair mode")?
        .ok_or_else(|| Failed::from("nothing pending"))?;
    Ok((p.data, p.dest))
}

/// Runs `body` if the kernel has this series' `UDP_REPAIR`, else SKIPs
/// with the reason.
fn guarded(body: impl FnOnce() -> Result<(), Failed>) -> Outcome {
    match rr::probe().ctx("probe UDP_REPAIR")? {
        Support::Missing => ktap::skip(
            "kernel has no UDP_REPAIR: getsockopt(SOL_UDP, UDP_REPAIR) fails with ENOPROTOOPT",
        ),
        Support::Other => ktap::skip(
            "kernel has UDP_REPAIR of another series: in repair mode a read without MSG_PEEK is not refused with EPERM",
        ),
        Support::Recvmsg => body().map(|()| Completion::Completed),
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn bound(local: IpAddr) -> Result<UdpSocket, Failed> {
    let s = UdpSocket::bind(SocketAddr::new(local, 0)).ctx(&format!("bind {local}"))?;
    s.set_read_timeout(Some(TIMEOUT)).ctx("set SO_RCVTIMEO")?;
    Ok(s)
}

fn addr(s: &UdpSocket) -> Result<SocketAddr, Failed> {
    s.local_addr().ctx("getsockname")
}

/// The destination the wrappers report for data sent to `a`.
fn reported(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

fn set_cork(s: &UdpSocket, on: bool) -> Result<(), Failed> {
    setsockopt_int(s.as_fd(), libc::SOL_UDP, libc::UDP_CORK, i32::from(on))
        .ctx("setsockopt UDP_CORK")
}

fn peek_off(s: &UdpSocket) -> Result<i32, Failed> {
    getsockopt_int(s.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF).ctx("getsockopt SO_PEEK_OFF")
}

fn set_peek_off(s: &UdpSocket, v: i32) -> Result<(), Failed> {
    setsockopt_int(s.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, v).ctx("setsockopt SO_PEEK_OFF")
}

fn repair_on(s: &UdpSocket) -> Result<(), Failed> {
    rr::set_repair(s.as_fd(), true).ctx("UDP_REPAIR on")?;
    check!(
        rr::repair(s.as_fd()).ctx("getsockopt UDP_REPAIR")?,
        "repair mode reads back on"
    );
    Ok(())
}

fn repair_off(s: &UdpSocket) -> Result<(), Failed> {
    rr::set_repair(s.as_fd(), false).ctx("UDP_REPAIR off")?;
    check!(
        !rr::repair(s.as_fd()).ctx("getsockopt UDP_REPAIR")?,
        "repair mode reads back off"
    );
    Ok(())
}

fn send(s: &UdpSocket, data: &[u8], flags: SendFlags, to: SocketAddr) -> Result<(), Failed> {
    let n = sendto(s, data, flags, &to).ctx(&format!("sendto {to} {flags:?}"))?;
    check_eq!(n, data.len(), "sendto {to} sent a short datagram");
    Ok(())
}

/// A raw `recvmsg` into a `cap`-byte buffer: (bytes copied, return value).
fn recv_raw(s: &UdpSocket, cap: usize, flags: RecvFlags) -> Result<(Vec<u8>, usize), Errno> {
    let mut buf = vec![0u8; cap];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut control = RecvAncillaryBuffer::default();
    let m = recvmsg(s, &mut iov, &mut control, flags)?;
    buf.truncate(m.bytes.min(cap));
    Ok((buf, m.bytes))
}

/// Fails unless a non-blocking read of `s` finds nothing.
fn check_nothing(s: &UdpSocket, what: &str) -> Result<(), Failed> {
    match recv_raw(s, 65536, RecvFlags::DONTWAIT) {
        Err(Errno::AGAIN) => Ok(()),
        Ok((d, n)) => {
            Err(format!("{what}: expected nothing, got {n} bytes {:?}", short(&d)).into())
        }
        Err(e) => Err(format!("{what}: expected EAGAIN, got {e}").into()),
    }
}

/// A datagram for messages: short ones as text, long ones by length.
fn short(d: &[u8]) -> String {
    if d.len() <= 64 {
        format!("{:?}", String::from_utf8_lossy(d))
    } else {
        format!("<{} bytes>", d.len())
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Reads the whole pending datagram, which must be there.
fn dump(s: &UdpSocket, what: &str) -> Result<rr::PendingDatagram, Failed> {
    rr::read_pending(s.as_fd())
        .ctx(what)?
        .ok_or_else(|| Failed::from(format!("{what}: nothing pending")))
}

/// One read that must find the pending datagram.
fn peek(s: &UdpSocket, buf: &mut [u8], len: Len, what: &str) -> Result<PendingRead, Failed> {
    rr::peek_pending(s.as_fd(), buf, len)
        .ctx(what)?
        .ok_or_else(|| Failed::from(format!("{what}: nothing pending")))
}

/// Which receiver a datagram goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    A,
    B,
}

/// How the pending datagram is sent at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Push {
    /// Clear `UDP_CORK`.
    Uncork,
    /// An empty send without `MSG_MORE` (after `MSG_MORE` sends).
    EmptySend,
}

/// The socket under test (`tx`), two receivers, and a datagram from `a`
/// in `tx`'s receive queue.
#[derive(Debug)]
struct Corked {
    f: Family,
    tx: UdpSocket,
    a: UdpSocket,
    b: UdpSocket,
}

impl Corked {
    fn new(f: Family) -> Result<Self, Failed> {
        Self::with(f, bound(f.local)?, bound(f.local)?, bound(f.local)?)
    }

    fn with(f: Family, tx: UdpSocket, a: UdpSocket, b: UdpSocket) -> Result<Self, Failed> {
        let c = Self { f, tx, a, b };
        send(&c.a, MARKER, SendFlags::empty(), addr(&c.tx)?)?;
        let (d, _) = recv_raw(&c.tx, 64, RecvFlags::PEEK).ctx("wait for the marker")?;
        check_eq!(d, MARKER, "the receive queue before the test");
        Ok(c)
    }

    fn rx(&self, to: To) -> &UdpSocket {
        match to {
            To::A => &self.a,
            To::B => &self.b,
        }
    }

    /// Where `tx` sends to reach `to`.
    fn dst(&self, to: To) -> Result<SocketAddr, Failed> {
        addr(self.rx(to))
    }

    /// The destination the wrappers report for `to`.
    fn want_dest(&self, to: To) -> Result<SocketAddr, Failed> {
        Ok(reported(self.dst(to)?))
    }

    fn send(&self, to: To, data: &[u8], flags: SendFlags) -> Result<(), Failed> {
        send(&self.tx, data, flags, self.dst(to)?)
    }

    /// Checks a read's destination.
    fn check_dest(&self, dest: SocketAddr, v4_on_v6: bool, to: To) -> Result<(), Failed> {
        check_eq!(
            dest,
            self.want_dest(to)?,
            "destination of the pending datagram"
        );
        check_eq!(
            v4_on_v6,
            self.f.v4_on_v6,
            "v4_on_v6 of the pending datagram"
        );
        if let SocketAddr::V6(d) = dest {
            check_eq!(
                (d.flowinfo(), d.scope_id()),
                (0, 0),
                "flowinfo and scope id on ::1"
            );
        }
        Ok(())
    }

    /// Dumps the pending datagram and checks it is `want`, going to `to`.
    fn check_pending(&self, want: &[u8], to: To) -> Result<(), Failed> {
        let d = dump(&self.tx, "read the pending datagram")?;
        check!(
            d.data == want,
            "pending data {} != {}",
            short(&d.data),
            short(want)
        );
        self.check_dest(d.dest, d.v4_on_v6, to)
    }

    /// Repair off, sends the datagram with `push`: exactly `want` arrives
    /// at `to` from `tx`, nothing elsewhere, and the receive queue of `tx`
    /// holds the marker, then nothing.
    fn finish(&self, to: To, want: &[u8], push: Push) -> Result<(), Failed> {
        repair_off(&self.tx)?;
        check_nothing(&self.a, "A before the push")?;
        check_nothing(&self.b, "B before the push")?;
        match push {
            Push::Uncork => set_cork(&self.tx, false)?,
            Push::EmptySend => send(&self.tx, b"", SendFlags::empty(), self.dst(to)?)?,
        }
        let mut buf = vec![0u8; 65536];
        let (n, from) = self
            .rx(to)
            .recv_from(&mut buf)
            .ctx("receive the datagram")?;
        check!(
            &buf[..n] == want,
            "sent {} != {}",
            short(&buf[..n]),
            short(want)
        );
        check_eq!(from, addr(&self.tx)?, "the datagram comes from the socket");
        check_nothing(&self.a, "A after the datagram")?;
        check_nothing(&self.b, "B after the datagram")?;
        let (d, _) = recv_raw(&self.tx, 64, RecvFlags::DONTWAIT).ctx("read the receive queue")?;
        check_eq!(d, MARKER, "the receive queue after the test");
        check_nothing(&self.tx, "the receive queue after the marker")
    }
}

// ---------------------------------------------------------------------------
// read::

/// UDP_CORK: two sends make one pending datagram.
fn read_udp_cork(f: Family) -> Result<(), Failed> {
    let c = Corked::new(f)?;
    set_cork(&c.tx, true)?;
    c.send(To::A, b"corked ", SendFlags::empty())?;
    c.send(To::A, b"datagram", SendFlags::empty())?;
    c.check_pending(b"corked datagram", To::A)?;
    // A dump changes nothing: the same again.
    c.check_pending(b"corked datagram", To::A)?;
    c.finish(To::A, b"corked datagram", Push::Uncork)
}

/// MSG_MORE without UDP_CORK.
fn read_msg_more(f: Family) -> Result<(), Failed> {
    let c = Corked::new(f)?;
    c.send(To::B, b"more", SendFlags::MORE)?;
    c.send(To::B, b" data", SendFlags::MORE)?;
    c.check_pending(b"more data", To::B)?;
    c.finish(To::B, b"more data", Push::EmptySend)
}

/// A second send to another destination while data is pending joins the
/// first datagram; its destination is ignored.
fn read_second_destination(f: Family) -> Result<(), Failed> {
    let c = Corked::new(f)?;
    set_cork(&c.tx, true)?;
    c.send(To::A, b"to A, ", SendFlags::empty())?;
    c.send(To::B, b"then to B", SendFlags::empty())?;
    c.check_pending(b"to A, then to B", To::A)?;
    c.finish(To::A, b"to A, then to B", Push::Uncork)
}

/// SO_PEEK_OFF: pieces of 4 bytes, MSG_TRUNC on all but the last (the rule
/// of an ordinary read compares the buffer with the whole datagram), the
/// offset moving, EAGAIN at the end, and a read from inside the datagram.
fn read_pieces(f: Family) -> Result<(), Failed> {
    let c = Corked::new(f)?;
    let data = b"0123456789";
    set_cork(&c.tx, true)?;
    c.send(To::A, data, SendFlags::empty())?;
    repair_on(&c.tx)?;
    set_peek_off(&c.tx, 0)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4];
    while let Some(r) = rr::peek_pending(c.tx.as_fd(), &mut buf, Len::Copied).ctx("read a piece")? {
        check!(
            got.len() < data.len(),
            "pieces past the end: {}",
            short(&got)
        );
        got.extend_from_slice(&buf[..r.bytes]);
        c.check_dest(r.dest, r.v4_on_v6, To::A)?;
        let last = got.len() == data.len();
        check_eq!(
            r.truncated,
            !last,
            "MSG_TRUNC of the piece ending at {}",
            got.len()
        );
        check_eq!(
            peek_off(&c.tx)?,
            got.len() as i32,
            "SO_PEEK_OFF after a piece"
        );
    }
    check_eq!(got, data, "the pieces joined");
    check_eq!(peek_off(&c.tx)?, 10, "SO_PEEK_OFF at the end");

    set_peek_off(&c.tx, 7)?;
    let mut buf = [0u8; 64];
    let r = peek(&c.tx, &mut buf, Len::Copied, "read from offset 7")?;
    check_eq!(&buf[..r.bytes], b"789", "read from offset 7");
    check!(!r.truncated, "MSG_TRUNC on the rest of the datagram");
    set_peek_off(&c.tx, -1)?;
    c.finish(To::A, data, Push::Uncork)
}

/// A short buffer: MSG_TRUNC; with MSG_TRUNC in the flags the return value
/// is the length of the datagram.
fn read_msg_trunc(f: Family) -> Result<(), Failed> {
    let c = Corked::new(f)?;
    let data = pattern(1000);
    set_cork(&c.tx, true)?;
    c.send(To::B, &data[..600], SendFlags::empty())?;
    c.send(To::B, &data[600..], SendFlags::empty())?;
    repair_on(&c.tx)?;
    let mut buf = [0u8; 10];
    let r = peek(&c.tx, &mut buf, Len::Copied, "read 10 bytes")?;
    check_eq!((r.bytes, r.truncated), (10, true), "10-byte read of 1000");
    check_eq!(&buf[..], &data[..10], "the first 10 bytes");
    let r = peek(&c.tx, &mut buf, Len::Full, "read 10 bytes with MSG_TRUNC")?;
    check_eq!(
        (r.bytes, r.truncated),
        (1000, true),
        "MSG_TRUNC read of 1000"
    );
    let mut buf = vec![0u8; 1000];
    let r = peek(&c.tx, &mut buf, Len::Copied, "read 1000 bytes")?;
    check_eq!(
        (r.bytes, r.truncated),
        (1000, false),
        "1000-byte read of 1000"
    );
    check!(buf == data, "the 1000 bytes");
    c.finish(To::B, &data, Push::Uncork)
}

/// An empty pending datagram reads as 0 bytes, not as nothing pending.
fn read_empty(f: Family) -> Result<(), Failed> {
    let c = Corked::new(f)?;
    c.send(To::A, b"", SendFlags::MORE)?;
    c.check_pending(b"", To::A)?;
    c.finish(To::A, b"", Push::EmptySend)
}

/// 60000 bytes in six sends; on lo (64k MTU, scatter-gather) the appended
/// data goes to page fragments. `read_pending` needs a second, larger read.
fn large(c: &Corked) -> Result<(), Failed> {
    let data = pattern(60000);
    rustix::net::sockopt::set_socket_recv_buffer_size(&c.a, 1 << 20).ctx("SO_RCVBUF")?;
    set_cork(&c.tx, true)?;
    for piece in data.chunks(10000) {
        c.send(To::A, piece, SendFlags::empty())?;
    }
    c.check_pending(&data, To::A)?;
    // In two pieces that cross skbs.
    repair_on(&c.tx)?;
    set_peek_off(&c.tx, 0)?;
    let mut buf = vec![0u8; 33333];
    let r = peek(&c.tx, &mut buf, Len::Copied, "read 33333 bytes")?;
    check_eq!((r.bytes, r.truncated), (33333, true), "first piece");
    let mut rest = vec![0u8; 65536];
    let r = peek(&c.tx, &mut rest, Len::Copied, "read the rest")?;
    check_eq!(
        (r.bytes, r.truncated),
        (60000 - 33333, false),
        "second piece"
    );
    buf.extend_from_slice(&rest[..r.bytes]);
    check!(buf == data, "the two pieces joined");
    set_peek_off(&c.tx, -1)?;
    c.finish(To::A, &data, Push::Uncork)
}

fn read_large_paged(f: Family) -> Result<(), Failed> {
    large(&Corked::new(f)?)
}

/// Above the MTU (lo at 1500 in a netns of its own), each IP fragment to
/// be is an skb of its own on the pending queue.
fn read_large_fragmented(f: Family) -> Result<(), Failed> {
    in_netns(|| {
        let s = UdpSocket::bind("0.0.0.0:0").ctx("bind")?;
        set_interface_mtu(s.as_fd(), "lo", 1500).ctx("lo mtu 1500")?;
        large(&Corked::new(f)?)
    })
}

/// A UDP-Lite socket of `f`'s family, bound to `f.local`.
fn udplite(f: Family) -> Result<UdpSocket, Failed> {
    let domain = match f.local {
        IpAddr::V4(_) => AddressFamily::INET,
        IpAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket(
        domain,
        SocketType::DGRAM,
        Some(rustix::net::ipproto::UDPLITE),
    )
    .ctx("socket(IPPROTO_UDPLITE)")?;
    rustix::net::bind(&fd, &SocketAddr::new(f.local, 0)).ctx("bind UDP-Lite")?;
    let s = UdpSocket::from(fd);
    s.set_read_timeout(Some(TIMEOUT)).ctx("set SO_RCVTIMEO")?;
    Ok(s)
}

/// UDP-Lite shares the send path and the option with UDP.
fn read_udplite(f: Family) -> Result<(), Failed> {
    let c = Corked::with(f, udplite(f)?, udplite(f)?, udplite(f)?)?;
    set_cork(&c.tx, true)?;
    c.send(To::B, b"lite ", SendFlags::empty())?;
    c.send(To::B, b"datagram", SendFlags::empty())?;
    c.check_pending(b"lite datagram", To::B)?;
    c.finish(To::B, b"lite datagram", Push::Uncork)
}

/// The destination of IPv6 data carries its scope id (link-local
/// fe80::1 on lo, in a netns of its own) and its flow information (here
/// the traffic class set with IPV6_TCLASS, in bits 20..27).
fn read_ipv6_scope_and_flowinfo() -> Result<(), Failed> {
    in_netns(|| {
        let ll = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
        let s6 = UdpSocket::bind("[::1]:0").ctx("bind ::1")?;
        add_ipv6_address(s6.as_fd(), "lo", ll, 64).ctx("add fe80::1/64 to lo")?;
        let local = SocketAddr::V6(SocketAddrV6::new(ll, 0, 0, LOOPBACK_IFINDEX));
        // Tentative until duplicate address detection has run.
        let mut tries = 0;
        let rx = loop {
            match UdpSocket::bind(local) {
                Ok(s) => break s,
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) && tries < 200 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("bind {local}: {e}").into()),
            }
        };
        rx.set_read_timeout(Some(TIMEOUT)).ctx("SO_RCVTIMEO")?;
        let dst = addr(&rx)?;
        let tx = UdpSocket::bind("[::]:0").ctx("bind ::")?;
        rustix::net::sockopt::set_ipv6_tclass(&tx, 0x28).ctx("IPV6_TCLASS")?;
        send(&tx, b"ll", SendFlags::MORE, dst)?;
        let d = dump(&tx, "read the pending datagram")?;
        check_eq!(d.data, b"ll", "pending data");
        check!(!d.v4_on_v6, "IPv6 data");
        let SocketAddr::V6(dest) = d.dest else {
            return Err(format!("destination {} is not IPv6", d.dest).into());
        };
        check_eq!(*dest.ip(), ll, "address");
        check_eq!(dest.port(), dst.port(), "port");
        check_eq!(dest.scope_id(), LOOPBACK_IFINDEX, "scope id");
        check_eq!(dest.flowinfo(), 0x28 << 20, "flow information");
        send(&tx, b"", SendFlags::empty(), dst)?;
        let mut buf = [0u8; 16];
        let n = rx.recv(&mut buf).ctx("receive")?;
        check_eq!(&buf[..n], b"ll", "the datagram");
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// errors::

/// Without MSG_PEEK a read in repair mode fails with EPERM and consumes
/// nothing.
fn err_without_peek(f: Family) -> Result<(), Failed> {
    let c = Corked::new(f)?;
    c.send(To::A, b"pending", SendFlags::MORE)?;
    repair_on(&c.tx)?;
    for flags in [RecvFlags::DONTWAIT, RecvFlags::empty(), RecvFlags::TRUNC] {
        let e = recv_raw(&c.tx, 64, flags).err();
        check_eq!(e, Some(Errno::PERM), "read with {flags:?} in repair mode");
    }
    c.check_pending(b"pending", To::A)?;
    c.finish(To::A, b"pending", Push::EmptySend)
}

/// Changing the mode needs CAP_NET_ADMIN, both ways; reading the mode and,
/// once repair is on, the data does not. `read_pending` without it fails
/// and leaves the peek offset.
fn err_without_cap(f: Family) -> Result<(), Failed> {
    let c = Corked::new(f)?;
    c.send(To::A, b"pending", SendFlags::MORE)?;
    set_peek_off(&c.tx, 2)?;
    let (set, get, read, off) = without_cap_net_admin(|| {
        (
            rr::set_repair(c.tx.as_fd(), true).map_err(|e| e.raw_os_error()),
            rr::repair(c.tx.as_fd()).map_err(|e| e.raw_os_error()),
            rr::read_pending(c.tx.as_fd()).map_err(|e| e.raw_os_error()),
            peek_off(&c.tx).ok(),
        )
    })?;
    check_eq!(
        set,
        Err(Some(libc::EPERM)),
        "UDP_REPAIR on without CAP_NET_ADMIN"
    );
    check_eq!(get, Ok(false), "repair mode after the refusal");
    check!(
        matches!(read, Err(Some(libc::EPERM))),
        "read_pending without CAP_NET_ADMIN: {read:?}"
    );
    check_eq!(off, Some(2), "SO_PEEK_OFF after the failed read_pending");

    repair_on(&c.tx)?;
    let (off_now, read, peeked) = without_cap_net_admin(|| {
        let mut buf = [0u8; 64];
        (
            rr::set_repair(c.tx.as_fd(), false).map_err(|e| e.raw_os_error()),
            rr::read_pending(c.tx.as_fd()).map_err(|e| e.to_string()),
            rr::peek_pending(c.tx.as_fd(), &mut buf, Len::Copied)
                .map(|r| r.map(|r| buf[..r.bytes].to_vec()))
                .map_err(|e| e.to_string()),
        )
    })?;
    check_eq!(
        off_now,
        Err(Some(libc::EPERM)),
        "UDP_REPAIR off without CAP_NET_ADMIN"
    );
    let read = read
        .map_err(Failed::from)?
        .ok_or("read_pending found nothing")?;
    check_eq!(
        read.data,
        b"pending",
        "read_pending in repair mode without CAP_NET_ADMIN"
    );
    // From the application's offset, which repair mode left alone.
    check_eq!(
        peeked.map_err(Failed::from)?,
        Some(b"nding".to_vec()),
        "peek_pending without CAP_NET_ADMIN, from SO_PEEK_OFF 2"
    );
    check!(
        rr::repair(c.tx.as_fd()).ctx("getsockopt")?,
        "repair still on"
    );
    set_peek_off(&c.tx, -1)?;
    c.finish(To::A, b"pending", Push::EmptySend)
}

/// Nothing pending: EAGAIN at once, even on a blocking socket whose
/// receive queue holds a datagram, and even after uncorked sends.
fn err_nothing_pending(f: Family) -> Result<(), Failed> {
    let c = Corked::new(f)?;
    repair_on(&c.tx)?;
    // A read that waited would end after the timeout, with EAGAIN too.
    c.tx.set_read_timeout(Some(Duration::from_secs(3)))
        .ctx("SO_RCVTIMEO 3 s")?;
    let t0 = std::time::Instant::now();
    let e = recv_raw(&c.tx, 64, RecvFlags::PEEK).err();
    check_eq!(
        e,
        Some(Errno::AGAIN),
        "blocking MSG_PEEK read with nothing pending"
    );
    check!(
        t0.elapsed() < Duration::from_secs(1),
        "the read waited {:?}",
        t0.elapsed()
    );
    c.send(To::B, b"not corked", SendFlags::empty())?;
    let e = recv_raw(&c.tx, 64, RecvFlags::PEEK).err();
    check_eq!(e, Some(Errno::AGAIN), "after an uncorked send");
    let mut buf = [0u8; 64];
    check!(
        rr::peek_pending(c.tx.as_fd(), &mut buf, Len::Full)
            .ctx("peek_pending")?
            .is_none(),
        "peek_pending finds nothing"
    );
    check!(
        rr::read_pending(c.tx.as_fd())
            .ctx("read_pending")?
            .is_none(),
        "read_pending finds nothing"
    );
    c.tx.set_read_timeout(Some(TIMEOUT)).ctx("SO_RCVTIMEO")?;
    let n = c.b.recv(&mut buf).ctx("the uncorked datagram")?;
    check_eq!(&buf[..n], b"not corked", "the uncorked datagram at B");
    // Nothing else is sent at the end: an empty datagram shows it.
    c.send(To::A, b"", SendFlags::MORE)?;
    c.finish(To::A, b"", Push::EmptySend)
}

// ---------------------------------------------------------------------------
// mode::

/// Turning repair on or off, or on again, does not touch SO_PEEK_OFF: the
/// application's offset is its state (the 2021 design reset it to -1).
fn mode_keeps_peek_off(f: Family) -> Result<(), Failed> {
    let c = Corked::new(f)?;
    set_peek_off(&c.tx, 5)?;
    repair_on(&c.tx)?;
    check_eq!(peek_off(&c.tx)?, 5, "SO_PEEK_OFF after turning repair on");
    set_peek_off(&c.tx, 3)?;
    repair_on(&c.tx)?;
    check_eq!(peek_off(&c.tx)?, 3, "SO_PEEK_OFF after repair on while on");
    repair_off(&c.tx)?;
    check_eq!(peek_off(&c.tx)?, 3, "SO_PEEK_OFF after repair off");
    set_peek_off(&c.tx, -1)?;
    c.send(To::A, b"x", SendFlags::MORE)?;
    c.finish(To::A, b"x", Push::EmptySend)
}

/// With data pending but repair off, MSG_PEEK reads the receive queue.
fn mode_off_reads_receive_queue(f: Family) -> Result<(), Failed> {
    let c = Corked::new(f)?;
    set_cork(&c.tx, true)?;
    c.send(To::A, b"pending", SendFlags::empty())?;
    let (d, _) = recv_raw(&c.tx, 64, RecvFlags::PEEK).ctx("peek with repair off")?;
    check_eq!(d, MARKER, "MSG_PEEK with repair off");
    repair_on(&c.tx)?;
    let (d, _) = recv_raw(&c.tx, 64, RecvFlags::PEEK).ctx("peek with repair on")?;
    check_eq!(d, b"pending", "MSG_PEEK with repair on");
    repair_off(&c.tx)?;
    let (d, _) = recv_raw(&c.tx, 64, RecvFlags::PEEK).ctx("peek with repair off again")?;
    check_eq!(d, MARKER, "MSG_PEEK with repair off again");
    c.finish(To::A, b"pending", Push::Uncork)
}

// ---------------------------------------------------------------------------
// dump::

/// The dump, sent again through a fresh corked socket to the dumped
/// destination, arrives byte-identical to what the original sends.
fn dump_resend_identical(f: Family) -> Result<(), Failed> {
    let c = Corked::new(f)?;
    let data = pattern(3000);
    set_cork(&c.tx, true)?;
    c.send(To::A, &data[..1000], SendFlags::empty())?;
    c.send(To::B, &data[1000..], SendFlags::MORE)?;
    let d = dump(&c.tx, "dump")?;
    c.check_dest(d.dest, d.v4_on_v6, To::A)?;

    let fresh = bound(f.local)?;
    set_cork(&fresh, true)?;
    let to = match (d.dest, d.v4_on_v6) {
        (SocketAddr::V4(v4), true) => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
        (a, _) => a,
    };
    send(&fresh, &d.data, SendFlags::empty(), to)?;
    check_nothing(&c.a, "A while the copy is corked")?;
    set_cork(&fresh, false)?;
    let mut buf = vec![0u8; 65536];
    let (n, from) = c.a.recv_from(&mut buf).ctx("receive the copy")?;
    check_eq!(from, addr(&fresh)?, "the copy comes from the fresh socket");
    check!(
        buf[..n] == data[..],
        "copy {} != original data",
        short(&buf[..n])
    );
    c.finish(To::A, &data, Push::Uncork)
}

/// The application's SO_PEEK_OFF is back after a dump: its next peek of
/// the receive queue continues where it was.
fn dump_peek_offset_restored(f: Family) -> Result<(), Failed> {
    let c = Corked::new(f)?;
    set_peek_off(&c.tx, 0)?;
    let (d, _) = recv_raw(&c.tx, 3, RecvFlags::PEEK).ctx("application peeks 3 bytes")?;
    check_eq!(d, &MARKER[..3], "the application's peek");
    check_eq!(peek_off(&c.tx)?, 3, "the application's offset");
    c.send(To::B, b"pending", SendFlags::MORE)?;
    let dd = dump(&c.tx, "dump")?;
    check_eq!(dd.data, b"pending", "the dump");
    check_eq!(peek_off(&c.tx)?, 3, "SO_PEEK_OFF after the dump");
    check!(
        !rr::repair(c.tx.as_fd()).ctx("getsockopt")?,
        "repair off after the dump"
    );
    let (d, _) = recv_raw(&c.tx, 64, RecvFlags::PEEK).ctx("application peeks on")?;
    check_eq!(d, &MARKER[3..], "the application's next peek");
    set_peek_off(&c.tx, -1)?;
    c.finish(To::B, b"pending", Push::EmptySend)
}

/// A dump with repair already on leaves it on, with the offset as it was.
fn dump_repair_kept_on(f: Family) -> Result<(), Failed> {
    let c = Corked::new(f)?;
    c.send(To::A, b"0123456789", SendFlags::MORE)?;
    repair_on(&c.tx)?;
    set_peek_off(&c.tx, 4)?;
    let d = dump(&c.tx, "dump")?;
    check_eq!(
        d.data,
        b"0123456789",
        "the whole datagram despite the offset"
    );
    check!(
        rr::repair(c.tx.as_fd()).ctx("getsockopt")?,
        "repair still on"
    );
    check_eq!(peek_off(&c.tx)?, 4, "SO_PEEK_OFF after the dump");
    let mut buf = [0u8; 64];
    let r = peek(&c.tx, &mut buf, Len::Copied, "read from offset 4")?;
    check_eq!(&buf[..r.bytes], b"456789", "read from the kept offset");
    set_peek_off(&c.tx, -1)?;
    c.finish(To::A, b"0123456789", Push::EmptySend)
}
