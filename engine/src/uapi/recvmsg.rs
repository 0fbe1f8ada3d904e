//! The uapi of the `recvmsg` series (kernel-patches/recvmsg/): the
//! 2021 design, where repair mode turns `recvmsg(MSG_PEEK)` into a read of
//! the datagram that `UDP_CORK` or `MSG_MORE` keeps pending.
//!
//! - `setsockopt(SOL_UDP, UDP_REPAIR, 0 | 1)` changes the mode; it needs
//!   `CAP_NET_ADMIN` over the socket's network namespace (else `EPERM`).
//!   It leaves `SO_PEEK_OFF` alone (the 2021 original reset it to -1 on
//!   entry; [`read_pending`] sets and restores the offset itself either
//!   way).
//! - In repair mode `recvmsg` needs `MSG_PEEK` (else `EPERM`), never waits,
//!   fails with `EAGAIN` when nothing is pending, returns the payload
//!   without the UDP header from the socket's peek offset (moving it as a
//!   peek of the receive queue does), sets `MSG_TRUNC` as an ordinary read
//!   does, and puts the destination in `msg_name`: a `sockaddr_in`, a
//!   `sockaddr_in6` with flow information and scope id, or a v4-mapped
//!   `sockaddr_in6` for IPv4 data pending on an IPv6 socket.
//!
//! The `getsockopt` series uses the same option number with other
//! semantics; [`probe`] tells the two apart.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};

use rustix::io::Errno;
use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvFlags, ReturnFlags, SocketAddrAny};

use crate::sys::{getsockopt_int, setsockopt_int};
use crate::UDP_REPAIR;

/// Turns repair mode on or off. Needs `CAP_NET_ADMIN` over the socket's
/// network namespace (`EPERM` otherwise); `SO_PEEK_OFF` is left as it
/// is. `ENOPROTOOPT`: the kernel lacks `UDP_REPAIR`.
pub fn set_repair(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_UDP, UDP_REPAIR, i32::from(on))
}

/// Whether repair mode is on. `ENOPROTOOPT`: the kernel lacks
/// `UDP_REPAIR` (or `fd` is not a UDP socket).
pub fn repair(fd: BorrowedFd<'_>) -> io::Result<bool> {
    match getsockopt_int(fd, libc::SOL_UDP, UDP_REPAIR)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("getsockopt(SOL_UDP, UDP_REPAIR) returned {v}, expected 0 or 1"),
        )),
    }
}

/// Whether the kernel has `UDP_REPAIR`, asked of the UDP socket `fd`
/// (reading the mode needs no privilege and changes nothing). `Ok(false)`
/// on `ENOPROTOOPT`; other errors (`ENOTSOCK`, ...) are errors. It does not
/// tell this series from the `getsockopt` one: see [`probe`].
pub fn detect(fd: BorrowedFd<'_>) -> io::Result<bool> {
    match repair(fd) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// What the running kernel offers, as [`probe`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// No `UDP_REPAIR` (`ENOPROTOOPT`).
    Missing,
    /// `UDP_REPAIR` with the semantics of this series: in repair mode a
    /// read without `MSG_PEEK` fails with `EPERM`.
    Recvmsg,
    /// `UDP_REPAIR` exists but a read without `MSG_PEEK` in repair mode
    /// does not fail with `EPERM`: another series (`getsockopt`).
    Other,
}

/// Finds out what the kernel offers on a throwaway IPv4 UDP socket: the
/// option, then (in repair mode) a non-blocking read without `MSG_PEEK`
/// of an empty socket, which only this series refuses with `EPERM`. Needs
/// `CAP_NET_ADMIN` unless the option is missing: without it, `EPERM`.
pub fn probe() -> io::Result<Support> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    if !detect(s.as_fd())? {
        return Ok(Support::Missing);
    }
    set_repair(s.as_fd(), true)?;
    let mut buf = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut control = RecvAncillaryBuffer::default();
    match recvmsg(&s, &mut iov, &mut control, RecvFlags::DONTWAIT) {
        Err(Errno::PERM) => Ok(Support::Recvmsg),
        Ok(_) | Err(_) => Ok(Support::Other),
    }
}

/// One read of the pending datagram, as [`peek_pending`] returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRead {
    /// `recvmsg`'s return value: the bytes copied into the buffer, or,
    /// when the read asked for the full length, the length of the whole
    /// datagram (then `min(buf.len(), bytes - offset)` bytes were copied).
    pub bytes: usize,
    /// `MSG_TRUNC` in the returned flags: the buffer was shorter than the
    /// datagram (with the same rule as an ordinary datagram read, which
    /// compares the buffer with the whole datagram, not with what is left
    /// after the peek offset).
    pub truncated: bool,
    /// Where the datagram will go. IPv4 data pending on an IPv6 socket is
    /// reported by the kernel as a v4-mapped address; here it is the
    /// [`SocketAddr::V4`] it stands for, and `v4_on_v6` is set.
    pub dest: SocketAddr,
    /// The datagram is IPv4 data pending on an IPv6 socket.
    pub v4_on_v6: bool,
}

/// Whether a read also returns the full length of the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Len {
    /// `recvmsg` returns the bytes copied.
    Copied,
    /// `MSG_TRUNC` in the call's flags: `recvmsg` returns the length of the
    /// whole datagram.
    Full,
}

/// Reads (peeks at) the pending datagram of `fd` into `buf`, from the
/// socket's peek offset. `Ok(None)`: nothing pending (or the peek offset
/// is at the end of the datagram). Checks first that repair mode is on
/// (`EINVAL` otherwise), since on a kernel without repair, or with repair
/// off, the same call would silently read the receive queue.
pub fn peek_pending(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    len: Len,
) -> io::Result<Option<PendingRead>> {
    if !repair(fd)? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "repair mode is off: recvmsg would read the receive queue",
        ));
    }
    let mut flags = RecvFlags::PEEK | RecvFlags::DONTWAIT;
    if len == Len::Full {
        flags |= RecvFlags::TRUNC;
    }
    let mut iov = [IoSliceMut::new(buf)];
    let mut control = RecvAncillaryBuffer::default();
    let m = match recvmsg(fd, &mut iov, &mut control, flags) {
        Ok(m) => m,
        Err(Errno::AGAIN) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let addr = m.address.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "repair read returned no destination address",
        )
    })?;
    let (dest, v4_on_v6) = decode_dest(addr)?;
    Ok(Some(PendingRead {
        bytes: m.bytes,
        truncated: m.flags.contains(ReturnFlags::TRUNC),
        dest,
        v4_on_v6,
    }))
}

/// The destination as the kernel wrote it into `msg_name`, with a
/// v4-mapped IPv6 address turned back into the IPv4 address it stands for.
/// Returns the address and whether it was v4-mapped.
pub fn decode_dest(addr: SocketAddrAny) -> io::Result<(SocketAddr, bool)> {
    let addr = SocketAddr::try_from(addr).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "repair read returned a destination that is neither IPv4 nor IPv6",
        )
    })?;
    Ok(match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => (SocketAddr::V4(SocketAddrV4::new(v4, a.port())), true),
            None => (addr, false),
        },
        SocketAddr::V4(_) => (addr, false),
    })
}

/// The whole pending datagram, as [`read_pending`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDatagram {
    /// The payload the socket will send once uncorked (no UDP header).
    pub data: Vec<u8>,
    /// Where it will go (see [`PendingRead::dest`]).
    pub dest: SocketAddr,
    /// IPv4 data pending on an IPv6 socket.
    pub v4_on_v6: bool,
}

/// Buffer of the first read: enough for a datagram that fits an Ethernet
/// MTU; a larger one costs one more read, sized by the first.
const FIRST_READ: usize = 2048;

/// How many times [`read_pending`] reads again when the datagram grew
/// between two reads (another thread appending to it).
const MAX_READS: usize = 8;

/// Reads the whole pending datagram of `fd` and leaves the socket as it
/// was: repair mode is turned on for the read if it was off (needs
/// `CAP_NET_ADMIN`) and off again afterwards, and the caller's
/// `SO_PEEK_OFF` is put back, also when the read fails. `Ok(None)`: nothing
/// pending.
///
/// The read runs with the peek offset at -1 (from the start, not moving)
/// and `MSG_TRUNC`, so the kernel reports the datagram's length; a buffer
/// found too short is grown to that length and the read done again.
pub fn read_pending(fd: BorrowedFd<'_>) -> io::Result<Option<PendingDatagram>> {
    let was_on = repair(fd)?;
    let peek_off = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF)?;
    if !was_on {
        set_repair(fd, true)?;
    }
    let read = read_from_start(fd);
    let restored = restore(fd, was_on, peek_off);
    let read = read?;
    restored?;
    Ok(read)
}

/// Puts back the repair mode and then the peek offset (turning repair on
/// resets the offset, turning it off does not).
fn restore(fd: BorrowedFd<'_>, was_on: bool, peek_off: i32) -> io::Result<()> {
    let mode = if was_on {
        Ok(())
    } else {
        set_repair(fd, false)
    };
    let off = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, peek_off);
    mode.and(off)
}

fn read_from_start(fd: BorrowedFd<'_>) -> io::Result<Option<PendingDatagram>> {
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, -1)?;
    let mut buf = vec![0u8; FIRST_READ];
    for _ in 0..MAX_READS {
        let Some(r) = peek_pending(fd, &mut buf, Len::Full)? else {
            return Ok(None);
        };
        if r.bytes <= buf.len() {
            buf.truncate(r.bytes);
            return Ok(Some(PendingDatagram {
                data: buf,
                dest: r.dest,
                v4_on_v6: r.v4_on_v6,
            }));
        }
        buf.resize(r.bytes, 0);
    }
    Err(io::Error::other(format!(
        "the pending datagram kept growing over {MAX_READS} reads"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
    use std::os::fd::AsFd;
    use std::time::Duration;

    /// The host kernel lacks `UDP_REPAIR`: every test here states what
    /// the wrappers do on such a kernel, which is also the guest's
    /// unpatched kernel. On a kernel that has it they are skipped (return
    /// early with a note) rather than failing.
    fn host_has_repair() -> bool {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let has = detect(s.as_fd()).unwrap();
        if has {
            eprintln!("this kernel has UDP_REPAIR: test not applicable");
        }
        has
    }

    fn enoprotoopt(e: &io::Error) -> bool {
        e.raw_os_error() == Some(libc::ENOPROTOOPT)
    }

    #[test]
    fn detect_is_false_without_udp_repair() {
        if host_has_repair() {
            return;
        }
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let s = UdpSocket::bind(addr).unwrap();
            assert!(!detect(s.as_fd()).unwrap(), "{addr}");
            assert!(enoprotoopt(&repair(s.as_fd()).unwrap_err()), "{addr}");
            assert!(enoprotoopt(&set_repair(s.as_fd(), true).unwrap_err()));
        }
        assert_eq!(probe().unwrap(), Support::Missing);
    }

    #[test]
    fn detect_on_a_non_socket_is_an_error() {
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let e = detect(r.as_fd()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTSOCK), "{e}");
    }

    #[test]
    fn peek_pending_refuses_to_read_the_receive_queue() {
        if host_has_repair() {
            return;
        }
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"receive queue", rx.local_addr().unwrap())
            .unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 64];
        // Wait until it is there, without consuming it.
        assert_eq!(rx.peek(&mut buf).unwrap(), 13);
        let e = peek_pending(rx.as_fd(), &mut buf, Len::Full).unwrap_err();
        assert!(enoprotoopt(&e), "{e}");
        // The datagram is still the first in the receive queue.
        assert_eq!(rx.recv(&mut buf).unwrap(), 13);
        assert_eq!(&buf[..13], b"receive queue");
    }

    #[test]
    fn read_pending_fails_and_leaves_peek_offset() {
        if host_has_repair() {
            return;
        }
        let s = UdpSocket::bind("[::1]:0").unwrap();
        setsockopt_int(s.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, 7).unwrap();
        let e = read_pending(s.as_fd()).unwrap_err();
        assert!(enoprotoopt(&e), "{e}");
        let off = getsockopt_int(s.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap();
        assert_eq!(off, 7);
    }

    #[test]
    fn decode_dest_maps_v4_mapped_back() {
        let v4 = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 7), 4242));
        assert_eq!(decode_dest(SocketAddrAny::from(v4)).unwrap(), (v4, false));

        let mapped = SocketAddr::V6(SocketAddrV6::new(
            Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped(),
            4242,
            0,
            0,
        ));
        assert_eq!(
            decode_dest(SocketAddrAny::from(mapped)).unwrap(),
            (v4, true)
        );

        // A real IPv6 destination keeps its flow information and scope id.
        let v6 = SocketAddr::V6(SocketAddrV6::new(
            "fe80::1".parse::<Ipv6Addr>().unwrap(),
            53,
            0x0280_0000,
            3,
        ));
        let (got, mapped) = decode_dest(SocketAddrAny::from(v6)).unwrap();
        assert_eq!((got, mapped), (v6, false));
        let SocketAddr::V6(got) = got else {
            unreachable!()
        };
        assert_eq!((got.flowinfo(), got.scope_id()), (0x0280_0000, 3));

        // ::1 and the IPv4-compatible ::192.0.2.7 are not v4-mapped.
        let compat = SocketAddr::from(("::c000:207".parse::<Ipv6Addr>().unwrap(), 1));
        assert_eq!(
            decode_dest(SocketAddrAny::from(compat)).unwrap(),
            (compat, false)
        );
    }
}
