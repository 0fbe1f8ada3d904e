//! Checkpoint of one UDP socket: [`dump`] reads everything a restore needs
//! and leaves the socket exactly as it found it.
//!
//! # What is left untouched
//! The receive queue is read with `MSG_PEEK` only. Every option the dump
//! changes to do so (SO_PEEK_OFF, IP_PKTINFO, IP_RECVTTL, IP_RECVTOS, their
//! IPv6 twins, SO_TIMESTAMPNS, UDP_REPAIR) goes through a [`Guard`] that puts
//! the application's value back when the dump ends, also when it fails
//! midway (the guard's `Drop`). One kernel effect cannot be undone: a
//! datagram whose checksum is bad is dropped when peeked, exactly as the
//! application's own `recv` would have dropped it.
//!
//! # Zero-length datagrams
//! `__skb_try_recv_from_queue` (net/core/datagram.c:184) skips a zero-length
//! datagram during an offset walk once it has been peeked
//! (`_off >= skb->len && (_off || skb->peeked)`), while `recv` still returns
//! it. A walk therefore misses every zero-length datagram that was peeked
//! before: by the application (any `MSG_PEEK` that returned it) or by an
//! earlier dump. The kernel offers no count of queued datagrams to compare
//! with (SIOCINQ is the first datagram's length; udp_diag and SO_MEMINFO
//! report bytes of truesize, not datagrams, and truesize is not derivable
//! from the payload), so the dump cannot detect such a loss after the fact.
//! What it does instead:
//! 1. It probes, once per process, whether the kernel restarts the walk when
//!    SO_PEEK_OFF is set (the getsockopt series makes it clear `peeked`): a
//!    zero-length datagram sent to a socket in a private namespace must be
//!    seen by two walks in a row ([`peek_walk_restarts`]).
//! 2. On such a kernel every walk starts fresh, so it sees every datagram:
//!    the image says `zero_length_vouched = true`.
//! 3. Elsewhere it recovers what it can (a hidden zero-length datagram at the
//!    head of the queue is still returned by a plain `MSG_PEEK` with the peek
//!    offset disabled) and the image says `zero_length_vouched = false` with
//!    the reason, unless the queue is empty. [`DumpOptions::require_vouched`]
//!    turns that into an error. Note that on such a kernel the dump itself
//!    marks the zero-length datagrams it sees, so a second dump of the same
//!    socket cannot see them: which is exactly what the flag warns about.
//!
//! The marks are part of what the application observes, and the image keeps
//! them (`RecvDatagram.peeked`) where they can be observed: with the peek fix
//! only at the application's offset (setting SO_PEEK_OFF clears the others,
//! and the offset never moves back onto them), where the dump counts them
//! before its own walk and marks them again afterwards; without it, the
//! hidden zero-length head. The restore marks them again by peeking.
//!
//! # Send queue
//! Read before the receive queue, so that a dump refused there (pending data
//! that cannot be read) has changed nothing at all.
//! A corked socket's pending datagram is read through a [`SendQueueReader`]
//! (the kernel series' uapi: `getsockopt` with the full cork state, else
//! `recvmsg` with payload and destination only). On a kernel without either,
//! the dump checks whether anything is pending (SIOCOUTQ stays non-zero once
//! datagrams in flight have left) and refuses, unless told to drop it.

use crate::error::{Error, Op};
use crate::guard::Guard;
use crate::peek::{
    marked_at_offset, meminfo, peek_one, peek_walk, peek_walk_restarts, remark_at_offset,
    CONTROL_BUF, PEEK_BUF,
};
pub use crate::readers::{default_readers, probe_reader, SendQueueRead, SendQueueReader};
use crate::{options, sys, wire};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};
use udp_repair_proto::v1;

/// The dump's error: see [`Error`].
pub type DumpError = Error;

fn step<T>(what: &str, r: io::Result<T>) -> Result<T, Error> {
    r.map_err(|error| Error::new(Op::Dump, what, error))
}

fn refuse(what: &str, msg: String) -> Error {
    Error::with_kind(
        Op::Dump,
        what,
        crate::Kind::Refused,
        io::Error::new(io::ErrorKind::Unsupported, msg),
    )
}

/// What the caller accepts to lose, and how strict to be.
#[derive(Debug)]
pub struct DumpOptions {
    /// Dump a socket with pending (corked) data that no reader can read,
    /// recording that it was dropped.
    pub drop_pending: bool,
    /// Dump a socket with an eBPF filter (not readable), recording that it
    /// was dropped.
    pub drop_filter: bool,
    /// Dump a socket that is a member of multicast groups (memberships
    /// cannot be read back completely), recording that they were dropped.
    pub drop_multicast: bool,
    /// Take a pending socket error into the image (`getsockopt(SO_ERROR)`
    /// clears it on this socket; the restore re-creates it) instead of
    /// refusing the dump. Only where the error queue cannot hold entries
    /// (see [`crate::sockerr::error_queue_sources`]): those cannot be read
    /// without dequeuing them, and the dump refuses them by name.
    pub take_error: bool,
    /// Dump a pending datagram whose reader sees its payload and
    /// destination only (the `recvmsg` series' interface): the cork state
    /// its first send set by cmsgs cannot be read, and the restore takes it
    /// from the socket options. The image records it in `dropped_state`.
    /// Off: such a dump is refused by name.
    pub accept_partial_cork: bool,
    /// Dump on a kernel without `udp_diag`, where the shutdown state cannot
    /// be read (only `SHUT_RD` shows, through `poll`): a `SHUT_WR` is then
    /// lost, and the image records that it could not be read. Off: such a
    /// dump is refused by name.
    pub without_shutdown_state: bool,
    /// Fail instead of producing an image with `zero_length_vouched = false`.
    pub require_vouched: bool,
    /// Take the receive queue out of the socket (`recvmsg` without
    /// `MSG_PEEK`) instead of peeking it: linear in the queue's length,
    /// where an `SO_PEEK_OFF` walk is quadratic (each peek at offset k
    /// walks the k datagrams before it, net/core/datagram.c
    /// `__skb_try_recv_from_queue()`). For a checkpoint that ends the
    /// original (a migration: the original socket is discarded): on
    /// success the original's receive queue is empty. If the dump fails
    /// after the queue was taken, the datagrams are put back into the
    /// original by raw injection (`CAP_NET_RAW`), and the error says what
    /// changed (each comes back with a new receive timestamp, behind any
    /// datagram that arrived meanwhile). Off: the queue is peeked and left.
    pub drain_receive_queue: bool,
    /// Fail instead of naming, in `dropped_state`, per-datagram metadata
    /// the restore cannot carry (receive timestamps, IP options, the flow
    /// label...: [`options::METADATA_NOT_CARRIED`]) of queued datagrams,
    /// and the `SOF_TIMESTAMPING_OPT_ID` key counter, which no interface
    /// reads.
    pub refuse_metadata_loss: bool,
    /// The send-queue readers to try.
    pub readers: Vec<Box<dyn SendQueueReader>>,
    /// How long SIOCOUTQ may stay non-zero (datagrams in flight) before the
    /// dump concludes that data is pending, on kernels without a reader.
    pub outq_settle: Duration,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            drop_pending: false,
            drop_filter: false,
            drop_multicast: false,
            take_error: false,
            accept_partial_cork: false,
            without_shutdown_state: false,
            require_vouched: false,
            drain_receive_queue: false,
            refuse_metadata_loss: false,
            readers: default_readers(),
            outq_settle: Duration::from_millis(200),
        }
    }
}

fn osrelease() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn local_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    let a = rustix::net::getsockname(fd)?;
    SocketAddr::try_from(a).map_err(|_| io::Error::other("getsockname: not an inet address"))
}

fn peer_addr(fd: BorrowedFd<'_>) -> io::Result<Option<SocketAddr>> {
    match rustix::net::getpeername(fd) {
        Ok(Some(a)) => Ok(SocketAddr::try_from(a).ok()),
        Ok(None) => Ok(None),
        Err(rustix::io::Errno::NOTCONN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads the classic BPF filter, if any. `Err(Unsupported)` for an eBPF
/// filter (SO_GET_FILTER answers EACCES: no original program to return).
fn read_filter(fd: BorrowedFd<'_>) -> io::Result<Option<v1::Filter>> {
    let eacces = |e: io::Error| {
        if e.raw_os_error() == Some(libc::EACCES) {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "an eBPF socket filter (SO_ATTACH_BPF) is attached: the kernel cannot return it",
            )
        } else {
            e
        }
    };
    let n = match sys::get_filter(fd, 0).map_err(eacces)? {
        (0, _) => return Ok(None),
        (n, _) => n,
    };
    let (got, buf) = sys::get_filter(fd, n).map_err(|e| {
        if e.raw_os_error() == Some(libc::EINVAL) {
            io::Error::other(format!(
                "the filter grew past {n} instructions while reading it"
            ))
        } else {
            eacces(e)
        }
    })?;
    if got != n {
        return Err(io::Error::other(format!(
            "filter changed while reading it ({n} then {got} instructions)"
        )));
    }
    let insns = buf
        .chunks_exact(8)
        .map(|c| {
            let code = u64::from(u16::from_ne_bytes([c[0], c[1]]));
            let k = u64::from(u32::from_ne_bytes([c[4], c[5], c[6], c[7]]));
            code | u64::from(c[2]) << 16 | u64::from(c[3]) << 24 | k << 32
        })
        .collect();
    let locked = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_LOCK_FILTER).unwrap_or(0) != 0;
    Ok(Some(v1::Filter { insns, locked }))
}

/// Multicast groups the socket is a member of: candidates are the groups
/// joined on any interface of the calling thread's namespace (`igmp`,
/// `igmp6` under /proc/thread-self/net: call it there); MCAST_MSFILTER
/// answers EADDRNOTAVAIL for a group the socket has not joined. Returns
/// "group%ifindex" strings.
fn multicast_memberships(fd: BorrowedFd<'_>, v6: bool) -> io::Result<Vec<String>> {
    let proc_net = std::path::Path::new("/proc/thread-self/net");
    let mut found = Vec::new();
    let mut candidates: Vec<(u32, SocketAddr)> = Vec::new();
    if let Ok(s) = std::fs::read_to_string(proc_net.join("igmp")) {
        let mut ifindex = 0u32;
        for line in s.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if !line.starts_with(char::is_whitespace) {
                ifindex = f.first().and_then(|x| x.parse().ok()).unwrap_or(0);
            } else if let Some(g) = f.first().and_then(|x| u32::from_str_radix(x, 16).ok()) {
                // The group is printed as the in-memory u32 (network order).
                let ip = std::net::Ipv4Addr::from(g.to_ne_bytes());
                candidates.push((ifindex, SocketAddr::new(ip.into(), 0)));
            }
        }
    }
    if v6 {
        if let Ok(s) = std::fs::read_to_string(proc_net.join("igmp6")) {
            for line in s.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() >= 3 && f[2].len() == 32 {
                    let idx = f[0].parse().unwrap_or(0);
                    let mut ip = [0u8; 16];
                    for (i, b) in ip.iter_mut().enumerate() {
                        *b = u8::from_str_radix(&f[2][2 * i..2 * i + 2], 16).unwrap_or(0);
                    }
                    candidates.push((idx, SocketAddr::new(std::net::Ipv6Addr::from(ip).into(), 0)));
                }
            }
        }
    }
    for (ifindex, group) in candidates {
        // struct group_filter: gf_interface u32 (+pad), gf_group
        // sockaddr_storage at 8, gf_fmode at 136, gf_numsrc at 140, slist
        // at 144. The kernel wants at least 144 bytes.
        let mut gf = vec![0u8; 144 + 128];
        gf[0..4].copy_from_slice(&ifindex.to_ne_bytes());
        let sa = wire::sockaddr_bytes(&group);
        gf[8..8 + sa.len()].copy_from_slice(&sa);
        let level = if group.is_ipv4() {
            libc::SOL_IP
        } else {
            libc::SOL_IPV6
        };
        match sys::get_msfilter(fd, level, &mut gf) {
            Ok(_) => found.push(format!("{}%{ifindex}", group.ip())),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EADDRNOTAVAIL | libc::EINVAL | libc::ENODEV | libc::ENOPROTOOPT)
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

/// Checkpoints the socket with the default options (nothing may be lost
/// except what the image reports, e.g. unvouched zero-length datagrams).
pub fn dump(fd: BorrowedFd<'_>) -> Result<v1::Checkpoint, DumpError> {
    dump_with(fd, &DumpOptions::default())
}

/// Checkpoints socket `fd` of process `pid`, as a checkpoint/restore tool
/// finds it: a copy of the descriptor is taken with `pidfd_open(2)` and
/// `pidfd_getfd(2)` ([`sys::take_fd`]; the caller needs
/// `PTRACE_MODE_ATTACH_REALCREDS` over `pid`, e.g. `CAP_SYS_PTRACE`). The
/// socket may have been opened by any user: the
/// repair mode of both kernel series, like `TCP_REPAIR`, checks only the
/// caller's `CAP_NET_ADMIN` over the socket's network namespace
/// (`udp_lib_setsockopt()` in net/ipv4/udp.c).
///
/// # Errors
/// The step `pidfd_getfd(pid PID, fd FD)` when the descriptor cannot be
/// taken; else as [`dump_with`].
pub fn dump_pid(pid: i32, fd: i32, opts: DumpOptions) -> Result<v1::Checkpoint, DumpError> {
    let sock = step(
        &format!("pidfd_getfd(pid {pid}, fd {fd})"),
        sys::take_fd(pid, fd),
    )?;
    dump_with(sock.as_fd(), &opts)
}

/// Checkpoints the socket. On success and on failure the socket is left as
/// it was found (see the module documentation).
pub fn dump_with(fd: BorrowedFd<'_>, opts: &DumpOptions) -> Result<v1::Checkpoint, DumpError> {
    let sotype = step(
        "SO_TYPE",
        sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE),
    )?;
    let domain = step(
        "SO_DOMAIN",
        sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN),
    )?;
    let protocol = step(
        "SO_PROTOCOL",
        sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL),
    )?;
    if sotype != libc::SOCK_DGRAM
        || !(domain == libc::AF_INET || domain == libc::AF_INET6)
        || !(protocol == libc::IPPROTO_UDP || protocol == libc::IPPROTO_UDPLITE)
    {
        return Err(refuse(
            "socket type",
            format!("not a UDP socket (domain {domain}, type {sotype}, protocol {protocol})"),
        ));
    }
    let v6 = domain == libc::AF_INET6;
    let udplite = protocol == libc::IPPROTO_UDPLITE;
    let mut cp = v1::Checkpoint {
        schema_version: 1,
        family: if v6 {
            v1::Family::Inet6
        } else {
            v1::Family::Inet
        } as i32,
        protocol: if udplite {
            v1::Protocol::Udplite
        } else {
            v1::Protocol::Udp
        } as i32,
        kernel_release: osrelease(),
        dumped_at_unix_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        ..Default::default()
    };

    let bound = step("getsockname", local_addr(fd))?;
    cp.bound = Some(wire::to_proto(&bound));
    if let SocketAddr::V6(a) = bound {
        if a.scope_id() != 0 {
            cp.bound_ifname = step(
                "naming the bound address's interface",
                rustix::net::netdevice::index_to_name(fd, a.scope_id()).map_err(Into::into),
            )?;
        }
    }
    cp.peer = step("getpeername", peer_addr(fd))?.map(|p| wire::to_proto(&p));
    let mut dev = [0u8; 16];
    let n = step(
        "SO_BINDTODEVICE",
        sys::getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, &mut dev),
    )?;
    cp.bound_device = String::from_utf8_lossy(&dev[..n.min(16)])
        .trim_end_matches('\0')
        .to_string();
    cp.peek_offset = step(
        "SO_PEEK_OFF",
        sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF),
    )?;

    // Options first: they are read before the dump changes any of them.
    cp.options = step("socket options", options::save(fd, udplite))?;
    if let Some(why) = step("socket options", options::refused_if_set(fd))? {
        return Err(refuse("socket options", why));
    }

    // State that cannot be read back.
    match read_filter(fd) {
        Ok(f) => cp.filter = f,
        Err(e) if e.kind() == io::ErrorKind::Unsupported && opts.drop_filter => cp
            .dropped_state
            .push("eBPF socket filter (SO_ATTACH_BPF)".into()),
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            return Err(refuse(
                "socket filter",
                format!("{e}; pass the option to drop it to dump anyway"),
            ))
        }
        Err(e) => return Err(Error::new(Op::Dump, "SO_GET_FILTER", e)),
    }
    // Listed where the socket is: its namespace's /proc/thread-self/net,
    // entered (its owner may have moved to another namespace since it
    // joined, so /proc/PID/net would be the wrong one).
    let groups = match sys::socket_netns(fd) {
        // Without the privilege to name the socket's namespace: the
        // caller's own, if sock_diag lists the socket there; else its
        // memberships cannot be listed: refused, or dropped by name.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            // Listed here, the socket is in the caller's own namespace,
            // whose lists are the calling thread's (not /proc/PID/net, the
            // owner's current namespace, which it may have left).
            if step("sock_diag", crate::diag::listed_here(fd, v6, udplite))? {
                step("multicast memberships", multicast_memberships(fd, v6))?
            } else {
                let why = format!(
                    "its multicast memberships cannot be listed: the socket is not in this \
                     network namespace, and the dump cannot enter its own (SIOCGSKNS: {e}; needs \
                     CAP_NET_ADMIN over it)"
                );
                if !opts.drop_multicast {
                    return Err(refuse(
                        "multicast memberships",
                        format!("{why}: pass the option to drop them to dump anyway"),
                    ));
                }
                cp.dropped_state
                    .push(format!("multicast memberships, if any: {why}"));
                Vec::new()
            }
        }
        _ => step(
            "multicast memberships",
            crate::netns::in_netns_of(fd, || multicast_memberships(fd, v6)),
        )?,
    };
    if !groups.is_empty() {
        if !opts.drop_multicast {
            return Err(refuse(
                "multicast memberships",
                format!(
                    "the socket is a member of multicast group(s) {}; memberships (and their source filters' \
                     join order) cannot be restored faithfully: pass the option to drop them to dump anyway",
                    groups.join(", ")
                ),
            ));
        }
        cp.dropped_state
            .push(format!("multicast memberships: {}", groups.join(", ")));
    }

    // Shutdown state: no getsockopt reports it; sock_diag does.
    let unread = match step(
        "shutdown state (sock_diag)",
        crate::diag::shutdown_bits(fd, v6, udplite),
    )? {
        crate::diag::Shutdown::Bits(bits) => {
            cp.shutdown = bits;
            None
        }
        crate::diag::Shutdown::NoDiag => Some(
            "this kernel has no udp_diag (CONFIG_INET_UDP_DIAG; try modprobe udp_diag), and no \
             other interface reports whether the socket was shut down for writing (SHUT_WR)",
        ),
        crate::diag::Shutdown::NotFound => Some(
            "sock_diag does not list the socket (an unbound socket is in no table, and one of a \
             network namespace the dump cannot enter, without CAP_NET_ADMIN over it, is not \
             found), and no other interface reports whether it was shut down for writing \
             (SHUT_WR)",
        ),
    };
    if let Some(why) = unread {
        if !opts.without_shutdown_state {
            return Err(refuse(
                "shutdown state",
                format!("{why}: pass the option to dump without the shutdown state to dump anyway"),
            ));
        }
        let rd = step("poll(POLLRDHUP)", rdhup(fd))?;
        cp.shutdown = if rd { crate::diag::RCV_SHUTDOWN } else { 0 };
        cp.dropped_state
            .push(format!("shutdown state: {why}; a SHUT_WR, if any, is lost"));
    }

    // Refusals the options decide are made before the dump reads the
    // queue or takes the error: a draining dump that refused after taking
    // the queue out would put it back changed (each datagram's receive
    // timestamp, its order against datagrams arrived meanwhile).
    let queued = meminfo(fd).is_ok_and(|(rmem, _)| rmem > 0);
    if opts.refuse_metadata_loss {
        // The timestamp key counter (sk_tskey): no interface reads it, and
        // turning SOF_TIMESTAMPING_OPT_ID on in the restored socket starts
        // it at 0 (sock_set_timestamping(), net/core/sock.c).
        if options::saved_int(&cp.options, libc::SOL_SOCKET, libc::SO_TIMESTAMPING)
            .is_some_and(|v| v & crate::probe::SOF_TIMESTAMPING_OPT_ID != 0)
        {
            return Err(refuse(
                "socket options",
                format!("the restored socket would lose {OPT_ID_LOSS}"),
            ));
        }
        if queued {
            if let Some(what) = options::metadata_not_carried(&cp.options).first() {
                return Err(refuse(
                    "receive queue",
                    format!("the restored datagrams would lose {what}"),
                ));
            }
        }
    }
    // A draining dump that fails puts the queue back by sending it to the
    // socket's port over the loopback of the socket's network namespace.
    // Refused before the drain: a namespace that cannot be named (the
    // put-back would go to the caller's), a loopback that is down (nothing
    // arrives), another socket there that could take what is sent to the
    // port (an SO_REUSEPORT group's hash, a more specific address, a
    // wildcard: looked for whatever the options say now, as SO_REUSEADDR
    // may be cleared after the bind that needed it), and an address that
    // is not a unicast one of this host (a multicast group, a broadcast
    // address), whose datagrams nothing can re-create.
    if opts.drain_receive_queue && queued {
        let own = step("fstat", rustix::fs::fstat(fd).map_err(Into::into))?.st_ino as u64;
        let v6only = options::saved_int(&cp.options, libc::SOL_IPV6, libc::IPV6_V6ONLY)
            .is_some_and(|v| v != 0);
        let b = wire::canonical(bound);
        let mut target = crate::netns::Target {
            bound,
            v6only,
            peer: cp.peer.as_ref().map(wire::from_proto),
            device: 0,
        };
        // IPv6 datagrams come back over the loopback too.
        let takes_v6 = bound.is_ipv6() && !b.is_ipv4();
        let (others, lo_up, local) = step(
            "where a put-back would go",
            crate::netns::in_netns_of(fd, || {
                if !cp.bound_device.is_empty() {
                    target.device = rustix::net::netdevice::name_to_index(fd, &cp.bound_device)?;
                }
                let others = crate::netns::takers(&target, udplite, own)?;
                let probe = crate::inject::udp_socket(false, 17)?;
                let up = sys::interface_is_up(probe.as_fd(), "lo")?;
                let v6_off = takes_v6
                    && std::fs::read_to_string("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
                        .is_ok_and(|v| v.trim() == "1");
                Ok((
                    others,
                    up && !v6_off,
                    b.ip().is_unspecified() || crate::inject::is_local(b),
                ))
            })
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{e}: a put-back after a failed drain could not be aimed, so it does not drain"),
                )
            }),
        )?;
        if !lo_up {
            return Err(refuse(
                "bound address",
                "the loopback (lo) of the socket's network namespace is down (or, for an IPv6 \
                 socket, has IPv6 disabled): a put-back after a failed drain could not deliver \
                 the queue, so it does not drain; dump without --drain"
                    .to_string(),
            ));
        }
        if !others.is_empty() {
            let list: Vec<String> = others.iter().map(ToString::to_string).collect();
            return Err(refuse(
                "sockets sharing its port",
                format!(
                    "port {} is also bound by {} other socket(s) in its network namespace that \
                     could take datagrams sent to it ({}): a draining dump that failed would put \
                     the queue back to the port, where one of them could take it (an SO_REUSEPORT \
                     group's hash, a more specific address, a wildcard), so it does not drain; \
                     dump without --drain (the peek walk leaves the queue in place)",
                    bound.port(),
                    others.len(),
                    list.join(", ")
                ),
            ));
        }
        if !local {
            return Err(refuse(
                "bound address",
                format!(
                    "the socket is bound to {}, which is not a unicast address of this host (a \
                     multicast group, a broadcast address): its datagrams cannot be re-created \
                     (the restore refuses them), nor put back if the dump fails, so it does not \
                     drain; dump without --drain",
                    b.ip()
                ),
            ));
        }
    }

    // A pending error comes out of the first recvmsg, MSG_PEEK or not:
    // before any peek, see it without reading it.
    pending_error(fd, opts, &mut cp)?;
    let taken = cp.pending_error;
    let peer = cp.peer.as_ref().map(wire::from_proto);
    // What a draining dump took out of the receive queue, to put back if
    // the dump fails after it.
    let mut drained: Vec<v1::RecvDatagram> = Vec::new();
    let device = cp.bound_device.clone();
    let rest = (|| -> Result<v1::Checkpoint, Error> {
        // Zero-length datagrams that the application's walk has already
        // returned at its offset: counted first, as setting SO_PEEK_OFF (which
        // the dump does) clears their marks on a kernel with the peek fix, and
        // marked again at the end, also when the dump fails.
        let restarts = peek_walk_restarts();
        let marked = if restarts == Some(true) && cp.peek_offset >= 0 {
            step(
                "zero-length datagrams at the peek offset",
                marked_at_offset(fd, cp.peek_offset),
            )?
        } else {
            0
        };
        let queues = dump_queues(fd, v6, bound.port(), opts, &mut drained);
        // Also when none was marked: the walk marked every zero-length datagram,
        // and when it left the offset where it was (only zero-length datagrams
        // at it) nothing has set it since to clear them. (A drained queue is
        // no longer there to mark.)
        let remarked = if restarts == Some(true) && cp.peek_offset >= 0 && !opts.drain_receive_queue
        {
            remark_at_offset(fd, cp.peek_offset, marked)
        } else {
            Ok(())
        };
        let (mut rq, sq) = queues?;
        step(
            "marking the peeked zero-length datagrams at the peek offset again",
            remarked,
        )?;
        if marked > 0 {
            let mut at = 0usize;
            let mut left = marked;
            for d in &mut rq.datagrams {
                if left > 0 && d.payload.is_empty() && at == cp.peek_offset as usize {
                    d.peeked = true;
                    left -= 1;
                }
                at += d.payload.len();
            }
            if left > 0 {
                return Err(Error::new(Op::Dump, "receive queue", io::Error::other(format!(
                        "{marked} peeked zero-length datagram(s) at offset {} but the walk found {} there: \
                         the queue changed while dumping",
                        cp.peek_offset,
                        marked - left
                    ))));
            }
        }
        if sq.pending.as_ref().is_some_and(|p| !p.complete) {
            cp.dropped_state.push(format!(
                "cork state the pending datagram's first send set by cmsgs (the {} interface reads \
                 payload and destination only; the restore takes it from the socket options)",
                sq.reader
            ));
        }
        // A datagram addressed to what is not an address of this host (a
        // broadcast or multicast address, a TPROXY destination) arrives
        // again addressed to the loopback, through the loopback: its
        // IP_PKTINFO destination and interface change, which the
        // application observes. Named, or refused (`inject::Destinations`).
        // A per-datagram loss: refused under refuse_metadata_loss, else
        // named in the image.
        let note_loss = |cp: &mut v1::Checkpoint, what: String| -> Result<(), Error> {
            if opts.refuse_metadata_loss {
                return Err(refuse(
                    "receive queue",
                    format!("the restored datagrams would lose {what}"),
                ));
            }
            cp.dropped_state
                .push(format!("per-datagram metadata: {what}"));
            Ok(())
        };
        // Each datagram's destination (a link-local one with its arrival
        // interface as scope) and the bound address, judged local or not
        // where the socket is: in its network namespace (a dump from
        // another asks there; without the privilege to enter it, here).
        let dest_of = |d: &v1::RecvDatagram| {
            d.destination.as_ref().map(|dst| {
                let mut a = wire::from_proto(dst);
                if let SocketAddr::V6(v) = &mut a {
                    if v.scope_id() == 0 {
                        v.set_scope_id(d.ifindex.unwrap_or(0));
                    }
                }
                wire::canonical(a)
            })
        };
        let b = wire::canonical(bound);
        let asked: Vec<SocketAddr> = std::iter::once(b)
            .chain(rq.datagrams.iter().filter_map(dest_of))
            .collect::<std::collections::HashSet<_>>()
            .into_iter()
            .collect();
        let judge = |addrs: &[SocketAddr]| {
            let mut l = crate::inject::Locality::default();
            addrs
                .iter()
                .map(|&a| (a, l.is_local(a)))
                .collect::<std::collections::HashMap<_, _>>()
        };
        let locals =
            crate::netns::in_netns_of(fd, || Ok(judge(&asked))).unwrap_or_else(|_| judge(&asked));
        let is_local = |a: SocketAddr| locals.get(&a).copied().unwrap_or(false);
        // Bound to an address that is not a unicast one of this host (a
        // multicast group, a broadcast address): no datagram of its queue
        // can be re-created (inject() sends none off the host).
        let unreachable = !rq.datagrams.is_empty() && !b.ip().is_unspecified() && !is_local(b);
        if unreachable {
            let what = format!(
                "the receive queue ({} datagram(s)): the socket is bound to {}, which is not a \
                 unicast address of this host (a multicast group, a broadcast address), so its \
                 datagrams cannot be re-created (the restore refuses them, --accept-rx-loss \
                 drops them)",
                rq.datagrams.len(),
                b.ip()
            );
            if opts.refuse_metadata_loss {
                return Err(refuse(
                    "receive queue",
                    format!("the restore would lose {what}"),
                ));
            }
            cp.dropped_state.push(what);
        }
        for (i, d) in rq.datagrams.iter().enumerate() {
            let index = arrival_index(d);
            if index > 1 && d.ifname.is_empty() {
                let what = format!(
                    "datagram {i} arrived on interface index {index}, which no longer exists: it \
                     comes back as arriving on the loopback"
                );
                note_loss(&mut cp, what)?;
            }
            let Some(a) = dest_of(d).filter(|_| !unreachable) else {
                continue;
            };
            if is_local(a) {
                continue;
            }
            let what = format!(
                "datagram {i}'s destination {} (not a unicast address of this host: a broadcast \
                 or multicast group, or a TPROXY destination) is restored as the loopback address, \
                 arriving on the loopback interface (one from a link-local source, or for a \
                 socket bound to a device, cannot be: the restore refuses it, --accept-rx-loss \
                 drops it)",
                a.ip()
            );
            note_loss(&mut cp, what)?;
        }
        // Metadata the application asked for with each datagram that the
        // restore cannot carry: named, never silent.
        if !rq.datagrams.is_empty() {
            for what in options::metadata_not_carried(&cp.options) {
                note_loss(&mut cp, what.to_string())?;
            }
        }
        // The timestamp key counter: refused above under
        // refuse_metadata_loss.
        if options::saved_int(&cp.options, libc::SOL_SOCKET, libc::SO_TIMESTAMPING)
            .is_some_and(|v| v & crate::probe::SOF_TIMESTAMPING_OPT_ID != 0)
        {
            cp.dropped_state.push(OPT_ID_LOSS.to_string());
        }
        cp.receive_queue = Some(rq);
        cp.send_queue = Some(sq);
        cp.schema_version = udp_repair_proto::schema_for(&cp);
        step(
            "validating the checkpoint",
            udp_repair_proto::validate(&cp).map_err(io::Error::other),
        )?;
        Ok(cp)
    })();
    // A draining dump that failed puts the queue back first (a pending
    // error taken is set last, as the next recvmsg returns it first).
    let rest = match rest {
        Err(mut e) if !drained.is_empty() => {
            let what = put_back_drained(fd, &bound, peer, &device, udplite, &drained);
            e.error = io::Error::new(e.error.kind(), format!("{}; {what}", e.error));
            Err(e)
        }
        r => r,
    };
    match (rest, taken, peer) {
        // The dump took the pending error and then failed: the socket must
        // be left as it was found, so the error is set on it again.
        (Err(mut e), err @ 1.., Some(peer)) => {
            if let Err(again) = crate::sockerr::recreate(fd, peer, err) {
                e.error = io::Error::new(
                    e.error.kind(),
                    format!(
                        "{}; and the pending socket error {err} it had taken could not be set on \
                         the socket again ({again})",
                        e.error
                    ),
                );
            }
            Err(e)
        }
        (r, _, _) => r,
    }
}

/// The loss of the timestamp key counter, in words.
const OPT_ID_LOSS: &str = "the timestamp key counter (SOF_TIMESTAMPING_OPT_ID): no interface \
                           reads it; the restored socket's keys start again at 0";

/// Undoes a draining dump ([`DumpOptions::drain_receive_queue`]) that
/// succeeded but whose image could not be kept (a failed write, say): puts
/// `cp`'s receive queue back into the original socket `fd` by raw
/// injection (`CAP_NET_RAW`) and returns what changed, in words (each
/// datagram's receive timestamp is its re-injection's; any that arrived
/// since come before them; any that could not be put back are named).
pub fn put_back_receive_queue(fd: BorrowedFd<'_>, cp: &v1::Checkpoint) -> String {
    let Some(bound) = cp.bound.as_ref().map(wire::from_proto) else {
        return "the image has no bound address: nothing could be put back".into();
    };
    let udplite = cp.protocol == v1::Protocol::Udplite as i32;
    let empty = v1::ReceiveQueue::default();
    let q = cp.receive_queue.as_ref().unwrap_or(&empty);
    let peer = cp.peer.as_ref().map(wire::from_proto);
    put_back_drained(fd, &bound, peer, &cp.bound_device, udplite, &q.datagrams)
}

/// Undoes a [`DumpOptions::take_error`] dump that succeeded but whose image
/// could not be kept: sets `cp.pending_error` on the original socket `fd`
/// again (by an ICMP error through a raw socket, `CAP_NET_RAW`:
/// [`crate::sockerr::recreate`]) and says what happened, in words, as a
/// clause that starts with `"; "`; empty when the image holds no error.
/// Call it after [`put_back_receive_queue`]: the application's next
/// `recvmsg` returns the error before any datagram.
pub fn put_back_pending_error(fd: BorrowedFd<'_>, cp: &v1::Checkpoint) -> String {
    let err = cp.pending_error;
    if err == 0 {
        return String::new();
    }
    let Some(peer) = cp.peer.as_ref().map(wire::from_proto) else {
        return format!(
            "; the pending socket error {err} the dump had taken could not be set on the socket \
             again (the image has no peer): it is lost from the original socket"
        );
    };
    match crate::sockerr::recreate(fd, peer, err) {
        Ok(()) => format!(
            "; the pending socket error {err} the dump had taken was set on the socket again"
        ),
        Err(e) => format!(
            "; the pending socket error {err} the dump had taken could not be set on the socket \
             again ({e}): it is lost from the original socket"
        ),
    }
}

/// Puts the datagrams a draining dump took back into the original socket
/// (bound at `bound`, through `device`), by raw injection as a restore does
/// (`inject::inject()`), and says what changed: the sentence the failed
/// dump's error ends with.
fn put_back_drained(
    fd: BorrowedFd<'_>,
    bound: &SocketAddr,
    peer: Option<SocketAddr>,
    device: &str,
    udplite: bool,
    drained: &[v1::RecvDatagram],
) -> String {
    // In the socket's network namespace: sent from the caller's, the
    // datagrams would reach whatever socket holds that port there.
    crate::netns::in_netns_of(fd, || {
        Ok(put_back_here(fd, bound, peer, device, udplite, drained))
    })
    .unwrap_or_else(|e| {
        format!(
            "and the {} datagram(s) the dump had taken out of the receive queue could not be put \
             back: entering the socket's network namespace failed ({e}); they are lost from the \
             original socket",
            drained.len()
        )
    })
}

/// [`put_back_drained`] in the calling thread's network namespace, which
/// is the socket's.
fn put_back_here(
    fd: BorrowedFd<'_>,
    bound: &SocketAddr,
    peer: Option<SocketAddr>,
    device: &str,
    udplite: bool,
    drained: &[v1::RecvDatagram],
) -> String {
    let n = drained.len();
    let protocol = if udplite { 136 } else { 17 };
    let v6 = bound.is_ipv6();
    let src = |d: &v1::RecvDatagram| d.source.as_ref().map(wire::from_proto).map(wire::canonical);
    // A connected socket takes datagrams from its peer only (the lookup in
    // __udp4_lib_lookup() scores the peer): one from elsewhere, queued
    // before the connect(), cannot be put back.
    let (back, refused): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| match peer {
        Some(p) => src(&drained[i]) == Some(wire::canonical(p)),
        None => true,
    });
    let mut sent: Vec<v1::RecvDatagram> = back.iter().map(|&i| drained[i].clone()).collect();
    // Prepared as a restore prepares an image's: the interface each
    // arrived on, by name and index, as a link-local address's scope (a
    // datagram from fe80::2 on a veth goes back through that veth).
    let _ = name_interfaces(fd, &mut sent);
    let remapped = crate::restore::remap_interfaces(&sent).map(std::borrow::Cow::into_owned);
    let sent = remapped.unwrap_or(sent);
    // What comes back changed: a datagram to an address that is not one of
    // this host's (broadcast, multicast, TPROXY) is sent to the loopback
    // address and arrives on the loopback (inject::Destinations::pick()).
    let mut changed = Vec::new();
    let mut local = crate::inject::Locality::default();
    for (k, d) in sent.iter().enumerate() {
        let Some(dst) = d.destination.as_ref() else {
            continue;
        };
        let a = wire::canonical(wire::from_proto(dst));
        if !bound.ip().is_unspecified() || local.is_local(a) {
            continue;
        }
        changed.push((back[k], format!("{} (to {})", back[k], a.ip())));
    }
    // The queue held them under an SO_RCVBUF that may since have been
    // lowered: raised for the put-back if they might not fit (each
    // counted at twice its payload plus 1 KiB, above an skb's truesize),
    // then set back. The drop counter says whether any did not fit.
    let before = meminfo(fd).ok();
    let rcvbuf = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF).ok();
    let need = before.map_or(0, |(rmem, _)| rmem as usize)
        + sent
            .iter()
            .map(|d| 2 * (d.payload.len() + 1024))
            .sum::<usize>();
    let raised = rcvbuf.filter(|&r| (r.max(0) as usize) < need).filter(|_| {
        let half = i32::try_from(need / 2).unwrap_or(i32::MAX / 2);
        sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, half).is_ok()
    });
    let injected = crate::inject::inject(
        &sent,
        &mut crate::inject::Destinations::new(*bound),
        device,
        protocol,
        crate::inject::Strategy::Raw,
    );
    if injected.is_ok() {
        let _ = crate::inject::barrier(v6, std::time::Duration::from_secs(2));
    }
    let mut buffer = String::new();
    if let Some(r) = raised {
        // SO_RCVBUF(FORCE) stores twice its argument (sock_setsockopt()).
        buffer = match sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, r / 2) {
            Ok(()) => format!(
                "; SO_RCVBUF was raised for the put-back and set back to {r} bytes (now marked \
                 as set by the application, SOCK_RCVBUF_LOCK)"
            ),
            Err(e) => format!(
                "; SO_RCVBUF was raised for the put-back and could not be set back to {r} bytes \
                 ({e})"
            ),
        };
    }
    let dropped = match (before, meminfo(fd).ok()) {
        (Some((_, d0)), Some((_, d1))) => d1.wrapping_sub(d0),
        _ => 0,
    };
    let mut what = match injected {
        Ok(lost) => {
            let mut what = format!(
                "the dump had taken {n} datagram(s) out of the receive queue and put {} back by raw \
                 injection (each now has the receive timestamp of its re-injection and comes after any \
                 datagram that arrived meanwhile)",
                sent.len() - lost.len()
            );
            for l in &lost {
                what.push_str(&format!(
                    "; datagram {} could not be put back and is lost: {}",
                    back[l.index], l.error
                ));
            }
            let lost_at: std::collections::HashSet<usize> =
                lost.iter().map(|l| back[l.index]).collect();
            changed.retain(|(i, _)| !lost_at.contains(i));
            if !changed.is_empty() {
                let changed: Vec<&str> = changed.iter().map(|(_, c)| c.as_str()).collect();
                what.push_str(&format!(
                    "; datagram(s) {} went back to the loopback address, arriving on the loopback \
                     interface (their destination is not a unicast address of this host): \
                     IP_PKTINFO now says so",
                    changed.join(", ")
                ));
            }
            if dropped != 0 {
                what.push_str(&format!(
                    "; NOT verified: the socket dropped {dropped} datagram(s) during the put-back \
                     (its receive buffer, or its filter): they are lost"
                ));
            } else {
                let lost_k: std::collections::HashSet<usize> =
                    lost.iter().map(|l| l.index).collect();
                let kept: Vec<&v1::RecvDatagram> = sent
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| !lost_k.contains(k))
                    .map(|(_, d)| d)
                    .collect();
                what.push_str(&verify_put_back(fd, &kept));
            }
            what
        }
        Err((i, e)) => format!(
            "and putting back the {n} datagram(s) the dump had taken out of the receive queue failed at \
             datagram {} ({e}): from it on, they are lost from the original socket",
            back.get(i).copied().unwrap_or(i)
        ),
    };
    what.push_str(&buffer);
    if !refused.is_empty() {
        let ids: Vec<String> = refused.iter().map(|i| i.to_string()).collect();
        what.push_str(&format!(
            "; datagram(s) {} came from sources other than the connected peer (queued before the \
             connect()), which a connected socket does not accept again: lost",
            ids.join(", ")
        ));
    }
    what
}

/// What the put-back left in the queue, in words: up to 4 096 datagrams the
/// queue is walked (lengths and sources, `MSG_TRUNC`) and `sent` must be
/// its tail in order; beyond, the walk would take seconds (quadratic) and
/// the put-back is reported unverified.
fn verify_put_back(fd: BorrowedFd<'_>, sent: &[&v1::RecvDatagram]) -> String {
    const WALK_MAX: usize = 4096;
    if sent.len() > WALK_MAX {
        return format!("; not verified (more than {WALK_MAX} datagrams)");
    }
    let off = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap_or(-1);
    let walked = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)
        .and_then(|()| crate::peek::peek_heads(fd, 4 * WALK_MAX, 0));
    let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, off);
    let seen: Vec<(usize, Option<SocketAddr>)> = match walked {
        Ok(w) => w.iter().map(|h| (h.len, Some(h.source))).collect(),
        Err(e) => return format!("; not verified ({e})"),
    };
    let want: Vec<(usize, Option<SocketAddr>)> = sent
        .iter()
        .map(|d| {
            (
                d.payload.len(),
                d.source.as_ref().map(wire::from_proto).map(wire::canonical),
            )
        })
        .collect();
    let tail_ok = seen.len() >= want.len() && seen[seen.len() - want.len()..] == want[..];
    if tail_ok {
        format!(
            "; verified: the queue now holds {} datagram(s), these {} last",
            seen.len(),
            want.len()
        )
    } else {
        format!(
            "; NOT verified: the queue now holds {} datagram(s), and the {} put back are not its tail \
             in order (some were lost or went elsewhere)",
            seen.len(),
            want.len()
        )
    }
}

/// Names the interface each datagram arrived on (its `IP_PKTINFO` index,
/// or a link-local source's scope id), unless it is the loopback (index 1
/// in every namespace): a restore on another host matches it by name.
/// An interface deleted since a datagram arrived on it has no name: the
/// datagram keeps no `ifname` (the dump then names the change).
fn name_interfaces(fd: BorrowedFd<'_>, datagrams: &mut [v1::RecvDatagram]) -> io::Result<()> {
    for d in datagrams.iter_mut() {
        let index = arrival_index(d);
        if index > 1 {
            match rustix::net::netdevice::index_to_name(fd, index) {
                Ok(name) => d.ifname = name,
                Err(rustix::io::Errno::NODEV) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// The index of the interface a datagram arrived on: its IP_PKTINFO one,
/// else a link-local source's scope; 0 when neither says.
fn arrival_index(d: &v1::RecvDatagram) -> u32 {
    let scope = d.source.as_ref().map(|s| s.scope_id).unwrap_or(0);
    d.ifindex.filter(|i| *i != 0).unwrap_or(scope)
}

/// Whether `poll` reports `POLLRDHUP` (the socket is shut down for
/// reading). Reads nothing.
fn rdhup(fd: BorrowedFd<'_>) -> io::Result<bool> {
    use rustix::event::PollFlags;
    Ok(sys::poll_now(fd, PollFlags::RDHUP)?.contains(PollFlags::RDHUP))
}

/// Refuses, by name, a socket whose `POLLERR` says an error is pending,
/// before anything reads (and so clears) it; with
/// [`DumpOptions::take_error`] and no error-queue source, takes the error
/// into `cp.pending_error` instead (see [`crate::sockerr`]).
fn pending_error(
    fd: BorrowedFd<'_>,
    opts: &DumpOptions,
    cp: &mut v1::Checkpoint,
) -> Result<(), Error> {
    const WHAT: &str = "pending socket error";
    if !step("poll(POLLERR)", crate::sockerr::error_signalled(fd))? {
        return Ok(());
    }
    let sources = crate::sockerr::error_queue_sources(&cp.options);
    if !sources.is_empty() {
        return Err(refuse(
            WHAT,
            format!(
                "POLLERR is set: a socket error or an error-queue entry is pending ({} can queue \
                 errors), and neither can be read without consuming it (SO_ERROR clears the error, \
                 MSG_ERRQUEUE dequeues an entry, and reading the receive queue returns the error \
                 first): the dump would lose it",
                sources.join(", ")
            ),
        ));
    }
    if !opts.take_error {
        return Err(refuse(
            WHAT,
            "a socket error is pending (POLLERR with no option on that queues errors: an ICMP \
             error such as port unreachable set it, unless an error-queue entry was left by an \
             option since turned off); the application's next recv returns it, and the dump's \
             first peek would consume it: pass the option to take the error into the image \
             (SO_ERROR clears it on this socket, the restore re-creates it)"
                .into(),
        ));
    }
    let Some(peer) = cp.peer.as_ref().map(wire::from_proto) else {
        return Err(refuse(
            WHAT,
            "POLLERR is set on a socket that is not connected: an error set while it was \
             connected, or an error-queue entry left by an option since turned off; the restore \
             can re-create an error only on a connected socket (by an ICMP error), and nothing \
             reads an error-queue entry without dequeuing it"
                .into(),
        ));
    };
    let err = step(
        "SO_ERROR",
        sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR),
    )?;
    if err != 0 && !crate::sockerr::recreatable(err, peer) {
        return Err(refuse(
            WHAT,
            format!(
                "the pending socket error {err} ({}) was taken from the socket, and no ICMP error \
                 sets it, so the restore could not re-create it: it is no longer on this socket",
                io::Error::from_raw_os_error(err)
            ),
        ));
    }
    cp.pending_error = err;
    if step("poll(POLLERR)", crate::sockerr::error_signalled(fd))? {
        // Put the taken error back before refusing.
        let back = match err {
            0 => String::new(),
            e => match crate::sockerr::recreate(fd, peer, e) {
                Ok(()) => format!("; error {e} was set on the socket again"),
                Err(x) => format!("; error {e} could not be set on the socket again ({x})"),
            },
        };
        return Err(refuse(
            WHAT,
            format!(
                "POLLERR is still set after SO_ERROR read error {err}: an error-queue entry (left \
                 by an option since turned off) or an error that arrived meanwhile, which nothing \
                 reads without consuming{back}"
            ),
        ));
    }
    Ok(())
}

/// Both queues. The send queue first, so that a dump refused there has
/// changed nothing (on a kernel without the peek fix the receive queue's
/// walk marks zero-length datagrams for good), and under its own guard:
/// repair mode must be off again before the receive queue is peeked (in
/// repair mode the `recvmsg` series' `MSG_PEEK` reads the send queue).
fn dump_queues(
    fd: BorrowedFd<'_>,
    v6: bool,
    port: u16,
    opts: &DumpOptions,
    drained: &mut Vec<v1::RecvDatagram>,
) -> Result<(v1::ReceiveQueue, v1::SendQueue), DumpError> {
    let mut guard = Guard::new(fd);
    // The `recvmsg` series' read moves SO_PEEK_OFF (and the 2021
    // original reset it on entering repair mode): remembered, put back.
    let sq = step(
        "SO_PEEK_OFF",
        guard.remember(libc::SOL_SOCKET, libc::SO_PEEK_OFF),
    )
    .and_then(|()| dump_send_queue(fd, &mut guard, opts));
    let put_back = guard.finish();
    let sq = sq?;
    step("putting the socket's options back", put_back)?;

    let mut guard = Guard::new(fd);
    let rq = dump_receive_queue(fd, &mut guard, v6, port, opts, drained);
    let put_back = guard.finish();
    let rq = rq?;
    step("putting the socket's options back", put_back)?;
    Ok((rq, sq))
}

fn dump_receive_queue(
    fd: BorrowedFd<'_>,
    guard: &mut Guard<'_>,
    v6: bool,
    port: u16,
    opts: &DumpOptions,
    drained: &mut Vec<v1::RecvDatagram>,
) -> Result<v1::ReceiveQueue, DumpError> {
    // First, so that it is put back last: in the 2021 original of the
    // `recvmsg` series, turning repair mode back on (below) reset it.
    step(
        "SO_PEEK_OFF",
        guard.remember(libc::SOL_SOCKET, libc::SO_PEEK_OFF),
    )?;
    // A socket the application (a restore tool) left in repair mode: the
    // `recvmsg` series' MSG_PEEK would read the send queue.
    match guard.set(libc::SOL_UDP, crate::UDP_REPAIR, 0) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {}
        Err(e) => return Err(Error::new(Op::Dump, "UDP_REPAIR off", e)),
    }
    let what = "turning on receive metadata";
    step(what, guard.set(libc::SOL_IP, libc::IP_PKTINFO, 1))?;
    step(what, guard.set(libc::SOL_IP, libc::IP_RECVTTL, 1))?;
    step(what, guard.set(libc::SOL_IP, libc::IP_RECVTOS, 1))?;
    if v6 {
        step(what, guard.set(libc::SOL_IPV6, libc::IPV6_RECVPKTINFO, 1))?;
        step(what, guard.set(libc::SOL_IPV6, libc::IPV6_RECVHOPLIMIT, 1))?;
        step(what, guard.set(libc::SOL_IPV6, libc::IPV6_RECVTCLASS, 1))?;
    }
    step(what, guard.enable_timestamps())?;

    let restarts = peek_walk_restarts();
    let rcvbuf = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)
        .unwrap_or(1 << 20)
        .max(1) as usize;
    // The queue may hold more than SO_RCVBUF (lowered after it filled):
    // its own count bounds it too.
    let rmem = meminfo(fd).map_or(0, |(rmem, _)| rmem as usize);
    // Every queued skb costs at least a few hundred bytes of truesize:
    // this bound only stops a walk that traffic keeps feeding.
    let max = rcvbuf.max(rmem) / 256 + 1024;
    // Before a drain empties it: what the queue holds as the kernel counts.
    let before_drain = if opts.drain_receive_queue {
        meminfo(fd).ok()
    } else {
        None
    };
    let walked = if opts.drain_receive_queue {
        // recvmsg returns every datagram, a zero-length one peeked before
        // included: nothing is hidden from a drain.
        let expect = before_drain.map_or(0, |(rmem, _)| rmem as usize);
        crate::peek::drain(fd, port, max, expect, drained).map(|()| crate::peek::Walk {
            datagrams: drained.clone(),
        })
    } else {
        // Set even when it is 0 already: a kernel with the peek fix
        // restarts the walk (clears the `peeked` marks) on every set.
        step(
            "setting SO_PEEK_OFF to 0",
            sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0),
        )?;
        peek_walk(fd, port, max)
    };
    let mut walk = walked.map_err(|e| match e.raw_os_error() {
        // Not the walk's own failure: an error of the socket, which a peek
        // returns (and clears) before any datagram.
        Some(
            libc::ECONNREFUSED
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EACCES
            | libc::EMSGSIZE
            | libc::EPROTO
            | libc::ENOPROTOOPT
            | libc::EOPNOTSUPP
            | libc::ETIMEDOUT
            | libc::ECONNRESET,
        ) => refuse(
            "pending socket error",
            format!(
                "a socket error ({e}) arrived while the receive queue was being read, and the \
                 peek consumed it: the application will not see it"
            ),
        ),
        _ => Error::new(Op::Dump, "peeking the receive queue", e),
    })?;
    step(
        "naming the interfaces datagrams arrived on",
        name_interfaces(fd, &mut walk.datagrams),
    )?;

    let mut vouched = true;
    let mut note = String::new();
    if opts.drain_receive_queue {
        // Every datagram was read; what a drain cannot tell, on a kernel
        // without the peek fix, is which zero-length ones an earlier walk
        // had marked (marks that hide them from the application's later
        // walks there).
        let zero = walk
            .datagrams
            .iter()
            .filter(|d| d.payload.is_empty())
            .count();
        if restarts != Some(true) && zero > 0 {
            vouched = false;
            note = format!(
                "the receive queue was drained: all {zero} zero-length datagram(s) were read, but on a \
                 kernel that does not restart the peek walk when SO_PEEK_OFF is set, which of them an \
                 earlier walk had marked (hiding them from later walks) is not known"
            );
        }
    } else if restarts != Some(true) {
        // A zero-length datagram peeked before and now at the head is hidden
        // from the walk but still returned by a peek without offset.
        step(
            "SO_PEEK_OFF -1",
            sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, -1),
        )?;
        let mut buf = vec![0u8; PEEK_BUF];
        let mut control = vec![0u8; CONTROL_BUF];
        let head = step(
            "peeking the queue head",
            peek_one(fd, &mut buf, &mut control, port),
        )?;
        let mut recovered = 0;
        if let Some(h) = head {
            let first_is_empty = walk.datagrams.first().is_some_and(|d| d.payload.is_empty());
            if h.payload.is_empty() && !first_is_empty {
                // Hidden from the walk: a peek has returned it before.
                walk.datagrams
                    .insert(0, v1::RecvDatagram { peeked: true, ..h });
                recovered = 1;
            }
        }
        let (rmem, _) = meminfo(fd).unwrap_or((1, 0));
        if !walk.datagrams.is_empty() || rmem != 0 {
            vouched = false;
            let zero = walk
                .datagrams
                .iter()
                .filter(|d| d.payload.is_empty())
                .count();
            note = format!(
                "{}: zero-length datagrams peeked before this dump (by the application or an earlier dump) are \
                 invisible to a peek walk (net/core/datagram.c:184) and no kernel interface counts queued \
                 datagrams; {zero} zero-length datagram(s) were found ({recovered} recovered at the head), \
                 others may be missing. This dump marked those it saw, so a later dump of this socket will miss \
                 them",
                match restarts {
                    Some(false) => "this kernel does not restart the peek walk when SO_PEEK_OFF is set",
                    _ => "could not probe whether this kernel restarts the peek walk",
                }
            );
        }
    }
    if !vouched && opts.require_vouched {
        return Err(refuse("receive queue", note));
    }
    let (rmem, drops) = before_drain.unwrap_or_else(|| meminfo(fd).unwrap_or((0, 0)));
    let bytes = walk.datagrams.iter().map(|d| d.payload.len() as u64).sum();
    Ok(v1::ReceiveQueue {
        count: walk.datagrams.len() as u32,
        bytes,
        zero_length_vouched: vouched,
        zero_length_note: note,
        rmem_alloc: rmem.into(),
        drops,
        datagrams: walk.datagrams,
    })
}

fn dump_send_queue(
    fd: BorrowedFd<'_>,
    guard: &mut Guard<'_>,
    opts: &DumpOptions,
) -> Result<v1::SendQueue, DumpError> {
    let udp_cork = step(
        "UDP_CORK",
        sys::getsockopt_int(fd, libc::SOL_UDP, libc::UDP_CORK),
    )? != 0;
    let mut sq = v1::SendQueue {
        udp_cork,
        reader: "none".into(),
        ..Default::default()
    };
    // A socket an earlier restore marked (it dropped the pending datagram):
    // the mark is state too, and the restore sets it again.
    if step(
        "UDP_REPAIR_PENDING_LOST",
        crate::uapi::pendinglost::marked(fd),
    )? == Some(true)
    {
        sq.dropped = true;
        sq.note = "a pending datagram an earlier restore dropped: the socket is marked \
                   (UDP_REPAIR_PENDING_LOST), so the application's next append fails with \
                   ECANCELED; the restore marks the new socket again"
            .into();
    }
    for r in &opts.readers {
        if r.needs_repair_mode() {
            match guard.set(libc::SOL_UDP, crate::UDP_REPAIR, 1) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOPROTOOPT | libc::EINVAL)) => {
                    continue
                }
                Err(e) => return Err(Error::new(Op::Dump, "UDP_REPAIR on", e)),
            }
        }
        match r.read(fd) {
            Ok(SendQueueRead::Unsupported) => continue,
            Ok(SendQueueRead::Empty) => {
                sq.reader = r.name().into();
                return Ok(sq);
            }
            Ok(SendQueueRead::Pending(p)) => {
                sq.reader = r.name().into();
                if !p.complete {
                    let why = format!(
                        "the {} interface returns the pending datagram's payload and destination only: \
                         cork state its first send set by cmsgs (TTL or hop limit, TOS or traffic class, \
                         mark, priority, UDP_SEGMENT, transmit time, IP options and IPv6 extension \
                         headers) cannot be read, and the restore would take it from the socket options",
                        r.name()
                    );
                    if !opts.accept_partial_cork {
                        return Err(refuse(
                            "send queue",
                            format!("{why}; pass the option accepting that to dump anyway"),
                        ));
                    }
                    sq.note = format!("{why}; accepted as requested");
                }
                sq.pending = Some(*p);
                return Ok(sq);
            }
            Err(e) => {
                return Err(Error::new(
                    Op::Dump,
                    format!("reading the send queue ({})", r.name()),
                    e,
                ))
            }
        }
    }
    // No reader: find out whether anything is pending at all. SIOCOUTQ
    // counts sk_wmem_alloc, i.e. pending data and datagrams still in
    // flight; the latter leave quickly.
    let deadline = Instant::now() + opts.outq_settle;
    let outq = loop {
        let q = step("SIOCOUTQ", sys::outq(fd))?;
        if q == 0 || Instant::now() >= deadline {
            break q;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if outq > 0 {
        // SIOCOUTQ cannot tell a corked datagram from datagrams a slow
        // qdisc or device still holds, and without a reader nothing else
        // can: say both.
        let why = format!(
            "{outq} bytes of the send buffer are still in use after {} ms{}: either a pending \
             datagram (corked by UDP_CORK or MSG_MORE), which this kernel has no UDP_REPAIR \
             interface to read back, or datagrams still in flight (a slow qdisc or device), \
             which this kernel cannot tell apart",
            opts.outq_settle.as_millis(),
            if udp_cork {
                ", UDP_CORK is set"
            } else {
                ", UDP_CORK is off"
            }
        );
        if !opts.drop_pending {
            return Err(refuse(
                "send queue",
                format!(
                    "{why}; wait for datagrams in flight (a longer settle time), or pass the \
                     option to drop pending data to dump anyway"
                ),
            ));
        }
        sq.dropped = true;
        sq.note = format!(
            "{why}; dumped as requested: a pending datagram, if there was one, is not in the \
             image and the restored socket has nothing pending"
        );
    }
    Ok(sq)
}
