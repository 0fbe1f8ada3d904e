//! `regression::`: the guest set-up that the kernel's own `udpgso`
//! selftest needs (suite `regression` in harness/src/suites.rs).
//!
//! udpgso.sh runs each `udpgso` invocation in a fresh network namespace
//! (in_netns.sh) prepared by one of its functions:
//! - `test_dev_mtu`: 10.0.0.1/32 and fd00::1/128 on `lo`, `lo` at MTU 1500;
//! - `test_route_mtu`: the same addresses, `lo` at its MTU, and their local
//!   routes replaced by ones with MTU 1500.
//!
//! The harness runs each unit as a program of its own in the guest's one
//! namespace, so these tests do that preparation there, in the order the
//! suite's rows put them: `setup_dev_mtu`, the `test_dev_mtu` cases,
//! `setup_route_mtu`, the connected cases, `teardown`. They use `ip` as the
//! script does (busybox's in the initramfs). They change the guest's `lo`,
//! so they run only as harness units (`UDP_REPAIR_KTAP` set) and SKIP
//! elsewhere.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use crate::ktap::{self, Completion, Context, Failed, Outcome, Test};
use crate::{check, check_eq};

/// udpgso.c's addresses.
const ADDR4: &str = "10.0.0.1";
const ADDR6: &str = "fd00::1";

/// All tests of the suite.
pub fn tests() -> Vec<Test> {
    vec![
        Test::skippable("regression::udpgso::setup_dev_mtu", || {
            guest_only(setup_dev_mtu)
        }),
        Test::skippable("regression::udpgso::setup_route_mtu", || {
            guest_only(setup_route_mtu)
        }),
        Test::skippable("regression::udpgso::teardown", || guest_only(teardown)),
    ]
}

fn guest_only(body: fn() -> Result<(), Failed>) -> Outcome {
    if std::env::var_os("UDP_REPAIR_KTAP").is_none() {
        return ktap::skip(
            "changes the network configuration: runs only as a unit of the harness's guest",
        );
    }
    body().map(|()| Completion::Completed)
}

/// Runs `ip args...`; fails with its output unless it succeeds.
fn ip(args: &[&str]) -> Result<(), Failed> {
    let out = Command::new("ip").args(args).output().ctx("run ip")?;
    check!(
        out.status.success(),
        "ip {}: {}: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Like [`ip`], for clean-up steps whose failure is fine (nothing to undo).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

fn lo_mtu() -> Result<u32, Failed> {
    let s = std::fs::read_to_string("/sys/class/net/lo/mtu").ctx("read lo's mtu")?;
    s.trim().parse().ctx("parse lo's mtu")
}

/// Binding to `addr` works (the address is configured and not tentative),
/// retried for a second.
fn bindable(addr: &str) -> Result<(), Failed> {
    let a: SocketAddr = format!("{}:0", bracket(addr))
        .parse()
        .ctx("parse address")?;
    let mut last = None;
    for _ in 0..100 {
        match UdpSocket::bind(a) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!(
        "bind {a}: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    )
    .into())
}

fn bracket(addr: &str) -> String {
    if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr.to_string()
    }
}

/// udpgso.sh's `setup_loopback`. Busybox's `ip` has no `noprefixroute`,
/// so the prefix route the address brings (on `lo`, a reject route at
/// metric 256) is deleted by hand: without multiple IPv6 tables it shares
/// the table of the local routes, and it would win over the local route
/// that `setup_route_mtu` re-adds at metric 1024.
fn setup_loopback() -> Result<(), Failed> {
    ip(&["addr", "add", "dev", "lo", &format!("{ADDR4}/32")])?;
    ip(&["-6", "addr", "add", "dev", "lo", &format!("{ADDR6}/128")])?;
    ip(&[
        "-6",
        "route",
        "del",
        &format!("{ADDR6}/128"),
        "dev",
        "lo",
        "metric",
        "256",
    ])?;
    bindable(ADDR4)?;
    bindable(ADDR6)
}

/// udpgso.sh's `test_dev_mtu`.
fn setup_dev_mtu() -> Result<(), Failed> {
    setup_loopback()?;
    ip(&["link", "set", "dev", "lo", "mtu", "1500"])?;
    check_eq!(lo_mtu()?, 1500, "lo's MTU");
    Ok(())
}

/// udpgso.sh's `test_route_mtu`, after `setup_dev_mtu`: `lo` back at its
/// MTU, the local routes of the two addresses with MTU 1500.
fn setup_route_mtu() -> Result<(), Failed> {
    ip(&["link", "set", "dev", "lo", "mtu", "65536"])?;
    check_eq!(lo_mtu()?, 65536, "lo's MTU");
    for (v, a) in [("-4", ADDR4), ("-6", ADDR6)] {
        let plen = if v == "-4" { "32" } else { "128" };
        let prefix = format!("{a}/{plen}");
        ip(&[
            v, "route", "del", "local", &prefix, "table", "local", "dev", "lo",
        ])?;
        ip(&[
            v, "route", "add", "local", &prefix, "table", "local", "dev", "lo", "mtu", "1500",
        ])?;
    }
    Ok(())
}

/// Puts `lo` back as the guest's init left it.
fn teardown() -> Result<(), Failed> {
    for (v, prefix) in [
        ("-4", format!("{ADDR4}/32")),
        ("-6", format!("{ADDR6}/128")),
    ] {
        ip_quiet(&[
            v, "route", "del", "local", &prefix, "table", "local", "dev", "lo",
        ]);
        ip_quiet(&[v, "addr", "del", "dev", "lo", &prefix]);
    }
    ip(&["link", "set", "dev", "lo", "mtu", "65536"])?;
    check_eq!(lo_mtu()?, 65536, "lo's MTU");
    for a in [ADDR4, ADDR6] {
        let sa: SocketAddr = format!("{}:0", bracket(a)).parse().ctx("parse")?;
        let e = UdpSocket::bind(sa).err().and_then(|e| e.raw_os_error());
        check_eq!(e, Some(libc::EADDRNOTAVAIL), "bind {sa} after the teardown");
    }
    Ok(())
}
