//! The uapi of the `pending-lost` kernel series: `UDP_REPAIR_PENDING_LOST`,
//! Willem de Bruijn's alternative to reading the pending datagram back.
//!
//! A restore that could not recreate the datagram pending on a corked
//! socket marks the restored socket: in repair mode,
//! `setsockopt(SOL_UDP, UDP_REPAIR_PENDING_LOST, 1)` on a socket with
//! nothing pending. The application's next append to that datagram (a
//! send, or clearing `UDP_CORK`) then fails once with `ECANCELED` instead
//! of sending the rest alone (`udp_pending_lost()`, net/ipv4/udp.c), and
//! `getsockopt` of the option tells whether the mark is still set.
//!
//! Errors: `ENOPROTOOPT`, a kernel without the option; `EPERM`, not in
//! repair mode (entering it needs `CAP_NET_ADMIN` over the socket's
//! network namespace); `EINVAL`, a value other than 1; `EBUSY`, data is
//! pending. Setting the mark on a socket that already has it succeeds and
//! changes nothing.

use crate::sys;
use crate::UDP_REPAIR;
use std::io;
use std::os::fd::BorrowedFd;

/// `SOL_UDP` option number of `UDP_REPAIR_PENDING_LOST`.
pub const UDP_REPAIR_PENDING_LOST: i32 = 5;

/// Whether socket `fd` carries the mark: `Ok(None)` on a kernel without
/// the option. Needs no privilege and no repair mode.
pub fn marked(fd: BorrowedFd<'_>) -> io::Result<Option<bool>> {
    match sys::getsockopt_int(fd, libc::SOL_UDP, UDP_REPAIR_PENDING_LOST) {
        Ok(v) => Ok(Some(v != 0)),
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Marks socket `fd`, which has nothing pending: enters repair mode if it
/// is not in it, sets the option, and leaves repair mode as it found it
/// (also when setting fails). `Ok(false)`: the kernel has no such option,
/// and nothing was changed.
pub fn mark(fd: BorrowedFd<'_>) -> io::Result<bool> {
    if marked(fd)?.is_none() {
        return Ok(false);
    }
    let was_on = sys::getsockopt_int(fd, libc::SOL_UDP, UDP_REPAIR)? != 0;
    if !was_on {
        sys::setsockopt_int(fd, libc::SOL_UDP, UDP_REPAIR, 1)?;
    }
    let set = sys::setsockopt_int(fd, libc::SOL_UDP, UDP_REPAIR_PENDING_LOST, 1);
    let back = if was_on {
        Ok(())
    } else {
        sys::setsockopt_int(fd, libc::SOL_UDP, UDP_REPAIR, 0)
    };
    set?;
    back?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    /// On a kernel without the series (the host), nothing is marked and
    /// nothing changes; with it, a mark is seen and the next send fails.
    #[test]
    fn mark_follows_the_kernel() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        match marked(s.as_fd()).unwrap() {
            None => assert!(!mark(s.as_fd()).unwrap()),
            Some(false) => {
                assert!(mark(s.as_fd()).unwrap());
                assert_eq!(marked(s.as_fd()).unwrap(), Some(true));
                let e = s.send_to(b"x", "127.0.0.1:9").unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::ECANCELED));
                assert_eq!(marked(s.as_fd()).unwrap(), Some(false));
            }
            Some(true) => panic!("a new socket is marked"),
        }
    }
}
