//! Sockets as applications hand them to a checkpoint/restore tool: opened
//! by an unprivileged user, or inside a user namespace, and repaired by a
//! privileged caller. The repair mode of both series follows
//! `TCP_REPAIR`'s rule (`tcp_can_repair_sock()` in net/ipv4/tcp.c):
//! `CAP_NET_ADMIN` in the user namespace that owns the socket's network
//! namespace, judged on the caller alone, never on who opened the socket.
//!
//! The series suites (`getsockopt::privilege::`, `recvmsg::privilege::`)
//! run [`cases`] with their own reader of the pending datagram; the
//! `dumprestore::` suite runs [`dump_pid_of_unprivileged_app`] through the
//! engine, as `udp-repair dump --pid` does.
//!
//! User namespaces can only be entered by a single-threaded process, so
//! those cases run in a child process: this binary again, with
//! `--helper=NAME` as its first argument ([`helper_main`]).

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketType,
};
use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
use udp_repair_engine::dump::{self, DumpOptions};
use udp_repair_engine::sys::{
    getsockopt_int, set_interface_up, setsockopt_int, unshare_netns, unshare_userns,
};
use udp_repair_engine::UDP_REPAIR;

use crate::ktap::{Context, Failed};
use crate::{check, check_eq};

/// The unprivileged user (`nobody`).
pub const NOBODY: u32 = 65534;

/// What the corked application sends.
const PAYLOAD: &[u8] = b"abc";

/// Where it sends it: the discard port, as the reproducer does.
const DISCARD: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9);

/// How a series reads the pending datagram of a socket in repair mode:
/// its payload and destination.
pub type ReadPending = fn(BorrowedFd<'_>) -> Result<(Vec<u8>, SocketAddr), Failed>;

/// A case body, run by the series suite under its own SKIP guard.
pub type Case = Box<dyn FnOnce() -> Result<(), Failed> + Send>;

/// The privilege cases of a series, as `(name, body)`; the suite names
/// them `SUITE::privilege::NAME`. `series` names the reader for the helper
/// process (`getsockopt`, `recvmsg`; see [`reader_of`]).
pub fn cases(series: &'static str, read: ReadPending) -> Vec<(&'static str, Case)> {
    vec![
        (
            "opened_by_nobody",
            Box::new(move || opened_by_nobody(read)) as Case,
        ),
        (
            "userns_owns_netns",
            Box::new(move || run_helper(&format!("userns-owned:{series}"))),
        ),
        (
            "userns_foreign_netns",
            Box::new(|| run_helper("userns-foreign")),
        ),
    ]
}

/// The reader of `series`, for the helper process.
fn reader_of(series: &str) -> Option<ReadPending> {
    match series {
        "getsockopt" => Some(crate::getsockopt::read_payload_and_destination),
        "recvmsg" => Some(crate::recvmsg::read_payload_and_destination),
        _ => None,
    }
}

fn errno<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

fn set_repair(fd: BorrowedFd<'_>, on: bool) -> std::io::Result<()> {
    setsockopt_int(fd, libc::SOL_UDP, UDP_REPAIR, i32::from(on))
}

/// Opens an IPv4 UDP socket, corks [`PAYLOAD`] to [`DISCARD`], and checks
/// that the calling thread (which holds no capability) may not enter
/// repair mode on it.
fn open_corked_unprivileged() -> Result<OwnedFd, Failed> {
    let s = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None).ctx("socket")?;
    check_eq!(
        errno(set_repair(s.as_fd(), true)),
        Some(libc::EPERM),
        "an unprivileged caller entering repair mode on its own socket"
    );
    setsockopt_int(s.as_fd(), libc::SOL_UDP, libc::UDP_CORK, 1).ctx("UDP_CORK")?;
    let n = rustix::net::sendto(&s, PAYLOAD, SendFlags::empty(), &DISCARD).ctx("sendto")?;
    check_eq!(n, PAYLOAD.len(), "bytes corked");
    Ok(s)
}

/// Sends `fd` over a socket pair with SCM_RIGHTS and receives the copy, as an
/// application hands a socket to a tool.
fn hand_over(fd: BorrowedFd<'_>) -> Result<OwnedFd, Failed> {
    let (a, b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .ctx("socketpair")?;
    let fds = [fd];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    check!(
        cmsg.push(SendAncillaryMessage::ScmRights(&fds)),
        "cmsg room"
    );
    rustix::net::sendmsg(
        &a,
        &[std::io::IoSlice::new(b"f")],
        &mut cmsg,
        SendFlags::empty(),
    )
    .ctx("sendmsg(SCM_RIGHTS)")?;
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let r = rustix::net::recvmsg(
        &b,
        &mut [std::io::IoSliceMut::new(&mut byte)],
        &mut cmsg,
        RecvFlags::CMSG_CLOEXEC,
    )
    .ctx("recvmsg(SCM_RIGHTS)")?;
    check!(!r.flags.contains(ReturnFlags::CTRUNC), "control truncated");
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = m {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err("no descriptor came with SCM_RIGHTS".into())
}

/// Checks, on a socket opened by someone else, that the caller can enter
/// repair mode, read [`PAYLOAD`] to [`DISCARD`], and leave repair mode.
fn repair_and_read(fd: BorrowedFd<'_>, read: ReadPending) -> Result<(), Failed> {
    set_repair(fd, true).ctx("UDP_REPAIR 1 by the privileged caller")?;
    check_eq!(
        getsockopt_int(fd, libc::SOL_UDP, UDP_REPAIR).ctx("mode")?,
        1,
        "repair mode on"
    );
    let (payload, dest) = read(fd)?;
    check_eq!(payload, PAYLOAD.to_vec(), "pending payload");
    check_eq!(dest, DISCARD, "pending destination");
    set_repair(fd, false).ctx("UDP_REPAIR 0 by the privileged caller")?;
    Ok(())
}

/// Drops to `nobody` on the calling thread: no supplementary groups,
/// gid and uid 65534. Leaving uid 0 clears every capability set of the
/// thread (capabilities(7)), which is checked. Thread credentials are the
/// kernel's unit: the other threads of the test binary keep theirs.
fn become_nobody_thread() -> Result<(), Failed> {
    use rustix::process::{Gid, Uid};
    rustix::thread::set_thread_groups(&[]).ctx("setgroups")?;
    let gid = Gid::from_raw(NOBODY);
    rustix::thread::set_thread_res_gid(gid, gid, gid).ctx("setresgid")?;
    let uid = Uid::from_raw(NOBODY);
    rustix::thread::set_thread_res_uid(uid, uid, uid).ctx("setresuid")?;
    let caps = capabilities(None).ctx("capget")?;
    check!(
        caps.effective.is_empty() && caps.permitted.is_empty(),
        "capabilities left as nobody: {caps:?}"
    );
    Ok(())
}

/// Clears every capability set of the calling thread.
fn drop_all_caps_thread() -> Result<(), Failed> {
    let mut caps = capabilities(None).ctx("capget")?;
    caps.effective = CapabilitySet::empty();
    caps.permitted = CapabilitySet::empty();
    caps.inheritable = CapabilitySet::empty();
    set_capabilities(None, caps).ctx("capset to nothing")?;
    Ok(())
}

/// A socket opened and corked by user nobody with no capability, handed
/// over with SCM_RIGHTS: the caller (root) repairs it and reads the
/// datagram. With `sk_net_capable()` this was EPERM.
fn opened_by_nobody(read: ReadPending) -> Result<(), Failed> {
    let fd = corked_by_thread(become_nobody_thread)?;
    repair_and_read(fd.as_fd(), read)
}

/// Opens and corks a socket ([`open_corked_unprivileged`]) on a thread
/// that first gives up its privileges with `drop_privileges`, and returns
/// the copy handed over with SCM_RIGHTS (the thread's own is closed).
fn corked_by_thread(drop_privileges: fn() -> Result<(), Failed>) -> Result<OwnedFd, Failed> {
    let app = std::thread::scope(|s| {
        s.spawn(|| -> Result<OwnedFd, Failed> {
            drop_privileges()?;
            open_corked_unprivileged()
        })
        .join()
        .map_err(|_| Failed::from("the unprivileged thread panicked"))?
    })?;
    hand_over(app.as_fd())
}

/// Runs this binary as `--helper=NAME` and turns its exit status into a
/// result; the helper's stderr is the failure message.
fn run_helper(name: &str) -> Result<(), Failed> {
    let out = Command::new("/proc/self/exe")
        .arg(format!("--helper={name}"))
        .stdin(Stdio::null())
        .output()
        .ctx("spawning the helper")?;
    let err = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => Ok(()),
        Some(4) => Err(format!("helper {name} could not run its case: {err}").into()),
        _ => Err(format!("helper {name}: {} {err}", out.status).into()),
    }
}

/// Entry point of `--helper=NAME` (before any thread exists). Returns the
/// process's exit status: 0 passed, 1 failed, 4 could not run (the message
/// is on stderr).
pub fn helper_main(name: &str) -> i32 {
    let r = match name.split_once(':') {
        Some(("userns-owned", series)) => match reader_of(series) {
            Some(read) => userns_owned(read),
            None => Err(format!("no reader named {series}").into()),
        },
        None if name == "userns-foreign" => userns_foreign(),
        None if name == "corked-app" => corked_app(),
        _ => Err(format!("no helper named {name}").into()),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}", e.message().unwrap_or("failed"));
            1
        }
    }
}

/// In a new user namespace that owns a new network namespace, the
/// namespace's root (all capabilities there) repairs a socket that a
/// thread without any capability opened in that network namespace.
fn userns_owned(read: ReadPending) -> Result<(), Failed> {
    unshare_userns(true).ctx("unshare(CLONE_NEWUSER | CLONE_NEWNET)")?;
    let probe = UdpSocket::bind("0.0.0.0:0").ctx("socket in the new netns")?;
    set_interface_up(probe.as_fd(), "lo").ctx("lo up in the new netns")?;
    let fd = corked_by_thread(drop_all_caps_thread)?;
    repair_and_read(fd.as_fd(), read)?;
    // And a socket it opened itself there.
    set_repair(probe.as_fd(), true).ctx("UDP_REPAIR 1 on its own socket")
}

/// A socket of the initial network namespace, opened by root before it
/// entered a new user namespace: that namespace's root has no capability
/// over the socket's network namespace, so the socket cannot be repaired,
/// neither from there nor from a network namespace it owns.
fn userns_foreign() -> Result<(), Failed> {
    let s = UdpSocket::bind("127.0.0.1:0").ctx("socket in the initial netns")?;
    unshare_userns(false).ctx("unshare(CLONE_NEWUSER)")?;
    check_eq!(
        errno(set_repair(s.as_fd(), true)),
        Some(libc::EPERM),
        "UDP_REPAIR 1 from a child user namespace"
    );
    unshare_netns().ctx("unshare(CLONE_NEWNET)")?;
    check_eq!(
        errno(set_repair(s.as_fd(), true)),
        Some(libc::EPERM),
        "UDP_REPAIR 1 from a network namespace the child user namespace owns"
    );
    check_eq!(
        getsockopt_int(s.as_fd(), libc::SOL_UDP, UDP_REPAIR).ctx("mode")?,
        0,
        "repair mode unchanged"
    );
    Ok(())
}

/// The application of [`dump_pid_of_unprivileged_app`], run as nobody:
/// corks [`PAYLOAD`] to the port on its first line of stdin, prints
/// `fd N`, waits for `uncork` and uncorks.
fn corked_app() -> Result<(), Failed> {
    let mut lines = BufReader::new(std::io::stdin()).lines();
    let port: u16 = lines
        .next()
        .ok_or_else(|| Failed::from("stdin closed"))?
        .ctx("stdin")?
        .trim()
        .parse()
        .ctx("port")?;
    let s = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None).ctx("socket")?;
    setsockopt_int(s.as_fd(), libc::SOL_UDP, libc::UDP_CORK, 1).ctx("UDP_CORK")?;
    let to = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
    rustix::net::sendto(&s, PAYLOAD, SendFlags::empty(), &to).ctx("sendto")?;
    println!("fd {}", std::os::fd::AsRawFd::as_raw_fd(&s));
    std::io::stdout().flush().ctx("stdout")?;
    match lines.next() {
        Some(Ok(l)) if l.trim() == "uncork" => {}
        other => return Err(format!("expected `uncork`, got {other:?}").into()),
    }
    setsockopt_int(s.as_fd(), libc::SOL_UDP, libc::UDP_CORK, 0).ctx("uncork")?;
    Ok(())
}

/// `udp-repair dump --pid` of an application running as another,
/// unprivileged user: the engine's [`dump::dump_pid`] takes the socket
/// with pidfd_getfd and reads its corked datagram; the application then
/// uncorks and the datagram arrives intact. Needs a kernel with a reader
/// (`reader` names it; SKIP otherwise).
pub fn dump_pid_of_unprivileged_app() -> Result<(), Failed> {
    let rx = UdpSocket::bind("127.0.0.1:0").ctx("receiver")?;
    rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ctx("timeout")?;
    let port = rx.local_addr().ctx("receiver address")?.port();
    let mut child = Command::new("/proc/self/exe")
        .arg("--helper=corked-app")
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ctx("spawning the application as nobody")?;
    let result = (|| -> Result<(), Failed> {
        let mut stdin = child.stdin.take().ok_or_else(|| Failed::from("stdin"))?;
        writeln!(stdin, "{port}").ctx("port to the application")?;
        let mut out = BufReader::new(child.stdout.take().ok_or_else(|| Failed::from("stdout"))?);
        let mut line = String::new();
        out.read_line(&mut line).ctx("the application's fd")?;
        let fd: i32 = line
            .trim()
            .strip_prefix("fd ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Failed::from(format!("the application said {line:?}")))?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            .ctx("/proc/PID/status")?;
        check!(
            status
                .lines()
                .any(|l| l.starts_with("Uid:") && l.contains(&NOBODY.to_string())),
            "the application runs as nobody"
        );
        // As `dump --pid --accept-partial-cork` (the recvmsg series' reader
        // sees payload and destination only; the datagram here has no
        // cork state of its own).
        let opts = DumpOptions {
            accept_partial_cork: true,
            ..DumpOptions::default()
        };
        let cp =
            dump::dump_pid(child.id() as i32, fd, opts).ctx("dump --pid of nobody's socket")?;
        let sq = cp
            .send_queue
            .ok_or_else(|| Failed::from("no send queue in the image"))?;
        let p = sq
            .pending
            .clone()
            .ok_or_else(|| Failed::from("no pending datagram in the image"))?;
        check_eq!(p.payload, PAYLOAD.to_vec(), "dumped payload");
        check!(sq.udp_cork, "UDP_CORK recorded");
        writeln!(stdin, "uncork").ctx("uncork")?;
        let mut buf = [0u8; 16];
        let (n, _) = rx.recv_from(&mut buf).ctx("the datagram after the dump")?;
        check_eq!(&buf[..n], PAYLOAD, "datagram sent after the dump");
        Ok(())
    })();
    let out = child
        .wait_with_output()
        .ctx("waiting for the application")?;
    result?;
    check!(
        out.status.success(),
        "the application failed: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
