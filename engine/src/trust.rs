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
//! - a queued datagram whose source is not an address of this host: only
//!   a raw socket (`CAP_NET_RAW`) or a transparent one can forge it, so an
//!   unprivileged writer could not have put it in front of the application.
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
            (SOL_SOCKET, libc::SO_RCVBUF | libc::SO_SNDBUF) => {
                let max = if o.name == libc::SO_RCVBUF {
                    sysctl("/proc/sys/net/core/rmem_max")
                } else {
                    sysctl("/proc/sys/net/core/wmem_max")
                };
                // The kernel doubles what it is given (sk_setsockopt()): an
                // unprivileged socket holds at most twice the sysctl.
                if let (Some(v), Some(max)) = (int, max) {
                    if v > 2 * max {
                        push(
                            format!("{label} = {v}, beyond twice the host's maximum {max}"),
                            "CAP_NET_ADMIN",
                        )
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(b) = &cp.bound {
        let start = sysctl("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap_or(1024);
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
    if let Some(q) = &cp.receive_queue {
        for (i, d) in q.datagrams.iter().enumerate() {
            let Some(src) = d.source.as_ref().map(wire::from_proto) else {
                continue;
            };
            if !host_address(src, &mut local) {
                forged += 1;
                first.get_or_insert((i, src));
            }
        }
    }
    if let Some((i, src)) = first {
        push(
            forged_line(forged, i, src),
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

fn forged_line(n: usize, i: usize, src: SocketAddr) -> String {
    format!(
        "{n} queued datagram(s) from addresses not of this host (the first, datagram {i}, from {src})"
    )
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
                    source: Some(sockaddr([127, 0, 0, 1], 9)),
                    ..Default::default()
                },
                v1::RecvDatagram {
                    source: Some(sockaddr([192, 0, 2, 1], 53)),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
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
            "1 queued datagram(s) from addresses not of this host (the first, datagram 1, from 192.0.2.1:53)",
        ] {
            assert!(all.contains(want), "{want} missing from:\n{all}");
        }
        assert_eq!(p.len(), 8, "{all}");
    }
}
