//! Host tests of dump and restore. Each runs in its own network namespace
//! (netns::in_new_netns), so traffic stays on a private loopback. They need
//! root (CAP_SYS_ADMIN for the namespace, CAP_NET_RAW/ADMIN for raw sockets,
//! IP_TRANSPARENT and SO_MARK).

use crate::dump::{self, DumpOptions};
use crate::inject::Strategy;
use crate::netns::in_new_netns;
use crate::options;
use crate::peek;
use crate::restore::{self, RestoreOptions};
use crate::sys;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use udp_repair_proto::v1;

/// These tests restore sockets they built themselves, as root: trusted
/// with every value (the untrusted policy has tests of its own below).
fn trusted_opts() -> RestoreOptions {
    RestoreOptions {
        trust_image: true,
        ..RestoreOptions::default()
    }
}

fn trusted(cp: &v1::Checkpoint) -> Result<OwnedFd, restore::RestoreError> {
    restore::restore_with(cp, &trusted_opts()).map(|(fd, _)| fd)
}

fn ns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    in_new_netns(f).expect("a private network namespace (tests run as root)")
}

fn udp(addr: &str) -> UdpSocket {
    UdpSocket::bind(addr).unwrap()
}

fn wait_queued(fd: BorrowedFd<'_>, bytes_nonzero: bool) {
    for _ in 0..500 {
        let (rmem, _) = peek::meminfo(fd).unwrap();
        if (rmem != 0) == bytes_nonzero {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn recv_all(fd: BorrowedFd<'_>) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70000];
    let mut name = [0u8; 128];
    let mut control = [0u8; 256];
    while let Ok(o) = sys::recvmsg_bytes(fd, &mut buf, &mut name, &mut control, libc::MSG_DONTWAIT)
    {
        out.push((
            buf[..o.len].to_vec(),
            crate::wire::parse_sockaddr(&name[..o.name_len]).unwrap(),
        ));
    }
    out
}

fn payloads(cp: &v1::Checkpoint) -> Vec<Vec<u8>> {
    cp.receive_queue
        .as_ref()
        .unwrap()
        .datagrams
        .iter()
        .map(|d| d.payload.to_vec())
        .collect()
}

/// The original socket's dump under `opts`: by peek walk, or on the fast
/// path (`drain`: `DumpOptions::drain_receive_queue`), which empties it.
fn dump_original(fd: BorrowedFd<'_>, drain: bool, opts: DumpOptions) -> v1::Checkpoint {
    let opts = DumpOptions {
        drain_receive_queue: drain,
        ..opts
    };
    dump::dump_with(fd, &opts).unwrap_or_else(|e| panic!("dump (drain: {drain}): {e}"))
}

/// What the original socket's application would have read after its
/// dump: read from it after a peek walk (which consumed nothing); after a
/// drain, which must have left it empty, the image's datagrams.
fn left_for_the_application(
    fd: BorrowedFd<'_>,
    drain: bool,
    cp: &v1::Checkpoint,
) -> Vec<(Vec<u8>, SocketAddr)> {
    let left = recv_all(fd);
    if !drain {
        return left;
    }
    assert!(left.is_empty(), "the drain left {left:?} behind");
    cp.receive_queue
        .as_ref()
        .map(|q| {
            q.datagrams
                .iter()
                .map(|d| {
                    let src = crate::wire::from_proto(d.source.as_ref().unwrap());
                    (d.payload.to_vec(), src)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn set(fd: BorrowedFd<'_>, level: i32, name: i32, v: i32) {
    sys::setsockopt_int(fd, level, name, v)
        .unwrap_or_else(|e| panic!("setsockopt {}: {e}", options::label(level, name)));
}

fn v4_round_trip_keeps_queue_metadata_and_options(drain: bool) {
    ns(|| {
        let a = udp("127.0.0.1:5000");
        let fd = a.as_fd();
        set(fd, libc::SOL_SOCKET, libc::SO_MARK, 7);
        set(fd, libc::SOL_SOCKET, libc::SO_PRIORITY, 3);
        set(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 150_000);
        set(fd, libc::SOL_SOCKET, libc::SO_BROADCAST, 1);
        set(fd, libc::SOL_IP, libc::IP_TTL, 9);
        set(fd, libc::SOL_IP, libc::IP_TOS, 0x10);
        set(fd, libc::SOL_IP, libc::IP_RECVTTL, 1);
        set(fd, libc::SOL_IP, libc::IP_RECVERR, 1);
        set(
            fd,
            libc::SOL_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        );
        set(fd, libc::SOL_IP, libc::IP_MULTICAST_TTL, 4);
        set(fd, libc::SOL_UDP, libc::UDP_SEGMENT, 1000);
        set(fd, libc::SOL_UDP, libc::UDP_GRO, 1);
        set(fd, libc::SOL_SOCKET, options::SO_TIMESTAMP_OLD, 1);
        let b = udp("127.0.0.2:6000");
        set(b.as_fd(), libc::SOL_IP, libc::IP_TTL, 33);
        set(b.as_fd(), libc::SOL_IP, libc::IP_TOS, 0x28);
        let c = udp("127.0.0.3:7000");
        b.send_to(b"one", "127.0.0.1:5000").unwrap();
        c.send_to(b"", "127.0.0.1:5000").unwrap();
        b.send_to(&[0xab; 1400], "127.0.0.1:5000").unwrap();
        wait_queued(fd, true);

        let before = options::save(fd, false).unwrap();
        let cp = dump_original(fd, drain, DumpOptions::default());
        // The dump left every option as it was, peek offset included.
        assert_eq!(options::save(fd, false).unwrap(), before);
        assert_eq!(
            sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap(),
            -1
        );
        assert_eq!(
            payloads(&cp),
            vec![b"one".to_vec(), vec![], vec![0xab; 1400]]
        );
        let q = cp.receive_queue.as_ref().unwrap();
        assert_eq!(q.datagrams[0].ttl, Some(33));
        assert_eq!(q.datagrams[0].tos, Some(0x28));
        assert_eq!(
            q.datagrams[1].source.as_ref().unwrap().ip,
            vec![127, 0, 0, 3]
        );
        assert_eq!(
            q.datagrams[2].destination.as_ref().unwrap().ip,
            vec![127, 0, 0, 1]
        );
        assert!(q.datagrams[0].timestamp.is_some());

        // The image round trip, then restore in place of the original.
        let cp2 = udp_repair_proto::decode(&udp_repair_proto::encode(&cp).unwrap()).unwrap();
        assert_eq!(cp2, cp);
        let original = left_for_the_application(fd, drain, &cp);
        assert_eq!(original.len(), 3, "the datagrams the application had");
        drop(a);
        let r = trusted(&cp2).unwrap();
        assert_eq!(
            options::save(r.as_fd(), false).unwrap(),
            before,
            "options restored exactly"
        );
        let again = dump::dump(r.as_fd()).unwrap();
        let q2 = again.receive_queue.as_ref().unwrap();
        assert_eq!(payloads(&again), payloads(&cp));
        for (x, y) in q.datagrams.iter().zip(&q2.datagrams) {
            assert_eq!(
                (&x.source, x.ttl, x.tos, &x.destination),
                (&y.source, y.ttl, y.tos, &y.destination)
            );
        }
        assert_eq!(
            recv_all(r.as_fd()),
            original,
            "same datagrams, same sources, same order"
        );
    });
}

#[test]
fn v4_round_trip_keeps_queue_metadata_and_options_by_peek() {
    v4_round_trip_keeps_queue_metadata_and_options(false)
}

/// The same case on the fast path: the original's queue drained.
#[test]
fn v4_round_trip_keeps_queue_metadata_and_options_by_drain() {
    v4_round_trip_keeps_queue_metadata_and_options(true)
}

fn v6_dual_stack_round_trip_with_v4_mapped_datagrams(drain: bool) {
    ns(|| {
        let a = udp("[::]:5001");
        let fd = a.as_fd();
        set(fd, libc::SOL_IPV6, libc::IPV6_RECVPKTINFO, 1);
        set(fd, libc::SOL_IPV6, libc::IPV6_UNICAST_HOPS, 17);
        set(fd, libc::SOL_IPV6, libc::IPV6_TCLASS, 0x40);
        let b6 = udp("[::1]:6001");
        set(b6.as_fd(), libc::SOL_IPV6, libc::IPV6_UNICAST_HOPS, 44);
        set(b6.as_fd(), libc::SOL_IPV6, libc::IPV6_TCLASS, 0x20);
        let b4 = udp("127.0.0.9:6002");
        b6.send_to(b"six", "[::1]:5001").unwrap();
        b4.send_to(b"four", "127.0.0.1:5001").unwrap();
        b6.send_to(b"", "[::1]:5001").unwrap();
        wait_queued(fd, true);
        let cp = dump_original(fd, drain, DumpOptions::default());
        let q = cp.receive_queue.as_ref().unwrap();
        assert_eq!(
            payloads(&cp),
            vec![b"six".to_vec(), b"four".to_vec(), vec![]]
        );
        assert_eq!(
            (q.datagrams[0].ttl, q.datagrams[0].tos),
            (Some(44), Some(0x20))
        );
        let original = left_for_the_application(fd, drain, &cp);
        drop(a);
        let r = trusted(&cp).unwrap();
        let again = dump::dump(r.as_fd()).unwrap();
        for (x, y) in q
            .datagrams
            .iter()
            .zip(&again.receive_queue.as_ref().unwrap().datagrams)
        {
            assert_eq!((&x.source, x.ttl, x.tos), (&y.source, y.ttl, y.tos));
        }
        assert_eq!(recv_all(r.as_fd()), original);
        assert_eq!(
            sys::getsockopt_int(r.as_fd(), libc::SOL_IPV6, libc::IPV6_UNICAST_HOPS).unwrap(),
            17
        );
    });
}

#[test]
fn v6_dual_stack_round_trip_with_v4_mapped_datagrams_by_peek() {
    v6_dual_stack_round_trip_with_v4_mapped_datagrams(false)
}

/// The same case on the fast path: the original's queue drained.
#[test]
fn v6_dual_stack_round_trip_with_v4_mapped_datagrams_by_drain() {
    v6_dual_stack_round_trip_with_v4_mapped_datagrams(true)
}

#[test]
fn dump_keeps_the_application_peek_offset_and_position() {
    ns(|| {
        let a = udp("127.0.0.1:5002");
        let b = udp("127.0.0.1:0");
        b.send_to(b"abcdef", "127.0.0.1:5002").unwrap();
        b.send_to(b"gh", "127.0.0.1:5002").unwrap();
        wait_queued(a.as_fd(), true);
        let fd = a.as_fd();
        set(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0);
        let mut buf = [0u8; 4];
        assert_eq!(
            rustix::net::recv(fd, &mut buf, rustix::net::RecvFlags::PEEK)
                .unwrap()
                .0,
            4
        );
        assert_eq!(
            sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap(),
            4
        );
        let cp = dump::dump(fd).unwrap();
        assert_eq!(cp.peek_offset, 4);
        assert_eq!(payloads(&cp), vec![b"abcdef".to_vec(), b"gh".to_vec()]);
        assert_eq!(
            sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap(),
            4
        );
        // The application's next peek continues inside the first datagram.
        let mut buf = [0u8; 16];
        let n = rustix::net::recv(fd, &mut buf, rustix::net::RecvFlags::PEEK)
            .unwrap()
            .0;
        assert_eq!(&buf[..n], b"ef");
        // And the restored socket has the same offset.
        drop(a);
        let r = trusted(&cp).unwrap();
        assert_eq!(
            sys::getsockopt_int(r.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap(),
            4
        );
        let n = rustix::net::recv(r.as_fd(), &mut buf, rustix::net::RecvFlags::PEEK)
            .unwrap()
            .0;
        assert_eq!(&buf[..n], b"ef");
    });
}

/// Queue a, empty, bb, empty, ccc; dump twice. Where the kernel restarts
/// walks on SO_PEEK_OFF both dumps see all five and vouch for them; where it
/// does not, the second dump misses the two empty datagrams and must say it
/// cannot vouch (never a silent loss).
#[test]
fn dump_twice_finds_zero_length_datagrams_or_says_it_cannot_vouch() {
    ns(|| {
        let a = udp("127.0.0.1:5003");
        let b = udp("127.0.0.1:0");
        for p in [&b"a"[..], b"", b"bb", b"", b"ccc"] {
            b.send_to(p, "127.0.0.1:5003").unwrap();
        }
        wait_queued(a.as_fd(), true);
        let first = dump::dump(a.as_fd()).unwrap();
        let second = dump::dump(a.as_fd()).unwrap();
        let all: Vec<Vec<u8>> = [&b"a"[..], b"", b"bb", b"", b"ccc"]
            .iter()
            .map(|x| x.to_vec())
            .collect();
        assert_eq!(payloads(&first), all, "the first walk sees every datagram");
        let (q1, q2) = (
            first.receive_queue.clone().unwrap(),
            second.receive_queue.clone().unwrap(),
        );
        match peek::peek_walk_restarts() {
            Some(true) => {
                assert_eq!(payloads(&second), all);
                assert!(q1.zero_length_vouched && q2.zero_length_vouched);
            }
            other => {
                eprintln!(
                    "kernel restarts peek walks: {other:?}; second dump: {:?}",
                    q2.zero_length_note
                );
                assert!(
                    !q2.zero_length_vouched,
                    "a dump that may miss datagrams must not vouch"
                );
                assert!(
                    q2.zero_length_note.contains("SO_PEEK_OFF"),
                    "{}",
                    q2.zero_length_note
                );
                assert!(payloads(&second).len() <= 5);
                let mut dense = all.clone();
                dense.retain(|p| !p.is_empty());
                let mut seen = payloads(&second);
                seen.retain(|p| !p.is_empty());
                assert_eq!(seen, dense, "non-empty datagrams are always all found");
            }
        }
        // The application still receives all five.
        assert_eq!(recv_all(a.as_fd()).len(), 5);
        // require_vouched turns the warning into an error.
        if peek::peek_walk_restarts() != Some(true) {
            b.send_to(b"", "127.0.0.1:5003").unwrap();
            wait_queued(a.as_fd(), true);
            let opts = DumpOptions {
                require_vouched: true,
                ..Default::default()
            };
            let e = dump::dump_with(a.as_fd(), &opts).unwrap_err();
            assert_eq!(e.error.kind(), std::io::ErrorKind::Unsupported, "{e}");
        }
    });
}

#[test]
fn zero_length_datagram_hidden_at_the_head_is_recovered() {
    ns(|| {
        if peek::peek_walk_restarts() == Some(true) {
            return; // nothing is ever hidden there
        }
        let a = udp("127.0.0.1:5004");
        let b = udp("127.0.0.1:0");
        b.send_to(b"", "127.0.0.1:5004").unwrap();
        b.send_to(b"x", "127.0.0.1:5004").unwrap();
        wait_queued(a.as_fd(), true);
        // The application peeks the empty head (marks it peeked).
        let mut buf = [0u8; 4];
        rustix::net::recv(a.as_fd(), &mut buf, rustix::net::RecvFlags::PEEK).unwrap();
        let cp = dump::dump(a.as_fd()).unwrap();
        assert_eq!(payloads(&cp), vec![vec![], b"x".to_vec()]);
        assert!(!cp.receive_queue.unwrap().zero_length_vouched);
    });
}

#[test]
fn corrupt_or_truncated_image_is_refused_with_the_reason() {
    ns(|| {
        let a = udp("127.0.0.1:5006");
        let b = udp("127.0.0.1:0");
        b.send_to(b"payload", "127.0.0.1:5006").unwrap();
        wait_queued(a.as_fd(), true);
        let img = udp_repair_proto::encode(&dump::dump(a.as_fd()).unwrap()).unwrap();
        let mut bad = img.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        let e = udp_repair_proto::decode(&bad).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        let e = udp_repair_proto::decode(&img[..img.len() - 10]).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    });
}

/// An image is untrusted: an option the table does not hold (here
/// SO_DEBUG, which needs CAP_NET_ADMIN) in an otherwise valid, re-framed
/// image is refused by name before a socket exists, and so is a table
/// option with a value of the wrong layout or range.
#[test]
fn restore_refuses_options_the_dump_never_saves() {
    ns(|| {
        let a = udp("127.0.0.1:5016");
        let good = dump::dump(a.as_fd()).unwrap();
        drop(a);
        let reframed = |cp: &v1::Checkpoint| {
            udp_repair_proto::decode(&udp_repair_proto::encode(cp).unwrap()).unwrap()
        };
        let with = |o: v1::SockOpt| {
            let mut cp = good.clone();
            cp.options
                .retain(|p| (p.level, p.name) != (o.level, o.name));
            cp.options.push(o);
            reframed(&cp)
        };
        let int = |level, name, v: i64| v1::SockOpt {
            level,
            name,
            value: Some(v1::sock_opt::Value::Int(v)),
        };
        let cases = [
            (int(libc::SOL_SOCKET, libc::SO_DEBUG, 1), "SO_DEBUG"),
            (int(libc::SOL_IP, 9999, 1), "SOL_IP option 9999"),
            (int(libc::SOL_SOCKET, libc::SO_PEEK_OFF, 5), "peek_offset"),
            (int(libc::SOL_UDP, libc::UDP_CORK, 1), "send_queue"),
            (int(libc::SOL_SOCKET, libc::SO_TXTIME, 1), "raw bytes"),
            (int(136, 10, 8), "only on UDP-Lite"),
            (int(libc::SOL_IPV6, libc::IPV6_V6ONLY, 1), "only on IPv6"),
            (
                v1::SockOpt {
                    level: libc::SOL_SOCKET,
                    name: libc::SO_RCVTIMEO,
                    value: Some(v1::sock_opt::Value::Raw(vec![1, 2, 3])),
                },
                "its struct has 16",
            ),
            (
                v1::SockOpt {
                    level: libc::SOL_IP,
                    name: libc::IP_OPTIONS,
                    value: Some(v1::sock_opt::Value::Raw(vec![1; 41])),
                },
                "at most 40",
            ),
        ];
        for (o, want) in cases {
            let e = trusted(&with(o.clone())).unwrap_err();
            assert_eq!(e.step, "validating the socket options", "{o:?}: {e}");
            assert_eq!(e.kind, crate::Kind::InvalidImage, "{o:?}: {e}");
            assert!(e.to_string().contains(want), "{o:?}: {e}");
            assert_eq!(e.error.kind(), std::io::ErrorKind::InvalidData);
        }
        // An int out of range: the image codec already refuses it, and so
        // does the restore of a checkpoint built in memory.
        let mut huge = good.clone();
        huge.options
            .retain(|p| (p.level, p.name) != (libc::SOL_IP, libc::IP_TTL));
        huge.options.push(int(libc::SOL_IP, libc::IP_TTL, 1 << 40));
        assert!(udp_repair_proto::encode(&huge).is_err());
        let e = trusted(&huge).unwrap_err();
        assert!(e.to_string().contains("int"), "{e}");
        assert!(options::check_saved(&huge.options, false, false)
            .unwrap_err()
            .contains("does not fit a C int"));
        // A table option that is already in the image, twice.
        let mut twice = good.clone();
        let first = twice.options[0].clone();
        twice.options.push(first);
        let e = trusted(&reframed(&twice)).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
        // The image without the foreign option restores, SO_DEBUG off.
        let r = trusted(&reframed(&good)).unwrap();
        assert_eq!(
            sys::getsockopt_int(r.as_fd(), libc::SOL_SOCKET, libc::SO_DEBUG).unwrap(),
            0
        );
    });
}

/// The datagram's sender still holds its port on the wildcard address:
/// the transparent strategy cannot bind a socket to it and loses the
/// datagram; the raw strategy binds nothing and restores it.
fn transparent_loses_a_datagram_whose_port_is_taken_raw_does_not(drain: bool) {
    ns(|| {
        let a = udp("127.0.0.1:5007");
        let sender = udp("0.0.0.0:6007");
        let other = udp("127.0.0.5:0");
        sender
            .send_to(b"from a busy port", "127.0.0.1:5007")
            .unwrap();
        other
            .send_to(b"from a free port", "127.0.0.1:5007")
            .unwrap();
        wait_queued(a.as_fd(), true);
        let cp = dump_original(a.as_fd(), drain, DumpOptions::default());
        // The socket and one sender go away; the other sender stays.
        drop((a, other));

        let t = RestoreOptions {
            trust_image: true,
            strategy: Strategy::Transparent,
            ..Default::default()
        };
        let e = restore::restore_with(&cp, &t).unwrap_err();
        assert!(e.step.contains("datagram 0"), "{e}");
        assert_eq!(e.error.kind(), std::io::ErrorKind::AddrInUse, "{e}");
        let t = RestoreOptions {
            trust_image: true,
            strategy: Strategy::Transparent,
            accept_rx_loss: true,
            ..Default::default()
        };
        let (r, report) = restore::restore_with(&cp, &t).unwrap();
        assert_eq!(report.lost.len(), 1);
        let got = recv_all(r.as_fd());
        assert_eq!(got.len(), 1, "transparent: one datagram lost");
        assert_eq!(got[0].0, b"from a free port");
        drop(r);

        let (r, report) = restore::restore_with(&cp, &trusted_opts()).unwrap();
        assert!(report.lost.is_empty());
        let got = recv_all(r.as_fd());
        assert_eq!(got.len(), 2, "raw: nothing lost");
        assert_eq!(
            got[0],
            (
                b"from a busy port".to_vec(),
                "127.0.0.1:6007".parse().unwrap()
            )
        );
    });
}

#[test]
fn transparent_loses_a_datagram_whose_port_is_taken_raw_does_not_by_peek() {
    transparent_loses_a_datagram_whose_port_is_taken_raw_does_not(false)
}

/// The same case on the fast path: the original's queue drained.
#[test]
fn transparent_loses_a_datagram_whose_port_is_taken_raw_does_not_by_drain() {
    transparent_loses_a_datagram_whose_port_is_taken_raw_does_not(true)
}

fn transparent_round_trip_when_ports_are_free(drain: bool) {
    ns(|| {
        let a = udp("127.0.0.1:5008");
        let b = udp("127.0.0.2:6008");
        set(b.as_fd(), libc::SOL_IP, libc::IP_TTL, 21);
        b.send_to(b"x", "127.0.0.1:5008").unwrap();
        b.send_to(b"yy", "127.0.0.1:5008").unwrap();
        wait_queued(a.as_fd(), true);
        let cp = dump_original(a.as_fd(), drain, DumpOptions::default());
        drop((a, b));
        let t = RestoreOptions {
            trust_image: true,
            strategy: Strategy::Transparent,
            ..Default::default()
        };
        let (r, _) = restore::restore_with(&cp, &t).unwrap();
        let again = dump::dump(r.as_fd()).unwrap();
        assert_eq!(payloads(&again), payloads(&cp));
        assert_eq!(again.receive_queue.unwrap().datagrams[0].ttl, Some(21));
    });
}

#[test]
fn transparent_round_trip_when_ports_are_free_by_peek() {
    transparent_round_trip_when_ports_are_free(false)
}

/// The same case on the fast path: the original's queue drained.
#[test]
fn transparent_round_trip_when_ports_are_free_by_drain() {
    transparent_round_trip_when_ports_are_free(true)
}

#[test]
fn pending_data_without_a_reader_is_refused_unless_dropped() {
    ns(|| {
        let a = udp("127.0.0.1:0");
        a.connect("127.0.0.1:9").unwrap();
        rustix::net::send(a.as_fd(), b"pending", rustix::net::SendFlags::MORE).unwrap();
        let opts = DumpOptions {
            readers: Vec::new(),
            ..Default::default()
        };
        let e = dump::dump_with(a.as_fd(), &opts).unwrap_err();
        assert_eq!(e.step, "send queue");
        assert_eq!(e.kind, crate::Kind::Refused, "{e}");
        assert!(e.error.to_string().contains("pending"), "{e}");
        let opts = DumpOptions {
            readers: Vec::new(),
            drop_pending: true,
            ..Default::default()
        };
        let cp = dump::dump_with(a.as_fd(), &opts).unwrap();
        assert!(cp.send_queue.as_ref().unwrap().dropped);
        // The pending data is still there, untouched.
        assert!(sys::outq(a.as_fd()).unwrap() > 0);
    });
}

fn pending_cp(dst: SocketAddr, udp_cork: bool) -> v1::Checkpoint {
    v1::Checkpoint {
        schema_version: 1,
        family: v1::Family::Inet as i32,
        protocol: v1::Protocol::Udp as i32,
        bound: Some(crate::wire::to_proto(&"127.0.0.1:5010".parse().unwrap())),
        peek_offset: -1,
        receive_queue: Some(Default::default()),
        send_queue: Some(v1::SendQueue {
            udp_cork,
            pending: Some(v1::PendingDatagram {
                family: libc::AF_INET as u32,
                payload: b"hello ".to_vec(),
                destination: Some(crate::wire::to_proto(&dst)),
                cork: Some(v1::CorkState {
                    ttl: Some(5),
                    tos: Some(0x20),
                    ..Default::default()
                }),
                complete: true,
            }),
            reader: "test".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Reads one datagram with its TTL and TOS.
fn recv_ttl_tos(fd: BorrowedFd<'_>) -> (Vec<u8>, Option<u32>, Option<u32>) {
    set(fd, libc::SOL_IP, libc::IP_RECVTTL, 1);
    set(fd, libc::SOL_IP, libc::IP_RECVTOS, 1);
    let mut buf = vec![0u8; 2048];
    let mut d = None;
    for _ in 0..500 {
        if let Some(x) = peek::peek_one(fd, &mut buf, &mut [0u8; 256], 0).unwrap() {
            d = Some(x);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let d = d.expect("a datagram");
    (d.payload.to_vec(), d.ttl, d.tos)
}

#[test]
fn pending_datagram_is_recreated_with_its_cork_state() {
    ns(|| {
        let rx = udp("127.0.0.1:5011");
        let dst = rx.local_addr().unwrap();
        // MSG_MORE: the next plain send completes the datagram.
        let r: OwnedFd = trusted(&pending_cp(dst, false)).unwrap();
        assert!(sys::outq(r.as_fd()).unwrap() > 0, "kept pending");
        assert_eq!(
            sys::getsockopt_int(r.as_fd(), libc::SOL_UDP, libc::UDP_CORK).unwrap(),
            0
        );
        rustix::net::sendto(r.as_fd(), b"world", rustix::net::SendFlags::empty(), &dst).unwrap();
        assert_eq!(
            recv_ttl_tos(rx.as_fd()),
            (b"hello world".to_vec(), Some(5), Some(0x20))
        );
        drop(r);
        let _ = recv_all(rx.as_fd());
        // UDP_CORK: clearing the cork sends it.
        let r = trusted(&pending_cp(dst, true)).unwrap();
        assert_eq!(
            sys::getsockopt_int(r.as_fd(), libc::SOL_UDP, libc::UDP_CORK).unwrap(),
            1
        );
        set(r.as_fd(), libc::SOL_UDP, libc::UDP_CORK, 0);
        assert_eq!(
            recv_ttl_tos(rx.as_fd()),
            (b"hello ".to_vec(), Some(5), Some(0x20))
        );
    });
}

#[test]
fn classic_filter_is_saved_and_restored() {
    ns(|| {
        let a = udp("127.0.0.1:5012");
        // ret #0xffff (accept) as one instruction: BPF_RET|BPF_K = 0x06.
        let insn: u64 = 0x06 | (0xffff_u64 << 32);
        let mut prog = Vec::new();
        prog.extend_from_slice(&0x06u16.to_ne_bytes());
        prog.extend_from_slice(&[0, 0]);
        prog.extend_from_slice(&0xffffu32.to_ne_bytes());
        sys::attach_filter(a.as_fd(), &prog).unwrap();
        let cp = dump::dump(a.as_fd()).unwrap();
        assert_eq!(
            cp.filter,
            Some(v1::Filter {
                insns: vec![insn],
                locked: false
            })
        );
        drop(a);
        let r = trusted(&cp).unwrap();
        assert_eq!(dump::dump(r.as_fd()).unwrap().filter, cp.filter);
    });
}

#[test]
fn multicast_membership_is_refused_unless_dropped() {
    ns(|| {
        let a = udp("0.0.0.0:5013");
        a.join_multicast_v4(&"239.1.2.3".parse().unwrap(), &"127.0.0.1".parse().unwrap())
            .unwrap();
        let e = dump::dump(a.as_fd()).unwrap_err();
        assert_eq!(e.step, "multicast memberships");
        assert!(e.error.to_string().contains("239.1.2.3"), "{e}");
        let opts = DumpOptions {
            drop_multicast: true,
            ..Default::default()
        };
        let cp = dump::dump_with(a.as_fd(), &opts).unwrap();
        assert!(cp.dropped_state.iter().any(|s| s.contains("239.1.2.3")));
        // A socket that is not a member is dumped.
        let b = udp("0.0.0.0:5014");
        dump::dump(b.as_fd()).unwrap();
    });
}

/// SO_PEEK_OFF 0 (walking from the start, nothing peeked yet) is an
/// application value like any other: the dump puts it back.
#[test]
fn dump_puts_a_peek_offset_of_zero_back() {
    ns(|| {
        let a = udp("127.0.0.1:5015");
        let b = udp("127.0.0.1:0");
        b.send_to(b"abc", "127.0.0.1:5015").unwrap();
        wait_queued(a.as_fd(), true);
        set(a.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0);
        let cp = dump::dump(a.as_fd()).unwrap();
        assert_eq!(cp.peek_offset, 0);
        assert_eq!(
            sys::getsockopt_int(a.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap(),
            0
        );
    });
}

/// A dump refused for pending data has not walked the receive queue: on a
/// kernel without the peek fix that walk would have hidden the empty
/// datagram from the application's own walks for good.
#[test]
fn refused_dump_leaves_the_receive_queue_untouched() {
    ns(|| {
        let a = udp("127.0.0.1:5016");
        let b = udp("127.0.0.1:0");
        b.send_to(b"", "127.0.0.1:5016").unwrap();
        b.send_to(b"x", "127.0.0.1:5016").unwrap();
        wait_queued(a.as_fd(), true);
        rustix::net::sendto(
            a.as_fd(),
            b"pending",
            rustix::net::SendFlags::MORE,
            &"127.0.0.1:9".parse::<SocketAddr>().unwrap(),
        )
        .unwrap();
        let opts = DumpOptions {
            readers: Vec::new(),
            ..Default::default()
        };
        let e = dump::dump_with(a.as_fd(), &opts).unwrap_err();
        assert_eq!(e.step, "send queue", "{e}");
        set(a.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0);
        let mut buf = [0u8; 4];
        let peek = |buf: &mut [u8]| {
            rustix::net::recv(a.as_fd(), buf, rustix::net::RecvFlags::PEEK)
                .unwrap()
                .0
        };
        assert_eq!(
            peek(&mut buf),
            0,
            "the walk still returns the empty datagram"
        );
        assert_eq!(peek(&mut buf), 1);
    });
}

/// The application's walk has returned the empty datagram at its offset:
/// its next peek returns the one after it, also after a dump and on the
/// restored socket (the image records the mark, the restore peeks again).
#[test]
fn peeked_zero_length_datagram_stays_peeked() {
    ns(|| {
        let a = udp("127.0.0.1:5017");
        let b = udp("127.0.0.1:0");
        b.send_to(b"", "127.0.0.1:5017").unwrap();
        b.send_to(b"x", "127.0.0.1:5017").unwrap();
        wait_queued(a.as_fd(), true);
        set(a.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0);
        let peek = |fd: BorrowedFd<'_>| {
            let mut buf = [0u8; 4];
            let n = rustix::net::recv(fd, &mut buf, rustix::net::RecvFlags::PEEK)
                .unwrap()
                .0;
            buf[..n].to_vec()
        };
        assert_eq!(peek(a.as_fd()), b"");
        let cp = dump::dump(a.as_fd()).unwrap();
        let q = cp.receive_queue.as_ref().unwrap();
        assert_eq!(payloads(&cp), vec![vec![], b"x".to_vec()]);
        assert!(q.datagrams[0].peeked, "{q:?}");
        assert!(!q.datagrams[1].peeked);
        assert_eq!(peek(a.as_fd()), b"x", "the original after the dump");
        drop(a);
        let r = trusted(&cp).unwrap();
        assert_eq!(peek(r.as_fd()), b"x", "the restored socket");
        assert_eq!(recv_all(r.as_fd()).len(), 2);
    });
}

/// Connected to a closed port, with one datagram queued, and then the
/// ICMP port unreachable of its own send: `sk_err` is ECONNREFUSED.
fn socket_with_pending_error(port: u16, recverr: bool) -> UdpSocket {
    pending_error_at("127.0.0.1", "127.0.0.1", port, recverr)
}

/// [`socket_with_pending_error`] for a socket bound to `local` and a peer
/// at `peer` (`[::1]`, or `[::ffff:127.0.0.1]` with an IPv4 peer).
fn pending_error_at(local: &str, peer: &str, port: u16, recverr: bool) -> UdpSocket {
    let a = udp(&format!("{local}:{port}"));
    let peer_ip = match peer.strip_prefix("[::ffff:") {
        Some(v4) => v4.trim_end_matches(']'),
        None => peer,
    };
    let b = udp(&format!("{peer_ip}:{}", port + 1));
    if recverr {
        set(a.as_fd(), libc::SOL_IP, libc::IP_RECVERR, 1);
    }
    a.connect(format!("{peer}:{}", port + 1)).unwrap();
    let a_ip = if peer.starts_with("[::ffff:") {
        "127.0.0.1"
    } else {
        local
    };
    b.send_to(b"queued", format!("{a_ip}:{port}")).unwrap();
    drop(b);
    wait_queued(a.as_fd(), true);
    a.send(b"x").unwrap();
    for _ in 0..500 {
        if crate::sockerr::error_signalled(a.as_fd()).unwrap() {
            return a;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("no ICMP error arrived");
}

fn recv_errno(fd: BorrowedFd<'_>) -> Result<Vec<u8>, Option<i32>> {
    let mut buf = [0u8; 64];
    rustix::net::recv(fd, &mut buf, rustix::net::RecvFlags::DONTWAIT)
        .map(|(n, _)| buf[..n].to_vec())
        .map_err(|e| Some(e.raw_os_error()))
}

/// A pending socket error is neither consumed nor lost: the dump refuses
/// it by name and leaves it for the application; under `take_error` the
/// image carries it (schema version 2) and the restored socket returns it
/// first, then the queued datagram, as the original would have.
#[test]
fn pending_error_is_refused_by_name_or_taken_and_recreated() {
    ns(|| {
        let a = socket_with_pending_error(5030, false);
        for _ in 0..2 {
            let e = dump::dump(a.as_fd()).unwrap_err();
            assert_eq!(e.kind, crate::Kind::Refused, "{e}");
            assert_eq!(e.step, "pending socket error");
            assert!(e.to_string().contains("a socket error is pending"), "{e}");
            assert!(crate::sockerr::error_signalled(a.as_fd()).unwrap());
        }
        let opts = DumpOptions {
            take_error: true,
            ..Default::default()
        };
        let cp = dump::dump_with(a.as_fd(), &opts).unwrap();
        assert_eq!(cp.pending_error, libc::ECONNREFUSED);
        assert_eq!(cp.schema_version, 2);
        assert_eq!(payloads(&cp), vec![b"queued".to_vec()]);
        let cp = udp_repair_proto::decode(&udp_repair_proto::encode(&cp).unwrap()).unwrap();
        drop(a);
        restores_error_first(&cp);
        // IPv6, and an IPv6 socket with IPv4 traffic (IPv4 ICMP errors).
        for (local, peer, port) in [
            ("[::1]", "[::1]", 5032),
            ("[::]", "[::ffff:127.0.0.1]", 5034),
        ] {
            let a = pending_error_at(local, peer, port, false);
            let cp = dump::dump_with(a.as_fd(), &opts).unwrap();
            assert_eq!(cp.pending_error, libc::ECONNREFUSED, "{peer}");
            drop(a);
            restores_error_first(&cp);
        }
    });
}

/// Restores `cp` with each strategy: the error comes first, then the
/// datagram.
fn restores_error_first(cp: &v1::Checkpoint) {
    {
        for strategy in [Strategy::Raw, Strategy::Transparent] {
            let (r, _) = restore::restore_with(
                cp,
                &RestoreOptions {
                    trust_image: true,
                    strategy,
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(
                recv_errno(r.as_fd()),
                Err(Some(libc::ECONNREFUSED)),
                "{strategy:?}"
            );
            assert_eq!(
                recv_errno(r.as_fd()),
                Ok(b"queued".to_vec()),
                "{strategy:?}"
            );
        }
    }
}

/// With IP_RECVERR the error queue may hold the error too, and nothing
/// reads it without dequeuing: refused by name even under `take_error`,
/// and both the error and the queue entry stay for the application.
#[test]
fn pending_error_with_an_error_queue_is_refused_and_left_alone() {
    ns(|| {
        let a = socket_with_pending_error(5040, true);
        let opts = DumpOptions {
            take_error: true,
            ..Default::default()
        };
        let e = dump::dump_with(a.as_fd(), &opts).unwrap_err();
        assert_eq!(e.kind, crate::Kind::Refused, "{e}");
        assert!(e.to_string().contains("IP_RECVERR"), "{e}");
        assert_eq!(recv_errno(a.as_fd()), Err(Some(libc::ECONNREFUSED)));
        let mut buf = [0u8; 64];
        let mut name = [0u8; 128];
        let mut control = [0u8; 512];
        let o = sys::recvmsg_bytes(
            a.as_fd(),
            &mut buf,
            &mut name,
            &mut control,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        )
        .expect("the error-queue entry is still there");
        assert_ne!(o.control_len, 0);
    });
}

/// Options that were reset to their defaults by a restore, before they
/// were in the table: SO_NO_CHECK on IPv4; the RFC 2292 receive flags and
/// a sticky Hop-by-Hop header on IPv6. After the round trip each reads the
/// same, the restored socket delivers the old API's IPV6_2292PKTINFO cmsg,
/// and its datagrams carry the header.
#[test]
fn no_check_rfc2292_flags_and_sticky_headers_survive() {
    ns(|| {
        let a = udp("127.0.0.1:5050");
        set(a.as_fd(), libc::SOL_SOCKET, options::SO_NO_CHECK, 1);
        let cp = dump::dump(a.as_fd()).unwrap();
        drop(a);
        let r = trusted(&cp).unwrap();
        assert_eq!(
            sys::getsockopt_int(r.as_fd(), libc::SOL_SOCKET, options::SO_NO_CHECK).unwrap(),
            1
        );

        let b = udp("[::1]:5051");
        set(b.as_fd(), libc::SOL_IPV6, libc::IPV6_2292PKTINFO, 1);
        set(b.as_fd(), libc::SOL_IPV6, libc::IPV6_2292HOPLIMIT, 1);
        // Hop-by-Hop header holding one PadN option (8 bytes).
        let hbh = [0u8, 0, 1, 4, 0, 0, 0, 0];
        sys::setsockopt_bytes(b.as_fd(), libc::SOL_IPV6, libc::IPV6_HOPOPTS, &hbh).unwrap();
        let before = options::save(b.as_fd(), false).unwrap();
        let cp = dump::dump(b.as_fd()).unwrap();
        drop(b);
        let r = trusted(&cp).unwrap();
        assert_eq!(options::save(r.as_fd(), false).unwrap(), before);

        let peer = udp("[::1]:5052");
        set(peer.as_fd(), libc::SOL_IPV6, libc::IPV6_RECVHOPOPTS, 1);
        peer.send_to(b"in", "[::1]:5051").unwrap();
        wait_queued(r.as_fd(), true);
        let mut buf = [0u8; 16];
        let mut name = [0u8; 128];
        let mut control = [0u8; 512];
        let o = sys::recvmsg_bytes(r.as_fd(), &mut buf, &mut name, &mut control, 0).unwrap();
        let kinds: Vec<(i32, i32)> = crate::wire::cmsgs(&control[..o.control_len])
            .map(|c| (c.level, c.kind))
            .collect();
        assert!(
            kinds.contains(&(libc::SOL_IPV6, libc::IPV6_2292PKTINFO)),
            "{kinds:?}"
        );
        rustix::net::sendto(
            r.as_fd(),
            b"out",
            rustix::net::SendFlags::empty(),
            &"[::1]:5052".parse::<SocketAddr>().unwrap(),
        )
        .unwrap();
        wait_queued(peer.as_fd(), true);
        let o = sys::recvmsg_bytes(peer.as_fd(), &mut buf, &mut name, &mut control, 0).unwrap();
        let hop: Vec<Vec<u8>> = crate::wire::cmsgs(&control[..o.control_len])
            .filter(|c| (c.level, c.kind) == (libc::SOL_IPV6, libc::IPV6_HOPOPTS))
            .map(|c| c.data.to_vec())
            .collect();
        // The kernel fills in the next header (UDP).
        let mut sent = hbh.to_vec();
        sent[0] = libc::IPPROTO_UDP as u8;
        assert_eq!(hop, vec![sent], "the datagram's Hop-by-Hop header");
    });
}

/// A socket bound to an address that is not a local unicast one here (a
/// multicast group; an IP_FREEBIND address of another host): its datagrams
/// would be sent to that address and leave the machine with forged
/// sources, so the restore refuses before it sends anything.
#[test]
fn restore_never_sends_a_datagram_off_the_machine() {
    ns(|| {
        let a = udp("127.0.0.1:5060");
        let b = udp("127.0.0.1:0");
        b.send_to(b"q", "127.0.0.1:5060").unwrap();
        wait_queued(a.as_fd(), true);
        let good = dump::dump(a.as_fd()).unwrap();
        drop(a);
        for ip in [[203, 0, 113, 7], [239, 255, 255, 250]] {
            let mut cp = good.clone();
            cp.bound = Some(v1::SockAddr {
                ip: ip.to_vec(),
                port: 5060,
                flowinfo: 0,
                scope_id: 0,
            });
            cp.options
                .retain(|o| (o.level, o.name) != (libc::SOL_IP, libc::IP_FREEBIND));
            cp.options.push(v1::SockOpt {
                level: libc::SOL_IP,
                name: libc::IP_FREEBIND,
                value: Some(v1::sock_opt::Value::Int(1)),
            });
            let e = trusted(&cp).unwrap_err();
            assert!(
                e.to_string().contains("not a local unicast address"),
                "{ip:?}: {e}"
            );
            assert_eq!(e.kind, crate::Kind::Refused, "{e}");
        }
    });
}

/// Every hard ICMP error the restore can send is re-created, EMSGSIZE
/// (fragmentation needed, under path MTU discovery) and EPROTO included;
/// the errors are set on the original socket by the same ICMP errors.
fn every_recreatable_error_survives_the_round_trip(drain: bool) {
    ns(|| {
        let v4 = [
            libc::EMSGSIZE,
            libc::EPROTO,
            libc::EHOSTUNREACH,
            libc::ENETUNREACH,
            libc::ENOPROTOOPT,
            libc::EHOSTDOWN,
            libc::ENONET,
        ]
        .map(|e| ("127.0.0.1", e));
        let v6 = [libc::EMSGSIZE, libc::EPROTO, libc::EACCES].map(|e| ("[::1]", e));
        for (i, (ip, err)) in v4.into_iter().chain(v6).enumerate() {
            let port = 5070 + 2 * i as u16;
            let a = udp(&format!("{ip}:{port}"));
            // EMSGSIZE is hard only under path MTU discovery.
            if ip.starts_with('[') {
                set(
                    a.as_fd(),
                    libc::SOL_IPV6,
                    libc::IPV6_MTU_DISCOVER,
                    libc::IPV6_PMTUDISC_DO,
                );
            } else {
                set(
                    a.as_fd(),
                    libc::SOL_IP,
                    libc::IP_MTU_DISCOVER,
                    libc::IP_PMTUDISC_DO,
                );
            }
            let peer: SocketAddr = format!("{ip}:{}", port + 1).parse().unwrap();
            a.connect(peer).unwrap();
            crate::sockerr::recreate(a.as_fd(), peer, err).unwrap();
            let opts = DumpOptions {
                take_error: true,
                ..Default::default()
            };
            let cp = dump_original(a.as_fd(), drain, opts);
            assert_eq!(cp.pending_error, err);
            drop(a);
            let r = trusted(&cp).unwrap();
            assert_eq!(recv_errno(r.as_fd()), Err(Some(err)), "{ip} errno {err}");
        }
    });
}

#[test]
fn every_recreatable_error_survives_the_round_trip_by_peek() {
    every_recreatable_error_survives_the_round_trip(false)
}

/// The same case on the fast path: the original's queue drained.
#[test]
fn every_recreatable_error_survives_the_round_trip_by_drain() {
    every_recreatable_error_survives_the_round_trip(true)
}

/// An error set while the socket was connected stays after a disconnect;
/// the restore could only re-create it on a connected socket, so the dump
/// refuses to take it, and leaves it.
#[test]
fn a_pending_error_on_a_disconnected_socket_is_not_taken() {
    ns(|| {
        let a = socket_with_pending_error(5080, false);
        rustix::net::connect_unspec(a.as_fd()).unwrap();
        let opts = DumpOptions {
            take_error: true,
            ..Default::default()
        };
        let e = dump::dump_with(a.as_fd(), &opts).unwrap_err();
        assert!(e.to_string().contains("not connected"), "{e}");
        assert!(crate::sockerr::error_signalled(a.as_fd()).unwrap());
    });
}

/// What a QUIC receiver reads: a UDP_GRO aggregate (2500 bytes in
/// segments of 1000, from a UDP_SEGMENT send) with its UDP_GRO cmsg, then
/// a 5-byte datagram. The image keeps the segment size and the restored
/// socket reads the same, with either strategy, IPv4 and IPv6.
fn udp_gro_aggregates_keep_their_segment_size(drain: bool) {
    ns(|| {
        for (i, ip) in ["127.0.0.1", "[::1]"].into_iter().enumerate() {
            let port = 5100 + 10 * i as u16;
            let rx = udp(&format!("{ip}:{port}"));
            set(rx.as_fd(), libc::SOL_UDP, libc::UDP_GRO, 1);
            let tx = udp(&format!("{ip}:0"));
            let to: SocketAddr = format!("{ip}:{port}").parse().unwrap();
            let mut seg = crate::wire::CmsgBuilder::default();
            seg.push(libc::SOL_UDP, libc::UDP_SEGMENT, &1000u16.to_ne_bytes());
            let big: Vec<u8> = (0..2500u32).map(|b| b as u8).collect();
            let n = sys::sendmsg_bytes(
                tx.as_fd(),
                &big,
                &crate::wire::sockaddr_bytes(&to),
                seg.bytes(),
                0,
            )
            .unwrap();
            assert_eq!(n, 2500);
            tx.send_to(b"small", to).unwrap();
            wait_queued(rx.as_fd(), true);
            std::thread::sleep(std::time::Duration::from_millis(20));
            let cp = dump_original(rx.as_fd(), drain, DumpOptions::default());
            let rq = cp.receive_queue.as_ref().unwrap();
            assert_eq!(rq.datagrams.len(), 2, "{ip}");
            assert_eq!(rq.datagrams[0].gso_size, Some(1000), "{ip}");
            assert_eq!(rq.datagrams[1].gso_size, None, "{ip}");
            assert_eq!(cp.schema_version, 2);
            let cp = udp_repair_proto::decode(&udp_repair_proto::encode(&cp).unwrap()).unwrap();
            drop(rx);
            // Re-created from a socket bound to its source: while the
            // sender holds that port, refused by name.
            let e = trusted(&cp).unwrap_err();
            assert!(
                e.to_string().contains("UDP_GRO aggregate") && e.to_string().contains("taken"),
                "{e}"
            );
            drop(tx);
            for strategy in [Strategy::Raw, Strategy::Transparent] {
                let (r, _) = restore::restore_with(
                    &cp,
                    &RestoreOptions {
                        trust_image: true,
                        strategy,
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| panic!("{ip} {strategy:?}: {e}"));
                let mut buf = vec![0u8; 70000];
                let mut name = [0u8; 128];
                let mut control = [0u8; 256];
                let o =
                    sys::recvmsg_bytes(r.as_fd(), &mut buf, &mut name, &mut control, 0).unwrap();
                assert_eq!(&buf[..o.len], &big[..], "{ip} {strategy:?}");
                let gro: Vec<&[u8]> = crate::wire::cmsgs(&control[..o.control_len])
                    .filter(|c| (c.level, c.kind) == (libc::SOL_UDP, libc::UDP_GRO))
                    .map(|c| c.data)
                    .collect();
                assert_eq!(gro.len(), 1, "{ip} {strategy:?}: a UDP_GRO cmsg");
                assert_eq!(&gro[0][..4], &1000i32.to_ne_bytes(), "{ip} {strategy:?}");
                let o =
                    sys::recvmsg_bytes(r.as_fd(), &mut buf, &mut name, &mut control, 0).unwrap();
                assert_eq!(&buf[..o.len], b"small", "{ip} {strategy:?}");
            }
        }
    });
}

#[test]
fn udp_gro_aggregates_keep_their_segment_size_by_peek() {
    udp_gro_aggregates_keep_their_segment_size(false)
}

/// The same case on the fast path: the original's queue drained.
#[test]
fn udp_gro_aggregates_keep_their_segment_size_by_drain() {
    udp_gro_aggregates_keep_their_segment_size(true)
}

/// A connected pair: `a` shut down for writing, `b` for reading with a
/// datagram queued. After the round trip `a` still gets EPIPE on a send,
/// and `b` still signals POLLRDHUP and returns its datagram.
fn shutdown_state_survives(drain: bool) {
    ns(|| {
        let a = udp("127.0.0.1:5130");
        let b = udp("127.0.0.1:5131");
        a.connect("127.0.0.1:5131").unwrap();
        b.connect("127.0.0.1:5130").unwrap();
        a.send(b"queued").unwrap();
        wait_queued(b.as_fd(), true);
        rustix::net::shutdown(a.as_fd(), rustix::net::Shutdown::Write).unwrap();
        rustix::net::shutdown(b.as_fd(), rustix::net::Shutdown::Read).unwrap();
        assert_eq!(
            crate::diag::shutdown_bits(a.as_fd(), false, false).unwrap(),
            crate::diag::Shutdown::Bits(crate::diag::SEND_SHUTDOWN),
            "this host's udp_diag"
        );
        let (ca, cb) = (
            dump_original(a.as_fd(), drain, DumpOptions::default()),
            dump_original(b.as_fd(), drain, DumpOptions::default()),
        );
        assert_eq!((ca.shutdown, cb.shutdown), (2, 1));
        assert_eq!(ca.schema_version, 2);
        drop((a, b));
        let ra = trusted(&ca).unwrap();
        let rb = trusted(&cb).unwrap();
        let e = rustix::net::send(ra.as_fd(), b"x", rustix::net::SendFlags::empty()).unwrap_err();
        assert_eq!(e, rustix::io::Errno::PIPE);
        let revents = sys::poll_now(rb.as_fd(), rustix::event::PollFlags::RDHUP).unwrap();
        assert!(revents.contains(rustix::event::PollFlags::RDHUP));
        assert_eq!(recv_errno(rb.as_fd()), Ok(b"queued".to_vec()));
    });
}

#[test]
fn shutdown_state_survives_by_peek() {
    shutdown_state_survives(false)
}

/// The same case on the fast path: the original's queue drained.
#[test]
fn shutdown_state_survives_by_drain() {
    shutdown_state_survives(true)
}

/// An option the dump reads but the restore does not set (SO_DEBUG, see
/// options::REFUSED_IF_SET) is refused by name while it is on.
#[test]
fn an_option_the_restore_does_not_set_is_refused_while_on() {
    ns(|| {
        let a = udp("127.0.0.1:5140");
        set(a.as_fd(), libc::SOL_SOCKET, libc::SO_DEBUG, 1);
        let e = dump::dump(a.as_fd()).unwrap_err();
        assert_eq!(e.kind, crate::Kind::Refused, "{e}");
        assert!(e.to_string().contains("SO_DEBUG is set"), "{e}");
        set(a.as_fd(), libc::SOL_SOCKET, libc::SO_DEBUG, 0);
        dump::dump(a.as_fd()).unwrap();
    });
}

/// Metadata the application asked for that the restore cannot carry
/// (here receive timestamps and the drop counter) is named in the image
/// with a datagram queued, and refused under `refuse_metadata_loss`
/// (dump --strict); with an empty queue nothing is lost.
#[test]
fn metadata_the_restore_cannot_carry_is_named_or_refused() {
    ns(|| {
        let a = udp("127.0.0.1:5150");
        set(a.as_fd(), libc::SOL_SOCKET, options::SO_TIMESTAMPNS_OLD, 1);
        set(a.as_fd(), libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1);
        let cp = dump::dump(a.as_fd()).unwrap();
        assert!(cp.dropped_state.is_empty(), "{:?}", cp.dropped_state);
        let b = udp("127.0.0.1:0");
        b.send_to(b"q", "127.0.0.1:5150").unwrap();
        wait_queued(a.as_fd(), true);
        let cp = dump::dump(a.as_fd()).unwrap();
        let named = cp.dropped_state.join("\n");
        assert!(
            named.contains("receive timestamps") && named.contains("drop counter"),
            "{named}"
        );
        let strict = DumpOptions {
            refuse_metadata_loss: true,
            ..Default::default()
        };
        let e = dump::dump_with(a.as_fd(), &strict).unwrap_err();
        assert_eq!(e.kind, crate::Kind::Refused, "{e}");
        assert!(e.to_string().contains("would lose"), "{e}");
    });
}

/// A dump that took the pending error and then failed leaves the socket
/// as it found it: the error is set on it again.
#[test]
fn a_failed_dump_puts_a_taken_error_back() {
    ns(|| {
        let a = socket_with_pending_error(5160, false);
        set(a.as_fd(), libc::SOL_SOCKET, options::SO_TIMESTAMPNS_OLD, 1);
        let opts = DumpOptions {
            take_error: true,
            refuse_metadata_loss: true,
            ..Default::default()
        };
        let e = dump::dump_with(a.as_fd(), &opts).unwrap_err();
        assert!(e.to_string().contains("would lose"), "{e}");
        assert_eq!(recv_errno(a.as_fd()), Err(Some(libc::ECONNREFUSED)));
        assert_eq!(recv_errno(a.as_fd()), Ok(b"queued".to_vec()));
    });
}

/// A datagram addressed to a broadcast address comes back addressed to
/// the loopback (nothing else can deliver it here): the image names the
/// change, and `refuse_metadata_loss` refuses it.
fn a_broadcast_destination_is_named(drain: bool) {
    ns(|| {
        let a = udp("0.0.0.0:5170");
        set(a.as_fd(), libc::SOL_IP, libc::IP_PKTINFO, 1);
        let b = udp("127.0.0.1:0");
        set(b.as_fd(), libc::SOL_SOCKET, libc::SO_BROADCAST, 1);
        b.send_to(b"all", "127.255.255.255:5170").unwrap();
        wait_queued(a.as_fd(), true);
        let cp = dump_original(a.as_fd(), drain, DumpOptions::default());
        let named = cp.dropped_state.join("\n");
        assert!(named.contains("127.255.255.255"), "{named}");
        let strict = DumpOptions {
            refuse_metadata_loss: true,
            drain_receive_queue: drain,
            ..Default::default()
        };
        if drain {
            // The drain took it: queued again for the strict dump.
            assert!(recv_all(a.as_fd()).is_empty());
            b.send_to(b"all", "127.255.255.255:5170").unwrap();
            wait_queued(a.as_fd(), true);
        }
        let e = dump::dump_with(a.as_fd(), &strict).unwrap_err();
        assert_eq!(e.kind, crate::Kind::Refused, "{e}");
        // A refused drain puts the datagram back.
        assert_eq!(recv_all(a.as_fd()).len(), 1, "{e}");
    });
}

#[test]
fn a_broadcast_destination_is_named_by_peek() {
    a_broadcast_destination_is_named(false)
}

/// The same case on the fast path: the original's queue drained.
#[test]
fn a_broadcast_destination_is_named_by_drain() {
    a_broadcast_destination_is_named(true)
}

/// The timestamp key counter cannot be read: a dump of a socket with
/// SOF_TIMESTAMPING_OPT_ID names it, and refuses under
/// refuse_metadata_loss.
#[test]
fn the_timestamp_key_counter_is_named() {
    ns(|| {
        let s = udp("127.0.0.1:0");
        // SOF_TIMESTAMPING_TX_SOFTWARE | SOFTWARE | OPT_ID
        set(
            s.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPING,
            (1 << 1) | (1 << 4) | (1 << 7),
        );
        let cp = dump::dump(s.as_fd()).unwrap();
        assert!(
            cp.dropped_state
                .iter()
                .any(|d| d.contains("timestamp key counter")),
            "{:?}",
            cp.dropped_state
        );
        let strict = dump::DumpOptions {
            refuse_metadata_loss: true,
            ..Default::default()
        };
        let e = dump::dump_with(s.as_fd(), &strict).unwrap_err();
        assert!(e.to_string().contains("timestamp key counter"), "{e}");
    })
}

#[test]
fn untrusted_restore_refuses_privileged_values_by_name_and_trusted_takes_them() {
    ns(|| {
        let a = udp("127.0.0.1:5000");
        let fd = a.as_fd();
        set(fd, libc::SOL_SOCKET, libc::SO_MARK, 7);
        set(fd, libc::SOL_SOCKET, libc::SO_PRIORITY, 7);
        let cp = dump::dump(fd).unwrap();
        drop(a);
        let e = restore::restore(&cp).unwrap_err();
        assert_eq!(e.kind, crate::Kind::Refused, "{e}");
        let why = e.to_string();
        assert!(
            why.contains("SO_MARK = 7") && why.contains("SO_PRIORITY = 7"),
            "{why}"
        );
        // Refused before any socket existed: the port is free.
        drop(udp("127.0.0.1:5000"));
        let r = trusted(&cp).unwrap();
        assert_eq!(
            sys::getsockopt_int(r.as_fd(), libc::SOL_SOCKET, libc::SO_MARK).unwrap(),
            7
        );
    })
}

#[test]
fn untrusted_restore_takes_an_ordinary_socket_and_refuses_forged_sources() {
    ns(|| {
        let a = udp("127.0.0.1:5000");
        let b = udp("127.0.0.2:6000");
        b.send_to(b"one", "127.0.0.1:5000").unwrap();
        b.send_to(b"two", "127.0.0.1:5000").unwrap();
        wait_queued(a.as_fd(), true);
        let cp = dump::dump(a.as_fd()).unwrap();
        drop(a);
        // Everything in it an unprivileged process could have made.
        let (r, report) = restore::restore_with(&cp, &RestoreOptions::default()).unwrap();
        assert_eq!(report.restored, 2);
        assert_eq!(
            recv_all(r.as_fd())
                .into_iter()
                .map(|d| d.0)
                .collect::<Vec<_>>(),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        drop(r);
        // The same image claiming a datagram from an address not of this
        // host: only a raw socket could have forged it.
        let mut forged = cp.clone();
        let q = forged.receive_queue.as_mut().unwrap();
        q.datagrams[1].source.as_mut().unwrap().ip = vec![192, 0, 2, 1];
        let e = restore::restore(&forged).unwrap_err();
        assert_eq!(e.kind, crate::Kind::Refused, "{e}");
        assert!(e.to_string().contains("from 192.0.2.1:6000"), "{e}");
    })
}

#[test]
fn a_draining_dump_reads_what_a_peeking_one_does_and_empties_the_queue() {
    ns(|| {
        let a = udp("127.0.0.1:5000");
        let fd = a.as_fd();
        set(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 1);
        let b = udp("127.0.0.2:6000");
        set(b.as_fd(), libc::SOL_IP, libc::IP_TTL, 33);
        let c = udp("127.0.0.3:7000");
        b.send_to(b"one", "127.0.0.1:5000").unwrap();
        c.send_to(b"", "127.0.0.1:5000").unwrap();
        b.send_to(&[0xab; 1400], "127.0.0.1:5000").unwrap();
        c.send_to(b"", "127.0.0.1:5000").unwrap();
        wait_queued(fd, true);
        let peeked = dump::dump(fd).unwrap();
        let drain = DumpOptions {
            drain_receive_queue: true,
            ..Default::default()
        };
        let drained = dump::dump_with(fd, &drain).unwrap();
        // The same datagrams with the same metadata, and the application's
        // peek offset kept in the image and on the socket.
        let (p, d) = (
            peeked.receive_queue.clone().unwrap(),
            drained.receive_queue.clone().unwrap(),
        );
        assert_eq!(
            (d.count, d.bytes, d.rmem_alloc),
            (p.count, p.bytes, p.rmem_alloc)
        );
        assert!(d.datagrams == p.datagrams, "the drain read other datagrams");
        assert_eq!(drained.peek_offset, 1);
        assert_eq!(
            sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap(),
            1
        );
        // The original's queue is gone; the restore brings it back.
        assert!(recv_all(fd).is_empty(), "the drain left datagrams behind");
        drop(a);
        let r = trusted(&drained).unwrap();
        let got: Vec<Vec<u8>> = recv_all(r.as_fd()).into_iter().map(|d| d.0).collect();
        assert_eq!(got, vec![b"one".to_vec(), vec![], vec![0xab; 1400], vec![]]);
    })
}

/// A refusal found only after the drain (here: zero-length datagrams,
/// whose peek marks a kernel without the peek fix cannot tell): the queue
/// goes back, and the error says how.
#[test]
fn a_draining_dump_that_fails_puts_the_queue_back_and_says_so() {
    if peek::peek_walk_restarts() == Some(true) {
        eprintln!("not run: this kernel restarts peek walks, and vouches for a drained queue");
        return;
    }
    ns(|| {
        let a = udp("127.0.0.1:5000");
        let fd = a.as_fd();
        let b = udp("127.0.0.2:6000");
        for p in [&b"one"[..], b"", b"three"] {
            b.send_to(p, "127.0.0.1:5000").unwrap();
        }
        wait_queued(fd, true);
        let vouched = DumpOptions {
            drain_receive_queue: true,
            require_vouched: true,
            ..Default::default()
        };
        let e = dump::dump_with(fd, &vouched).unwrap_err();
        let why = e.to_string();
        assert!(why.contains("zero-length"), "{why}");
        assert!(
            why.contains("taken 3 datagram(s) out of the receive queue and put 3 back")
                && why.contains("verified: the queue now holds 3 datagram(s), these 3 last"),
            "{why}"
        );
        let back = recv_all(fd);
        assert_eq!(
            back.iter().map(|d| d.0.clone()).collect::<Vec<_>>(),
            vec![b"one".to_vec(), vec![], b"three".to_vec()]
        );
        assert!(back
            .iter()
            .all(|d| d.1 == "127.0.0.2:6000".parse().unwrap()));
    })
}

#[test]
fn a_failed_drain_of_a_connected_socket_names_what_it_cannot_put_back() {
    if peek::peek_walk_restarts() == Some(true) {
        eprintln!("not run: this kernel restarts peek walks, and vouches for a drained queue");
        return;
    }
    ns(|| {
        let a = udp("127.0.0.1:5000");
        let fd = a.as_fd();
        let b = udp("127.0.0.2:6000");
        let c = udp("127.0.0.3:7000");
        b.send_to(b"before", "127.0.0.1:5000").unwrap();
        wait_queued(fd, true);
        a.connect("127.0.0.3:7000").unwrap();
        c.send_to(b"", "127.0.0.1:5000").unwrap();
        c.send_to(b"after", "127.0.0.1:5000").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let vouched = DumpOptions {
            drain_receive_queue: true,
            require_vouched: true,
            ..Default::default()
        };
        let why = dump::dump_with(fd, &vouched).unwrap_err().to_string();
        assert!(
            why.contains("datagram(s) 0 came from sources other than the connected peer"),
            "{why}"
        );
        assert!(
            why.contains("verified: the queue now holds 2 datagram(s)"),
            "{why}"
        );
        let back: Vec<Vec<u8>> = recv_all(fd).into_iter().map(|d| d.0).collect();
        assert_eq!(back, vec![vec![], b"after".to_vec()]);
    })
}

/// Refusals the options decide come before the drain: a strict dump of a
/// socket with receive timestamps on leaves its queue in place, the
/// datagram a connected socket could not take back (queued before its
/// connect()) included, and says nothing was taken.
#[test]
fn a_strict_drain_refused_by_the_options_takes_nothing_out() {
    ns(|| {
        let a = udp("127.0.0.1:5011");
        let fd = a.as_fd();
        set(fd, libc::SOL_SOCKET, options::SO_TIMESTAMP_OLD, 1);
        let b = udp("127.0.0.2:6000");
        let c = udp("127.0.0.3:7000");
        b.send_to(b"before", "127.0.0.1:5011").unwrap();
        wait_queued(fd, true);
        a.connect("127.0.0.3:7000").unwrap();
        c.send_to(b"after", "127.0.0.1:5011").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let strict = DumpOptions {
            drain_receive_queue: true,
            refuse_metadata_loss: true,
            ..Default::default()
        };
        let why = dump::dump_with(fd, &strict).unwrap_err().to_string();
        assert!(why.contains("receive timestamps"), "{why}");
        assert!(!why.contains("put"), "nothing was taken out: {why}");
        let back: Vec<Vec<u8>> = recv_all(fd).into_iter().map(|d| d.0).collect();
        assert_eq!(back, vec![b"before".to_vec(), b"after".to_vec()]);
    })
}

/// A member of an SO_REUSEPORT group with others is not drained: a failed
/// dump's put-back would spread its queue among them.
#[test]
fn a_drain_of_a_reuseport_member_with_others_is_refused_before_it_drains() {
    ns(|| {
        let mk = || {
            let s = crate::inject::udp_socket(false, 17).unwrap();
            set(s.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1);
            rustix::net::bind(&s, &"127.0.0.1:5012".parse::<SocketAddr>().unwrap()).unwrap();
            s
        };
        let a = mk();
        let b = udp("127.0.0.2:6000");
        for p in [&b"one"[..], b"two"] {
            b.send_to(p, "127.0.0.1:5012").unwrap();
        }
        wait_queued(a.as_fd(), true);
        let drain = DumpOptions {
            drain_receive_queue: true,
            ..Default::default()
        };
        // Alone in its group: drained.
        let cp = dump::dump_with(a.as_fd(), &drain).unwrap();
        assert_eq!(payloads(&cp), vec![b"one".to_vec(), b"two".to_vec()]);
        let worker = mk();
        b.send_to(b"three", "127.0.0.1:5012").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        // One source, one hash: the group gave it to one member.
        let (holder, other) = if peek::meminfo(a.as_fd()).unwrap().0 > 0 {
            (a.as_fd(), worker.as_fd())
        } else {
            (worker.as_fd(), a.as_fd())
        };
        let why = dump::dump_with(holder, &drain).unwrap_err().to_string();
        assert!(why.contains("also bound by 1 other socket"), "{why}");
        assert_eq!(recv_all(holder).len(), 1, "the queue stays in place");
        assert!(recv_all(other).is_empty());
    })
}

/// A queue longer than the full check's limit whose last datagram follows
/// a zero-length one at the same byte offset: the single peek of the long
/// check would find the empty one, and refused the restore.
#[test]
fn long_queue_with_an_empty_datagram_before_the_last_restores() {
    ns(|| {
        let a = udp("127.0.0.1:5006");
        let b = udp("127.0.0.1:0");
        for i in 0..70u8 {
            b.send_to(&[i], "127.0.0.1:5006").unwrap();
        }
        wait_queued(a.as_fd(), true);
        let mut cp = dump::dump(a.as_fd()).unwrap();
        assert_eq!(payloads(&cp).len(), 70);
        let q = cp.receive_queue.as_mut().unwrap();
        q.datagrams[68].payload = Default::default();
        q.bytes -= 1;
        drop(a);
        let fd = trusted(&cp).unwrap_or_else(|e| panic!("restore: {e}"));
        let got: Vec<Vec<u8>> = recv_all(fd.as_fd()).into_iter().map(|(p, _)| p).collect();
        assert_eq!(got, payloads(&cp));
    });
}

/// An IPv6 datagram too large for one packet over loopback (40 + 8 +
/// 65 527 bytes against an MTU of 65 536) reached the socket in fragments;
/// a raw socket cannot send it (EMSGSIZE), and the restore failed on it.
#[test]
fn ipv6_datagram_larger_than_loopbacks_mtu_round_trips() {
    ns(|| {
        let a = udp("[::1]:5007");
        let b = udp("[::1]:0");
        let big = vec![7u8; 65_527];
        b.send_to(&[1], "[::1]:5007").unwrap();
        b.send_to(&big, "[::1]:5007").unwrap();
        b.send_to(&[2], "[::1]:5007").unwrap();
        wait_queued(a.as_fd(), true);
        let cp = dump::dump(a.as_fd()).unwrap();
        assert_eq!(payloads(&cp), vec![vec![1], big.clone(), vec![2]]);
        // The large one is sent from a raw socket that fragments, with no
        // port bound: the sender, still here (a failed dump's put-back, or
        // a socket that sent itself datagrams), holding its source port,
        // is no obstacle.
        let from = b.local_addr().unwrap();
        drop(a);
        let fd = trusted(&cp).unwrap_or_else(|e| panic!("restore: {e}"));
        let got = recv_all(fd.as_fd());
        assert_eq!(
            got,
            vec![(vec![1], from), (big, from), (vec![2], from)],
            "payloads and sources in order"
        );
        drop(b);
    });
}

/// Addresses of 127.0.0.0/8 other than 127.0.0.1, bound or as the
/// destination a wildcard socket recorded: the route's preferred source is
/// 127.0.0.1, and the restore took them for addresses off the machine.
#[test]
fn loopback_addresses_other_than_127_0_0_1_round_trip() {
    ns(|| {
        let b = udp("127.0.0.1:0");
        let from = b.local_addr().unwrap();
        for (bind, to) in [
            ("127.0.0.53:5008", "127.0.0.53:5008"),
            ("0.0.0.0:5009", "127.0.0.5:5009"),
        ] {
            let a = udp(bind);
            set(a.as_fd(), libc::SOL_IP, libc::IP_PKTINFO, 1);
            b.send_to(b"one", to).unwrap();
            b.send_to(b"two", to).unwrap();
            wait_queued(a.as_fd(), true);
            let cp = dump::dump(a.as_fd()).unwrap();
            drop(a);
            let fd = trusted(&cp).unwrap_or_else(|e| panic!("restore of {bind}: {e}"));
            let got = recv_all(fd.as_fd());
            assert_eq!(
                got,
                vec![(b"one".to_vec(), from), (b"two".to_vec(), from)],
                "{bind}"
            );
        }
    });
}

/// A queue larger than the SO_RCVBUF the application set after it filled:
/// the draining dump must not take it for traffic that keeps coming, and
/// putting it back (after an image that could not be kept) must not lose
/// it to the lowered buffer, nor call a lossy put-back verified.
#[test]
fn put_back_of_a_queue_larger_than_its_lowered_receive_buffer() {
    ns(|| {
        let a = udp("127.0.0.1:5010");
        let b = udp("127.0.0.1:0");
        set(a.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 4 << 20);
        let n = 3000u32;
        for i in 0..n {
            b.send_to(&i.to_be_bytes(), "127.0.0.1:5010").unwrap();
        }
        wait_queued(a.as_fd(), true);
        set(a.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 2048);
        let rcvbuf = sys::getsockopt_int(a.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap();
        let cp = dump_original(a.as_fd(), true, DumpOptions::default());
        assert_eq!(payloads(&cp).len(), n as usize);
        let what = dump::put_back_receive_queue(a.as_fd(), &cp);
        assert!(!what.contains("NOT") && !what.contains("lost"), "{what}");
        assert_eq!(
            sys::getsockopt_int(a.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap(),
            rcvbuf,
            "SO_RCVBUF set back: {what}"
        );
        let got: Vec<Vec<u8>> = recv_all(a.as_fd()).into_iter().map(|(p, _)| p).collect();
        assert_eq!(got, payloads(&cp), "{what}");
    });
}

fn reuseaddr(addr: &str) -> OwnedFd {
    let a: SocketAddr = addr.parse().unwrap();
    let s = crate::inject::udp_socket(a.is_ipv6(), 17).unwrap();
    set(s.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    rustix::net::bind(&s, &a).unwrap();
    s
}

/// A failed drain run from another network namespace than the socket's
/// puts the queue back into the socket's: from the caller's, it went to
/// whatever socket held that port there.
#[test]
fn a_failed_drain_from_another_namespace_puts_back_into_the_sockets_own() {
    if peek::peek_walk_restarts() == Some(true) {
        eprintln!("not run: this kernel restarts peek walks, and vouches for a drained queue");
        return;
    }
    ns(|| {
        let a = udp("127.0.0.1:5015");
        let b = udp("127.0.0.2:6000");
        for p in [&b"one"[..], b"", b"three"] {
            b.send_to(p, "127.0.0.1:5015").unwrap();
        }
        wait_queued(a.as_fd(), true);
        let vouched = DumpOptions {
            drain_receive_queue: true,
            require_vouched: true,
            ..Default::default()
        };
        // The dump, from a second namespace with its own socket on the
        // same address and port.
        let (why, stolen) = ns(|| {
            let decoy = udp("127.0.0.1:5015");
            decoy.set_nonblocking(true).unwrap();
            let why = dump::dump_with(a.as_fd(), &vouched)
                .unwrap_err()
                .to_string();
            std::thread::sleep(std::time::Duration::from_millis(20));
            (why, recv_all(decoy.as_fd()).len())
        });
        assert!(
            why.contains("put 3 back") && why.contains("verified"),
            "{why}"
        );
        assert_eq!(stolen, 0, "the put-back reached the other namespace: {why}");
        let back: Vec<Vec<u8>> = recv_all(a.as_fd()).into_iter().map(|d| d.0).collect();
        assert_eq!(back, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
    })
}

/// A socket that shares its port (SO_REUSEADDR) with another bound to a
/// more specific address is not drained (the put-back would reach the
/// other), and its image is not restored while such a socket is there
/// (re-created datagrams would reach it): refused before anything is sent.
#[test]
fn a_port_shared_with_another_socket_is_neither_drained_nor_restored_into() {
    ns(|| {
        let a = reuseaddr("0.0.0.0:5016");
        let b = udp("127.0.0.2:6000");
        b.send_to(b"one", "127.0.0.1:5016").unwrap();
        wait_queued(a.as_fd(), true);
        let drain = DumpOptions {
            drain_receive_queue: true,
            ..Default::default()
        };
        let other = reuseaddr("127.0.0.1:5016");
        // SO_REUSEADDR cleared after the bind that needed it: the other
        // socket is there all the same.
        set(a.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 0);
        let why = dump::dump_with(a.as_fd(), &drain).unwrap_err().to_string();
        assert!(
            why.contains("also bound by 1 other socket") && why.contains("127.0.0.1:5016"),
            "{why}"
        );
        assert_eq!(recv_all(a.as_fd()).len(), 1, "the queue stays in place");
        // The peek walk's image, restored while the other socket is there
        // (a datagram to 127.0.0.2, which only the wildcard socket takes).
        b.send_to(b"one", "127.0.0.2:5016").unwrap();
        wait_queued(a.as_fd(), true);
        let mut cp = dump::dump(a.as_fd()).unwrap();
        assert_eq!(payloads(&cp), vec![b"one".to_vec()]);
        drop(a);
        // The image's SO_REUSEADDR, set again for the restore's bind.
        for o in &mut cp.options {
            if (o.level, o.name) == (libc::SOL_SOCKET, libc::SO_REUSEADDR) {
                o.value = Some(v1::sock_opt::Value::Int(1));
            }
        }
        let e = trusted(&cp).unwrap_err().to_string();
        assert!(e.contains("also bound by 1 other socket"), "{e}");
        assert!(
            recv_all(other.as_fd()).is_empty(),
            "a datagram reached the other socket"
        );
    })
}

/// An IPV6_V6ONLY socket receives no IPv4 datagram: an image that says it
/// did is refused (its IPv4 datagram would reach an IPv4 socket here).
#[test]
fn a_v6only_image_with_an_ipv4_datagram_is_refused() {
    ns(|| {
        let a = crate::inject::udp_socket(true, 17).unwrap();
        set(a.as_fd(), libc::SOL_IPV6, libc::IPV6_V6ONLY, 1);
        rustix::net::bind(&a, &"[::]:5017".parse::<SocketAddr>().unwrap()).unwrap();
        let b = udp("[::1]:0");
        b.send_to(b"v6", "[::1]:5017").unwrap();
        wait_queued(a.as_fd(), true);
        let mut cp = dump::dump(a.as_fd()).unwrap();
        drop(a);
        let d = &mut cp.receive_queue.as_mut().unwrap().datagrams[0];
        let s = d.source.as_mut().unwrap();
        s.ip = vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];
        if let Some(dst) = d.destination.as_mut() {
            dst.ip = s.ip.clone();
        }
        let v4 = udp("127.0.0.1:5017");
        v4.set_nonblocking(true).unwrap();
        let e = trusted(&cp).unwrap_err().to_string();
        assert!(e.contains("IPV6_V6ONLY"), "{e}");
        assert!(recv_all(v4.as_fd()).is_empty());
    })
}

/// A socket bound to a broadcast address (the loopback's, 127.255.255.255)
/// is not drained: nothing could put its datagrams back, nor restore them
/// (inject() refuses to send to an address that is not a local unicast
/// one).
#[test]
fn a_socket_bound_to_a_broadcast_address_is_not_drained() {
    ns(|| {
        let a = udp("127.255.255.255:5018");
        let drain = DumpOptions {
            drain_receive_queue: true,
            ..Default::default()
        };
        // An empty queue is not refused: there is nothing to lose.
        assert!(dump::dump_with(a.as_fd(), &drain).is_ok());
        let b = udp("127.0.0.1:0");
        b.set_broadcast(true).unwrap();
        b.send_to(b"b", "127.255.255.255:5018").unwrap();
        wait_queued(a.as_fd(), true);
        let why = dump::dump_with(a.as_fd(), &drain).unwrap_err().to_string();
        assert!(why.contains("not a unicast address of this host"), "{why}");
        // The peek walk's image says its queue cannot be re-created; the
        // restore refuses it, or drops it by name under accept_rx_loss.
        let cp = dump::dump(a.as_fd()).unwrap();
        assert!(
            cp.dropped_state
                .iter()
                .any(|d| d.contains("cannot be re-created")),
            "{:?}",
            cp.dropped_state
        );
        assert_eq!(recv_all(a.as_fd()).len(), 1, "the queue stays in place");
        drop(a);
        let e = trusted(&cp).unwrap_err().to_string();
        assert!(e.contains("not a local unicast address"), "{e}");
        let (fd, report) = restore::restore_with(
            &cp,
            &RestoreOptions {
                accept_rx_loss: true,
                ..trusted_opts()
            },
        )
        .unwrap();
        assert_eq!(report.lost.len(), 1);
        assert!(recv_all(fd.as_fd()).is_empty());
    })
}

/// A namespace whose loopback is down: a failed drain's put-back could
/// deliver nothing, so the drain is refused first.
#[test]
fn a_drain_is_refused_where_the_loopback_is_down() {
    ns(|| {
        let a = udp("127.0.0.1:5019");
        let b = udp("127.0.0.1:0");
        b.send_to(b"one", "127.0.0.1:5019").unwrap();
        wait_queued(a.as_fd(), true);
        let down = std::process::Command::new("ip")
            .args(["link", "set", "lo", "down"])
            .status()
            .unwrap();
        assert!(down.success());
        let drain = DumpOptions {
            drain_receive_queue: true,
            ..Default::default()
        };
        let why = dump::dump_with(a.as_fd(), &drain).unwrap_err().to_string();
        assert!(
            why.contains("loopback (lo)") && why.contains("is down"),
            "{why}"
        );
        assert_eq!(recv_all(a.as_fd()).len(), 1, "the queue stays in place");
    })
}

/// A dump from another network namespace judges the bound address local
/// where the socket is: 10.77.0.1, an address of its namespace only, is
/// not taken for a multicast or broadcast one.
#[test]
fn a_dump_from_another_namespace_judges_addresses_in_the_sockets() {
    ns(|| {
        let add = std::process::Command::new("ip")
            .args(["addr", "add", "10.77.0.1/32", "dev", "lo"])
            .status()
            .unwrap();
        assert!(add.success());
        let a = udp("10.77.0.1:5020");
        let b = udp("10.77.0.1:0");
        b.send_to(b"one", "10.77.0.1:5020").unwrap();
        wait_queued(a.as_fd(), true);
        let strict = DumpOptions {
            refuse_metadata_loss: true,
            require_vouched: false,
            ..Default::default()
        };
        let cp = ns(|| dump::dump_with(a.as_fd(), &strict))
            .unwrap_or_else(|e| panic!("the dump from another namespace: {e}"));
        assert!(
            !cp.dropped_state.iter().any(|d| d.contains("re-created")),
            "{:?}",
            cp.dropped_state
        );
        assert_eq!(payloads(&cp), vec![b"one".to_vec()]);
    })
}
