//! The FFI of the repair library: socket options and calls that rustix does
//! not wrap. Every `unsafe` block of the library lives here, small and
//! commented; callers get safe functions over `BorrowedFd`.
//!
//! Shared by every module: add functions, do not rewrite the file.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// `setsockopt(fd, level, name, &value, sizeof(int))`.
pub fn setsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32, value: i32) -> io::Result<()> {
    setsockopt_bytes(fd, level, name, &value.to_ne_bytes())
}

/// `getsockopt(fd, level, name, &int, &len)`; the kernel must return a
/// whole `int` (some options return a shorter value: those are an error
/// here rather than a silently misread integer).
pub fn getsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32) -> io::Result<i32> {
    let mut buf = [0u8; size_of::<i32>()];
    let len = getsockopt_bytes(fd, level, name, &mut buf)?;
    if len != buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("getsockopt({level}, {name}) returned {len} bytes, expected an int"),
        ));
    }
    Ok(i32::from_ne_bytes(buf))
}

/// `setsockopt(fd, level, name, value, value.len())`.
pub fn setsockopt_bytes(fd: BorrowedFd<'_>, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    let len = libc::socklen_t::try_from(value.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` is a live slice of exactly `len` bytes which the
    // kernel only reads; the fd is borrowed, so it stays open for the call.
    let rc = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, value.as_ptr().cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `getsockopt(fd, level, name, buf, &len)`: fills `buf` and returns the
/// length the kernel reported. For options that report the length they need
/// when the buffer is short, that length may exceed `buf.len()`.
pub fn getsockopt_bytes(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    buf: &mut [u8],
) -> io::Result<usize> {
    let (rc, len) = getsockopt_bytes_len(fd, level, name, buf);
    rc.map(|()| len)
}

/// `getsockopt(fd, level, name, buf, &len)`: the call's result and the
/// length the kernel left in `len` (on success, the bytes it wrote into
/// `buf`, e.g. how much of `struct udp_repair_pending` a kernel filled; on
/// failure, what it left there, which output-only options leave as it
/// was).
pub fn getsockopt_bytes_len(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    buf: &mut [u8],
) -> (io::Result<()>, usize) {
    let Ok(mut len) = libc::socklen_t::try_from(buf.len()) else {
        return (Err(io::Error::from(io::ErrorKind::InvalidInput)), 0);
    };
    // SAFETY: `buf` is a live, writable slice of `len` bytes; the kernel
    // writes at most `len` bytes into it and stores a length in `len`,
    // which outlives the call. The fd is borrowed, so it stays open.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let r = if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    };
    (r, len as usize)
}

/// What one [`recvmsg_bytes`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMsgOut {
    /// Bytes of payload (with `MSG_TRUNC`: the datagram's full length).
    pub len: usize,
    /// Bytes of `msg_name` the kernel filled.
    pub name_len: usize,
    /// Bytes of `msg_control` the kernel filled.
    pub control_len: usize,
    /// `msg_flags` (`MSG_TRUNC`, `MSG_CTRUNC`, ...).
    pub flags: i32,
}

/// `recvmsg(fd, {name, [buf], control}, flags)`. The caller parses `name`
/// (a `sockaddr_*`) and `control` (cmsgs at `CMSG_ALIGN` offsets from the
/// start of the buffer) as bytes, in safe code.
pub fn recvmsg_bytes(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    name: &mut [u8],
    control: &mut [u8],
    flags: i32,
) -> io::Result<RecvMsgOut> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid value (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = name.as_mut_ptr().cast();
    msg.msg_namelen = libc::socklen_t::try_from(name.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len();
    // SAFETY: every pointer in `msg` refers to a live, writable buffer of
    // the length stored beside it (`buf`, `name`, `control`, and `iov` on
    // this stack frame), all outliving the call; the kernel writes within
    // those lengths and updates the lengths in `msg`.
    let rc = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(RecvMsgOut {
        len: rc as usize,
        name_len: msg.msg_namelen as usize,
        control_len: msg.msg_controllen,
        flags: msg.msg_flags,
    })
}

/// `sendmsg(fd, {name, [payload], control}, flags)`: `name` is a
/// `sockaddr_*` as bytes (empty: none), `control` cmsgs as bytes (empty:
/// none), laid out by the caller at `CMSG_ALIGN` offsets.
pub fn sendmsg_bytes(
    fd: BorrowedFd<'_>,
    payload: &[u8],
    name: &[u8],
    control: &[u8],
    flags: i32,
) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: an all-zero msghdr is a valid value (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    if !name.is_empty() {
        msg.msg_name = name.as_ptr().cast_mut().cast();
        msg.msg_namelen = libc::socklen_t::try_from(name.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !control.is_empty() {
        msg.msg_control = control.as_ptr().cast_mut().cast();
        msg.msg_controllen = control.len();
    }
    // SAFETY: the pointers refer to live buffers of the stated lengths that
    // outlive the call; sendmsg only reads them (the `mut` casts are for the
    // C struct's types only).
    let rc = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, flags) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// `sendmmsg` of `(payload, sockaddr bytes)` pairs, without cmsgs. Returns
/// how many messages the kernel sent (it stops at the first error, which is
/// returned only when nothing was sent).
pub fn sendmmsg_bytes(fd: BorrowedFd<'_>, msgs: &[(&[u8], &[u8])]) -> io::Result<usize> {
    let mut iovs: Vec<libc::iovec> = msgs
        .iter()
        .map(|(p, _)| libc::iovec {
            iov_base: p.as_ptr().cast_mut().cast(),
            iov_len: p.len(),
        })
        .collect();
    let mut hdrs = Vec::with_capacity(msgs.len());
    for (i, (_, name)) in msgs.iter().enumerate() {
        // SAFETY: an all-zero mmsghdr is a valid value.
        let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
        h.msg_hdr.msg_name = name.as_ptr().cast_mut().cast();
        h.msg_hdr.msg_namelen = libc::socklen_t::try_from(name.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        h.msg_hdr.msg_iov = &mut iovs[i];
        h.msg_hdr.msg_iovlen = 1;
        hdrs.push(h);
    }
    let n = libc::c_uint::try_from(hdrs.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `hdrs` holds `n` headers whose pointers refer to `iovs` and to
    // the caller's payload and name slices, all alive for the call; the
    // kernel only reads them and writes `msg_len` inside `hdrs`.
    let rc = unsafe { libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), n, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// `ioctl(fd, request, &int)` for the socket ioctls that return an int
/// (`SIOCINQ`, `SIOCOUTQ`).
pub fn ioctl_get_int(fd: BorrowedFd<'_>, request: libc::c_ulong) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: the requests this is used with write one int to the pointer,
    // which points to `v` on this stack frame.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut v) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(v)
    }
}

/// The events `poll(2)` reports on `fd` now (a zero timeout), asking for
/// `events` (`POLLERR` and `POLLHUP` are always reported). Reads nothing.
pub fn poll_now(
    fd: BorrowedFd<'_>,
    events: rustix::event::PollFlags,
) -> io::Result<rustix::event::PollFlags> {
    use rustix::event::{poll, PollFd, Timespec};
    let mut fds = [PollFd::new(&fd, events)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&zero))?;
    Ok(fds[0].revents())
}

/// The network namespace of socket `fd`, as a new descriptor
/// (`ioctl(SIOCGSKNS)`, net/socket.c `sock_ioctl()`; needs
/// `CAP_NET_ADMIN` over it).
pub fn socket_netns(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: SIOCGSKNS takes no argument and returns a new descriptor,
    // which nothing else owns: wrapping it in an OwnedFd is sound.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), 0x894C as libc::c_ulong) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: see above; `rc` is a descriptor we own.
        Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(rc) })
    }
}

/// A copy of descriptor `fd` of process `pid`: `pidfd_open(2)`, then
/// `pidfd_getfd(2)` (needs `PTRACE_MODE_ATTACH_REALCREDS` over `pid`).
///
/// # Errors
/// `InvalidInput` for a pid that is not positive; the kernel's errno
/// otherwise: `ESRCH` no such process, `EPERM` no ptrace rights, `EBADF`
/// no such descriptor.
pub fn take_fd(pid: i32, fd: i32) -> io::Result<OwnedFd> {
    use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};
    let p = Pid::from_raw(pid)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad pid {pid}")))?;
    let pidfd = pidfd_open(p, PidfdFlags::empty())?;
    Ok(pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty())?)
}

/// `unshare(CLONE_NEWUSER)`, with `CLONE_NEWNET` too when `netns`: the
/// calling process enters a new user namespace (and a new network
/// namespace that it owns), holding every capability there and none
/// over the namespaces it left (tests of the privilege rule).
///
/// # Errors
/// `EINVAL` when the process has more than one thread (the kernel's rule
/// for `CLONE_NEWUSER`), `EPERM` or `ENOSPC` where user namespaces are
/// restricted.
pub fn unshare_userns(netns: bool) -> io::Result<()> {
    let flags = libc::CLONE_NEWUSER | if netns { libc::CLONE_NEWNET } else { 0 };
    // SAFETY: unshare takes no pointers. The kernel refuses CLONE_NEWUSER
    // in a multithreaded process, so no other thread can see its
    // credentials or namespaces change.
    let rc = unsafe { libc::unshare(flags) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `unshare(CLONE_NEWNET)`: moves the calling thread into a new, empty
/// network namespace (tests, the benchmark). Needs CAP_SYS_ADMIN.
pub fn unshare_netns() -> io::Result<()> {
    // SAFETY: unshare takes no pointers; CLONE_NEWNET only changes the
    // network namespace of this thread, which Rust code does not cache.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets `IFF_UP` on interface `name` (`SIOCGIFFLAGS` + `SIOCSIFFLAGS`
/// through any socket `fd` of the namespace).
pub fn set_interface_up(fd: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    // SAFETY: an all-zero ifreq is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= ifr.ifr_name.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads ifr_name and writes ifr_flags inside `ifr`,
    // which lives on this stack frame.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union member ifru_flags is the one SIOCGIFFLAGS filled.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS only reads `ifr`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An `ifreq` naming interface `name`, every other byte zero.
fn ifreq_named(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: an all-zero ifreq is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= ifr.ifr_name.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(ifr)
}

/// Sets the MTU of interface `name` (`SIOCSIFMTU` through any socket `fd`
/// of the namespace). Needs CAP_NET_ADMIN.
pub fn set_interface_mtu(fd: BorrowedFd<'_>, name: &str, mtu: i32) -> io::Result<()> {
    let mut ifr = ifreq_named(name)?;
    ifr.ifr_ifru.ifru_mtu = mtu;
    // SAFETY: SIOCSIFMTU only reads `ifr`, which lives on this stack frame.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFMTU, &ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Adds the IPv6 address `addr/prefix_len` to interface `name`
/// (`SIOCGIFINDEX`, then `SIOCSIFADDR` with an `in6_ifreq`), through an
/// IPv6 socket `fd` of the namespace. Needs CAP_NET_ADMIN. The address may
/// be tentative for a moment (duplicate address detection).
pub fn add_ipv6_address(
    fd: BorrowedFd<'_>,
    name: &str,
    addr: std::net::Ipv6Addr,
    prefix_len: u32,
) -> io::Result<()> {
    let mut ifr = ifreq_named(name)?;
    // SAFETY: SIOCGIFINDEX reads ifr_name and writes ifr_ifindex inside
    // `ifr`, which lives on this stack frame.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFINDEX, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let req = libc::in6_ifreq {
        ifr6_addr: libc::in6_addr {
            s6_addr: addr.octets(),
        },
        ifr6_prefixlen: prefix_len,
        // SAFETY: the union member ifru_ifindex is the one SIOCGIFINDEX filled.
        ifr6_ifindex: unsafe { ifr.ifr_ifru.ifru_ifindex },
    };
    // SAFETY: SIOCSIFADDR on an IPv6 socket only reads an in6_ifreq, and
    // `req` is one, on this stack frame.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFADDR, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `dup2(fd, target)`: makes `target` (e.g. 3 for socket activation) a copy
/// of `fd`, without `FD_CLOEXEC`, so an `exec` passes it on. Whatever was
/// open at `target` is closed; the caller owns the number afterwards.
pub fn dup_onto(fd: BorrowedFd<'_>, target: i32) -> io::Result<()> {
    // SAFETY: dup2 takes no pointers; `fd` is borrowed and stays open.
    let rc = unsafe { libc::dup2(fd.as_raw_fd(), target) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `setsockopt(SO_ATTACH_FILTER)` of a classic BPF program given as the
/// bytes of its `struct sock_filter` array (8 bytes per instruction).
pub fn attach_filter(fd: BorrowedFd<'_>, insns: &[u8]) -> io::Result<()> {
    if insns.is_empty() || !insns.len().is_multiple_of(8) || insns.len() / 8 > u16::MAX as usize {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let prog = libc::sock_fprog {
        len: (insns.len() / 8) as u16,
        filter: insns.as_ptr().cast_mut().cast(),
    };
    // SAFETY: `prog` points to `len` instructions inside `insns`, alive for
    // the call; the kernel copies them and only reads. `prog` lives on this
    // stack frame and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn int_option_round_trips() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        setsockopt_int(s.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).unwrap();
        assert_eq!(
            getsockopt_int(s.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap(),
            0
        );
    }

    #[test]
    fn unknown_option_is_an_error() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = getsockopt_int(s.as_fd(), libc::SOL_UDP, 0x7fff).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT));
    }
}
