//! `udp-repair restore` on a hostile image: an otherwise valid image (its
//! checksum trailer recomputed) that asks for an option the dump never
//! saves is refused by name, and the command is not run.

use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::process::Command;
use udp_repair_engine::dump;
mod common;
use common::restore_cli;
use udp_repair_proto::v1;

#[test]
fn restore_refuses_an_image_with_a_foreign_option() {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut cp = dump::dump(a.as_fd()).unwrap();
    cp.options.push(v1::SockOpt {
        level: libc::SOL_SOCKET,
        name: libc::SO_DEBUG,
        value: Some(v1::sock_opt::Value::Int(1)),
    });
    let dir = std::env::temp_dir().join(format!("udp-repair-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("foreign.img");
    std::fs::write(&img, udp_repair_proto::encode(&cp).unwrap()).unwrap();
    let r = restore_cli(&img, &[]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(r.code(), Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("validating the socket options") && r.stderr.contains("SO_DEBUG"),
        "{}",
        r.stderr
    );
    assert!(!r.ran, "the command ran");
}

#[test]
fn privileged_values_need_an_image_of_ones_own_or_trust() {
    use std::os::unix::fs::{chown, PermissionsExt};
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp_repair_engine::sys::setsockopt_int(a.as_fd(), libc::SOL_SOCKET, libc::SO_MARK, 7).unwrap();
    let cp = dump::dump(a.as_fd()).unwrap();
    drop(a);
    let dir = std::env::temp_dir().join(format!("udp-repair-cli-trust-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("mark.img");
    std::fs::write(&img, udp_repair_proto::encode(&cp).unwrap()).unwrap();
    let mode = |m: u32| std::fs::set_permissions(&img, std::fs::Permissions::from_mode(m)).unwrap();

    // Written by this user and by no one else: trusted.
    mode(0o600);
    let r = restore_cli(&img, &[]);
    assert!(r.ran, "{r:?}");
    // Writable by others: anyone could have put the mark there.
    mode(0o666);
    let r = restore_cli(&img, &[]);
    assert_eq!(r.code(), Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("SO_MARK = 7") && r.stderr.contains("--trust-image"),
        "{}",
        r.stderr
    );
    assert!(!r.ran, "the command ran");
    // Another user's file: refused, unless trusted by name.
    mode(0o644);
    chown(&img, Some(65534), Some(65534)).unwrap();
    let r = restore_cli(&img, &[]);
    assert_eq!(r.code(), Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("SO_MARK = 7"), "{}", r.stderr);
    assert!(!r.ran, "the command ran");
    let r = restore_cli(&img, &["--trust-image"]);
    assert!(r.ran, "{r:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `dump -o` onto something that is not a regular file (here a symlink to
/// a device) is refused before the socket is touched, and the target is
/// left as it was; without the peek fix, a dump that cannot vouch for its
/// zero-length datagrams is refused unless --accept-peek-marks says so.
#[test]
fn dump_refuses_a_non_file_output_and_unvouched_queues_by_default() {
    use std::os::fd::AsRawFd;
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    b.send_to(b"x", a.local_addr().unwrap()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let dir = std::env::temp_dir().join(format!("udp-repair-cli-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("stdout");
    std::os::unix::fs::symlink("/proc/self/fd/1", &link).unwrap();
    let dump = |out: &std::path::Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_udp-repair"))
            .args(["dump", "--pid", &std::process::id().to_string()])
            .args(["--fd", &a.as_raw_fd().to_string(), "-o"])
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = dump(&link, &["--accept-peek-marks"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let img = dir.join("x.img");
    let restarts = udp_repair_engine::peek::peek_walk_restarts() == Some(true);
    let out = dump(&img, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    if restarts {
        assert_eq!(out.status.code(), Some(0), "{err}");
    } else {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("[--accept-peek-marks"), "{err}");
        let out = dump(&img, &["--accept-peek-marks"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A dump whose image cannot be written (here past RLIMIT_FSIZE, which
/// without SIGXFSZ ignored ended the process with the queue drained) puts
/// back what only the image held: the drained queue, and the pending error
/// that --take-error read (SO_ERROR cleared it). No file is left.
/// An output name that ends with '/' is refused before anything.
#[test]
fn a_failed_image_write_puts_the_queue_and_the_pending_error_back() {
    use std::os::fd::AsRawFd;
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    b.connect(a.local_addr().unwrap()).unwrap();
    b.send(b"queued").unwrap();
    // a's peer is b, which sent before the connect's ICMP error arrived.
    a.connect(b.local_addr().unwrap()).unwrap();
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.connect(("127.0.0.1", port)).unwrap();
    c.send(b"to nobody").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let dir = std::env::temp_dir().join(format!("udp-repair-cli-fsize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A name that ends with '/' is refused before the socket is touched
    // (the rename onto it would fail after --take-error took the error,
    // which the next dump must then still find).
    let out = Command::new(env!("CARGO_BIN_EXE_udp-repair"))
        .args(["dump", "--pid", &std::process::id().to_string()])
        .args(["--fd", &c.as_raw_fd().to_string(), "-o"])
        .arg(dir.join("new.img/"))
        .arg("--take-error")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ends with '/'"), "{err}");
    for (sock, drain) in [(&c, false), (&a, true)] {
        let img = dir.join("x.img");
        let out = Command::new("prlimit")
            .arg("--fsize=64")
            .arg(env!("CARGO_BIN_EXE_udp-repair"))
            .args(["dump", "--pid", &std::process::id().to_string()])
            .args(["--fd", &sock.as_raw_fd().to_string(), "-o"])
            .arg(&img)
            .args(["--take-error", "--accept-peek-marks"])
            .args(if drain { &["--drain"][..] } else { &[][..] })
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "drain {drain}: {err}");
        assert!(err.contains("File too large"), "drain {drain}: {err}");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "a file left: {err}"
        );
        if drain {
            assert!(err.contains("put 1 back"), "{err}");
            let mut buf = [0u8; 16];
            let n = a.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"queued", "{err}");
        } else {
            assert!(err.contains("was set on the socket again"), "{err}");
            let e = c.take_error().unwrap().map(|e| e.raw_os_error());
            assert_eq!(e, Some(Some(libc::ECONNREFUSED)), "{err}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A signal whose default action ends the process (SIGUSR1 here; SIGALRM
/// from `timeout -s ALRM`, the real-time ones) waits while a draining dump
/// has the queue out, and is not delivered after the dump kept the image
/// and said so: before, it ended the dump half-way and the queue was lost
/// (and a dump killed after its image was kept would read as failed). A
/// closed stderr does not turn a dump's outcome into a panic (exit 101).
#[test]
fn a_signal_during_a_drain_waits_for_the_image_and_a_closed_stderr_is_no_panic() {
    use std::os::fd::AsRawFd;
    const N: usize = 60_000;
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp_repair_engine::sys::setsockopt_int(
        a.as_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        1 << 28,
    )
    .unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..N {
        b.send_to(&(i as u32).to_be_bytes(), a.local_addr().unwrap())
            .unwrap();
    }
    let rmem = || udp_repair_engine::peek::meminfo(a.as_fd()).unwrap().0;
    let full = rmem();
    let dir = std::env::temp_dir().join(format!("udp-repair-cli-sig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("sig.img");
    let child = Command::new(env!("CARGO_BIN_EXE_udp-repair"))
        .args(["dump", "--pid", &std::process::id().to_string()])
        .args(["--fd", &a.as_raw_fd().to_string(), "-o"])
        .arg(&img)
        .arg("--drain")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The drain has begun (the signals are held before the dump starts):
    // the queue shrinks.
    let t = std::time::Instant::now();
    while rmem() == full && t.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let drained_at = rmem();
    // The child is not waited for yet: its pid is not reused.
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::USR1).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        drained_at < full,
        "the drain did not start within 20 s: {err}"
    );
    // The outcome stands: the image is kept and the queue drained, so the
    // dump exits 0 and names the signal that came too late to stop it.
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(&format!("{N} datagram(s)")), "{err}");
    assert!(err.contains("SIGUSR1 arrived during the dump"), "{err}");
    let cp = udp_repair_proto::decode(&std::fs::read(&img).unwrap()).unwrap();
    assert_eq!(cp.receive_queue.unwrap().datagrams.len(), N);
    assert_eq!(rmem(), 0, "the queue is in the image, not in the socket");

    // stderr a pipe whose reader has gone: the dump still exits 0.
    b.send_to(b"one", a.local_addr().unwrap()).unwrap();
    let (r, w) = rustix::pipe::pipe().unwrap();
    drop(r);
    let out = Command::new(env!("CARGO_BIN_EXE_udp-repair"))
        .args(["dump", "--pid", &std::process::id().to_string()])
        .args(["--fd", &a.as_raw_fd().to_string(), "-o"])
        .arg(&img)
        .arg("--drain")
        .stderr(std::process::Stdio::from(w))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
