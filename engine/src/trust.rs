//! What an image asks of a privileged restore.
//!
//! A restore usually runs as root; the image's writer may not have. Some
//! values of a checkpoint need a capability the kernel checks when they are
//! set, and a root restore would grant them to whoever wrote the file.
//! [`privileged`] names each such value with the capability and the kernel
//! check; [`crate::restore::restore_with`] refuses an image that holds any,
//! unless [`crate::restore::RestoreOptions::trust_image`] says the caller
//! trusts its writer.
//!
//! The values (Linux 7.1.5, the same checks in 6.12):
//! - `SO_MARK` other than 0, `SO_PRIORITY` above 6, the cork's mark and a
//!   priority above 6 (`CAP_NET_RAW` or `CAP_NET_ADMIN`: net/core/sock.c
//!   `sk_setsockopt()`, `sk_set_prio_allowed()`, `__sock_cmsg_send()`);
//! - `IP_TRANSPARENT`, `IPV6_TRANSPARENT` on (the same: net/ipv4/ip_sockglue.c
//!   `do_ip_setsockopt()`, net/ipv6/ipv6_sockglue.c `do_ipv6_setsockopt()`);
//! - IPv6 hop-by-hop and destination options (`CAP_NET_RAW`:
//!   `ipv6_set_opt_hdr()`);
//! - `SO_PREFER_BUSY_POLL` on, `SO_BUSY_POLL_BUDGET` above 0, an
//!   `SO_TXTIME` clock other than `CLOCK_MONOTONIC` (`CAP_NET_ADMIN`:
//!   `sk_setsockopt()`);
//! - `SO_RCVBUF`/`SO_SNDBUF` beyond `net.core.rmem_max`/`wmem_max` of
//!   this host (`CAP_NET_ADMIN`: `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`);
//! - a bound port below `net.ipv4.ip_unprivileged_port_start`
//!   (`CAP_NET_BIND_SERVICE`: net/ipv4/af_inet.c `__inet_bind()`);
//! - IPv4 options other than record route, timestamps and router alert
//!   (`CAP_NET_RAW`: net/ipv4/ip_options.c `ip_options_compile()` for
//!   CIPSO, SEC, SID, unknown options and timestamp flags,
//!   `ip_options_get()` for source routes), on the socket or in the cork;
//! - a queued datagram whose source is not an address of this host, or a
//!   port below `ip_unprivileged_port_start`: only a raw socket
//!   (`CAP_NET_RAW`) or a transparent one can forge it, so an unprivileged
//!   writer could not have put it in front of the application (where
//!   `ip_nonlocal_bind` is set, no address can be told local, and every
//!   source counts as forged);
//! - a receive queue larger than an unprivileged socket could hold (the
//!   saved `SO_RCVBUF`, or twice `rmem_max`): the restore raises the buffer
//!   with `SO_RCVBUFFORCE` to hold what the image brings;
//! - `SO_REUSEPORT` on an address something here already holds: the socket
//!   the restore creates is root's, and would join the group of whatever
//!   holds it (net/ipv4/udp.c `udp_reuseport_add_sock()` matches by owner).
//!
//! `SO_BINDTODEVICE` is not among them: the restored socket is new, and a
//! first bind to a device needs no capability (net/core/sock.c
//! `sock_bindtoindex_locked()` asks `CAP_NET_RAW` only to change one).

use std::net::SocketAddr;

use udp_repair_proto::v1;

use crate::{inject, options, wire};

/// One value of an image that needs a capability to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privileged {
    /// The value, e.g. `SO_MARK = 7`.
    pub what: String,
    /// The capability the kernel asks for it, e.g. `CAP_NET_ADMIN`.
    pub capability: &'static str,
}

impl std::fmt::Display for Privileged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (needs {})", self.what, self.capability)
    }
}

const RAW_OR_ADMIN: &str = "CAP_NET_RAW or CAP_NET_ADMIN";
const SOL_SOCKET: i32 = libc::SOL_SOCKET;

/// A sysctl of this network namespace, as an integer (`None` when it cannot
/// be read).
fn sysctl(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// What of IPv4 options `b` needs `CAP_NET_RAW` (the module
/// documentation), named; `None` when nothing does.
fn privileged_ip_options(b: &[u8]) -> Option<String> {
    let mut i = 0;
    while i < b.len() {
        let t = b[i];
        match t {
            0 => return None,
            1 => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let len = usize::from(*b.get(i + 1)?).max(2);
        match t {
            // Record route, router alert.
            7 | 0x94 => {}
            // Timestamp: only with the flags ip_options_compile() knows.
            0x44 => {
                let flags = b.get(i + 3).map_or(0, |f| f & 0x0f);
                if !matches!(flags, 0 | 1 | 3) {
                    return Some(format!("an IP timestamp option with flags {flags}"));
                }
            }
            0x83 | 0x89 => return Some("an IP source route option".into()),
            0x86 => return Some("an IP CIPSO option".into()),
            0x82 => return Some("an IP security option".into()),
            0x88 => return Some("an IP stream identifier option".into()),
            t => return Some(format!("IP option type {t}")),
        }
        i += len;
    }
    None
}

fn raw_of(o: &v1::SockOpt) -> Option<&[u8]> {
    match &o.value {
        Some(v1::sock_opt::Value::Raw(b)) => Some(b),
        _ => None,
    }
}

fn int_of(o: &v1::SockOpt) -> Option<i64> {
    match o.value {
        Some(v1::sock_opt::Value::Int(v)) => Some(v),
        _ => None,
    }
}

/// Every value of `cp` that needs a capability to set (see the module
/// documentation), in image order; empty when an unprivileged process could
/// have built the whole socket. Reads this host's sysctls and probes
/// whether each queued datagram's source is local (one socket per
/// address).
pub fn privileged(cp: &v1::Checkpoint) -> Vec<Privileged> {
    let mut out = Vec::new();
    let mut push =
        |what: String, capability: &'static str| out.push(Privileged { what, capability });
    for o in &cp.options {
        let label = options::lookup(o.level, o.name).map_or("option", |r| r.label);
        let int = int_of(o);
        match (o.level, o.name) {
            (SOL_SOCKET, libc::SO_MARK) if int.is_some_and(|v| v != 0) => {
                push(format!("{label} = {}", int.unwrap_or(0)), RAW_OR_ADMIN)
            }
            (SOL_SOCKET, libc::SO_PRIORITY) if int.is_some_and(|v| !(0..=6).contains(&v)) => {
                push(format!("{label} = {}", int.unwrap_or(0)), RAW_OR_ADMIN)
            }
            (libc::SOL_IP, libc::IP_TRANSPARENT) | (libc::SOL_IPV6, libc::IPV6_TRANSPARENT)
                if int.is_some_and(|v| v != 0) =>
            {
                push(format!("{label} on"), RAW_OR_ADMIN)
            }
            (libc::SOL_IPV6, libc::IPV6_HOPOPTS | libc::IPV6_DSTOPTS | libc::IPV6_RTHDRDSTOPTS)
                if raw_of(o).is_some_and(|b| !b.is_empty()) =>
            {
                push(format!("{label} set"), "CAP_NET_RAW")
            }
            (SOL_SOCKET, libc::SO_PREFER_BUSY_POLL) if int.is_some_and(|v| v != 0) => {
                push(format!("{label} on"), "CAP_NET_ADMIN")
            }
            (SOL_SOCKET, options::SO_BUSY_POLL_BUDGET) if int.is_some_and(|v| v > 0) => {
                push(format!("{label} = {}", int.unwrap_or(0)), "CAP_NET_ADMIN")
            }
            // All zero is a socket that never set it (sk_getsockopt()
            // reports sk_clockid 0 and no flags), which the restore leaves.
            (SOL_SOCKET, libc::SO_TXTIME)
                if raw_of(o).is_some_and(|b| b.iter().any(|&x| x != 0)) =>
            {
                let clock = raw_of(o)
                    .and_then(|b| b.get(..4))
                    .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")));
                if clock.is_some_and(|c| c != libc::CLOCK_MONOTONIC) {
                    push(
                        format!("{label} with clock {}", clock.unwrap_or(0)),
                        "CAP_NET_ADMIN",
                    )
                }
            }
            (libc::SOL_IP, libc::IP_OPTIONS) => {
                if let Some(what) = raw_of(o).and_then(privileged_ip_options) {
                    push(format!("{what} in {label}"), "CAP_NET_RAW")
                }
            }
            (SOL_SOCKET, libc::SO_REUSEPORT) if int.is_some_and(|v| v != 0) => {
                if let Some(b) = cp.bound.as_ref().map(wire::from_proto) {
                    if b.port() != 0 && port_held(b) {
                        push(
                            format!("{label} on {b}, which a socket here already holds"),
                            "the owner of that socket (the restored one is root's and would join its group)",
                        )
                    }
                }
            }
            (SOL_SOCKET, libc::SO_RCVBUF | libc::SO_SNDBUF) => {
                let max = if o.name == libc::SO_RCVBUF {
                    sysctl("/proc/sys/net/core/rmem_max")
                } else {
                    sysctl("/proc/sys/net/core/wmem_max")
                };
                // The kernel doubles what it is given (sk_setsockopt()): an
                // unprivileged socket holds at most twice the sysctl.
                match (int, max) {
                    (Some(v), Some(max)) if v > 2 * max => push(
                        format!("{label} = {v}, beyond twice the host's maximum {max}"),
                        "CAP_NET_ADMIN",
                    ),
                    (Some(v), None) => push(
                        format!("{label} = {v}, and the host's maximum cannot be read"),
                        "CAP_NET_ADMIN (when beyond it)",
                    ),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    // The first port a process may bind without CAP_NET_BIND_SERVICE: for
    // the bound address and for the queued datagrams' sources.
    let start = sysctl("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap_or(1024);
    if let Some(b) = &cp.bound {
        if b.port != 0 && i64::from(b.port) < start {
            push(
                format!(
                    "bound to port {} (below ip_unprivileged_port_start {start})",
                    b.port
                ),
                "CAP_NET_BIND_SERVICE",
            )
        }
    }
    if let Some(c) = cp
        .send_queue
        .as_ref()
        .and_then(|s| s.pending.as_ref())
        .and_then(|p| p.cork.as_ref())
    {
        if c.mark.is_some_and(|m| m != 0) {
            push(
                format!("the pending datagram's mark {}", c.mark.unwrap_or(0)),
                RAW_OR_ADMIN,
            )
        }
        if let Some(what) = c.ip_options.as_deref().and_then(privileged_ip_options) {
            push(
                format!("{what} in the pending datagram's cork"),
                "CAP_NET_RAW",
            )
        }
        if c.priority.is_some_and(|p| p > 6) {
            push(
                format!(
                    "the pending datagram's priority {}",
                    c.priority.unwrap_or(0)
                ),
                RAW_OR_ADMIN,
            )
        }
    }
    let mut local = inject::Locality::default();
    let mut forged = 0usize;
    let mut first = None;
    let mut held = 0u64;
    if let Some(q) = &cp.receive_queue {
        for (i, d) in q.datagrams.iter().enumerate() {
            // At least what the kernel charges an skb beyond its payload.
            held += d.payload.len() as u64 + 256;
            let Some(src) = d.source.as_ref().map(wire::from_proto).map(wire::canonical) else {
                continue;
            };
            if i64::from(src.port()) < start || !host_address(src, &mut local) {
                forged += 1;
                first.get_or_insert((i, src));
            }
        }
        let saved = options::saved_int(&cp.options, SOL_SOCKET, libc::SO_RCVBUF).unwrap_or(0);
        let max = sysctl("/proc/sys/net/core/rmem_max").unwrap_or(0);
        let cap = i64::from(saved).max(2 * max);
        if held as i64 > cap {
            push(
                format!(
                    "a receive queue of {} datagram(s) holding at least {held} bytes, beyond what an \
                     unprivileged socket holds here ({cap})",
                    q.datagrams.len()
                ),
                "CAP_NET_ADMIN (SO_RCVBUFFORCE)",
            )
        }
    }
    if let Some((i, src)) = first {
        push(
            forged_line(forged, i, src, start),
            "CAP_NET_RAW (a raw or transparent socket forges the source)",
        )
    }
    out
}

/// Whether `a` is an address of this host: [`inject::Locality`], and for
/// a link-local IPv6 source an address of any interface here (a datagram
/// sent from `fe80::2%veth1` to `fe80::1%veth0` arrives scoped to veth0),
/// from /proc/thread-self/net/if_inet6 (this thread's namespace).
fn host_address(a: SocketAddr, local: &mut inject::Locality) -> bool {
    let a = wire::canonical(a);
    if a.ip().is_unspecified() {
        return false;
    }
    // With ip_nonlocal_bind a bind succeeds for any address: the probe
    // cannot tell.
    let nonlocal = if a.is_ipv4() {
        "/proc/sys/net/ipv4/ip_nonlocal_bind"
    } else {
        "/proc/sys/net/ipv6/ip_nonlocal_bind"
    };
    if sysctl(nonlocal) != Some(0) {
        return false;
    }
    if local.is_local(a) {
        return true;
    }
    let SocketAddr::V6(v) = a else {
        return false;
    };
    if !wire::is_link_local(a.ip()) {
        return false;
    }
    let want: String = v.ip().octets().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::read_to_string("/proc/thread-self/net/if_inet6")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().next() == Some(want.as_str()))
        })
        .unwrap_or(false)
}

fn forged_line(n: usize, i: usize, src: SocketAddr, start: i64) -> String {
    format!(
        "{n} queued datagram(s) from addresses not of this host or from ports below {start} (the \
         first, datagram {i}, from {src})"
    )
}

/// Whether a socket here holds `a` (a bind without SO_REUSEPORT fails).
pub(crate) fn port_held(a: SocketAddr) -> bool {
    std::net::UdpSocket::bind(a).is_err_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(level: i32, name: i32, v: i64) -> v1::SockOpt {
        v1::SockOpt {
            level,
            name,
            value: Some(v1::sock_opt::Value::Int(v)),
        }
    }

    fn sockaddr(ip: [u8; 4], port: u32) -> v1::SockAddr {
        v1::SockAddr {
            ip: ip.to_vec(),
            port,
            flowinfo: 0,
            scope_id: 0,
        }
    }

    fn plain() -> v1::Checkpoint {
        v1::Checkpoint {
            schema_version: 2,
            family: v1::Family::Inet as i32,
            protocol: v1::Protocol::Udp as i32,
            bound: Some(sockaddr([127, 0, 0, 1], 40000)),
            peek_offset: -1,
            options: vec![
                opt(SOL_SOCKET, libc::SO_MARK, 0),
                opt(SOL_SOCKET, libc::SO_PRIORITY, 6),
                // Never set: clock 0, no flags.
                v1::SockOpt {
                    level: SOL_SOCKET,
                    name: libc::SO_TXTIME,
                    value: Some(v1::sock_opt::Value::Raw(vec![0; 8])),
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn an_unprivileged_socket_asks_for_nothing() {
        assert_eq!(privileged(&plain()), vec![]);
    }

    #[test]
    fn ip_options_anyone_may_set_pass() {
        // NOP, record route, timestamp (flags 0), router alert, end.
        let ok = [
            1, 7, 7, 4, 0, 0, 0, 0, 0x44, 8, 5, 0, 0, 0, 0, 0, 0x94, 4, 0, 0, 0,
        ];
        assert_eq!(privileged_ip_options(&ok), None);
        assert!(privileged_ip_options(&[0x86, 6, 0, 0, 0, 1]).is_some());
        assert!(privileged_ip_options(&[0x44, 8, 5, 0x0f, 0, 0, 0, 0]).is_some());
        assert!(privileged_ip_options(&[0x99, 2]).is_some());
    }

    #[test]
    fn each_privileged_value_is_named() {
        let mut cp = plain();
        cp.options = vec![
            opt(SOL_SOCKET, libc::SO_MARK, 7),
            opt(SOL_SOCKET, libc::SO_PRIORITY, 7),
            opt(libc::SOL_IP, libc::IP_TRANSPARENT, 1),
            opt(SOL_SOCKET, libc::SO_RCVBUF, i64::from(i32::MAX)),
        ];
        cp.bound = Some(sockaddr([127, 0, 0, 1], 53));
        cp.send_queue = Some(v1::SendQueue {
            pending: Some(v1::PendingDatagram {
                cork: Some(v1::CorkState {
                    mark: Some(9),
                    priority: Some(7),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        cp.receive_queue = Some(v1::ReceiveQueue {
            datagrams: vec![
                v1::RecvDatagram {
                    source: Some(sockaddr([127, 0, 0, 1], 40001)),
                    ..Default::default()
                },
                v1::RecvDatagram {
                    source: Some(sockaddr([192, 0, 2, 1], 53)),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        // A loose source route in the cork.
        if let Some(c) = cp
            .send_queue
            .as_mut()
            .and_then(|q| q.pending.as_mut())
            .and_then(|p| p.cork.as_mut())
        {
            c.ip_options = Some(vec![1, 0x83, 7, 4, 192, 0, 2, 1, 0]);
        }
        let p: Vec<String> = privileged(&cp).iter().map(|p| p.to_string()).collect();
        let all = p.join("\n");
        for want in [
            "SO_MARK = 7",
            "SO_PRIORITY = 7",
            "IP_TRANSPARENT on",
            "SO_RCVBUF = 2147483647",
            "bound to port 53",
            "pending datagram's mark 9",
            "pending datagram's priority 7",
            "an IP source route option in the pending datagram's cork",
            "1 queued datagram(s) from addresses not of this host or from ports below 1024 (the \
             first, datagram 1, from 192.0.2.1:53)",
        ] {
            assert!(all.contains(want), "{want} missing from:\n{all}");
        }
        assert_eq!(p.len(), 9, "{all}");
    }
}
