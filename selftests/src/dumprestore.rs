//! `dumprestore::`: the dump/restore library (`udp_repair_engine::dump`,
//! `restore`) on the booted kernel.
//!
//! - `rx::`: receive-queue round trips with the raw and the transparent
//!   strategy; two dumps in a row with zero-length datagrams (on a kernel
//!   with the peek fix both see everything and vouch for it, without it the
//!   second cannot and says so: which one the kernel is, is found by its
//!   behaviour and printed); the application's peek offset and the
//!   zero-length datagrams it has already peeked survive a dump and a
//!   restore.
//! - `tx::`: a datagram pending on a corked socket (`UDP_CORK`, `MSG_MORE`,
//!   zero-length), dumped and restored while the original stays open (both
//!   bound with SO_REUSEADDR), then uncorked on both: the receiver gets the
//!   same bytes twice from the same address, and the same TTL and TOS where
//!   the kernel's reader saves the cork state. Without `UDP_REPAIR` they
//!   check that the dump refuses and changes nothing, then SKIP.
//! - `tx::dump_pid_of_unprivileged_app`: `udp-repair dump --pid`'s path
//!   ([`dump::dump_pid`]) on an application running as `nobody`: its
//!   corked datagram is in the image and still goes out afterwards.
//! - `model::`: a proptest state machine (see [`model`]), 64 cases per
//!   socket layout from a fixed seed (`UDP_REPAIR_PROPTEST_SEED`,
//!   `UDP_REPAIR_PROPTEST_CASES` override them).
//!
//! Families: IPv4, IPv6, and IPv6 sockets carrying IPv4 traffic (bound to
//! `::ffff:127.0.0.1`). Every test runs in a network namespace of its own.

pub mod model;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use udp_repair_engine::dump::{self, DumpOptions};
use udp_repair_engine::inject::Strategy;
use udp_repair_engine::netns::in_new_netns;
use udp_repair_engine::restore::{self, RestoreOptions};
use udp_repair_engine::{options, sys, wire, UDP_REPAIR};

use crate::ktap::{self, Completion, Context, Failed, Outcome, Test};
use crate::{check, check_eq};

/// How long a datagram that must arrive may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Default number of state-machine cases per layout.
const CASES: u32 = 64;

/// What the running kernel offers, found by behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// Setting SO_PEEK_OFF restarts the peek walk: a zero-length datagram
    /// returned by one walk is returned by the next one too (the peek fix).
    pub fixed_peek: bool,
    /// `setsockopt(SOL_UDP, UDP_REPAIR)` exists (not ENOPROTOOPT).
    pub repair: bool,
    /// The send-queue reader the dump uses on this kernel, if any.
    pub reader: Option<&'static str>,
}

impl Kernel {
    /// The dump's reader saves the whole cork state (the getsockopt
    /// series'), not payload and destination only (the recvmsg series').
    pub fn reader_saves_cork(&self) -> bool {
        self.reader == Some("getsockopt")
    }

    /// Probed once, in a network namespace of its own.
    pub fn get() -> Result<Kernel, Failed> {
        static K: OnceLock<Result<Kernel, String>> = OnceLock::new();
        K.get_or_init(|| {
            in_new_netns(Kernel::probe)
                .map_err(|e| format!("private network namespace: {e}"))
                .and_then(|r| r)
        })
        .clone()
        .map_err(Failed::from)
    }

    fn probe() -> Result<Kernel, String> {
        let rx = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        let to = rx.local_addr().map_err(|e| format!("getsockname: {e}"))?;
        for p in [&b""[..], b"x"] {
            send_wait(&rx, p, to, rx.as_fd()).map_err(|e| format!("{e:?}"))?;
        }
        let walk = |fd: BorrowedFd<'_>| -> Result<usize, String> {
            sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)
                .map_err(|e| format!("SO_PEEK_OFF: {e}"))?;
            let mut n = 0;
            let mut b = [0u8; 8];
            let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
            while rustix::net::recv(fd, &mut b, flags).is_ok() {
                n += 1;
                if n > 4 {
                    return Err("the peek walk does not end".into());
                }
            }
            Ok(n)
        };
        let first = walk(rx.as_fd())?;
        let second = walk(rx.as_fd())?;
        if first != 2 {
            return Err(format!(
                "a first walk over [\"\", \"x\"] returned {first} datagrams"
            ));
        }
        let repair = match sys::getsockopt_int(rx.as_fd(), libc::SOL_UDP, UDP_REPAIR) {
            Ok(_) => true,
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => false,
            Err(e) => return Err(format!("getsockopt UDP_REPAIR: {e}")),
        };
        Ok(Kernel {
            fixed_peek: second == 2,
            repair,
            reader: dump::probe_reader(&dump::default_readers()),
        })
    }
}

/// Sends `data` from `tx` to `to` and waits until it is in the queue of
/// `rx` (SO_MEMINFO's rmem_alloc grows by its truesize; a peek would mark
/// a zero-length datagram).
fn send_wait(
    tx: &UdpSocket,
    data: &[u8],
    to: SocketAddr,
    rx: BorrowedFd<'_>,
) -> Result<(), Failed> {
    let (before, _) = udp_repair_engine::peek::meminfo(rx).ctx("SO_MEMINFO")?;
    let n = tx.send_to(data, to).ctx(&format!("send to {to}"))?;
    check_eq!(n, data.len(), "a short send");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (now, _) = udp_repair_engine::peek::meminfo(rx).ctx("SO_MEMINFO")?;
        if now != before {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(
                format!("a {}-byte datagram sent to {to} did not arrive", data.len()).into(),
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One socket family variant.
#[derive(Debug, Clone, Copy)]
struct Family {
    /// Last component of the test names.
    name: &'static str,
    /// Address the socket under test (and receivers) bind to.
    local: IpAddr,
    /// Addresses of two peers that send to it.
    senders: [IpAddr; 2],
}

const V4_2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const V4_3: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
const V6_1: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

const FAMILIES: &[Family] = &[
    Family {
        name: "ipv4",
        local: IpAddr::V4(Ipv4Addr::LOCALHOST),
        senders: [V4_2, V4_3],
    },
    Family {
        name: "ipv6",
        local: V6_1,
        senders: [V6_1, V6_1],
    },
    Family {
        name: "v4mapped",
        local: IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x7f00, 1)),
        senders: [V4_2, V4_3],
    },
];

type Case = fn(Family) -> Result<(), Failed>;
type SkippableCase = fn(Family) -> Outcome;

const CASES_RX: &[(&str, Case)] = &[
    ("rx::round_trip::raw", |f| {
        rx_round_trip(f, Strategy::Raw, false)
    }),
    ("rx::round_trip::transparent", |f| {
        rx_round_trip(f, Strategy::Transparent, false)
    }),
    // The fast path: the dump takes the queue out (linear time).
    ("rx::round_trip::raw_drain", |f| {
        rx_round_trip(f, Strategy::Raw, true)
    }),
    ("rx::round_trip::transparent_drain", |f| {
        rx_round_trip(f, Strategy::Transparent, true)
    }),
    ("rx::dump_twice", rx_dump_twice),
    ("rx::peek_offset_kept", rx_peek_offset_kept),
    ("rx::peeked_zero_length_kept", rx_peeked_zero_length_kept),
];

const CASES_TX: &[(&str, SkippableCase)] = &[
    ("tx::udp_cork", |f| tx_round_trip(f, Held::UdpCork)),
    ("tx::msg_more", |f| tx_round_trip(f, Held::MsgMore)),
    ("tx::zero_length", |f| tx_round_trip(f, Held::Empty)),
    ("tx::repair_mode_left_on", tx_repair_mode_left_on),
    ("tx::partial_cork_refused", tx_partial_cork_refused),
];

/// All tests of the suite.
pub fn tests() -> Vec<Test> {
    let mut tests = Vec::new();
    for &(case, body) in CASES_RX {
        for &f in FAMILIES {
            tests.push(Test::new(
                format!("dumprestore::{case}::{}", f.name),
                move || ns(move || body(f)),
            ));
        }
    }
    for &(case, body) in CASES_TX {
        for &f in FAMILIES {
            tests.push(Test::skippable(
                format!("dumprestore::{case}::{}", f.name),
                move || ns(move || body(f)),
            ));
        }
    }
    tests.push(Test::skippable(
        "dumprestore::tx::dump_pid_of_unprivileged_app",
        || {
            ns(|| {
                if Kernel::get()?.reader.is_none() {
                    return ktap::skip(
                        "no send-queue reader on this kernel: a corked socket's dump is refused (tx:: checks that)",
                    );
                }
                crate::handover::dump_pid_of_unprivileged_app().map(|()| Completion::Completed)
            })
        },
    ));
    for (layout, name) in model::Layout::ALL {
        tests.push(Test::new(
            format!("dumprestore::model::{name}"),
            move || ns(move || run_model(layout)),
        ));
    }
    tests
}

/// The dump options of the round trips: they mean to restore a pending
/// datagram also where the reader sees payload and destination only (the
/// `recvmsg` series; `tx::partial_cork_refused` checks the default).
pub fn round_trip_options() -> DumpOptions {
    DumpOptions {
        accept_partial_cork: true,
        ..Default::default()
    }
}

/// Runs `body` in a network namespace of its own.
fn ns<T: Send>(body: impl FnOnce() -> Result<T, Failed> + Send) -> Result<T, Failed> {
    in_new_netns(body).ctx("a private network namespace")?
}

fn env_u64(name: &str) -> Result<Option<u64>, Failed> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map(Some)
            .map_err(|e| Failed::from(format!("{name}={v}: {e}"))),
        Err(_) => Ok(None),
    }
}

/// The state machine for one layout: a fixed seed per layout unless
/// `UDP_REPAIR_PROPTEST_SEED` says otherwise.
fn run_model(layout: model::Layout) -> Result<(), Failed> {
    let k = Kernel::get()?;
    let cases = env_u64("UDP_REPAIR_PROPTEST_CASES")?.map_or(CASES, |c| c as u32);
    let seed = env_u64("UDP_REPAIR_PROPTEST_SEED")?.unwrap_or(0x5eed_0000 + layout as u64);
    model::run(&k, layout, cases, seed).map_err(Failed::from)
}

fn bind(addr: SocketAddr) -> Result<UdpSocket, Failed> {
    let s = UdpSocket::bind(addr).ctx(&format!("bind {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT)).ctx("SO_RCVTIMEO")?;
    Ok(s)
}

/// Where a peer at `from` reaches a socket of family `f` on `port`.
fn target(from: IpAddr, port: u16) -> SocketAddr {
    if from.is_ipv4() {
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)
    } else {
        SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port)
    }
}

fn set(fd: BorrowedFd<'_>, level: i32, name: i32, v: i32) -> Result<(), Failed> {
    sys::setsockopt_int(fd, level, name, v)
        .ctx(&format!("setsockopt {}", options::label(level, name)))
}

fn peek_off(fd: BorrowedFd<'_>) -> Result<i32, Failed> {
    sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF).ctx("SO_PEEK_OFF")
}

/// Reads everything queued: (payload, canonical sender).
fn recv_all(fd: BorrowedFd<'_>) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70_000];
    let mut name = [0u8; 128];
    while let Ok(o) = sys::recvmsg_bytes(fd, &mut buf, &mut name, &mut [], libc::MSG_DONTWAIT) {
        let from = wire::parse_sockaddr(&name[..o.name_len.min(name.len())])
            .map(wire::canonical)
            .unwrap_or(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
        out.push((buf[..o.len].to_vec(), from));
    }
    out
}

/// One datagram (waiting for it) with its TTL/hop limit and TOS/traffic
/// class: the receiver must have the IP_RECV*/IPV6_RECV* options on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    data: Vec<u8>,
    from: SocketAddr,
    ttl: Option<u32>,
    tos: Option<u32>,
}

fn recv_meta(fd: BorrowedFd<'_>) -> Result<Meta, Failed> {
    let mut buf = vec![0u8; 70_000];
    let mut name = [0u8; 128];
    let mut control = [0u8; 256];
    let o = sys::recvmsg_bytes(fd, &mut buf, &mut name, &mut control, 0).ctx("recvmsg")?;
    let mut m = Meta {
        data: buf[..o.len].to_vec(),
        from: wire::parse_sockaddr(&name[..o.name_len.min(name.len())])
            .map(wire::canonical)
            .ok_or_else(|| Failed::from("recvmsg returned no sender"))?,
        ttl: None,
        tos: None,
    };
    let int = |d: &[u8]| match d.len() {
        1 => Some(u32::from(d[0])),
        n if n >= 4 => Some(u32::from_ne_bytes([d[0], d[1], d[2], d[3]])),
        _ => None,
    };
    for c in wire::cmsgs(&control[..o.control_len.min(control.len())]) {
        match (c.level, c.kind) {
            (libc::SOL_IP, libc::IP_TTL) | (libc::SOL_IPV6, libc::IPV6_HOPLIMIT) => {
                m.ttl = int(c.data)
            }
            (libc::SOL_IP, libc::IP_TOS) | (libc::SOL_IPV6, libc::IPV6_TCLASS) => {
                m.tos = int(c.data)
            }
            _ => {}
        }
    }
    Ok(m)
}

/// Turns on every TTL/TOS receive option the socket has.
fn recv_metadata_on(fd: BorrowedFd<'_>) {
    for (l, n) in [
        (libc::SOL_IP, libc::IP_RECVTTL),
        (libc::SOL_IP, libc::IP_RECVTOS),
        (libc::SOL_IPV6, libc::IPV6_RECVHOPLIMIT),
        (libc::SOL_IPV6, libc::IPV6_RECVTCLASS),
    ] {
        let _ = sys::setsockopt_int(fd, l, n, 1);
    }
}

fn nothing_queued(fd: BorrowedFd<'_>, what: &str) -> Result<(), Failed> {
    let mut b = [0u8; 2048];
    let mut name = [0u8; 128];
    match sys::recvmsg_bytes(fd, &mut b, &mut name, &mut [], libc::MSG_DONTWAIT) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Ok(o) => Err(format!("{what}: an unexpected {}-byte datagram", o.len).into()),
        Err(e) => Err(format!("{what}: {e}").into()),
    }
}

fn payloads(cp: &udp_repair_proto::v1::Checkpoint) -> Vec<Vec<u8>> {
    cp.receive_queue
        .as_ref()
        .map(|q| q.datagrams.iter().map(|d| d.payload.to_vec()).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// rx::

/// Five datagrams from two peers (one with TTL/hop limit 33), two of them
/// empty; the application's peek offset inside the first. Dump, read the
/// original, close it, restore: same options, same offset, same datagrams
/// from the same senders with the same TTL.
fn rx_round_trip(f: Family, strategy: Strategy, drain: bool) -> Result<(), Failed> {
    let s = bind(SocketAddr::new(f.local, 0))?;
    let port = s.local_addr().ctx("getsockname")?.port();
    let fd = s.as_fd();
    set(fd, libc::SOL_SOCKET, libc::SO_MARK, 7)?;
    set(fd, libc::SOL_SOCKET, libc::SO_PRIORITY, 3)?;
    let a = bind(SocketAddr::new(f.senders[0], 0))?;
    let b = bind(SocketAddr::new(f.senders[1], 0))?;
    if f.senders[0].is_ipv4() {
        set(a.as_fd(), libc::SOL_IP, libc::IP_TTL, 33)?;
    } else {
        set(a.as_fd(), libc::SOL_IPV6, libc::IPV6_UNICAST_HOPS, 33)?;
    }
    let sends: [(&UdpSocket, Vec<u8>); 5] = [
        (&a, b"one".to_vec()),
        (&b, Vec::new()),
        (&a, vec![0xab; 1400]),
        (&b, b"four".to_vec()),
        (&a, Vec::new()),
    ];
    for (tx, p) in &sends {
        let ip = tx.local_addr().ctx("getsockname")?.ip();
        send_wait(tx, p, target(ip, port), fd)?;
    }
    set(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 2)?;
    let opts_before = options::save(fd, false).ctx("options")?;

    let dump_opts = dump::DumpOptions {
        drain_receive_queue: drain,
        ..Default::default()
    };
    let cp = dump::dump_with(fd, &dump_opts).ctx("dump")?;
    let want: Vec<Vec<u8>> = sends.iter().map(|(_, p)| p.clone()).collect();
    check_eq!(payloads(&cp), want, "the dump sees the queue");
    check_eq!(cp.peek_offset, 2, "the image keeps the peek offset");
    check_eq!(peek_off(fd)?, 2, "the dump put the peek offset back");
    let q = cp.receive_queue.clone().unwrap_or_default();
    check_eq!(q.datagrams[0].ttl, Some(33), "the first datagram's TTL");
    let truth = if drain {
        let left = recv_all(fd);
        check!(left.is_empty(), "the drain left datagrams behind: {left:?}");
        q.datagrams
            .iter()
            .map(|d| {
                let src = d.source.as_ref().map(wire::from_proto).map(wire::canonical);
                (
                    d.payload.to_vec(),
                    src.unwrap_or(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)),
                )
            })
            .collect()
    } else {
        let truth = recv_all(fd);
        check_eq!(truth.len(), 5, "the dump consumed nothing: {truth:?}");
        truth
    };
    if strategy == Strategy::Transparent {
        // The transparent strategy binds to each sender's port.
        drop((a, b));
    }
    drop(s);

    // Trusted: the socket carries SO_MARK, which only a privileged writer
    // could have set (the untrusted policy's own cases are in the engine).
    let opts = RestoreOptions {
        strategy,
        trust_image: true,
        ..Default::default()
    };
    let (r, report) = restore::restore_with(&cp, &opts).ctx("restore")?;
    check!(report.lost.is_empty(), "lost: {:?}", report.lost);
    let fd = r.as_fd();
    check_eq!(
        options::save(fd, false).ctx("options")?,
        opts_before,
        "options restored"
    );
    check_eq!(peek_off(fd)?, 2, "the restored peek offset");
    let mut buf = [0u8; 16];
    let (n, _) = rustix::net::recv(
        fd,
        &mut buf,
        rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
    )
    .ctx("peek the restored socket")?;
    check_eq!(
        &buf[..n],
        b"e",
        "the next peek continues inside the first datagram"
    );
    let again = dump::dump(fd).ctx("dump the restored socket")?;
    let q2 = again.receive_queue.clone().unwrap_or_default();
    check_eq!(payloads(&again), want, "the restored queue");
    for (i, (x, y)) in q.datagrams.iter().zip(&q2.datagrams).enumerate() {
        check_eq!(
            (&x.source, x.ttl, x.tos),
            (&y.source, y.ttl, y.tos),
            "datagram {i}: sender, TTL, TOS"
        );
    }
    check_eq!(
        recv_all(fd),
        truth,
        "the restored socket returns what the original did"
    );
    Ok(())
}

/// Queue a, empty, bb, empty, ccc and dump twice.
fn rx_dump_twice(f: Family) -> Result<(), Failed> {
    let k = Kernel::get()?;
    check_eq!(
        udp_repair_engine::peek::peek_walk_restarts(),
        Some(k.fixed_peek),
        "the library's probe agrees with the kernel's behaviour"
    );
    let s = bind(SocketAddr::new(f.local, 0))?;
    let port = s.local_addr().ctx("getsockname")?.port();
    let tx = bind(SocketAddr::new(f.senders[0], 0))?;
    let all: Vec<Vec<u8>> = [&b"a"[..], b"", b"bb", b"", b"ccc"]
        .iter()
        .map(|p| p.to_vec())
        .collect();
    for p in &all {
        send_wait(&tx, p, target(f.senders[0], port), s.as_fd())?;
    }
    let first = dump::dump(s.as_fd()).ctx("first dump")?;
    let second = dump::dump(s.as_fd()).ctx("second dump")?;
    let (q1, q2) = (
        first.receive_queue.clone().unwrap_or_default(),
        second.receive_queue.clone().unwrap_or_default(),
    );
    check_eq!(payloads(&first), all, "the first dump sees every datagram");
    if k.fixed_peek {
        check_eq!(
            payloads(&second),
            all,
            "with the peek fix the second dump sees every datagram"
        );
        check!(
            q1.zero_length_vouched && q2.zero_length_vouched,
            "both vouch: {q1:?} {q2:?}"
        );
        println!(
            "# dumprestore::rx::dump_twice::{}: kernel with the peek fix: both dumps saw all 5 datagrams and vouch for them",
            f.name
        );
    } else {
        let dense: Vec<Vec<u8>> = all.iter().filter(|p| !p.is_empty()).cloned().collect();
        check_eq!(
            payloads(&second),
            dense,
            "without the peek fix the second dump misses the zero-length datagrams"
        );
        check!(
            !q1.zero_length_vouched,
            "without the peek fix no dump of a non-empty queue vouches"
        );
        check!(!q2.zero_length_vouched, "the second dump must not vouch");
        check!(
            q2.zero_length_note.contains("SO_PEEK_OFF"),
            "the note says why: {}",
            q2.zero_length_note
        );
        let strict = DumpOptions {
            require_vouched: true,
            ..Default::default()
        };
        let e = dump::dump_with(s.as_fd(), &strict).err();
        check!(
            e.as_ref()
                .is_some_and(|e| e.error.kind() == std::io::ErrorKind::Unsupported),
            "require_vouched refuses: {e:?}"
        );
        println!(
            "# dumprestore::rx::dump_twice::{}: kernel without the peek fix: the second dump saw {} of 5 datagrams and does not vouch ({})",
            f.name,
            q2.datagrams.len(),
            q2.zero_length_note
        );
    }
    check_eq!(
        recv_all(s.as_fd()).len(),
        5,
        "the application still receives all five"
    );
    Ok(())
}

/// Whatever the application's SO_PEEK_OFF (the default, other negative
/// values, 0, inside a datagram, at a boundary, past the end), a dump puts
/// it back, the image keeps it and the restored socket has it.
fn rx_peek_offset_kept(f: Family) -> Result<(), Failed> {
    let s = bind(SocketAddr::new(f.local, 0))?;
    let port = s.local_addr().ctx("getsockname")?.port();
    let tx = bind(SocketAddr::new(f.senders[0], 0))?;
    for p in [&b"abc"[..], b"", b"de"] {
        send_wait(&tx, p, target(f.senders[0], port), s.as_fd())?;
    }
    let mut s: OwnedFd = s.into();
    for off in [-1, -7, 0, 2, 3, 5, 9] {
        set(s.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, off)?;
        let cp = dump::dump(s.as_fd()).ctx(&format!("dump with SO_PEEK_OFF {off}"))?;
        check_eq!(peek_off(s.as_fd())?, off, "the dump put SO_PEEK_OFF back");
        check_eq!(cp.peek_offset, off, "the image's peek offset");
        drop(s);
        s = restore::restore(&cp).ctx(&format!("restore with SO_PEEK_OFF {off}"))?;
        check_eq!(peek_off(s.as_fd())?, off, "the restored SO_PEEK_OFF");
    }
    check_eq!(
        recv_all(s.as_fd()).len(),
        3,
        "the queue went through seven round trips"
    );
    Ok(())
}

/// The application walked onto a zero-length datagram (a peek at offset 0
/// returned it): its next peek returns the datagram after it. So it must
/// after a dump, and on the restored socket.
fn rx_peeked_zero_length_kept(f: Family) -> Result<(), Failed> {
    let s = bind(SocketAddr::new(f.local, 0))?;
    let port = s.local_addr().ctx("getsockname")?.port();
    let tx = bind(SocketAddr::new(f.senders[0], 0))?;
    for p in [&b""[..], b"x"] {
        send_wait(&tx, p, target(f.senders[0], port), s.as_fd())?;
    }
    set(s.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)?;
    let peek = |fd: BorrowedFd<'_>| -> Result<(usize, Vec<u8>), Failed> {
        let mut b = [0u8; 16];
        let (n, _) = rustix::net::recv(
            fd,
            &mut b,
            rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
        )
        .ctx("peek")?;
        Ok((n, b[..n].to_vec()))
    };
    if Kernel::get()?.fixed_peek {
        // Not peeked yet, and a dump does not change that (without the
        // peek fix its own walk marks it for good).
        let cp = dump::dump(s.as_fd()).ctx("dump before the peek")?;
        let q = cp.receive_queue.clone().unwrap_or_default();
        check!(
            !q.datagrams.first().is_some_and(|d| d.peeked),
            "nothing peeked yet: {q:?}"
        );
    }
    check_eq!(
        peek(s.as_fd())?,
        (0, Vec::new()),
        "the first peek returns the empty datagram"
    );
    let cp = dump::dump(s.as_fd()).ctx("dump")?;
    let q = cp.receive_queue.clone().unwrap_or_default();
    check_eq!(payloads(&cp), vec![Vec::new(), b"x".to_vec()], "the image");
    check!(
        q.datagrams[0].peeked,
        "the image records that the empty datagram was peeked: {q:?}"
    );
    // (Without the peek fix the dump's own walk marks it anyway.)
    check_eq!(
        peek(s.as_fd())?,
        (1, b"x".to_vec()),
        "the original's next peek after the dump"
    );
    drop(s);
    let r = restore::restore(&cp).ctx("restore")?;
    check_eq!(
        peek(r.as_fd())?,
        (1, b"x".to_vec()),
        "the restored socket's next peek"
    );
    check_eq!(recv_all(r.as_fd()).len(), 2, "recv returns both");
    Ok(())
}

// ---------------------------------------------------------------------------
// tx::

/// How the datagram is held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// `UDP_CORK`, two sends; clearing `UDP_CORK` sends it.
    UdpCork,
    /// Two `MSG_MORE` sends; a send without it completes and sends it.
    MsgMore,
    /// One zero-length `MSG_MORE` send; a zero-length send without it.
    Empty,
}

impl Held {
    fn name(self) -> &'static str {
        match self {
            Held::UdpCork => "udp_cork",
            Held::MsgMore => "msg_more",
            Held::Empty => "zero_length",
        }
    }
}

/// The TTL and TOS the first send fixes in the datagram by cmsgs.
const CORK_TTL: i32 = 7;
const CORK_TOS: i32 = 0x28;

/// A UDP socket of family `f` with SO_REUSEADDR (so that the restored copy
/// can bind the same address while it is open), bound to port 0.
fn reuse_socket(f: Family) -> Result<OwnedFd, Failed> {
    use rustix::net::{AddressFamily, SocketType};
    let fam = if f.local.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let s = rustix::net::socket(fam, SocketType::DGRAM, None).ctx("socket")?;
    set(s.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    rustix::net::bind(&s, &SocketAddr::new(f.local, 0)).ctx("bind")?;
    Ok(s)
}

/// The cmsgs fixing TTL and TOS for data of family `f`.
fn cork_cmsgs(f: Family) -> wire::CmsgBuilder {
    let mut c = wire::CmsgBuilder::default();
    if f.local.is_ipv6() && wire::as_v4(&f.local).is_none() {
        c.push_int(libc::SOL_IPV6, libc::IPV6_HOPLIMIT, CORK_TTL);
        c.push_int(libc::SOL_IPV6, libc::IPV6_TCLASS, CORK_TOS);
    } else {
        c.push_int(libc::SOL_IP, libc::IP_TTL, CORK_TTL);
        c.push_int(libc::SOL_IP, libc::IP_TOS, CORK_TOS);
    }
    c
}

fn send_cmsg(
    fd: BorrowedFd<'_>,
    data: &[u8],
    to: SocketAddr,
    c: &wire::CmsgBuilder,
    flags: i32,
) -> Result<(), Failed> {
    let n = sys::sendmsg_bytes(fd, data, &wire::sockaddr_bytes(&to), c.bytes(), flags)
        .ctx(&format!("sendmsg {} bytes to {to}", data.len()))?;
    check_eq!(n, data.len(), "a short send");
    Ok(())
}

/// Sends what completes the pending datagram (or uncorks): what it adds.
fn uncork(fd: BorrowedFd<'_>, how: Held, to: SocketAddr) -> Result<&'static [u8], Failed> {
    match how {
        Held::UdpCork => {
            set(fd, libc::SOL_UDP, libc::UDP_CORK, 0)?;
            Ok(b"")
        }
        Held::MsgMore => {
            send_cmsg(fd, b"!", to, &wire::CmsgBuilder::default(), 0)?;
            Ok(b"!")
        }
        Held::Empty => {
            send_cmsg(fd, b"", to, &wire::CmsgBuilder::default(), 0)?;
            Ok(b"")
        }
    }
}

fn outq(fd: BorrowedFd<'_>) -> Result<i32, Failed> {
    sys::outq(fd).ctx("SIOCOUTQ")
}

/// A datagram pending (TTL and TOS fixed by the first send's cmsgs; the
/// second part sent to another receiver, which the kernel ignores): dumped
/// and restored while the original stays open, then uncorked on both.
fn tx_round_trip(f: Family, how: Held) -> Outcome {
    let k = Kernel::get()?;
    let s = reuse_socket(f)?;
    let fd = s.as_fd();
    let rx = bind(SocketAddr::new(f.local, 0))?;
    let other = bind(SocketAddr::new(f.local, 0))?;
    recv_metadata_on(rx.as_fd());
    let to = rx.local_addr().ctx("getsockname")?;
    let to_other = other.local_addr().ctx("getsockname")?;
    let c = cork_cmsgs(f);
    let first: &[u8] = match how {
        Held::UdpCork => {
            set(fd, libc::SOL_UDP, libc::UDP_CORK, 1)?;
            send_cmsg(fd, b"corked ", to, &c, 0)?;
            send_cmsg(fd, b"data", to_other, &wire::CmsgBuilder::default(), 0)?;
            b"corked data"
        }
        Held::MsgMore => {
            send_cmsg(fd, b"more ", to, &c, libc::MSG_MORE)?;
            send_cmsg(
                fd,
                b"data",
                to_other,
                &wire::CmsgBuilder::default(),
                libc::MSG_MORE,
            )?;
            b"more data"
        }
        Held::Empty => {
            send_cmsg(fd, b"", to, &c, libc::MSG_MORE)?;
            b""
        }
    };
    check!(outq(fd)? > 0, "a datagram is pending");
    let src = wire::canonical(
        SocketAddr::try_from(rustix::net::getsockname(fd).ctx("getsockname")?).ctx("address")?,
    );
    let src = SocketAddr::new(
        if src.is_ipv4() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            Ipv6Addr::LOCALHOST.into()
        },
        src.port(),
    );

    let dumped = dump::dump_with(fd, &round_trip_options());
    // No reader: no UDP_REPAIR, or one with no interface that reads the
    // pending datagram back (the pending-lost series).
    if k.reader.is_none() {
        let e = match dumped {
            Ok(cp) => {
                return Err(format!(
                    "the dump of a socket with pending data succeeded without UDP_REPAIR: {:?}",
                    cp.send_queue
                )
                .into())
            }
            Err(e) => e,
        };
        check_eq!(e.step, "send queue", "refused at the send queue: {e}");
        check!(
            e.error.to_string().contains("pending"),
            "the refusal says why: {e}"
        );
        // The refused dump changed nothing: the datagram is still pending
        // and leaves intact.
        check!(outq(fd)? > 0, "still pending after the refused dump");
        let tail = uncork(fd, how, to)?;
        let got = recv_meta(rx.as_fd())?;
        let want = [first, tail].concat();
        check_eq!(
            got.data,
            want,
            "the original's datagram after the refused dump"
        );
        check_eq!(got.ttl, Some(CORK_TTL as u32), "its TTL");
        nothing_queued(rx.as_fd(), "the receiver")?;
        nothing_queued(other.as_fd(), "the other receiver")?;
        return ktap::skip(no_reader(
            &k,
            "checked that the dump refuses pending data and changes nothing",
        ));
    }
    let Some(reader) = k.reader else {
        return Err(
            "the kernel has UDP_REPAIR but the library has no send-queue reader for it".into(),
        );
    };
    let cp = dumped.ctx("dump")?;
    let sq = cp.send_queue.clone().unwrap_or_default();
    check_eq!(sq.reader, reader, "the image names the reader");
    check_eq!(sq.udp_cork, how == Held::UdpCork, "the image's UDP_CORK");
    let p = sq
        .pending
        .clone()
        .ok_or_else(|| Failed::from("the image has no pending datagram"))?;
    check_eq!(p.payload, first, "the image's pending payload");
    // Address and port (flowinfo and scope id are the flow's).
    let dest = p.destination.as_ref().map(|d| {
        let a = wire::canonical(wire::from_proto(d));
        (a.ip(), a.port())
    });
    check_eq!(
        dest,
        Some((wire::canonical(to).ip(), to.port())),
        "the image's destination (the first send's)"
    );
    check!(outq(fd)? > 0, "the dump left the datagram pending");

    let r = restore::restore(&cp).ctx("restore next to the original")?;
    check!(
        outq(r.as_fd())? > 0,
        "the restored socket has a datagram pending"
    );
    let tail = uncork(fd, how, to)?;
    let a = recv_meta(rx.as_fd())?;
    uncork(r.as_fd(), how, to)?;
    let b = recv_meta(rx.as_fd())?;
    nothing_queued(rx.as_fd(), "the receiver")?;
    nothing_queued(other.as_fd(), "the other receiver")?;
    let want = [first, tail].concat();
    check_eq!(a.data, want, "the original's datagram");
    check_eq!(
        b.data,
        a.data,
        "the restored socket's datagram has the same bytes"
    );
    check_eq!(a.from, src, "the original's source");
    check_eq!(b.from, a.from, "the same source address and port");
    check_eq!(
        (a.ttl, a.tos),
        (Some(CORK_TTL as u32), Some(CORK_TOS as u32)),
        "the cmsgs fixed TTL and TOS"
    );
    if p.complete {
        check_eq!(
            (b.ttl, b.tos),
            (a.ttl, a.tos),
            "the {reader} reader saves TTL and TOS: same metadata"
        );
    } else {
        // Payload and destination only: the socket's own values apply.
        let (lt, lc) = if f.local.is_ipv6() && wire::as_v4(&f.local).is_none() {
            (
                (libc::SOL_IPV6, libc::IPV6_UNICAST_HOPS),
                (libc::SOL_IPV6, libc::IPV6_TCLASS),
            )
        } else {
            ((libc::SOL_IP, libc::IP_TTL), (libc::SOL_IP, libc::IP_TOS))
        };
        let ttl = sys::getsockopt_int(r.as_fd(), lt.0, lt.1).ctx("TTL option")?;
        let tos = sys::getsockopt_int(r.as_fd(), lc.0, lc.1).ctx("TOS option")?;
        let ttl = if ttl < 0 { 64 } else { ttl };
        check_eq!(
            (b.ttl, b.tos),
            (Some(ttl as u32), Some(tos as u32)),
            "the {reader} reader: the socket's TTL and TOS"
        );
        println!(
            "# dumprestore::tx::{}::{}: the {reader} reader saves payload and destination only: TTL/TOS {:?}/{:?} became {:?}/{:?}",
            how.name(),
            f.name,
            a.ttl,
            a.tos,
            b.ttl,
            b.tos
        );
    }
    check_eq!(outq(fd)?, 0, "nothing pending on the original");
    check_eq!(
        outq(r.as_fd())?,
        0,
        "nothing pending on the restored socket"
    );
    Ok(Completion::Completed)
}

/// A socket that a restore tool left in repair mode, with a datagram
/// received and one pending: the dump reads each queue as it is (in the
/// recvmsg series' repair mode `MSG_PEEK` reads the send queue, so the
/// receive queue must be read with repair mode off) and leaves repair mode
/// and the peek offset as they were.
/// Where the reader sees payload and destination only (the `recvmsg`
/// series), a pending datagram whose first send set its TTL by cmsg is
/// refused by name by default, changing nothing: the restore could not
/// send it with that TTL. With the option the image says what was lost.
fn tx_partial_cork_refused(f: Family) -> Outcome {
    let k = Kernel::get()?;
    match k.reader {
        Some("recvmsg") => {}
        Some(r) => return ktap::skip(format!("the {r} reader reads the whole cork state")),
        None => return ktap::skip("no send-queue reader on this kernel (tx:: checks the refusal)"),
    }
    let s = bind(SocketAddr::new(f.local, 0))?;
    let fd = s.as_fd();
    let rx = bind(SocketAddr::new(f.senders[0], 0))?;
    let to = rx.local_addr().ctx("getsockname")?;
    let mut ttl = wire::CmsgBuilder::default();
    if f.local.is_ipv6() && wire::as_v4(&f.local).is_none() {
        ttl.push_int(libc::SOL_IPV6, libc::IPV6_HOPLIMIT, 7);
    } else {
        ttl.push_int(libc::SOL_IP, libc::IP_TTL, 7);
    }
    send_cmsg(fd, b"ttl 7", to, &ttl, libc::MSG_MORE)?;
    let e = match dump::dump(fd) {
        Ok(cp) => {
            return Err(format!(
                "the dump of a datagram whose cork state cannot be read succeeded: {:?}",
                cp.send_queue
            )
            .into())
        }
        Err(e) => e,
    };
    check_eq!(e.step, "send queue", "refused at the send queue: {e}");
    check_eq!(
        e.kind,
        udp_repair_engine::Kind::Refused,
        "refused by name: {e}"
    );
    check!(
        e.error.to_string().contains("payload and destination only"),
        "the refusal says why: {e}"
    );
    check_eq!(
        sys::getsockopt_int(fd, libc::SOL_UDP, UDP_REPAIR).ctx("UDP_REPAIR")?,
        0,
        "repair mode off again after the refusal"
    );
    let cp = dump::dump_with(fd, &round_trip_options()).ctx("dump accepting it")?;
    check!(
        cp.dropped_state.iter().any(|d| d.contains("cork state")),
        "the image records the loss: {:?}",
        cp.dropped_state
    );
    // Still pending, and leaves intact.
    send_cmsg(fd, b"", to, &wire::CmsgBuilder::default(), 0)?;
    let got = recv_meta(rx.as_fd())?;
    check_eq!(
        got.data,
        b"ttl 7".to_vec(),
        "the datagram after the refused dump"
    );
    Ok(Completion::Completed)
}

/// Why a send-queue round trip SKIPs on kernel `k`, which has no reader,
/// after `checked`.
fn no_reader(k: &Kernel, checked: &str) -> String {
    if k.repair {
        format!(
            "kernel's UDP_REPAIR has no interface that reads the pending datagram back (no \
             UDP_REPAIR_PENDING, not the recvmsg series): {checked}; the send-queue round trip \
             needs a reader"
        )
    } else {
        format!(
            "kernel has no UDP_REPAIR (ENOPROTOOPT): {checked}; the send-queue round trip needs \
             UDP_REPAIR"
        )
    }
}

fn tx_repair_mode_left_on(f: Family) -> Outcome {
    let k = Kernel::get()?;
    if k.reader.is_none() {
        return ktap::skip(no_reader(&k, "a dump in repair mode has nothing to read"));
    }
    let s = bind(SocketAddr::new(f.local, 0))?;
    let fd = s.as_fd();
    let port = s.local_addr().ctx("getsockname")?.port();
    let tx = bind(SocketAddr::new(f.senders[0], 0))?;
    let rx = bind(SocketAddr::new(f.local, 0))?;
    let to = rx.local_addr().ctx("getsockname")?;
    send_wait(&tx, b"received", target(f.senders[0], port), fd)?;
    send_cmsg(
        fd,
        b"pending",
        to,
        &wire::CmsgBuilder::default(),
        libc::MSG_MORE,
    )?;
    set(fd, libc::SOL_UDP, UDP_REPAIR, 1)?;
    set(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 3)?;
    let cp = dump::dump_with(fd, &round_trip_options()).ctx("dump in repair mode")?;
    check_eq!(
        payloads(&cp),
        vec![b"received".to_vec()],
        "the image's receive queue"
    );
    let p = cp
        .send_queue
        .as_ref()
        .and_then(|q| q.pending.clone())
        .map(|p| p.payload);
    check_eq!(p, Some(b"pending".to_vec()), "the image's pending datagram");
    check_eq!(
        sys::getsockopt_int(fd, libc::SOL_UDP, UDP_REPAIR).ctx("UDP_REPAIR")?,
        1,
        "repair mode still on"
    );
    check_eq!(peek_off(fd)?, 3, "the peek offset kept");
    set(fd, libc::SOL_UDP, UDP_REPAIR, 0)?;
    check_eq!(
        recv_all(fd).into_iter().map(|d| d.0).collect::<Vec<_>>(),
        vec![b"received".to_vec()],
        "the receive queue"
    );
    uncork(fd, Held::MsgMore, to)?;
    check_eq!(
        recv_meta(rx.as_fd())?.data,
        b"pending!",
        "the pending datagram"
    );
    Ok(Completion::Completed)
}

#[cfg(test)]
mod tests {
    //! The state machine on the host kernel (root: each layout runs in a
    //! network namespace of its own, as the library's tests do).
    use super::*;

    fn host(layout: model::Layout) {
        if let Err(e) = ns(move || run_model(layout)) {
            panic!("{}", e.message().unwrap_or("failed"));
        }
    }

    #[test]
    fn state_machine_ipv4() {
        host(model::Layout::V4);
    }

    #[test]
    fn state_machine_ipv6() {
        host(model::Layout::V6);
    }

    #[test]
    fn state_machine_dualstack() {
        host(model::Layout::Dual);
    }

    #[test]
    fn state_machine_v4mapped() {
        host(model::Layout::Mapped);
    }
}
