//! A state machine of one UDP socket, checked against a model after every
//! operation, with dump + restore as one of the operations.
//!
//! proptest generates sequences of [`Op`]s; [`run_case`] applies each to
//! the model ([`Model`]) and to real sockets ([`World`]) and compares what
//! an application can observe: the result of every `recv`/`peek`
//! (return value, bytes, `MSG_TRUNC`, sender), `SO_PEEK_OFF`, `UDP_CORK`,
//! `SIOCINQ`, whether data is pending (`SIOCOUTQ`), and every datagram the
//! receivers of the socket's own sends get. A dump is also compared with
//! what the model says it must contain. `DumpRestore` swaps the socket for
//! the restored one: from then on the restored socket must behave as the
//! model says the original would have.
//!
//! The model is the kernel's, read from the 6.12 source:
//! - the receive queue is one list (UDP's two queues are walked in order);
//! - a peek with `SO_PEEK_OFF` >= 0 skips whole datagrams while the offset
//!   is at or past their end, and skips a zero-length datagram at offset 0
//!   once it has been returned by a peek (`skb->peeked`,
//!   `__skb_try_recv_from_queue`); it moves the offset by the bytes copied
//!   (by the datagram's length with `MSG_TRUNC` in the call's flags);
//! - a peek with a negative offset returns the head and moves nothing;
//! - `recv` returns the head and moves a non-negative offset back by what it
//!   returned (not below 0);
//! - `MSG_TRUNC` is returned when the buffer is no longer than what is left
//!   of the datagram and shorter than the datagram (`udp_recvmsg`);
//! - with the peek fix (detected by behaviour) setting `SO_PEEK_OFF` >= 0
//!   clears the `peeked` marks;
//! - sends: `UDP_CORK` or `MSG_MORE` keep the datagram pending; while data is
//!   pending, further sends append to it whatever their destination, except
//!   that a v4-mapped destination while IPv6 data is pending is `EINVAL`;
//!   clearing `UDP_CORK` or a send without `MSG_MORE` (cork off) sends it;
//! - TTL: a plain send leaves with its cmsg's or the socket's; a pending
//!   datagram's is fixed when corked by an `IP_TTL` cmsg of the first send
//!   (IPv4) or always (IPv6 data: the cmsg's or the socket's then), else it
//!   takes the socket's when it leaves.
//!
//! - `shutdown(SHUT_WR)`: a send that starts a datagram fails with EPIPE,
//!   one appended to a pending datagram does not, nor does pushing it;
//!   `SHUT_RD` shows as `POLLRDHUP` (checked after every operation) and
//!   changes no non-blocking read; both survive a dump and restore;
//! - a peer's `UDP_SEGMENT` send longer than one segment reaches the
//!   socket (UDP_GRO on) as one datagram, every read of which carries the
//!   segment size in a UDP_GRO cmsg (`udp_cmsg_recv()`); the restore must
//!   re-create it so.
//!
//! And what the library promises for a dump (see `engine/src/dump.rs`):
//! it refuses a socket with pending data when no reader can read it, and
//! changes nothing then; otherwise it sees every datagram, except, on a
//! kernel without the peek fix, zero-length datagrams already peeked (then
//! it must not vouch for the queue, and its own walk marks them all); it
//! keeps the peek offset; it records the zero-length datagrams the
//! application's walk has already returned at its current offset, and the
//! restore marks them again; the restored pending datagram keeps its TTL
//! where the reader saves the cork state (getsockopt), else takes the
//! socket's (recvmsg).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use udp_repair_engine::restore::{self, RestoreOptions};
use udp_repair_engine::{dump, sys, wire};
use udp_repair_proto::v1;

use super::Kernel;

/// Most datagrams the model lets the receive queue hold (below the
/// restore's per-datagram check limit and far below any receive buffer).
const MAX_QUEUE: usize = 40;
/// Most bytes the model lets a pending datagram grow to.
const MAX_PENDING: usize = 12_000;
/// How long to wait for a datagram that must arrive.
const ARRIVAL: Duration = Duration::from_secs(2);

/// Which sockets a case uses: the socket under test and its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// IPv4 socket on 127.0.0.1; IPv4 peers.
    V4,
    /// IPv6 socket on ::1; IPv6 peers.
    V6,
    /// IPv6 socket on the wildcard address: IPv4 (v4-mapped) and IPv6 peers.
    Dual,
    /// IPv6 socket on ::ffff:127.0.0.1: IPv4 peers only.
    Mapped,
}

impl Layout {
    /// Every layout, with its test-name suffix.
    pub const ALL: [(Layout, &'static str); 4] = [
        (Layout::V4, "ipv4"),
        (Layout::V6, "ipv6"),
        (Layout::Dual, "dualstack"),
        (Layout::Mapped, "v4mapped"),
    ];

    fn bind(self) -> SocketAddr {
        let ip: IpAddr = match self {
            Layout::V4 => Ipv4Addr::LOCALHOST.into(),
            Layout::V6 => Ipv6Addr::LOCALHOST.into(),
            Layout::Dual => Ipv6Addr::UNSPECIFIED.into(),
            Layout::Mapped => Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(),
        };
        SocketAddr::new(ip, 0)
    }

    fn socket_v6(self) -> bool {
        self != Layout::V4
    }

    /// Addresses of the peers that send to the socket.
    fn senders(self) -> Vec<IpAddr> {
        let v4 = |d| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        match self {
            Layout::V4 | Layout::Mapped => vec![v4(1), v4(2), v4(3)],
            Layout::V6 => vec![v6, v6],
            Layout::Dual => vec![v4(2), v6, v4(3)],
        }
    }

    /// Whether each receiver of the socket's sends is IPv6.
    fn receivers(self) -> Vec<bool> {
        match self {
            Layout::V4 | Layout::Mapped => vec![false, false],
            Layout::V6 => vec![true, true],
            Layout::Dual => vec![false, true],
        }
    }
}

/// A datagram length: 0 is frequent on purpose.
fn len_strategy() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => Just(0u16),
        4 => 1u16..=16,
        2 => 17u16..=300,
        1 => 1000u16..=1472,
    ]
}

/// A receive buffer size, resolved against the model when the op runs.
#[derive(Debug, Clone, Copy)]
pub enum Cap {
    /// No buffer at all.
    Zero,
    /// What is left of the datagram the call will return, plus this.
    Rel(i8),
    /// A fixed size.
    Abs(u16),
}

/// An `SO_PEEK_OFF` value, resolved against the model when the op runs.
#[derive(Debug, Clone, Copy)]
pub enum Off {
    /// -1, the default.
    Neg1,
    /// Another negative value (the kernel accepts any).
    Neg(u8),
    /// The start of the n-th datagram (modulo the queue length + 1).
    Boundary(u8),
    /// Inside the n-th datagram.
    Inside(u8, u16),
    /// A fixed value (may lie past the queue).
    Abs(u16),
}

/// One operation of the state machine.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// A peer sends a datagram to the socket.
    Deliver {
        /// Which peer (modulo their number).
        sender: u8,
        /// Payload length.
        len: u16,
        /// Sent with `UDP_SEGMENT` of this size: longer than one segment,
        /// the socket (UDP_GRO on) receives it as one aggregate with a
        /// UDP_GRO cmsg.
        gso: Option<u16>,
    },
    /// `recvmsg(MSG_PEEK)`.
    Peek {
        /// Buffer size.
        cap: Cap,
        /// `MSG_TRUNC` in the call's flags.
        trunc: bool,
    },
    /// `recvmsg`.
    Recv {
        /// Buffer size.
        cap: Cap,
        /// `MSG_TRUNC` in the call's flags.
        trunc: bool,
    },
    /// `setsockopt(SO_PEEK_OFF)`.
    SetPeekOff(Off),
    /// `setsockopt(UDP_CORK)`.
    Cork(bool),
    /// The socket sends to one of its receivers.
    Send {
        /// Which receiver (modulo their number).
        to: u8,
        /// Payload length.
        len: u16,
        /// `MSG_MORE`.
        more: bool,
        /// A TTL / hop limit cmsg (`IP_TTL`, `IPV6_HOPLIMIT`).
        ttl: Option<u8>,
    },
    /// `setsockopt(IP_TTL)` (and `IPV6_UNICAST_HOPS` on an IPv6 socket).
    SetTtl(u8),
    /// `shutdown(SHUT_RD)` (false) or `shutdown(SHUT_WR)` (true): the
    /// socket is not connected, so it answers ENOTCONN but keeps the state
    /// (`inet_shutdown()`).
    Shutdown(bool),
    /// Dump, and keep using the socket.
    Dump,
    /// Dump, close the socket, restore it, and use the restored one.
    DumpRestore,
    /// The same with the fast dump (`drain_receive_queue`: the queue taken
    /// out of the original, which is discarded). On a kernel without the
    /// peek fix a drain cannot see which zero-length datagrams an earlier
    /// walk marked, which the model tracks: there it dumps as DumpRestore.
    DrainRestore,
}

fn cap_strategy() -> impl Strategy<Value = Cap> {
    prop_oneof![
        1 => Just(Cap::Zero),
        5 => (-3i8..=3).prop_map(Cap::Rel),
        2 => (0u16..400).prop_map(Cap::Abs),
        1 => Just(Cap::Abs(u16::MAX)),
    ]
}

fn off_strategy() -> impl Strategy<Value = Off> {
    prop_oneof![
        3 => Just(Off::Neg1),
        1 => any::<u8>().prop_map(Off::Neg),
        4 => any::<u8>().prop_map(Off::Boundary),
        3 => (any::<u8>(), any::<u16>()).prop_map(|(i, f)| Off::Inside(i, f)),
        1 => (0u16..2048).prop_map(Off::Abs),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        7 => (any::<u8>(), len_strategy(), prop::option::weighted(0.2, 100u16..=600))
            .prop_map(|(sender, len, gso)| Op::Deliver { sender, len, gso }),
        5 => (cap_strategy(), prop::bool::weighted(0.15)).prop_map(|(cap, trunc)| Op::Peek { cap, trunc }),
        3 => (cap_strategy(), prop::bool::weighted(0.15)).prop_map(|(cap, trunc)| Op::Recv { cap, trunc }),
        4 => off_strategy().prop_map(Op::SetPeekOff),
        2 => any::<bool>().prop_map(Op::Cork),
        3 => (any::<u8>(), len_strategy(), any::<bool>(), prop::option::weighted(0.3, 1u8..=255))
            .prop_map(|(to, len, more, ttl)| Op::Send { to, len, more, ttl }),
        1 => prop_oneof![Just(64u8), 1u8..=255].prop_map(Op::SetTtl),
        1 => any::<bool>().prop_map(Op::Shutdown),
        1 => Just(Op::Dump),
        2 => Just(Op::DumpRestore),
        1 => Just(Op::DrainRestore),
    ]
}

/// Sequences of 1 to 48 operations.
pub fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op_strategy(), 1..48)
}

/// A datagram of the modelled receive queue.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MDgram {
    payload: Vec<u8>,
    /// The sender, canonical (v4-mapped shown as IPv4).
    from: SocketAddr,
    /// `skb->peeked`: a zero-length datagram a peek has returned.
    marked: bool,
    /// A UDP_GRO aggregate's segment size (the socket has UDP_GRO on).
    gso: Option<u16>,
}

/// The TTL a pending datagram will leave with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendTtl {
    /// Fixed when corked: an IPv4 `IP_TTL` cmsg of the first send; IPv6
    /// always (the cmsg's or the socket's at that time).
    Fixed(u8),
    /// IPv4 without a cmsg: the socket's when it leaves.
    Socket,
}

/// The modelled pending datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MPending {
    /// IPv6 data (else IPv4, possibly on an IPv6 socket).
    v6: bool,
    /// Receiver index.
    to: usize,
    payload: Vec<u8>,
    ttl: PendTtl,
}

/// What one `recvmsg` returns: bytes copied, return value, `MSG_TRUNC`,
/// sender; or an errno.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    data: Vec<u8>,
    ret: usize,
    trunc: bool,
    from: SocketAddr,
    /// The UDP_GRO cmsg: the segment size of an aggregate.
    gro: Option<u16>,
}

/// What a dump must contain, or that it must refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DumpExpect {
    /// Pending data and no reader: refused at the send queue.
    Refused,
    /// The datagrams (payload, sender, `peeked`), and whether the dump
    /// vouches for zero-length datagrams.
    Image {
        datagrams: Vec<(Vec<u8>, SocketAddr, bool, Option<u16>)>,
        vouched: bool,
    },
}

/// The model of the socket and of what its receivers must get.
#[derive(Debug, Clone)]
struct Model {
    kernel: Kernel,
    layout: Layout,
    queue: VecDeque<MDgram>,
    peek_off: i32,
    cork: bool,
    pending: Option<MPending>,
    /// The socket's TTL / hop limit (the kernel's default 64 until set).
    ttl: u8,
    /// Per receiver: datagrams (payload, TTL) sent and not yet received.
    rx: Vec<VecDeque<(Vec<u8>, u8)>>,
    /// Payload sequence number: every payload is distinct.
    seq: u32,
    /// `SHUT_RD`: `poll` reports `POLLRDHUP` (a non-blocking read is as
    /// before).
    shut_rd: bool,
    /// `SHUT_WR`: a send that starts a datagram fails with EPIPE (the
    /// first buffer comes from `sock_alloc_send_skb()`, which checks it);
    /// appending to a pending datagram and pushing it do not.
    shut_wr: bool,
}

fn payload(seq: u32, len: u16) -> Vec<u8> {
    let s = seq.to_le_bytes();
    (0..usize::from(len))
        .map(|i| s[i % 4].wrapping_add((i / 4) as u8).wrapping_mul(31) ^ (seq as u8))
        .collect()
}

impl Model {
    fn new(kernel: Kernel, layout: Layout) -> Self {
        Model {
            kernel,
            layout,
            queue: VecDeque::new(),
            peek_off: -1,
            cork: false,
            pending: None,
            ttl: 64,
            rx: vec![VecDeque::new(); layout.receivers().len()],
            seq: 0,
            shut_rd: false,
            shut_wr: false,
        }
    }

    fn next_payload(&mut self, len: u16) -> Vec<u8> {
        self.seq += 1;
        payload(self.seq, len)
    }

    /// Where a peek (or recv) finds its datagram: index and offset in it.
    fn locate(&self, peek: bool) -> Option<(usize, usize)> {
        if !peek || self.peek_off < 0 {
            return (!self.queue.is_empty()).then_some((0, 0));
        }
        let mut off = self.peek_off as usize;
        for (i, d) in self.queue.iter().enumerate() {
            let len = d.payload.len();
            if off >= len && (off > 0 || d.marked) {
                off -= len;
                continue;
            }
            return Some((i, off));
        }
        None
    }

    fn resolve_cap(&self, cap: Cap, peek: bool) -> usize {
        match cap {
            Cap::Zero => 0,
            Cap::Abs(n) => usize::from(n),
            Cap::Rel(d) => {
                let left = self
                    .locate(peek)
                    .map(|(i, off)| self.queue[i].payload.len() - off)
                    .unwrap_or(0);
                (left as isize + isize::from(d)).max(0) as usize
            }
        }
    }

    fn resolve_off(&self, off: Off) -> i32 {
        let starts: Vec<usize> = self
            .queue
            .iter()
            .scan(0usize, |acc, d| {
                let s = *acc;
                *acc += d.payload.len();
                Some(s)
            })
            .collect();
        let total: usize = self.queue.iter().map(|d| d.payload.len()).sum();
        match off {
            Off::Neg1 => -1,
            Off::Neg(n) => -2 - i32::from(n % 50),
            Off::Abs(n) => i32::from(n),
            Off::Boundary(k) => {
                let k = usize::from(k) % (self.queue.len() + 1);
                starts.get(k).copied().unwrap_or(total) as i32
            }
            Off::Inside(k, f) => {
                if self.queue.is_empty() {
                    return 0;
                }
                let k = usize::from(k) % self.queue.len();
                let len = self.queue[k].payload.len();
                let inside = if len > 1 {
                    1 + usize::from(f) % (len - 1)
                } else {
                    0
                };
                (starts[k] + inside) as i32
            }
        }
    }

    /// `recvmsg` with `cap` bytes of buffer; the errno is EAGAIN.
    fn recv(&mut self, peek: bool, cap: usize, trunc_call: bool) -> Result<Got, i32> {
        let Some((i, off)) = self.locate(peek) else {
            return Err(libc::EAGAIN);
        };
        let d = &mut self.queue[i];
        let ulen = d.payload.len();
        let copied = cap.min(ulen - off);
        let trunc = cap <= ulen - off && cap < ulen;
        let ret = if trunc_call { ulen } else { copied };
        // The caller sees min(ret, cap) bytes of its zeroed buffer: with
        // MSG_TRUNC in the call's flags `ret` may exceed what was copied.
        let mut data = d.payload[off..off + copied].to_vec();
        data.resize(ret.min(cap), 0);
        let got = Got {
            data,
            ret,
            trunc,
            from: d.from,
            gro: d.gso,
        };
        if peek && ulen == 0 {
            d.marked = true;
        }
        if !peek {
            self.queue.remove(i);
        }
        if self.peek_off >= 0 {
            let delta = ret as i64 * if peek { 1 } else { -1 };
            self.peek_off = (i64::from(self.peek_off) + delta).clamp(0, i64::from(i32::MAX)) as i32;
        }
        Ok(got)
    }

    fn set_peek_off(&mut self, v: i32) {
        self.peek_off = v;
        if self.kernel.fixed_peek && v >= 0 {
            for d in &mut self.queue {
                d.marked = false;
            }
        }
    }

    fn set_cork(&mut self, on: bool) {
        self.cork = on;
        if !on {
            self.push();
        }
    }

    fn push(&mut self) {
        if let Some(p) = self.pending.take() {
            let ttl = match p.ttl {
                PendTtl::Fixed(t) => t,
                PendTtl::Socket => self.ttl,
            };
            self.rx[p.to].push_back((p.payload, ttl));
        }
    }

    /// A send of the socket; the errno is EINVAL. A cmsg counts only on a
    /// send that is not appended to pending data.
    fn send(
        &mut self,
        to: usize,
        data: Vec<u8>,
        more: bool,
        cmsg_ttl: Option<u8>,
    ) -> Result<usize, i32> {
        let n = data.len();
        let dest_v6 = self.layout.receivers()[to];
        let corkreq = self.cork || more;
        if self.shut_wr && self.pending.is_none() {
            return Err(libc::EPIPE);
        }
        if let Some(p) = &mut self.pending {
            if self.layout.socket_v6() && !dest_v6 && p.v6 {
                return Err(libc::EINVAL);
            }
            p.payload.extend_from_slice(&data);
            if !corkreq {
                self.push();
            }
        } else if corkreq {
            let ttl = match (dest_v6, cmsg_ttl) {
                (_, Some(t)) => PendTtl::Fixed(t),
                (true, None) => PendTtl::Fixed(self.ttl),
                (false, None) => PendTtl::Socket,
            };
            self.pending = Some(MPending {
                v6: dest_v6,
                to,
                payload: data,
                ttl,
            });
        } else {
            self.rx[to].push_back((data, cmsg_ttl.unwrap_or(self.ttl)));
        }
        Ok(n)
    }

    /// Byte position of each datagram.
    fn starts(&self) -> Vec<usize> {
        let mut at = 0;
        self.queue
            .iter()
            .map(|d| {
                let s = at;
                at += d.payload.len();
                s
            })
            .collect()
    }

    /// Indices of the zero-length datagrams at the peek offset that a walk
    /// has already returned (a prefix of those at that position).
    fn marked_at_offset(&self) -> Vec<usize> {
        if self.peek_off < 0 {
            return Vec::new();
        }
        let p = self.peek_off as usize;
        self.starts()
            .into_iter()
            .enumerate()
            .filter(|&(i, s)| s == p && self.queue[i].payload.is_empty() && self.queue[i].marked)
            .map(|(i, _)| i)
            .collect()
    }

    fn expect_dump(&self) -> DumpExpect {
        if self.pending.is_some() && self.kernel.reader.is_none() {
            return DumpExpect::Refused;
        }
        if self.kernel.fixed_peek {
            let at = self.marked_at_offset();
            let datagrams = self
                .queue
                .iter()
                .enumerate()
                .map(|(i, d)| (d.payload.clone(), d.from, at.contains(&i), d.gso))
                .collect();
            return DumpExpect::Image {
                datagrams,
                vouched: true,
            };
        }
        // The walk sees what is not marked; a marked zero-length head is
        // recovered by a peek without offset unless the walk starts with a
        // zero-length datagram.
        let mut datagrams: Vec<(Vec<u8>, SocketAddr, bool, Option<u16>)> = self
            .queue
            .iter()
            .filter(|d| !d.payload.is_empty() || !d.marked)
            .map(|d| (d.payload.clone(), d.from, false, d.gso))
            .collect();
        if let Some(h) = self.queue.front() {
            if h.payload.is_empty()
                && h.marked
                && !datagrams.first().is_some_and(|d| d.0.is_empty())
            {
                datagrams.insert(0, (Vec::new(), h.from, true, None));
            }
        }
        DumpExpect::Image {
            datagrams,
            vouched: self.queue.is_empty(),
        }
    }

    /// The original socket after a dump that read its receive queue.
    fn after_dump(&mut self) {
        if self.kernel.fixed_peek {
            // Marks elsewhere than at the offset can no longer be observed:
            // the next offset set clears them.
            let keep = self.marked_at_offset();
            for (i, d) in self.queue.iter_mut().enumerate() {
                d.marked = keep.contains(&i);
            }
        } else {
            for d in &mut self.queue {
                if d.payload.is_empty() {
                    d.marked = true;
                }
            }
        }
    }

    /// The restored socket: the image's datagrams, marked as recorded; the
    /// pending datagram re-sent, with its TTL where the reader saved it,
    /// else with the socket's (fixed at the re-send for IPv6 data).
    fn after_restore(&mut self, datagrams: Vec<(Vec<u8>, SocketAddr, bool, Option<u16>)>) {
        if !self.kernel.reader_saves_cork() {
            let ttl = self.ttl;
            if let Some(p) = &mut self.pending {
                p.ttl = if p.v6 {
                    PendTtl::Fixed(ttl)
                } else {
                    PendTtl::Socket
                };
            }
        }
        self.queue = datagrams
            .into_iter()
            .map(|(payload, from, marked, gso)| MDgram {
                payload,
                from,
                marked,
                gso,
            })
            .collect();
    }
}

/// The real sockets of a case.
#[derive(Debug)]
struct World {
    layout: Layout,
    /// The socket under test.
    s: OwnedFd,
    port: u16,
    senders: Vec<UdpSocket>,
    receivers: Vec<UdpSocket>,
}

/// A UDP socket with SO_REUSEADDR, bound to `at`.
fn reuseaddr_socket(at: SocketAddr) -> std::io::Result<UdpSocket> {
    let fam = if at.is_ipv4() {
        rustix::net::AddressFamily::INET
    } else {
        rustix::net::AddressFamily::INET6
    };
    let fd = rustix::net::socket(fam, rustix::net::SocketType::DGRAM, None)?;
    sys::setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    rustix::net::bind(&fd, &at)?;
    Ok(UdpSocket::from(fd))
}

fn io_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl World {
    fn new(layout: Layout) -> Result<Self, String> {
        let s = UdpSocket::bind(layout.bind()).map_err(|e| io_err("bind", e))?;
        let port = s.local_addr().map_err(|e| io_err("getsockname", e))?.port();
        // Aggregates arrive whole (and a restore re-creates them).
        sys::setsockopt_int(s.as_fd(), libc::SOL_UDP, libc::UDP_GRO, 1)
            .map_err(|e| io_err("UDP_GRO", e))?;
        // The peers share their ports (SO_REUSEADDR), as the restore's
        // socket that re-sends an aggregate from its source binds them too.
        let senders = layout
            .senders()
            .into_iter()
            .map(|ip| reuseaddr_socket(SocketAddr::new(ip, 0)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| io_err("bind a sender", e))?;
        let receivers = layout
            .receivers()
            .into_iter()
            .map(|v6| {
                let ip: IpAddr = if v6 {
                    Ipv6Addr::LOCALHOST.into()
                } else {
                    Ipv4Addr::LOCALHOST.into()
                };
                let r = UdpSocket::bind(SocketAddr::new(ip, 0))?;
                r.set_read_timeout(Some(ARRIVAL))?;
                let (level, name) = if v6 {
                    (libc::SOL_IPV6, libc::IPV6_RECVHOPLIMIT)
                } else {
                    (libc::SOL_IP, libc::IP_RECVTTL)
                };
                sys::setsockopt_int(r.as_fd(), level, name, 1)?;
                Ok(r)
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| io_err("bind a receiver", e))?;
        Ok(World {
            layout,
            s: s.into(),
            port,
            senders,
            receivers,
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.s.as_fd()
    }

    /// Where a sender reaches the socket.
    fn target(&self, sender: &UdpSocket) -> Result<SocketAddr, String> {
        let from = sender.local_addr().map_err(|e| io_err("getsockname", e))?;
        Ok(if from.is_ipv4() {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.port)
        } else {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), self.port)
        })
    }

    /// Where the socket reaches a receiver (v4-mapped from an IPv6 socket).
    fn dest(&self, to: usize) -> Result<SocketAddr, String> {
        let a = self.receivers[to]
            .local_addr()
            .map_err(|e| io_err("getsockname", e))?;
        Ok(match a {
            SocketAddr::V4(v4) if self.layout.socket_v6() => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            a => a,
        })
    }

    /// The source a receiver sees on the socket's datagrams.
    fn source_seen_by(&self, to: usize) -> SocketAddr {
        let ip: IpAddr = if self.layout.receivers()[to] {
            Ipv6Addr::LOCALHOST.into()
        } else {
            Ipv4Addr::LOCALHOST.into()
        };
        SocketAddr::new(ip, self.port)
    }

    /// A peer sends `data` to the socket: one datagram, or with `gso` one
    /// UDP_SEGMENT send that the socket (UDP_GRO on) receives whole.
    fn deliver(&self, sender: usize, data: &[u8], gso: Option<u16>) -> Result<SocketAddr, String> {
        let tx = &self.senders[sender];
        let to = self.target(tx)?;
        let (rmem, _) =
            udp_repair_engine::peek::meminfo(self.fd()).map_err(|e| io_err("SO_MEMINFO", e))?;
        let mut c = wire::CmsgBuilder::default();
        if let Some(g) = gso {
            c.push(libc::SOL_UDP, libc::UDP_SEGMENT, &g.to_ne_bytes());
        }
        let n = sys::sendmsg_bytes(tx.as_fd(), data, &wire::sockaddr_bytes(&to), c.bytes(), 0)
            .map_err(|e| io_err("send to the socket", e))?;
        if n != data.len() {
            return Err(format!("sent {n} of {} bytes", data.len()));
        }
        // Every datagram adds its truesize to rmem_alloc: wait for it.
        let deadline = Instant::now() + ARRIVAL;
        loop {
            let (now, _) =
                udp_repair_engine::peek::meminfo(self.fd()).map_err(|e| io_err("SO_MEMINFO", e))?;
            if now != rmem {
                break;
            }
            if Instant::now() > deadline {
                return Err("a datagram sent to the socket did not arrive".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(wire::canonical(
            tx.local_addr().map_err(|e| io_err("getsockname", e))?,
        ))
    }

    fn recv(&self, cap: usize, flags: i32) -> Result<Got, i32> {
        let mut buf = vec![0u8; cap];
        let mut name = [0u8; 128];
        let mut control = [0u8; 64];
        match sys::recvmsg_bytes(
            self.fd(),
            &mut buf,
            &mut name,
            &mut control,
            flags | libc::MSG_DONTWAIT,
        ) {
            Ok(o) => Ok(Got {
                data: buf[..o.len.min(cap)].to_vec(),
                ret: o.len,
                trunc: o.flags & libc::MSG_TRUNC != 0,
                from: wire::parse_sockaddr(&name[..o.name_len.min(name.len())])
                    .map(wire::canonical)
                    .unwrap_or(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)),
                gro: wire::cmsgs(&control[..o.control_len.min(control.len())])
                    .find(|c| (c.level, c.kind) == (libc::SOL_UDP, libc::UDP_GRO))
                    .and_then(|c| c.data.get(..4))
                    .and_then(|b| u16::try_from(i32::from_ne_bytes(b.try_into().ok()?)).ok()),
            }),
            Err(e) => Err(e.raw_os_error().unwrap_or(-1)),
        }
    }

    fn send(&self, to: usize, data: &[u8], more: bool, ttl: Option<u8>) -> Result<usize, String> {
        let dest = self.dest(to)?;
        let flags = if more { libc::MSG_MORE } else { 0 };
        let mut c = wire::CmsgBuilder::default();
        if let Some(t) = ttl {
            if self.layout.receivers()[to] {
                c.push_int(libc::SOL_IPV6, libc::IPV6_HOPLIMIT, i32::from(t));
            } else {
                c.push_int(libc::SOL_IP, libc::IP_TTL, i32::from(t));
            }
        }
        sys::sendmsg_bytes(
            self.fd(),
            data,
            &wire::sockaddr_bytes(&dest),
            c.bytes(),
            flags | libc::MSG_DONTWAIT,
        )
        .map_err(|e| format!("errno {}", e.raw_os_error().unwrap_or(-1)))
    }

    fn set_ttl(&self, ttl: u8) -> Result<(), String> {
        let t = i32::from(ttl);
        sys::setsockopt_int(self.fd(), libc::SOL_IP, libc::IP_TTL, t)
            .map_err(|e| io_err("IP_TTL", e))?;
        if self.layout.socket_v6() {
            sys::setsockopt_int(self.fd(), libc::SOL_IPV6, libc::IPV6_UNICAST_HOPS, t)
                .map_err(|e| io_err("IPV6_UNICAST_HOPS", e))?;
        }
        Ok(())
    }

    fn int(&self, level: i32, name: i32, what: &str) -> Result<i32, String> {
        sys::getsockopt_int(self.fd(), level, name).map_err(|e| io_err(what, e))
    }

    /// `SIOCINQ`: the length of the datagram at the head.
    fn inq(&self) -> Result<i32, String> {
        rustix::io::ioctl_fionread(self.fd())
            .map(|n| n as i32)
            .map_err(|e| io_err("SIOCINQ", std::io::Error::from(e)))
    }

    /// `SIOCOUTQ`: the send queue's truesize.
    fn outq(&self) -> Result<i32, String> {
        sys::outq(self.fd()).map_err(|e| io_err("SIOCOUTQ", e))
    }
}

/// Compares everything observable with the model.
fn check_state(m: &mut Model, w: &World) -> Result<(), String> {
    let off = w.int(libc::SOL_SOCKET, libc::SO_PEEK_OFF, "SO_PEEK_OFF")?;
    if off != m.peek_off {
        return Err(format!(
            "SO_PEEK_OFF is {off}, the model says {}",
            m.peek_off
        ));
    }
    let cork = w.int(libc::SOL_UDP, libc::UDP_CORK, "UDP_CORK")? != 0;
    if cork != m.cork {
        return Err(format!("UDP_CORK is {cork}, the model says {}", m.cork));
    }
    let rdhup = udp_repair_engine::sys::poll_now(w.s.as_fd(), rustix::event::PollFlags::RDHUP)
        .map_err(|e| io_err("poll", e))?
        .contains(rustix::event::PollFlags::RDHUP);
    if rdhup != m.shut_rd {
        return Err(format!(
            "POLLRDHUP is {rdhup}, the model says SHUT_RD is {}",
            m.shut_rd
        ));
    }
    let inq = w.inq()?;
    let want = m.queue.front().map_or(0, |d| d.payload.len()) as i32;
    if inq != want {
        return Err(format!(
            "SIOCINQ is {inq}, the model's head has {want} bytes"
        ));
    }
    let outq = w.outq()?;
    if (outq > 0) != m.pending.is_some() {
        return Err(format!(
            "SIOCOUTQ is {outq}, the model has {} pending",
            if m.pending.is_some() {
                "data"
            } else {
                "nothing"
            }
        ));
    }
    for (i, r) in w.receivers.iter().enumerate() {
        let want_src = w.source_seen_by(i);
        while let Some((want, want_ttl)) = m.rx[i].pop_front() {
            let mut buf = vec![0u8; 70_000];
            let mut name = [0u8; 128];
            let mut control = [0u8; 128];
            let o = sys::recvmsg_bytes(r.as_fd(), &mut buf, &mut name, &mut control, 0).map_err(
                |e| format!("receiver {i}: expected a {}-byte datagram: {e}", want.len()),
            )?;
            let from =
                wire::parse_sockaddr(&name[..o.name_len.min(name.len())]).map(wire::canonical);
            let ttl = wire::cmsgs(&control[..o.control_len.min(control.len())])
                .find(|c| {
                    matches!(
                        (c.level, c.kind),
                        (libc::SOL_IP, libc::IP_TTL) | (libc::SOL_IPV6, libc::IPV6_HOPLIMIT)
                    )
                })
                .and_then(|c| c.data.get(..4))
                .map(|d| i32::from_ne_bytes([d[0], d[1], d[2], d[3]]));
            let n = o.len;
            if buf[..n] != want[..] || from != Some(want_src) || ttl != Some(i32::from(want_ttl)) {
                return Err(format!(
                    "receiver {i} got {n} bytes from {from:?} ({}) TTL {ttl:?}, expected {} bytes from {want_src} ({}) TTL {want_ttl}",
                    hex(&buf[..n]),
                    want.len(),
                    hex(&want)
                ));
            }
        }
        r.set_nonblocking(true)
            .map_err(|e| io_err("O_NONBLOCK", e))?;
        let mut buf = [0u8; 2048];
        let extra = r.recv_from(&mut buf);
        r.set_nonblocking(false)
            .map_err(|e| io_err("O_NONBLOCK", e))?;
        if let Ok((n, from)) = extra {
            return Err(format!(
                "receiver {i} got an unexpected {n}-byte datagram from {from} ({})",
                hex(&buf[..n])
            ));
        }
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    let mut s = String::new();
    for x in b.iter().take(12) {
        let _ = write!(s, "{x:02x}");
    }
    if b.len() > 12 {
        s.push_str("..");
    }
    s
}

fn show(r: &Result<Got, i32>) -> String {
    match r {
        Ok(g) => format!(
            "ret {} data {}B[{}]{}{} from {}",
            g.ret,
            g.data.len(),
            hex(&g.data),
            if g.trunc { " TRUNC" } else { "" },
            g.gro.map(|s| format!(" GRO {s}")).unwrap_or_default(),
            g.from
        ),
        Err(e) => format!("errno {e}"),
    }
}

fn show_image(d: &[(Vec<u8>, SocketAddr, bool, Option<u16>)]) -> String {
    d.iter()
        .map(|(p, f, k, g)| {
            let gro = g.map(|g| format!("/gro{g}")).unwrap_or_default();
            format!("{}B{gro}{}@{}", p.len(), if *k { "*" } else { "" }, f)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Dumps the socket and checks the image (and the refusal) against the
/// model. Returns the image when one was expected.
fn dump_and_check(
    m: &Model,
    w: &World,
    log: &mut String,
    drain: bool,
) -> Result<Option<(v1::Checkpoint, Image)>, String> {
    let expect = m.expect_dump();
    let opts = dump::DumpOptions {
        drain_receive_queue: drain,
        ..super::round_trip_options()
    };
    let got = dump::dump_with(w.fd(), &opts);
    match (expect, got) {
        (DumpExpect::Refused, Err(e)) => {
            if e.step != "send queue" {
                return Err(format!("the dump was refused at the wrong step: {e}"));
            }
            let _ = write!(log, " refused ({e})");
            Ok(None)
        }
        (DumpExpect::Refused, Ok(cp)) => Err(format!(
            "the dump of a socket with pending data succeeded with no reader: {:?}",
            cp.send_queue
        )),
        (DumpExpect::Image { .. }, Err(e)) => Err(format!("the dump failed: {e}")),
        (DumpExpect::Image { datagrams, vouched }, Ok(cp)) => {
            let rq = cp.receive_queue.clone().unwrap_or_default();
            let seen: Vec<(Vec<u8>, SocketAddr, bool, Option<u16>)> = rq
                .datagrams
                .iter()
                .map(|d| {
                    let from = d
                        .source
                        .as_ref()
                        .map(|s| wire::canonical(wire::from_proto(s)))
                        .unwrap_or(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
                    (
                        d.payload.to_vec(),
                        from,
                        d.peeked,
                        d.gso_size.and_then(|g| u16::try_from(g).ok()),
                    )
                })
                .collect();
            let _ = write!(
                log,
                " image [{}] vouched {} peek_off {}",
                show_image(&seen),
                rq.zero_length_vouched,
                cp.peek_offset
            );
            if seen != datagrams {
                return Err(format!(
                    "the image holds [{}], the model says [{}]",
                    show_image(&seen),
                    show_image(&datagrams)
                ));
            }
            if rq.zero_length_vouched != vouched {
                return Err(format!(
                    "the image says zero_length_vouched = {}, the model says {vouched} ({})",
                    rq.zero_length_vouched, rq.zero_length_note
                ));
            }
            if cp.peek_offset != m.peek_off {
                return Err(format!(
                    "the image has peek offset {}, the socket {}",
                    cp.peek_offset, m.peek_off
                ));
            }
            let sq = cp.send_queue.clone().unwrap_or_default();
            if sq.udp_cork != m.cork {
                return Err(format!("the image has udp_cork {}", sq.udp_cork));
            }
            match (&m.pending, &sq.pending) {
                (None, None) => {}
                (Some(p), Some(q)) => {
                    let dest = wire::canonical(wire::from_proto(
                        q.destination.as_ref().unwrap_or(&Default::default()),
                    ));
                    let want = wire::canonical(w.dest(p.to)?);
                    if q.payload != p.payload || dest != want {
                        return Err(format!(
                            "the image's pending datagram is {} bytes to {dest}, the model's {} bytes to {want}",
                            q.payload.len(),
                            p.payload.len()
                        ));
                    }
                }
                (a, b) => {
                    return Err(format!(
                        "pending in the model: {}, in the image: {}",
                        a.is_some(),
                        b.is_some()
                    ))
                }
            }
            Ok(Some((cp, datagrams)))
        }
    }
}

/// Datagrams of an image: payload, sender, `peeked`.
type Image = Vec<(Vec<u8>, SocketAddr, bool, Option<u16>)>;

/// Runs one sequence; `log` gets one line per operation. On a mismatch the
/// error names the operation and what differs.
pub fn run_case(
    kernel: &Kernel,
    layout: Layout,
    ops: &[Op],
    log: &mut String,
) -> Result<(), String> {
    let mut m = Model::new(kernel.clone(), layout);
    let mut w = World::new(layout)?;
    let _ = writeln!(log, "layout {layout:?}, socket port {}", w.port);
    check_state(&mut m, &w).map_err(|e| format!("initial state: {e}"))?;
    for (i, op) in ops.iter().enumerate() {
        let _ = write!(log, "#{i} {op:?}:");
        let r = step(&mut m, &mut w, *op, log).and_then(|()| check_state(&mut m, &w));
        let _ = writeln!(log);
        r.map_err(|e| format!("op #{i} {op:?}: {e}"))?;
    }
    Ok(())
}

fn step(m: &mut Model, w: &mut World, op: Op, log: &mut String) -> Result<(), String> {
    match op {
        Op::Deliver { sender, len, gso } => {
            if m.queue.len() >= MAX_QUEUE {
                let _ = write!(log, " skipped (queue full)");
                return Ok(());
            }
            let idx = usize::from(sender) % w.senders.len();
            let data = m.next_payload(len);
            // An aggregate only when longer than one segment (a send that
            // fits one segment is a plain datagram: udp_send_skb()).
            let gso = gso.filter(|g| data.len() > usize::from(*g));
            let from = w.deliver(idx, &data, gso)?;
            let _ = write!(log, " {}B from {from}", data.len());
            m.queue.push_back(MDgram {
                payload: data,
                from,
                marked: false,
                gso,
            });
        }
        Op::Peek { cap, trunc } | Op::Recv { cap, trunc } => {
            let peek = matches!(op, Op::Peek { .. });
            let cap = m.resolve_cap(cap, peek);
            let mut flags = if trunc { libc::MSG_TRUNC } else { 0 };
            if peek {
                flags |= libc::MSG_PEEK;
            }
            let want = m.recv(peek, cap, trunc);
            let got = w.recv(cap, flags);
            let _ = write!(log, " cap {cap}: {}", show(&got));
            if got != want {
                return Err(format!(
                    "got {}, the model says {}",
                    show(&got),
                    show(&want)
                ));
            }
        }
        Op::SetPeekOff(off) => {
            let v = m.resolve_off(off);
            let _ = write!(log, " {v}");
            sys::setsockopt_int(w.fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, v)
                .map_err(|e| io_err("SO_PEEK_OFF", e))?;
            m.set_peek_off(v);
        }
        Op::Cork(on) => {
            sys::setsockopt_int(w.fd(), libc::SOL_UDP, libc::UDP_CORK, i32::from(on))
                .map_err(|e| io_err("UDP_CORK", e))?;
            m.set_cork(on);
        }
        Op::SetTtl(t) => {
            w.set_ttl(t)?;
            m.ttl = t;
        }
        Op::Shutdown(write) => {
            let how = if write {
                rustix::net::Shutdown::Write
            } else {
                rustix::net::Shutdown::Read
            };
            match rustix::net::shutdown(w.fd(), how) {
                Ok(()) | Err(rustix::io::Errno::NOTCONN) => {}
                Err(e) => return Err(format!("shutdown: {e}")),
            }
            if write {
                m.shut_wr = true;
            } else {
                m.shut_rd = true;
            }
        }
        Op::Send { to, len, more, ttl } => {
            let to = usize::from(to) % w.receivers.len();
            let grown = m.pending.as_ref().map_or(0, |p| p.payload.len()) + usize::from(len);
            if grown > MAX_PENDING {
                let _ = write!(log, " skipped (pending datagram too long)");
                return Ok(());
            }
            let data = m.next_payload(len);
            let want = m.send(to, data.clone(), more, ttl);
            let got = w.send(to, &data, more, ttl);
            let _ = write!(log, " {}B to receiver {to}: {got:?}", data.len());
            let same = match (&want, &got) {
                (Ok(a), Ok(b)) => a == b,
                (Err(e), Err(g)) => *g == format!("errno {e}"),
                _ => false,
            };
            if !same {
                return Err(format!("send returned {got:?}, the model says {want:?}"));
            }
        }
        Op::Dump => {
            let image = dump_and_check(m, w, log, false)?;
            if image.is_some() {
                m.after_dump();
            }
        }
        Op::DumpRestore | Op::DrainRestore => {
            let drain = matches!(op, Op::DrainRestore)
                && udp_repair_engine::peek::peek_walk_restarts() == Some(true);
            if drain {
                let _ = write!(log, " (drain)");
            }
            let Some((cp, datagrams)) = dump_and_check(m, w, log, drain)? else {
                return Ok(());
            };
            let bytes =
                udp_repair_proto::encode(&cp).map_err(|e| io_err("encoding the image", e))?;
            let cp =
                udp_repair_proto::decode(&bytes).map_err(|e| io_err("decoding the image", e))?;
            // The original goes away (with whatever it had pending): the
            // restored socket takes its address.
            let placeholder: OwnedFd = UdpSocket::bind("127.0.0.1:0")
                .map_err(|e| io_err("placeholder socket", e))?
                .into();
            drop(std::mem::replace(&mut w.s, placeholder));
            let (fd, report) = restore::restore_with(&cp, &RestoreOptions::default())
                .map_err(|e| format!("restore: {e}"))?;
            w.s = fd;
            let _ = write!(log, " restored {} datagram(s)", report.restored);
            m.after_restore(datagrams);
        }
    }
    Ok(())
}

/// proptest's ChaCha seed from a `u64`.
fn rng(seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    for (i, c) in bytes.chunks_mut(8).enumerate() {
        c.copy_from_slice(&(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes());
    }
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// Runs `cases` generated sequences from `seed` (deterministic), shrinking
/// a failure to a minimal sequence. The error holds the seed, the minimal
/// sequence, why it fails and its per-operation log.
pub fn run(kernel: &Kernel, layout: Layout, cases: u32, seed: u64) -> Result<(), String> {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 400,
        max_shrink_time: 120_000,
        rng_algorithm: RngAlgorithm::ChaCha,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, rng(seed));
    let result = runner.run(&ops_strategy(), |ops| {
        let mut log = String::new();
        run_case(kernel, layout, &ops, &mut log).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => Ok(()),
        Err(TestError::Fail(why, ops)) => {
            let mut log = String::new();
            let again = run_case(kernel, layout, &ops, &mut log);
            Err(format!(
                "state machine failed (seed {seed}: rerun with UDP_REPAIR_PROPTEST_SEED={seed}); {kernel:?}\n\
                 minimal sequence ({} ops): {ops:?}\nwhy: {why}\nrerun: {}\nlog of the rerun:\n{log}",
                ops.len(),
                match again {
                    Ok(()) => "passed (flaky?)".to_string(),
                    Err(e) => e,
                }
            ))
        }
        Err(TestError::Abort(why)) => Err(format!("state machine aborted (seed {seed}): {why}")),
    }
}
