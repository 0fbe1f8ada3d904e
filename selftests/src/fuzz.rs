//! Random sequences of UDP socket calls, repair mode on and off, without a
//! model: the state machine's operation set (dumprestore/model.rs) and
//! the repair options of every series, applied at random to a few sockets
//! for many more calls than the model runs, under whatever kernel the
//! guest boots (the harness fails the run on any splat: KASAN, lockdep, a
//! hung task, an RCU stall).
//!
//! What is asserted without a model:
//! - no call fails with an errno that valid arguments never earn
//!   (`EFAULT`, `EBADF`, `ENOTSOCK`, `EIO`): every buffer and descriptor
//!   here is valid;
//! - every byte a dump returns (`UDP_REPAIR_PENDING_DATA`, the recvmsg
//!   series' repair-mode peek) and every byte a peer receives was sent by
//!   that socket: each send's payload is one byte value that names its
//!   socket (never 0), so tailroom, another socket's data or stale memory
//!   shows;
//! - `UDP_REPAIR` reads back what was last set successfully;
//! - `getsockopt` never reports more bytes than the buffer it was given.
//!
//! `fuzz::concurrent_calls` makes the same calls from four threads at once
//! on shared sockets (closes included) for `UDP_REPAIR_FUZZ_RACE_SECS`
//! (default 10), with the checks that hold whatever the other threads do.
//!
//! The single-thread run is deterministic for a seed (`UDP_REPAIR_FUZZ_SEED`), bounded
//! by calls (`UDP_REPAIR_FUZZ_CALLS`, default 200 000) and time
//! (`UDP_REPAIR_FUZZ_SECS`, default 20; `udp-repair test --fuzz-secs` sets
//! both), and prints its figures: calls, those of the new options, calls
//! per operation, errors by errno, duration.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use udp_repair_engine::sys::{getsockopt_bytes_len, getsockopt_int, setsockopt_int};
use udp_repair_engine::uapi::{getsockopt as gs, pendinglost as pl, recvmsg as rr};

use crate::ktap::{Context, Failed, Test};

/// `SOL_UDP` options of the series (include/uapi/linux/udp.h as patched).
const UDP_REPAIR: i32 = 2;

/// The tests of the suite.
pub fn tests() -> Vec<Test> {
    vec![
        Test::new("fuzz::random_calls", random_calls),
        Test::new("fuzz::concurrent_calls", concurrent_calls),
    ]
}

/// The operations, in the order of [`OP_NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Open,
    Close,
    Connect,
    Disconnect,
    Send,
    Cork,
    Repair,
    RepairGet,
    Pending,
    PendingData,
    Recv,
    PeekOff,
    Shutdown,
    Ttl,
    PendingLost,
    Deliver,
    Drain,
}

/// The operations and their weights on a kernel with every option; see
/// [`Kernel::weight`] for how the kernel under test changes them.
const OPS: &[(Op, u32)] = &[
    (Op::Open, 3),
    (Op::Close, 1),
    (Op::Connect, 2),
    (Op::Disconnect, 1),
    (Op::Send, 12),
    (Op::Cork, 3),
    (Op::Repair, 4),
    (Op::RepairGet, 1),
    (Op::Pending, 4),
    (Op::PendingData, 4),
    (Op::Recv, 5),
    (Op::PeekOff, 2),
    (Op::Shutdown, 1),
    (Op::Ttl, 1),
    (Op::PendingLost, 1),
    (Op::Deliver, 5),
    (Op::Drain, 2),
];

const SLOTS: usize = 4;

/// How many times its base weight an option of the booted series gets,
/// so that most of a run's time goes into the new kernel code: with it
/// about a third of the calls are the series' options (the recvmsg
/// series' repair-mode reads included).
const OWN_BOOST: u32 = 3;

/// Which of the series' options the booted kernel has, probed once at
/// the start (each probe is one `getsockopt` on a fresh socket).
#[derive(Debug, Clone, Copy)]
struct Kernel {
    /// `UDP_REPAIR` exists (every series).
    repair: bool,
    /// It is the recvmsg series' `UDP_REPAIR`: in repair mode a peek reads
    /// the socket's own pending datagram, so repair-mode receives are new
    /// kernel code.
    recvmsg: bool,
    /// `UDP_REPAIR_PENDING` and `UDP_REPAIR_PENDING_DATA` (getsockopt).
    pending: bool,
    /// `UDP_REPAIR_PENDING_LOST` (pending-lost).
    lost: bool,
}

impl Kernel {
    fn probe() -> Result<Self, Failed> {
        let s = loopback(false, "bind a probe socket")?;
        let fd = s.as_fd();
        Ok(Self {
            repair: getsockopt_int(fd, libc::SOL_UDP, UDP_REPAIR).is_ok(),
            recvmsg: rr::probe().ctx("probe the recvmsg series' UDP_REPAIR")?
                == rr::Support::Recvmsg,
            pending: gs::detect(fd).ctx("probe UDP_REPAIR_PENDING")?,
            lost: pl::marked(fd)
                .ctx("probe UDP_REPAIR_PENDING_LOST")?
                .is_some(),
        })
    }

    /// Whether `op` is a call of an option this kernel has (`None`: not an
    /// option of any series).
    fn has(self, op: Op) -> Option<bool> {
        match op {
            Op::Repair | Op::RepairGet => Some(self.repair),
            Op::Pending | Op::PendingData => Some(self.pending),
            Op::PendingLost => Some(self.lost),
            _ => None,
        }
    }

    /// `op`'s weight here: an option the kernel has is boosted by
    /// [`OWN_BOOST`], one it lacks keeps weight 1 (its `ENOPROTOOPT` path
    /// is still called), the rest keep `base`; receives count as the
    /// recvmsg series' code on its kernels.
    fn weight(self, op: Op, base: u32) -> u32 {
        match self.has(op) {
            Some(true) => base * OWN_BOOST,
            Some(false) => 1,
            None if op == Op::Recv && self.recvmsg => base * OWN_BOOST,
            None => base,
        }
    }

    /// The options this kernel has, for the figures.
    fn names(self) -> String {
        let mut v = Vec::new();
        if self.repair {
            v.push(if self.recvmsg {
                "UDP_REPAIR (recvmsg series)"
            } else {
                "UDP_REPAIR"
            });
        }
        if self.pending {
            v.push("UDP_REPAIR_PENDING(_DATA)");
        }
        if self.lost {
            v.push("UDP_REPAIR_PENDING_LOST");
        }
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }
}

/// Errnos that valid arguments never earn.
const FORBIDDEN: &[i32] = &[libc::EFAULT, libc::EBADF, libc::ENOTSOCK, libc::EIO];

struct Slot {
    sock: UdpSocket,
    v6: bool,
    /// The `UDP_REPAIR` value last set successfully.
    repair: AtomicBool,
    /// Sends so far (the low bits of the payload byte).
    sends: AtomicU32,
}

/// The sockets the calls go to: a slot is replaced (open) or emptied
/// (close) under its write lock; a call clones the socket out under the
/// read lock and makes its call without a lock, so that in
/// [`concurrent_calls`] calls on one socket overlap (the last clone
/// closes it).
type Slots = Arc<Vec<RwLock<Option<Arc<Slot>>>>>;

struct Fuzz {
    rng: TestRng,
    /// [`OPS`] weighted for the booted kernel ([`Kernel::weight`]).
    ops: Vec<(Op, u32)>,
    /// Calls that reached an option of the booted kernel's series (a
    /// receive in repair mode, on the recvmsg series, is one).
    own: u64,
    kernel: Kernel,
    slots: Slots,
    /// The only thread calling: checks that assume no call in between
    /// (what `UDP_REPAIR` reads back, the pending header matching the
    /// data read before it) are made only then.
    solo: bool,
    /// Peers per family: [IPv4, IPv6].
    peers: [Vec<UdpSocket>; 2],
    calls: BTreeMap<Op, u64>,
    errors: BTreeMap<i32, u64>,
    log: Vec<String>,
}

/// The payload byte of `slot`'s `n`-th send: the slot in the top two
/// bits, 1..=62 below: never 0 (what fresh memory holds) nor [`PEER`].
fn tag(slot: usize, n: u32) -> u8 {
    ((slot as u8) << 6) | (n % 62 + 1) as u8
}

/// The payload byte of the peers' datagrams to the sockets.
const PEER: u8 = 0xff;

/// Every byte of `data` is a payload byte of `slot`.
fn all_from(slot: usize, data: &[u8]) -> Result<(), String> {
    let foreign = |b: u8| b & 63 == 0 || b & 63 == 63 || (b >> 6) as usize != slot;
    match data.iter().position(|&b| foreign(b)) {
        None => Ok(()),
        Some(i) => Err(format!(
            "byte {i} of {} is {:#04x}: not a payload byte socket {slot} sent",
            data.len(),
            data[i]
        )),
    }
}

impl Fuzz {
    fn pick(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn op(&mut self) -> Op {
        let total: u32 = self.ops.iter().map(|(_, w)| w).sum();
        let mut r = self.pick(u64::from(total)) as u32;
        for i in 0..self.ops.len() {
            let (op, w) = self.ops[i];
            if r < w {
                return op;
            }
            r -= w;
        }
        Op::Send
    }

    /// Counts an errno, failing on one valid arguments never earn.
    fn result<T>(&mut self, what: &str, r: std::io::Result<T>) -> Result<Option<T>, Failed> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(-1);
                *self.errors.entry(errno).or_insert(0) += 1;
                if FORBIDDEN.contains(&errno) {
                    return Err(self.fail(format!("{what}: {e}: valid arguments never earn it")));
                }
                Ok(None)
            }
        }
    }

    fn fail(&self, why: String) -> Failed {
        let tail = self.log[self.log.len().saturating_sub(20)..].join("\n# ");
        Failed::from(format!("{why}\n# the last calls:\n# {tail}"))
    }

    fn peer(&mut self, v6: bool) -> SocketAddr {
        let i = self.pick(2) as usize;
        self.peers[usize::from(v6)][i]
            .local_addr()
            .expect("a bound peer has an address")
    }

    fn step(&mut self) -> Result<(), Failed> {
        let op = self.op();
        *self.calls.entry(op).or_insert(0) += 1;
        let i = self.pick(SLOTS as u64) as usize;
        if self.log.len() >= 64 {
            self.log.drain(..32);
        }
        match op {
            Op::Open => {
                let v6 = self.pick(2) == 1;
                let sock = loopback(v6, "bind a fuzzed socket")?;
                self.log.push(format!("{i}: open v6={v6}"));
                *self.slots[i].write().map_err(poisoned)? = Some(Arc::new(Slot {
                    sock,
                    v6,
                    repair: AtomicBool::new(false),
                    sends: AtomicU32::new(0),
                }));
                return Ok(());
            }
            Op::Close => {
                self.log.push(format!("{i}: close"));
                *self.slots[i].write().map_err(poisoned)? = None;
                return Ok(());
            }
            Op::Drain => return self.drain(),
            _ => {}
        }
        let Some(slot) = self.slots[i].read().map_err(poisoned)?.clone() else {
            return Ok(());
        };
        if self.kernel.has(op) == Some(true)
            || (op == Op::Recv && self.kernel.recvmsg && slot.repair.load(Ordering::Relaxed))
        {
            self.own += 1;
        }
        self.apply(i, op, &slot)
    }

    /// Applies `op` to socket `i`.
    fn apply(&mut self, i: usize, op: Op, s: &Slot) -> Result<(), Failed> {
        let fd = s.sock.as_fd();
        match op {
            Op::Connect => {
                let to = self.peer(s.v6);
                self.log.push(format!("{i}: connect {to}"));
                let r = s.sock.connect(to);
                self.result("connect", r)?;
            }
            Op::Disconnect => {
                self.log.push(format!("{i}: connect AF_UNSPEC"));
                let r = rustix::net::connect_unspec(fd).map_err(std::io::Error::from);
                self.result("connect(AF_UNSPEC)", r)?;
            }
            Op::Send => {
                let len = match self.pick(10) {
                    0 => 0,
                    1 => self.pick(65_600) as usize,
                    _ => self.pick(1_500) as usize,
                };
                let more = self.pick(2) == 1;
                let connected = self.pick(3) == 0;
                let payload = vec![tag(i, s.sends.fetch_add(1, Ordering::Relaxed)); len];
                let mut flags = rustix::net::SendFlags::DONTWAIT;
                if more {
                    flags |= rustix::net::SendFlags::MORE;
                }
                let r = if connected {
                    self.log.push(format!("{i}: send {len} more={more}"));
                    rustix::net::send(fd, &payload, flags)
                } else {
                    let to = self.peer(s.v6);
                    self.log.push(format!("{i}: sendto {to} {len} more={more}"));
                    rustix::net::sendto(fd, &payload, flags, &to)
                };
                self.result("send", r.map_err(std::io::Error::from))?;
            }
            Op::Cork => {
                let v = self.pick(2) as i32;
                self.log.push(format!("{i}: UDP_CORK {v}"));
                let r = setsockopt_int(fd, libc::SOL_UDP, libc::UDP_CORK, v);
                self.result("UDP_CORK", r)?;
            }
            Op::Repair => {
                let v = [0, 1, 1, 2, -1][self.pick(5) as usize];
                self.log.push(format!("{i}: UDP_REPAIR {v}"));
                let r = setsockopt_int(fd, libc::SOL_UDP, UDP_REPAIR, v);
                if self.result("UDP_REPAIR", r)?.is_some() {
                    if v != 0 && v != 1 {
                        return Err(self.fail(format!("UDP_REPAIR {v} was accepted")));
                    }
                    s.repair.store(v == 1, Ordering::Relaxed);
                }
            }
            Op::RepairGet => {
                self.log.push(format!("{i}: get UDP_REPAIR"));
                let r = getsockopt_int(fd, libc::SOL_UDP, UDP_REPAIR);
                let last = i32::from(s.repair.load(Ordering::Relaxed));
                if let Some(v) = self.result("get UDP_REPAIR", r)? {
                    if self.solo && v != last {
                        return Err(
                            self.fail(format!("UDP_REPAIR reads {v}, but {last} was set last"))
                        );
                    }
                }
            }
            Op::Pending => {
                let len = [0, 1, 4, 95, 96, 97, 200, 4096][self.pick(8) as usize];
                let mut buf = vec![0u8; len];
                self.log
                    .push(format!("{i}: get UDP_REPAIR_PENDING len {len}"));
                let (r, got) =
                    getsockopt_bytes_len(fd, libc::SOL_UDP, gs::UDP_REPAIR_PENDING, &mut buf);
                if self.result("UDP_REPAIR_PENDING", r)?.is_some() && got > len {
                    return Err(self.fail(format!("UDP_REPAIR_PENDING wrote {got} into {len}")));
                }
            }
            Op::PendingData => {
                let len = match self.pick(4) {
                    0 => self.pick(64) as usize,
                    _ => self.pick(70_000) as usize,
                };
                let mut buf = vec![0u8; len];
                self.log
                    .push(format!("{i}: get UDP_REPAIR_PENDING_DATA len {len}"));
                let (r, got) =
                    getsockopt_bytes_len(fd, libc::SOL_UDP, gs::UDP_REPAIR_PENDING_DATA, &mut buf);
                if self.result("UDP_REPAIR_PENDING_DATA", r)?.is_some() {
                    if got > len {
                        return Err(self.fail(format!("PENDING_DATA wrote {got} into {len}")));
                    }
                    // The options come first; the payload is the tail. A
                    // whole read of options + payload: check the payload.
                    self.check_pending_payload(i, fd, &buf[..got])?;
                }
            }
            Op::Recv => {
                let mut buf = vec![0u8; self.pick(2_000) as usize];
                let mut flags = rustix::net::RecvFlags::DONTWAIT;
                if self.pick(2) == 1 {
                    flags |= rustix::net::RecvFlags::PEEK;
                }
                if self.pick(4) == 0 {
                    flags |= rustix::net::RecvFlags::TRUNC;
                }
                self.log.push(format!("{i}: recv {} {flags:?}", buf.len()));
                let r = rustix::net::recv(fd, &mut buf, flags).map_err(std::io::Error::from);
                // With MSG_TRUNC in the flags UDP returns the datagram's
                // length, not what it copied (after SO_PEEK_OFF, less).
                let trunc = flags.contains(rustix::net::RecvFlags::TRUNC);
                if let Some((n, _)) = self.result("recv", r)?.filter(|_| !trunc) {
                    // In repair mode the recvmsg series' peek reads the
                    // socket's own pending datagram; otherwise a peer's
                    // (all PEER bytes, see Deliver).
                    let n = n.min(buf.len());
                    let own = all_from(i, &buf[..n]).is_ok();
                    if !own && buf[..n].iter().any(|&b| b != PEER) {
                        let at = buf[..n].iter().position(|&b| b != PEER).unwrap_or(0);
                        return Err(self.fail(format!(
                            "recv returned {n} bytes neither a peer's nor socket {i}'s: \
                             byte {at} is {:#04x}",
                            buf[at]
                        )));
                    }
                }
            }
            Op::PeekOff => {
                let v = [-1, 0, 0, 1, 7, 100, 5000][self.pick(7) as usize];
                self.log.push(format!("{i}: SO_PEEK_OFF {v}"));
                let r = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, v);
                self.result("SO_PEEK_OFF", r)?;
            }
            Op::Shutdown => {
                let how = [
                    rustix::net::Shutdown::Read,
                    rustix::net::Shutdown::Write,
                    rustix::net::Shutdown::Both,
                ][self.pick(3) as usize];
                self.log.push(format!("{i}: shutdown {how:?}"));
                let r = rustix::net::shutdown(fd, how).map_err(std::io::Error::from);
                self.result("shutdown", r)?;
            }
            Op::Ttl => {
                let v = self.pick(256) as i32;
                self.log.push(format!("{i}: TTL {v}"));
                let r = if s.v6 {
                    setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, v)
                } else {
                    setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_TTL, v)
                };
                self.result("TTL", r)?;
            }
            Op::PendingLost => {
                self.log.push(format!("{i}: UDP_REPAIR_PENDING_LOST 1"));
                let r = setsockopt_int(fd, libc::SOL_UDP, pl::UDP_REPAIR_PENDING_LOST, 1);
                self.result("UDP_REPAIR_PENDING_LOST", r)?;
            }
            Op::Deliver => {
                let to = s.sock.local_addr().ctx("getsockname")?;
                let len = self.pick(1_400) as usize;
                let p = self.pick(2) as usize;
                self.log.push(format!("{i}: peer {p} sends {len} to {to}"));
                let peer = &self.peers[usize::from(s.v6)][p];
                let r = peer.send_to(&vec![PEER; len], to);
                self.result("peer send", r)?;
            }
            Op::Open | Op::Close | Op::Drain => unreachable!("handled by step()"),
        }
        Ok(())
    }

    /// A successful `UDP_REPAIR_PENDING_DATA` read: where the header says
    /// how long the options are, the payload that follows them in `data`
    /// is socket `i`'s.
    fn check_pending_payload(
        &mut self,
        i: usize,
        fd: BorrowedFd<'_>,
        data: &[u8],
    ) -> Result<(), Failed> {
        if !self.solo {
            // Another thread may change the pending datagram between the
            // data read and a header read, so the header cannot split
            // `data`; but no call here sets IP options (IP_OPTIONS, an
            // IP_RETOPTS cmsg), so the options part is empty and `data`
            // is all payload.
            if let Err(why) = all_from(i, data) {
                return Err(self.fail(format!("UDP_REPAIR_PENDING_DATA payload: {why}")));
            }
            return Ok(());
        }
        let mut head = vec![0u8; 4096];
        let (r, got) = getsockopt_bytes_len(fd, libc::SOL_UDP, gs::UDP_REPAIR_PENDING, &mut head);
        if r.is_err() {
            return Ok(()); // flushed or left repair between the two reads: nothing to check
        }
        let Some(p) = gs::RawPending::parse(&head[..got]) else {
            return Err(self.fail(format!(
                "UDP_REPAIR_PENDING returned {got} bytes that do not parse"
            )));
        };
        let opt = p.opt_len();
        if data.len() > opt {
            let payload = &data[opt..];
            if let Err(why) = all_from(i, payload) {
                return Err(self.fail(format!("UDP_REPAIR_PENDING_DATA payload: {why}")));
            }
        }
        Ok(())
    }

    /// Every datagram the peers received came whole from one socket.
    fn drain(&mut self) -> Result<(), Failed> {
        let mut buf = vec![0u8; 65_536];
        for fam in 0..2 {
            for p in 0..self.peers[fam].len() {
                loop {
                    let r = self.peers[fam][p].recv_from(&mut buf);
                    let Ok((n, _from)) = r else { break };
                    let data = &buf[..n];
                    if let Some(&b) = data.first().filter(|&&b| b != PEER) {
                        let slot = (b >> 6) as usize;
                        if let Err(why) = all_from(slot, data) {
                            return Err(self.fail(format!("peer received a datagram: {why}")));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A non-blocking UDP socket bound to an ephemeral port of `::1` or
/// `127.0.0.1`; `what` names the bind in an error.
fn loopback(v6: bool, what: &str) -> Result<UdpSocket, Failed> {
    let at: SocketAddr = if v6 {
        (Ipv6Addr::LOCALHOST, 0).into()
    } else {
        (Ipv4Addr::LOCALHOST, 0).into()
    };
    let s = UdpSocket::bind(at).ctx(what)?;
    s.set_nonblocking(true).ctx("O_NONBLOCK")?;
    Ok(s)
}

/// A slot lock another fuzz thread poisoned by panicking.
fn poisoned<T>(_: std::sync::PoisonError<T>) -> Failed {
    Failed::from("a fuzz thread panicked holding a socket slot")
}

/// The errno's name, for the figures.
fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EAGAIN => "EAGAIN",
        libc::EINVAL => "EINVAL",
        libc::EPERM => "EPERM",
        libc::ENODATA => "ENODATA",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EPIPE => "EPIPE",
        libc::EDESTADDRREQ => "EDESTADDRREQ",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::ENOTCONN => "ENOTCONN",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECANCELED => "ECANCELED",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::ENOBUFS => "ENOBUFS",
        libc::EISCONN => "EISCONN",
        libc::EBUSY => "EBUSY",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// Environment variable `name` parsed, else `default` (unset or not a
/// number).
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn random_calls() -> Result<(), Failed> {
    run(
        "fuzz::random_calls",
        1,
        env_or("UDP_REPAIR_FUZZ_CALLS", 200_000),
        Duration::from_secs(env_or("UDP_REPAIR_FUZZ_SECS", 20)),
    )
}

/// [`random_calls`]' operations from [`RACE_THREADS`] threads at once on
/// the same sockets, for `UDP_REPAIR_FUZZ_RACE_SECS` seconds (default
/// 10): dumps (the pending reads, repair on and off, repair-mode peeks,
/// `SO_PEEK_OFF`) overlap sends with and without `MSG_MORE`, cork and
/// uncork, connect and disconnect, receives, shutdowns, options and
/// closes (a closed socket's last in-flight call ends before its release,
/// as the kernel's file reference guarantees). The checks are those of
/// the single thread that hold whatever the others do in between.
fn concurrent_calls() -> Result<(), Failed> {
    run(
        "fuzz::concurrent_calls",
        RACE_THREADS,
        env_or("UDP_REPAIR_FUZZ_CALLS", u64::MAX),
        Duration::from_secs(env_or("UDP_REPAIR_FUZZ_RACE_SECS", 10)),
    )
}

/// Threads of [`concurrent_calls`] (the guest has two CPUs; more threads
/// than CPUs also interleave calls at preemption points).
const RACE_THREADS: usize = 4;

/// `threads` fuzzers on one set of sockets, each with its own generator
/// (the seed plus its index) and peers, until `calls` calls in all or
/// `limit`; prints the figures under `name`.
fn run(name: &str, threads: usize, calls: u64, limit: Duration) -> Result<(), Failed> {
    let seed: u64 = env_or("UDP_REPAIR_FUZZ_SEED", DEFAULT_SEED);
    let kernel = Kernel::probe()?;
    let slots: Slots = Arc::new((0..SLOTS).map(|_| RwLock::new(None)).collect());
    let per_thread = calls / threads as u64;
    let start = Instant::now();
    let fuzzers: Vec<Result<Fuzz, Failed>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let slots = slots.clone();
                scope.spawn(move || -> Result<Fuzz, Failed> {
                    let mut key = [0u8; 32];
                    key[..8].copy_from_slice(&seed.wrapping_add(t as u64).to_le_bytes());
                    let peer = |v6: bool| loopback(v6, "bind a peer");
                    let mut f = Fuzz {
                        rng: TestRng::from_seed(RngAlgorithm::ChaCha, &key),
                        ops: OPS
                            .iter()
                            .map(|&(op, w)| (op, kernel.weight(op, w)))
                            .collect(),
                        own: 0,
                        kernel,
                        slots,
                        solo: threads == 1,
                        peers: [
                            vec![peer(false)?, peer(false)?],
                            vec![peer(true)?, peer(true)?],
                        ],
                        calls: BTreeMap::new(),
                        errors: BTreeMap::new(),
                        log: Vec::new(),
                    };
                    let mut made = 0u64;
                    while made < per_thread && start.elapsed() < limit {
                        f.step()?;
                        made += 1;
                    }
                    f.drain()?;
                    Ok(f)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Failed::from("a fuzz thread panicked")))
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let mut by_op: BTreeMap<Op, u64> = BTreeMap::new();
    let mut by_errno: BTreeMap<i32, u64> = BTreeMap::new();
    let mut own = 0;
    for f in fuzzers {
        let f = f?;
        own += f.own;
        for (op, n) in f.calls {
            *by_op.entry(op).or_insert(0) += n;
        }
        for (e, n) in f.errors {
            *by_errno.entry(e).or_insert(0) += n;
        }
    }
    let made: u64 = by_op.values().sum();
    let by_op: Vec<String> = by_op.iter().map(|(op, n)| format!("{op:?} {n}")).collect();
    let by_errno: Vec<String> = by_errno
        .iter()
        .map(|(e, n)| format!("{} {n}", errno_name(*e)))
        .collect();
    println!(
        "# {name}: seed {seed:#x}: {made} calls by {threads} thread(s) in {:.2} s ({:.0}/s), {own} of the new options ({}); by call: {}; errors by errno: {}",
        elapsed.as_secs_f64(),
        made as f64 / elapsed.as_secs_f64().max(1e-9),
        kernel.names(),
        by_op.join(", "),
        if by_errno.is_empty() { "none".into() } else { by_errno.join(", ") },
    );
    Ok(())
}

/// The seed when `UDP_REPAIR_FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 0x5eed_0d9c_afe0_0001;
