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
/// inherits the caller's signal mask. Without the privilege to name the
/// socket's namespace (`EPERM`: `CAP_NET_ADMIN` over it) `f` runs in the
/// caller's.
///
/// # Errors
/// `f`'s, or the namespace's: `SIOCGSKNS`, `stat`, `setns`.
pub fn in_netns_of<T: Send>(
    fd: BorrowedFd<'_>,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    let ns = match sys::socket_netns(fd) {
        Ok(ns) => ns,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => return f(),
        Err(e) => return Err(e),
    };
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
