//! `sock_diag` (netlink `NETLINK_SOCK_DIAG`, `udp_diag`): what the socket
//! API does not report about a UDP socket, read without changing it. Today
//! its shutdown state (`sk->sk_shutdown`, the `INET_DIAG_SHUTDOWN`
//! attribute, `inet_diag_msg_attrs_fill()` in net/ipv4/inet_diag.c): no
//! `getsockopt` reports it, and `poll` shows `SHUT_RD` (`POLLRDHUP`) and
//! both (`POLLHUP`), never `SHUT_WR` alone (`udp_poll()`,
//! `datagram_poll()`).
//!
//! The query runs in the socket's network namespace (`SIOCGSKNS`, then
//! `setns` on a thread of its own) and finds the socket by its cookie
//! (`SO_COOKIE`) in a dump of the family's UDP sockets, so a reuseport
//! group or a wildcard binding cannot mislead it.

use crate::sys;
use std::io;
use std::os::fd::BorrowedFd;

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `INET_DIAG_SHUTDOWN` (linux/inet_diag.h).
const INET_DIAG_SHUTDOWN: u16 = 8;
/// `NLMSG_DONE`, `NLMSG_ERROR`.
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
/// `NLM_F_REQUEST | NLM_F_DUMP`.
const NLM_F_REQUEST_DUMP: u16 = 0x1 | 0x300;
/// `sizeof(struct inet_diag_msg)`: family, state, timer, retrans, the
/// 48-byte `inet_diag_sockid` (its cookie at offset 4 + 40), expires,
/// rqueue, wqueue, uid, inode.
const INET_DIAG_MSG_LEN: usize = 72;
/// Offset of the cookie in `struct inet_diag_msg`.
const COOKIE_OFF: usize = 4 + 40;
/// Offset of `idiag_if` (the bound device) in `struct inet_diag_msg`.
const IF_OFF: usize = 4 + 36;
/// Offset of `idiag_inode` in `struct inet_diag_msg`.
const INODE_OFF: usize = 68;
/// `INET_DIAG_SKV6ONLY` (linux/inet_diag.h).
const INET_DIAG_SKV6ONLY: u16 = 11;

/// `SHUT_RD` and `SHUT_WR` as `sk->sk_shutdown` holds them
/// (`RCV_SHUTDOWN`, `SEND_SHUTDOWN`, include/net/sock.h).
pub const RCV_SHUTDOWN: u32 = 1;
/// See [`RCV_SHUTDOWN`].
pub const SEND_SHUTDOWN: u32 = 2;

/// What sock_diag says of a socket's shutdown state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// `RCV_SHUTDOWN | SEND_SHUTDOWN` bits.
    Bits(u32),
    /// The kernel has no `udp_diag` (`CONFIG_INET_UDP_DIAG`).
    NoDiag,
    /// Not in the family's tables: an unbound socket is in none.
    NotFound,
}

/// The shutdown bits of socket `fd` (`v6`: `AF_INET6`; `udplite`: a
/// UDP-Lite socket).
///
/// # Errors
/// `SIOCGSKNS` and `setns` need `CAP_NET_ADMIN` / `CAP_SYS_ADMIN` (without
/// them the caller's own namespace is asked); the netlink socket's errors.
pub fn shutdown_bits(fd: BorrowedFd<'_>, v6: bool, udplite: bool) -> io::Result<Shutdown> {
    let cookie = sock_cookie(fd)?;
    // Asked in the socket's namespace; without the privilege to name it,
    // in the caller's own (a socket of another namespace is then not
    // found).
    match sys::socket_netns(fd) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => query(cookie, v6, udplite),
        _ => crate::netns::in_netns_of(fd, || query(cookie, v6, udplite)),
    }
}

/// Whether sock_diag of the calling thread's network namespace lists
/// socket `fd` (by cookie): then it is a socket of this namespace. `false`
/// also for an unbound socket (in no table) and for a kernel without
/// udp_diag.
///
/// # Errors
/// `SO_COOKIE`'s, or the netlink socket's.
pub fn listed_here(fd: BorrowedFd<'_>, v6: bool, udplite: bool) -> io::Result<bool> {
    Ok(matches!(
        query(sock_cookie(fd)?, v6, udplite)?,
        Shutdown::Bits(_)
    ))
}

/// `SO_COOKIE`: the socket's 64-bit cookie.
fn sock_cookie(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut b = [0u8; 8];
    let n = sys::getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_COOKIE, &mut b)?;
    if n != 8 {
        return Err(io::Error::other("SO_COOKIE: short answer"));
    }
    Ok(u64::from_ne_bytes(b))
}

/// The request: a dump of every UDP socket of the family, any state.
fn request(v6: bool, udplite: bool) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + 56);
    let len = (16 + 56) as u32;
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST_DUMP.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid
                                              // struct inet_diag_req_v2
    m.push(if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8);
    m.push(if udplite {
        libc::IPPROTO_UDPLITE
    } else {
        libc::IPPROTO_UDP
    } as u8);
    m.push(0); // idiag_ext
    m.push(0); // pad
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // idiag_states: all
    m.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: any
    m
}

fn query(cookie: u64, v6: bool, udplite: bool) -> io::Result<Shutdown> {
    let mut found = None;
    let has_diag = each_socket(v6, udplite, |m| {
        if let Some(bits) = parse_msg(m, cookie) {
            found = Some(bits);
        }
    })?;
    Ok(match (has_diag, found) {
        (false, _) => Shutdown::NoDiag,
        (true, None) => Shutdown::NotFound,
        (true, Some(bits)) => Shutdown::Bits(bits),
    })
}

/// Calls `each` with every `inet_diag_msg` (and its attributes) of a
/// sock_diag dump of the family's UDP (`udplite`: UDP-Lite) sockets in
/// the calling thread's network namespace. `Ok(false)`: the kernel has no
/// `udp_diag`.
fn each_socket(v6: bool, udplite: bool, mut each: impl FnMut(&[u8])) -> io::Result<bool> {
    use rustix::net::{netlink, AddressFamily, RecvFlags, SendFlags, SocketType};
    let nl = rustix::net::socket(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        Some(netlink::SOCK_DIAG),
    )?;
    let kernel = netlink::SocketAddrNetlink::new(0, 0);
    rustix::net::sendto(&nl, &request(v6, udplite), SendFlags::empty(), &kernel)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let (n, _) = rustix::net::recv(&nl, &mut buf, RecvFlags::empty())?;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()) as usize;
            let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap_or_default());
            if len < 16 || off + len > n {
                return Err(io::Error::other("sock_diag: a malformed netlink message"));
            }
            match kind {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let errno =
                        i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap_or_default());
                    return match -errno {
                        // No udp_diag in this kernel.
                        libc::ENOENT | libc::EOPNOTSUPP | libc::EINVAL => Ok(false),
                        e => Err(io::Error::from_raw_os_error(e)),
                    };
                }
                SOCK_DIAG_BY_FAMILY => each(&buf[off + 16..off + len]),
                _ => {}
            }
            off += (len + 3) & !3;
        }
    }
}

/// What sock_diag tells of a UDP socket that /proc/net/udp does not: the
/// device it is bound to (`sk_bound_dev_if`, 0 for none) and, for an
/// IPv6 one, IPV6_V6ONLY (`INET_DIAG_SKV6ONLY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The bound device's index, 0 for none.
    pub ifindex: u32,
    /// IPV6_V6ONLY (false for an IPv4 socket).
    pub v6only: bool,
}

/// The [`Binding`] of every UDP (`udplite`: UDP-Lite) socket of both
/// families in the calling thread's network namespace, by inode
/// (inet_diag_msg_attrs_fill(), net/ipv4/inet_diag.c). `None`: the kernel
/// has no `udp_diag`.
///
/// # Errors
/// The netlink socket's.
pub fn bindings(udplite: bool) -> io::Result<Option<std::collections::HashMap<u64, Binding>>> {
    let mut out = std::collections::HashMap::new();
    for v6 in [false, true] {
        let has = each_socket(v6, udplite, |m| {
            if let Some((ino, b)) = parse_binding(m) {
                out.insert(ino, b);
            }
        })?;
        if !has {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// The inode and [`Binding`] of one `inet_diag_msg` with its attributes.
fn parse_binding(m: &[u8]) -> Option<(u64, Binding)> {
    if m.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    let ifindex = u32::from_ne_bytes(m[IF_OFF..IF_OFF + 4].try_into().ok()?);
    let ino = u32::from_ne_bytes(m[INODE_OFF..INODE_OFF + 4].try_into().ok()?);
    let mut v6only = false;
    let mut a = INET_DIAG_MSG_LEN;
    while a + 4 <= m.len() {
        let len = u16::from_ne_bytes(m[a..a + 2].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(m[a + 2..a + 4].try_into().ok()?);
        if len < 4 || a + len > m.len() {
            break;
        }
        if kind == INET_DIAG_SKV6ONLY && len >= 5 {
            v6only = m[a + 4] != 0;
        }
        a += (len + 3) & !3;
    }
    Some((u64::from(ino), Binding { ifindex, v6only }))
}

/// The shutdown bits of one `inet_diag_msg` with its attributes, if it is
/// the socket of `cookie`.
fn parse_msg(m: &[u8], cookie: u64) -> Option<u32> {
    if m.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    let lo = u32::from_ne_bytes(m[COOKIE_OFF..COOKIE_OFF + 4].try_into().ok()?);
    let hi = u32::from_ne_bytes(m[COOKIE_OFF + 4..COOKIE_OFF + 8].try_into().ok()?);
    if (u64::from(hi) << 32 | u64::from(lo)) != cookie {
        return None;
    }
    let mut a = INET_DIAG_MSG_LEN;
    while a + 4 <= m.len() {
        let len = u16::from_ne_bytes(m[a..a + 2].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(m[a + 2..a + 4].try_into().ok()?);
        if len < 4 || a + len > m.len() {
            return None;
        }
        if kind == INET_DIAG_SHUTDOWN && len >= 5 {
            return Some(u32::from(m[a + 4]));
        }
        a += (len + 3) & !3;
    }
    // Found, but without the attribute: nothing is shut down.
    Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_a_udp_dump_of_one_family() {
        let r = request(true, false);
        assert_eq!(r.len(), 72);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(r[16], libc::AF_INET6 as u8);
        assert_eq!(r[17], libc::IPPROTO_UDP as u8);
    }

    #[test]
    fn a_message_is_matched_by_cookie_and_its_attribute_read() {
        let mut m = vec![0u8; INET_DIAG_MSG_LEN];
        m[COOKIE_OFF..COOKIE_OFF + 4].copy_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&5u16.to_ne_bytes());
        m.extend_from_slice(&INET_DIAG_SHUTDOWN.to_ne_bytes());
        m.extend_from_slice(&[2, 0, 0, 0]);
        assert_eq!(parse_msg(&m, 7), Some(SEND_SHUTDOWN));
        assert_eq!(parse_msg(&m, 8), None);
    }
}
