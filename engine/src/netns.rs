//! Running code in a private network namespace: tests, the benchmark and the
//! kernel-behaviour probe send traffic only on the loopback of a namespace
//! they created, never on the host's.

use crate::sys;
use std::io;
use std::os::fd::AsFd;

/// Runs `f` on a new thread moved into a new network namespace whose `lo`
/// is up, and returns its result. Needs CAP_SYS_ADMIN (tests run as root).
/// The namespace disappears when the thread ends and `f`'s sockets close.
pub fn in_new_netns<T: Send>(f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            sys::unshare_netns()?;
            let s = std::net::UdpSocket::bind("0.0.0.0:0")
                .or_else(|_| std::net::UdpSocket::bind("[::]:0"))?;
            sys::set_interface_up(s.as_fd(), "lo")?;
            drop(s);
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
