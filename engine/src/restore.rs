//! Recreating a UDP socket from a checkpoint: all or nothing.
//!
//! [`restore`] builds a new socket step by step; on any failure the socket
//! (and every temporary socket) is closed and the error names the step.
//! Order, and why:
//! 0. the image is checked before any socket exists: the schema
//!    (`udp_repair_proto::validate`), and every option must be a row of
//!    [`options::TABLE`] with a value of its layout
//!    ([`options::check_saved`]): an image naming any other option is
//!    refused, so a hostile image cannot make a root `restore` set it;
//! 1. socket(); the options, except those that would change how the
//!    re-injected datagrams are received (UDP_ENCAP, IP_MINTTL,
//!    IPV6_MINHOPCOUNT) and SO_RCVBUF, which is raised (SO_RCVBUFFORCE) so
//!    that the queue fits whatever truesize the re-created skbs have;
//! 2. SO_BINDTODEVICE, bind() to the saved address;
//! 3. the receive queue ([`crate::inject`]), while the socket is not yet
//!    connected (a connected socket would refuse other sources) and has no
//!    filter; then a check that every datagram arrived;
//! 4. the deferred options, connect() to the saved peer, SO_RCVBUF, the
//!    socket filter (and its lock), SO_PEEK_OFF;
//! 5. the send queue: UDP_CORK, and the pending datagram re-sent with its
//!    cork state as cmsgs, corked by UDP_CORK if it was, by MSG_MORE
//!    otherwise;
//! 6. the shutdown state (after the send queue: SHUT_WR fails a send);
//!    every saved option read back and compared;
//! 7. the pending socket error, if the image holds one: an ICMP error sent
//!    to the socket sets it ([`crate::sockerr::recreate`]), last, since a
//!    send or a peek would consume it.
//!
//! Known limits: the receive timestamps are the restore's (the image keeps
//! the originals); a UDP_GRO aggregate is sent from a socket bound to its
//! source, so while that port is taken on this host it cannot be
//! re-created (refused by name); a datagram is re-injected bound to the
//! interface it arrived on only to an address of that interface (else it
//! would leave the machine: refused by name); datagrams addressed to what
//! is not an address of this host arrive addressed to the loopback,
//! through the loopback (the dump names them; one from a link-local
//! source, or for a socket bound to a device, is refused by name). See
//! engine/INVENTORY.md.

use crate::error::{Error, Kind, Op};
use crate::inject::{self, Strategy};
use crate::options;
use crate::peek;
use crate::probe;
use crate::sys;
use crate::wire;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};
use udp_repair_proto::v1;

/// The restore's error: see [`Error`].
pub type RestoreError = Error;

fn step<T>(what: impl Into<String>, r: io::Result<T>) -> Result<T, Error> {
    r.map_err(|error| Error::new(Op::Restore, what, error))
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// How the receive queue is re-created.
    pub strategy: Strategy,
    /// Keep going when a datagram cannot be re-created (transparent
    /// strategy: its source port is taken), reporting it, instead of failing.
    pub accept_rx_loss: bool,
    /// How long to wait for the re-created datagrams to arrive.
    pub delivery_timeout: Duration,
    /// Grant the image values that need a capability to set
    /// ([`crate::trust::privileged`]: a mark, a priority above 6, a
    /// transparent socket, a buffer beyond rmem_max, a low port, datagrams
    /// from addresses not of this host, ...). Off by default: a restore
    /// running as root would otherwise grant them to whoever wrote the
    /// image; set it for images of a writer you trust (yourself, a dump
    /// run as root).
    pub trust_image: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            strategy: Strategy::Raw,
            accept_rx_loss: false,
            delivery_timeout: Duration::from_secs(2),
            trust_image: false,
        }
    }
}

/// What a restore did, beyond the socket.
#[derive(Debug, Default)]
pub struct RestoreReport {
    /// Datagrams re-created in the receive queue.
    pub restored: usize,
    /// Datagrams that could not be (only with `accept_rx_loss`).
    pub lost: Vec<(usize, String)>,
    /// Time spent on the receive queue.
    pub rx_time: Duration,
    /// The image says a pending datagram was dropped, and the restored
    /// socket is marked so that the application's next append to it fails
    /// with `ECANCELED` (`UDP_REPAIR_PENDING_LOST`; false on a kernel
    /// without it, where the loss stays as the image records it).
    pub pending_marked_lost: bool,
}

/// Options set only after the receive queue is back.
fn deferred(o: &v1::SockOpt) -> bool {
    matches!(
        (o.level, o.name),
        (libc::SOL_SOCKET, libc::SO_RCVBUF)
            | (libc::SOL_SOCKET, options::SO_BUF_LOCK)
            | (libc::SOL_UDP, libc::UDP_ENCAP)
            | (libc::SOL_IP, libc::IP_MINTTL)
            | (libc::SOL_IPV6, libc::IPV6_MINHOPCOUNT)
    )
}

/// Restores with the default options (raw strategy, no loss accepted, the
/// image not trusted with privileged values).
pub fn restore(cp: &v1::Checkpoint) -> Result<OwnedFd, RestoreError> {
    restore_with(cp, &RestoreOptions::default()).map(|(fd, _)| fd)
}

/// Restores the socket; see the module documentation.
pub fn restore_with(
    cp: &v1::Checkpoint,
    opts: &RestoreOptions,
) -> Result<(OwnedFd, RestoreReport), RestoreError> {
    udp_repair_proto::validate(cp).map_err(|e| {
        Error::with_kind(
            Op::Restore,
            "validating the checkpoint",
            Kind::InvalidImage,
            io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        )
    })?;
    let v6 = cp.family == v1::Family::Inet6 as i32;
    let udplite = cp.protocol == v1::Protocol::Udplite as i32;
    let protocol: u8 = if udplite { 136 } else { 17 };
    // Before any socket exists: only the table's options, with values of
    // their rows' layouts (an image is untrusted input).
    options::check_saved(&cp.options, v6, udplite).map_err(|e| {
        Error::with_kind(
            Op::Restore,
            "validating the socket options",
            Kind::InvalidImage,
            io::Error::new(io::ErrorKind::InvalidData, e),
        )
    })?;
    // Before any socket exists: what the image's writer could not have set.
    if !opts.trust_image {
        let asked = crate::trust::privileged(cp);
        if !asked.is_empty() {
            let list: Vec<String> = asked.iter().map(|p| p.to_string()).collect();
            return Err(Error::with_kind(
                Op::Restore,
                "checking what the image asks of a privileged restore",
                Kind::Refused,
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "the image asks for values its writer may not have had: {}; restore it \
                         trusted (--trust-image, RestoreOptions::trust_image) only if you trust \
                         whoever wrote it",
                        list.join("; ")
                    ),
                ),
            ));
        }
    }
    // A pending error is re-created last; whether it can be is known now.
    if cp.pending_error != 0 {
        let why = match &cp.peer {
            None => Some("the socket is not connected: an ICMP error sets the error only on a connected socket".to_string()),
            Some(p) if !crate::sockerr::recreatable(cp.pending_error, wire::from_proto(p)) => {
                Some("no ICMP error sets this errno on a UDP socket".to_string())
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            return Err(Error::with_kind(
                Op::Restore,
                format!(
                    "re-creating the pending socket error {} ({})",
                    cp.pending_error,
                    io::Error::from_raw_os_error(cp.pending_error)
                ),
                Kind::Refused,
                io::Error::new(io::ErrorKind::Unsupported, why),
            ));
        }
    }
    // An IPV6_V6ONLY socket receives no IPv4 datagram: an image that says
    // it did is inconsistent, and the IPv4 datagram re-created would reach
    // whatever IPv4 socket holds the port here.
    let v6only =
        options::saved_int(&cp.options, libc::SOL_IPV6, libc::IPV6_V6ONLY).is_some_and(|v| v != 0);
    if let (true, Some(q)) = (v6 && v6only, cp.receive_queue.as_ref()) {
        if let Some(i) = q.datagrams.iter().position(|d| {
            d.source
                .as_ref()
                .is_some_and(|s| s.ip.len() == 4 || is_mapped(&s.ip))
        }) {
            return Err(Error::with_kind(
                Op::Restore,
                "validating the checkpoint",
                Kind::InvalidImage,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "receive queue datagram {i} has an IPv4 source, and the socket is \
                         IPV6_V6ONLY, which receives no IPv4 datagram"
                    ),
                ),
            ));
        }
    }
    // A reuseport group on this address: re-created datagrams would be
    // spread among its members (udp_reuseport_add_sock(), the group's
    // hash), not queued on the new socket. Refused, trusted or not.
    let queued = cp
        .receive_queue
        .as_ref()
        .is_some_and(|q| !q.datagrams.is_empty());
    let reuseport = options::saved_int(&cp.options, libc::SOL_SOCKET, libc::SO_REUSEPORT)
        .is_some_and(|v| v != 0);
    if let (true, true, Some(b)) = (queued, reuseport, cp.bound.as_ref().map(wire::from_proto)) {
        if b.port() != 0 && crate::trust::port_held(b) {
            return Err(Error::with_kind(
                Op::Restore,
                "re-creating the receive queue",
                Kind::Refused,
                io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "the socket joins the SO_REUSEPORT group on {b}, which another socket here \
                         holds: the re-created datagrams would be spread among the group's members, \
                         not queued on the restored socket; stop the others first, or restore into \
                         a free port"
                    ),
                ),
            ));
        }
    }
    // The interfaces datagrams arrived on, by name, on this host.
    let empty_rq = v1::ReceiveQueue::default();
    let datagrams = remap_interfaces(&cp.receive_queue.as_ref().unwrap_or(&empty_rq).datagrams)?;
    let sock = step(
        "socket()",
        inject::udp_socket(v6, protocol).map_err(|e| {
            if udplite && e.raw_os_error() == Some(libc::EPROTONOSUPPORT) {
                // Mainline removed UDP-Lite ("ipv4: Retire UDP-Lite.",
                // "ipv6: Retire UDP-Lite."): 7.1 has no IPPROTO_UDPLITE.
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the socket is UDP-Lite, and this kernel has no UDP-Lite",
                )
            } else {
                e
            }
        }),
    )?;
    let fd = sock.as_fd();
    let mut report = RestoreReport::default();

    // 1. Options (before bind: IPV6_V6ONLY, SO_REUSE*, IP_FREEBIND/TRANSPARENT).
    step("socket options", options::apply(fd, &cp.options, deferred))?;
    let empty = v1::ReceiveQueue::default();
    let rq = cp.receive_queue.as_ref().unwrap_or(&empty);
    if !rq.datagrams.is_empty() {
        let need = rq
            .datagrams
            .iter()
            .map(|d| d.payload.len() + 2048)
            .sum::<usize>()
            + (1 << 20);
        let saved = options::saved_int(&cp.options, libc::SOL_SOCKET, libc::SO_RCVBUF)
            .unwrap_or(0)
            .max(0) as usize;
        let half = (need.max(saved) / 2 + need).min(i32::MAX as usize) as i32;
        step(
            "raising SO_RCVBUF for the receive queue",
            sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, half)
                .or_else(|_| sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, half)),
        )?;
    }

    // 2. Device and address.
    if !cp.bound_device.is_empty() {
        step(
            format!("SO_BINDTODEVICE {}", cp.bound_device),
            sys::setsockopt_bytes(
                fd,
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                cp.bound_device.as_bytes(),
            ),
        )?;
    }
    let mut bound = wire::from_proto(cp.bound.as_ref().unwrap_or(&Default::default()));
    let shown = bound;
    if let (SocketAddr::V6(a), false) = (&mut bound, cp.bound_ifname.is_empty()) {
        // A link-local address's scope: the interface of that name here.
        let index = rustix::net::netdevice::name_to_index(fd, &cp.bound_ifname).map_err(|e| {
            Error::with_kind(
                Op::Restore,
                format!("bind({shown})"),
                Kind::Refused,
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "the socket is bound to an address of interface {}, which this host \
                         does not have ({e})",
                        cp.bound_ifname
                    ),
                ),
            )
        })?;
        a.set_scope_id(index);
    }
    if bound.port() != 0 || !bound.ip().is_unspecified() {
        step(
            format!("bind({bound})"),
            rustix::net::bind(fd, &bound).map_err(Into::into),
        )?;
    }
    let bound_now = step(
        "getsockname",
        rustix::net::getsockname(fd).map_err(Into::into),
    )?;
    let bound_now = SocketAddr::try_from(bound_now).unwrap_or(bound);

    // A socket that shares its port (SO_REUSEADDR, SO_REUSEPORT: without
    // either, its bind excluded every socket whose address overlaps,
    // udp_lib_lport_inuse()) may see the datagrams sent to the port taken
    // by another socket there (a more specific address, a group's hash):
    // refused before any is sent, so that none reaches another
    // application.
    let shares = [libc::SO_REUSEADDR, libc::SO_REUSEPORT]
        .iter()
        .any(|&o| options::saved_int(&cp.options, libc::SOL_SOCKET, o).is_some_and(|v| v != 0));
    if shares && !rq.datagrams.is_empty() {
        let own = step("fstat", rustix::fs::fstat(fd).map_err(Into::into))?.st_ino as u64;
        let device = if cp.bound_device.is_empty() {
            0
        } else {
            step(
                format!("SO_BINDTODEVICE {}", cp.bound_device),
                rustix::net::netdevice::name_to_index(fd, &cp.bound_device).map_err(Into::into),
            )?
        };
        let target = crate::netns::Target {
            bound: bound_now,
            v6only: v6 && v6only,
            peer: None,
            device,
        };
        let others = step(
            "the sockets sharing its port",
            crate::netns::takers(&target, udplite, own),
        )?;
        if !others.is_empty() {
            let list: Vec<String> = others.iter().map(ToString::to_string).collect();
            return Err(Error::with_kind(
                Op::Restore,
                "re-creating the receive queue",
                Kind::Refused,
                io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "port {} is also bound by {} other socket(s) here that could take \
                         datagrams sent to it ({}): a re-created datagram could reach one of \
                         them instead of the restored socket; stop them first, or restore into \
                         a free port",
                        bound_now.port(),
                        others.len(),
                        list.join(", ")
                    ),
                ),
            ));
        }
    }

    // 3. Receive queue.
    let t = Instant::now();
    if !rq.datagrams.is_empty() {
        // Bound to an address that is not a unicast one of this host (a
        // multicast group, a broadcast address): every datagram would
        // leave the machine, so none can be re-created (refused below, or
        // dropped by name under accept_rx_loss).
        let b = wire::canonical(bound_now);
        let mut dests = inject::Destinations::new(bound_now);
        let lost = if !dests.bound_is_local() {
            (0..datagrams.len())
                .map(|index| inject::Lost {
                    index,
                    error: io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "the socket is bound to {}, which is not a local unicast address \
                             here (a multicast group, a broadcast address, or a non-local \
                             address bound with IP_FREEBIND or IP_TRANSPARENT): a re-created \
                             datagram would leave the machine",
                            b.ip()
                        ),
                    ),
                })
                .collect()
        } else {
            inject::inject(
                &datagrams,
                &mut dests,
                &cp.bound_device,
                protocol,
                opts.strategy,
            )
            .map_err(|(i, error)| {
                Error::new(
                    Op::Restore,
                    format!("re-creating receive queue datagram {i}"),
                    error,
                )
            })?
        };
        if let Some(l) = lost.first() {
            if !opts.accept_rx_loss {
                return Err(Error::with_kind(
                    Op::Restore,
                    format!(
                        "re-creating receive queue datagram {} ({} of {} could not be, {:?} strategy)",
                        l.index,
                        lost.len(),
                        rq.datagrams.len(),
                        opts.strategy
                    ),
                    Kind::Refused,
                    io::Error::new(l.error.kind(), l.error.to_string()),
                ));
            }
        }
        let expected: Vec<&v1::RecvDatagram> = datagrams
            .iter()
            .enumerate()
            .filter(|(i, _)| !lost.iter().any(|l| l.index == *i))
            .map(|(_, d)| d)
            .collect();
        step(
            "checking the re-created receive queue",
            verify_queue(fd, &expected, bound_now.port(), opts),
        )?;
        report.restored = expected.len();
        report.lost = lost
            .into_iter()
            .map(|l| (l.index, l.error.to_string()))
            .collect();
    }
    report.rx_time = t.elapsed();

    // 4. Deferred options, peer, buffer, filter, peek offset.
    step(
        "socket options",
        options::apply(fd, &cp.options, |o| {
            !deferred(o)
                || (o.level == libc::SOL_SOCKET
                    && (o.name == libc::SO_RCVBUF || o.name == options::SO_BUF_LOCK))
        }),
    )?;
    if let Some(peer) = &cp.peer {
        let peer = wire::from_proto(peer);
        step(
            format!("connect({peer})"),
            rustix::net::connect(fd, &peer).map_err(Into::into),
        )?;
        let now = step(
            "getsockname",
            rustix::net::getsockname(fd).map_err(Into::into),
        )?;
        let now = SocketAddr::try_from(now).ok();
        if now.map(|a| (a.ip(), a.port())) != Some((bound.ip(), bound.port())) {
            return Err(Error::new(
                Op::Restore,
                format!("connect({peer})"),
                io::Error::other(format!(
                    "local address became {now:?}, the checkpoint has {bound}"
                )),
            ));
        }
    }
    if let Some(o) = cp
        .options
        .iter()
        .find(|o| o.level == libc::SOL_SOCKET && o.name == libc::SO_RCVBUF)
    {
        step("SO_RCVBUF", options::write(fd, o))?;
    }
    // Setting SO_RCVBUF or SO_SNDBUF locks the buffer size (the raise for
    // the receive queue did too): the application's locks, last.
    if let Some(o) = cp
        .options
        .iter()
        .find(|o| o.level == libc::SOL_SOCKET && o.name == options::SO_BUF_LOCK)
    {
        step("SO_BUF_LOCK", options::write(fd, o))?;
    }
    if let Some(f) = &cp.filter {
        step("SO_ATTACH_FILTER", attach_filter(fd, f))?;
    }
    step(
        format!("SO_PEEK_OFF {}", cp.peek_offset),
        sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, cp.peek_offset),
    )?;
    step(
        "marking the peeked zero-length datagrams",
        mark_peeked(fd, &rq.datagrams, cp.peek_offset),
    )?;

    // 5. Send queue.
    if let Some(sq) = &cp.send_queue {
        step("send queue", restore_send_queue(fd, cp, sq))?;
        if sq.dropped && sq.pending.is_none() {
            report.pending_marked_lost = step(
                "marking the dropped pending datagram (UDP_REPAIR_PENDING_LOST)",
                crate::uapi::pendinglost::mark(fd),
            )?;
        }
    }

    // The shutdown state, once nothing is left to send (SHUT_WR makes a
    // send fail with EPIPE). An unconnected socket answers ENOTCONN but
    // keeps the state (inet_shutdown() in net/ipv4/af_inet.c).
    if cp.shutdown != 0 {
        let how = match cp.shutdown {
            1 => rustix::net::Shutdown::Read,
            2 => rustix::net::Shutdown::Write,
            _ => rustix::net::Shutdown::Both,
        };
        match rustix::net::shutdown(fd, how) {
            Ok(()) | Err(rustix::io::Errno::NOTCONN) => {}
            Err(e) => return Err(Error::new(Op::Restore, "shutdown", e.into())),
        }
    }

    // 6. Everything read back.
    step(
        "verifying the socket options",
        options::verify(fd, &cp.options, |_| false),
    )?;

    // 7. Last, as a send or a peek would consume it: the pending error
    // (that it can be re-created, with a peer, was checked first).
    if let (err @ 1.., Some(peer)) = (cp.pending_error, &cp.peer) {
        step(
            format!(
                "re-creating the pending socket error {err} ({})",
                io::Error::from_raw_os_error(err)
            ),
            crate::sockerr::recreate(fd, wire::from_proto(peer), err),
        )?;
    }
    Ok((sock, report))
}

/// The datagrams with the interface each arrived on looked up by name
/// (`ifname`) on this host: its index there as `ifindex`, and as the scope
/// id of a link-local source or destination. A datagram whose interface
/// this host does not have is refused by name, before anything is created.
/// Borrowed, without a copy, when no datagram needs a change (the usual
/// queue: everything arrived on the loopback).
pub(crate) fn remap_interfaces(
    datagrams: &[v1::RecvDatagram],
) -> Result<std::borrow::Cow<'_, [v1::RecvDatagram]>, Error> {
    let link_local = |a: &v1::SockAddr| wire::is_link_local(wire::from_proto(a).ip());
    let unchanged = |d: &v1::RecvDatagram| {
        d.ifname.is_empty()
            && d.ifindex.is_none_or(|x| x <= 1)
            && [d.source.as_ref(), d.destination.as_ref()]
                .into_iter()
                .flatten()
                .all(|a| !(link_local(a) && a.scope_id > 1))
    };
    if datagrams.iter().all(unchanged) {
        return Ok(std::borrow::Cow::Borrowed(datagrams));
    }
    let mut out = datagrams.to_vec();
    let mut probe = None;
    for (i, d) in out.iter_mut().enumerate() {
        if d.ifname.is_empty() {
            // No name (the loopback, or an interface gone before the
            // dump, which said so): it arrives on the loopback again.
            for a in [d.source.as_mut(), d.destination.as_mut()]
                .into_iter()
                .flatten()
            {
                if link_local(a) && a.scope_id > 1 {
                    a.scope_id = 1;
                }
            }
            if d.ifindex.is_some_and(|x| x > 1) {
                d.ifindex = Some(1);
            }
            continue;
        }
        if probe.is_none() {
            probe = Some(step("socket()", inject::udp_socket(false, 17))?);
        }
        let Some(probe) = probe.as_ref() else {
            continue;
        };
        let index = rustix::net::netdevice::name_to_index(probe, &d.ifname).map_err(|e| {
            Error::with_kind(
                Op::Restore,
                format!("receive queue datagram {i}"),
                Kind::Refused,
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "it arrived on interface {}, which this host (network namespace) does \
                         not have ({e}): its arrival interface cannot be restored",
                        d.ifname
                    ),
                ),
            )
        })?;
        for a in [d.source.as_mut(), d.destination.as_mut()]
            .into_iter()
            .flatten()
        {
            if link_local(a) {
                a.scope_id = index;
            }
        }
        d.ifindex = Some(index);
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// Queues up to this long are checked datagram by datagram.
const FULL_CHECK_MAX: usize = 64;

/// Waits until the re-created datagrams are all in the queue and checks
/// them. Where a peek walk is harmless (no zero-length datagram, or the
/// kernel restarts walks on SO_PEEK_OFF) it walks and compares every
/// datagram; otherwise (a walk would mark zero-length datagrams and hide
/// them from the application's own walks) it waits for a barrier datagram
/// and checks that the socket dropped nothing.
fn verify_queue(
    fd: BorrowedFd<'_>,
    expected: &[&v1::RecvDatagram],
    port: u16,
    opts: &RestoreOptions,
) -> io::Result<()> {
    let has_empty = expected.iter().any(|d| d.payload.is_empty());
    let deadline = Instant::now() + opts.delivery_timeout;
    let check_drops = |fd| -> io::Result<()> {
        let (_, drops) = peek::meminfo(fd)?;
        if drops != 0 {
            return Err(io::Error::other(format!(
                "the socket dropped {drops} re-created datagram(s) (receive buffer)"
            )));
        }
        Ok(())
    };
    let v6 = expected.iter().any(|d| {
        d.source
            .as_ref()
            .is_some_and(|s| s.ip.len() == 16 && !is_mapped(&s.ip))
    });
    if expected.len() > FULL_CHECK_MAX {
        // A peek walk costs O(n^2) in the kernel (each peek skips the
        // datagrams before the offset): for long queues wait for the
        // barrier, check the drop counter, and peek once at the byte offset
        // where the last datagram must start. A datagram missing anywhere
        // shifts that offset (unless it is empty), so the peek returns
        // something else; one datagram too many shows after it.
        inject::barrier(v6, opts.delivery_timeout)?;
        check_drops(fd)?;
        let Some(last) = expected.last().filter(|d| !d.payload.is_empty()) else {
            return Ok(());
        };
        // A zero-length datagram right before the last sits at the same
        // offset, and the peek would return (and mark) it instead: the
        // barrier and the drop counter are the whole check then, as for
        // a short queue with zero-length datagrams.
        if expected
            .len()
            .checked_sub(2)
            .is_some_and(|i| expected[i].payload.is_empty())
        {
            return Ok(());
        }
        let before: usize = expected[..expected.len() - 1]
            .iter()
            .map(|d| d.payload.len())
            .sum();
        let off = i32::try_from(before)
            .map_err(|_| io::Error::other("queue too long for SO_PEEK_OFF"))?;
        sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, off)?;
        let mut buf = vec![0u8; 1 << 17];
        let mut control = vec![0u8; 512];
        let got = peek::peek_one(fd, &mut buf, &mut control, port);
        let after = peek::peek_one(fd, &mut buf, &mut control, port);
        sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, -1)?;
        let src = |d: &v1::RecvDatagram| {
            d.source
                .as_ref()
                .map(|s| wire::canonical(wire::from_proto(s)))
        };
        match got? {
            Some(g) if g.payload == last.payload && src(&g) == src(last) => {}
            _ => {
                return Err(io::Error::other(
                    "the last datagram is not where it belongs: datagrams are missing",
                ))
            }
        }
        if after?.is_some_and(|d| !d.payload.is_empty()) {
            return Err(io::Error::other(
                "more datagrams than expected: another sender reached the socket",
            ));
        }
        return Ok(());
    }
    if has_empty && peek::peek_walk_restarts() != Some(true) {
        let v6 = expected.iter().any(|d| {
            d.source
                .as_ref()
                .is_some_and(|s| s.ip.len() == 16 && !is_mapped(&s.ip))
        });
        inject::barrier(v6, opts.delivery_timeout)?;
        return check_drops(fd);
    }
    // Loopback normally delivers each datagram within its send (the
    // backlog runs in the sender's softirq on the pinned CPU), so the
    // first walk usually finds the whole queue; when it does not, the
    // barrier waits for everything sent before the next walk, and only
    // after that a walk that is still short sleeps.
    let mut waited = false;
    loop {
        sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)?;
        let walk = peek::peek_heads(fd, expected.len() + 16, HEAD);
        sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, -1)?;
        let walk = walk?;
        check_drops(fd)?;
        if walk.len() > expected.len() {
            return Err(io::Error::other(format!(
                "{} datagrams in the queue, {} expected: another sender reached the socket during restore",
                walk.len(),
                expected.len()
            )));
        }
        if walk.len() == expected.len() {
            for (i, (got, want)) in walk.iter().zip(expected).enumerate() {
                let want_src = want
                    .source
                    .as_ref()
                    .map(|s| wire::canonical(wire::from_proto(s)));
                let head = &want.payload[..want.payload.len().min(HEAD)];
                if got.len != want.payload.len()
                    || got.head != head
                    || Some(got.source) != want_src
                    || got.gso_size != want.gso_size
                {
                    return Err(io::Error::other(format!(
                        "datagram {i} differs after restore (order or content): got {} bytes from {} \
                         (UDP_GRO segments {:?}), want {} bytes from {:?} (UDP_GRO segments {:?})",
                        got.len,
                        got.source,
                        got.gso_size,
                        want.payload.len(),
                        want_src,
                        want.gso_size
                    )));
                }
            }
            return Ok(());
        }
        if !waited {
            inject::barrier(v6, opts.delivery_timeout)?;
            waited = true;
            continue;
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "only {} of {} datagrams arrived",
                    walk.len(),
                    expected.len()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Bytes of each datagram's payload the check compares (with its length,
/// from `MSG_TRUNC`, its source and its UDP_GRO segment size): enough to
/// tell datagrams apart and in order without copying 64 KiB payloads out
/// of the kernel again. The payload itself went in by the engine's own
/// send, which the kernel does not alter.
const HEAD: usize = 256;

/// Marks the zero-length datagrams the image records as peeked
/// (`skb->peeked`) by peeking them, so that the application's next walk
/// skips them as it would have on the original socket. With the peek fix
/// only those at the peek offset can be observed (setting SO_PEEK_OFF
/// cleared the others); without it each is peeked at its own offset, and
/// the application's offset is set back afterwards.
fn mark_peeked(
    fd: BorrowedFd<'_>,
    datagrams: &[v1::RecvDatagram],
    peek_offset: i32,
) -> io::Result<()> {
    let mut at = 0usize;
    let mut positions = Vec::new();
    for d in datagrams {
        if d.peeked && d.payload.is_empty() {
            positions.push(at);
        }
        at += d.payload.len();
    }
    if positions.is_empty() {
        return Ok(());
    }
    if peek::peek_walk_restarts() == Some(true) {
        let n = positions
            .iter()
            .filter(|p| i32::try_from(**p).ok() == Some(peek_offset))
            .count();
        return if n > 0 {
            peek::remark_at_offset(fd, peek_offset, n)
        } else {
            Ok(())
        };
    }
    for p in positions {
        let off =
            i32::try_from(p).map_err(|_| io::Error::other("queue too long for SO_PEEK_OFF"))?;
        peek::remark_at_offset(fd, off, 1)?;
    }
    sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, peek_offset)
}

fn is_mapped(ip: &[u8]) -> bool {
    ip.len() == 16 && ip[..10].iter().all(|b| *b == 0) && ip[10] == 0xff && ip[11] == 0xff
}

fn attach_filter(fd: BorrowedFd<'_>, f: &v1::Filter) -> io::Result<()> {
    let mut prog = Vec::with_capacity(f.insns.len() * 8);
    for i in &f.insns {
        prog.extend_from_slice(&((*i & 0xffff) as u16).to_ne_bytes());
        prog.push((*i >> 16) as u8);
        prog.push((*i >> 24) as u8);
        prog.extend_from_slice(&((*i >> 32) as u32).to_ne_bytes());
    }
    sys::attach_filter(fd, &prog)?;
    if f.locked {
        sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_LOCK_FILTER, 1)?;
    }
    Ok(())
}

/// `SOF_TIMESTAMPING_TX_RECORD_MASK` (include/uapi/linux/net_tstamp.h):
/// TX_HARDWARE, TX_SOFTWARE, TX_SCHED, TX_ACK, TX_COMPLETION.
const TX_RECORD_MASK: i32 = (1 << 0) | (1 << 1) | (1 << 8) | (1 << 9) | (1 << 18);

/// The transmit timestamp requests of socket `fd` (its SO_TIMESTAMPING
/// flags within [`TX_RECORD_MASK`]); 0 when it cannot be read.
fn sock_tx_record(fd: BorrowedFd<'_>) -> i32 {
    sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPING).unwrap_or(0) & TX_RECORD_MASK
}

/// Re-creates the pending datagram. The cmsgs carry the cork state that
/// differs from what the socket's options would give, so that
/// `ip_setup_cork` records the same values: TTL/hop limit, TOS/traffic
/// class, IP options, mark, priority, GSO size, transmit time, timestamping
/// flags and key, source address and output interface
/// (IP_PKTINFO/IPV6_PKTINFO), IPV6_DONTFRAG. A priority or key the image
/// fixes that this kernel has no cmsg for is refused by name
/// ([`crate::probe`]).
fn restore_send_queue(
    fd: BorrowedFd<'_>,
    cp: &v1::Checkpoint,
    sq: &v1::SendQueue,
) -> io::Result<()> {
    if sq.udp_cork {
        sys::setsockopt_int(fd, libc::SOL_UDP, libc::UDP_CORK, 1)
            .map_err(|e| io::Error::new(e.kind(), format!("UDP_CORK: {e}")))?;
    }
    let Some(p) = &sq.pending else {
        return Ok(());
    };
    let v6sock = cp.family == v1::Family::Inet6 as i32;
    let dst = wire::from_proto(p.destination.as_ref().unwrap_or(&Default::default()));
    // On an AF_INET6 socket AF_INET data goes to a v4-mapped address.
    let dst = match (v6sock, dst) {
        (true, SocketAddr::V4(a)) => SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port()),
        (_, d) => d,
    };
    let cork = p.cork.clone().unwrap_or_default();
    let sock_int = |level, name| sys::getsockopt_int(fd, level, name).ok();
    if cork.priority.is_some() && !probe::so_priority_cmsg() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the pending datagram's priority was fixed when it was corked, and this kernel \
             has no SO_PRIORITY cmsg to fix it again",
        ));
    }
    if cork.tskey.is_some() && !probe::scm_ts_opt_id() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the pending datagram has a SOF_TIMESTAMPING_OPT_ID key, and this kernel has no \
             SCM_TS_OPT_ID cmsg to set it",
        ));
    }
    let mut c = wire::CmsgBuilder::default();
    // An IP_TOS cmsg sets the datagram's priority from the TOS as well
    // (ip_cmsg_send(), net/ipv4/ip_sockglue.c): an SO_PRIORITY cmsg after
    // it must then be sent even when it equals the socket's.
    let mut tos_cmsg = false;
    if p.family == libc::AF_INET as u32 {
        // The IPv4 TTL is fixed in the datagram only by a cmsg of the first
        // send, and so is the TOS on 6.12 (mainline fixes the TOS when it
        // corks); otherwise the datagram takes the socket's values when it
        // leaves. A complete image records them only when fixed: pass them
        // even when the socket has the same value, so that they stay fixed.
        let fixed = |v: u32, level, name| p.complete || Some(v as i32) != sock_int(level, name);
        if let Some(ttl) = cork.ttl.filter(|t| fixed(*t, libc::SOL_IP, libc::IP_TTL)) {
            c.push_int(libc::SOL_IP, libc::IP_TTL, ttl as i32);
        }
        if let Some(tos) = cork.tos.filter(|t| fixed(*t, libc::SOL_IP, libc::IP_TOS)) {
            c.push_int(libc::SOL_IP, libc::IP_TOS, tos as i32);
            tos_cmsg = true;
        }
        if let Some(o) = cork.ip_options.as_ref().filter(|o| !o.is_empty()) {
            c.push(libc::SOL_IP, libc::IP_RETOPTS, o);
        }
        if cork.source.is_some() || cork.oif.is_some_and(|i| i != 0) {
            let mut pi = [0u8; 12];
            pi[0..4].copy_from_slice(&cork.oif.unwrap_or(0).to_ne_bytes());
            if let Some(std::net::IpAddr::V4(a)) = cork
                .source
                .as_ref()
                .map(|s| wire::canonical(wire::from_proto(s)).ip())
            {
                pi[4..8].copy_from_slice(&a.octets());
            }
            c.push(libc::SOL_IP, libc::IP_PKTINFO, &pi);
        }
    } else {
        // ip6_setup_cork() fixes both when corking; the socket's value
        // for a comparison is not even one option (a multicast destination
        // takes IPV6_MULTICAST_HOPS): a complete image passes them always.
        if let Some(h) = cork.hop_limit.filter(|t| {
            p.complete || Some(*t as i32) != sock_int(libc::SOL_IPV6, libc::IPV6_UNICAST_HOPS)
        }) {
            c.push_int(libc::SOL_IPV6, libc::IPV6_HOPLIMIT, h as i32);
        }
        if let Some(t) = cork.tclass.filter(|t| {
            p.complete || Some(*t as i32) != sock_int(libc::SOL_IPV6, libc::IPV6_TCLASS)
        }) {
            c.push_int(libc::SOL_IPV6, libc::IPV6_TCLASS, t as i32);
        }
        if let Some(d) = cork
            .dontfrag
            .filter(|d| Some(*d) != sock_int(libc::SOL_IPV6, libc::IPV6_DONTFRAG))
        {
            c.push_int(libc::SOL_IPV6, libc::IPV6_DONTFRAG, d);
        }
        if cork.source.is_some() || cork.oif.is_some_and(|i| i != 0) {
            let mut pi = [0u8; 20];
            if let Some(std::net::IpAddr::V6(a)) =
                cork.source.as_ref().map(|s| wire::from_proto(s).ip())
            {
                pi[..16].copy_from_slice(&a.octets());
            }
            pi[16..20].copy_from_slice(&cork.oif.unwrap_or(0).to_ne_bytes());
            c.push(libc::SOL_IPV6, libc::IPV6_PKTINFO, &pi);
        }
    }
    if let Some(m) = cork
        .mark
        .filter(|m| Some(*m as i32) != sock_int(libc::SOL_SOCKET, libc::SO_MARK))
    {
        c.push(libc::SOL_SOCKET, libc::SO_MARK, &m.to_ne_bytes());
    }
    if let Some(pr) = cork
        .priority
        .filter(|p| tos_cmsg || Some(*p as i32) != sock_int(libc::SOL_SOCKET, libc::SO_PRIORITY))
    {
        c.push(libc::SOL_SOCKET, libc::SO_PRIORITY, &pr.to_ne_bytes());
    }
    if let Some(k) = cork.tskey {
        c.push(libc::SOL_SOCKET, probe::SCM_TS_OPT_ID, &k.to_ne_bytes());
    }
    if let Some(g) = cork
        .gso_size
        .filter(|g| Some(*g as i32) != sock_int(libc::SOL_UDP, libc::UDP_SEGMENT))
    {
        c.push(libc::SOL_UDP, libc::UDP_SEGMENT, &(g as u16).to_ne_bytes());
    }
    if let Some(t) = cork.transmit_time.filter(|t| *t != 0) {
        c.push(libc::SOL_SOCKET, libc::SCM_TXTIME, &t.to_ne_bytes());
    }
    // The datagram's transmit timestamp requests, also when none: the
    // restored socket's SO_TIMESTAMPING would otherwise give it the
    // socket's (`__sock_cmsg_send()` replaces the TX record bits).
    if let Some(f) = cork.tx_flags.filter(|f| *f != 0 || sock_tx_record(fd) != 0) {
        c.push(libc::SOL_SOCKET, libc::SO_TIMESTAMPING, &f.to_ne_bytes());
    }
    let flags = if sq.udp_cork { 0 } else { libc::MSG_MORE };
    let n = sys::sendmsg_bytes(
        fd,
        &p.payload,
        &wire::sockaddr_bytes(&dst),
        c.bytes(),
        flags | libc::MSG_DONTWAIT,
    )
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("re-sending the pending datagram to {dst}: {e}"),
        )
    })?;
    if n != p.payload.len() {
        return Err(io::Error::other(format!(
            "pending datagram: sent {n} of {} bytes",
            p.payload.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
#[path = "restore_tests.rs"]
mod tests;
