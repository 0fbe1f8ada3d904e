//! Datagrams a slow qdisc still holds are not called a pending datagram.
//! In its own test binary: it runs `ip` and `tc`, and a fork while other
//! tests run would hold copies of their sockets (and their ports) until
//! the exec.

use std::net::UdpSocket;
use std::os::fd::AsFd;
use udp_repair_engine::dump::{self, DumpOptions};
use udp_repair_engine::{netns, sys};

mod common;
use common::{run, serial};

/// Datagrams a slow qdisc still holds keep SIOCOUTQ non-zero with nothing
/// corked. Without a reader the kernel cannot tell them from a pending
/// datagram, and the dump says both, rather than "data is pending"; with
/// the drop option the image does not claim that anything was dropped.
#[test]
fn bytes_in_flight_are_not_called_a_pending_datagram() {
    let _serial = serial();
    netns::in_new_netns(|| {
        run("ip link add urv0 type veth peer name urv1");
        run("ip addr add 10.77.0.1/24 dev urv0");
        run("ip link set urv0 up");
        run("ip link set urv1 up");
        run("tc qdisc add dev urv0 root tbf rate 8kbit burst 1600 latency 30s");
        run("ip neigh add 10.77.0.2 lladdr 02:00:00:00:00:02 dev urv0 nud permanent");
        let a = UdpSocket::bind("10.77.0.1:0").unwrap();
        for _ in 0..12 {
            a.send_to(&[0u8; 1000], "10.77.0.2:9").unwrap();
        }
        assert!(sys::outq(a.as_fd()).unwrap() > 0);
        let no_reader = DumpOptions {
            readers: Vec::new(),
            ..Default::default()
        };
        let e = dump::dump_with(a.as_fd(), &no_reader).unwrap_err();
        assert_eq!(e.kind, udp_repair_engine::Kind::Refused, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("in flight") && msg.contains("UDP_CORK is off"),
            "{msg}"
        );
        let cp = dump::dump_with(
            a.as_fd(),
            &DumpOptions {
                drop_pending: true,
                ..no_reader
            },
        )
        .unwrap();
        let sq = cp.send_queue.unwrap();
        assert!(
            sq.dropped && sq.note.contains("if there was one"),
            "{}",
            sq.note
        );
    })
    .expect("a private network namespace (tests run as root)");
}
