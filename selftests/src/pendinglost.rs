//! The `pending-lost` series from Rust: `UDP_REPAIR_PENDING_LOST`, and the
//! engine using it, so that a pending datagram a dump dropped fails
//! visibly in the restored socket instead of being sent in part. Every
//! case SKIPs on a kernel without the option.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;

use udp_repair_engine::dump::{self, DumpOptions};
use udp_repair_engine::restore;
use udp_repair_engine::sys::setsockopt_int;
use udp_repair_engine::uapi::pendinglost;

use crate::ktap::{self, Completion, Context, Failed, Outcome, Test};
use crate::util::in_netns;
use crate::{check, check_eq};

/// All tests of the suite.
pub fn tests() -> Vec<Test> {
    let mut tests = Vec::new();
    for (name, local) in [("ipv4", "127.0.0.1:0"), ("ipv6", "[::1]:0")] {
        tests.push(Test::skippable(
            format!("pendinglost::mark::next_append_fails_once::{name}"),
            move || guarded(|| next_append_fails_once(local)),
        ));
        tests.push(Test::skippable(
            format!("pendinglost::engine::dropped_datagram_fails_visibly::{name}"),
            move || guarded(|| dropped_datagram_fails_visibly(local)),
        ));
    }
    tests
}

/// Runs `body` in a network namespace of its own if the kernel has the
/// option, else SKIPs with the reason.
fn guarded(body: impl FnOnce() -> Result<(), Failed> + Send) -> Outcome {
    let s = UdpSocket::bind("127.0.0.1:0").ctx("bind a probe socket")?;
    if pendinglost::marked(s.as_fd())
        .ctx("probe UDP_REPAIR_PENDING_LOST")?
        .is_none()
    {
        return ktap::skip(
            "kernel has no UDP_REPAIR_PENDING_LOST: getsockopt(SOL_UDP, 5) fails with ENOPROTOOPT",
        );
    }
    in_netns(body).map(|()| Completion::Completed)
}

fn errno_of<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// A receiver on `local`'s loopback, and a sender bound beside it.
fn pair(local: &str) -> Result<(UdpSocket, UdpSocket, SocketAddr), Failed> {
    let rx = UdpSocket::bind(local).ctx("bind the receiver")?;
    rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ctx("SO_RCVTIMEO")?;
    let to = rx.local_addr().ctx("getsockname")?;
    let tx = UdpSocket::bind(local).ctx("bind the sender")?;
    Ok((rx, tx, to))
}

/// The raw option: marked, the next send fails with ECANCELED, the mark
/// is gone and the socket sends again.
fn next_append_fails_once(local: &str) -> Result<(), Failed> {
    let (rx, tx, to) = pair(local)?;
    check!(
        pendinglost::mark(tx.as_fd()).ctx("mark")?,
        "the kernel has the option"
    );
    check_eq!(
        pendinglost::marked(tx.as_fd()).ctx("marked")?,
        Some(true),
        "mark set"
    );
    check_eq!(
        errno_of(tx.send_to(b"tail", to)),
        Some(libc::ECANCELED),
        "the next append"
    );
    check_eq!(
        pendinglost::marked(tx.as_fd()).ctx("marked")?,
        Some(false),
        "mark cleared by the failure"
    );
    tx.send_to(b"next", to).ctx("a new datagram")?;
    let mut buf = [0u8; 16];
    let n = rx.recv(&mut buf).ctx("recv")?;
    check_eq!(&buf[..n], b"next", "received");
    Ok(())
}

/// A corked datagram the dump must drop (no reader, the drop accepted):
/// the restored socket is marked, the application's next send fails once
/// instead of sending the rest alone, and a dump of the marked socket
/// keeps the mark for the next restore.
fn dropped_datagram_fails_visibly(local: &str) -> Result<(), Failed> {
    let (rx, tx, to) = pair(local)?;
    setsockopt_int(tx.as_fd(), libc::SOL_UDP, libc::UDP_CORK, 1).ctx("UDP_CORK")?;
    tx.send_to(b"head", to).ctx("corked send")?;
    let opts = DumpOptions {
        readers: Vec::new(),
        drop_pending: true,
        ..Default::default()
    };
    let cp = dump::dump_with(tx.as_fd(), &opts).ctx("dump, dropping the pending datagram")?;
    let sq = cp.send_queue.clone().ok_or("no send queue in the image")?;
    check!(sq.dropped && sq.pending.is_none(), "dropped: {sq:?}");
    drop(tx);

    let (tx, report) = restore::restore_with(&cp, &Default::default()).ctx("restore")?;
    let tx = UdpSocket::from(tx);
    check!(report.pending_marked_lost, "restored socket marked");
    check_eq!(
        errno_of(tx.send_to(b"tail", to)),
        Some(libc::ECANCELED),
        "the application's next append"
    );
    // Still corked, as the application left it: a new datagram works.
    tx.send_to(b"new", to).ctx("new send")?;
    setsockopt_int(tx.as_fd(), libc::SOL_UDP, libc::UDP_CORK, 0).ctx("uncork")?;
    let mut buf = [0u8; 16];
    let n = rx.recv(&mut buf).ctx("recv")?;
    check_eq!(&buf[..n], b"new", "received");

    // A marked socket dumped again keeps its mark.
    check!(pendinglost::mark(tx.as_fd()).ctx("mark")?, "mark again");
    let again = dump::dump(tx.as_fd()).ctx("dump the marked socket")?;
    let sq = again.send_queue.clone().ok_or("no send queue")?;
    check!(
        sq.dropped && sq.note.contains("UDP_REPAIR_PENDING_LOST"),
        "the mark in the image: {sq:?}"
    );
    check_eq!(
        pendinglost::marked(tx.as_fd()).ctx("marked")?,
        Some(true),
        "the dump left the mark"
    );
    drop(tx);
    let (tx, report) = restore::restore_with(&again, &Default::default()).ctx("restore again")?;
    check!(report.pending_marked_lost, "marked again");
    check_eq!(
        pendinglost::marked(tx.as_fd()).ctx("marked")?,
        Some(true),
        "the new socket's mark"
    );
    Ok(())
}
