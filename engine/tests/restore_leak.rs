//! A failed restore leaves nothing behind: no fd, no bound port. In its own
//! test binary with a single test, so that the process's fd count is not
//! disturbed by other tests running in parallel.

use std::net::UdpSocket;
use std::os::fd::AsFd;
use udp_repair_engine::{dump, netns, restore};
use udp_repair_proto::v1;

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn restore_failure_leaves_nothing_behind() {
    netns::in_new_netns(|| {
        let a = UdpSocket::bind("127.0.0.1:5005").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.send_to(b"q", "127.0.0.1:5005").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let cp = dump::dump(a.as_fd()).unwrap();
        assert_eq!(cp.receive_queue.as_ref().unwrap().count, 1);
        let fds = fd_count();
        // An option the dump never saves: refused before socket().
        let mut foreign = cp.clone();
        foreign.options.push(v1::SockOpt {
            level: libc::SOL_SOCKET,
            name: libc::SO_DEBUG,
            value: Some(v1::sock_opt::Value::Int(1)),
        });
        let e = restore::restore(&foreign).unwrap_err();
        assert_eq!(e.step, "validating the socket options", "{e}");
        assert_eq!(fd_count(), fds, "no socket was created");
        // The original still holds the port: bind fails, early.
        let e = restore::restore(&cp).unwrap_err();
        assert!(e.step.starts_with("bind(127.0.0.1:5005)"), "{e}");
        assert_eq!(e.error.kind(), std::io::ErrorKind::AddrInUse);
        assert_eq!(fd_count(), fds, "the new socket was closed");
        drop(a);
        let fds = fd_count();
        // A failure late, after the receive queue was re-created (raw
        // sockets, barrier sockets opened): an invalid filter.
        let mut bad = cp.clone();
        bad.filter = Some(v1::Filter {
            insns: vec![0xffff],
            locked: false,
        });
        let e = restore::restore(&bad).unwrap_err();
        assert_eq!(e.step, "SO_ATTACH_FILTER", "{e}");
        assert_eq!(
            fd_count(),
            fds,
            "every socket of the failed restore was closed"
        );
        // Nothing holds the port any more.
        drop(UdpSocket::bind("127.0.0.1:5005").unwrap());
        // And the good checkpoint still restores, with its datagram.
        let r = restore::restore(&cp).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            rustix::net::recv(r.as_fd(), &mut buf, rustix::net::RecvFlags::DONTWAIT)
                .unwrap()
                .0,
            1
        );
    })
    .expect("a private network namespace (tests run as root)");
}
