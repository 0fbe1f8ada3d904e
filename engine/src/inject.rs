//! Refilling a restored socket's receive queue.
//!
//! Two strategies, both sending each datagram over the local stack to the
//! restored socket (which is bound but not yet connected, so any source
//! matches), in queue order:
//! - [`Strategy::Raw`] (default): one `IPPROTO_RAW` socket per family writes
//!   the IPv4/IPv6 and UDP headers itself (IP_HDRINCL): exact source address
//!   and port, TTL/hop limit, TOS/traffic class, a correct UDP (or UDP-Lite,
//!   full coverage) checksum. No bind, so no port can collide; datagrams go
//!   out in `sendmmsg` batches of 64.
//! - [`Strategy::Transparent`] (CRIU's method): per datagram a temporary UDP
//!   socket with IP_TRANSPARENT + IP_FREEBIND bound to the original source
//!   address and port, TTL/TOS and the source (IP_PKTINFO/IPV6_PKTINFO) as
//!   cmsgs. When that port is taken (on that address or on the wildcard
//!   address) the bind fails and the datagram cannot be re-created.
//!
//! A UDP_GRO aggregate (a datagram with `gso_size`) is sent whole with
//! `UDP_SEGMENT` from a socket bound to its source, under either strategy
//! (a raw socket cannot send a GSO packet): loopback delivers it whole to
//! the restored socket, which has UDP_GRO on, with the same UDP_GRO cmsg.
//!
//! Safety of the traffic: a datagram is only ever sent to a local unicast
//! address of the namespace (the restored socket's own address, the
//! datagram's recorded destination if it is local, else loopback), and
//! bound to a device only when the route through that device to it is
//! local ([`Destinations::target`]): the route is the local one and
//! nothing leaves the machine. The sending
//! thread is pinned to one CPU while injecting, so the per-CPU backlog keeps
//! the queue order.

use crate::sys;
use crate::wire::{self, RawDatagram};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use udp_repair_proto::v1;

/// How the receive queue is re-created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Raw IP_HDRINCL sockets (default).
    #[default]
    Raw,
    /// Temporary IP_TRANSPARENT sockets bound to each sender's port.
    Transparent,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(Strategy::Raw),
            "transparent" => Ok(Strategy::Transparent),
            _ => Err(format!("unknown strategy {s:?} (raw, transparent)")),
        }
    }
}

/// Datagrams per `sendmmsg` of the raw strategy.
pub const BATCH: usize = 64;

/// A datagram that could not be re-created.
#[derive(Debug)]
pub struct Lost {
    /// Its index in the queue.
    pub index: usize,
    /// Why.
    pub error: io::Error,
}

/// Pins the calling thread to the CPU it runs on, and puts the previous
/// affinity back on drop.
#[derive(Debug)]
struct Pin(Option<rustix::thread::CpuSet>);

impl Pin {
    fn new() -> Pin {
        let old = rustix::thread::sched_getaffinity(None).ok();
        let mut one = rustix::thread::CpuSet::new();
        one.set(rustix::thread::sched_getcpu());
        if rustix::thread::sched_setaffinity(None, &one).is_err() {
            return Pin(None);
        }
        Pin(old)
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = rustix::thread::sched_setaffinity(None, old);
        }
    }
}

/// Whether `ip` is a local unicast address of the current namespace: a UDP
/// socket can bind to it (EADDRNOTAVAIL otherwise) and connect to it
/// without SO_BROADCAST (a broadcast route answers EACCES).
pub(crate) fn is_local_unicast(ip: IpAddr) -> bool {
    let multicast_or_scoped = match ip {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast() || a.is_unspecified(),
        IpAddr::V6(a) => a.is_multicast() || a.is_unspecified() || wire::is_link_local(ip),
    };
    if multicast_or_scoped {
        return false;
    }
    let Ok(s) = UdpSocket::bind(SocketAddr::new(ip, 0)) else {
        return false;
    };
    s.connect(SocketAddr::new(ip, 9)).is_ok()
}

/// Whether `a` is a local unicast address here: [`is_local_unicast`], or
/// for a link-local IPv6 address, an address of the interface its scope
/// names.
pub(crate) fn is_local(a: SocketAddr) -> bool {
    match a {
        SocketAddr::V6(v) if wire::is_link_local(a.ip()) => {
            is_local_link_local(*v.ip(), v.scope_id())
        }
        _ => is_local_unicast(a.ip()),
    }
}

/// [`is_local`] of each address, probed once (each probe opens a socket).
#[derive(Debug, Default)]
pub(crate) struct Locality(HashMap<(IpAddr, u32), bool>);

impl Locality {
    /// Whether `a` (its address and, for IPv6, scope) is local here.
    pub(crate) fn is_local(&mut self, a: SocketAddr) -> bool {
        let scope = match a {
            SocketAddr::V6(v) => v.scope_id(),
            SocketAddr::V4(_) => 0,
        };
        *self.0.entry((a.ip(), scope)).or_insert_with(|| is_local(a))
    }
}

/// Whether `ip`, a link-local IPv6 address, is an address of interface
/// `scope` here (a socket binds to it there).
fn is_local_link_local(ip: Ipv6Addr, scope: u32) -> bool {
    scope != 0
        && UdpSocket::bind(SocketAddr::V6(std::net::SocketAddrV6::new(ip, 0, 0, scope))).is_ok()
}

/// Chooses the destination address of each datagram.
#[derive(Debug)]
pub(crate) struct Destinations {
    bound: SocketAddr,
    local: Locality,
    via: HashMap<(IpAddr, String), bool>,
    last_via: Option<(IpAddr, String, bool)>,
}

impl Destinations {
    /// Destinations for the socket bound at `bound`.
    pub(crate) fn new(bound: SocketAddr) -> Self {
        Destinations {
            bound: wire::canonical(bound),
            local: Locality::default(),
            via: HashMap::new(),
            last_via: None,
        }
    }

    /// Whether the socket is bound to the wildcard address or to a local
    /// unicast address of this namespace ([`is_local`], probed once): a
    /// datagram re-created to any other (a multicast group, a broadcast
    /// address, a non-local address bound with IP_FREEBIND) would leave
    /// the machine.
    pub(crate) fn bound_is_local(&mut self) -> bool {
        self.bound.ip().is_unspecified() || self.local.is_local(self.bound)
    }

    /// Where datagram `d` (from `src`, canonical) goes, and the device its
    /// sending socket is bound to: the interface it arrived on (`ifname`),
    /// else the restored socket's `device`; one re-created to the loopback
    /// address goes through the loopback (`lo`) unless the restored socket
    /// has a device (a link-local source's scope cannot come along: refused
    /// with the reason). A send bound to a device is
    /// routed locally only to an address of that device; to any other it
    /// would leave the machine through it, so such a datagram cannot be
    /// re-created (the error says why; `--accept-rx-loss` drops it).
    pub(crate) fn target<'a>(
        &mut self,
        d: &'a v1::RecvDatagram,
        src: &SocketAddr,
        device: &'a str,
    ) -> Result<(SocketAddr, &'a str), io::Error> {
        let dst = self.pick(d, src);
        // To the loopback (its own destination, or one that is not an
        // address of this host: see `pick`), it arrives on the loopback.
        let to_loopback = dst.ip().is_loopback();
        let dev: &'a str = if !to_loopback && !d.ifname.is_empty() {
            &d.ifname
        } else if to_loopback && device.is_empty() {
            "lo"
        } else {
            device
        };
        if to_loopback && wire::is_link_local(src.ip()) && d.ifname != "lo" {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "it is re-created to {} (its destination is not an address of this host) and \
                     its link-local source {src} names interface {}, which a datagram arriving on \
                     the loopback cannot keep",
                    dst.ip(),
                    if d.ifname.is_empty() { "?" } else { &d.ifname }
                ),
            ));
        }
        if dev.is_empty() || self.local_via(dst, dev) {
            return Ok((dst, dev));
        }
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "it {} {dev} and is re-created to {}, which is not an address of {dev} here: sent \
                 through {dev} it would leave the machine, so it cannot arrive on {dev} again",
                if d.ifname.is_empty() || to_loopback {
                    "must reach a socket bound to device"
                } else {
                    "arrived on interface"
                },
                dst.ip()
            ),
        ))
    }

    /// Whether a datagram to `dst` sent bound to device `dev` is delivered
    /// here: the route through `dev` to it is local (a socket bound to
    /// `dev` and connected to it gets `dst` itself as its source), or `dev`
    /// is the loopback (index 1 in every namespace: what it sends never
    /// leaves the machine) and `dst` a local address. A local route with a
    /// preferred source other than its destination (`127.0.0.0/8 src
    /// 127.0.0.1`: fib_lookup(), ip_route_output_key_hash_rcu()) gives
    /// 127.0.0.53 the source 127.0.0.1.
    fn local_via(&mut self, dst: SocketAddr, dev: &str) -> bool {
        // The common case, a queue of datagrams to one address over one
        // device, without a key allocated per datagram.
        if let Some((ip, d, v)) = &self.last_via {
            if *ip == dst.ip() && d == dev {
                return *v;
            }
        }
        let key = (dst.ip(), dev.to_string());
        if let Some(v) = self.via.get(&key) {
            self.last_via = Some((key.0, key.1, *v));
            return *v;
        }
        let mut probe = || -> io::Result<bool> {
            let s = udp_socket(dst.is_ipv6(), 17)?;
            sys::setsockopt_bytes(
                s.as_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                dev.as_bytes(),
            )?;
            let mut to = dst;
            to.set_port(9);
            rustix::net::connect(&s, &to)?;
            let me = SocketAddr::try_from(rustix::net::getsockname(&s)?)
                .map_err(|_| io::Error::other("getsockname"))?;
            if me.ip() == dst.ip() {
                return Ok(true);
            }
            let loopback = rustix::net::netdevice::name_to_index(&s, dev)? == 1;
            Ok(loopback && self.local.is_local(dst))
        };
        let ok = probe().unwrap_or(false);
        self.last_via = Some((key.0, key.1.clone(), ok));
        self.via.insert(key, ok);
        ok
    }

    /// The address to send datagram `d` (from `src`, canonical) to.
    pub(crate) fn pick(&mut self, d: &v1::RecvDatagram, src: &SocketAddr) -> SocketAddr {
        let port = self.bound.port();
        if !self.bound.ip().is_unspecified() {
            return self.bound;
        }
        // A link-local destination keeps its scope: the interface the
        // datagram arrived on (by name on this host).
        let recorded = d
            .destination
            .as_ref()
            .map(|a| match wire::canonical(wire::from_proto(a)).ip() {
                IpAddr::V6(v6) if wire::is_link_local(v6.into()) => {
                    SocketAddr::V6(std::net::SocketAddrV6::new(v6, port, 0, a.scope_id))
                }
                ip => SocketAddr::new(ip, port),
            })
            .filter(|r| r.is_ipv4() == src.is_ipv4());
        if let Some(r) = recorded.filter(|r| self.local.is_local(*r)) {
            return r;
        }
        if src.is_ipv4() {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)
        } else {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port)
        }
    }
}

/// A close-on-exec datagram socket of the family of `v6` and the IP
/// protocol `protocol` (17 UDP, 136 UDP-Lite).
pub(crate) fn udp_socket(v6: bool, protocol: u8) -> io::Result<OwnedFd> {
    use rustix::net::{socket_with, AddressFamily, Protocol, RawProtocol, SocketFlags, SocketType};
    let fam = if v6 {
        AddressFamily::INET6
    } else {
        AddressFamily::INET
    };
    let raw = RawProtocol::new(u32::from(protocol)).ok_or(io::ErrorKind::InvalidInput)?;
    Ok(socket_with(
        fam,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(Protocol::from_raw(raw)),
    )?)
}

fn raw_socket(v6: bool, device: &str) -> io::Result<OwnedFd> {
    use rustix::net::{socket_with, AddressFamily, Protocol, SocketFlags, SocketType};
    let fam = if v6 {
        AddressFamily::INET6
    } else {
        AddressFamily::INET
    };
    let proto = Protocol::from_raw(
        rustix::net::RawProtocol::new(libc::IPPROTO_RAW as u32).expect("nonzero"),
    );
    let s = socket_with(fam, SocketType::RAW, SocketFlags::CLOEXEC, Some(proto))?;
    bind_to_device(s.as_fd(), device)?;
    // Enough send buffer for a batch of 64 KiB datagrams.
    let _ = sys::setsockopt_int(s.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20);
    Ok(s)
}

/// Re-creates `datagrams` in the queue of the socket bound at
/// `dests.bound` (through `device` if it is bound to one), each sent where
/// `dests` says. Returns the datagrams that could not be re-created
/// (transparent strategy: port taken); the first hard error (no raw
/// socket, send failure) is returned as `Err` with the index of the
/// datagram.
pub(crate) fn inject(
    datagrams: &[v1::RecvDatagram],
    dests: &mut Destinations,
    device: &str,
    protocol: u8,
    strategy: Strategy,
) -> Result<Vec<Lost>, (usize, io::Error)> {
    if datagrams.is_empty() {
        return Ok(Vec::new());
    }
    // A socket bound to a specific address gets its datagrams sent to that
    // address: it must be a local unicast one, or they would leave the
    // machine (a multicast group, or an address bound with IP_FREEBIND or
    // IP_TRANSPARENT that is not on this host), with their original, now
    // forged, sources.
    let b = dests.bound.ip();
    if !dests.bound_is_local() {
        return Err((
            0,
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "the socket is bound to {b}, which is not a local unicast address here \
                     (a multicast group, or a non-local address bound with IP_FREEBIND or \
                     IP_TRANSPARENT): a re-created datagram would leave the machine, so the \
                     receive queue cannot be re-created"
                ),
            ),
        ));
    }
    let _pin = Pin::new();
    match strategy {
        Strategy::Raw => inject_raw(datagrams, dests, device, protocol),
        Strategy::Transparent => inject_transparent(datagrams, dests, device, protocol),
    }
}

struct Prepared<'a> {
    /// Where its IP and UDP headers are in the batch's header buffer; the
    /// payload is sent from the datagram.
    headers: std::ops::Range<usize>,
    /// Where its destination `sockaddr` is in the batch's name buffer.
    dst: std::ops::Range<usize>,
    v6: bool,
    dev: &'a str,
    /// Its source and destination, for a send that cannot go raw.
    src: SocketAddr,
    to: SocketAddr,
}

fn inject_raw(
    datagrams: &[v1::RecvDatagram],
    dests: &mut Destinations,
    device: &str,
    protocol: u8,
) -> Result<Vec<Lost>, (usize, io::Error)> {
    let mut lost = Vec::new();
    // One raw socket per family and device: a datagram goes out bound to
    // the interface it arrived on (so that IP_PKTINFO and a link-local
    // source's scope name it again), else to the socket's device.
    let mut raws: HashMap<(bool, String), OwnedFd> = HashMap::new();
    let mut next = 0;
    // Each batch's headers and destination addresses, packed: no
    // allocation per datagram.
    let mut headers: Vec<u8> = Vec::with_capacity(BATCH * 48);
    let mut names: Vec<u8> = Vec::with_capacity(BATCH * 28);
    let mut scratch: Vec<u8> = Vec::with_capacity(48);
    while next < datagrams.len() {
        // A batch: consecutive datagrams of the same family and device.
        let mut batch: Vec<(usize, Prepared)> = Vec::with_capacity(BATCH);
        headers.clear();
        names.clear();
        while next < datagrams.len() && batch.len() < BATCH {
            let i = next;
            let d = &datagrams[i];
            let src = wire::canonical(wire::from_proto(
                d.source.as_ref().unwrap_or(&Default::default()),
            ));
            let (dst, dev) = match dests.target(d, &src, device) {
                Ok(t) => t,
                Err(error) => {
                    lost.push(Lost { index: i, error });
                    next += 1;
                    continue;
                }
            };
            if d.gso_size.is_some() {
                // A UDP_GRO aggregate: a raw socket cannot send a GSO
                // packet, so it goes alone, in order, from a socket bound
                // to its source (as the transparent strategy sends).
                if !batch.is_empty() {
                    break;
                }
                match transparent_one(d, src, dst, dev, protocol) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => lost.push(Lost {
                        index: i,
                        error: io::Error::new(
                            e.kind(),
                            format!(
                                "a UDP_GRO aggregate is re-created from a socket bound to its \
                                 source {src}, and {e}: stop what holds that port here, or \
                                 accept the loss (--accept-rx-loss)"
                            ),
                        ),
                    }),
                    Err(e) => return Err((i, e)),
                }
                next += 1;
                continue;
            }
            let v6 = src.is_ipv6();
            if batch
                .first()
                .is_some_and(|(_, b)| b.v6 != v6 || b.dev != dev)
            {
                break;
            }
            let rd = RawDatagram {
                src,
                dst,
                ttl: d.ttl.unwrap_or(64) as u8,
                tos: d.tos.unwrap_or(0) as u8,
                protocol,
                payload: &d.payload,
            };
            // Headers only: the send gathers them with the payload, which
            // is not copied here.
            if v6 {
                wire::ipv6_headers(&rd, &mut scratch);
            } else {
                wire::ipv4_headers(&rd, &mut scratch);
            }
            let h = headers.len();
            headers.extend_from_slice(&scratch);
            // The port of a raw socket's destination must be 0; a
            // link-local one keeps its scope.
            let n = names.len();
            names.extend_from_slice(&wire::sockaddr_bytes(&match dst {
                SocketAddr::V6(a) => {
                    SocketAddr::V6(std::net::SocketAddrV6::new(*a.ip(), 0, 0, a.scope_id()))
                }
                SocketAddr::V4(a) => SocketAddr::new((*a.ip()).into(), 0),
            }));
            batch.push((
                i,
                Prepared {
                    headers: h..headers.len(),
                    dst: n..names.len(),
                    v6,
                    dev,
                    src,
                    to: dst,
                },
            ));
            next += 1;
        }
        let Some((first_index, first)) = batch.first() else {
            continue;
        };
        let first_index = *first_index;
        let key = (first.v6, first.dev.to_string());
        let raw: &OwnedFd = match raws.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let s = raw_socket(e.key().0, &e.key().1).map_err(|err| (first_index, err))?;
                e.insert(s)
            }
        };
        let fd = raw.as_fd();
        let msgs: Vec<(&[u8], &[u8], &[u8])> = batch
            .iter()
            .map(|(i, p)| {
                (
                    &headers[p.headers.clone()],
                    &datagrams[*i].payload[..],
                    &names[p.dst.clone()],
                )
            })
            .collect();
        let mut sent = 0;
        while sent < msgs.len() {
            match sys::sendmmsg_gather(fd, &msgs[sent..]) {
                Ok(0) => return Err((batch[sent].0, io::Error::other("sendmmsg sent nothing"))),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Larger than the route's MTU (over loopback's 65 536, an
                // IPv6 datagram of more than 65 488 bytes): an IP_HDRINCL
                // socket does not fragment (raw_send_hdrinc(),
                // rawv6_send_hdrinc()), so it goes alone, in order, from a
                // raw socket that builds the IPv6 header itself and
                // fragments ([`raw6_one`]: no port is bound, so a source
                // port held here, by the live sender or the restored
                // socket itself, is no obstacle), and the receiver
                // reassembles it.
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    let (i, p) = &batch[sent];
                    let once = if p.v6 {
                        raw6_one(&datagrams[*i], p.src, p.to, p.dev, protocol)
                    } else {
                        transparent_one(&datagrams[*i], p.src, p.to, p.dev, protocol)
                    };
                    match once {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AddrInUse => lost.push(Lost {
                            index: *i,
                            error: io::Error::new(
                                e.kind(),
                                format!(
                                    "a datagram of {} bytes, too large for a raw socket \
                                     (EMSGSIZE), is re-created from a socket bound to its source \
                                     {}, and {e}: stop what holds that port here, or accept the \
                                     loss (--accept-rx-loss)",
                                    datagrams[*i].payload.len(),
                                    p.src
                                ),
                            ),
                        }),
                        Err(e) => return Err((*i, e)),
                    }
                    sent += 1;
                }
                Err(e) => return Err((batch[sent].0, e)),
            }
        }
    }
    Ok(lost)
}

/// `SO_BINDTODEVICE` to `device`, unless it is empty (no device).
fn bind_to_device(fd: std::os::fd::BorrowedFd<'_>, device: &str) -> io::Result<()> {
    if device.is_empty() {
        return Ok(());
    }
    sys::setsockopt_bytes(
        fd,
        libc::SOL_SOCKET,
        libc::SO_BINDTODEVICE,
        device.as_bytes(),
    )
}

/// Sends one IPv6 datagram `d` from `src` to `dst` (through `device` if
/// not empty) on an `IPPROTO_UDP` (`protocol` 17, or UDP-Lite 136) raw
/// socket without IP_HDRINCL: the payload is the UDP header and `d`'s
/// payload, the kernel writes the IPv6 header (the source from the
/// IPV6_PKTINFO cmsg, allowed off this host by IPV6_TRANSPARENT and
/// IPV6_FREEBIND; hop limit and traffic class as cmsgs), computes the UDP
/// checksum at offset 6 (IPV6_CHECKSUM: rawv6_push_pending_frames(), which
/// also turns a zero UDP checksum into 0xffff) and fragments what exceeds
/// the route's MTU (ip6_append_data()). For datagrams an IP_HDRINCL socket
/// refuses with EMSGSIZE: 65 489 to 65 527 bytes of payload.
fn raw6_one(
    d: &v1::RecvDatagram,
    src: SocketAddr,
    dst: SocketAddr,
    device: &str,
    protocol: u8,
) -> io::Result<()> {
    use rustix::net::{socket_with, AddressFamily, Protocol, RawProtocol, SocketFlags, SocketType};
    let (IpAddr::V6(from), SocketAddr::V6(to)) = (src.ip(), dst) else {
        return Err(io::Error::other("raw6_one: not an IPv6 datagram"));
    };
    let raw = RawProtocol::new(u32::from(protocol)).ok_or(io::ErrorKind::InvalidInput)?;
    let s = socket_with(
        AddressFamily::INET6,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(Protocol::from_raw(raw)),
    )?;
    let fd = s.as_fd();
    sys::setsockopt_int(fd, libc::SOL_IPV6, libc::IPV6_TRANSPARENT, 1)?;
    sys::setsockopt_int(fd, libc::SOL_IPV6, libc::IPV6_FREEBIND, 1)?;
    sys::setsockopt_int(fd, libc::SOL_IPV6, libc::IPV6_CHECKSUM, 6)?;
    let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 1 << 20);
    bind_to_device(fd, device)?;
    let ulen = u16::try_from(8 + d.payload.len())
        .map_err(|_| io::Error::other(format!("a UDP datagram of {} bytes", d.payload.len())))?;
    // UDP-Lite's coverage 0: the whole datagram (RFC 3828), which the
    // checksum the kernel computes covers.
    let len_field = if protocol == libc::IPPROTO_UDPLITE as u8 {
        0
    } else {
        ulen
    };
    let mut packet = Vec::with_capacity(usize::from(ulen));
    packet.extend_from_slice(&src.port().to_be_bytes());
    packet.extend_from_slice(&dst.port().to_be_bytes());
    packet.extend_from_slice(&len_field.to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(&d.payload);
    let mut c = wire::CmsgBuilder::default();
    v6_cmsgs(&mut c, from, d);
    // A raw socket's destination port must be 0 (or its protocol):
    // rawv6_sendmsg().
    let name = SocketAddr::V6(std::net::SocketAddrV6::new(*to.ip(), 0, 0, to.scope_id()));
    send_whole(fd, &packet, &name, &c)
}

/// The cmsgs an IPv6 datagram `d` from `from` is sent with: its source
/// (IPV6_PKTINFO, interface 0), hop limit and traffic class.
fn v6_cmsgs(c: &mut wire::CmsgBuilder, from: Ipv6Addr, d: &v1::RecvDatagram) {
    let mut pi = [0u8; 20];
    pi[..16].copy_from_slice(&from.octets());
    c.push(libc::SOL_IPV6, libc::IPV6_PKTINFO, &pi);
    c.push_int(
        libc::SOL_IPV6,
        libc::IPV6_HOPLIMIT,
        d.ttl.unwrap_or(64) as i32,
    );
    c.push_int(libc::SOL_IPV6, libc::IPV6_TCLASS, d.tos.unwrap_or(0) as i32);
}

/// `sendmsg` of `payload` to `to` with cmsgs `c`, which must send it
/// whole (a datagram socket sends all or nothing).
fn send_whole(
    fd: std::os::fd::BorrowedFd<'_>,
    payload: &[u8],
    to: &SocketAddr,
    c: &wire::CmsgBuilder,
) -> io::Result<()> {
    let n = sys::sendmsg_bytes(fd, payload, &wire::sockaddr_bytes(to), c.bytes(), 0)?;
    if n != payload.len() {
        return Err(io::Error::other(format!(
            "sent {n} of {} bytes",
            payload.len()
        )));
    }
    Ok(())
}

fn transparent_one(
    d: &v1::RecvDatagram,
    src: SocketAddr,
    dst: SocketAddr,
    device: &str,
    protocol: u8,
) -> io::Result<()> {
    let v6 = src.is_ipv6();
    let s = udp_socket(v6, protocol)?;
    let fd = s.as_fd();
    if v6 {
        sys::setsockopt_int(fd, libc::SOL_IPV6, libc::IPV6_TRANSPARENT, 1)?;
        sys::setsockopt_int(fd, libc::SOL_IPV6, libc::IPV6_FREEBIND, 1)?;
    } else {
        sys::setsockopt_int(fd, libc::SOL_IP, libc::IP_TRANSPARENT, 1)?;
        sys::setsockopt_int(fd, libc::SOL_IP, libc::IP_FREEBIND, 1)?;
    }
    sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    bind_to_device(fd, device)?;
    rustix::net::bind(fd, &src).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "source port {} is taken ({e}): cannot bind a socket to {src}",
                src.port()
            ),
        )
    })?;
    let mut c = wire::CmsgBuilder::default();
    if v6 {
        let from = match src.ip() {
            IpAddr::V6(a) => a,
            IpAddr::V4(_) => Ipv6Addr::UNSPECIFIED,
        };
        v6_cmsgs(&mut c, from, d);
    } else {
        let mut pi = [0u8; 12];
        if let IpAddr::V4(a) = src.ip() {
            pi[4..8].copy_from_slice(&a.octets());
        }
        c.push(libc::SOL_IP, libc::IP_PKTINFO, &pi);
        c.push_int(libc::SOL_IP, libc::IP_TTL, d.ttl.unwrap_or(64) as i32);
        c.push_int(libc::SOL_IP, libc::IP_TOS, d.tos.unwrap_or(0) as i32);
    }
    if let Some(g) = d.gso_size {
        // Sent as one GSO datagram of segments of g bytes, which loopback
        // delivers whole to the restored socket (UDP_GRO on): the same
        // aggregate and UDP_GRO cmsg as the original.
        let g = u16::try_from(g)
            .map_err(|_| io::Error::other(format!("UDP_GRO segment size {g} over 65535")))?;
        c.push(libc::SOL_UDP, libc::UDP_SEGMENT, &g.to_ne_bytes());
    }
    send_whole(fd, &d.payload, &dst, &c)
}

fn inject_transparent(
    datagrams: &[v1::RecvDatagram],
    dests: &mut Destinations,
    device: &str,
    protocol: u8,
) -> Result<Vec<Lost>, (usize, io::Error)> {
    let mut lost = Vec::new();
    for (i, d) in datagrams.iter().enumerate() {
        let src = wire::canonical(wire::from_proto(
            d.source.as_ref().unwrap_or(&Default::default()),
        ));
        let (dst, dev) = match dests.target(d, &src, device) {
            Ok(t) => t,
            Err(error) => {
                lost.push(Lost { index: i, error });
                continue;
            }
        };
        match transparent_one(d, src, dst, dev, protocol) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AddrInUse || src.port() == 0 => {
                let hint = if d.gso_size.is_some() {
                    "stop what holds that port here"
                } else {
                    "the raw strategy, the default, binds no port and restores it"
                };
                lost.push(Lost {
                    index: i,
                    error: io::Error::new(e.kind(), format!("{e}: {hint}")),
                })
            }
            Err(e) => return Err((i, e)),
        }
    }
    Ok(lost)
}

/// Waits until the loopback backlog has delivered everything sent before:
/// a marker datagram sent through the same path (same pinned CPU would be
/// ideal; the caller's pin still holds) to a private socket arrives after
/// them.
pub(crate) fn barrier(v6: bool, timeout: std::time::Duration) -> io::Result<()> {
    let s = if v6 {
        UdpSocket::bind("[::1]:0")?
    } else {
        UdpSocket::bind("127.0.0.1:0")?
    };
    s.set_read_timeout(Some(timeout))?;
    let me = s.local_addr()?;
    s.send_to(b"barrier", me)?;
    let mut b = [0u8; 16];
    s.recv_from(&mut b).map(|_| ())
}
