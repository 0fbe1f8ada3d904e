//! Peek primitives over a UDP socket's receive queue, shared by the dump
//! (which walks the queue) and the restore (which checks what it
//! re-created and marks zero-length datagrams as peeked again).
//!
//! Kernel behaviour they rely on: `SO_PEEK_OFF` walks
//! (`__skb_try_recv_from_queue()` in net/core/datagram.c, `udp_recvmsg()`
//! in net/ipv4/udp.c); a zero-length datagram once peeked is skipped by
//! later walks unless the kernel restarts walks when `SO_PEEK_OFF` is set
//! (the getsockopt series' fix, [`peek_walk_restarts`]).

use crate::{options, sys, wire};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use udp_repair_proto::v1;

/// Largest UDP datagram plus room for a UDP_GRO aggregate.
pub(crate) const PEEK_BUF: usize = 1 << 17;
/// Room for every cmsg the dump turns on (pktinfo, ttl, tos, timestamps).
pub(crate) const CONTROL_BUF: usize = 512;

/// Result of one peek walk.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    pub(crate) datagrams: Vec<v1::RecvDatagram>,
}

fn timespec(data: &[u8], nsec_scale: u32) -> Option<v1::Timestamp> {
    if data.len() < 16 {
        return None;
    }
    let sec = i64::from_ne_bytes(data[0..8].try_into().ok()?);
    let sub = i64::from_ne_bytes(data[8..16].try_into().ok()?);
    let nsec = u32::try_from(sub).ok()?.checked_mul(nsec_scale)?;
    (nsec < 1_000_000_000).then_some(v1::Timestamp { sec, nsec })
}

fn int_data(data: &[u8]) -> Option<u32> {
    match data.len() {
        1 => Some(data[0].into()),
        n if n >= 4 => Some(u32::from_ne_bytes(data[..4].try_into().ok()?)),
        _ => None,
    }
}

/// Fills a datagram's metadata from the cmsgs of its peek.
pub(crate) fn parse_metadata(d: &mut v1::RecvDatagram, control: &[u8]) {
    for c in wire::cmsgs(control) {
        match (c.level, c.kind) {
            (libc::SOL_IP, libc::IP_PKTINFO) if c.data.len() >= 12 => {
                let ifindex = u32::from_ne_bytes(c.data[0..4].try_into().unwrap_or_default());
                let ip: [u8; 4] = c.data[8..12].try_into().unwrap_or_default();
                let port = d.destination.as_ref().map(|x| x.port).unwrap_or(0);
                d.destination = Some(v1::SockAddr {
                    ip: ip.to_vec(),
                    port,
                    flowinfo: 0,
                    scope_id: 0,
                });
                if ifindex != 0 {
                    d.ifindex = Some(ifindex);
                }
            }
            (libc::SOL_IPV6, libc::IPV6_PKTINFO) if c.data.len() >= 20 => {
                let ip: [u8; 16] = c.data[0..16].try_into().unwrap_or_default();
                let ifindex = u32::from_ne_bytes(c.data[16..20].try_into().unwrap_or_default());
                // A v4-mapped destination from IPV6_PKTINFO does not
                // override the IP_PKTINFO one.
                let mapped = std::net::Ipv6Addr::from(ip).to_ipv4_mapped().is_some();
                if !(mapped && d.destination.as_ref().is_some_and(|x| x.ip.len() == 4)) {
                    d.destination = Some(v1::SockAddr {
                        ip: ip.to_vec(),
                        port: 0,
                        flowinfo: 0,
                        scope_id: 0,
                    });
                }
                if ifindex != 0 {
                    d.ifindex = Some(ifindex);
                }
            }
            (libc::SOL_IP, libc::IP_TTL) | (libc::SOL_IPV6, libc::IPV6_HOPLIMIT) => {
                d.ttl = int_data(c.data)
            }
            (libc::SOL_IP, libc::IP_TOS) | (libc::SOL_IPV6, libc::IPV6_TCLASS) => {
                d.tos = int_data(c.data)
            }
            // The application's UDP_GRO: an aggregate, and its segment size
            // (udp_cmsg_recv() in include/net/udp.h).
            (libc::SOL_UDP, libc::UDP_GRO) => d.gso_size = int_data(c.data),
            (libc::SOL_SOCKET, options::SO_TIMESTAMPNS_OLD | options::SO_TIMESTAMPNS_NEW) => {
                d.timestamp = timespec(c.data, 1)
            }
            (libc::SOL_SOCKET, options::SO_TIMESTAMP_OLD | options::SO_TIMESTAMP_NEW) => {
                d.timestamp = timespec(c.data, 1000)
            }
            (libc::SOL_SOCKET, 37 | 65) => {
                // SCM_TIMESTAMPING(_NEW): software stamp first.
                if let Some(t) = timespec(c.data, 1).filter(|t| t.sec != 0 || t.nsec != 0) {
                    d.timestamp = Some(t);
                }
            }
            _ => {}
        }
    }
}

/// One peek at the current peek offset. `Ok(None)`: queue exhausted.
pub(crate) fn peek_one(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    control: &mut [u8],
    local_port: u16,
) -> io::Result<Option<v1::RecvDatagram>> {
    let got = read_one(fd, buf, control, local_port, libc::MSG_PEEK)?;
    Ok(got.map(|(mut d, len)| {
        d.payload = bytes::Bytes::copy_from_slice(&buf[..len]);
        d
    }))
}

/// Bytes of receive buffer a drain allocates at once, at most: its
/// datagrams are read straight into it and keep slices of it.
const DRAIN_ARENA_MAX: usize = 64 << 20;

/// Takes the datagram at the head of the queue out of it (`recvmsg`
/// without `MSG_PEEK`), until the queue is empty, appending each to
/// `taken` as it is read (so that a caller can put back what was taken if
/// a later read fails). At most `max` datagrams: a queue that traffic keeps
/// feeding is an error. Linear in the queue's length.
///
/// Each datagram is read straight into a zeroed arena (`calloc`'d: its
/// pages are faulted in as the kernel writes them) of about `expect`
/// bytes (what the queue holds, `SO_MEMINFO`'s rmem_alloc), and its
/// payload is a slice of it: no copy and no allocation per datagram.
pub(crate) fn drain(
    fd: BorrowedFd<'_>,
    local_port: u16,
    max: usize,
    expect: usize,
    taken: &mut Vec<v1::RecvDatagram>,
) -> io::Result<()> {
    let arena_len = || (expect + PEEK_BUF).clamp(2 * PEEK_BUF, DRAIN_ARENA_MAX);
    let mut arena = bytes::BytesMut::zeroed(arena_len());
    let mut control = vec![0u8; CONTROL_BUF];
    loop {
        if arena.len() < PEEK_BUF {
            arena = bytes::BytesMut::zeroed(arena_len());
        }
        let Some((mut d, len)) = read_one(fd, &mut arena[..PEEK_BUF], &mut control, local_port, 0)?
        else {
            break;
        };
        d.payload = arena.split_to(len).freeze();
        taken.push(d);
        if taken.len() > max {
            return Err(io::Error::other(format!(
                "the receive queue keeps growing past {max} datagrams: isolate the socket from traffic while dumping"
            )));
        }
    }
    Ok(())
}

/// One `recvmsg(MSG_DONTWAIT | flags)` into `buf`: the datagram's
/// metadata (its payload left empty for the caller to fill) and its
/// length, the payload being `buf[..len]`. `Ok(None)`: queue exhausted.
fn read_one(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    control: &mut [u8],
    local_port: u16,
    flags: i32,
) -> io::Result<Option<(v1::RecvDatagram, usize)>> {
    let mut name = [0u8; 128];
    let out = loop {
        match sys::recvmsg_bytes(fd, buf, &mut name, control, flags | libc::MSG_DONTWAIT) {
            Ok(o) => break o,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
    };
    if out.flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::other(format!(
            "a datagram larger than {} bytes was truncated",
            buf.len()
        )));
    }
    if out.flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("control data truncated"));
    }
    let src = wire::parse_sockaddr(&name[..out.name_len.min(name.len())])
        .ok_or_else(|| io::Error::other("recvmsg returned no source address"))?;
    let mut d = v1::RecvDatagram {
        source: Some(wire::to_proto(&src)),
        ..Default::default()
    };
    parse_metadata(&mut d, &control[..out.control_len.min(control.len())]);
    if let Some(dst) = d.destination.as_mut() {
        dst.port = local_port.into();
    }
    Ok(Some((d, out.len)))
}

/// One queued datagram as a check of the queue sees it, without its whole
/// payload: [`peek_heads`].
#[derive(Debug)]
pub(crate) struct Head {
    /// The datagram's full length (`MSG_TRUNC`).
    pub(crate) len: usize,
    /// Its first bytes, as many as the walk asked for.
    pub(crate) head: Vec<u8>,
    /// Its source, canonical (v4-mapped addresses as IPv4).
    pub(crate) source: SocketAddr,
    /// Its UDP_GRO segment size, for an aggregate.
    pub(crate) gso_size: Option<u32>,
}

/// Peeks the queue from the current SO_PEEK_OFF (which must be >= 0) with
/// `MSG_TRUNC`, which moves the offset by each datagram's full length
/// (`udp_recvmsg()`): at most `max` datagrams (one more tells the caller
/// there are more), each as its length, first `head_len` bytes, source and
/// segment size. Copies no more than `head_len` bytes of any payload.
pub(crate) fn peek_heads(fd: BorrowedFd<'_>, max: usize, head_len: usize) -> io::Result<Vec<Head>> {
    // Up to HEADS_BATCH peeks per recvmmsg: one system call where a
    // recvmsg each cost about 1 µs (restore's check of a short queue).
    let batch = (max + 1).clamp(1, HEADS_BATCH);
    // A slot of at least one byte, so that a zero head length still
    // makes `batch` slots.
    let stride = head_len.max(1);
    let mut bufs = vec![0u8; batch * stride];
    let mut names = vec![0u8; batch * NAME_BUF];
    let mut controls = vec![0u8; batch * CONTROL_BUF];
    let mut out = Vec::new();
    loop {
        let mut slots: Vec<sys::RecvBufs<'_>> = bufs
            .chunks_mut(stride)
            .zip(names.chunks_mut(NAME_BUF))
            .zip(controls.chunks_mut(CONTROL_BUF))
            .map(|((b, n), c)| (&mut b[..head_len], n, c))
            .take(batch.min(max + 1 - out.len()))
            .collect();
        let got = match sys::recvmmsg_bytes(
            fd,
            &mut slots,
            libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        ) {
            Ok(o) => o,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
            Err(e) => return Err(e),
        };
        let asked = slots.len();
        for (o, (buf, name, control)) in got.iter().zip(&slots) {
            let source = wire::parse_sockaddr(&name[..o.name_len.min(name.len())])
                .map(wire::canonical)
                .ok_or_else(|| io::Error::other("recvmsg returned no source address"))?;
            let mut meta = v1::RecvDatagram::default();
            parse_metadata(&mut meta, &control[..o.control_len.min(control.len())]);
            out.push(Head {
                len: o.len,
                head: buf[..o.len.min(head_len)].to_vec(),
                source,
                gso_size: meta.gso_size,
            });
        }
        if out.len() > max || got.len() < asked {
            return Ok(out);
        }
    }
}

/// Peeks per `recvmmsg` in [`peek_heads`].
const HEADS_BATCH: usize = 64;

/// Bytes of `msg_name` per message in [`peek_heads`] (a `sockaddr_in6`
/// needs 28).
const NAME_BUF: usize = 128;

/// Walks the receive queue from the current SO_PEEK_OFF (which must be
/// >= 0), at most `max` datagrams.
pub(crate) fn peek_walk(fd: BorrowedFd<'_>, local_port: u16, max: usize) -> io::Result<Walk> {
    let mut buf = vec![0u8; PEEK_BUF];
    let mut control = vec![0u8; CONTROL_BUF];
    let mut w = Walk::default();
    while let Some(d) = peek_one(fd, &mut buf, &mut control, local_port)? {
        if w.datagrams.len() >= max {
            return Err(io::Error::other(format!(
                "the receive queue keeps growing past {max} datagrams: isolate the socket from traffic while dumping"
            )));
        }
        w.datagrams.push(d);
    }
    Ok(w)
}

/// Whether setting SO_PEEK_OFF restarts the peek walk, so that zero-length
/// datagrams peeked before are seen again. Probed once per process on a
/// scratch socket in a private network namespace (or, without the privilege
/// for one, on 127.0.0.1 of the current namespace). `None`: could not probe.
pub fn peek_walk_restarts() -> Option<bool> {
    static PROBE: OnceLock<Option<bool>> = OnceLock::new();
    *PROBE.get_or_init(|| {
        crate::netns::in_new_netns(probe_walk_restart)
            .ok()
            .flatten()
            .or_else(probe_walk_restart)
    })
}

fn probe_walk_restart() -> Option<bool> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
    let me = s.local_addr().ok()?;
    s.send_to(b"", me).ok()?;
    s.send_to(b"x", me).ok()?;
    let fd = s.as_fd();
    // Loopback delivery normally completes inside send; allow for a
    // deferred softirq.
    let deadline = Instant::now() + Duration::from_secs(1);
    sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).ok()?;
    loop {
        sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).ok()?;
        let first = peek_walk(fd, me.port(), 16).ok()?.datagrams.len();
        if first >= 2 {
            break;
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).ok()?;
    let second = peek_walk(fd, me.port(), 16).ok()?.datagrams.len();
    Some(second == 2)
}

/// SO_MEMINFO: (rmem_alloc, drops) of a socket.
pub fn meminfo(fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    let mut b = [0u8; 4 * 9];
    sys::getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_MEMINFO, &mut b)?;
    let at = |i: usize| u32::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().unwrap_or_default());
    Ok((at(0), at(8)))
}

/// A peek without buffer at the current peek offset: `Some(true)` it
/// returned a zero-length datagram (and marked it peeked), `Some(false)` a
/// datagram with data (no `MSG_TRUNC` only for an empty one), `None`
/// nothing. Moves no offset: it copies nothing.
pub(crate) fn peek_empty(fd: BorrowedFd<'_>) -> io::Result<Option<bool>> {
    let mut name = [0u8; 128];
    loop {
        match sys::recvmsg_bytes(
            fd,
            &mut [],
            &mut name,
            &mut [],
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        ) {
            Ok(o) => return Ok(Some(o.flags & libc::MSG_TRUNC == 0)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Peeks without buffer at the current offset until a datagram with data,
/// or nothing, comes back: how many zero-length datagrams came back (each
/// is marked peeked by the kernel).
fn count_empty_at_offset(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n = 0usize;
    while peek_empty(fd)? == Some(true) {
        n += 1;
        if n > 1 << 20 {
            return Err(io::Error::other(
                "zero-length datagrams keep coming at the peek offset",
            ));
        }
    }
    Ok(n)
}

/// Sets SO_PEEK_OFF to `off` (on a kernel with the peek fix this clears
/// every `peeked` mark) and peeks the first `n` zero-length datagrams at
/// that offset, which marks them as the application's walk had.
pub(crate) fn remark_at_offset(fd: BorrowedFd<'_>, off: i32, n: usize) -> io::Result<()> {
    sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, off)?;
    for i in 0..n {
        match peek_empty(fd)? {
            Some(true) => {}
            other => {
                return Err(io::Error::other(format!(
                    "zero-length datagram {} of {n} at offset {off} is not there ({})",
                    i + 1,
                    if other.is_some() {
                        "a datagram with data is"
                    } else {
                        "nothing is"
                    }
                )))
            }
        }
    }
    Ok(())
}

/// On a kernel with the peek fix, how many of the zero-length datagrams at
/// byte offset `off` (the application's SO_PEEK_OFF) a peek has already
/// returned: its next peek skips them. Those a walk returns are always the
/// first ones there, so a count says which. Leaves the marks as it found
/// them: count the unmarked ones (marking them), set the offset (clearing
/// every mark), count them all, and mark the first ones again.
pub(crate) fn marked_at_offset(fd: BorrowedFd<'_>, off: i32) -> io::Result<usize> {
    let unmarked = count_empty_at_offset(fd)?;
    sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, off)?;
    let all = count_empty_at_offset(fd)?;
    let marked = all.checked_sub(unmarked).ok_or_else(|| {
        io::Error::other("the receive queue changed while dumping (zero-length datagrams)")
    })?;
    remark_at_offset(fd, off, marked)?;
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    /// A socket with `n` queued datagrams, datagram `i` of `i % 7 + 1`
    /// bytes of value `i as u8`, from one sender; SO_PEEK_OFF at 0.
    fn queued(n: usize) -> (UdpSocket, UdpSocket) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..n {
            tx.send_to(&vec![i as u8; i % 7 + 1], rx.local_addr().unwrap())
                .unwrap();
        }
        // Delivered: loopback normally delivers within the send, but the
        // backlog may wait for ksoftirqd on a loaded machine.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            sys::setsockopt_int(rx.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).unwrap();
            if peek_heads(rx.as_fd(), n + 1, 0).unwrap().len() >= n {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{n} datagrams not delivered"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            meminfo(rx.as_fd()).unwrap().1,
            0,
            "the socket dropped datagrams"
        );
        sys::setsockopt_int(rx.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).unwrap();
        (rx, tx)
    }

    #[test]
    fn heads_come_in_queue_order_across_batches_and_stop_one_past_max() {
        let (rx, tx) = queued(150);
        let from = tx.local_addr().unwrap();
        // Past the end of the queue: every datagram, in order.
        let all = peek_heads(rx.as_fd(), 1000, 3).unwrap();
        assert_eq!(all.len(), 150);
        for (i, h) in all.iter().enumerate() {
            assert_eq!(h.len, i % 7 + 1, "datagram {i}");
            assert_eq!(h.head, vec![i as u8; (i % 7 + 1).min(3)], "datagram {i}");
            assert_eq!(h.source, from);
            assert_eq!(h.gso_size, None);
        }
        // A peek consumed nothing; a walk from 0 again stops at max + 1
        // (one more tells the caller there are more), inside a batch and
        // on its boundary.
        for max in [0, 10, 63, 64, 100] {
            sys::setsockopt_int(rx.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).unwrap();
            let some = peek_heads(rx.as_fd(), max, 0).unwrap();
            assert_eq!(some.len(), max + 1, "max {max}");
            assert!(some
                .iter()
                .enumerate()
                .all(|(i, h)| h.len == i % 7 + 1 && h.head.is_empty()));
        }
        let mut buf = [0u8; 16];
        assert_eq!(
            rx.recv(&mut buf).unwrap(),
            1,
            "the first datagram is still first"
        );
    }

    #[test]
    fn an_empty_queue_gives_no_heads() {
        let (rx, _tx) = queued(0);
        assert!(peek_heads(rx.as_fd(), 10, 16).unwrap().is_empty());
    }
}
