//! Running code in a private network namespace: tests, the benchmark and the
//! kernel-behaviour probe send traffic only on the loopback of a namespace
//! they created, never on the host's.

use crate::sys;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

/// Runs `f` on a new thread moved into a new network namespace whose `lo`
/// is up, and returns its result. Needs CAP_SYS_ADMIN (tests run as root).
/// The namespace disappears when the thread ends and `f`'s sockets close.
pub fn in_new_netns<T: Send>(f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            sys::unshare_netns()?;
            let s = std::net::UdpSocket::bind("0.0.0.0:0")
                .or_else(|_| std::net::UdpSocket::bind("[::]:0"))?;
            sys::set_interface_up(s.as_fd(), "lo")?;
            drop(s);
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Runs `f` in the network namespace of socket `fd`, where what it sends
/// and binds must happen (a tool may dump a socket of another namespace):
/// on the calling thread when that is the caller's own namespace, else on
/// a new thread moved into it (`SIOCGSKNS`, `setns(CLONE_NEWNET)`), which
/// inherits the caller's signal mask.
///
/// # Errors
/// `f`'s, or the namespace's: `SIOCGSKNS` (`EPERM` without
/// `CAP_NET_ADMIN` over the socket's namespace: which namespace it is
/// cannot be known then, and `f` does not run), `setns`.
pub fn in_netns_of<T: Send>(
    fd: BorrowedFd<'_>,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    let ns = sys::socket_netns(fd).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "naming the socket's network namespace (SIOCGSKNS: {e}; needs CAP_NET_ADMIN over \
                 it)"
            ),
        )
    })?;
    // The caller's own (the usual case) without a thread; where /proc is
    // not mounted, the thread enters it all the same.
    let theirs = rustix::fs::fstat(&ns)?;
    if rustix::fs::stat("/proc/thread-self/ns/net")
        .is_ok_and(|ours| (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino))
    {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(|| -> io::Result<T> {
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!(
                        "entering the socket's network namespace (setns: {e}; needs \
                         CAP_SYS_ADMIN)"
                    ),
                )
            })?;
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Another UDP socket on a port, as `/proc/thread-self/net/udp{,6}` list
/// it (udp4_format_sock(), udp6_sock_seq_show()), with what sock_diag adds
/// ([`crate::diag::Binding`], `None` where the kernel has no udp_diag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Other {
    /// Its local address and port.
    pub local: std::net::SocketAddr,
    /// Its peer, if connected.
    pub remote: Option<std::net::SocketAddr>,
    /// Its device and IPV6_V6ONLY, if sock_diag told.
    pub binding: Option<crate::diag::Binding>,
}

/// The other UDP (`udplite`: UDP-Lite) sockets bound to `port` in the
/// calling thread's network namespace, of either family (an IPv6 socket
/// without IPV6_V6ONLY takes IPv4 datagrams too); the socket of inode
/// `own` is left out. A table that is not there (no IPv6, no UDP-Lite)
/// lists none.
///
/// # Errors
/// Reading the tables, or sock_diag's netlink socket.
pub fn others_on_port(port: u16, udplite: bool, own: u64) -> io::Result<Vec<Other>> {
    let mut out = Vec::new();
    let tables: [&str; 2] = if udplite {
        ["udplite", "udplite6"]
    } else {
        ["udp", "udp6"]
    };
    let mut inodes = Vec::new();
    for table in tables {
        let text = match std::fs::read_to_string(format!("/proc/thread-self/net/{table}")) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(inode)) = (f.get(1), f.get(2), f.get(9)) else {
                continue;
            };
            let inode = inode.parse::<u64>().ok();
            let Some(local) = parse_proc_sockaddr(local) else {
                continue;
            };
            if local.port() != port || inode == Some(own) {
                continue;
            }
            let remote = parse_proc_sockaddr(remote).filter(|r| r.port() != 0);
            out.push(Other {
                local,
                remote,
                binding: None,
            });
            inodes.push(inode);
        }
    }
    if !out.is_empty() {
        if let Some(b) = crate::diag::bindings(udplite)? {
            for (o, ino) in out.iter_mut().zip(inodes) {
                o.binding = ino.and_then(|i| b.get(&i).copied());
            }
        }
    }
    Ok(out)
}

/// `ADDR:PORT` as /proc/net/udp{,6} print them.
fn parse_proc_sockaddr(s: &str) -> Option<std::net::SocketAddr> {
    let (addr, p) = s.split_once(':')?;
    Some(std::net::SocketAddr::new(
        parse_proc_addr(addr)?,
        u16::from_str_radix(p, 16).ok()?,
    ))
}

/// The socket a put-back or a re-creation sends to, as [`could_take`]
/// weighs it.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its bound address.
    pub bound: std::net::SocketAddr,
    /// IPV6_V6ONLY.
    pub v6only: bool,
    /// Its peer, if connected: only datagrams from it are sent.
    pub peer: Option<std::net::SocketAddr>,
    /// The index of the device it is bound to, 0 for none.
    pub device: u32,
}

/// The local addresses of the other sockets on `t`'s port, in the calling
/// thread's network namespace, that could take a datagram sent to `t`
/// ([`others_on_port`] weighed by [`could_take`]); `own` is `t`'s inode.
///
/// # Errors
/// As [`others_on_port`].
pub fn takers(t: &Target, udplite: bool, own: u64) -> io::Result<Vec<std::net::SocketAddr>> {
    Ok(others_on_port(t.bound.port(), udplite, own)?
        .into_iter()
        .filter(|o| could_take(t, o))
        .map(|o| o.local)
        .collect())
}

/// Whether `other` (on the same port) could be handed a datagram that a
/// re-creation or a put-back sends to `t`'s port: one to `t`'s address,
/// or to any local address when `t` is a wildcard; IPv4 ones too when `t`
/// is v4-mapped or `[::]` without IPV6_V6ONLY. As the kernel's lookup
/// goes (__udp4_lib_lookup(), __udp6_lib_lookup(), compute_score()):
/// - `other`'s address must be that destination or a wildcard of the
///   datagram's family (an IPV6_V6ONLY `[::]` takes no IPv4);
/// - the exact address's slot is searched before the wildcard's, so a
///   wildcard never takes what is sent to an exact `t`;
/// - a socket bound to another device than `t`'s never matches
///   (udp_sk_bound_dev_eq()): a device-bound `t` is sent only what
///   arrived on its device;
/// - a connected `t` is sent only its peer's datagrams, which go to it
///   ahead of any socket not connected to that peer;
/// - a connected `other` takes only its own peer's datagrams: where the
///   kernel now delivers that peer's traffic, and a re-creation's check or
///   a put-back's verification names any that went there; not counted.
///
/// What sock_diag did not tell (no udp_diag) counts against: a device
/// binding, IPV6_V6ONLY off.
pub fn could_take(t: &Target, other: &Other) -> bool {
    use std::net::IpAddr;
    let unmap = |a: IpAddr| match a {
        IpAddr::V6(v) => v.to_ipv4_mapped().map_or(IpAddr::V6(v), IpAddr::V4),
        v4 => v4,
    };
    let bound = t.bound;
    let o_addr = other.local;
    let b = unmap(bound.ip());
    let o = unmap(o_addr.ip());
    let o_wild = o_addr.ip().is_unspecified();
    let o_v6only = other.binding.is_some_and(|x| x.v6only);
    let takes_v4 = bound.is_ipv4() || b.is_ipv4() || (bound.ip().is_unspecified() && !t.v6only);
    let takes_v6 = bound.is_ipv6() && !b.is_ipv4();
    let to = |o_ok: bool| o_ok && (o_wild || b.is_unspecified() || o == b);
    // An IPv4 datagram: an IPv4 socket, a v4-mapped one, or a [::]
    // without IPV6_V6ONLY.
    let o_v4 = o_addr.is_ipv4() || o.is_ipv4() || (o_wild && o_addr.is_ipv6() && !o_v6only);
    // An IPv6 one: an IPv6 socket that is not v4-mapped.
    let o_v6 = o_addr.is_ipv6() && !o.is_ipv4();
    if !((takes_v4 && to(o_v4)) || (takes_v6 && to(o_v6))) {
        return false;
    }
    if o_wild && !b.is_unspecified() {
        return false;
    }
    let o_dev = other.binding.map(|x| x.ifindex);
    if t.device != 0 && o_dev.is_some_and(|e| e != 0 && e != t.device) {
        return false;
    }
    if let Some(peer) = t.peer {
        let same =
            |r: std::net::SocketAddr| unmap(r.ip()) == unmap(peer.ip()) && r.port() == peer.port();
        return other.remote.is_some_and(same);
    }
    other.remote.is_none()
}

/// An address as /proc/net/udp{,6} prints it: the in-memory 32-bit words
/// in hex (network order bytes read as native words).
fn parse_proc_addr(hex: &str) -> Option<std::net::IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(hex.get(8 * i..8 * i + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    match hex.len() {
        8 => Some(std::net::Ipv4Addr::from(word(0)?).into()),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[4 * i..4 * i + 4].copy_from_slice(&word(i)?);
            }
            Some(std::net::Ipv6Addr::from(b).into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_addresses_parse_as_the_kernel_prints_them() {
        // 127.0.0.1 and ::1 on a little- or big-endian host alike: the
        // words are the address's bytes read natively.
        let v4 = format!("{:08X}", u32::from_ne_bytes([127, 0, 0, 1]));
        assert_eq!(parse_proc_addr(&v4), Some("127.0.0.1".parse().unwrap()));
        let one = std::net::Ipv6Addr::LOCALHOST.octets();
        let v6: String = one
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect();
        assert_eq!(parse_proc_addr(&v6), Some("::1".parse().unwrap()));
        assert_eq!(parse_proc_addr("12"), None);
    }

    #[test]
    fn which_sockets_could_take_a_re_created_datagram() {
        use crate::diag::Binding;
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let bind = |ifindex, v6only| Some(Binding { ifindex, v6only });
        let (plain, v6only, on_lo) = (bind(0, false), bind(0, true), bind(1, false));
        type Case<'a> = (
            &'a str,
            bool,
            Option<&'a str>,
            &'a str,
            Option<&'a str>,
            Option<Binding>,
            bool,
        );
        let cases: &[Case<'_>] = &[
            // (bound, v6only, peer, other, its peer, its binding, could take)
            ("0.0.0.0:1", false, None, "127.0.0.1:1", None, plain, true),
            ("0.0.0.0:1", false, None, "127.0.0.1:1", None, None, true),
            (
                "127.0.0.1:1",
                false,
                None,
                "127.0.0.2:1",
                None,
                plain,
                false,
            ),
            // The exact address's slot comes first: a wildcard, whatever
            // its device, never takes what an exact socket is sent.
            ("127.0.0.1:1", false, None, "0.0.0.0:1", None, plain, false),
            ("127.0.0.1:1", false, None, "0.0.0.0:1", None, on_lo, false),
            ("127.0.0.1:1", false, None, "0.0.0.0:1", None, None, false),
            ("127.0.0.1:1", false, None, "127.0.0.1:1", None, plain, true),
            ("127.0.0.1:1", false, None, "[::1]:1", None, plain, false),
            (
                "127.0.0.1:1",
                false,
                None,
                "[::ffff:127.0.0.1]:1",
                None,
                plain,
                true,
            ),
            ("0.0.0.0:1", false, None, "[::]:1", None, plain, true),
            ("0.0.0.0:1", false, None, "[::]:1", None, v6only, false),
            ("0.0.0.0:1", false, None, "[::]:1", None, None, true),
            ("[::]:1", false, None, "127.0.0.1:1", None, plain, true),
            ("[::]:1", true, None, "0.0.0.0:1", None, plain, false),
            ("[::]:1", true, None, "[::1]:1", None, plain, true),
            ("[::1]:1", false, None, "127.0.0.1:1", None, plain, false),
            ("[::1]:1", false, None, "[::2]:1", None, plain, false),
            (
                "[::ffff:127.0.0.1]:1",
                false,
                None,
                "0.0.0.0:1",
                None,
                plain,
                false,
            ),
            (
                "[::ffff:127.0.0.1]:1",
                false,
                None,
                "[::1]:1",
                None,
                plain,
                false,
            ),
            // A connected socket's peer's datagrams go to it, not to a
            // listener or another peer's socket; one connected to the same
            // peer could take them.
            (
                "127.0.0.1:1",
                false,
                Some("127.0.0.9:9"),
                "127.0.0.1:1",
                None,
                plain,
                false,
            ),
            (
                "127.0.0.1:1",
                false,
                Some("127.0.0.9:9"),
                "127.0.0.1:1",
                Some("127.0.0.8:8"),
                plain,
                false,
            ),
            (
                "127.0.0.1:1",
                false,
                Some("127.0.0.9:9"),
                "127.0.0.1:1",
                Some("127.0.0.9:9"),
                plain,
                true,
            ),
            // A listener next to its per-client sockets.
            (
                "0.0.0.0:1",
                false,
                None,
                "127.0.0.1:1",
                Some("127.0.0.9:9"),
                plain,
                false,
            ),
        ];
        for &(b, only, peer, o, o_peer, binding, want) in cases {
            let t = Target {
                bound: a(b),
                v6only: only,
                peer: peer.map(a),
                device: 0,
            };
            let other = Other {
                local: a(o),
                remote: o_peer.map(a),
                binding,
            };
            assert_eq!(could_take(&t, &other), want, "{t:?} and {other:?}");
        }
        // Wildcards on one port bound to different devices (a DHCP server's
        // socket per link): neither takes the other's.
        let t = Target {
            bound: a("0.0.0.0:67"),
            v6only: false,
            peer: None,
            device: 1,
        };
        let other = |ifindex| Other {
            local: a("0.0.0.0:67"),
            remote: None,
            binding: bind(ifindex, false),
        };
        assert!(!could_take(&t, &other(3)));
        assert!(could_take(&t, &other(1)));
        assert!(could_take(&t, &other(0)));
    }

    #[test]
    fn other_sockets_on_a_port_are_listed_and_the_own_one_is_not() {
        in_new_netns(|| {
            use std::os::fd::AsFd;
            let reuse = |addr: &str| {
                let a: std::net::SocketAddr = addr.parse().unwrap();
                let s = crate::inject::udp_socket(a.is_ipv6(), 17).unwrap();
                sys::setsockopt_int(s.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).unwrap();
                rustix::net::bind(&s, &a).unwrap();
                s
            };
            let mine = reuse("0.0.0.0:5013");
            let ino = rustix::fs::fstat(&mine).unwrap().st_ino as u64;
            assert!(others_on_port(5013, false, ino).unwrap().is_empty());
            let _other = reuse("127.0.0.1:5013");
            let _v6 = reuse("[::1]:5013");
            let _elsewhere = reuse("127.0.0.1:5014");
            let mut got: Vec<std::net::SocketAddr> = others_on_port(5013, false, ino)
                .unwrap()
                .into_iter()
                .map(|o| o.local)
                .collect();
            got.sort();
            assert_eq!(
                got,
                vec![
                    "127.0.0.1:5013".parse().unwrap(),
                    "[::1]:5013".parse().unwrap()
                ]
            );
        })
        .unwrap();
    }
}
