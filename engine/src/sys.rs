//! The FFI of the repair library: socket options and calls that rustix does
//! not wrap. Every `unsafe` block of the library lives here, small and
//! commented; callers get safe functions over `BorrowedFd`.
//!
//! Shared by every module: add functions, do not rewrite the file.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// Whether option `(level, name)` carries a plain value: bytes or an int
/// the kernel copies, with no pointer it follows, no descriptor number it
/// resolves, no memory it maps and no descriptor it creates. The byte and
/// int wrappers below take only these, so that a safe call cannot make the
/// kernel touch this process's memory or descriptors beyond the buffer it
/// is given (e.g. `TCP_ZEROCOPY_RECEIVE` maps pages at an address in its
/// argument, `SO_ATTACH_BPF` takes a descriptor number, `SO_PEERPIDFD`
/// installs a descriptor, the netfilter options at `SOL_IP`/`SOL_IPV6`
/// carry user pointers).
///
/// Allowed: the levels a UDP socket's state lives at (`SOL_SOCKET`,
/// `SOL_IP` below the netfilter range that starts at 64, `SOL_IPV6`
/// without its netfilter numbers 64, 65, 68, 69, 80 and above, `SOL_UDP`,
/// `SOL_UDPLITE`), minus the `SOL_SOCKET` options that take a pointer or a
/// descriptor, install one, or attach device memory (include/uapi/asm-generic/socket.h).
/// (`SO_PASSCRED`/`SO_PASSPIDFD` are plain flags; what they make an
/// AF_UNIX `recvmsg` deliver is [`recvmsg_bytes`]'s concern.)
/// A classic BPF filter is attached with [`attach_filter`].
pub fn plain_option(level: i32, name: i32, access: Access) -> bool {
    const SOL_UDPLITE: i32 = 136;
    const SO_PEERPIDFD: i32 = 77;
    const SO_DEVMEM_LINEAR: i32 = 78;
    const SO_DEVMEM_DMABUF: i32 = 79;
    const SO_DEVMEM_DONTNEED: i32 = 80;
    match level {
        libc::SOL_SOCKET => match access {
            // 26 is SO_ATTACH_FILTER to set and SO_GET_FILTER to get (the
            // program's instructions, plain data).
            Access::Set => !matches!(
                name,
                libc::SO_ATTACH_FILTER
                    | libc::SO_ATTACH_BPF
                    | libc::SO_ATTACH_REUSEPORT_CBPF
                    | libc::SO_ATTACH_REUSEPORT_EBPF
                    | SO_DEVMEM_DONTNEED
            ),
            // SO_GET_FILTER (26) takes its length in instructions, not
            // bytes (net/core/filter.c sk_get_filter()): [`get_filter`].
            Access::Get => !matches!(
                name,
                libc::SO_GET_FILTER | SO_PEERPIDFD | SO_DEVMEM_LINEAR | SO_DEVMEM_DMABUF
            ),
        },
        // The source filters (IP_MSFILTER 41, MCAST_MSFILTER 48) write as
        // many sources as the caller's buffer says it holds, not what its
        // length allows (net/ipv4/igmp.c ip_mc_gsfget()): [`get_msfilter`].
        libc::SOL_IP => {
            (0..64).contains(&name)
                && !(access == Access::Get
                    && matches!(name, libc::IP_MSFILTER | libc::MCAST_MSFILTER))
        }
        libc::SOL_IPV6 => {
            (0..81).contains(&name)
                && !matches!(name, 64 | 65 | 68 | 69 | 80)
                && !(access == Access::Get && name == libc::MCAST_MSFILTER)
        }
        libc::SOL_UDP | SOL_UDPLITE => true,
        _ => false,
    }
}

/// Which call [`plain_option`] judges an option for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `getsockopt`.
    Get,
    /// `setsockopt`.
    Set,
}

fn check_plain(level: i32, name: i32, access: Access) -> io::Result<()> {
    if plain_option(level, name, access) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "socket option ({level}, {name}) is not one whose value is plain data \
                 (sys::plain_option): refused"
            ),
        ))
    }
}

/// `setsockopt(fd, level, name, &value, sizeof(int))`.
///
/// # Errors
/// `InvalidInput` for an option [`plain_option`] refuses; else the kernel's.
pub fn setsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32, value: i32) -> io::Result<()> {
    setsockopt_bytes(fd, level, name, &value.to_ne_bytes())
}

/// `getsockopt(fd, level, name, &int, &len)`; the kernel must return a
/// whole `int` (some options return a shorter value: those are an error
/// here rather than a silently misread integer). `InvalidInput` for an
/// option [`plain_option`] refuses.
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

/// `setsockopt(fd, level, name, value, value.len())`, for an option
/// [`plain_option`] allows (`InvalidInput` otherwise).
pub fn setsockopt_bytes(fd: BorrowedFd<'_>, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    check_plain(level, name, Access::Set)?;
    let len = libc::socklen_t::try_from(value.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` is a live slice of exactly `len` bytes which the
    // kernel only reads, and the option is a plain one (checked above): the
    // kernel follows no pointer in it and resolves no descriptor number.
    // The fd is borrowed, so it stays open for the call.
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
/// `InvalidInput` for an option [`plain_option`] refuses.
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
/// was). `InvalidInput` for an option [`plain_option`] refuses.
pub fn getsockopt_bytes_len(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    buf: &mut [u8],
) -> (io::Result<()>, usize) {
    if let Err(e) = check_plain(level, name, Access::Get) {
        return (Err(e), 0);
    }
    let Ok(mut len) = libc::socklen_t::try_from(buf.len()) else {
        return (Err(io::Error::from(io::ErrorKind::InvalidInput)), 0);
    };
    // SAFETY: `buf` is a live, writable slice of `len` bytes; the kernel
    // writes at most `len` bytes into it and stores a length in `len`,
    // which outlives the call. The option is a plain one (checked above):
    // it maps nothing and installs no descriptor. The fd is borrowed, so
    // it stays open.
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
/// start of the buffer) as bytes, in safe code. `MSG_CMSG_CLOEXEC` is
/// always added: descriptors an AF_UNIX peer passes (`SCM_RIGHTS`,
/// `SCM_PIDFD`) arrive as numbers in `control`, open and owned by no one
/// until the caller wraps them; a UDP socket receives none.
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
    let rc = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags | libc::MSG_CMSG_CLOEXEC) };
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

/// One message's buffers for [`recvmmsg_bytes`]: payload, `msg_name`,
/// `msg_control`.
pub type RecvBufs<'a> = (&'a mut [u8], &'a mut [u8], &'a mut [u8]);

/// `recvmmsg(fd, msgs, bufs.len(), flags | MSG_CMSG_CLOEXEC, NULL)`: up to
/// `bufs.len()` messages, message `i` into `bufs[i]` as [`recvmsg_bytes`]
/// receives one (the caller parses name and control as bytes). Returns
/// what each received message filled, in order: fewer than `bufs.len()`
/// when the queue ran out (with `MSG_DONTWAIT`, the kernel stops at the
/// first `EAGAIN`).
///
/// # Errors
/// The kernel's, only when no message was received (net/socket.c
/// `do_recvmmsg()`): an error after the first message is not returned
/// but left as the socket's pending error (`sk_err`), so use it where the
/// only error after a message is the end of the queue (`MSG_DONTWAIT`:
/// `EAGAIN`) or a pending error that was there already (a UDP read
/// returns `sk_err` only at an empty queue, and it is put back).
pub fn recvmmsg_bytes(
    fd: BorrowedFd<'_>,
    bufs: &mut [RecvBufs<'_>],
    flags: i32,
) -> io::Result<Vec<RecvMsgOut>> {
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|(b, _, _)| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut hdrs = Vec::with_capacity(bufs.len());
    for (i, (_, name, control)) in bufs.iter_mut().enumerate() {
        // SAFETY: an all-zero mmsghdr is a valid value.
        let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
        h.msg_hdr.msg_name = name.as_mut_ptr().cast();
        h.msg_hdr.msg_namelen = libc::socklen_t::try_from(name.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        h.msg_hdr.msg_iov = iovs[i..].as_mut_ptr();
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_control = control.as_mut_ptr().cast();
        h.msg_hdr.msg_controllen = control.len();
        hdrs.push(h);
    }
    let n = libc::c_uint::try_from(hdrs.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `hdrs` holds `n` headers whose pointers refer to the iovec
    // `iovs[i]` and to the caller's payload, name and control buffers of
    // message `i`, each writable for the length stored beside it and alive
    // for the call (`iovs` is not moved or resized after the pointers are
    // taken); the kernel writes within those lengths and updates the
    // lengths and `msg_len` inside `hdrs`. No timeout (null).
    let rc = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            n,
            flags | libc::MSG_CMSG_CLOEXEC,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(hdrs[..rc as usize]
        .iter()
        .map(|h| RecvMsgOut {
            len: h.msg_len as usize,
            name_len: h.msg_hdr.msg_namelen as usize,
            control_len: h.msg_hdr.msg_controllen,
            flags: h.msg_hdr.msg_flags,
        })
        .collect())
}

/// `sendmsg(fd, {name, [payload], control}, flags)`: `name` is a
/// `sockaddr_*` as bytes (empty: none), `control` cmsgs as bytes (empty:
/// none), laid out by the caller at `CMSG_ALIGN` offsets.
///
/// # Errors
/// `InvalidInput` when `control` is not a well-formed cmsg sequence or
/// holds `SCM_RIGHTS` (descriptor numbers, which this function cannot
/// know the caller owns); else the kernel's.
pub fn sendmsg_bytes(
    fd: BorrowedFd<'_>,
    payload: &[u8],
    name: &[u8],
    control: &[u8],
    flags: i32,
) -> io::Result<usize> {
    check_control(control)?;
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
    // C struct's types only). `control` carries no SCM_RIGHTS (checked
    // above), so the kernel resolves no descriptor number of this process.
    let rc = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, flags) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// Refuses a control buffer that is not whole cmsgs, or that holds
/// `SCM_RIGHTS`.
fn check_control(control: &[u8]) -> io::Result<()> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_string());
    let mut off = 0;
    while off < control.len() {
        let hdr = control
            .get(off..off + crate::wire::CMSG_HDR)
            .ok_or_else(|| bad("a cmsg header runs past the control buffer"))?;
        let len = usize::from_ne_bytes(hdr[..8].try_into().expect("8 bytes"));
        let level = i32::from_ne_bytes(hdr[8..12].try_into().expect("4 bytes"));
        let kind = i32::from_ne_bytes(hdr[12..16].try_into().expect("4 bytes"));
        if len < crate::wire::CMSG_HDR || len > control.len() - off {
            return Err(bad("a cmsg length runs past the control buffer"));
        }
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            return Err(bad(
                "SCM_RIGHTS carries descriptor numbers this call cannot know the caller owns: refused",
            ));
        }
        off += crate::wire::cmsg_align(len);
    }
    Ok(())
}

/// `sendmmsg` of `(payload, sockaddr bytes)` pairs, without cmsgs. Returns
/// how many messages the kernel sent (it stops at the first error, which is
/// returned only when nothing was sent). [`sendmmsg_gather`] with no second
/// part.
pub fn sendmmsg_bytes(fd: BorrowedFd<'_>, msgs: &[(&[u8], &[u8])]) -> io::Result<usize> {
    let gathered: Vec<(&[u8], &[u8], &[u8])> =
        msgs.iter().map(|(p, n)| (*p, &[][..], *n)).collect();
    sendmmsg_gather(fd, &gathered)
}

/// `sendmmsg` of `(header, payload, sockaddr bytes)` triples, each sent
/// as one message gathered from two buffers (no copy of the payload in
/// userspace), without cmsgs. Returns how many messages the kernel sent
/// (it stops at the first error, which is returned only when nothing was
/// sent).
pub fn sendmmsg_gather(fd: BorrowedFd<'_>, msgs: &[(&[u8], &[u8], &[u8])]) -> io::Result<usize> {
    let mut iovs: Vec<[libc::iovec; 2]> = msgs
        .iter()
        .map(|(h, p, _)| {
            [
                libc::iovec {
                    iov_base: h.as_ptr().cast_mut().cast(),
                    iov_len: h.len(),
                },
                libc::iovec {
                    iov_base: p.as_ptr().cast_mut().cast(),
                    iov_len: p.len(),
                },
            ]
        })
        .collect();
    let mut hdrs = Vec::with_capacity(msgs.len());
    for (i, (_, _, name)) in msgs.iter().enumerate() {
        // SAFETY: an all-zero mmsghdr is a valid value.
        let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
        h.msg_hdr.msg_name = name.as_ptr().cast_mut().cast();
        h.msg_hdr.msg_namelen = libc::socklen_t::try_from(name.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        h.msg_hdr.msg_iov = iovs[i].as_mut_ptr();
        h.msg_hdr.msg_iovlen = 2;
        hdrs.push(h);
    }
    let n = libc::c_uint::try_from(hdrs.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `hdrs` holds `n` headers whose pointers refer to the two
    // iovecs of `iovs[i]` and to the caller's header, payload and name
    // slices, all alive for the call (`iovs` is not moved or resized after
    // the pointers are taken); the kernel only reads them and writes
    // `msg_len` inside `hdrs`.
    let rc = unsafe { libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), n, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// Bytes in the send queue of socket `fd`: `ioctl(SIOCOUTQ)` (for UDP,
/// `sk_wmem_alloc_get()`, net/ipv4/udp.c `udp_ioctl()`: the truesize of
/// what is queued or in flight, not the payload).
pub fn outq(fd: BorrowedFd<'_>) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int to the pointer, which
    // points to `v` on this stack frame.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ as libc::c_ulong, &mut v) };
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

/// Whether interface `name` is up (`IFF_UP` of `SIOCGIFFLAGS`, through any
/// socket `fd` of the namespace; dev_ioctl()).
///
/// # Errors
/// `ENODEV` no such interface; `InvalidInput` a name of 16 bytes or more.
pub fn interface_is_up(fd: BorrowedFd<'_>, name: &str) -> io::Result<bool> {
    let mut ifr = ifreq_named(name)?;
    // SAFETY: SIOCGIFFLAGS reads ifr_name and writes ifr_flags inside `ifr`,
    // which lives on this stack frame.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union member ifru_flags is the one SIOCGIFFLAGS filled.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    Ok(flags & libc::IFF_UP as libc::c_short != 0)
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

/// `getsockopt(SO_GET_FILTER)` into room for `max` instructions: the
/// option's length is a count of instructions, not bytes
/// (net/core/filter.c `sk_get_filter()`). With `max` 0 the kernel copies
/// nothing and reports the filter's length: `Ok((count, empty))`. Else
/// `Ok((count, bytes))`, 8 bytes per `struct sock_filter`. Count 0: no
/// filter. The kernel's error otherwise: `EINVAL` when the filter has more
/// than `max` instructions, `EACCES` for an eBPF filter (no program to
/// return).
pub fn get_filter(fd: BorrowedFd<'_>, max: usize) -> io::Result<(usize, Vec<u8>)> {
    let mut buf = vec![0u8; max.checked_mul(8).ok_or(io::ErrorKind::InvalidInput)?];
    let mut len = libc::socklen_t::try_from(max).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: the kernel writes at most `len` instructions of 8 bytes into
    // `buf`, which holds `max` = `len` of them (none for 0) and outlives the
    // call, and stores a count in `len`. The fd is borrowed, so it stays
    // open.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_GET_FILTER,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let n = len as usize;
    buf.truncate(n.min(max) * 8);
    Ok((n, buf))
}

/// `getsockopt(level, MCAST_MSFILTER)` of the group in `gf` (a `struct
/// group_filter`: interface at 0, group at 8, mode at 136, source count at
/// 140, sources from 144 on, 128 bytes each): sets the source count to
/// what `gf` holds room for before the call, since the kernel writes as
/// many sources as that count says (net/ipv4/igmp.c `ip_mc_gsfget()`,
/// net/ipv6/mcast.c `ip6_mc_msfget()`). `InvalidInput` for a buffer
/// shorter than 144 bytes or a level other than `SOL_IP`/`SOL_IPV6`.
pub fn get_msfilter(fd: BorrowedFd<'_>, level: i32, gf: &mut [u8]) -> io::Result<usize> {
    const SLIST: usize = 144;
    if gf.len() < SLIST || !(level == libc::SOL_IP || level == libc::SOL_IPV6) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let room = u32::try_from((gf.len() - SLIST) / 128).map_err(|_| io::ErrorKind::InvalidInput)?;
    gf[140..144].copy_from_slice(&room.to_ne_bytes());
    let mut len = libc::socklen_t::try_from(gf.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `gf` is a live, writable buffer of `len` bytes whose source
    // count (set above) is the number of 128-byte sources it holds after
    // its 144-byte head, which is all the kernel writes; the length it
    // stores goes to `len`. The fd is borrowed, so it stays open.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            libc::MCAST_MSFILTER,
            gf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len as usize)
}

/// Holds every signal that can be held (all but SIGKILL and SIGSTOP,
/// which `sigprocmask(2)` cannot block) pending in the calling thread until
/// the returned guard is dropped, when they are delivered (the previous
/// mask is put back). For a span in which the process must not die
/// half-way (a dump between its first change to the socket and the image
/// kept, or the socket as it was): any signal whose default action ends
/// the process (SIGUSR1, SIGALRM from `timeout -s ALRM`, the real-time
/// signals, SIGINT, SIGTERM...) waits. A fault (SIGSEGV, SIGBUS) raised by
/// the thread itself is still delivered at once (force_sig_fault()).
/// Other threads keep their masks: call it from a process's only thread.
pub fn hold_signals() -> io::Result<SignalsHeld> {
    // SAFETY: an all-zero sigset_t is a valid value, which sigfillset
    // initialises (every signal in the set).
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live sigset_t on this stack frame.
    unsafe { libc::sigfillset(&mut set) };
    // SAFETY: an all-zero sigset_t is a valid value for the old mask.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers refer to live sigset_t values on this frame;
    // pthread_sigmask changes only this thread's mask (glibc leaves its
    // own two internal signals out of it).
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(SignalsHeld { old })
}

/// The guard of [`hold_signals`].
pub struct SignalsHeld {
    old: libc::sigset_t,
}

impl std::fmt::Debug for SignalsHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignalsHeld")
    }
}

impl SignalsHeld {
    /// The signals that arrived while held and wait (`sigpending(2)`), by
    /// number (1..=64), lowest first.
    pub fn pending(&self) -> Vec<i32> {
        // SAFETY: an all-zero sigset_t is a valid value for sigpending to
        // fill.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a live sigset_t on this frame.
        if unsafe { libc::sigpending(&mut set) } != 0 {
            return Vec::new();
        }
        (1..=64)
            // SAFETY: `set` is initialised; sigismember only reads it and
            // answers -1 for a number that is no signal.
            .filter(|&sig| unsafe { libc::sigismember(&set, sig) } == 1)
            .collect()
    }

    /// Keeps the signals held until the process exits, so that none that
    /// waits is ever delivered: for a caller that has reported an outcome
    /// and exits with it (a dump whose image is kept must not then die by
    /// a signal that came too late to stop it).
    pub fn hold_until_exit(self) {
        std::mem::forget(self);
    }
}

impl Drop for SignalsHeld {
    fn drop(&mut self) {
        // SAFETY: `self.old` is the mask pthread_sigmask returned; setting
        // it again only changes this thread's mask (and delivers what was
        // held).
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// Sets SIGXFSZ to be ignored in the whole process (for good), so that a
/// write past `RLIMIT_FSIZE` fails with `EFBIG` instead of the signal's
/// default action ending the process (`write(2)`, `setrlimit(2)`).
pub fn ignore_sigxfsz() -> io::Result<()> {
    // SAFETY: SIG_IGN is a valid disposition for SIGXFSZ; no handler code
    // runs, so nothing needs to be async-signal-safe.
    let old = unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    if old == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

    /// SIGUSR1 and a real-time signal (whose default action ends the
    /// process) wait while held, as SIGTERM does; they are taken here with
    /// sigtimedwait() before the guard goes, so this test thread survives.
    #[test]
    fn every_terminating_signal_is_held() {
        let held = hold_signals().unwrap();
        let rt = libc::SIGRTMIN() + 3;
        for sig in [libc::SIGUSR1, libc::SIGALRM, libc::SIGTERM, rt] {
            // SAFETY: raise() sends `sig` to this thread only, where it is
            // blocked: it stays pending, no handler runs.
            assert_eq!(unsafe { libc::raise(sig) }, 0);
        }
        // SAFETY: an all-zero sigset_t is a valid value for sigpending to
        // fill; the pointer is to this frame.
        let mut pending: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sigpending(&mut pending) }, 0);
        for sig in [libc::SIGUSR1, libc::SIGALRM, libc::SIGTERM, rt] {
            // SAFETY: `pending` is a live, initialised sigset_t.
            let member = unsafe { libc::sigismember(&pending, sig) };
            assert_eq!(member, 1, "signal {sig} held");
            // SAFETY: an all-zero sigset_t is valid for sigemptyset.
            let mut one: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: `one` is a live sigset_t on this frame; sigtimedwait
            // takes the pending `sig` out of this thread's set (a zero
            // timeout: it is pending, so it returns at once).
            let got = unsafe {
                libc::sigemptyset(&mut one);
                libc::sigaddset(&mut one, sig);
                let t = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                libc::sigtimedwait(&one, std::ptr::null_mut(), &t)
            };
            assert_eq!(got, sig);
        }
        drop(held);
    }

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
    fn every_saved_option_is_plain() {
        for o in crate::options::TABLE {
            assert!(plain_option(o.level, o.name, Access::Get), "{}", o.label);
            assert!(plain_option(o.level, o.name, Access::Set), "{}", o.label);
        }
    }

    #[test]
    fn options_that_take_pointers_or_descriptors_are_refused() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        const TCP_ZEROCOPY_RECEIVE: i32 = 35;
        const IPT_SO_SET_REPLACE: i32 = 64;
        const IP6T_SO_GET_REVISION_MATCH: i32 = 68;
        const SO_PEERPIDFD: i32 = 77;
        for (level, name) in [
            (libc::SOL_TCP, TCP_ZEROCOPY_RECEIVE),
            (libc::SOL_IP, IPT_SO_SET_REPLACE),
            (libc::SOL_IPV6, IP6T_SO_GET_REVISION_MATCH),
            (libc::SOL_PACKET, 5),
        ] {
            let e = setsockopt_bytes(s.as_fd(), level, name, &[0; 64]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{level} {name}");
            let e = setsockopt_int(s.as_fd(), level, name, 3).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{level} {name}");
            let e = getsockopt_bytes(s.as_fd(), level, name, &mut [0; 64]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{level} {name}");
        }
        for name in [
            libc::SO_ATTACH_FILTER,
            libc::SO_ATTACH_BPF,
            libc::SO_ATTACH_REUSEPORT_EBPF,
        ] {
            let e = setsockopt_int(s.as_fd(), libc::SOL_SOCKET, name, 3).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name}");
        }
        let e =
            getsockopt_bytes(s.as_fd(), libc::SOL_SOCKET, SO_PEERPIDFD, &mut [0; 4]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // SO_GET_FILTER counts instructions, the source filters sources:
        // their own wrappers.
        assert!(!plain_option(
            libc::SOL_SOCKET,
            libc::SO_GET_FILTER,
            Access::Get
        ));
        assert!(!plain_option(
            libc::SOL_IP,
            libc::MCAST_MSFILTER,
            Access::Get
        ));
        assert!(!plain_option(
            libc::SOL_IPV6,
            libc::MCAST_MSFILTER,
            Access::Get
        ));
        assert!(plain_option(
            libc::SOL_IP,
            libc::MCAST_MSFILTER,
            Access::Set
        ));
        // Still allowed: IPv6 options above the first netfilter numbers.
        assert!(plain_option(libc::SOL_IPV6, libc::IPV6_TCLASS, Access::Set));
        assert!(plain_option(
            libc::SOL_IPV6,
            libc::IPV6_FREEBIND,
            Access::Get
        ));
    }

    #[test]
    fn a_filter_is_read_by_its_count_of_instructions() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(get_filter(s.as_fd(), 0).unwrap().0, 0);
        // ret #-1, four times.
        let insn = [6u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        attach_filter(s.as_fd(), &insn.repeat(4)).unwrap();
        assert_eq!(get_filter(s.as_fd(), 0).unwrap().0, 4);
        let (n, b) = get_filter(s.as_fd(), 4).unwrap();
        assert_eq!((n, b), (4, insn.repeat(4)));
        // Room for fewer: refused by the kernel, nothing written past it.
        let e = get_filter(s.as_fd(), 2).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn scm_rights_and_broken_cmsgs_are_refused() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = crate::wire::sockaddr_bytes(&s.local_addr().unwrap());
        let mut c = crate::wire::CmsgBuilder::default();
        c.push(libc::SOL_SOCKET, libc::SCM_RIGHTS, &0i32.to_ne_bytes());
        let e = sendmsg_bytes(s.as_fd(), b"x", &dst, c.bytes(), 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // A header whose length runs past the buffer.
        let mut bad = c.bytes().to_vec();
        bad[..8].copy_from_slice(&4096usize.to_ne_bytes());
        let e = sendmsg_bytes(s.as_fd(), b"x", &dst, &bad, 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // A truncated header.
        let e = sendmsg_bytes(s.as_fd(), b"x", &dst, &bad[..7], 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // An ordinary cmsg still goes out.
        let mut ok = crate::wire::CmsgBuilder::default();
        ok.push(libc::SOL_IP, libc::IP_TTL, &7i32.to_ne_bytes());
        assert_eq!(
            sendmsg_bytes(s.as_fd(), b"x", &dst, ok.bytes(), 0).unwrap(),
            1
        );
    }

    #[test]
    fn unknown_option_is_an_error() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = getsockopt_int(s.as_fd(), libc::SOL_UDP, 0x7fff).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT));
    }
}
