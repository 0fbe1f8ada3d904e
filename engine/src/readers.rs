//! The dump's send-queue readers: the [`SendQueueReader`] trait, and its
//! implementations over each kernel series' uapi:
//! [`Getsockopt`] (`UDP_REPAIR_PENDING`: payload and the whole cork state)
//! first, then [`Recvmsg`] (`recvmsg(MSG_PEEK)` in repair mode: payload and
//! destination only). Each finds out at run time whether the kernel has its
//! interface and answers [`SendQueueRead::Unsupported`] otherwise, so the
//! dump tries the next one.
//!
//! The two series share the `UDP_REPAIR` option number with different
//! meanings: in the getsockopt series' repair mode `recvmsg(MSG_PEEK)`
//! still reads the receive queue. [`Recvmsg`] therefore reads only after
//! [`recvmsg::probe`] has seen the recvmsg series' own behaviour.
//!
//! All or nothing: [`Getsockopt`] refuses (an `Unsupported` error, which
//! fails the dump) a datagram carrying state that the restore cannot
//! reproduce, rather than restoring a datagram that differs.

use crate::guard::Guard;
use crate::uapi::getsockopt::{self, CorkedBy, Family, Pending};
use crate::uapi::recvmsg::{self, Support};
use crate::{probe, sys, wire};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::sync::OnceLock;
use udp_repair_proto::v1;

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
    all()
}

/// The first of `readers` that the running kernel supports, asked of a
/// scratch UDP socket with nothing pending: the reader
/// [`crate::dump::dump_with`] uses.
/// `None`: a socket with pending data cannot be dumped here.
pub fn probe_reader(readers: &[Box<dyn SendQueueReader>]) -> Option<&'static str> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    let fd = s.as_fd();
    for r in readers {
        let mut guard = Guard::new(fd);
        if r.needs_repair_mode()
            && !matches!(guard.set(libc::SOL_UDP, crate::UDP_REPAIR, 1), Ok(true))
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

fn refuse(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, msg)
}

/// `getsockopt(SOL_UDP, UDP_REPAIR_PENDING)` (the getsockopt series).
#[derive(Debug, Default, Clone, Copy)]
pub struct Getsockopt;

impl SendQueueReader for Getsockopt {
    fn name(&self) -> &'static str {
        "getsockopt"
    }

    fn read(&self, fd: BorrowedFd<'_>) -> io::Result<SendQueueRead> {
        if !getsockopt::detect(fd)? {
            return Ok(SendQueueRead::Unsupported);
        }
        match getsockopt::read_pending(fd) {
            Ok(None) => Ok(SendQueueRead::Empty),
            Ok(Some(p)) => Ok(SendQueueRead::Pending(Box::new(from_getsockopt(fd, &p)?))),
            // The option does not apply (6.12: a UDP-Lite socket); detect()
            // above already answers so for the socket it probes.
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(SendQueueRead::Unsupported),
            Err(e) => Err(e),
        }
    }
}

/// The image's form of what `UDP_REPAIR_PENDING` returned, or why it cannot
/// be restored as it is.
///
/// What the restore (restore.rs, `restore_send_queue`) does with each field
/// decides what goes where: a value fixed in the datagram when it was corked
/// is recorded so that the restore passes it as a cmsg; a value the
/// datagram takes from the socket when it leaves (IPv4 TTL/TOS without a
/// cmsg, priority) is left unset, so that it keeps following the socket.
pub fn from_getsockopt(fd: BorrowedFd<'_>, p: &Pending) -> io::Result<v1::PendingDatagram> {
    let c = &p.cork;
    let mut why = p.losses();
    if c.unknown_flags != 0 {
        why.push(format!(
            "flags this tool does not know ({:#x})",
            c.unknown_flags
        ));
    }
    if c.confirm {
        why.push("MSG_CONFIRM on the first send (the image cannot record it)".into());
    }
    if c.priority.fixed && !probe::so_priority_cmsg() {
        // Without an SO_PRIORITY cmsg only an IP_TOS cmsg fixes it again,
        // to rt_tos2priority(tos): enough for 6.12's rule, where that is
        // how it was fixed; anything else would change silently.
        let by_tos = c.family == Family::V4
            && c.tos.fixed
            && c.priority.value == u32::from(rt_tos2priority(c.tos.value));
        if !by_tos {
            why.push(format!(
                "its priority {} was fixed when it was corked, and this kernel has no \
                 SO_PRIORITY cmsg to fix it again",
                c.priority.value
            ));
        }
    }
    if c.tskey.is_some() && !probe::scm_ts_opt_id() {
        why.push(
            "its SOF_TIMESTAMPING_OPT_ID key (this kernel has no SCM_TS_OPT_ID cmsg to set it)"
                .into(),
        );
    }
    if c.wifi_status
        && sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_WIFI_STATUS).unwrap_or(0) == 0
    {
        why.push("SO_WIFI_STATUS was on when corked and is off now".into());
    }
    if c.flowlabel != 0 {
        why.push(format!(
            "IPv6 flow label {:#x} (the restore cannot lease it)",
            c.flowlabel
        ));
    }
    let o = &c.options;
    if !(o.hopopts.is_empty()
        && o.rthdrdstopts.is_empty()
        && o.rthdr.is_empty()
        && o.dstopts.is_empty())
    {
        why.push("IPv6 extension headers (the restore does not re-create them)".into());
    }
    let cork_now = sys::getsockopt_int(fd, libc::SOL_UDP, libc::UDP_CORK)? != 0;
    if cork_now != (c.corked_by == CorkedBy::UdpCork) {
        why.push(format!(
            "the kernel says {:?} but UDP_CORK is {}",
            c.corked_by,
            i32::from(cork_now)
        ));
    }
    if !why.is_empty() {
        return Err(refuse(format!(
            "the pending datagram cannot be restored faithfully: {}",
            why.join("; ")
        )));
    }
    let v4 = c.family == Family::V4;
    let cork = v1::CorkState {
        ttl: (v4 && c.ttl.fixed).then_some(u32::from(c.ttl.value)),
        tos: (v4 && c.tos.fixed).then_some(u32::from(c.tos.value)),
        // Where the kernel has an SO_PRIORITY cmsg, ip_setup_cork() fixes
        // the priority of every corked datagram, and the cmsg sets it
        // again. Without one (6.12), IPv4's is fixed only by an IP_TOS
        // cmsg, which sets it from the TOS again, and IPv6's follows the
        // socket.
        priority: (c.priority.fixed && probe::so_priority_cmsg()).then_some(c.priority.value),
        mark: Some(c.mark),
        gso_size: Some(u32::from(c.gso_size)),
        transmit_time: Some(c.transmit_time),
        tx_flags: Some(c.tsflags),
        ip_options: (!o.ipv4.is_empty()).then(|| o.ipv4.clone()),
        hop_limit: (!v4).then_some(u32::from(c.ttl.value)),
        tclass: (!v4).then_some(u32::from(c.tos.value)),
        dontfrag: (!v4).then_some(i32::from(c.dontfrag)),
        flowlabel: None,
        oif: (c.oif != 0).then_some(c.oif),
        source: Some(wire::to_proto(&c.source)),
        fragsize: None,
        tskey: c.tskey,
    };
    Ok(v1::PendingDatagram {
        family: if v4 { libc::AF_INET } else { libc::AF_INET6 } as u32,
        payload: p.payload.clone(),
        destination: Some(wire::to_proto(&c.destination)),
        cork: Some(cork),
        complete: true,
    })
}

/// `rt_tos2priority()` (include/net/route.h): the priority an `IP_TOS` of
/// `tos` gives, from `ip_tos2prio` (net/ipv4/route.c; `TC_PRIO_*` of
/// include/uapi/linux/pkt_sched.h: BESTEFFORT 0, BULK 2,
/// INTERACTIVE_BULK 4, INTERACTIVE 6).
pub fn rt_tos2priority(tos: u8) -> u8 {
    const IP_TOS2PRIO: [u8; 16] = [0, 0, 0, 0, 2, 2, 2, 2, 6, 6, 6, 6, 4, 4, 4, 4];
    IP_TOS2PRIO[usize::from((tos & 0x1e) >> 1)]
}

/// `IPV6_FLOWLABEL_MASK`: the flow label bits of `sin6_flowinfo` (host
/// order).
const FLOWLABEL_MASK: u32 = 0x000f_ffff;

/// `recvmsg(MSG_PEEK)` in repair mode (the recvmsg series).
#[derive(Debug, Default, Clone, Copy)]
pub struct Recvmsg;

/// What [`recvmsg::probe`] found, once per process: in a private network
/// namespace (its scratch socket binds to 127.0.0.1, which needs `lo` up),
/// or, without the privilege for one, in the current namespace.
fn recvmsg_support() -> Option<Support> {
    static SUPPORT: OnceLock<Option<Support>> = OnceLock::new();
    *SUPPORT.get_or_init(|| {
        crate::netns::in_new_netns(|| recvmsg::probe().ok())
            .ok()
            .flatten()
            .or_else(|| recvmsg::probe().ok())
    })
}

impl SendQueueReader for Recvmsg {
    fn name(&self) -> &'static str {
        "recvmsg"
    }

    fn read(&self, fd: BorrowedFd<'_>) -> io::Result<SendQueueRead> {
        if recvmsg_support() != Some(Support::Recvmsg) {
            return Ok(SendQueueRead::Unsupported);
        }
        let Some(p) = recvmsg::read_pending(fd)? else {
            return Ok(SendQueueRead::Empty);
        };
        let mut dest = p.dest;
        if let SocketAddr::V6(d) = &mut dest {
            // The series reports the flow's flowinfo, in which udpv6_sendmsg
            // has put the traffic class (cork state, which this reader does
            // not save) beside the flow label.
            let label = d.flowinfo() & FLOWLABEL_MASK;
            if label != 0 {
                return Err(refuse(format!(
                    "IPv6 flow label {label:#x} (the restore cannot lease it)"
                )));
            }
            d.set_flowinfo(0);
        }
        Ok(SendQueueRead::Pending(Box::new(v1::PendingDatagram {
            family: match dest {
                SocketAddr::V4(_) => libc::AF_INET,
                SocketAddr::V6(_) => libc::AF_INET6,
            } as u32,
            payload: p.data,
            destination: Some(wire::to_proto(&dest)),
            cork: None,
            complete: false,
        })))
    }
}

/// The readers, best first: [`default_readers`].
pub fn all() -> Vec<Box<dyn SendQueueReader>> {
    vec![Box::new(Getsockopt), Box::new(Recvmsg)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uapi::getsockopt::{Cork, IpOptions, Value};
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    fn pending(family: Family, dest: &str, src: &str) -> Pending {
        Pending {
            cork: Cork {
                family,
                destination: dest.parse().unwrap(),
                source: src.parse().unwrap(),
                flowlabel: 0,
                oif: 0,
                ttl: Value {
                    value: 7,
                    fixed: true,
                },
                tos: Value {
                    value: 0x10,
                    fixed: false,
                },
                priority: Value {
                    value: 0,
                    fixed: false,
                },
                mark: 3,
                gso_size: 0,
                transmit_time: 0,
                tsflags: 0,
                tskey: None,
                dontfrag: false,
                wifi_status: false,
                confirm: false,
                options: IpOptions::default(),
                corked_by: CorkedBy::MsgMore,
                unsupported: 0,
                unknown_flags: 0,
            },
            payload: b"hello".to_vec(),
        }
    }

    #[test]
    fn ipv4_records_only_fixed_ttl_and_tos() {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        let p = pending(Family::V4, "10.0.0.2:53", "10.0.0.1:4000");
        let d = from_getsockopt(s.as_fd(), &p).unwrap();
        let c = d.cork.unwrap();
        assert!(d.complete);
        assert_eq!(d.family, libc::AF_INET as u32);
        assert_eq!(d.payload, b"hello");
        assert_eq!((c.ttl, c.tos), (Some(7), None), "TOS follows the socket");
        assert_eq!((c.hop_limit, c.tclass, c.dontfrag), (None, None, None));
        assert_eq!((c.mark, c.priority), (Some(3), None));
        assert_eq!(
            wire::from_proto(&d.destination.unwrap()),
            "10.0.0.2:53".parse().unwrap()
        );
    }

    #[test]
    fn ipv6_hop_limit_and_traffic_class_are_always_fixed() {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        let mut p = pending(Family::V6, "[2001:db8::2]:53", "[2001:db8::1]:4000");
        p.cork.dontfrag = true;
        let c = from_getsockopt(s.as_fd(), &p).unwrap().cork.unwrap();
        assert_eq!((c.ttl, c.tos), (None, None));
        assert_eq!(
            (c.hop_limit, c.tclass, c.dontfrag),
            (Some(7), Some(0x10), Some(1))
        );
    }

    type Change = fn(&mut Pending);

    #[test]
    fn state_the_restore_cannot_reproduce_is_refused() {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        let base = pending(Family::V6, "[2001:db8::2]:53", "[2001:db8::1]:4000");
        let cases: [(&str, Change); 7] = [
            ("flow label", |p| p.cork.flowlabel = 0x12345),
            ("extension headers", |p| p.cork.options.hopopts = vec![0; 8]),
            ("MSG_CONFIRM", |p| p.cork.confirm = true),
            ("SO_WIFI_STATUS", |p| p.cork.wifi_status = true),
            ("flags", |p| p.cork.unknown_flags = 1 << 20),
            ("ZEROCOPY", |p| p.cork.unsupported = 1),
            ("UDP_CORK", |p| p.cork.corked_by = CorkedBy::UdpCork),
        ];
        for (what, change) in cases {
            let mut p = base.clone();
            change(&mut p);
            let e = from_getsockopt(s.as_fd(), &p).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{what}: {e}");
            assert!(e.to_string().contains(what), "{what}: {e}");
        }
    }

    /// The timestamp key and a fixed priority are kept where this kernel
    /// has the cmsg that sets them again; without it the key is refused by
    /// name, and the priority too unless an IP_TOS cmsg gives it again
    /// (6.12's rule).
    #[test]
    fn kernel_dependent_cork_state_follows_the_probes() {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        let mut p = pending(Family::V4, "192.0.2.1:53", "192.0.2.2:4000");
        // TOS 0x10 fixed: rt_tos2priority gives 6.
        p.cork.tos = Value {
            value: 0x10,
            fixed: true,
        };
        p.cork.priority = Value {
            value: 6,
            fixed: true,
        };
        let c = from_getsockopt(s.as_fd(), &p).unwrap().cork.unwrap();
        assert_eq!(c.priority, probe::so_priority_cmsg().then_some(6));
        p.cork.priority.value = 4;
        match from_getsockopt(s.as_fd(), &p) {
            Ok(d) => assert_eq!(d.cork.unwrap().priority, Some(4)),
            Err(e) => {
                assert!(!probe::so_priority_cmsg());
                assert!(e.to_string().contains("priority 4"), "{e}");
            }
        }
        p.cork.priority.value = 6;
        p.cork.tskey = Some(9);
        match from_getsockopt(s.as_fd(), &p) {
            Ok(d) => {
                assert!(probe::scm_ts_opt_id());
                assert_eq!(d.cork.unwrap().tskey, Some(9));
            }
            Err(e) => {
                assert!(!probe::scm_ts_opt_id());
                assert!(e.to_string().contains("SCM_TS_OPT_ID"), "{e}");
            }
        }
    }

    #[test]
    fn tos_to_priority_follows_ip_tos2prio() {
        assert_eq!(rt_tos2priority(0), 0);
        assert_eq!(rt_tos2priority(0x10), 6); // IPTOS_LOWDELAY
        assert_eq!(rt_tos2priority(0x08), 2); // IPTOS_THROUGHPUT
        assert_eq!(rt_tos2priority(0x18), 4);
        assert_eq!(rt_tos2priority(0xb8), 4); // EF: 0xb8 & 0x1e = 0x18
    }

    #[test]
    fn no_reader_without_udp_repair() {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        if sys::getsockopt_int(s.as_fd(), libc::SOL_UDP, crate::UDP_REPAIR).is_ok() {
            eprintln!("this kernel has UDP_REPAIR: test not applicable");
            return;
        }
        assert_eq!(probe_reader(&all()), None);
        for r in all() {
            assert_eq!(r.read(s.as_fd()).unwrap(), SendQueueRead::Unsupported);
        }
    }
}
