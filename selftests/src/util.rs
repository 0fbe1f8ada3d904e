//! Helpers shared by the guest suites: threads with another network
//! namespace or fewer capabilities (both are per thread on Linux, so the
//! rest of the test binary is untouched when the thread ends).

use std::net::UdpSocket;
use std::os::fd::AsFd;

use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
use udp_repair_engine::sys::{set_interface_up, setsockopt_int, unshare_netns};

use crate::ktap::{Context, Failed, Outcome};
use crate::{check, check_eq};

/// Runs `body` if this kernel has UDP-Lite, else SKIPs with the reason:
/// mainline removed it ("ipv4: Retire UDP-Lite.", "ipv6: Retire
/// UDP-Lite."), and `socket(IPPROTO_UDPLITE)` then fails with
/// `EPROTONOSUPPORT` (`inet_create()`, net/ipv4/af_inet.c).
pub fn needs_udplite(body: impl FnOnce() -> Outcome) -> Outcome {
    let probe = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        Some(rustix::net::ipproto::UDPLITE),
    );
    match probe {
        Err(rustix::io::Errno::PROTONOSUPPORT) => crate::ktap::skip(
            "kernel has no UDP-Lite: socket(IPPROTO_UDPLITE) fails with EPROTONOSUPPORT",
        ),
        _ => body(),
    }
}

/// Runs `body` on a new thread in a new network namespace with `lo` up
/// (namespaces are per thread; the thread then ends).
pub fn in_netns<T: Send>(body: impl FnOnce() -> Result<T, Failed> + Send) -> Result<T, Failed> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<T, Failed> {
                unshare_netns().ctx("unshare(CLONE_NEWNET)")?;
                let s = UdpSocket::bind("0.0.0.0:0").ctx("bind a socket in the netns")?;
                set_interface_up(s.as_fd(), "lo").ctx("lo up")?;
                body()
            })
            .join()
            .map_err(|_| Failed::from("thread in a new netns panicked"))?
    })
}

/// Runs `body` on a new thread that has dropped CAP_NET_ADMIN from all its
/// capability sets (capabilities are per thread; the thread then ends).
pub fn without_cap_net_admin<T: Send>(body: impl FnOnce() -> T + Send) -> Result<T, Failed> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<T, Failed> {
                let mut caps = capabilities(None).ctx("capget")?;
                caps.effective.remove(CapabilitySet::NET_ADMIN);
                caps.permitted.remove(CapabilitySet::NET_ADMIN);
                caps.inheritable.remove(CapabilitySet::NET_ADMIN);
                set_capabilities(None, caps).ctx("capset without CAP_NET_ADMIN")?;
                let now = capabilities(None).ctx("capget")?;
                check!(
                    !now.effective.contains(CapabilitySet::NET_ADMIN),
                    "CAP_NET_ADMIN still effective after capset: {now:?}"
                );
                // The kernel agrees: SO_RCVBUFFORCE needs CAP_NET_ADMIN.
                let probe = UdpSocket::bind("127.0.0.1:0").ctx("bind a probe socket")?;
                let e = setsockopt_int(probe.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 4096);
                check_eq!(
                    e.map_err(|e| e.raw_os_error()),
                    Err(Some(libc::EPERM)),
                    "SO_RCVBUFFORCE in the thread without CAP_NET_ADMIN"
                );
                Ok(body())
            })
            .join()
            .map_err(|_| Failed::from("thread without CAP_NET_ADMIN panicked"))?
    })
}
