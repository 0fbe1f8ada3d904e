//! A datagram keeps the interface it arrived on: a wildcard IPv6 server
//! holding a datagram from a link-local peer on a veth, and an IPv4 one
//! that arrived on the veth, restore with the same source scope and
//! IP_PKTINFO/IPV6_PKTINFO interface; an image naming an interface the
//! host does not have is refused by name. In its own test binary, its
//! tests one at a time (`common::serial`): they run `ip`, and a fork while
//! another test runs would hold that test's sockets open.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use udp_repair_engine::inject::Strategy;
use udp_repair_engine::restore::{self, RestoreOptions};
use udp_repair_engine::{dump, netns, sys, wire};

mod common;
use common::{run, serial};

/// The IPv6 address `ip`, port `port`, on interface index `scope`.
fn scoped(ip: &str, port: u16, scope: u32) -> SocketAddr {
    SocketAddr::V6(std::net::SocketAddrV6::new(
        ip.parse().unwrap(),
        port,
        0,
        scope,
    ))
}

/// A veth pair in the current namespace, both ends up: urv0 with fe80::1
/// and 10.9.0.1/24, urv1 with fe80::2.
fn veth_pair() {
    run("ip link add urv0 type veth peer name urv1");
    run("ip link set urv0 up");
    run("ip link set urv1 up");
    run("ip -6 addr add fe80::1/64 dev urv0 nodad");
    run("ip -6 addr add fe80::2/64 dev urv1 nodad");
    run("ip addr add 10.9.0.1/24 dev urv0");
}

/// (source, arrival interface) of the next datagram, peeked.
fn seen(fd: BorrowedFd<'_>, flags: i32) -> (SocketAddr, u32) {
    let mut buf = [0u8; 64];
    let mut name = [0u8; 128];
    let mut control = [0u8; 256];
    let o = sys::recvmsg_bytes(fd, &mut buf, &mut name, &mut control, flags).unwrap();
    let src = wire::parse_sockaddr(&name[..o.name_len]).unwrap();
    let mut ifindex = 0;
    for c in wire::cmsgs(&control[..o.control_len]) {
        match (c.level, c.kind) {
            (libc::SOL_IPV6, libc::IPV6_PKTINFO) => {
                ifindex = u32::from_ne_bytes(c.data[16..20].try_into().unwrap())
            }
            (libc::SOL_IP, libc::IP_PKTINFO) => {
                ifindex = u32::from_ne_bytes(c.data[0..4].try_into().unwrap())
            }
            _ => {}
        }
    }
    (src, ifindex)
}

/// The original socket's dump: by peek walk, or on the fast path
/// (`drain`), which must leave it empty.
fn dump_original(fd: BorrowedFd<'_>, drain: bool) -> udp_repair_proto::v1::Checkpoint {
    let opts = dump::DumpOptions {
        drain_receive_queue: drain,
        ..Default::default()
    };
    let cp = dump::dump_with(fd, &opts).unwrap_or_else(|e| panic!("dump (drain: {drain}): {e}"));
    if drain {
        let mut b = [0u8; 8];
        let left = rustix::net::recv(fd, &mut b, rustix::net::RecvFlags::DONTWAIT);
        assert_eq!(
            left.err(),
            Some(rustix::io::Errno::AGAIN),
            "the drain left a datagram"
        );
    }
    cp
}

fn datagrams_keep_their_arrival_interface(drain: bool) {
    let _serial = serial();
    netns::in_new_netns(|| {
        veth_pair();
        let urv0 =
            rustix::net::netdevice::name_to_index(UdpSocket::bind("0.0.0.0:0").unwrap(), "urv0")
                .unwrap();

        // IPv6: a wildcard server, a datagram from fe80::2 to fe80::1%urv0.
        let r6 = UdpSocket::bind("[::]:5200").unwrap();
        sys::setsockopt_int(r6.as_fd(), libc::SOL_IPV6, libc::IPV6_RECVPKTINFO, 1).unwrap();
        // IPv4: a wildcard server, a datagram sent out of urv0 to its address.
        let r4 = UdpSocket::bind("0.0.0.0:5201").unwrap();
        sys::setsockopt_int(r4.as_fd(), libc::SOL_IP, libc::IP_PKTINFO, 1).unwrap();
        let urv1 = rustix::net::netdevice::name_to_index(r4.as_fd(), "urv1").unwrap();
        let s6 = UdpSocket::bind(scoped("fe80::2", 0, urv1)).unwrap();
        s6.send_to(b"ll", scoped("fe80::1", 5200, urv0)).unwrap();
        let s4 = UdpSocket::bind("0.0.0.0:0").unwrap();
        sys::setsockopt_bytes(s4.as_fd(), libc::SOL_SOCKET, libc::SO_BINDTODEVICE, b"urv0")
            .unwrap();
        s4.send_to(b"v4", "10.9.0.1:5201").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let want6 = seen(r6.as_fd(), libc::MSG_PEEK);
        let want4 = seen(r4.as_fd(), libc::MSG_PEEK);
        assert_eq!(want6.1, urv0, "the original arrived on urv0: {want6:?}");

        let c6 = dump_original(r6.as_fd(), drain);
        let c4 = dump_original(r4.as_fd(), drain);
        let d6 = &c6.receive_queue.as_ref().unwrap().datagrams[0];
        assert_eq!(d6.ifname, "urv0");
        drop((r6, r4, s6, s4));

        for strategy in [Strategy::Raw, Strategy::Transparent] {
            let o = RestoreOptions {
                strategy,
                ..Default::default()
            };
            let (n6, _) =
                restore::restore_with(&c6, &o).unwrap_or_else(|e| panic!("{strategy:?}: {e}"));
            assert_eq!(seen(n6.as_fd(), 0), want6, "IPv6, {strategy:?}");
            let (n4, _) =
                restore::restore_with(&c4, &o).unwrap_or_else(|e| panic!("{strategy:?}: {e}"));
            assert_eq!(seen(n4.as_fd(), 0), want4, "IPv4, {strategy:?}");
        }

        // A socket bound to the link-local address itself: its scope is
        // the interface's, by name.
        let ll = scoped("fe80::1", 5202, urv0);
        let b = UdpSocket::bind(ll).unwrap();
        let peer = UdpSocket::bind(scoped("fe80::2", 0, urv1)).unwrap();
        peer.send_to(b"to ll", ll).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let want_b = seen(b.as_fd(), libc::MSG_PEEK);
        let cb = dump_original(b.as_fd(), drain);
        assert_eq!(cb.bound_ifname, "urv0");
        drop((b, peer));
        let nb = restore::restore(&cb).unwrap();
        assert_eq!(
            SocketAddr::try_from(rustix::net::getsockname(&nb).unwrap()).unwrap(),
            ll
        );
        assert_eq!(seen(nb.as_fd(), 0).0, want_b.0, "its datagram's source");
        drop(nb);
        let mut gone_b = cb.clone();
        gone_b.bound_ifname = "nosuch0".into();
        let e = restore::restore(&gone_b).unwrap_err();
        assert!(e.to_string().contains("interface nosuch0"), "{e}");

        // A datagram that arrived on urv0 for an address of another
        // interface (the weak host model): sent bound to urv0 it would be
        // routed out of urv0, so it is refused, and --accept-rx-loss drops
        // it rather than send it.
        run("ip addr add 10.9.1.1/24 dev urv1");
        let mut weak = c4.clone();
        {
            let d = &mut weak.receive_queue.as_mut().unwrap().datagrams[0];
            d.destination.as_mut().unwrap().ip = vec![10, 9, 1, 1];
            assert_eq!(d.ifname, "urv0");
        }
        let e = restore::restore(&weak).unwrap_err();
        assert!(e.to_string().contains("not an address of urv0"), "{e}");
        let (_, report) = restore::restore_with(
            &weak,
            &RestoreOptions {
                accept_rx_loss: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((report.restored, report.lost.len()), (0, 1));

        // On a host without the interface, refused by name.
        let mut gone = c6.clone();
        gone.receive_queue.as_mut().unwrap().datagrams[0].ifname = "nosuch0".into();
        let e = restore::restore(&gone).unwrap_err();
        assert_eq!(e.kind, udp_repair_engine::Kind::Refused, "{e}");
        assert!(e.to_string().contains("interface nosuch0"), "{e}");
    })
    .expect("a private network namespace (tests run as root)");
}

#[test]
fn datagrams_keep_their_arrival_interface_by_peek() {
    datagrams_keep_their_arrival_interface(false)
}

/// The same case on the fast path: the original's queue drained.
#[test]
fn datagrams_keep_their_arrival_interface_by_drain() {
    datagrams_keep_their_arrival_interface(true)
}

/// A datagram that arrived on an interface addressed to what is not an
/// address of this host (a broadcast) comes back through the loopback,
/// addressed to it: the image names that, and the restore delivers it
/// rather than refuse it. One from a link-local source cannot keep its
/// scope that way: refused with the reason, dropped under
/// --accept-rx-loss.
#[test]
fn a_broadcast_on_an_interface_comes_back_through_the_loopback() {
    let _serial = serial();
    netns::in_new_netns(|| {
        veth_pair();
        run("ip addr add 10.9.0.2/24 dev urv1");

        let r4 = UdpSocket::bind("0.0.0.0:5203").unwrap();
        sys::setsockopt_int(r4.as_fd(), libc::SOL_IP, libc::IP_PKTINFO, 1).unwrap();
        let s4 = UdpSocket::bind("10.9.0.2:0").unwrap();
        s4.set_broadcast(true).unwrap();
        sys::setsockopt_bytes(s4.as_fd(), libc::SOL_SOCKET, libc::SO_BINDTODEVICE, b"urv1")
            .unwrap();
        s4.send_to(b"all", "10.9.0.255:5203").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let want = seen(r4.as_fd(), libc::MSG_PEEK);
        assert_eq!(want.0, s4.local_addr().unwrap());
        let c4 = dump::dump(r4.as_fd()).unwrap();
        let named = c4.dropped_state.join("\n");
        assert!(
            named.contains("10.9.0.255") && named.contains("arriving on the loopback interface"),
            "{named}"
        );
        drop((r4, s4));
        for strategy in [Strategy::Raw, Strategy::Transparent] {
            let o = RestoreOptions {
                strategy,
                ..Default::default()
            };
            let (n4, report) =
                restore::restore_with(&c4, &o).unwrap_or_else(|e| panic!("{strategy:?}: {e}"));
            assert_eq!((report.restored, report.lost.len()), (1, 0), "{strategy:?}");
            // The same source; the loopback's index (1) as its interface.
            assert_eq!(seen(n4.as_fd(), 0), (want.0, 1), "{strategy:?}");
        }

        // IPv6 all-nodes multicast from fe80::2%urv1.
        let r6 = UdpSocket::bind("[::]:5204").unwrap();
        sys::setsockopt_int(r6.as_fd(), libc::SOL_IPV6, libc::IPV6_RECVPKTINFO, 1).unwrap();
        let urv1 = rustix::net::netdevice::name_to_index(r6.as_fd(), "urv1").unwrap();
        let s6 = UdpSocket::bind(scoped("fe80::2", 0, urv1)).unwrap();
        s6.send_to(b"ll", scoped("ff02::1", 5204, urv1)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let c6 = dump::dump(r6.as_fd()).unwrap();
        let queued = c6.receive_queue.as_ref().unwrap().datagrams.len();
        assert!(queued >= 1, "the multicast datagram was queued");
        drop((r6, s6));
        let e = restore::restore(&c6).unwrap_err();
        assert!(e.to_string().contains("link-local source"), "{e}");
        let (_, report) = restore::restore_with(
            &c6,
            &RestoreOptions {
                accept_rx_loss: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((report.restored, report.lost.len()), (0, queued));
    })
    .expect("a private network namespace (tests run as root)");
}
