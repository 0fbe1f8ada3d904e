//! `base::`: the kernel behaviour the project relies on (SO_PEEK_OFF,
//! corking, the `UDP_REPAIR` option itself), pinned down on any kernel.
//!
//! Every case runs for each entry of [`FAMILIES`]: IPv4, IPv6, and IPv6
//! sockets carrying IPv4 traffic (bound to and sending to
//! `::ffff:127.0.0.1`, so the receive side goes through `udpv6_recvmsg` and
//! the send side through `udpv6_sendmsg`'s delegation to `udp_sendmsg`).
//! Names are `base::<group>::<case>::<family>`.
//!
//! No test sleeps. A datagram that should arrive is received with a short
//! `SO_RCVTIMEO` ([`TIMEOUT`]); that nothing else arrived is shown with a
//! *fence*: a marker datagram sent from another socket afterwards, which must
//! be the next thing the receiver sees (loopback delivers in order).

use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{recvmsg, sendto, RecvAncillaryBuffer, RecvFlags, ReturnFlags, SendFlags};
use udp_repair_engine::sys::{getsockopt_int, setsockopt_int};
use udp_repair_engine::UDP_REPAIR;

use crate::ktap::{self, Context, Failed, Outcome, Test};
use crate::util::without_cap_net_admin;
use crate::{check, check_eq};

/// How long a receive waits for a datagram that should be there.
const TIMEOUT: Duration = Duration::from_millis(200);

/// Buffer size that fits every datagram these tests send.
const BIG: usize = 256;

/// One socket family variant; every socket of a variant binds to `local`.
#[derive(Debug, Clone, Copy)]
struct Family {
    /// Last component of the test names.
    name: &'static str,
    /// Address sockets bind to (port 0); peers send to the bound address.
    local: IpAddr,
}

/// The variant table.
const FAMILIES: &[Family] = &[
    Family {
        name: "ipv4",
        local: IpAddr::V4(Ipv4Addr::LOCALHOST),
    },
    Family {
        name: "ipv6",
        local: IpAddr::V6(Ipv6Addr::LOCALHOST),
    },
    Family {
        name: "v4mapped",
        local: IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
    },
];

type Case = fn(Family) -> Result<(), Failed>;
type SkippableCase = fn(Family) -> Outcome;

/// Cases that pass or fail on every kernel, `(group::case, body)`.
const CASES: &[(&str, Case)] = &[
    ("peek::default_offset_repeats_first", peek_default_offset),
    ("peek::offset_zero_walks_queue", peek_offset_zero_walks),
    ("peek::short_buffer_splits_datagram", peek_short_buffer),
    ("peek::trunc_flag_returns_full_length", peek_trunc_flag),
    ("peek::recv_moves_offset_back", recv_moves_offset_back),
    (
        "peek::truncated_recv_moves_offset_by_copied",
        truncated_recv_offset,
    ),
    ("peek::walk_spans_both_queues", peek_walk_both_queues),
    ("peek::zero_length_datagrams", peek_zero_length),
    (
        "cork::udp_cork_ignores_second_destination",
        cork_udp_cork_two_dests,
    ),
    (
        "cork::msg_more_ignores_second_destination",
        cork_msg_more_two_dests,
    ),
    ("cork::msg_more_pushed_by_plain_send", cork_msg_more_pushed),
    ("cork::clearing_udp_cork_pushes", cork_clear_pushes),
];

/// Cases that need `UDP_REPAIR` and SKIP without it.
const REPAIR_CASES: &[(&str, SkippableCase)] = &[
    ("repair::needs_cap_net_admin", repair_needs_cap),
    (
        "repair::getsockopt_reflects_mode",
        repair_getsockopt_reflects_mode,
    ),
    ("repair::rejects_value_2", repair_rejects_value_2),
];

/// All tests of the suite.
pub fn tests() -> Vec<Test> {
    let mut tests = Vec::new();
    for &(case, body) in CASES {
        for &f in FAMILIES {
            tests.push(Test::new(format!("base::{case}::{}", f.name), move || {
                body(f)
            }));
        }
    }
    tests.push(Test::new(
        "base::cork::v6_socket_mixed_families",
        cork_v6_mixed_families,
    ));
    for &(case, body) in REPAIR_CASES {
        for &f in FAMILIES {
            tests.push(Test::skippable(
                format!("base::{case}::{}", f.name),
                move || body(f),
            ));
        }
    }
    tests
}

// ---------------------------------------------------------------------------
// Helpers

/// A socket of family `f` bound to an ephemeral port, with [`TIMEOUT`].
fn bound(f: Family) -> Result<UdpSocket, Failed> {
    bound_to(SocketAddr::new(f.local, 0))
}

fn bound_to(addr: SocketAddr) -> Result<UdpSocket, Failed> {
    let s = UdpSocket::bind(addr).ctx(&format!("bind {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT)).ctx("set SO_RCVTIMEO")?;
    Ok(s)
}

fn addr(s: &UdpSocket) -> Result<SocketAddr, Failed> {
    s.local_addr().ctx("getsockname")
}

/// One datagram as `recvmsg` returned it.
#[derive(Debug)]
struct Dgram {
    /// The first `min(ret, cap)` bytes of the zeroed buffer: the bytes
    /// copied, except that with `MSG_TRUNC` in the call's flags `ret` may
    /// exceed the bytes copied (then zeros follow them).
    data: Vec<u8>,
    /// `recvmsg`'s return value.
    ret: usize,
    /// `MSG_TRUNC` in the returned `msg_flags`.
    trunc: bool,
    /// The sender.
    from: Option<SocketAddr>,
}

/// `recvmsg` with a `cap`-byte buffer.
fn recv_raw(s: &UdpSocket, cap: usize, flags: RecvFlags) -> Result<Dgram, Errno> {
    let mut buf = vec![0u8; cap];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut control = RecvAncillaryBuffer::default();
    let m = recvmsg(s, &mut iov, &mut control, flags)?;
    buf.truncate(m.bytes.min(cap));
    Ok(Dgram {
        data: buf,
        ret: m.bytes,
        trunc: m.flags.contains(ReturnFlags::TRUNC),
        from: m.address.and_then(|a| SocketAddr::try_from(a).ok()),
    })
}

/// A datagram that must be there (waits up to [`TIMEOUT`]).
fn recv_ok(s: &UdpSocket, cap: usize, flags: RecvFlags, what: &str) -> Result<Dgram, Failed> {
    recv_raw(s, cap, flags).ctx(what)
}

/// Peeks with a buffer of `cap` bytes.
fn peek(s: &UdpSocket, cap: usize, what: &str) -> Result<Dgram, Failed> {
    recv_ok(s, cap, RecvFlags::PEEK, what)
}

/// Fails unless a non-blocking `recvmsg` with `flags` finds nothing.
fn check_nothing(s: &UdpSocket, flags: RecvFlags, what: &str) -> Result<(), Failed> {
    match recv_raw(s, BIG, flags | RecvFlags::DONTWAIT) {
        Err(Errno::AGAIN) => Ok(()),
        Ok(d) => Err(format!("{what}: expected nothing (EAGAIN), got {d:?}").into()),
        Err(e) => Err(format!("{what}: expected EAGAIN, got {e}").into()),
    }
}

fn send(s: &UdpSocket, data: &[u8], flags: SendFlags, to: SocketAddr) -> Result<(), Failed> {
    let n = sendto(s, data, flags, &to).ctx(&format!("sendto {to} {flags:?}"))?;
    check_eq!(n, data.len(), "sendto {to} sent a short datagram");
    Ok(())
}

/// Sends each of `dgrams` from `tx` to `to`, one datagram each.
fn send_all(tx: &UdpSocket, dgrams: &[&[u8]], to: SocketAddr) -> Result<(), Failed> {
    for d in dgrams {
        send(tx, d, SendFlags::empty(), to)?;
    }
    Ok(())
}

fn peek_off(s: &UdpSocket) -> Result<i32, Failed> {
    getsockopt_int(s.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF).ctx("getsockopt SO_PEEK_OFF")
}

fn set_peek_off(s: &UdpSocket, v: i32) -> Result<(), Failed> {
    setsockopt_int(s.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, v).ctx("setsockopt SO_PEEK_OFF")
}

fn set_cork(s: &UdpSocket, on: bool) -> Result<(), Failed> {
    setsockopt_int(s.as_fd(), libc::SOL_UDP, libc::UDP_CORK, i32::from(on))
        .ctx("setsockopt UDP_CORK")
}

/// Receives everything queued on `rx` before a marker sent now from a fresh
/// socket, and checks nothing follows the marker. Loopback delivers in send
/// order, so the result is exactly what reached `rx` before this call.
fn fenced(f: Family, rx: &UdpSocket) -> Result<Vec<Dgram>, Failed> {
    const MARK: &[u8] = b"--fence--";
    let fence = bound(f)?;
    let from = addr(&fence)?;
    send(&fence, MARK, SendFlags::empty(), addr(rx)?)?;
    let mut before = Vec::new();
    loop {
        let d = recv_ok(rx, BIG, RecvFlags::empty(), "receive up to the fence")?;
        if d.from == Some(from) && d.data == MARK {
            break;
        }
        before.push(d);
        check!(before.len() < 64, "no fence after 64 datagrams: {before:?}");
    }
    check_nothing(rx, RecvFlags::empty(), "after the fence")?;
    Ok(before)
}

/// Queue of the peek tests: a sender and a receiver holding `dgrams`.
fn queued(f: Family, dgrams: &[&[u8]]) -> Result<(UdpSocket, UdpSocket), Failed> {
    let (tx, rx) = (bound(f)?, bound(f)?);
    send_all(&tx, dgrams, addr(&rx)?)?;
    Ok((tx, rx))
}

/// Walks the receive queue by peeking from offset 0 until EAGAIN; the first
/// `expect_at_least` peeks may wait for delivery, later ones do not.
fn walk(rx: &UdpSocket, expect_at_least: usize) -> Result<Vec<Vec<u8>>, Failed> {
    set_peek_off(rx, 0)?;
    let mut seen = Vec::new();
    loop {
        let flags = if seen.len() < expect_at_least {
            RecvFlags::PEEK
        } else {
            RecvFlags::PEEK | RecvFlags::DONTWAIT
        };
        match recv_raw(rx, BIG, flags) {
            Ok(d) => seen.push(d.data),
            Err(Errno::AGAIN) => return Ok(seen),
            Err(e) => return Err(format!("peek #{} of the walk: {e}", seen.len() + 1).into()),
        }
        check!(seen.len() <= 64, "walk does not end: {seen:?}");
    }
}

fn strs(v: &[Vec<u8>]) -> Vec<String> {
    v.iter()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect()
}

// ---------------------------------------------------------------------------
// SO_PEEK_OFF

/// Default -1: every MSG_PEEK returns the same first datagram and the
/// offset stays -1.
fn peek_default_offset(f: Family) -> Result<(), Failed> {
    let (_tx, rx) = queued(f, &[b"one", b"two", b"three"])?;
    check_eq!(peek_off(&rx)?, -1, "a new socket's SO_PEEK_OFF");
    for i in 1..=3 {
        let d = peek(&rx, BIG, "peek at default offset")?;
        check_eq!(
            d.data,
            b"one",
            "peek #{i} at offset -1 returns the first datagram"
        );
        check_eq!(peek_off(&rx)?, -1, "SO_PEEK_OFF after peek #{i}");
    }
    for want in [&b"one"[..], b"two", b"three"] {
        let d = recv_ok(&rx, BIG, RecvFlags::empty(), "recv")?;
        check_eq!(
            d.data,
            want,
            "recv after the peeks returns the queue in order"
        );
        check_eq!(peek_off(&rx)?, -1, "a read leaves offset -1 alone");
    }
    check_nothing(&rx, RecvFlags::empty(), "queue after reading all three")
}

/// Offset 0: each peek returns the next datagram and advances the offset by
/// its length.
fn peek_offset_zero_walks(f: Family) -> Result<(), Failed> {
    let (_tx, rx) = queued(f, &[b"one", b"two", b"three"])?;
    set_peek_off(&rx, 0)?;
    check_eq!(peek_off(&rx)?, 0, "SO_PEEK_OFF after setting 0");
    let mut off = 0;
    for want in [&b"one"[..], b"two", b"three"] {
        let d = peek(&rx, BIG, "peek at offset")?;
        check_eq!(d.data, want, "peek at offset {off}");
        check!(!d.trunc, "MSG_TRUNC on a whole datagram: {d:?}");
        off += want.len() as i32;
        check_eq!(
            peek_off(&rx)?,
            off,
            "offset after peeking {:?}",
            String::from_utf8_lossy(want)
        );
    }
    check_nothing(&rx, RecvFlags::PEEK, "peek past the last datagram")?;
    check_eq!(peek_off(&rx)?, 11, "a failed peek leaves the offset");
    Ok(())
}

/// A short peek leaves the offset inside the datagram; the next peek returns
/// the rest. `MSG_TRUNC` is set when the buffer is shorter than the
/// datagram (6.12 compares with the whole length, not with what is left).
fn peek_short_buffer(f: Family) -> Result<(), Failed> {
    let (_tx, rx) = queued(f, &[b"abcdefgh", b"xyz"])?;
    set_peek_off(&rx, 0)?;

    let d = peek(&rx, 3, "short peek")?;
    check_eq!(d.data, b"abc", "3-byte peek of an 8-byte datagram");
    check_eq!(d.ret, 3, "short peek returns the bytes copied");
    check!(d.trunc, "short peek sets MSG_TRUNC: {d:?}");
    check_eq!(peek_off(&rx)?, 3, "offset inside the first datagram");

    let d = peek(&rx, 2, "second short peek")?;
    check_eq!(d.data, b"de", "next short peek continues in the datagram");
    check!(
        d.trunc,
        "short peek inside a datagram sets MSG_TRUNC: {d:?}"
    );
    check_eq!(peek_off(&rx)?, 5, "offset after the second short peek");

    let d = peek(&rx, 3, "peek of exactly the rest")?;
    check_eq!(d.data, b"fgh", "a peek of exactly what is left");
    check!(
        d.trunc,
        "MSG_TRUNC is set although nothing was left out (buffer < datagram length): {d:?}"
    );
    check_eq!(peek_off(&rx)?, 8, "offset at the end of the first datagram");

    let d = peek(&rx, 2, "short peek of the second datagram")?;
    check_eq!(d.data, b"xy", "the walk moved on to the second datagram");
    check_eq!(peek_off(&rx)?, 10, "offset inside the second datagram");
    let d = peek(&rx, BIG, "peek of the rest")?;
    check_eq!(d.data, b"z", "a big buffer gets the rest");
    check_eq!(d.ret, 1, "returns what was copied");
    check!(
        !d.trunc,
        "no MSG_TRUNC when the buffer holds the rest: {d:?}"
    );
    check_eq!(peek_off(&rx)?, 11, "offset at the end of the queue");
    check_nothing(&rx, RecvFlags::PEEK, "peek at the end of the queue")?;

    // The short peeks consumed nothing.
    let d = recv_ok(&rx, BIG, RecvFlags::empty(), "recv")?;
    check_eq!(
        d.data,
        b"abcdefgh",
        "recv after the peeks gets the whole datagram"
    );
    Ok(())
}

/// `MSG_PEEK | MSG_TRUNC` returns the datagram's whole length and moves the
/// offset by that length, even when the peek started inside the datagram.
fn peek_trunc_flag(f: Family) -> Result<(), Failed> {
    let (_tx, rx) = queued(f, &[b"abcdefgh", b"xyz", b"0123456789"])?;
    set_peek_off(&rx, 0)?;
    let pt = RecvFlags::PEEK | RecvFlags::TRUNC;

    let d = recv_ok(&rx, 3, pt, "short MSG_PEEK|MSG_TRUNC")?;
    check_eq!(d.data, b"abc", "bytes copied into the short buffer");
    check_eq!(d.ret, 8, "MSG_TRUNC returns the datagram's real length");
    check!(d.trunc, "msg_flags has MSG_TRUNC: {d:?}");
    check_eq!(peek_off(&rx)?, 8, "offset moves past the whole datagram");

    let d = peek(&rx, BIG, "peek after the MSG_TRUNC peek")?;
    check_eq!(d.data, b"xyz", "the next peek returns the next datagram");
    check_eq!(peek_off(&rx)?, 11, "offset after the second datagram");

    // From inside a datagram: returns the full length, not what is left,
    // and the offset overshoots by the bytes skipped at the start.
    set_peek_off(&rx, 3)?;
    let d = recv_ok(&rx, BIG, pt, "MSG_PEEK|MSG_TRUNC from offset 3")?;
    check_eq!(
        d.ret,
        8,
        "returns the datagram's whole length, not the 5 bytes left"
    );
    // So the return value overstates what was copied: 5 bytes, then the
    // zeroed buffer untouched.
    check_eq!(
        d.data,
        b"defgh\0\0\0",
        "copies the 5 bytes left, nothing more"
    );
    check!(
        !d.trunc,
        "no MSG_TRUNC in msg_flags when the rest fits: {d:?}"
    );
    check_eq!(
        peek_off(&rx)?,
        3 + 8,
        "offset moves by the whole length: 3 bytes too far"
    );
    let d = peek(&rx, BIG, "peek after the overshoot")?;
    check_eq!(
        d.data,
        b"0123456789",
        "the overshoot skipped all of \"xyz\""
    );
    Ok(())
}

/// Reading moves the offset back by the datagram's length, so it keeps
/// pointing at the same datagram.
fn recv_moves_offset_back(f: Family) -> Result<(), Failed> {
    let (_tx, rx) = queued(f, &[b"one", b"three", b"sixsix"])?;
    let seen = walk(&rx, 3)?;
    check_eq!(strs(&seen), ["one", "three", "sixsix"], "walk of the queue");
    check_eq!(peek_off(&rx)?, 14, "offset at the end of the queue");

    set_peek_off(&rx, 3)?;
    let d = recv_ok(&rx, BIG, RecvFlags::empty(), "recv")?;
    check_eq!(
        d.data,
        b"one",
        "recv reads from the head whatever the offset"
    );
    check_eq!(peek_off(&rx)?, 0, "offset moved back by 3");
    let d = peek(&rx, BIG, "peek after recv")?;
    check_eq!(
        d.data,
        b"three",
        "the offset still points at the datagram it pointed at"
    );
    check_eq!(peek_off(&rx)?, 5, "offset after peeking \"three\"");
    let d = recv_ok(&rx, BIG, RecvFlags::empty(), "recv")?;
    check_eq!(d.data, b"three", "second recv");
    check_eq!(peek_off(&rx)?, 0, "offset moved back by 5");
    let d = recv_ok(&rx, BIG, RecvFlags::empty(), "recv")?;
    check_eq!(d.data, b"sixsix", "third recv");
    check_eq!(peek_off(&rx)?, 0, "offset does not go below 0");
    Ok(())
}

/// A read with a short buffer drops the whole datagram but moves the offset
/// back only by the bytes copied (by the whole length with `MSG_TRUNC`), so
/// the offset then points further into the queue than the peeker had got.
fn truncated_recv_offset(f: Family) -> Result<(), Failed> {
    let (_tx, rx) = queued(f, &[b"abcdef", b"gh", b"ijklmn", b"op"])?;
    set_peek_off(&rx, 0)?;
    check_eq!(peek(&rx, BIG, "peek")?.data, b"abcdef", "first peek");
    check_eq!(peek(&rx, BIG, "peek")?.data, b"gh", "second peek");
    check_eq!(peek_off(&rx)?, 8, "offset points at \"ijklmn\"");

    let d = recv_ok(&rx, 2, RecvFlags::empty(), "short recv")?;
    check_eq!(d.data, b"ab", "short read copies 2 bytes");
    check_eq!(d.ret, 2, "short read returns the bytes copied");
    check!(d.trunc, "short read sets MSG_TRUNC: {d:?}");
    check_eq!(
        peek_off(&rx)?,
        6,
        "offset moved back by the 2 bytes copied, not by 6"
    );
    let d = peek(&rx, BIG, "peek after the short read")?;
    check_eq!(d.data, b"mn", "offset 6 is now 4 bytes into \"ijklmn\"");

    set_peek_off(&rx, 2)?;
    let d = recv_ok(&rx, 1, RecvFlags::TRUNC, "short recv with MSG_TRUNC")?;
    check_eq!(d.data, b"g", "short read copies 1 byte");
    check_eq!(d.ret, 2, "MSG_TRUNC returns the full length");
    check_eq!(
        peek_off(&rx)?,
        0,
        "with MSG_TRUNC the offset moves back by the full length"
    );
    let rest = walk(&rx, 2)?;
    check_eq!(strs(&rest), ["ijklmn", "op"], "what is left");
    Ok(())
}

/// UDP keeps two receive queues (`up->reader_queue`, filled from
/// `sk_receive_queue` when a read finds it empty); an offset walk covers
/// both, in arrival order.
fn peek_walk_both_queues(f: Family) -> Result<(), Failed> {
    let (tx, rx) = queued(f, &[b"1", b"22", b"333"])?;
    // The first read moves all three to the reader queue.
    let d = recv_ok(&rx, BIG, RecvFlags::empty(), "recv")?;
    check_eq!(d.data, b"1", "first datagram");
    // These land in sk_receive_queue behind them.
    send_all(&tx, &[b"4444", b"55555"], addr(&rx)?)?;
    let seen = walk(&rx, 4)?;
    check_eq!(
        strs(&seen),
        ["22", "333", "4444", "55555"],
        "walk over both queues"
    );
    check_eq!(peek_off(&rx)?, 14, "offset after the walk");
    for want in ["22", "333", "4444", "55555"] {
        let d = recv_ok(&rx, BIG, RecvFlags::empty(), "recv")?;
        check_eq!(String::from_utf8_lossy(&d.data), want, "recv order");
    }
    Ok(())
}

/// The zero-length datagram quirk (net/core/datagram.c:184): a walk returns
/// an empty datagram once and marks it peeked; a later walk skips it. With
/// the fix (setting SO_PEEK_OFF restarts the walk) the second walk sees all
/// five again. Either passes; the output says which. `recv` sees all five.
fn peek_zero_length(f: Family) -> Result<(), Failed> {
    let queue: [&[u8]; 5] = [b"a", b"", b"bb", b"", b"ccc"];
    let (_tx, rx) = queued(f, &queue)?;
    let first = walk(&rx, 5)?;
    check_eq!(
        strs(&first),
        ["a", "", "bb", "", "ccc"],
        "first walk from offset 0"
    );
    check_eq!(peek_off(&rx)?, 6, "offset after the first walk");

    let second = walk(&rx, 0)?;
    let verdict = match second.len() {
        3 => {
            check_eq!(strs(&second), ["a", "bb", "ccc"], "second walk (quirk)");
            "the zero-length peek quirk: the empty datagrams are skipped"
        }
        5 => {
            check_eq!(
                strs(&second),
                ["a", "", "bb", "", "ccc"],
                "second walk (fixed)"
            );
            "no quirk: the walk restarted and saw the empty datagrams again"
        }
        n => {
            return Err(format!(
                "second walk saw {n} datagrams, expected 3 (quirk) or 5 (fixed): {:?}",
                strs(&second)
            )
            .into())
        }
    };
    println!(
        "base::peek::zero_length_datagrams::{}: second walk saw {} of 5: {verdict}",
        f.name,
        second.len()
    );

    for (i, want) in queue.iter().enumerate() {
        let d = recv_ok(&rx, BIG, RecvFlags::empty(), "recv")?;
        check_eq!(
            d.data,
            *want,
            "recv #{} returns every datagram, empty ones too",
            i + 1
        );
        check_eq!(d.ret, want.len(), "recv #{} length", i + 1);
    }
    check_nothing(&rx, RecvFlags::empty(), "queue after five reads")
}

// ---------------------------------------------------------------------------
// Corking

/// A sender and two receivers A and B of family `f`.
struct Cork {
    tx: UdpSocket,
    a: UdpSocket,
    b: UdpSocket,
}

impl Cork {
    fn new(f: Family) -> Result<Self, Failed> {
        Ok(Self {
            tx: bound(f)?,
            a: bound(f)?,
            b: bound(f)?,
        })
    }

    /// Checks that neither A nor B got anything yet.
    fn check_nothing_sent(&self, f: Family, when: &str) -> Result<(), Failed> {
        let (a, b) = (fenced(f, &self.a)?, fenced(f, &self.b)?);
        check!(a.is_empty(), "{when}: A got {a:?}");
        check!(b.is_empty(), "{when}: B got {b:?}");
        Ok(())
    }

    /// Checks that A got exactly one datagram, `want`, from the sender and B
    /// nothing.
    fn check_one_to_a(&self, f: Family, want: &[u8], when: &str) -> Result<(), Failed> {
        let (a, b) = (fenced(f, &self.a)?, fenced(f, &self.b)?);
        check_eq!(a.len(), 1, "{when}: A gets one datagram: {a:?}");
        check_eq!(
            String::from_utf8_lossy(&a[0].data),
            String::from_utf8_lossy(want),
            "{when}: the datagram at A"
        );
        check_eq!(
            a[0].from,
            Some(addr(&self.tx)?),
            "{when}: A's datagram is from the sender"
        );
        check!(b.is_empty(), "{when}: B gets nothing, got {b:?}");
        Ok(())
    }
}

/// UDP_CORK: data sent to A then to B is one datagram to A.
fn cork_udp_cork_two_dests(f: Family) -> Result<(), Failed> {
    let c = Cork::new(f)?;
    let (a, b) = (addr(&c.a)?, addr(&c.b)?);
    set_cork(&c.tx, true)?;
    send(&c.tx, b"to A, ", SendFlags::empty(), a)?;
    send(&c.tx, b"then to B", SendFlags::empty(), b)?;
    c.check_nothing_sent(f, "while corked")?;
    set_cork(&c.tx, false)?;
    c.check_one_to_a(f, b"to A, then to B", "after clearing UDP_CORK")?;
    // Uncorked again: the next send goes where it says.
    send(&c.tx, b"plain", SendFlags::empty(), b)?;
    let d = recv_ok(&c.b, BIG, RecvFlags::empty(), "B receives an uncorked send")?;
    check_eq!(d.data, b"plain", "uncorked send to B");
    Ok(())
}

/// MSG_MORE: data sent to A then to B is one datagram to A, pushed by a
/// send without MSG_MORE (whose destination, B, is ignored too).
fn cork_msg_more_two_dests(f: Family) -> Result<(), Failed> {
    let c = Cork::new(f)?;
    let (a, b) = (addr(&c.a)?, addr(&c.b)?);
    send(&c.tx, b"to A, ", SendFlags::MORE, a)?;
    send(&c.tx, b"then to B", SendFlags::MORE, b)?;
    c.check_nothing_sent(f, "after two MSG_MORE sends")?;
    send(&c.tx, b", push to B", SendFlags::empty(), b)?;
    c.check_one_to_a(f, b"to A, then to B, push to B", "after the push")
}

/// MSG_MORE without UDP_CORK: a send without MSG_MORE pushes; it needs no
/// destination of its own, even on an unconnected socket.
fn cork_msg_more_pushed(f: Family) -> Result<(), Failed> {
    let c = Cork::new(f)?;
    let a = addr(&c.a)?;
    send(&c.tx, b"x", SendFlags::MORE, a)?;
    send(&c.tx, b"y", SendFlags::MORE, a)?;
    c.check_nothing_sent(f, "while MSG_MORE data is pending")?;
    check_eq!(
        getsockopt_int(c.tx.as_fd(), libc::SOL_UDP, libc::UDP_CORK).ctx("getsockopt UDP_CORK")?,
        0,
        "MSG_MORE does not set UDP_CORK"
    );
    let n = rustix::net::send(&c.tx, b"z", SendFlags::empty()).ctx("send() without address")?;
    check_eq!(n, 1, "send() without address while pending");
    c.check_one_to_a(f, b"xyz", "after a send without MSG_MORE")?;
    // Nothing pending any more: an unconnected send() needs an address.
    let e = rustix::net::send(&c.tx, b"?", SendFlags::empty());
    check_eq!(
        e,
        Err(Errno::DESTADDRREQ),
        "send() without address when nothing is pending"
    );
    Ok(())
}

/// Under UDP_CORK a send without MSG_MORE does not push; clearing UDP_CORK
/// does.
fn cork_clear_pushes(f: Family) -> Result<(), Failed> {
    let c = Cork::new(f)?;
    let a = addr(&c.a)?;
    set_cork(&c.tx, true)?;
    check_eq!(
        getsockopt_int(c.tx.as_fd(), libc::SOL_UDP, libc::UDP_CORK).ctx("getsockopt UDP_CORK")?,
        1,
        "UDP_CORK reads back"
    );
    send(&c.tx, b"first ", SendFlags::empty(), a)?;
    send(&c.tx, b"second", SendFlags::empty(), a)?;
    c.check_nothing_sent(f, "corked, two plain sends")?;
    set_cork(&c.tx, false)?;
    c.check_one_to_a(f, b"first second", "after clearing UDP_CORK")?;
    set_cork(&c.tx, false)?;
    c.check_nothing_sent(f, "clearing UDP_CORK again with nothing pending")
}

/// An IPv6 socket with pending data of one family and a send to the other:
/// pending IPv6 + v4-mapped destination is EINVAL (`udp_sendmsg` sees
/// `pending != AF_INET`); pending v4-mapped + IPv6 destination is appended
/// to the IPv4 datagram (`udpv6_sendmsg` delegates before any check).
fn cork_v6_mixed_families() -> Result<(), Failed> {
    let tx = bound_to("[::]:0".parse().ctx("parse")?)?;
    let f6 = FAMILIES[1];
    let f4 = FAMILIES[0];
    let (a6, a4) = (bound(f6)?, bound(f4)?);
    let to6 = addr(&a6)?;
    let to4 = match addr(&a4)? {
        SocketAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        other => return Err(format!("IPv4 socket bound to {other}").into()),
    };

    send(&tx, b"v6 ", SendFlags::MORE, to6)?;
    let e = sendto(&tx, b"x", SendFlags::MORE, &to4);
    check_eq!(
        e,
        Err(Errno::INVAL),
        "v4-mapped send while IPv6 data is pending"
    );
    send(&tx, b"end", SendFlags::empty(), to6)?;
    let got = fenced(f6, &a6)?;
    check_eq!(got.len(), 1, "one IPv6 datagram: {got:?}");
    check_eq!(got[0].data, b"v6 end", "the failed send added nothing");
    check!(
        fenced(f4, &a4)?.is_empty(),
        "nothing reached the IPv4 receiver"
    );

    send(&tx, b"v4 ", SendFlags::MORE, to4)?;
    send(&tx, b"then v6", SendFlags::empty(), to6)?;
    let got = fenced(f4, &a4)?;
    check_eq!(got.len(), 1, "one IPv4 datagram: {got:?}");
    check_eq!(
        got[0].data,
        b"v4 then v6",
        "the IPv6 send was appended to the IPv4 datagram"
    );
    check!(
        fenced(f6, &a6)?.is_empty(),
        "nothing reached the IPv6 receiver"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// UDP_REPAIR

/// Whether the kernel has `UDP_REPAIR`: probes with
/// `setsockopt(SOL_UDP, UDP_REPAIR, 1)` on a throwaway socket of family `f`.
/// `Some(skip)` without it; an error other than `ENOPROTOOPT` fails.
fn repair_missing(f: Family) -> Result<Option<Outcome>, Failed> {
    let s = bound(f)?;
    match setsockopt_int(s.as_fd(), libc::SOL_UDP, UDP_REPAIR, 1) {
        Ok(()) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(Some(ktap::skip(
            "kernel has no UDP_REPAIR: setsockopt(SOL_UDP, UDP_REPAIR, 1) fails with ENOPROTOOPT",
        ))),
        Err(e) => Err(format!("probe setsockopt(SOL_UDP, UDP_REPAIR, 1): {e}").into()),
    }
}

fn repair_get(s: &UdpSocket) -> Result<i32, Failed> {
    getsockopt_int(s.as_fd(), libc::SOL_UDP, UDP_REPAIR).ctx("getsockopt UDP_REPAIR")
}

fn repair_set(s: &UdpSocket, v: i32) -> std::io::Result<()> {
    setsockopt_int(s.as_fd(), libc::SOL_UDP, UDP_REPAIR, v)
}

/// Enabling repair mode needs CAP_NET_ADMIN.
fn repair_needs_cap(f: Family) -> Outcome {
    if let Some(skip) = repair_missing(f)? {
        return skip;
    }
    let s = bound(f)?;
    let (set, get) = without_cap_net_admin(|| (repair_set(&s, 1), repair_get(&s)))?;
    let e = set.err().map(|e| e.raw_os_error());
    check_eq!(
        e,
        Some(Some(libc::EPERM)),
        "enabling UDP_REPAIR without CAP_NET_ADMIN"
    );
    check_eq!(get?, 0, "the refused setsockopt left repair mode off");
    repair_set(&s, 1).ctx("enable UDP_REPAIR with CAP_NET_ADMIN")?;
    check_eq!(repair_get(&s)?, 1, "repair mode on with CAP_NET_ADMIN");
    Ok(ktap::Completion::Completed)
}

/// getsockopt(UDP_REPAIR) reads back the mode.
fn repair_getsockopt_reflects_mode(f: Family) -> Outcome {
    if let Some(skip) = repair_missing(f)? {
        return skip;
    }
    let s = bound(f)?;
    check_eq!(repair_get(&s)?, 0, "a new socket is not in repair mode");
    for v in [1, 1, 0, 0, 1, 0] {
        repair_set(&s, v).ctx(&format!("setsockopt UDP_REPAIR {v}"))?;
        check_eq!(repair_get(&s)?, v, "getsockopt after setting {v}");
    }
    Ok(ktap::Completion::Completed)
}

/// Only 0 and 1 are modes: 2 is EINVAL and changes nothing.
fn repair_rejects_value_2(f: Family) -> Outcome {
    if let Some(skip) = repair_missing(f)? {
        return skip;
    }
    let s = bound(f)?;
    for mode in [0, 1] {
        repair_set(&s, mode).ctx(&format!("setsockopt UDP_REPAIR {mode}"))?;
        let e = repair_set(&s, 2).err().map(|e| e.raw_os_error());
        check_eq!(
            e,
            Some(Some(libc::EINVAL)),
            "setsockopt UDP_REPAIR 2 in mode {mode}"
        );
        check_eq!(repair_get(&s)?, mode, "a refused value leaves mode {mode}");
    }
    Ok(ktap::Completion::Completed)
}
