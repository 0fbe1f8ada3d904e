//! Dump/restore benchmark: `cargo run --release -p udp-repair-engine
//! --example bench_restore [-- --drain --rcvbuf BYTES --rounds N --sizes
//! B,B,.. --peek-max N --no-scaling]` (as root: it makes a private network
//! namespace; all traffic is on its loopback).
//!
//! For 64-byte, 1400-byte and 64 KiB datagrams it fills a socket's receive
//! buffer until the kernel drops, then measures, for the raw and the
//! transparent strategy side by side: dump time, restore time (including the
//! check that every datagram arrived), datagrams per second of each, and the
//! downtime: from dump start to the restored socket being ready (dump,
//! image encode + decode, close of the original, restore). Each figure is
//! the best of N rounds (`--rounds`, default 5), taken on its own: the
//! floor's best and the restore's best may come from different rounds.
//! The floor (`sendmmsg` of the same packets, built in advance, on a raw
//! socket, until a marker sent after them arrives) runs after the restore
//! in even rounds and before it in odd ones: whichever runs second gets
//! the pages the other has just freed, hot in the cache (an order that
//! always ran the floor second favoured it). `1st/floor` is the restore's
//! best of the rounds where it ran first, straight after the image round
//! trip, over the floor's best.
//! The image share is encode + decode over the downtime, as the CLI does
//! them: `encode_vectored` (no payload copy) and `decode_bytes` of the
//! bytes read back (payloads lent from them); `file ms` is what the CLI
//! adds between them (the image written to a file in $TMPDIR with
//! vectored writes, fsync'd, and read back), left out of the downtime and
//! shown apart because it depends on the storage, not on this code.
//! `--drain` dumps with `DumpOptions::drain_receive_queue` (the queue taken
//! out, linear) instead of the peek walk (quadratic).
//!
//! First it prints a scaling table (each figure the best of 3 runs): for
//! 1 000 to 64 000 queued 64-byte datagrams (the receive buffer forced to
//! hold them), the dump time of the peek walk (up to `--peek-max N`
//! datagrams, default 16 000: beyond, the walk takes tens of seconds) and
//! of the drain, per datagram, and the raw restore of the drained image.

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
    /// The restore of a round where it ran first, straight after the
    /// image round trip (`Duration::MAX` in the others).
    restore_first: Duration,
    downtime: Duration,
    /// The floor: `sendmmsg` of the same packets, built in advance, on a
    /// raw socket, until a marker sent after them has arrived.
    floor: Duration,
    /// Image encode + decode (with the checksum).
    image: Duration,
    /// The image written to a file, fsync'd, and read back.
    file: Duration,
}

impl Figures {
    /// Each duration the least of `self`'s and `o`'s.
    fn best(self, o: Figures) -> Figures {
        if self.datagrams == 0 {
            return o;
        }
        Figures {
            datagrams: self.datagrams,
            dump: self.dump.min(o.dump),
            restore: self.restore.min(o.restore),
            restore_first: self.restore_first.min(o.restore_first),
            downtime: self.downtime.min(o.downtime),
            floor: self.floor.min(o.floor),
            image: self.image.min(o.image),
            file: self.file.min(o.file),
        }
    }
}

/// Writes `img` to a file in $TMPDIR (vectored, from the checkpoint's
/// payloads), fsyncs it and reads it back, as the CLI's dump and restore
/// do: the time taken and the bytes read.
fn file_round_trip(img: &udp_repair_proto::Encoded<'_>) -> (Duration, Vec<u8>) {
    let path = std::env::temp_dir().join(format!("bench-restore-{}.img", std::process::id()));
    let t = Instant::now();
    let mut f = std::fs::File::create(&path).unwrap();
    img.write_to(&mut f).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let back = std::fs::read(&path).unwrap();
    let d = t.elapsed();
    assert_eq!(back.len(), img.len());
    let _ = std::fs::remove_file(&path);
    (d, back)
}

/// Times the floor for `cp`'s datagrams into a fresh socket at `port`.
fn floor(cp: &udp_repair_proto::v1::Checkpoint, port: u16) -> Duration {
    use rustix::net::{socket_with, AddressFamily, Protocol, RawProtocol, SocketFlags, SocketType};
    let a = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    sys::setsockopt_int(a.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 1 << 30).unwrap();
    let dst = a.local_addr().unwrap();
    let q = cp.receive_queue.as_ref().unwrap();
    let packets: Vec<Vec<u8>> = q
        .datagrams
        .iter()
        .map(|d| {
            let mut p = Vec::new();
            udp_repair_engine::wire::ipv4_packet(
                &udp_repair_engine::wire::RawDatagram {
                    src: udp_repair_engine::wire::from_proto(d.source.as_ref().unwrap()),
                    dst,
                    ttl: 64,
                    tos: 0,
                    protocol: 17,
                    payload: &d.payload,
                },
                &mut p,
            );
            p
        })
        .collect();
    let name = udp_repair_engine::wire::sockaddr_bytes(&std::net::SocketAddr::new(dst.ip(), 0));
    let raw = socket_with(
        AddressFamily::INET,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(Protocol::from_raw(RawProtocol::new(255).unwrap())),
    )
    .unwrap();
    let _ = sys::setsockopt_int(raw.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20);
    let marker = UdpSocket::bind("127.0.0.1:0").unwrap();
    marker
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let msgs: Vec<(&[u8], &[u8])> = packets
        .iter()
        .map(|p| (p.as_slice(), name.as_slice()))
        .collect();
    let t = Instant::now();
    for chunk in msgs.chunks(udp_repair_engine::inject::BATCH) {
        let mut sent = 0;
        while sent < chunk.len() {
            sent += sys::sendmmsg_bytes(raw.as_fd(), &chunk[sent..]).unwrap();
        }
    }
    marker.send_to(b"m", marker.local_addr().unwrap()).unwrap();
    marker.recv_from(&mut [0u8; 4]).unwrap();
    let d = t.elapsed();
    let (_, drops) = udp_repair_engine::peek::meminfo(a.as_fd()).unwrap();
    assert_eq!(drops, 0, "the floor's socket dropped datagrams");
    d
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

fn dump_opts(drain: bool) -> dump::DumpOptions {
    dump::DumpOptions {
        drain_receive_queue: drain,
        ..Default::default()
    }
}

/// Queues `n` datagrams of 64 bytes on a socket at `port` whose receive
/// buffer holds them all.
fn queued(n: usize, port: u16) -> UdpSocket {
    let a = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    sys::setsockopt_int(
        a.as_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        (n * 2048).min(i32::MAX as usize) as i32,
    )
    .unwrap();
    let dst = a.local_addr().unwrap();
    let s = UdpSocket::bind("127.0.0.2:0").unwrap();
    for _ in 0..n {
        s.send_to(&[0x5a; 64], dst).unwrap();
    }
    let (_, drops) = udp_repair_engine::peek::meminfo(a.as_fd()).unwrap();
    assert_eq!(drops, 0, "the receive buffer held all {n} datagrams");
    a
}

/// One row of the scaling table: (peek dump, drain dump, raw restore).
fn scaling_row(n: usize, peek: bool) -> (Option<Duration>, Duration, Duration) {
    let walk = peek.then(|| {
        let a = queued(n, 7100);
        let t = Instant::now();
        let cp = dump::dump_with(a.as_fd(), &dump_opts(false)).unwrap();
        let d = t.elapsed();
        assert_eq!(cp.receive_queue.unwrap().count as usize, n);
        d
    });
    let a = queued(n, 7100);
    let t = Instant::now();
    let cp = dump::dump_with(a.as_fd(), &dump_opts(true)).unwrap();
    let drain = t.elapsed();
    assert_eq!(cp.receive_queue.as_ref().unwrap().count as usize, n);
    drop(a);
    let opts = restore::RestoreOptions {
        trust_image: true,
        ..Default::default()
    };
    let t = Instant::now();
    let (r, _) = restore::restore_with(&cp, &opts).unwrap();
    let restore = t.elapsed();
    drop(r);
    (walk, drain, restore)
}

/// One round: fill, dump, image round trip, then the restore and the
/// floor, in the order `floor_first` says (the bench alternates it: the
/// second of the two runs on the pages the first just freed, hot in the
/// cache, and the first on what the image round trip left).
fn one(
    size: usize,
    rcvbuf: i32,
    strategy: Strategy,
    port: u16,
    drain: bool,
    floor_first: bool,
) -> Figures {
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
    let mut cp = dump::dump_with(a.as_fd(), &dump_opts(drain)).unwrap();
    let t1 = Instant::now();
    // As the CLI does: encoded without a payload copy, written, read back
    // and decoded with the payloads lent from the bytes read.
    let ti = Instant::now();
    let img = udp_repair_proto::encode_vectored(&mut cp).unwrap();
    let encode = ti.elapsed();
    let (file, back) = file_round_trip(&img);
    drop(img);
    let td = Instant::now();
    let cp = udp_repair_proto::decode_bytes(back.into()).unwrap();
    let image = encode + td.elapsed();
    drop(a);
    // The floor first (every other round), left out of the downtime.
    let tf = Instant::now();
    let floor_before = floor_first.then(|| floor(&cp, port));
    let floor_wall = tf.elapsed();
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
        restore_first: if floor_first { Duration::MAX } else { t3 - t2 },
        downtime: t3 - t0 - file - floor_wall,
        floor: floor_before.unwrap_or_else(|| floor(&cp, port)),
        image,
        file,
    }
}

fn main() {
    let mut rcvbuf: i32 = 4 << 20;
    let mut rounds = 5;
    let mut drain = false;
    let mut peek_max = 16_000;
    let mut sizes = vec![64usize, 1400, 65000];
    let mut scaling = true;
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--rcvbuf" => rcvbuf = args[i + 1].parse().expect("--rcvbuf BYTES"),
            "--rounds" => rounds = args[i + 1].parse().expect("--rounds N"),
            "--peek-max" => peek_max = args[i + 1].parse().expect("--peek-max N"),
            "--sizes" => {
                sizes = args[i + 1]
                    .split(',')
                    .map(|s| s.parse().expect("--sizes BYTES,BYTES,..."))
                    .collect()
            }
            "--drain" => {
                drain = true;
                i += 1;
                continue;
            }
            "--no-scaling" => {
                scaling = false;
                i += 1;
                continue;
            }
            a => panic!("unknown argument {a}"),
        }
        i += 2;
    }
    if scaling {
        scaling_table(peek_max);
    }
    sizes_table(&sizes, rcvbuf, rounds, drain);
}

/// The scaling table: dump and restore of 1 000 to 64 000 queued 64-byte
/// datagrams.
fn scaling_table(peek_max: usize) {
    let scaling = netns::in_new_netns(|| {
        let _ = udp_repair_engine::peek::peek_walk_restarts();
        [1_000usize, 4_000, 16_000, 32_000, 64_000]
            .into_iter()
            .map(|n| {
                // Best of three, each column on its own: one run of a
                // 16 000-datagram drain varies by a third between runs.
                let rows: Vec<_> = (0..3).map(|_| scaling_row(n, n <= peek_max)).collect();
                let walk = rows.iter().filter_map(|r| r.0).min();
                let drain = rows.iter().map(|r| r.1).min().expect("three rows");
                let restore = rows.iter().map(|r| r.2).min().expect("three rows");
                (n, (walk, drain, restore))
            })
            .collect::<Vec<_>>()
    })
    .expect("a private network namespace (run as root)");
    println!("scaling, 64-byte datagrams (each figure best of 3 runs):");
    println!(
        "{:>7} | {:>11} {:>9} | {:>11} {:>9} | {:>11} {:>9}",
        "dgrams", "peek ms", "µs/dgram", "drain ms", "µs/dgram", "restore ms", "µs/dgram"
    );
    let per = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n as f64;
    for (n, (walk, dr, re)) in &scaling {
        let walk = match walk {
            Some(w) => format!("{:>11.1} {:>9.2}", w.as_secs_f64() * 1e3, per(*w, *n)),
            None => format!("{:>11} {:>9}", "(--peek-max)", ""),
        };
        println!(
            "{n:>7} | {walk} | {:>11.1} {:>9.2} | {:>11.1} {:>9.2}",
            dr.as_secs_f64() * 1e3,
            per(*dr, *n),
            re.as_secs_f64() * 1e3,
            per(*re, *n)
        );
    }
    let ratio = |k: usize| {
        let (n, (_, d, _)) = &scaling[k];
        per(*d, *n)
    };
    println!(
        "drain µs/datagram at 32 000 over 4 000: {:.2} (linear: 1)",
        ratio(3) / ratio(1)
    );
    println!();
}

/// Per datagram size: dump, restore by each strategy, the floor, downtime.
fn sizes_table(sizes: &[usize], rcvbuf: i32, rounds: usize, drain: bool) {
    let rows = netns::in_new_netns(|| {
        // Warm up the probe (cached once per process) outside the timings.
        let _ = udp_repair_engine::peek::peek_walk_restarts();
        let mut rows = Vec::new();
        for &size in sizes {
            let mut best = [Figures::default(); 2];
            for (k, strategy) in [Strategy::Raw, Strategy::Transparent]
                .into_iter()
                .enumerate()
            {
                for r in 0..rounds {
                    let f = one(size, rcvbuf, strategy, 7000 + r as u16, drain, r % 2 == 1);
                    best[k] = best[k].best(f);
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
        "receive buffer {} KiB (SO_RCVBUF reads {}), each figure best of {rounds} rounds, dump by {}; kernel {}",
        rcvbuf / 1024,
        rcvbuf,
        if drain { "drain" } else { "peek walk" },
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "{:>6} {:>6} | {:>12} {:>10} {:>10} | {:>12} {:>10} {:>10} | {:>11} | {:>7} | {:>8} {:>7} {:>9} | {:>7} | {:>7}",
        "size",
        "dgrams",
        "strategy",
        "dump ms",
        "dump dg/s",
        "restore ms",
        "µs/dgram",
        "rest dg/s",
        "downtime ms",
        "speedup",
        "floor ms",
        "/floor",
        "1st/floor",
        "image %",
        "file ms"
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
                "{:>6} {:>6} | {:>12} {:>10.2} {:>10.0} | {:>12.2} {:>10.2} {:>10.0} | {:>11.2} | {:>7} | {:>8.2} {:>7.2} {:>9.2} | {:>7.1} | {:>7.2}",
                size,
                f.datagrams,
                name,
                f.dump.as_secs_f64() * 1e3,
                rate(f.dump, f.datagrams),
                f.restore.as_secs_f64() * 1e3,
                us(f.restore, f.datagrams),
                rate(f.restore, f.datagrams),
                f.downtime.as_secs_f64() * 1e3,
                speedup,
                f.floor.as_secs_f64() * 1e3,
                f.restore.as_secs_f64() / f.floor.as_secs_f64().max(1e-9),
                f.restore_first.as_secs_f64() / f.floor.as_secs_f64().max(1e-9),
                100.0 * f.image.as_secs_f64() / f.downtime.as_secs_f64().max(1e-9),
                f.file.as_secs_f64() * 1e3
            );
        }
    }
}
