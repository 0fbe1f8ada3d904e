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
            )?;
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The other UDP (`udplite`: UDP-Lite) sockets bound to `port` in the
/// calling thread's network namespace, of either family (an IPv6 socket
/// without IPV6_V6ONLY takes IPv4 datagrams too), by local address as
/// `/proc/thread-self/net/udp` and `udp6` list them (udp4_format_sock(),
/// udp6_sock_seq_show()); the socket of inode `own` is left out. A
/// datagram sent to the port may be delivered to one of them instead (an
/// SO_REUSEPORT group's hash, a more specific address, SO_REUSEADDR). A
/// table that is not there (no IPv6, no UDP-Lite) lists none.
///
/// # Errors
/// Reading the tables.
pub fn others_on_port(port: u16, udplite: bool, own: u64) -> io::Result<Vec<std::net::SocketAddr>> {
    let mut out = Vec::new();
    let tables: [&str; 2] = if udplite {
        ["udplite", "udplite6"]
    } else {
        ["udp", "udp6"]
    };
    for table in tables {
        let text = match std::fs::read_to_string(format!("/proc/thread-self/net/{table}")) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (f.get(1), f.get(9)) else {
                continue;
            };
            let Some((addr, p)) = local.split_once(':') else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() != Some(port)
                || inode.parse::<u64>().ok() == Some(own)
            {
                continue;
            }
            if let Some(ip) = parse_proc_addr(addr) {
                out.push(std::net::SocketAddr::new(ip, port));
            }
        }
    }
    Ok(out)
}

/// Whether a socket bound to `other` (as [`others_on_port`] lists it, on
/// the same port) could be handed a datagram that a re-creation or a
/// put-back sends to the socket bound to `bound`: one to `bound`'s
/// address, or to any local address when `bound` is a wildcard; IPv4
/// ones too when `bound` is v4-mapped, or `[::]` without IPV6_V6ONLY
/// (`v6only`). It could when its address is that destination or a
/// wildcard of the datagram's family (`[::]`, whose IPV6_V6ONLY
/// /proc does not show, counts for IPv4 too), as the lookup scores them
/// (compute_score(), udp4_lib_lookup2()). A device binding, which /proc
/// does not show either, is not looked at: such a socket counts.
pub fn could_take(bound: std::net::SocketAddr, v6only: bool, other: std::net::SocketAddr) -> bool {
    use std::net::IpAddr;
    let unmap = |a: IpAddr| match a {
        IpAddr::V6(v) => v.to_ipv4_mapped().map_or(IpAddr::V6(v), IpAddr::V4),
        v4 => v4,
    };
    let b = unmap(bound.ip());
    let o = unmap(other.ip());
    let takes_v4 = bound.is_ipv4() || b.is_ipv4() || (bound.ip().is_unspecified() && !v6only);
    let takes_v6 = bound.is_ipv6() && !b.is_ipv4();
    let to = |o_ok: bool| o_ok && (other.ip().is_unspecified() || b.is_unspecified() || o == b);
    // An IPv4 datagram: an IPv4 socket, a v4-mapped one, or [::].
    let o_v4 = other.is_ipv4() || o.is_ipv4() || other.ip().is_unspecified();
    // An IPv6 one: an IPv6 socket that is not v4-mapped.
    let o_v6 = other.is_ipv6() && !o.is_ipv4();
    (takes_v4 && to(o_v4)) || (takes_v6 && to(o_v6))
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
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        // (bound, v6only, other, could take)
        for (b, only, o, want) in [
            ("0.0.0.0:1", false, "127.0.0.1:1", true),
            ("127.0.0.1:1", false, "127.0.0.2:1", false),
            ("127.0.0.1:1", false, "0.0.0.0:1", true),
            ("127.0.0.1:1", false, "[::]:1", true),
            ("127.0.0.1:1", false, "[::1]:1", false),
            ("127.0.0.1:1", false, "[::ffff:127.0.0.1]:1", true),
            ("[::]:1", false, "127.0.0.1:1", true),
            ("[::]:1", true, "0.0.0.0:1", false),
            ("[::]:1", true, "[::1]:1", true),
            ("[::1]:1", false, "127.0.0.1:1", false),
            ("[::1]:1", false, "[::]:1", true),
            ("[::1]:1", false, "[::2]:1", false),
            ("[::ffff:127.0.0.1]:1", false, "0.0.0.0:1", true),
            ("[::ffff:127.0.0.1]:1", false, "[::1]:1", false),
        ] {
            assert_eq!(
                could_take(a(b), only, a(o)),
                want,
                "{b} (v6only {only}) and {o}"
            );
        }
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
            let mut got = others_on_port(5013, false, ino).unwrap();
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
