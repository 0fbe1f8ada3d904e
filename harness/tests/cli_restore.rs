//! `udp-repair restore` on a hostile image: an otherwise valid image (its
//! SHA-256 trailer recomputed) that asks for an option the dump never
//! saves is refused by name, and the command is not run.

use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::process::Command;
use udp_repair_engine::dump;
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
    let marker = dir.join("ran");
    let out = Command::new(env!("CARGO_BIN_EXE_udp-repair"))
        .arg("restore")
        .arg(&img)
        .args(["--", "/bin/sh", "-c"])
        .arg(format!("touch {}", marker.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("validating the socket options") && stderr.contains("SO_DEBUG"),
        "{stderr}"
    );
    assert!(!marker.exists(), "the command ran");
}
