//! Control messages the running kernel accepts on a UDP send, probed once
//! per process: what a pending datagram's cork state can be re-created
//! with depends on the kernel, not on the image (both cmsgs below came to
//! mainline in 2024: Linux 6.12 has neither, 7.1 has both).
//!
//! A probe sends one byte with `MSG_MORE` and the cmsg to 127.0.0.1:9 (or
//! `[::1]:9`) from a scratch socket. `udp_sendmsg()` (net/ipv4/udp.c) parses
//! the cmsgs before anything else: `__sock_cmsg_send()` (net/core/sock.c)
//! answers `EINVAL` for a `SOL_SOCKET` type it does not know. An accepted
//! cmsg leaves the byte corked, and closing the socket discards it
//! (`udp_flush_pending_frames()`): nothing is ever transmitted.

use crate::{sys, wire};
use std::os::fd::AsFd;
use std::sync::OnceLock;

/// `SCM_TS_OPT_ID` (include/uapi/asm-generic/socket.h, and alpha's and
/// mips' own headers; not in 6.12): a cmsg that sets the
/// `SOF_TIMESTAMPING_OPT_ID` key of one send.
#[cfg(not(any(target_arch = "sparc", target_arch = "sparc64")))]
pub const SCM_TS_OPT_ID: i32 = 81;
/// `SCM_TS_OPT_ID` (arch/sparc/include/uapi/asm/socket.h).
#[cfg(any(target_arch = "sparc", target_arch = "sparc64"))]
pub const SCM_TS_OPT_ID: i32 = 0x5a;

/// `SOF_TIMESTAMPING_OPT_ID` (include/uapi/linux/net_tstamp.h): a key per
/// timestamped send, from a counter of the socket or `SCM_TS_OPT_ID`.
pub const SOF_TIMESTAMPING_OPT_ID: i32 = 1 << 7;

/// `SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE |
/// SOF_TIMESTAMPING_OPT_ID`: what `SCM_TS_OPT_ID` needs set on the socket
/// before it is accepted.
const TS_OPT_ID_FLAGS: i32 = (1 << 1) | (1 << 4) | SOF_TIMESTAMPING_OPT_ID;

/// Whether this kernel takes an `SO_PRIORITY` cmsg on a UDP send
/// (`__sock_cmsg_send()`; not in 6.12), so that a pending datagram's
/// priority, fixed at cork time by `ip_setup_cork()` where the cmsg
/// exists, can be set again. Value 0 needs no privilege.
pub fn so_priority_cmsg() -> bool {
    static P: OnceLock<bool> = OnceLock::new();
    *P.get_or_init(|| in_scratch_netns(|| accepts(None, libc::SO_PRIORITY, &0u32.to_ne_bytes())))
}

/// Whether this kernel takes an `SCM_TS_OPT_ID` cmsg on a UDP send, so
/// that a pending datagram's timestamp key can be set again.
pub fn scm_ts_opt_id() -> bool {
    static P: OnceLock<bool> = OnceLock::new();
    *P.get_or_init(|| {
        in_scratch_netns(|| {
            accepts(
                Some((libc::SO_TIMESTAMPING, TS_OPT_ID_FLAGS)),
                SCM_TS_OPT_ID,
                &7u32.to_ne_bytes(),
            )
        })
    })
}

/// `probe` in a private network namespace whose `lo` is up (the current
/// one may have it down); without the privilege for one, in the current
/// namespace.
fn in_scratch_netns(probe: impl Fn() -> bool + Send + Sync) -> bool {
    crate::netns::in_new_netns(&probe).unwrap_or_else(|_| probe())
}

/// Whether a corked send with the `SOL_SOCKET` cmsg `(kind, data)` is
/// accepted, after the `SOL_SOCKET` option `setup` (name, value) is set.
/// The same send without the cmsg comes first, as a control: only when
/// it succeeds does the answer with the cmsg say something about the cmsg
/// (`EINVAL` is the refusal; `EINVAL` can also come from elsewhere in
/// `udp_sendmsg()`). A control that fails (no route to 127.0.0.1 or ::1,
/// a BPF or LSM hook refusing sends) answers "no": the caller then
/// refuses state it cannot recreate, by name, rather than guess.
fn accepts(setup: Option<(i32, i32)>, kind: i32, data: &[u8]) -> bool {
    for to in ["127.0.0.1:9", "[::1]:9"] {
        let to: std::net::SocketAddr = to.parse().expect("a literal address");
        let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let corked_send = |control: &[u8]| -> Option<std::io::Result<usize>> {
            let s = std::net::UdpSocket::bind(bind).ok()?;
            if let Some((name, value)) = setup {
                sys::setsockopt_int(s.as_fd(), libc::SOL_SOCKET, name, value).ok()?;
            }
            Some(sys::sendmsg_bytes(
                s.as_fd(),
                b"p",
                &wire::sockaddr_bytes(&to),
                control,
                libc::MSG_MORE | libc::MSG_DONTWAIT,
            ))
        };
        if !matches!(corked_send(&[]), Some(Ok(_))) {
            continue;
        }
        let mut c = wire::CmsgBuilder::default();
        c.push(libc::SOL_SOCKET, kind, data);
        return matches!(corked_send(c.bytes()), Some(Ok(_)));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probes agree with the kernels this project knows: neither cmsg
    /// in 6.12 and before, both in 6.18 (the development host) and 7.x.
    #[test]
    fn the_probes_follow_the_kernel_version() {
        let release = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let v = (major, minor);
        if v <= (6, 12) || v >= (6, 18) {
            let want = v >= (6, 18);
            assert_eq!(scm_ts_opt_id(), want, "{release}");
            assert_eq!(so_priority_cmsg(), want, "{release}");
        }
    }
}
