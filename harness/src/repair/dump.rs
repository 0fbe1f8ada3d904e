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

use super::options;
use super::sys;
use super::wire;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use udp_repair_proto::v1;

/// Largest UDP datagram plus room for a UDP_GRO aggregate.
const PEEK_BUF: usize = 1 << 17;
/// Room for every cmsg the dump turns on (pktinfo, ttl, tos, timestamps).
const CONTROL_BUF: usize = 512;

/// Why a dump failed: the step, and the error.
#[derive(Debug)]
pub struct DumpError {
    /// What the dump was doing.
    pub step: String,
    /// The error (`Unsupported` for state that cannot be saved).
    pub error: io::Error,
}

impl std::fmt::Display for DumpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dump failed at {}: {}", self.step, self.error)
    }
}

impl std::error::Error for DumpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

fn step<T>(what: &str, r: io::Result<T>) -> Result<T, DumpError> {
    r.map_err(|error| DumpError {
        step: what.to_string(),
        error,
    })
}

fn refuse(what: &str, msg: String) -> DumpError {
    DumpError {
        step: what.to_string(),
        error: io::Error::new(io::ErrorKind::Unsupported, msg),
    }
}

/// What a [`SendQueueReader`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum SendQueueRead {
    /// The kernel lacks this reader's interface (ENOPROTOOPT).
    Unsupported,
    /// Nothing pending.
    Empty,
    /// The pending datagram.
    Pending(Box<v1::PendingDatagram>),
}

/// One way to read a corked socket's pending datagram. Implemented over the
/// kernel series' uapi (getsockopt.rs, recvmsg.rs); readers are tried in
/// order and the first supported one is used.
pub trait SendQueueReader: std::fmt::Debug + Send + Sync {
    /// Name stored in the image (`"getsockopt"`, `"recvmsg"`).
    fn name(&self) -> &'static str;
    /// Reads the pending datagram. Must leave the socket as it was (repair
    /// mode is switched on and off by the dump's guard through
    /// [`SendQueueReader::needs_repair_mode`]).
    fn read(&self, fd: BorrowedFd<'_>) -> io::Result<SendQueueRead>;
    /// Whether `read` needs UDP_REPAIR switched on around it.
    fn needs_repair_mode(&self) -> bool {
        true
    }
}

/// The readers this build knows, best first: the getsockopt series' (whole
/// cork state), then the recvmsg series' (payload and destination). Each
/// answers `Unsupported` on a kernel without its interface.
pub fn default_readers() -> Vec<Box<dyn SendQueueReader>> {
    super::readers::all()
}

/// The first of `readers` that the running kernel supports, asked of a
/// scratch UDP socket with nothing pending: the reader [`dump_with`] uses.
/// `None`: a socket with pending data cannot be dumped here.
pub fn probe_reader(readers: &[Box<dyn SendQueueReader>]) -> Option<&'static str> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    let fd = s.as_fd();
    for r in readers {
        let mut guard = Guard::new(fd);
        if r.needs_repair_mode()
            && !matches!(guard.set(libc::SOL_UDP, super::UDP_REPAIR, 1), Ok(true))
        {
            continue;
        }
        let got = r.read(fd);
        let _ = guard.finish();
        if matches!(got, Ok(SendQueueRead::Empty)) {
            return Some(r.name());
        }
    }
    None
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
    /// Fail instead of producing an image with `zero_length_vouched = false`.
    pub require_vouched: bool,
    /// The send-queue readers to try.
    pub readers: Vec<Box<dyn SendQueueReader>>,
    /// How long SIOCOUTQ may stay non-zero (datagrams in flight) before the
    /// dump concludes that data is pending, on kernels without a reader.
    pub outq_settle: Duration,
    /// Directory with the socket's namespace's `igmp`/`igmp6` (default
    /// `/proc/thread-self/net`, the calling thread's namespace; `/proc/PID/net` for another process's socket).
    pub proc_net: std::path::PathBuf,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            drop_pending: false,
            drop_filter: false,
            drop_multicast: false,
            require_vouched: false,
            readers: default_readers(),
            outq_settle: Duration::from_millis(200),
            proc_net: "/proc/thread-self/net".into(),
        }
    }
}

/// Changes socket options for the duration of the dump and puts the
/// application's values back, in reverse order, on [`Guard::finish`] or on
/// drop (best effort, when the dump fails midway).
#[derive(Debug)]
pub(crate) struct Guard<'a> {
    fd: BorrowedFd<'a>,
    saved: Vec<(i32, i32, i32)>,
    timestamps: Option<[i32; 4]>,
    done: bool,
}

impl<'a> Guard<'a> {
    pub(crate) fn new(fd: BorrowedFd<'a>) -> Self {
        Guard {
            fd,
            saved: Vec::new(),
            timestamps: None,
            done: false,
        }
    }

    /// Remembers an int option's current value, to be put back at the end
    /// whatever changes it meanwhile (SO_PEEK_OFF: the walk moves it, and
    /// the `recvmsg` series' UDP_REPAIR resets it to -1).
    pub(crate) fn remember(&mut self, level: i32, name: i32) -> io::Result<()> {
        let old = sys::getsockopt_int(self.fd, level, name)?;
        self.saved.push((level, name, old));
        Ok(())
    }

    /// Sets an int option if it differs, remembering the old value.
    /// `Ok(false)`: the socket does not have this option.
    pub(crate) fn set(&mut self, level: i32, name: i32, value: i32) -> io::Result<bool> {
        let old = match sys::getsockopt_int(self.fd, level, name) {
            Ok(v) => v,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOPROTOOPT | libc::EOPNOTSUPP)) => {
                return Ok(false)
            }
            Err(e) => return Err(e),
        };
        if old != value {
            // Remember before setting: a failed set may still have changed
            // state (it does not today, but the restore is harmless).
            self.saved.push((level, name, old));
            sys::setsockopt_int(self.fd, level, name, value)?;
        }
        Ok(true)
    }

    /// Turns on SO_TIMESTAMPNS unless the application has a timestamp
    /// option on already (then its own format is parsed). Leaves them alone
    /// when SO_TIMESTAMPING is set: enabling SO_TIMESTAMPNS would clear
    /// SOCK_TSTAMP_NEW, which no getsockopt reports, so it could not be put
    /// back.
    fn enable_timestamps(&mut self) -> io::Result<()> {
        let names = [
            options::SO_TIMESTAMP_OLD,
            options::SO_TIMESTAMPNS_OLD,
            options::SO_TIMESTAMP_NEW,
            options::SO_TIMESTAMPNS_NEW,
        ];
        let mut v = [0i32; 4];
        for (i, n) in names.iter().enumerate() {
            v[i] = sys::getsockopt_int(self.fd, libc::SOL_SOCKET, *n).unwrap_or(0);
        }
        let tsing =
            sys::getsockopt_int(self.fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPING).unwrap_or(0);
        if v.iter().any(|x| *x != 0) || tsing != 0 {
            return Ok(());
        }
        self.timestamps = Some(v);
        sys::setsockopt_int(self.fd, libc::SOL_SOCKET, options::SO_TIMESTAMPNS_OLD, 1)
    }

    fn restore(&mut self) -> io::Result<()> {
        let mut first: io::Result<()> = Ok(());
        if let Some(v) = self.timestamps.take() {
            // Setting any of them to 0 clears SOCK_RCVTSTAMP(NS); they were
            // all off before the dump.
            let r = sys::setsockopt_int(self.fd, libc::SOL_SOCKET, options::SO_TIMESTAMP_OLD, 0);
            debug_assert!(v.iter().all(|x| *x == 0));
            if let Err(e) = r {
                first = Err(e);
            }
        }
        while let Some((level, name, old)) = self.saved.pop() {
            // Only what changed is set: setting SO_PEEK_OFF has a side
            // effect on kernels with the peek fix (it clears the `peeked`
            // marks), so it must not be set for nothing.
            if sys::getsockopt_int(self.fd, level, name).ok() == Some(old) {
                continue;
            }
            if let Err(e) = sys::setsockopt_int(self.fd, level, name, old) {
                if first.is_ok() {
                    first = Err(io::Error::new(
                        e.kind(),
                        format!("putting back {} = {old}: {e}", options::label(level, name)),
                    ));
                }
            }
        }
        first
    }

    /// Puts everything back and reports the first failure.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.done = true;
        self.restore()
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.restore();
        }
    }
}

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
    let mut name = [0u8; 128];
    let out = loop {
        match sys::recvmsg_bytes(
            fd,
            buf,
            &mut name,
            control,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        ) {
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
        payload: buf[..out.len].to_vec(),
        source: Some(wire::to_proto(&src)),
        ..Default::default()
    };
    parse_metadata(&mut d, &control[..out.control_len.min(control.len())]);
    if let Some(dst) = d.destination.as_mut() {
        dst.port = local_port.into();
    }
    Ok(Some(d))
}

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
        super::netns::in_new_netns(probe_walk_restart)
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

/// SO_MEMINFO: (rmem_alloc, drops) of a socket.
pub fn meminfo(fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    let mut b = [0u8; 4 * 9];
    sys::getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_MEMINFO, &mut b)?;
    let at = |i: usize| u32::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().unwrap_or_default());
    Ok((at(0), at(8)))
}

/// Reads the classic BPF filter, if any. `Err(Unsupported)` for an eBPF
/// filter (SO_GET_FILTER answers EACCES: no original program to return).
fn read_filter(fd: BorrowedFd<'_>) -> io::Result<Option<v1::Filter>> {
    const SO_GET_FILTER: i32 = libc::SO_ATTACH_FILTER;
    let n =
        match sys::getsockopt_bytes(fd, libc::SOL_SOCKET, SO_GET_FILTER, &mut []) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "an eBPF socket filter (SO_ATTACH_BPF) is attached: the kernel cannot return it",
            )),
            Err(e) => return Err(e),
        };
    let mut buf = vec![0u8; n * 8];
    let got = sys::getsockopt_bytes(fd, libc::SOL_SOCKET, SO_GET_FILTER, &mut buf)?;
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
/// joined on any interface of the namespace (`igmp`, `igmp6` under
/// `proc_net`); MCAST_MSFILTER answers EADDRNOTAVAIL for a group the socket
/// has not joined. Returns "group%ifindex" strings.
fn multicast_memberships(
    fd: BorrowedFd<'_>,
    v6: bool,
    proc_net: &std::path::Path,
) -> io::Result<Vec<String>> {
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
        match sys::getsockopt_bytes(fd, level, libc::MCAST_MSFILTER, &mut gf) {
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
/// `PTRACE_MODE_ATTACH_REALCREDS` over `pid`, e.g. `CAP_SYS_PTRACE`), and
/// multicast memberships are read from `/proc/PID/net` (replacing
/// `opts.proc_net`). The socket may have been opened by any user: the
/// repair mode of both kernel series, like `TCP_REPAIR`, checks only the
/// caller's `CAP_NET_ADMIN` over the socket's network namespace
/// (`udp_lib_setsockopt()` in net/ipv4/udp.c).
///
/// # Errors
/// The step `pidfd_getfd(pid PID, fd FD)` when the descriptor cannot be
/// taken; else as [`dump_with`].
pub fn dump_pid(pid: i32, fd: i32, mut opts: DumpOptions) -> Result<v1::Checkpoint, DumpError> {
    let sock = step(
        &format!("pidfd_getfd(pid {pid}, fd {fd})"),
        sys::take_fd(pid, fd),
    )?;
    opts.proc_net = format!("/proc/{pid}/net").into();
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
        schema_version: udp_repair_proto::SCHEMA_VERSION,
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
        Err(e) => {
            return Err(DumpError {
                step: "SO_GET_FILTER".into(),
                error: e,
            })
        }
    }
    let groups = step(
        "multicast memberships",
        multicast_memberships(fd, v6, &opts.proc_net),
    )?;
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
    let queues = dump_queues(fd, v6, bound.port(), opts);
    // Also when none was marked: the walk marked every zero-length datagram,
    // and when it left the offset where it was (only zero-length datagrams
    // at it) nothing has set it since to clear them.
    let remarked = if restarts == Some(true) && cp.peek_offset >= 0 {
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
            return Err(DumpError {
                step: "receive queue".into(),
                error: io::Error::other(format!(
                    "{marked} peeked zero-length datagram(s) at offset {} but the walk found {} there: \
                     the queue changed while dumping",
                    cp.peek_offset,
                    marked - left
                )),
            });
        }
    }
    cp.receive_queue = Some(rq);
    cp.send_queue = Some(sq);
    step(
        "validating the checkpoint",
        udp_repair_proto::validate(&cp).map_err(io::Error::other),
    )?;
    Ok(cp)
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
) -> Result<(v1::ReceiveQueue, v1::SendQueue), DumpError> {
    let mut guard = Guard::new(fd);
    // Turning the `recvmsg` series' repair mode on resets SO_PEEK_OFF.
    let sq = step(
        "SO_PEEK_OFF",
        guard.remember(libc::SOL_SOCKET, libc::SO_PEEK_OFF),
    )
    .and_then(|()| dump_send_queue(fd, &mut guard, opts));
    let put_back = guard.finish();
    let sq = sq?;
    step("putting the socket's options back", put_back)?;

    let mut guard = Guard::new(fd);
    let rq = dump_receive_queue(fd, &mut guard, v6, port, opts);
    let put_back = guard.finish();
    let rq = rq?;
    step("putting the socket's options back", put_back)?;
    Ok((rq, sq))
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
fn marked_at_offset(fd: BorrowedFd<'_>, off: i32) -> io::Result<usize> {
    let unmarked = count_empty_at_offset(fd)?;
    sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, off)?;
    let all = count_empty_at_offset(fd)?;
    let marked = all.checked_sub(unmarked).ok_or_else(|| {
        io::Error::other("the receive queue changed while dumping (zero-length datagrams)")
    })?;
    remark_at_offset(fd, off, marked)?;
    Ok(marked)
}

fn dump_receive_queue(
    fd: BorrowedFd<'_>,
    guard: &mut Guard<'_>,
    v6: bool,
    port: u16,
    opts: &DumpOptions,
) -> Result<v1::ReceiveQueue, DumpError> {
    // First, so that it is put back last: turning the `recvmsg` series'
    // repair mode back on (below) resets SO_PEEK_OFF.
    step(
        "SO_PEEK_OFF",
        guard.remember(libc::SOL_SOCKET, libc::SO_PEEK_OFF),
    )?;
    // A socket the application (a restore tool) left in repair mode: the
    // `recvmsg` series' MSG_PEEK would read the send queue.
    match guard.set(libc::SOL_UDP, super::UDP_REPAIR, 0) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {}
        Err(e) => {
            return Err(DumpError {
                step: "UDP_REPAIR off".into(),
                error: e,
            })
        }
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
    // Every queued skb costs at least a few hundred bytes of truesize:
    // this bound only stops a walk that traffic keeps feeding.
    let max = rcvbuf / 256 + 1024;
    // Set even when it is 0 already: a kernel with the peek fix restarts
    // the walk (clears the `peeked` marks) on every set.
    step(
        "setting SO_PEEK_OFF to 0",
        sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0),
    )?;
    let mut walk = step("peeking the receive queue", peek_walk(fd, port, max))?;

    let mut vouched = true;
    let mut note = String::new();
    if restarts != Some(true) {
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
    let (rmem, drops) = meminfo(fd).unwrap_or((0, 0));
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
    for r in &opts.readers {
        if r.needs_repair_mode() {
            match guard.set(libc::SOL_UDP, super::UDP_REPAIR, 1) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOPROTOOPT | libc::EINVAL)) => {
                    continue
                }
                Err(e) => {
                    return Err(DumpError {
                        step: "UDP_REPAIR on".into(),
                        error: e,
                    })
                }
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
                    sq.note = format!(
                        "the {} interface returns payload and destination only: cork state set by cmsgs \
                         (TTL, TOS, mark, priority, GSO size, transmit time) is taken from the socket options",
                        r.name()
                    );
                }
                sq.pending = Some(*p);
                return Ok(sq);
            }
            Err(e) => {
                return Err(DumpError {
                    step: format!("reading the send queue ({})", r.name()),
                    error: e,
                })
            }
        }
    }
    // No reader: find out whether anything is pending at all. SIOCOUTQ
    // counts sk_wmem_alloc, i.e. pending data and datagrams still in
    // flight; the latter leave quickly.
    let deadline = Instant::now() + opts.outq_settle;
    let outq = loop {
        let q = step(
            "SIOCOUTQ",
            sys::ioctl_get_int(fd, libc::TIOCOUTQ as libc::c_ulong),
        )?;
        if q == 0 || Instant::now() >= deadline {
            break q;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if outq > 0 {
        let why = format!(
            "{outq} bytes of the send buffer stay in use{}: data is pending (corked by UDP_CORK or MSG_MORE) and \
             this kernel has no UDP_REPAIR interface to read it back",
            if udp_cork { " and UDP_CORK is set" } else { "" }
        );
        if !opts.drop_pending {
            return Err(refuse(
                "send queue",
                format!("{why}; pass the option to drop pending data to dump anyway"),
            ));
        }
        sq.dropped = true;
        sq.note = format!("{why}; dropped as requested: the restored socket has nothing pending");
    }
    Ok(sq)
}
