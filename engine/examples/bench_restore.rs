//! Dump/restore benchmark: `cargo run --release -p udp-repair-engine --example
//! bench_restore [-- --rcvbuf BYTES --rounds N]` (as root: it makes a private
//! network namespace; all traffic is on its loopback).
//!
//! For 64-byte, 1400-byte and 64 KiB datagrams it fills a socket's receive
//! buffer until the kernel drops, then measures, for the raw and the
//! transparent strategy side by side: dump time, restore time (including the
//! check that every datagram arrived), datagrams per second of each, and the
//! downtime: from dump start to the restored socket being ready (dump, image
//! encode + decode, close of the original, restore). Best of N rounds.

use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use udp_repair_engine::inject::Strategy;
use udp_repair_engine::{dump, netns, restore, sys};

#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    datagrams: usize,
    dump: Duration,
    restore: Duration,
    downtime: Duration,
}

fn fill(a: &UdpSocket, size: usize) -> usize {
    let dst = a.local_addr().unwrap();
    let s = UdpSocket::bind("127.0.0.2:0").unwrap();
    let payload = vec![0x5a; size];
    let mut sent = 0usize;
    loop {
        s.send_to(&payload, dst).unwrap();
        sent += 1;
        let (_, drops) = udp_repair_engine::peek::meminfo(a.as_fd()).unwrap();
        if drops > 0 || sent > 1_000_000 {
            return sent - drops as usize;
        }
    }
}

fn one(size: usize, rcvbuf: i32, strategy: Strategy, port: u16) -> Figures {
    let a = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    sys::setsockopt_int(
        a.as_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        rcvbuf / 2,
    )
    .unwrap();
    let n = fill(&a, size);
    let t0 = Instant::now();
    let cp = dump::dump(a.as_fd()).unwrap();
    let t1 = Instant::now();
    let img = udp_repair_proto::encode(&cp).unwrap();
    let cp = udp_repair_proto::decode(&img).unwrap();
    drop(a);
    let t2 = Instant::now();
    // Its own image, with a receive buffer forced beyond rmem_max.
    let opts = restore::RestoreOptions {
        strategy,
        trust_image: true,
        ..Default::default()
    };
    let (r, _report) = restore::restore_with(&cp, &opts).unwrap();
    let t3 = Instant::now();
    let got = cp
        .receive_queue
        .as_ref()
        .map(|q| q.count as usize)
        .unwrap_or(0);
    assert_eq!(got, n, "the dump saw every queued datagram");
    drop(r);
    Figures {
        datagrams: n,
        dump: t1 - t0,
        restore: t3 - t2,
        downtime: t3 - t0,
    }
}

fn main() {
    let mut rcvbuf: i32 = 4 << 20;
    let mut rounds = 3;
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--rcvbuf" => rcvbuf = args[i + 1].parse().expect("--rcvbuf BYTES"),
            "--rounds" => rounds = args[i + 1].parse().expect("--rounds N"),
            a => panic!("unknown argument {a}"),
        }
        i += 2;
    }
    let rows = netns::in_new_netns(|| {
        // Warm up the probe (cached once per process) outside the timings.
        let _ = udp_repair_engine::peek::peek_walk_restarts();
        let mut rows = Vec::new();
        for size in [64usize, 1400, 65000] {
            let mut best = [Figures::default(); 2];
            for (k, strategy) in [Strategy::Raw, Strategy::Transparent]
                .into_iter()
                .enumerate()
            {
                for r in 0..rounds {
                    let f = one(size, rcvbuf, strategy, 7000 + r as u16);
                    if best[k].datagrams == 0 || f.downtime < best[k].downtime {
                        best[k] = f;
                    }
                }
            }
            rows.push((size, best));
        }
        rows
    })
    .expect("a private network namespace (run as root)");

    let us = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    let rate = |d: Duration, n: usize| n as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "receive buffer {} KiB (SO_RCVBUF reads {}), best of {rounds} rounds; kernel {}",
        rcvbuf / 1024,
        rcvbuf,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "{:>6} {:>6} | {:>12} {:>10} {:>10} | {:>12} {:>10} {:>10} | {:>11} | {:>7}",
        "size",
        "dgrams",
        "strategy",
        "dump ms",
        "dump dg/s",
        "restore ms",
        "µs/dgram",
        "rest dg/s",
        "downtime ms",
        "speedup"
    );
    for (size, best) in rows {
        for (k, name) in ["raw", "transparent"].iter().enumerate() {
            let f = best[k];
            let speedup = if k == 0 {
                format!(
                    "{:.1}x",
                    best[1].restore.as_secs_f64() / f.restore.as_secs_f64().max(1e-9)
                )
            } else {
                String::new()
            };
            println!(
                "{:>6} {:>6} | {:>12} {:>10.2} {:>10.0} | {:>12.2} {:>10.2} {:>10.0} | {:>11.2} | {:>7}",
                size,
                f.datagrams,
                name,
                f.dump.as_secs_f64() * 1e3,
                rate(f.dump, f.datagrams),
                f.restore.as_secs_f64() * 1e3,
                us(f.restore, f.datagrams),
                rate(f.restore, f.datagrams),
                f.downtime.as_secs_f64() * 1e3,
                speedup
            );
        }
    }
}
